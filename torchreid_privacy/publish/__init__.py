"""What ships is what is measured: P as the image file a user publishes.

``channel`` encodes P the way ``anonymize`` writes it (8-bit, JPEG/PNG/WebP at the configured
quality) and decodes it back, so evaluation, the upgrade gates, attacks and search score exactly
those files; ``through`` is its differentiable stand-in for training (straight-through 8-bit
rounding, kornia's differentiable JPEG).
"""
from torchreid_privacy.publish.channel import FORMATS, PublishChannel, round_to_8bit, to_uint8  # noqa: F401
