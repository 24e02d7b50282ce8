"""train.amp: autocast really runs in the asked precision, losses stay finite, fp16 scales."""
import math

import pytest
import torch

from torchreid_privacy import bridge

from torchreid_privacy.utils import checkpoint
from torchreid_privacy.utils.amp import Precision, amp_mode
from torchreid_privacy.builder import build_privacy_engine
from torchreid_privacy.config import ConfigError


def _conv_dtypes(engine):
    """Record the output dtype of the first conv of G and C during training steps."""
    seen = {"generator": set(), "model": set()}
    for name in seen:
        conv = next(m for m in bridge.engine_models(engine)[name].modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o, name=name: seen[name].add(o.dtype) if m.training else None)
    return seen


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_on_cpu_and_losses_stay_finite(tiny_cfg, tmp_path, amp, dtype):
    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "train.amp", amp, "train.max_epoch", "1"))
    seen = _conv_dtypes(engine)
    res = engine.run_privacy(save_dir=str(tmp_path / "run"), max_epoch=1)
    assert seen == {"generator": {dtype}, "model": {dtype}}
    losses = res["history"][0]["losses"]
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    ckpt = checkpoint.load(str(tmp_path / "run" / "checkpoints" / "last.pth"))
    if amp == "fp16":  # the loss scale travels with the checkpoint for an exact resume
        assert ckpt["amp_scaler"]["scale"] > 0
    assert all(p.dtype == torch.float32 for p in engine.model.parameters()), "AMP keeps float32 master weights"


def test_amp_off_trains_in_float32(tiny_cfg, tmp_path):
    engine = build_privacy_engine(tiny_cfg("privacy.mode", "baseline", "train.max_epoch", "1"))
    conv = next(m for m in engine.model.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = set()
    conv.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    engine.run_privacy(save_dir=str(tmp_path / "run"), max_epoch=1, eval_test=False)
    assert dtypes == {torch.float32}


def test_yaml_off_and_bad_values(tiny_cfg, tmp_path):
    cfg_file = tmp_path / "amp.yaml"
    cfg_file.write_text("train:\n  amp: off\n")  # YAML 1.1 reads this as false
    from torchreid_privacy.config import load_config

    assert load_config(str(cfg_file)).train.amp == "off"
    with pytest.raises(ConfigError, match="train.amp: expected one of off, bf16, fp16"):
        tiny_cfg("train.amp", "fp8")
    assert amp_mode(False) == "off"
    with pytest.raises(ValueError, match="train.amp"):
        Precision("half", torch.device("cpu"))
