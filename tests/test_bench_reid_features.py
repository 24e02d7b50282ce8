"""``bench scale``'s ReID-like features: a generator fitted to C's features of augmented crops
reproduces their exact-search R1/mAP, is saved and read back, and draws a gallery of any size."""
import json

import numpy as np
import pytest

from torchreid_privacy.bench.feature_fit import FeatureModel, fit
from torchreid_privacy.bench.run_crops import RunCrops, validate
from torchreid_privacy.cli import main


def crops_like_a_run(n_ids=60, per_id=8, crops=6, dim=32, crop_sd=1.5, seed=0) -> RunCrops:
    """Identity means in a 12-d subspace, images around them, crops around their image (crop 0, the
    plain resize, exactly the image): 2 query and 6 gallery images per identity."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((dim, 12)) / np.sqrt(12)
    means = rng.standard_normal((n_ids, 12)) @ basis.T
    img_pid = np.repeat(np.arange(n_ids), per_id)
    img_cam = rng.integers(0, 4, len(img_pid))
    images = means[img_pid] + 3 * rng.standard_normal((len(img_pid), dim)) / np.sqrt(dim)
    image = np.repeat(np.arange(len(img_pid)), crops)
    crop = np.tile(np.arange(crops), len(img_pid))
    noise = 3 * crop_sd * rng.standard_normal((len(image), dim)) / np.sqrt(dim)
    noise[crop == 0] = 0
    o = (images[image] + noise).astype(np.float32)
    p = (o + rng.standard_normal(o.shape) / np.sqrt(dim)).astype(np.float32)
    return RunCrops(o=o, p=p, pids=img_pid[image] + 1, cams=img_cam[image], image=image, crop=crop,
                    is_query=np.tile(np.arange(per_id) < 2, n_ids)[image], seconds_o=1.0, run="synthetic",
                    target="synthetic")


def test_fitted_features_reproduce_the_real_ones_exact_search_r1_and_map():
    c = crops_like_a_run()
    model = fit(c.o, c.pids, c.cams, c.p, image=c.image, plain=c.crop == 0)
    check = validate(c, model)["test"]
    real, drawn = check["real"], check["generated"]
    assert 0.5 < real["mAP"] < 0.98  # neither trivial nor hopeless
    assert abs(drawn["R1"] - real["R1"]) <= 0.1 and abs(drawn["mAP"] - real["mAP"]) <= 0.1, check
    # the plain crops carry none of the crops' spread: fitted as a small share of it
    assert model.info["plain_crop_scale"] < 0.6 and model.info["crop_trace"] > model.info["image_trace"]
    # pooling every crop as an image (the crops' spread included) makes the gallery much harder than the real one
    pooled = validate(c, fit(c.o, c.pids, c.cams, c.p))["test"]["generated"]
    assert pooled["mAP"] < real["mAP"] - 0.15, (pooled, real)


def test_a_fitted_model_is_saved_read_back_and_draws_unit_features(tmp_path):
    c = crops_like_a_run(n_ids=20)
    model = fit(c.o, c.pids, c.cams, c.p, image=c.image, plain=c.crop == 0, info={"run": "x"})
    path = tmp_path / "fit.npz"
    model.save(path)
    back = FeatureModel.load(path)
    assert back.dim == 32 and back.n_cams == 4 and back.info["run"] == "x"
    assert back.between.shape[1] <= 19  # at most one direction fewer than the identities it saw
    rng = np.random.default_rng(1)
    means = back.identity_means(500, rng)
    pids, cams = np.repeat(np.arange(500), 4), np.arange(2000) % 6  # cameras past the fitted ones wrap
    o = back.sample(pids, cams, means, rng, block=300)
    p = back.sample_p(o, rng, block=300)
    np.testing.assert_allclose(np.linalg.norm(o, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    same = np.einsum("nd,nd->n", o[0::4], o[1::4]).mean()  # same identity
    other = np.einsum("nd,nd->n", o[0::4], np.roll(o[1::4], 1, axis=0)).mean()
    assert same > other + 0.2
    (tmp_path / "bad.npz").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"^--features-from: .*bad\.npz is not a fitted feature model"):
        FeatureModel.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match=r"^--features-from: .*other\.npz is not a fitted feature model"):
        FeatureModel.load(tmp_path / "other.npz")


def test_bench_scale_fits_a_runs_features_and_times_hnsw_on_them(trained_run, tiny_root, tmp_path, capsys):
    fit_path, out = tmp_path / "fit.npz", tmp_path / "scale.json"
    assert main(["bench", "scale", "--size", "tiny", "--features-from", trained_run, "--crops-per-image", "3",
                 "--save-fit", str(fit_path), "--check-root", tiny_root, "--rows", "search-exact,hnsw",
                 "--threads", "1", "--ef-search", "64,1", "--hnsw-m", "8", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a million crops would take" in printed and "exact search, test layout" in printed
    result = json.loads(out.read_text())
    fit_report = result["fit"]
    assert fit_report["crops"] == 3 * fit_report["identities"] * 6  # tiny_root: 2 query + 4 gallery per identity
    assert fit_report["embed_crops_per_s"] > 0 and fit_report["dim"] == FeatureModel.load(fit_path).dim
    for layout in ("test", "crops"):
        assert set(fit_report["check"][layout]) >= {"real", "generated"}
    # the calibration: drawn features' mAP on the run's test layout is the real one's (one draw: not exact)
    test = fit_report["check"]["test"]
    assert abs(test["generated"]["mAP"] - test["real"]["mAP"]) < 0.25 and fit_report["within_scale"] > 0
    more = fit_report["check_identities"]  # --check-root: here the run's own root, all of its test identities
    assert [c["identities"] for c in more] == [fit_report["identities"]]
    assert more[0]["real"]["R1"] == pytest.approx(test["real"]["R1"])  # the same plain images as the test layout
    assert "more identities" in printed
    rows = {r["row"]: r for r in result["rows"]}
    assert all(r["features"] == "reid" for r in rows.values())
    assert rows["search-exact"]["features_mb"] == pytest.approx((300 + 3000) * fit_report["dim"] * 4 / 2**20)
    assert 0.0 < rows["search-exact"]["O->O"]["mAP"] < 1.0
    hnsw = rows["hnsw"]
    assert hnsw["hnsw_m"] == 8 and [s["ef_search"] for s in hnsw["sweep"]] == [64, 1]
    assert hnsw["sweep"][0]["recall_at_10"] >= 0.95 > hnsw["sweep"][1]["recall_at_10"]
    assert hnsw["speedup"] == pytest.approx(rows["search-exact"]["ms_per_query"] / hnsw["ms_per_query"])
    assert "| reid | hnsw | M 8 efC 40 efS 64 |" in printed
    with pytest.raises(SystemExit) as exit_:  # reid features need a run or a fit
        main(["bench", "scale", "--size", "tiny", "--features", "reid"])
    assert exit_.value.code == 2 and "--features reid: needs --features-from" in capsys.readouterr().err
    assert main(["bench", "scale", "--size", "tiny", "--features-from", str(tmp_path / "none.npz")]) == 1
    assert "--features-from: no such run or file" in capsys.readouterr().err
