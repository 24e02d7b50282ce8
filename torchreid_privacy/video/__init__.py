"""Video in and out: a ReID set built from camera footage, and anonymized video.

- :mod:`.io`: frames in (PyAV, any container FFmpeg reads) and out (same size and frame rate,
  written to a temporary name and linked into place, never over an existing file);
- :mod:`.mot`: MOTChallenge ``det.txt`` / ``gt.txt`` boxes in and out;
- :mod:`.detect`: OpenCV's HOG people detector (no download) or the boxes of a MOT file;
- :mod:`.tracklets`: boxes linked into tracklets (supervision's ByteTrack), scored against a gt.txt;
- :mod:`.to_dataset`: ``make-data --from-video``, a Market-1501-layout set, one identity per tracklet;
- :mod:`.anonymize`: ``anonymize --input VIDEO``, every box replaced by its published P;
- :mod:`.sealed_crops`: the sealed sidecar from which the key holder recovers each original crop;
- :mod:`.synthetic`: a short generated video of walking pedestrians with its ground truth.
"""
