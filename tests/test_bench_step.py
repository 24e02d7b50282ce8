"""``bench step``: runs on the CPU, prints one table, writes its JSON (tiny sizes, few steps)."""
import json

import pytest
import torch

from torchreid_privacy.bench import step as bench_step

from torchreid_privacy.bench import step_profile
from torchreid_privacy.cli import main as cli_main


def test_bench_step_quick_writes_table_and_json(tiny_root, tmp_path, capsys):
    out = tmp_path / "step.json"
    code = cli_main(["bench", "step", "--size", "tiny", "--quick", "--rows", "eager", "--breakdown",
                     "--clock", "thread", "--threads", "1", "--data-root", tiny_root, "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert bench_step.PLAIN in printed and "x plain" in printed and "phase breakdown" in printed
    report = json.loads(out.read_text())
    rows = {r["row"]: r for r in report["rows"]}
    assert set(rows) == {bench_step.PLAIN, "eager"}
    assert all(r["status"] == "ok" for r in rows.values())
    eager = rows["eager"]
    assert eager["ms_step"] > 0 and eager["images_s"] > 0 and eager["x_plain"] > 1  # C alone is cheaper
    assert eager["loss_rel_diff"] == 0.0 and eager["peak_mb"] is None  # memory: CUDA only
    assert report["batch"] == 16 and report["threads"] == 1
    b = report["breakdown"]
    names = [p["phase"] for p in b["phases"]]
    assert {"G fwd", "G_R fwd", "D step: backward", "C fwd (O, P) + ReID loss"} <= set(names)
    assert sum(p["ms"] for p in b["phases"]) == pytest.approx(b["step_ms"], rel=1e-6)  # "other" closes it
    assert {n["net"] for n in b["nets"]} == {"model", "generator", "decoder", "disc_op", "disc_pr"}
    assert b["flop_ratio"] > 2  # C on O and P, plus four GAN nets


def test_bench_step_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        bench_step.main(["--rows", "eager,warp"])
    assert "--rows: unknown warp" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--clock thread"):
        step_profile.step_clock(torch.device("cuda"), "thread")
    with pytest.raises(ValueError, match="--size"):
        bench_step.build_config("huge", torch.device("cpu"), "root", "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_bench_step_without_cuda_names_the_device(capsys):
    with pytest.raises(SystemExit):
        bench_step.main(["--device", "cuda"])
    assert "--device cuda: no CUDA device here" in capsys.readouterr().err


def test_table_marks_skipped_and_interpreter_rows():
    rows = [{"row": "triton", "kernels": "triton", "compile": "off", "amp": "off", "status": "ok", "ms_step": 9e3,
             "images_s": 1.0, "x_plain": 90.0, "first_step_s": 9.0, "peak_mb": None, "loss_rel_diff": 1e-6,
             "note": "correctness only, time meaningless (interpreter)"},
            {"row": "amp fp16", "kernels": "torch", "compile": "off", "amp": "fp16",
             "status": "skipped: fp16 autocast is for CUDA"}]
    table = bench_step.format_table(rows)
    assert "correctness only" in table and "skipped: fp16 autocast is for CUDA" in table
    assert " - " in table.splitlines()[2]  # no peak memory on a CPU


def test_time_budget_skips_the_rows_left(tmp_path, capsys):
    out = tmp_path / "skipped.json"
    assert bench_step.main(["--size", "tiny", "--rows", "eager,compile", "--budget-s", "0",
                            "--output", str(out)]) == 2  # nothing measured
    rows = {r["row"]: r["status"] for r in json.loads(out.read_text())["rows"]}
    assert rows["eager"] == rows["compile"] == "skipped: --budget-s 0 spent"
    assert "skipped: --budget-s 0 spent" in capsys.readouterr().out
