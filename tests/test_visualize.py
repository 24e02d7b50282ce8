"""``visualize``: four-setting rank lists, t-SNE and grid of a run's test split; TensorBoard images."""
import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main
from torchreid_privacy.visualization.drawing import HIT, PALETTE, scatter_plot


@pytest.fixture(scope="module")
def opened(trained_run):
    from torchreid_privacy.trained_run import TrainedRun

    run = TrainedRun.open(trained_run)
    return run, run.evaluate("synthetic_market")["rank"]


def test_write_views_layout_and_same_numbers_as_test(opened, tmp_path):
    from torchreid_privacy.folders.visualize import write_views

    run, scores = opened
    paths = write_views(run, str(tmp_path / "views"), queries=3, topk=5)
    assert paths["target"] == "synthetic_market"
    # features and P exactly as the evaluator computes them
    for setting, ref in scores.items():
        for metric in ("R1", "mAP"):
            assert paths["rank"][setting][metric] == pytest.approx(ref[metric], abs=1e-6), (setting, metric)
    assert len(paths["ranklists"]) == 3
    for png in paths["ranklists"]:
        with Image.open(png) as im:
            w, h = im.size
        assert h > 4 * 96 and w > 6 * 48  # four rows (settings) of query + 5 results, 96 px cells
    with Image.open(paths["tsne"]) as im:
        tsne = np.asarray(im.convert("RGB"))
    test_sets = run.datamanager.test_dataset["synthetic_market"]
    ids = {item[1] for split in ("query", "gallery") for item in test_sets[split] if item[1] > 0}
    assert len(ids) < 20  # every identity of the tiny set is drawn, each in its colour (legend and markers)
    for colour in PALETTE[:len(ids)]:
        assert np.all(tsne == colour, axis=-1).sum() > 50
    assert not np.all(tsne == PALETTE[len(ids)], axis=-1).any()
    with Image.open(paths["grid"]) as im:
        gw, gh = im.size
    height, width = run.config.data.height, run.config.data.width
    assert gw == 4 * (width + 2) + 2 and gh == 8 * (height + 2) + 2  # O | M | P | R, 8 rows


def test_tensorboard_images_restores_training_modes(opened):
    from torchreid_privacy.visualization.views import tensorboard_images

    run, _ = opened
    calls = []

    class Writer:
        def add_image(self, tag, img, step, dataformats="CHW"):
            calls.append((tag, np.asarray(img).shape, np.asarray(img).dtype, step, dataformats))

    model = run.model
    model.train()
    model.generator.eval()  # a mixed state, as the engine may leave it
    try:
        tensorboard_images(Writer(), model, run.datamanager.test_loader["synthetic_market"], step=7, tag="Test/x",
                           queries=1, topk=3, identities=5)
        assert model.reid.training and not model.generator.training and model.decoder.training
    finally:
        model.eval()
    assert [c[0] for c in calls] == ["Test/x/ranklists", "Test/x/tsne", "Test/x/grid"]
    for _, shape, dtype, step, fmt in calls:
        assert len(shape) == 3 and shape[2] == 3 and dtype == np.uint8 and step == 7 and fmt == "HWC"
    assert tensorboard_images(None, model, {}, step=1) is None  # other ranks: nothing computed


def test_visualize_cli(trained_run, tmp_path, capsys):
    assert main(["visualize", "--checkpoint", trained_run, "--output", str(tmp_path / "v"), "--queries", "1",
                 "--topk", "3", "--identities", "4"]) == 0
    out = capsys.readouterr().out
    assert "O->P" in out and "t-SNE:" in out and "grid:" in out
    names = sorted(p.name for p in (tmp_path / "v").iterdir())
    assert names[0] == "grid-synthetic_market.png" and names[-1] == "tsne-synthetic_market.png" and len(names) == 3


@pytest.mark.parametrize("args,flag", [(["--target", "nope"], "--target"), (["--identities", "21"], "--identities"),
                                       (["--queries", "0"], "--queries")])
def test_visualize_bad_arguments(trained_run, tmp_path, capsys, args, flag):
    assert main(["visualize", "--checkpoint", trained_run, "--output", str(tmp_path / "v"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("torchreid-privacy: error:") and flag in err and "\n" not in err
    assert not (tmp_path / "v").exists()


def test_scatter_plot_markers_and_limits():
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.2], [0.2, 0.9]])
    img = np.asarray(scatter_plot(pts, [0, 1, 0, 1], ["id 1", "id 2"], [0, 0, 1, 1], pairs=np.array([[0, 2], [1, 3]])))
    assert np.all(img == PALETTE[0], axis=-1).sum() > 30 and np.all(img == PALETTE[1], axis=-1).sum() > 30
    assert not np.all(img == HIT, axis=-1).any()
    with pytest.raises(ValueError, match="group_names"):
        scatter_plot(pts, [0] * 4, [f"id {i}" for i in range(21)], [0] * 4)
    with pytest.raises(ValueError, match="points"):
        scatter_plot(np.zeros((0, 2)), [], [], [])
