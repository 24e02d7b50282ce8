"""``torchreid-privacy`` command line: one module per group of subcommands, each only parsing
arguments and calling the public API.

Every failure a user can cause (bad config key or type, missing file, unreadable checkpoint,
bad parameter) ends in one line ``torchreid-privacy: error: ...`` naming the culprit and a
non-zero exit; an unexpected failure (a bug) is one line too, exit code 3;
``TORCHREID_PRIVACY_DEBUG=1`` shows the traceback instead. ``key value`` config overrides may
come before or after any flag.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from . import attack, export, frontier, images, search, tools, train
from .common import PROG

COMMAND_MODULES = [train, images, attack, frontier, tools, export, search]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Privacy-preserving person re-identification as torchreid "
                                                        "plugins.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parsers(sub)
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
    args = parse(argv)
    if os.environ.get("TORCHREID_PRIVACY_DEBUG"):
        return args.func(args)
    from torchreid_privacy.bridge import CheckpointError
    from torchreid_privacy.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ValueError, KeyError, OSError, FloatingPointError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line, with the way to the traceback
        print(f"{PROG}: error: internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
              f"rerun with TORCHREID_PRIVACY_DEBUG=1 for the traceback", file=sys.stderr)
        return 3


def _one_line(msg: str) -> str:
    return "; ".join(line.strip() for line in str(msg).splitlines() if line.strip()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
