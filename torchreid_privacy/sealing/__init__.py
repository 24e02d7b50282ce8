"""Sealed recovery: the original file's bytes travel with P, encrypted and authenticated.

``payload`` seals and unseals, ``containers`` places the payload inside a PNG/JPEG or a sidecar,
``keys`` reads and writes key files. The public names are re-exported here, so
``from torchreid_privacy.sealing import seal, unseal`` works.
"""
from torchreid_privacy.sealing.payload import *  # noqa: F401,F403
from torchreid_privacy.sealing.payload import __all__  # noqa: F401
