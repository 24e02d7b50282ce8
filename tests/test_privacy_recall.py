"""Privacy recall against hand-computed cases, and temporal filling of tracks."""
import numpy as np
import pytest

from torchreid_privacy.video.privacy_recall import PrivacyRecall, coverage, summary_line
from torchreid_privacy.video.temporal import TemporalSettings, fill_tracks, is_filled, widen

W, H = 100, 80


def _box(x1, y1, x2, y2, track=1):
    return np.array([[x1, y1, x2, y2, 1.0, track]], dtype=np.float64)


def _mask(*rects):
    m = np.zeros((H, W), bool)
    for x1, y1, x2, y2 in rects:
        m[y1:y2, x1:x2] = True
    return m


def test_a_fully_covered_person_is_hidden():
    (cov,) = coverage(_mask((10, 10, 30, 60)), _box(10, 10, 30, 60))
    assert cov.head == pytest.approx(1.0) and cov.box == pytest.approx(1.0) and cov.hidden


def test_a_box_half_covered_is_not_hidden_though_its_head_is():
    # box 20 x 50 (head band: top 10 rows); the top half covered: head 100%, box 50%
    (cov,) = coverage(_mask((10, 10, 30, 35)), _box(10, 10, 30, 60))
    assert cov.head == pytest.approx(1.0) and cov.box == pytest.approx(0.5) and not cov.hidden


def test_an_uncovered_head_is_not_hidden_though_most_of_the_box_is():
    # everything but the head band (top 10 of 50 rows): box 80%, head 0%
    (cov,) = coverage(_mask((10, 20, 30, 60)), _box(10, 10, 30, 60))
    assert cov.head == pytest.approx(0.0) and cov.box == pytest.approx(0.8) and not cov.hidden


def test_the_thresholds_are_90_percent_of_the_head_and_70_of_the_box():
    # head band rows 10..20 (10 rows); cover 9 of them and 35 of the 50 box rows from the top
    box = _box(10, 10, 30, 60)
    (at,) = coverage(_mask((10, 11, 30, 46)), box)  # head 9/10, box 35/50 = 0.70
    assert at.head == pytest.approx(0.9) and at.box == pytest.approx(0.7) and at.hidden
    (below,) = coverage(_mask((10, 12, 30, 47)), box)  # head 8/10
    assert below.head == pytest.approx(0.8) and not below.hidden
    (short,) = coverage(_mask((10, 10, 30, 44)), box)  # box 34/50
    assert short.box == pytest.approx(0.68) and not short.hidden


def test_fractional_boxes_count_every_pixel_they_touch():
    # 10.5..20.5 touches columns 10..20 (11 px); a mask over 11..20 covers 10 of them
    (cov,) = coverage(_mask((11, 0, 21, 80)), np.array([[10.5, 0, 20.5, 50]]))
    assert cov.box == pytest.approx(10 / 11)


def test_recall_counts_people_worst_frame_and_missed_boxes():
    truth = {0: np.concatenate([_box(0, 0, 20, 40, 1), _box(50, 0, 70, 40, 2)]),
             1: np.concatenate([_box(0, 0, 20, 40, 1), _box(50, 0, 70, 40, 2), _box(200, 0, 220, 40, 3)]),
             5: _box(0, 0, 10, 10, 4)}  # frame 5 is never written
    r = PrivacyRecall(truth, W, H)
    r.add(0, _mask((0, 0, 100, 80)))  # both hidden
    r.add(1, _mask((0, 0, 20, 40)))  # track 2 missed; track 3 lies outside the frame
    rep = r.report()
    assert (rep["people"], rep["hidden"], rep["missed"]) == (4, 3, 1)
    assert rep["recall"] == pytest.approx(0.75)
    assert rep["worst_frame"] == {"frame": 1, "people": 2, "hidden": 1, "recall": 0.5}
    assert rep["outside_frame"] == 1 and rep["frames_missing"] == 1 and rep["people_on_missing_frames"] == 1
    assert [(m["frame"], m["track"]) for m in rep["missed_boxes"]] == [(1, 2)]
    assert list(r.missed_boxes()) == [1]
    assert summary_line(rep) == "privacy recall 0.750 (3 of 4 people hidden); worst frame 1: 1 of 2"


def test_recall_refuses_a_mask_of_another_size():
    with pytest.raises(ValueError, match="mask"):
        PrivacyRecall({}, W, H).add(0, np.zeros((H, W + 1), bool))


# ------------------------------------------------------------------------------------ temporal

def test_gaps_are_interpolated_up_to_max_gap():
    boxes = {0: _box(0, 0, 10, 20), 4: _box(8, 0, 18, 20), 20: _box(40, 0, 50, 20)}
    out, counts = fill_tracks(boxes, 30, TemporalSettings(max_gap=3, extend=0, margin=0.0))
    assert counts == {"interpolated": 3, "extended": 0}
    np.testing.assert_allclose(out[2][0, :4], [4, 0, 14, 20])
    assert is_filled(out[2]).all() and out[2][0, 5] == 1
    assert 10 not in out  # the 15-frame gap is longer than max_gap


def test_ends_are_extended_at_the_track_velocity_inside_the_video():
    boxes = {f: _box(10 + 2 * f, 0, 20 + 2 * f, 20) for f in range(1, 6)}
    out, counts = fill_tracks(boxes, 8, TemporalSettings(max_gap=0, extend=3, margin=0.0))
    assert counts["extended"] == 1 + 2  # frame 0 before; frames 6, 7 after (the video has 8)
    np.testing.assert_allclose(out[0][0, :4], [10, 0, 20, 20])
    np.testing.assert_allclose(out[7][0, :4], [24, 0, 34, 20])
    assert not is_filled(out[3]).any()


def test_untracked_boxes_are_kept_and_every_box_widened():
    out, _ = fill_tracks({3: _box(10, 10, 30, 50, track=-1)}, 10, TemporalSettings(margin=0.1))
    np.testing.assert_allclose(out[3][0, :4], [8, 6, 32, 54])
    np.testing.assert_allclose(widen(_box(0, 0, 10, 10), 0.0), _box(0, 0, 10, 10))


@pytest.mark.parametrize("kwargs, flag", [({"max_gap": -1}, "--max-gap"), ({"extend": 1.5}, "--extend"),
                                          ({"margin": -0.1}, "--box-margin")])
def test_bad_settings_name_their_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        TemporalSettings(**kwargs)
