"""``bench kernels --dtype``: the kernels at train.amp's precisions, checked against float32."""
import types

import pytest
import torch

from torchreid_privacy.bench import kernels as bench


def test_half_precision_rows_in_the_interpreter():
    # float16 (the interpreter has no bfloat16; a GPU runs both)
    rows = bench.bench_kernels(batch=8, quick=True, device="cpu", compile=False, image_size=(24, 16),
                               ops=["mosaic", "batch_hard_triplet"], dtype=torch.float16)
    assert [r["op"] for r in rows] == ["mosaic", "batch_hard_triplet", "batch_hard_triplet (fwd+bwd)"]
    assert all(r["check"] == "PASS" for r in rows)
    assert all(r["ms_triton"] > 0 for r in rows)


@pytest.mark.no_triton
def test_half_precision_check_still_fails_a_wrong_kernel():
    x = torch.rand(2, 3, 8, 4).half()
    op = types.SimpleNamespace(name="double", reference=lambda t: t, triton=lambda t: t * 2, compare=None)
    assert bench._check(op, (x,), {}, torch.float16).startswith("FAIL")
    good = types.SimpleNamespace(name="same", reference=lambda t: t, triton=lambda t: t.clone(), compare=None)
    assert bench._check(good, (x,), {}, torch.float16) == "PASS"
    assert bench.DTYPES["bfloat16"] is torch.bfloat16
