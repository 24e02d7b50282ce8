"""The GPU benchmark script: its no-GPU exit, and one tiny run through the interpreter."""
import pytest
import torch

from torchreid_privacy.bench import kernels as bench


@pytest.mark.no_triton
def test_main_without_cuda_prints_one_line_and_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 1
    assert capsys.readouterr().out.strip() == "no CUDA device: kernels not benchmarked"


def test_bench_rows_on_cpu_in_the_interpreter():
    rows = bench.bench_kernels(batch=8, quick=True, device="cpu", compile=False, image_size=(24, 16),
                               ops=["mosaic", "batch_hard_triplet"])
    assert [r["op"] for r in rows] == ["mosaic", "batch_hard_triplet", "batch_hard_triplet (fwd+bwd)"]
    assert all(r["check"] == "PASS" for r in rows)
    assert rows[0]["shape"] == (8, 3, 24, 16)
    for r in rows:
        assert r["ms_eager"] > 0 and r["ms_triton"] > 0 and r["ms_compile"] is None
        assert r["gbps"] > 0 and r["pct_copy"] > 0
    assert rows[1]["ms_baseline"] > 0  # torchreid's loop
    table = bench.format_table(rows)
    assert "batch_hard_triplet (fwd+bwd)" in table and "copy bandwidth" in table
    with pytest.raises(ValueError, match="ops"):
        bench.bench_kernels(device="cpu", ops=["nope"])


@pytest.mark.no_triton
def test_ssim_conv2d_baseline_is_skimage_ssim():
    from torchreid_privacy.metrics.image import ssim

    a = torch.rand(2, 3, 32, 24)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    torch.testing.assert_close(bench.ssim_conv2d(a, b).double(), ssim(a, b), atol=1e-5, rtol=1e-5)
