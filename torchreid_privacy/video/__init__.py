"""Video in and out: a ReID set built from camera footage, and anonymized video.

- :mod:`.io`: frames in (PyAV, any container FFmpeg reads) and out (same size and frame rate,
  written to a temporary name and linked into place, never over an existing file);
- :mod:`.mot`: MOTChallenge ``det.txt`` / ``gt.txt`` boxes in and out;
- :mod:`.detect`: OpenCV's HOG people detector (no download) or the boxes of a MOT file;
- :mod:`.synthetic`: a short generated video of walking pedestrians with its ground truth.
"""
