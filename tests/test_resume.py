"""Exact resume after kill -9, and damaged checkpoints.

Design (deterministic, not timing-based): the interrupted run is a real
``python -m torchreid_privacy train`` process, started through a small driver that wraps the
engine's ``forward_backward`` (test code only, the product has no kill hook): at the second
step of epoch 3 it drops a marker file and sleeps. The test waits for the marker and sends
SIGKILL, so the process always dies mid-epoch-3, whatever the machine's speed. It is then
resumed (``train --resume RUN``, config taken from the checkpoint) and its per-epoch mean
losses, learning rates, validation rank-1s and final test results are compared with an
uninterrupted run of the same seed, run as a fresh process in the same environment.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from torchreid_privacy import bridge

from torchreid_privacy.utils import checkpoint
from torchreid_privacy.plugins.engine.state import resume_run
from torchreid_privacy.cli import main
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config


from tiny_config import TINY

MAX_EPOCH = 4
KILL_EPOCH = 3  # 1-based: the run dies after one step of this epoch

# Each run is a fresh process with the same environment (one thread, fixed hash seed, MKL's
# reproducible code path): a run inside this pytest process, after hundreds of other tests,
# may round a float differently in the last bit, and GAN training amplifies that.
DRIVER = f"""
import os, sys, time
import torch
torch.set_num_threads(1)
from torchreid_privacy.plugins.engine import PrivacyEngine
step = PrivacyEngine.forward_backward
def paused(self, data):
    if os.environ.get("KILL_MARK") and self.epoch == {KILL_EPOCH - 1} and self.batch_idx == 1:
        open(os.environ["KILL_MARK"], "w").close()
        time.sleep(600)
    return step(self, data)
PrivacyEngine.forward_backward = paused
from torchreid_privacy.cli import main
sys.exit(main(sys.argv[1:]))
"""
ENV = {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE",
       "PYTHONHASHSEED": "0"}


def _train_args(root, run):
    # progressive, gates wide open (the supervisor snapshot is in play before the kill), warm-up
    # and a learning-rate step inside the run (the chained scheduler must resume too)
    return ["train", "--config-file", packaged_config(QUICKSTART), "data.root", root, "data.save_dir", str(run),
            *TINY, "privacy.mode", "progressive", "train.max_epoch", str(MAX_EPOCH), "privacy.r1_floor", "0.0",
            "privacy.eps_psnr", "1000", "privacy.eps_ssim", "1000", "privacy.warmup_epochs", "1",
            "train.stepsize", "[3]"]


def _start(args, log, kill_mark=None):
    env = {**os.environ, **ENV}
    env.pop("KILL_MARK", None)
    if kill_mark is not None:
        env["KILL_MARK"] = str(kill_mark)
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would block the child
        return subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)


def _finish(proc, log, timeout=300):
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, log.read_text()[-3000:]


def _kill_at_mark(proc, mark, log, timeout=300):
    deadline = time.time() + timeout
    try:
        while not mark.exists():
            if proc.poll() is not None:
                pytest.fail(f"training ended before the kill point (rc {proc.returncode}): "
                            f"{log.read_text()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("training did not reach the kill point in time")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def runs(tiny_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    ref, cut = base / "reference", base / "interrupted"
    # the uninterrupted and the doomed run side by side (one thread each)
    ref_proc = _start(_train_args(tiny_root, ref), base / "reference.log")
    cut_proc = _start(_train_args(tiny_root, cut), base / "interrupted.log", kill_mark=base / "killed")
    _kill_at_mark(cut_proc, base / "killed", base / "interrupted.log")
    _finish(ref_proc, base / "reference.log")
    after_kill = checkpoint.load(str(cut / "checkpoints" / "last.pth"), prefer=(checkpoint.LAST,))
    # config, data and save_dir come from the checkpoint
    _finish(_start(["train", "--resume", str(cut)], base / "resumed.log"), base / "resumed.log")
    return {"ref": ref, "cut": cut, "after_kill": after_kill}


def test_kill_leaves_last_completed_epoch(runs):
    ck = runs["after_kill"]
    assert ck["epoch"] == KILL_EPOCH - 1
    assert ck["supervisor"] is not None  # an upgrade happened: the snapshot must survive the restart
    assert len(ck["history"]) == KILL_EPOCH - 1 and ck["global_step"] > 0
    assert not [f for f in os.listdir(runs["cut"] / "checkpoints") if ".tmp" in f]


def test_resumed_run_equals_uninterrupted_run(runs):
    ref = json.loads((runs["ref"] / "results.json").read_text())
    res = json.loads((runs["cut"] / "results.json").read_text())
    assert [h["epoch"] for h in res["history"]] == list(range(1, MAX_EPOCH + 1))
    for want, got in zip(ref["history"], res["history"]):
        assert got["lr"] == pytest.approx(want["lr"], abs=1e-12), got["epoch"]
        assert set(got["losses"]) == set(want["losses"]) and {"gan", "rec_p", "reid_o", "d_op"} <= set(got["losses"])
        for term, value in want["losses"].items():
            assert got["losses"][term] == pytest.approx(value, abs=1e-6), (got["epoch"], term)
        assert got["val_r1"] == want["val_r1"] and got["upgraded"] == want["upgraded"]
    lrs = [h["lr"] for h in ref["history"]]
    assert lrs[0] < lrs[1] == lrs[2] and lrs[3] < lrs[2]  # warm-up, then the lr step inside the resumed part
    assert res["upgrades"] == ref["upgrades"]
    # the final test uses the best (validation-selected) weights: best.pth was found again
    want_test, got_test = ref["test"]["synthetic_market"], res["test"]["synthetic_market"]
    for setting, r in want_test["rank"].items():
        assert got_test["rank"][setting] == pytest.approx(r, abs=1e-6), setting
    for pair, m in want_test["image"].items():
        assert got_test["image"][pair] == pytest.approx(m, abs=1e-5), pair


def test_truncated_checkpoint_is_one_line_error_and_others_still_load(runs, tmp_path, capsys):
    src = runs["cut"] / "checkpoints"
    damaged = tmp_path / "checkpoints" / "last.pth"
    damaged.parent.mkdir()
    shutil.copy(src / "last.pth", damaged)
    shutil.copy(src / "best.pth", tmp_path / "checkpoints" / "best.pth")
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) // 2)
    for argv in (["train", "--resume", str(damaged)], ["test", "--checkpoint", str(damaged)]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("torchreid-privacy: error: cannot load checkpoint")
        assert str(damaged) in err and "truncated or corrupted" in err and "best.pth" in err
    with pytest.raises(bridge.CheckpointError, match="truncated"):
        checkpoint.load(str(damaged))
    assert checkpoint.load(str(tmp_path))["epoch"] >= 1  # the run directory resolves to the intact best.pth
    assert checkpoint.load(str(src / "last.pth"))["epoch"] == MAX_EPOCH


def test_resume_refuses_other_mode(runs, tiny_root, capsys):
    args = _train_args(tiny_root, runs["cut"])
    args[args.index("progressive")] = "joint"
    assert main(["train", "--resume", str(runs["cut"] / "checkpoints" / "last.pth"), *args[1:]]) == 1
    err = capsys.readouterr().err.strip()
    assert "last.pth: checkpoint was trained with privacy.mode progressive, the config says joint" in err


def test_resume_takes_back_the_best_state_of_its_run(runs, tmp_path):
    """The final test must use the validation-selected weights even when they are from before the kill."""
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.config import load_config

    run = tmp_path / "copy"
    shutil.copytree(runs["cut"] / "checkpoints", run / "checkpoints")
    last = run / "checkpoints" / "last.pth"
    ck = checkpoint.load(str(last))
    engine = build_privacy_engine(load_config(base=ck["config"], overrides=["data.save_dir", str(run)]))
    assert resume_run(engine, str(last), str(run)) == MAX_EPOCH
    best = checkpoint.load(str(run / "checkpoints" / "best.pth"))
    assert engine.best_state is not None and engine.best_state["epoch"] == best["epoch"]
    assert engine.best_score == best["best_score"]
    # a best.pth of another run (other best_score) is never taken for this one
    shutil.copy(runs["ref"] / "checkpoints" / "best.pth", run / "checkpoints" / "best.pth")
    other = checkpoint.load(str(run / "checkpoints" / "best.pth"))
    other["best_score"] = -1.0
    checkpoint.save_atomic(other, str(run / "checkpoints" / "best.pth"))
    resume_run(engine, str(last), str(run))
    assert engine.best_state is None
