"""MOT box files: every bad line is an error naming the file and line, or a counted, listed skip;
which gt.txt rows the anonymizer keeps (every person, whatever its flag) and the metrics keep."""
import logging
import re

import numpy as np
import pytest

from torchreid_privacy.video.mot import (PERSON_CLASSES, MotFormatError, pixel_boxes, read_mot, tracks_of,
                                         write_mot)

GOOD = "1,-1,10,20,30,80,0.9,-1,-1,-1\n"  # a det.txt row


def _file(tmp_path, body: bytes, name: str = "det.txt"):
    path = tmp_path / name
    path.write_bytes(body)
    return path


# every kind of bad line: (the line's bytes, what the message must say)
BAD_LINES = {
    "nan width": (b"2,-1,10,20,nan,80,0.9", r"width \(column 5\) is 'nan', not a finite number"),
    "inf height": (b"2,-1,10,20,30,inf,0.9", r"height \(column 6\) is 'inf', not a finite number"),
    "-inf left": (b"2,-1,-inf,20,30,80,0.9", r"left \(column 3\) is '-inf', not a finite number"),
    "1e400 top": (b"2,-1,10,1e400,30,80,0.9", r"top \(column 4\) is '1e400', not a finite number"),
    "nan frame": (b"nan,-1,10,20,30,80,0.9", r"frame \(column 1\) is 'nan'"),
    "nan id": (b"2,nan,10,20,30,80,0.9", r"id \(column 2\) is 'nan'"),
    "nan conf": (b"2,-1,10,20,30,80,nan", r"conf \(column 7\) is 'nan'"),
    "nan flag": (b"2,4,10,20,30,80,nan,1,1", r"flag \(column 7\) is 'nan'"),
    "nan class": (b"2,4,10,20,30,80,1,nan,1", r"class \(column 8\) is 'nan'"),
    "zero width": (b"2,-1,10,20,0,80,0.9", r"width and height \(columns 5, 6\) must be positive, got '0', '80'"),
    "negative height": (b"2,-1,10,20,30,-5,0.9", r"must be positive, got '30', '-5'"),
    "zero frame": (b"0,-1,10,20,30,80,0.9", r"frame \(column 1\) must be a positive integer \(1-based\), got '0'"),
    "negative frame": (b"-3,-1,10,20,30,80,0.9", r"frame \(column 1\) must be a positive integer.*got '-3'"),
    "fractional frame": (b"2.5,-1,10,20,30,80,0.9", r"frame \(column 1\) must be a positive integer.*got '2.5'"),
    "fractional id": (b"2,1.5,10,20,30,80,1,1,1", r"id \(column 2\) must be an integer"),
    "fractional class": (b"2,4,10,20,30,80,1,1.5,1", r"class \(column 8\) must be an integer"),
    "too few columns": (b"2,-1,10,20,30", r"expected at least 6 comma-separated values .*got 5"),
    "not a number": (b"2,-1,ten,20,30,80,0.9", r"left \(column 3\) is not a number: 'ten'"),
    "empty field": (b"2,-1,10,,30,80,0.9", r"top \(column 4\) is empty"),
    "0xff byte": (b"2,-1,10,20,30,80,0.9\xff", r"not UTF-8 text \(byte 0xff at byte 21 of the line\)"),
    "overflowing edge": (b"2,-1,1e308,20,1e308,80,0.9", r"right or bottom edge is not a finite number"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_line_is_an_error_naming_the_file_and_line(tmp_path, kind):
    line, reason = BAD_LINES[kind]
    path = _file(tmp_path, GOOD.encode() + b"# a comment\n" + line + b"\n" + GOOD.encode())
    with pytest.raises(MotFormatError) as info:
        read_mot(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and "\n" not in message
    assert re.search(reason, message), message
    with pytest.raises(MotFormatError, match=re.escape(f"{path}:3: ")):  # the anonymizer's reading too
        read_mot(path, evaluation=False)


def test_skipping_bad_lines_counts_and_lists_each(tmp_path, caplog):
    lines = [GOOD.encode()] + [BAD_LINES[k][0] + b"\n" for k in sorted(BAD_LINES)] + [b"3,-1,1,2,3,4,0.5\n"]
    path = _file(tmp_path, b"".join(lines))
    skipped = []
    with caplog.at_level(logging.WARNING, logger="torchreid_privacy.video.mot"):
        boxes = read_mot(path, evaluation=False, skip_bad_boxes=True, skipped=skipped)
    assert sorted(boxes) == [0, 2] and [len(b) for b in boxes.values()] == [1, 1]
    np.testing.assert_allclose(boxes[2], [[1, 2, 4, 6, 0.5, -1]])
    assert len(skipped) == len(BAD_LINES)
    assert [s.split(": ", 1)[0] for s in skipped] == [f"{path}:{n}" for n in range(2, 2 + len(BAD_LINES))]
    for entry, kind in zip(skipped, sorted(BAD_LINES)):
        assert re.search(BAD_LINES[kind][1], entry), (kind, entry)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{path}: skipped {len(BAD_LINES)} bad box line(s)" in warnings[0]
    assert read_mot(path, skip_bad_boxes=True).keys() == boxes.keys()  # the list is optional


def test_a_clean_file_skips_nothing_and_warns_nothing(tmp_path, caplog):
    path = _file(tmp_path, GOOD.encode() * 3)
    skipped = []
    with caplog.at_level(logging.WARNING):
        assert len(read_mot(path, skip_bad_boxes=True, skipped=skipped)[0]) == 3
    assert skipped == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]


GT = (
    "1,1,10,10,20,60,1,1,1\n"      # pedestrian, scored
    "1,2,40,10,20,60,0,1,1\n"      # pedestrian flagged 0 (not scored by the benchmark)
    "1,3,70,10,20,60,0,7,1\n"      # static person, flag 0: MOT17's usual form
    "1,4,100,10,20,60,1,2,0.5\n"   # person on a vehicle
    "1,5,130,10,20,60,0,8,1\n"     # distractor
    "1,6,160,10,20,60,0,12,1\n"    # reflection
    "1,7,190,10,40,30,0,3,1\n"     # car
    "1,8,240,10,40,30,0,11,1\n"    # occluder
)


def test_the_anonymizer_keeps_every_person_whatever_its_flag(tmp_path, caplog):
    path = _file(tmp_path, GT.encode(), "gt.txt")
    metrics = read_mot(path)
    assert metrics[0][:, 5].tolist() == [1]  # flag != 0 and class 1 only
    with caplog.at_level(logging.INFO, logger="torchreid_privacy.video.mot"):
        anonymize = read_mot(path, evaluation=False)
    assert anonymize[0][:, 5].tolist() == [1, 2, 3, 4, 5, 6]  # every person class, cars and occluders out
    assert (anonymize[0][:, 4] == 1.0).all()
    np.testing.assert_allclose(anonymize[0][2, :4], [70, 10, 90, 70])  # the static person's box
    assert any("left out 2 box(es) of classes that are not people" in r.getMessage() for r in caplog.records)
    assert PERSON_CLASSES == {1, 2, 7, 8, 12}


def test_detection_rows_are_always_kept(tmp_path):
    body = ("1,-1,10,10,20,60,0.3,-1,-1,-1\n"  # det.txt, 10 columns
            "1,-1,40,10,20,60,0.0,-1,-1,-1\n"  # a zero score is not a gt flag 0
            "2,-1,10,10,20,60\n"               # 6 columns: confidence 1
            "2,-1,10,10,20,60,0.7\n"           # 7 columns
            "3,9,10,10,20,60,0.8,-1,-1,-1\n")  # a tracker's result row: id 9, x y z -1 (no class)
    path = _file(tmp_path, body.encode())
    for evaluation in (True, False):
        boxes = read_mot(path, evaluation=evaluation)
        assert [len(boxes[f]) for f in (0, 1, 2)] == [2, 2, 1]
        np.testing.assert_allclose(boxes[0][:, 4], [0.3, 0.0])
        np.testing.assert_allclose(boxes[1][:, 4], [1.0, 0.7])
        np.testing.assert_allclose(boxes[2], [[10, 10, 30, 70, 0.8, 9]])


def test_write_mot_reads_back_with_tracks(tmp_path):
    boxes = {0: np.array([[10, 20, 40, 100, 0.9, 3], [50, 20, 80, 100, 0.8, -1]]),
             4: np.array([[1, 2, 11, 42, 0.5, 7]])}
    for gt, name in ((False, "det.txt"), (True, "gt.txt")):  # det.txt keeps a box's track as its id
        back = read_mot(write_mot(tmp_path / name, boxes, gt=gt), evaluation=False)
        assert sorted(back) == [0, 4]
        np.testing.assert_allclose(back[0][:, :4], boxes[0][:, :4])
        assert back[0][:, 5].tolist() == [3, -1] and back[4][0, 5] == 7
        np.testing.assert_allclose(back[0][:, 4], [1.0, 1.0] if gt else [0.9, 0.8])
    assert sorted(tracks_of(read_mot(tmp_path / "det.txt"))) == [3, 7]
    with pytest.raises(ValueError, match=r"frame 0 has a box that is not finite"):
        write_mot(tmp_path / "bad.txt", {0: np.array([[np.nan, 0, 1, 1, 1, -1]])})
    assert not (tmp_path / "bad.txt").exists()


def test_a_missing_file_and_a_bom_and_semicolons(tmp_path):
    with pytest.raises(MotFormatError, match=re.escape(f"{tmp_path / 'none.txt'}: no such MOT box file")):
        read_mot(tmp_path / "none.txt")
    path = _file(tmp_path, b"\xef\xbb\xbf1;-1;10;20;30;80;0.9\r\n\r\n")  # a BOM, semicolons, CRLF
    np.testing.assert_allclose(read_mot(path)[0], [[10, 20, 40, 100, 0.9, -1]])


def test_pixel_boxes_refuses_boxes_that_are_not_finite():
    ok = pixel_boxes(np.array([[0.5, 1.2, 10.1, 20.9, 1, -1]]), 100, 100)
    assert ok.tolist() == [[0, 1, 11, 21]]
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match=r"1 box\(es\) with a coordinate that is not a finite number, e.g. box 1"):
            pixel_boxes(np.array([[0, 0, 5, 5], [0, bad, 5, 5]], dtype=np.float64), 100, 100)
    with pytest.raises(ValueError, match=r"\(N, 4\+\) array"):
        pixel_boxes(np.zeros(4), 100, 100)
