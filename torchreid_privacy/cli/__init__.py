"""``torchreid-privacy`` command line: one module per group of subcommands, each only parsing
arguments and calling the public API.

Every failure a user can cause (bad config key or type, missing file, unreadable checkpoint,
bad parameter) ends in one line ``torchreid-privacy: error: ...`` naming the culprit and a
non-zero exit; an unexpected failure (a bug) is one line too, exit code 3;
``TORCHREID_PRIVACY_DEBUG=1`` shows the traceback instead. ``key value`` config overrides may
come before or after any flag.

Interrupted (Ctrl-C, or SIGTERM from ``kill``, a scheduler, a container stop), a command unwinds
as on any error, so every writer removes its temporary files and nothing half-written stays:
one line ``torchreid-privacy: interrupted``, exit code 130 (Ctrl-C) or 143 (SIGTERM). A second
SIGTERM while it unwinds is ignored; SIGKILL runs no cleanup, and the next run writing the same
output sweeps what was left (``utils.atomic.sweep_stale``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Iterator, List, Optional

from .common import PROG

# imported when a parser is built (inside main's guard: a Ctrl-C while they load is one line too)
COMMAND_MODULES = ("train", "images", "attack", "frontier", "tools", "export", "search")
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as an interrupt so every ``finally`` and ``except
    BaseException`` cleanup runs, as on Ctrl-C."""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Privacy-preserving person re-identification as torchreid "
                                                        "plugins.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parsers(sub)
    return ap


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; words no flag claims are the ``key value`` overrides of commands that take them."""
    ap = _parser()
    args, extra = ap.parse_known_args(argv)
    unknown = [w for w in extra if w.startswith("--")]
    if unknown or (extra and not getattr(args, "takes_overrides", False)):
        ap.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    args.opts = extra
    return args


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _sigterm_interrupts():
            return _run(argv)
    except KeyboardInterrupt as exc:  # Terminated too
        if os.environ.get("TORCHREID_PRIVACY_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


def _run(argv: Optional[List[str]]) -> int:
    if os.environ.get("TORCHREID_PRIVACY_DEBUG"):
        args = parse(argv)
        return args.func(args)
    from torchreid_privacy.bridge import CheckpointError
    from torchreid_privacy.config import ConfigError

    try:
        args = parse(argv)  # inside: a subcommand module that fails to import is one line too
        return args.func(args)
    except (ConfigError, CheckpointError, ValueError, KeyError, OSError, FloatingPointError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except Exception as exc:  # a bug, not a user error: still one line, with the way to the traceback
        print(f"{PROG}: error: internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
              f"rerun with TORCHREID_PRIVACY_DEBUG=1 for the traceback", file=sys.stderr)
        return 3


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` (once; a repeat is ignored while the
    cleanups run). Only from the main thread, where Python delivers signals; the previous handler
    is put back afterwards, so a program or test calling ``main`` keeps its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _one_line(msg: str) -> str:
    return "; ".join(line.strip() for line in str(msg).splitlines() if line.strip()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
