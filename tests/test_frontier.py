"""``frontier``: conventional strengths and learned variants over seeds, on P as published."""
import csv
import json

import pytest
from PIL import Image

from tiny_config import TINY
from torchreid_privacy.cli import main
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config
from torchreid_privacy.studies.frontier import METRICS, conventional_points, pareto


def test_strengths_are_scaled_from_256x128_to_the_run_size():
    points = {p.name: p for p in conventional_points(64, {"mosaic": (8, 24), "blur": (12,), "noise": (0.3,)})}
    assert points["mosaic-24"].params == {"block": 6} and points["mosaic-8"].params == {"block": 2}
    assert points["blur-12"].params == {"radius": 3.0}
    assert points["noise-0.3"].params == {"sigma": 0.3}  # noise is per pixel: not scaled
    assert all(p.kind == "conventional" and "baseline" in p.overrides for p in points.values())


def test_pareto_keeps_exactly_the_undominated_points():
    pts = [{"name": n, "mean": {"u": u, "leak": leak}} for n, u, leak in
           [("a", 0.9, 20.0), ("b", 0.8, 18.0), ("c", 0.7, 19.0), ("d", 0.9, 21.0), ("e", 0.6, 17.0)]]
    assert pareto(pts, "u", "leak") == ["a", "b", "e"]  # c is beaten by b, d by a


def test_frontier_refuses_a_used_output_and_a_config_without_privacy(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x.txt").write_text("keep me")
    assert main(["frontier", "--config-file", packaged_config(QUICKSTART), "--output", str(used), "--quick"]) == 1
    assert "--output" in capsys.readouterr().err and (used / "x.txt").read_text() == "keep me"
    plain = tmp_path / "plain.yaml"
    plain.write_text("model: {name: tiny_reid}\n")
    assert main(["frontier", "--config-file", str(plain), "--output", str(tmp_path / "new"), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "--config-file" in err and "privacy" in err and not (tmp_path / "new").exists()


def test_quick_frontier_writes_json_csv_and_png_from_published_p(tiny_root, tmp_path):
    out = tmp_path / "frontier"
    assert main(["frontier", "--config-file", packaged_config(QUICKSTART), "--output", str(out), "--quick",
                 "--data-root", tiny_root, *TINY]) == 0
    result = json.loads((out / "frontier.json").read_text())
    names = [p["name"] for p in result["points"]]
    assert names == ["mosaic-24", "blur-12", "learned-mosaic"] and len(result["seeds"]) == 1
    assert result["publish"] == {"format": "jpeg", "quality": 95}
    for p in result["points"]:
        (run,) = p["runs"]
        assert set(METRICS) <= set(run) and set(METRICS) == set(p["mean"]) == set(p["sd"])
        assert all(0.0 <= run[m] <= 1.0 for m in ("o_o", "o_p", "p_p", "third_party_o_p"))
        assert 5.0 < run["inversion_256"] < 60.0 and 5.0 < run["psnr_o_p"] < 60.0
        # the frontier's ranks are the run's own published test ranks
        test = json.loads((out / "runs" / p["name"] / f"seed{run['seed']}" / "results.json").read_text())["test"]
        assert run["o_p"] == test[run["target"]]["rank"]["O->P"]["R1"]
        assert run["o_p_float"] == test[run["target"]]["rank_unpublished"]["O->P"]["R1"]
        # per-query hits: the paired intervals' input, the same R1 when pooled
        n_q = len(run["hits"]["O->O"])
        assert set(run["hits"]) == {"O->O", "O->P", "P->P"} and n_q == len(run["hits"]["P->P"]) > 0
        assert run["o_p"] == pytest.approx(run["hits"]["O->P"].count("1") / n_q)
        assert p["ci95"]["o_p"]["value"] == pytest.approx(run["o_p"])
        lo, hi = p["ci95"]["o_p"]["ci95"]
        assert lo <= run["o_p"] <= hi
    assert "vs_yardstick" not in result["points"][0]  # mosaic-24 is the yardstick
    for p in result["points"][1:]:
        d = p["vs_yardstick"]["o_p"]
        assert p["vs_yardstick"]["yardstick"] == "mosaic-24"
        assert d["diff"] == pytest.approx(p["runs"][0]["o_p"] - result["points"][0]["runs"][0]["o_p"])
        assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    assert set(result["pareto"]["inversion"]) <= set(names) and result["pareto"]["inversion"]
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    assert [r["name"] for r in rows] == names and float(rows[0]["o_p_mean"]) == pytest.approx(
        result["points"][0]["mean"]["o_p"], abs=1e-4)
    assert rows[0]["vs_mosaic24_o_p_rel_diff"] == "" and float(rows[1]["vs_mosaic24_o_p_rel_diff"]) == pytest.approx(
        result["points"][1]["vs_yardstick"]["o_p_rel"]["diff"], abs=1e-4)
    with Image.open(out / "frontier.png") as im:
        assert im.format == "PNG" and im.size[0] > 800

    # --resume: a sweep cut off inside blur-12's training reruns that job (and its third-party
    # score) only; the finished jobs are reused as they are and the partial run is kept aside
    blur = out / "runs" / "blur-12" / f"seed{result['seeds'][0]}"
    (blur / "point.json").unlink()
    (out / "frontier.json").unlink()
    kept = (out / "runs" / "mosaic-24" / f"seed{result['seeds'][0]}" / "point.json").stat().st_mtime_ns
    args = ["frontier", "--config-file", packaged_config(QUICKSTART), "--output", str(out), "--quick",
            "--data-root", tiny_root, *TINY]
    assert main(args) == 1  # a used folder without --resume
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "frontier.json").read_text())
    assert (out / "runs" / "mosaic-24" / f"seed{result['seeds'][0]}" / "point.json").stat().st_mtime_ns == kept
    assert (blur / "point.json").is_file() and blur.with_name(blur.name + ".incomplete-1").is_dir()
    for before, after in zip(result["points"], again["points"]):
        if before["name"] != "blur-12":
            assert after["runs"] == before["runs"]


def test_resume_refuses_other_arguments_and_foreign_folders(tiny_root, tmp_path, capsys):
    from torchreid_privacy.studies.frontier import ARGS_FILE, check_output

    args = {"config": "a.yaml", "overrides": [], "seeds": 3, "quick": False, "variants": None, "dataset": None,
            "data_root": None}
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--resume: .* holds no frontier_args.json"):
        check_output(str(out), args, resume=True)
    (out / ARGS_FILE).write_text(json.dumps({**args, "seeds": 2}))
    with pytest.raises(ValueError, match="--resume: .* started with seeds=2, not 3"):
        check_output(str(out), args, resume=True)
    with pytest.raises(ValueError, match="add --resume"):
        check_output(str(out), args, resume=False)
    check_output(str(out), {**args, "seeds": 2}, resume=True)  # the same sweep: accepted


def test_the_shipped_sealed_variant_is_the_shipped_sealed_config():
    """The frontier measures exactly what configs/quickstart_sealed.yaml trains."""
    from torchreid_privacy.config import load_config, to_dict
    from torchreid_privacy.studies.frontier import LEARNED_VARIANTS, SHIPPED_SEALED

    variant = to_dict(load_config(packaged_config(QUICKSTART), LEARNED_VARIANTS[SHIPPED_SEALED]))
    shipped = to_dict(load_config(packaged_config("quickstart_sealed.yaml")))
    for tree in (variant, shipped):
        tree["data"].pop("save_dir")
    assert variant == shipped


def test_conventional_points_are_chosen_by_name(tmp_path, capsys):
    from torchreid_privacy.studies.frontier import parse_conventional

    assert parse_conventional(["mosaic-24", "blur-12", "mosaic-16"]) == {"mosaic": [24.0, 16.0], "blur": [12.0]}
    for bad in ("mosaic", "pixelate-8", "mosaic-0", "mosaic-x", "blur-nan", "noise--1"):
        with pytest.raises(ValueError, match="--conventional: .*" + bad):
            parse_conventional([bad])
    out = tmp_path / "new"
    assert main(["frontier", "--config-file", packaged_config(QUICKSTART), "--output", str(out),
                 "--conventional", "mosaic-24,pixelate-8"]) == 1
    assert "--conventional" in capsys.readouterr().err and not out.exists()
