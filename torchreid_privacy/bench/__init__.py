"""Benchmarks behind ``torchreid-privacy bench``: the fused kernels (``kernels``), one training
step and its profile (``step``, ``step_profile``), gallery search at scale (``scale``) and the video
detectors' privacy recall and speed (``video``)."""
