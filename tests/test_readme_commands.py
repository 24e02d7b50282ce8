"""Every command in the README's code blocks runs, in README order, on the embedded data.

Commands run as written, in a scratch folder that stands for the clone's root: it holds
``configs/`` (linked) and nothing else, so every file and folder a command reads was made by an
earlier README step (``make-data`` the data, a shell line ``photos/``, a YAML block the README
names, e.g. "Saved as `my.yaml`:", that file). To keep the suite short, training commands get
test-size overrides appended (``key value`` pairs after the README's own win: one epoch, 64x32
images, tiny generators), as do the attacks (fewer steps) and ``make-data --root`` (fewer
identities); flags given twice take the last value; the generated street video is shorter.
``torchreid-privacy`` commands run in this process (``cli.main``), torchrun, Python blocks and
``SHELL`` lines in their own. A README command that is neither run here nor listed in ``NOT_RUN``
with its reason fails ``test_every_readme_command_is_covered``; a substitution that no longer
matches the README fails ``test_every_substitution_matches_the_readme``.
"""
import os
import re
import shlex
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
    # a GPU run checks every kernel: once each, compiled by Triton only
    "bench kernels": ["--quick", "--no-compile"],
}
# appended to ``make-data --root``: 16 identities (8 for training, 96 images: the tests' size)
MAKE_DATA_SMALL = ["--ids", "16"]
# shell lines the README's set-up steps use (run by bash in the scratch folder, exit 0 expected)
SHELL = ("mkdir", "cp")
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
# README command text the test shrinks (a shorter generated video, still enough tracklets to train)
CMD_SUBSTITUTIONS = [("--frames 400 --people 20", "--frames 200 --people 10")]
# commands whose documented outcome here is a non-zero exit and exactly this output (one line)
EXPECTED_FAILURE = {"bench kernels": (1, "no CUDA device: kernels not benchmarked")}
# commands run in their own process though they are torchreid-privacy commands, and why: bench kernels
# sees no GPU there (CUDA_VISIBLE_DEVICES empty), so its documented CPU outcome is what every machine
# checks; its GPU path is checked by running it on a GPU, not by this test
OWN_PROCESS = {"bench kernels": "run without TRITON_INTERPRET (conftest.py's) and without a visible GPU"}
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
    """``("bash", command)``, ``("python", block)`` and ``("yaml", block)`` in README order."""
    text = open(README, encoding="utf-8").read()
    steps = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1) == "bash":
            steps += [("bash", c) for c in _commands(m.group(2))]
        elif m.group(1) in ("python", "yaml"):
            steps.append((m.group(1), m.group(2)))
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
    return (two if two in KEY_OUTPUT else rest[0]), rest


def _named_files():
    """{name: text} of the README's YAML blocks that the text right before names as a file
    ("Saved as `my.yaml`:"): what a reader saves before the commands that read it."""
    text = open(README, encoding="utf-8").read()
    named = re.finditer(r"as `([\w./-]+)`:\s*\n```yaml\n(.*?)^```", text, re.M | re.S)
    return {m.group(1): m.group(2) for m in named}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The scratch folder: the clone's ``configs/`` and nothing else."""
    ws = tmp_path_factory.mktemp("readme")
    os.symlink(os.path.join(ROOT, "configs"), ws / "configs")
    return ws


def test_every_readme_command_is_covered():
    cmds = readme_commands()
    assert cmds, "no commands found in README.md"
    assert set(NOT_RUN) <= set(cmds), f"NOT_RUN names commands the README no longer has: {set(NOT_RUN) - set(cmds)}"
    for cmd in cmds:
        if cmd in NOT_RUN or cmd.split()[0] in SHELL:
            continue
        words = shlex.split(cmd)
        sub, _ = _subcommand(words)
        assert sub is not None, f"README command not runnable by this test: {cmd}"
        assert sub in KEY_OUTPUT, f"no expected output for README command: {cmd}"


def test_every_substitution_matches_the_readme():
    """A substitution that no longer matches would let the test run the README's full-size step
    (or miss a step) without notice."""
    cmds, blocks = readme_commands(), _blocks("python")
    for old, _ in CMD_SUBSTITUTIONS:
        assert any(old in c for c in cmds), f"CMD_SUBSTITUTIONS: no README command contains {old!r}"
    for old, _ in PY_SUBSTITUTIONS:
        assert any(old in b for b in blocks), f"PY_SUBSTITUTIONS: no README Python block contains {old!r}"
    runnable = [c for c in cmds if c not in NOT_RUN and c.split()[0] not in SHELL]
    subs = {_subcommand(shlex.split(c))[0] for c in runnable}
    stale = (set(EXTRA) | set(EXPECTED_FAILURE) | set(OWN_PROCESS)) - subs
    assert not stale, f"EXTRA / EXPECTED_FAILURE / OWN_PROCESS name commands the README no longer has: {stale}"
    assert any(_subcommand(shlex.split(c))[0] == "make-data" and "--root" in c for c in runnable), \
        "MAKE_DATA_SMALL: the README no longer makes a dataset with make-data --root"


def test_readme_runs_in_order(workspace, monkeypatch, capsys):
    """One test, in README order: a Python block loads the run a command trained, a command seals
    what an earlier one anonymized, so the steps run as a reader runs them; the first failure
    names its command and what it printed."""
    monkeypatch.chdir(workspace)
    files = _named_files()
    used = {"cmd": set(), "py": set()}
    ran = 0
    for kind, step in readme_steps():
        if kind == "python":
            _run_python_block(step, workspace, ran, used["py"])
        elif kind == "yaml":
            if step in files.values():
                (workspace / next(n for n, t in files.items() if t == step)).write_text(step)
        elif step not in NOT_RUN:
            _run_command(step, workspace, capsys, used["cmd"])
        ran += 1
    assert ran > 10
    assert used["cmd"] == {old for old, _ in CMD_SUBSTITUTIONS}, "a command substitution matched nothing"
    assert used["py"] == {old for old, _ in PY_SUBSTITUTIONS}, "a Python substitution matched nothing"


def _run_command(cmd, workspace, capsys, used=None):
    for old, new in CMD_SUBSTITUTIONS:
        if old in cmd:
            cmd = cmd.replace(old, new)
            if used is not None:
                used.add(old)
    if cmd.split()[0] in SHELL:
        r = subprocess.run(["bash", "-c", cmd], cwd=workspace, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
        return
    words = shlex.split(cmd)
    sub, rest = _subcommand(words)
    extra = EXTRA.get(sub, EXTRA.get(sub.split()[0], []))
    if sub == "make-data" and "--root" in rest:
        extra = MAKE_DATA_SMALL
    code, message = EXPECTED_FAILURE.get(sub, (0, ""))
    if sub in OWN_PROCESS:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        r = subprocess.run([sys.executable, "-m", "torchreid_privacy", *rest, *extra], cwd=workspace,
                           capture_output=True, text=True, timeout=600,
                           env={**env, "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""})
        rc, stdout, stderr = r.returncode, r.stdout, r.stderr
    elif words[0] == "torchreid-privacy":
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
    if code:  # the documented failure is exactly its one line
        assert (stdout + stderr).strip() == message, f"{cmd}: expected only {message!r}, got\n{stdout}{stderr}"
    assert re.search(KEY_OUTPUT[sub], stdout + stderr), f"{cmd}: expected output /{KEY_OUTPUT[sub]}/ not printed\n" \
                                                         f"{(stdout + stderr)[-2000:]}"


def _run_python_block(block, workspace, index, used=None):
    """A ```python block as its own script (a fresh process: registrations do not leak)."""
    for old, new in PY_SUBSTITUTIONS:
        if old in block:
            block = block.replace(old, new)
            if used is not None:
                used.add(old)
    script = workspace / f"readme_block_{index}.py"
    script.write_text(block)
    r = subprocess.run([sys.executable, str(script)], cwd=workspace, capture_output=True, text=True,
                       env={**os.environ, "TQDM_DISABLE": "1"}, timeout=600)
    assert r.returncode == 0, f"README python block:\n{block}\n--- stderr ---\n{r.stderr[-3000:]}"


def test_readme_shows_python():
    assert _blocks("python"), "the README shows no Python"
