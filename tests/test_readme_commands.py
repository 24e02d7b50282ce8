"""Every command in the README's code blocks runs, in README order, on the embedded data.

Commands run as written, in a scratch folder holding a small synthetic Market-1501 set at
``reid-data`` (torchreid's ``market1501`` loader reads it too) and ``configs/``. To keep the
suite short, training commands get test-size overrides appended (``key value`` pairs after the
README's own win: one epoch, 64x32 images, tiny generators), as do the attacks (fewer steps);
flags given twice take the last value; ``make-data`` writes the full default set to another
root (the small one is already at ``reid-data``), and the generated street video is shorter. ``torchreid-privacy`` commands run in this
process (``cli.main``), torchrun and Python blocks in their own. A README command that is neither run here nor listed in
``NOT_RUN`` with its reason fails ``test_every_readme_command_is_covered``.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# commands not run here, and why (each is still run elsewhere)
NOT_RUN = {
    "pip install -e '.[test]' && torchreid-privacy demo": "CI runs it verbatim (.ci/run); tests/test_demo.py runs "
                                                          "the demo shortened",
    "pytest": "CI runs it verbatim (.ci/run); it is this test suite",
    "pytest tests/benchmarks --benchmark-only": "benchmarks take minutes; their code runs in tests/benchmarks "
                                                "(collected, skipped by default)",
}
# appended to commands that train (README values first, these win)
SMALL_TRAIN = ["train.max_epoch", "1", "data.height", "64", "data.width", "32", "train.batch_size", "16",
               "sampler.num_instances", "4", "data.workers", "0", "test.batch_size", "128", "use_gpu", "false",
               "model.pretrained", "false", "data.transforms", "random_flip",
               "privacy.generator.ngf", "8", "privacy.decoder.ngf", "8", "privacy.discriminator.ndf", "8",
               "privacy.warmup_epochs", "0", "privacy.val_period", "1"]
EXTRA = {  # subcommand -> extra arguments (flags repeated: the last one wins)
    "train": SMALL_TRAIN,
    "attack reid": ["--max-epoch", "1"],
    "attack recover": ["--steps", "20", "--pairs", "4,8"],
    # eager only: bf16 autocast hits a oneDNN AMX bug on some CPUs (see the README), compile takes minutes
    "bench step": ["--quick", "--steps", "1", "--warmup", "0", "--rows", "eager"],
    "bench scale": ["--size", "tiny", "--rows", "eval-streamed,flat"],
    # one seed, two conventional points and one learned variant, on the small set
    "frontier": ["--quick", "--data-root", "reid-data", *SMALL_TRAIN],
}
# what each subcommand prints when it did its job (a regex searched in stdout + stderr); a README
# command whose subcommand is not here fails test_every_readme_command_is_covered
KEY_OUTPUT = {
    "config": r"privacy:\n  enabled:",
    "train": r"O->O .*PSNR/SSIM O-M",
    "anonymize": r"P written as \w+|written \d+, skipped|boxes replaced [1-9]",
    "recover": r"(restored|written) [1-9]\d*",
    "test": r"results: \S+results\.json",
    "search": r"rank-1",
    "visualize": r"rank lists: ",
    "export": r"anonymizer exported to anonymizer\.onnx",
    "make-data": r"synthetic Market-1501 layout \(\w+ style\) at |ReID set from \S+ at \S+: [1-9]|video: \S+ \(\d+ frames",
    "split": r"split written to split\.json",
    "list": r"desensitizers: .*mosaic",
    "keygen": r"256-bit key written to \w+\.key",
    "attack reid": r"O->M +rank-1",
    "attack recover": r"attacker on P, \d+ pairs",
    "bench step": r"bench step: ",
    "bench kernels": r"no CUDA device",
    "bench scale": r"bench scale: scale\.json",
    "frontier": r"frontier: \S+/frontier\.json",
}
# README paths the test points elsewhere (command -> (text, replacement))
PATH_SUBSTITUTIONS = {"make-data": ("reid-data", "reid-data-default")}
# README command text the test shrinks (a shorter generated video, still enough tracklets to train)
CMD_SUBSTITUTIONS = [("--frames 400 --people 20", "--frames 200 --people 10")]
# commands whose documented outcome on a CPU-only machine is a non-zero exit and this message
EXPECTED_FAILURE = {"bench kernels": (1, "no CUDA device")}
# README Python blocks: test-size substitutions (text -> replacement)
PY_SUBSTITUTIONS = [("height=256, width=128", "height=64, width=32"), ("max_epoch=120", "max_epoch=1"),
                    ('name="resnet50"', 'name="tiny_reid"'), ("batch_size_train=64", "batch_size_train=16"),
                    ('privacy={"mode": "progressive"}',
                     'privacy={"mode": "progressive", "generator": {"ngf": 8}, "decoder": {"ngf": 8}, '
                     '"discriminator": {"ndf": 8}}')]


def _blocks(lang):
    text = open(README, encoding="utf-8").read()
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if m.group(1) == lang]


def _commands(block):
    """Shell commands of one ```bash block: continuations joined, comments dropped."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        if shlex.split(line, comments=True):
            out.append(re.sub(r"\s+#(\s.*)?$", "", line).strip())  # the command as written, sans comment
    return out


def readme_commands():
    return [c for block in _blocks("bash") for c in _commands(block)]


def readme_steps():
    """``("bash", command)`` and ``("python", block)`` in README order."""
    text = open(README, encoding="utf-8").read()
    steps = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1) == "bash":
            steps += [("bash", c) for c in _commands(m.group(2))]
        elif m.group(1) == "python":
            steps.append(("python", m.group(2)))
    return steps


def _subcommand(words):
    """('train', args after it) for torchreid-privacy / python -m torchreid_privacy / torchrun ... -m."""
    if words[0] == "torchreid-privacy":
        rest = words[1:]
    elif "-m" in words and words[words.index("-m") + 1] == "torchreid_privacy":
        rest = words[words.index("-m") + 2:]
    else:
        return None, None
    two = " ".join(rest[:2])
    return (two if two in EXTRA or two in EXPECTED_FAILURE else rest[0]), rest


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from torchreid_privacy.data.synthetic import make_synthetic_market

    ws = tmp_path_factory.mktemp("readme")
    make_synthetic_market(ws / "reid-data", num_ids=24, train_images_per_id=8, gallery_per_id=4, num_junk=6)
    os.symlink(os.path.join(ROOT, "configs"), ws / "configs")
    photos = ws / "photos"
    photos.mkdir()
    query = next((ws / "reid-data").rglob("query"))
    for f in sorted(query.glob("*.jpg"))[:6]:
        shutil.copy(f, photos / f.name)
    yaml_blocks = _blocks("yaml")
    if yaml_blocks:
        (ws / "my.yaml").write_text(yaml_blocks[0])
    return ws


def test_every_readme_command_is_covered():
    cmds = readme_commands()
    assert cmds, "no commands found in README.md"
    assert set(NOT_RUN) <= set(cmds), f"NOT_RUN names commands the README no longer has: {set(NOT_RUN) - set(cmds)}"
    for cmd in cmds:
        if cmd in NOT_RUN:
            continue
        words = shlex.split(cmd)
        sub, _ = _subcommand(words)
        assert sub is not None, f"README command not runnable by this test: {cmd}"
        assert sub in KEY_OUTPUT, f"no expected output for README command: {cmd}"


def test_readme_runs_in_order(workspace, monkeypatch, capsys):
    """One test, in README order: a Python block loads the run a command trained, a command seals
    what an earlier one anonymized, so the steps run as a reader runs them; the first failure
    names its command and what it printed."""
    monkeypatch.chdir(workspace)
    ran = 0
    for kind, step in readme_steps():
        if kind == "python":
            _run_python_block(step, workspace, ran)
        elif step not in NOT_RUN:
            _run_command(step, workspace, capsys)
        ran += 1
    assert ran > 10


def _run_command(cmd, workspace, capsys):
    for old, new in CMD_SUBSTITUTIONS:
        cmd = cmd.replace(old, new)
    words = shlex.split(cmd)
    sub, rest = _subcommand(words)
    extra = EXTRA.get(sub, EXTRA.get(sub.split()[0], []))
    if sub in PATH_SUBSTITUTIONS:
        old, new = PATH_SUBSTITUTIONS[sub]
        rest = [new if w == old else w for w in rest]
    code, message = EXPECTED_FAILURE.get(sub, (0, ""))
    if words[0] == "torchreid-privacy":
        from torchreid_privacy import kernels
        from torchreid_privacy.cli import main

        try:
            rc = main([*rest, *extra])
        finally:
            kernels.set_kernel_mode(None)
        out = capsys.readouterr()
        stdout, stderr = out.out, out.err
    else:
        argv = ([sys.executable, "-m", "torch.distributed.run", *words[1:]] if words[0] == "torchrun"
                else [sys.executable, *words[1:]])
        r = subprocess.run([*argv, *extra], cwd=workspace, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"})
        rc, stdout, stderr = r.returncode, r.stdout, r.stderr
    assert rc == code, f"{cmd}\n--- stderr ---\n{stderr[-3000:]}\n--- stdout ---\n{stdout[-2000:]}"
    assert message in stdout + stderr
    assert re.search(KEY_OUTPUT[sub], stdout + stderr), f"{cmd}: expected output /{KEY_OUTPUT[sub]}/ not printed\n" \
                                                         f"{(stdout + stderr)[-2000:]}"


def _run_python_block(block, workspace, index):
    """A ```python block as its own script (a fresh process: registrations do not leak)."""
    for old, new in PY_SUBSTITUTIONS:
        block = block.replace(old, new)
    script = workspace / f"readme_block_{index}.py"
    script.write_text(block)
    r = subprocess.run([sys.executable, str(script)], cwd=workspace, capture_output=True, text=True,
                       env={**os.environ, "TQDM_DISABLE": "1"}, timeout=600)
    assert r.returncode == 0, f"README python block:\n{block}\n--- stderr ---\n{r.stderr[-3000:]}"


def test_readme_shows_python():
    assert _blocks("python"), "the README shows no Python"
