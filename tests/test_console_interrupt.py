"""Ctrl-C in a command's first seconds, while torch and torchreid import, is one line and exit code
130, as later (``cli.main``), not a traceback; a program importing the package still gets its
KeyboardInterrupt.

Each case starts a fresh interpreter with ``-X importtime`` (a line on stderr as each module finishes
importing), waits until a ``torch.*`` module has finished, i.e. the package is inside ``import torch``
(seconds before the CLI's ``main`` runs), and sends SIGINT there. That the interrupt landed inside the
package's own imports is checked too: the modules it imports last, and the CLI's, never started
importing (``-X importtime`` reports every import begun, finished or not).
"""
import builtins
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = "torchreid-privacy: interrupted"


def _imported(line):
    """The module an ``-X importtime`` line reports as imported, else None."""
    return line.rsplit("|", 1)[-1].strip() if line.startswith("import time:") else None


def _interrupt_while_importing(args, cwd):
    """(exit code, stderr without import-time lines, modules imported) of ``python -X importtime ARGS``
    sent SIGINT while it imports torch."""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # not inherited ignored
    lines, in_torch = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if (_imported(line) or "").startswith("torch."):
                in_torch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert in_torch.wait(120), f"torch never started importing:\n{''.join(lines)[-2000:]}"
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(30)
    proc.stdout.close()
    modules = {_imported(line) for line in lines} - {None}
    return proc.returncode, "".join(line for line in lines if _imported(line) is None), modules


def _console_script(folder):
    """The console script pip writes for setup.py's entry point (the installed one may predate it)."""
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    module, func = re.search(r"[\"']torchreid-privacy\s*=\s*([\w.]+):(\w+)[\"']", setup).groups()
    script = folder / "torchreid-privacy"
    script.write_text(f"import re\nimport sys\nfrom {module} import {func}\nif __name__ == '__main__':\n"
                      f"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      f"    sys.exit({func}())\n")
    return script


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_ctrl_c_while_the_cli_imports_is_one_line_and_exit_130(how, tmp_path):
    args = [str(_console_script(tmp_path))] if how == "console script" else ["-m", "torchreid_privacy"]
    code, stderr, modules = _interrupt_while_importing([*args, "list"], ROOT)
    late = {"torchreid_privacy.plugins", "torchreid_privacy.cli"} & modules
    assert not late and "torch" in modules, f"the interrupt came after the package's imports: {late}"
    assert "Traceback" not in stderr and stderr.strip().splitlines() == [INTERRUPTED], stderr[-3000:]
    assert code == 130


def test_a_program_importing_the_package_still_gets_its_keyboard_interrupt(tmp_path):
    code, stderr, modules = _interrupt_while_importing(["-c", "import torchreid_privacy"], tmp_path)
    assert "torchreid_privacy.plugins" not in modules and "torch" in modules
    assert stderr.strip().splitlines()[-1] == "KeyboardInterrupt" and INTERRUPTED not in stderr
    assert code in (-signal.SIGINT, 128 + signal.SIGINT, 1)  # Python ends an unhandled Ctrl-C by SIGINT


def test_the_console_entry_point_catches_ctrl_c_while_the_cli_module_imports(monkeypatch, capsys):
    from torchreid_privacy.__main__ import console

    real = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "torchreid_privacy.cli":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert console() == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"
    monkeypatch.setattr(builtins, "__import__", real)
    with pytest.raises(SystemExit) as done:
        console()  # the CLI itself, unchanged: no command given is argparse's usage error
    assert done.value.code == 2
