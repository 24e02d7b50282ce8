"""Every command in the README's and the docs' code blocks runs, in reading order, on the embedded data.

Reading order is README.md, then the docs/ pages in the order of mkdocs.yml's ``nav`` (a page
may use what an earlier page made, and says so). Commands run as written, in one scratch folder
that stands for the clone's root: it holds ``configs/`` (linked) and nothing else, so every file
and folder a command reads was made by an earlier step (``make-data`` the data, a shell line
``photos/``, a YAML block the text names, e.g. "Saved as `my.yaml`:", that file). To keep the suite short, training commands get
test-size overrides appended (``key value`` pairs after the README's own win: one epoch, 64x32
images, tiny generators), as do the attacks (fewer steps) and ``make-data --root`` (fewer
identities); flags given twice take the last value; the generated street video is shorter.
``torchreid-privacy`` commands run in this process (``cli.main``), torchrun, Python blocks and
``SHELL`` lines in their own. A documented command that is neither run here nor listed in ``NOT_RUN``
with its reason fails ``test_every_readme_command_is_covered``; a substitution that no longer
matches the text fails ``test_every_substitution_matches_the_readme``.
"""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MKDOCS = os.path.join(ROOT, "mkdocs.yml")


def _nav_pages(nav):
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            yield from _nav_pages(value)
        elif value.endswith(".md"):
            yield os.path.join(ROOT, "docs", value)


def pages():
    """README.md, then every docs page in mkdocs.yml's nav order (a page missing from nav fails
    ``test_every_docs_page_is_in_the_nav``)."""
    import yaml

    with open(MKDOCS, encoding="utf-8") as f:
        nav = yaml.safe_load(f)["nav"]
    return [README, *_nav_pages(nav)]


def _text():
    return "\n".join(open(p, encoding="utf-8").read() for p in pages())

# commands not run here, and why (each is still run elsewhere)
NOT_RUN = {
    "pip install -e '.[test]' && torchreid-privacy demo": "CI runs it verbatim (.ci/run); tests/test_demo.py runs "
                                                          "the demo shortened",
    "pytest": "CI runs it verbatim (.ci/run); it is this test suite",
    'git clone "$REPO_URL" torchreid-privacy && cd torchreid-privacy': "the scratch folder stands for the clone "
                                                                       "(CI runs on a fresh clone)",
    "pip install -e .": "CI installs pip install -e '.[test]', which includes it (.ci/run)",
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
    # a resumed run keeps its checkpoint's (already shortened) config: one epoch more than it has
    "train --resume": ["train.max_epoch", "2"],
}
# appended to ``make-data --root``: 20 identities (10 for training, 120 images), the fewest with which the
# README's own-crops recipe (a folder of the training identities, half of them held out for its test) still
# fills a training batch; no test-only identities (the embedded set's 200 would make every test pass longer)
MAKE_DATA_SMALL = ["--ids", "20", "--extra-test-ids", "0"]
# shell lines the README's set-up steps use (run by bash in the scratch folder, exit 0 expected)
SHELL = ("mkdir", "cp", "for", "diff")
# what each subcommand prints when it did its job (a regex searched in stdout + stderr); a README
# command whose subcommand is not here fails test_every_readme_command_is_covered
KEY_OUTPUT = {
    "config": r"privacy:\n  enabled:",
    "train": r"O->O .*PSNR/SSIM O-M",
    "train --resume": r"O->O .*PSNR/SSIM O-M",
    "anonymize": r"P written as \w+|written \d+, skipped|boxes replaced [1-9]",
    "recover": r"(restored|written) [1-9]\d*",
    "test": r"results: \S+results\.json",
    "search": r"rank-1",
    "visualize": r"rank lists: ",
    "export": r"(anonymizer|decoder|reid) exported to \S+\.onnx",
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
CMD_SUBSTITUTIONS = [("--frames 150 --people 12", "--frames 60 --people 6")]
# commands whose documented outcome here is a non-zero exit and exactly this output (one line), e.g.
# "bench kernels": (1, "no CUDA device: kernels not benchmarked"); none today (the bench and frontier
# commands are shown, not run: docs/benchmarks.md)
EXPECTED_FAILURE = {}
# commands run in their own process though they are torchreid-privacy commands, and why (e.g. one that
# must see no GPU: CUDA_VISIBLE_DEVICES empty, no TRITON_INTERPRET); none today
OWN_PROCESS = {}
# README Python blocks: test-size substitutions (text -> replacement)
PY_SUBSTITUTIONS = [("height=256, width=128", "height=64, width=32"), ("max_epoch=120", "max_epoch=1"),
                    ('name="resnet50"', 'name="tiny_reid"'), ("batch_size_train=64", "batch_size_train=16"),
                    ('privacy={"mode": "progressive"}',
                     # the quickstart's U-Net depth: the default 7 pads 64x32 inputs to 128x128 (6x slower)
                     'privacy={"mode": "progressive", "generator": {"ngf": 8, "num_downs": 5}, '
                     '"decoder": {"ngf": 8, "num_downs": 5}, "discriminator": {"ndf": 8}}')]


def _blocks(lang):
    text = _text()
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
    """``("bash", command)``, ``("python", block)`` and ``("yaml", block)`` in reading order."""
    text = _text()
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
    text = _text()
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


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in open(README, encoding="utf-8").read().splitlines() if ln.strip()]
    assert lines[:4] == ["```bash", "pip install -e '.[test]' && torchreid-privacy demo", "pytest", "```"], lines[:4]


def test_readme_stays_short():
    """The README is the five-minute read (issue 27: at most about 10 KB); the rest lives in docs/."""
    size = os.path.getsize(README)
    assert size <= 10 * 1024, f"README.md is {size} bytes: move detail into docs/"


def test_every_docs_page_is_in_the_nav():
    on_disk = {os.path.join(ROOT, "docs", os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "docs")))
               for d, _, files in os.walk(os.path.join(ROOT, "docs")) for f in files if f.endswith(".md")}
    listed = set(pages()[1:])
    assert on_disk == listed, f"not in mkdocs.yml's nav: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"


def test_readme_links_resolve():
    """``mkdocs build --strict`` checks the docs' links; the README is outside the site, so its
    relative links are checked here (a moved page breaks the README, not only the site)."""
    text = open(README, encoding="utf-8").read()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not os.path.exists(os.path.join(ROOT, target.split("#")[0])):
            broken.append(target)
    assert not broken, f"README links to missing files: {broken}"


def test_package_long_description_has_absolute_links():
    """A package index shows setup.py's long description outside the repository: a relative
    link there leads nowhere."""
    source = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    m = re.search(r'LONG_DESCRIPTION = """(.*?)"""', source, re.S)
    assert m, "setup.py: no LONG_DESCRIPTION text"
    links = re.findall(r"\]\(([^)\s]+)\)", m.group(1))
    assert links and all(re.match(r"https?://", t) for t in links), links


def test_one_version():
    """``torchreid_privacy.__version__`` is the version; setup.py and the changelog read the same."""
    import torchreid_privacy

    setup_src = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert "version=" in setup_src and '"0.' not in setup_src.split("version=")[1].split("\n")[0], \
        "setup.py writes its own version number"
    changelog = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    assert f"## {torchreid_privacy.__version__}" in changelog
