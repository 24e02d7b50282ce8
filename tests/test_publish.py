"""The publication channel: P is scored as the files ``anonymize`` writes, and trained through them."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchreid_privacy.config import ConfigError, load_config
from torchreid_privacy.publish import PublishChannel, round_to_8bit, to_uint8
from torchreid_privacy.publish.through import differentiable_channel, straight_through_round, through_channel


def _images(n=3, h=64, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, h // 8, w // 8, generator=g), size=(h, w),
                                             mode="bilinear", align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("fmt,quality", [("gif", 95), ("jpeg", 0), ("jpeg", 101), ("png", True)])
def test_bad_channel_names_its_key(fmt, quality):
    key = "format" if fmt == "gif" else "quality"
    with pytest.raises(ValueError, match=rf"privacy\.publish\.{key}"):
        PublishChannel(fmt, quality)


@pytest.mark.parametrize("override,key", [(["privacy.publish.format", "gif"], "privacy.publish.format"),
                                          (["privacy.publish.quality", "0"], "privacy.publish.quality"),
                                          (["privacy.publish.quality", "101"], "privacy.publish.quality")])
def test_config_refuses_a_bad_channel_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, override)


def test_png_publishes_the_8bit_rounding_exactly():
    x = _images()
    ch = PublishChannel("png")
    assert ch.suffix == ".png" and ch.label == "png"
    assert torch.equal(ch.publish(x), round_to_8bit(x))


@pytest.mark.parametrize("fmt,suffix", [("jpeg", ".jpg"), ("webp", ".webp")])
def test_lossy_channel_is_pils_codec_at_the_quality(fmt, suffix):
    x = _images()
    ch = PublishChannel(fmt, 60)
    assert ch.suffix == suffix and ch.label == f"{fmt}60"
    pil = []
    for a in to_uint8(x):  # the reference: Pillow directly
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format={"jpeg": "JPEG", "webp": "WEBP"}[fmt], quality=60)
        pil.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    assert np.array_equal(ch.publish_uint8(x), np.stack(pil))
    published = ch.publish(x)
    assert not torch.equal(published, round_to_8bit(x))  # lossy: not just rounding
    assert torch.equal(PublishChannel(fmt, 95).publish(x), PublishChannel(fmt, 95).publish(x))
    assert (published - x).abs().mean() > (PublishChannel(fmt, 95).publish(x) - x).abs().mean()


def test_straight_through_rounding_has_the_identity_gradient():
    x = _images().requires_grad_(True)
    y = straight_through_round(x)
    assert torch.equal(y.detach(), round_to_8bit(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_training_sees_the_published_file_and_gets_a_jpeg_gradient():
    ch = PublishChannel("jpeg", 75)
    x = _images().requires_grad_(True)
    y = through_channel(x, ch)
    assert torch.equal(y.detach(), ch.publish(x.detach()))  # forward: exactly what ships
    target = torch.rand_like(y)
    ((y - target) ** 2).mean().backward()
    g_through = x.grad.clone()
    x.grad = None
    ((differentiable_channel(x, ch) - target) ** 2).mean().backward()
    # backward: kornia's differentiable JPEG (evaluated at the file's pixels, so close, not equal)
    cos = torch.nn.functional.cosine_similarity(g_through.flatten(), x.grad.flatten(), dim=0)
    assert cos > 0.9
    # the kornia stand-in approximates Pillow's codec: far closer to the file than the file is to x
    published = ch.publish(x.detach())
    assert (differentiable_channel(x.detach(), ch) - published).abs().mean() < 0.3 * (published - x.detach()).abs().mean()


def test_anonymize_writes_exactly_the_p_that_evaluation_scored(trained_run, tmp_path):
    """The file anonymize writes for an image decodes to exactly the tensor evaluation scored."""
    from torchreid_privacy.cli import main
    from torchreid_privacy.trained_run import TrainedRun

    run = TrainedRun.open(trained_run)
    scored = {}

    def keep(split, data, images):
        if split == "query":
            scored.update({os.path.basename(p): img for p, img in zip(data["impath"], images["P"])})

    run.evaluator.batch_hooks.append(keep)
    res = run.evaluate(run.test_targets[0])
    assert res["publish"] == {"format": "jpeg", "quality": 95}
    query = Path(run.datamanager.test_loader[run.test_targets[0]]["query"].dataset.query[0][0]).parent
    out = tmp_path / "protected"
    assert main(["anonymize", "--input", str(query), "--output", str(out), "--checkpoint", trained_run,
                 "--batch-size", str(run.config.test.batch_size)]) == 0
    assert scored and sorted(p.name for p in out.iterdir()) == sorted(Path(n).with_suffix(".jpg").name for n in scored)
    for name, p in scored.items():
        with Image.open(out / Path(name).with_suffix(".jpg").name) as im:
            assert im.format == "JPEG"
            decoded = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float().div(255)
        assert torch.equal(decoded, p), name


def test_anonymize_format_flag_overrides_the_run_channel(trained_run, tmp_path):
    from torchreid_privacy.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((64, 32, 3), 40 * i, np.uint8)).save(src / f"{i:04d}_c1.jpg")
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--checkpoint", trained_run,
                 "--format", "png"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0000_c1.png", "0001_c1.png"]
    with Image.open(tmp_path / "o" / "0000_c1.png") as im:
        assert im.format == "PNG"


def test_two_inputs_that_would_share_an_output_name_keep_the_first(trained_run, tmp_path, caplog):
    from torchreid_privacy.cli import main

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((64, 32, 3), 90, np.uint8)).save(src / "a.png")
    Image.fromarray(np.full((64, 32, 3), 90, np.uint8)).save(src / "a.jpg")
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--checkpoint", trained_run]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a.jpg"]
    assert "its output name a.jpg is taken by" in caplog.text


def _evaluate_with_gap(engine):
    """Evaluation results and the largest |published P - float P| over the scored images."""
    gaps = []
    engine.evaluator.batch_hooks.append(lambda split, data, im: gaps.append((im["P"] - im["P unpublished"]).abs()))
    res = engine.evaluate(engine.val_target)
    return res, torch.cat([g.flatten() for g in gaps])


def test_evaluation_scores_published_p_and_reports_the_float_p_beside_it(tiny_cfg):
    from torchreid_privacy.builder import build_privacy_engine

    lossy = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.publish.quality", "10"))
    res, gap = _evaluate_with_gap(lossy)
    assert set(res["rank_unpublished"]) == {"O->P", "P->O", "P->P"}
    assert set(res["image_unpublished"]) == {"O-M", "O-P"}
    assert res["publish"] == {"format": "jpeg", "quality": 10}
    assert gap.max() > 2 / 255  # JPEG 10 moved the scored P beyond 8-bit rounding of the float P
    png = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.publish.format", "png"))
    res, gap = _evaluate_with_gap(png)
    assert gap.max() <= 0.5 / 255 + 1e-6  # PNG only rounds to 8 bits
    assert res["image"]["O-P"]["psnr"] == pytest.approx(res["image_unpublished"]["O-P"]["psnr"], abs=0.05)
