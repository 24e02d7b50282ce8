"""``python -m torchreid_privacy`` is the same CLI as the console script (torchrun needs -m)."""
import sys

from torchreid_privacy.cli import main

sys.exit(main())
