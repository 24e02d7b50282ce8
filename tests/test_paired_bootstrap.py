"""Paired bootstrap intervals (studies/paired.py): the frontier's evidence against the mosaic."""
import numpy as np
import pytest

from torchreid_privacy.studies.paired import intervals, paired_differences


def _runs(oo: np.ndarray, op: np.ndarray, pp: np.ndarray):
    return [{"O->O": a.tolist(), "O->P": b.tolist(), "P->P": c.tolist()} for a, b, c in zip(oo, op, pp)]


def _hits(rng, shape, p):
    return (rng.random(shape) < p).astype(np.uint8)


def test_pooled_values_are_the_hits_means_and_ratios():
    rng = np.random.default_rng(0)
    oo, op, pp = (_hits(rng, (3, 500), p) for p in (0.8, 0.6, 0.7))
    out = intervals(_runs(oo, op, pp))
    assert out["o_p"]["value"] == pytest.approx(op.mean())
    assert out["o_p_rel"]["value"] == pytest.approx(op.sum() / oo.sum())
    assert out["p_p_rel"]["value"] == pytest.approx(pp.sum() / oo.sum())
    lo, hi = out["o_p"]["ci95"]
    assert lo < op.mean() < hi and 0.02 < hi - lo < 0.15  # 1,500 hits of p=0.6: +-0.025 from queries


def test_a_point_against_itself_differs_by_exactly_nothing():
    rng = np.random.default_rng(1)
    runs = _runs(*(_hits(rng, (3, 200), p) for p in (0.8, 0.6, 0.7)))
    for d in paired_differences(runs, runs).values():
        assert d["diff"] == 0.0 and d["ci95"] == [0.0, 0.0]


def test_a_real_gain_is_resolved_and_pairing_narrows_the_interval():
    """The yardstick's hits plus 5% of its misses turned into hits: a +3-point gain that the
    unpaired intervals overlap on but the paired difference resolves."""
    rng = np.random.default_rng(2)
    oo = _hits(rng, (3, 500), 0.8)
    ref = _hits(rng, (3, 500), 0.6)
    better = ref | (rng.random(ref.shape) < 0.075).astype(np.uint8)
    gain = better.mean() - ref.mean()
    assert 0.02 < gain < 0.045
    d = paired_differences(_runs(oo, better, better), _runs(oo, ref, ref))["o_p"]
    assert d["diff"] == pytest.approx(gain) and 0.0 < d["ci95"][0] < gain < d["ci95"][1]
    a, b = intervals(_runs(oo, better, better))["o_p"]["ci95"], intervals(_runs(oo, ref, ref))["o_p"]["ci95"]
    assert a[0] < b[1]  # unpaired: the intervals overlap
    assert d["ci95"][1] - d["ci95"][0] < 0.5 * (a[1] - a[0])


def test_no_difference_is_covered_about_95_percent_of_the_time():
    """Two points with the same per-query skill: the interval of their difference holds 0 in
    most draws (a check that could fail: intervals that are too narrow miss it often)."""
    rng = np.random.default_rng(3)
    covered = 0
    for k in range(60):
        skill = rng.random(300)  # per-query difficulty, shared by both points
        oo = (rng.random((3, 300)) < 0.8).astype(np.uint8)
        a, b = ((rng.random((3, 300)) < skill).astype(np.uint8) for _ in range(2))
        lo, hi = paired_differences(_runs(oo, a, a), _runs(oo, b, b), metrics=("o_p",), replicates=1000,
                                    seed=k)["o_p"]["ci95"]
        covered += lo <= 0.0 <= hi
    assert covered >= 52  # 95% of 60 = 57; binomial sd 1.7


def test_mismatched_seeds_or_queries_are_refused():
    rng = np.random.default_rng(4)
    three = _runs(*(_hits(rng, (3, 50), 0.5) for _ in range(3)))
    with pytest.raises(ValueError, match="2 seeds against the yardstick's 3"):
        paired_differences(three[:2], three)
    short = _runs(*(_hits(rng, (3, 40), 0.5) for _ in range(3)))
    with pytest.raises(ValueError, match=r"hits\[O->.\]: 40 queries against the yardstick's 50"):
        paired_differences(short, three)
    with pytest.raises(ValueError, match=r"hits\[O->P\]: expected the same number of queries"):
        intervals([three[0], short[0]])
