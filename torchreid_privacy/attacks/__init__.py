"""Privacy attacks on a trained checkpoint, to measure what P still gives away.

- :func:`reid_attack`: a third party trains its own ReID model on raw images only and tries
  to re-identify people in P (four settings, rank-1/mAP).
- :func:`recovery_attack`: someone without G_R trains a decoder on N leaked (P, O) pairs and
  tries to recover O (PSNR/SSIM next to the authorized G_R).
"""
from torchreid_privacy.attacks.recover import recovery_attack
from torchreid_privacy.attacks.reid import reid_attack

__all__ = ["recovery_attack", "reid_attack"]
