import torch
from torchreid_privacy import kernels
from torchreid_privacy.kernels import dispatch
def test_a():
    kernels.set_kernel_mode("triton")
def test_b():
    print("TABLE", dispatch._table, dispatch._selection, kernels.backend_report(), dispatch is kernels.dispatch)
