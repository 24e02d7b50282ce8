"""In-process CLI runs for tests: ``main(argv)`` with its stdout and stderr captured."""
import contextlib
import io

from torchreid_privacy.cli import main


def run_cli(argv):
    """``(exit code, stdout, stderr)`` of ``torchreid-privacy ARGV`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()
