"""``python -m torchreid_privacy`` is the same CLI as the console script (torchrun needs -m).

:func:`console` is the console script's entry point: a Ctrl-C while the CLI's modules import (before
``cli.main`` and its handling exist) ends as every interrupted command does, with one line
``torchreid-privacy: interrupted`` and exit code 130, not a traceback. (A Ctrl-C while the package
itself imports torch and torchreid is handled in ``torchreid_privacy/__init__.py``, which runs
before this module.)
"""
import sys


def console() -> int:
    try:
        from torchreid_privacy.cli import main
    except KeyboardInterrupt:
        print("torchreid-privacy: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(console())
