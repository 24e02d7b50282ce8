"""torchreid-privacy: privacy-preserving person re-identification as torchreid plugins.

Train any torchreid backbone identity-invariant on raw images (O) and their reversibly
anonymized versions (P = G(O)), after Zhang, Ye & Yang, ACM MM 2022.
"""
from torchreid_privacy.registry import (  # noqa: F401
    ANONYMIZERS,
    DESENSITIZERS,
    DISCRIMINATORS,
    ENGINES,
    LOSSES,
)
from torchreid_privacy.desensitize import desensitize  # noqa: F401

__version__ = "0.1.0"
