import subprocess
import sys

import pytest
import yaml

from torchreid_privacy.config import ConfigError, imagedata_kwargs, load_config
from torchreid_privacy.config_schema import TORCHREID_DEFAULTS


def _write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_defaults_match_torchreid_and_paper():
    cfg = load_config()
    assert cfg.model.name == "resnet50" and cfg.train.lr == 0.0003 and cfg.test.ranks == [1, 5, 10, 20]
    assert cfg.privacy.enabled is False and cfg.privacy.mode == "progressive"
    assert cfg.privacy.weights.rec_p == 100.0 and cfg.privacy.weights.center == 0.0005
    assert (cfg.privacy.eps_psnr, cfg.privacy.eps_ssim, cfg.privacy.r1_floor) == (1.0, 0.05, 0.75)


def test_torchreid_yaml_without_privacy_loads_unchanged(tmp_path):
    text = ("model:\n  name: osnet_x1_0\ndata:\n  sources: ['market1501']\n  height: 256\n"
            "train:\n  optim: amsgrad\n  lr: 0.0015\n  stepsize: [60]\nloss:\n  name: softmax\n")
    cfg = load_config(_write(tmp_path, text))
    raw = yaml.safe_load(text)
    for sec, vals in raw.items():
        for k, v in vals.items():
            assert cfg[sec][k] == v
    assert cfg.privacy.enabled is False
    assert set(TORCHREID_DEFAULTS) <= set(cfg)
    assert imagedata_kwargs(cfg)["sources"] == ["market1501"]


def test_overrides_and_privacy_section(tmp_path):
    p = _write(tmp_path, "privacy:\n  enabled: true\n  desensitizer: {name: blur, params: {radius: 5}}\n")
    cfg = load_config(p, ["train.max_epoch", "3", "privacy.mode", "joint", "privacy.desensitizer.params.radius", "2"])
    assert cfg.train.max_epoch == 3 and cfg.privacy.mode == "joint"
    assert cfg.privacy.desensitizer.params == {"radius": 2}
    assert cfg.train.lr == 0.0003  # untouched


def test_scalar_source_becomes_list():
    assert load_config(None, ["data.sources", "market1501"]).data.sources == ["market1501"]


@pytest.mark.parametrize("overrides,needle", [
    (["train.lrr", "0.1"], "closest valid key: 'train.lr'"),
    (["privacy.eps_psnrr", "1"], "closest valid key: 'privacy.eps_psnr'"),
    (["modle.name", "x"], "closest valid key: 'model.name'"),
])
def test_unknown_key_names_closest(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides)


@pytest.mark.parametrize("overrides,needle", [
    (["train.lr", "fast"], "train.lr: expected float, got 'fast'"),
    (["train.max_epoch", "1.5"], "train.max_epoch: expected int, got 1.5"),
    (["privacy.enabled", "maybe"], "privacy.enabled: expected bool"),
    (["privacy.mode", "magic"], "privacy.mode: expected one of baseline, joint, progressive"),
    (["privacy.val_ratio", "1.5"], "privacy.val_ratio"),
])
def test_wrong_type_names_key_type_value(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, overrides)


def test_unknown_key_in_yaml_names_file(tmp_path):
    p = _write(tmp_path, "train:\n  max_epochs: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'train\.max_epochs'; closest valid key: 'train\.max_epoch'"):
        load_config(p)


def test_cli_config_prints_merged_yaml_and_fails_on_bad_key(tmp_path):
    p = _write(tmp_path, "privacy:\n  enabled: true\n")
    ok = subprocess.run([sys.executable, "-m", "torchreid_privacy", "config", "--config-file", str(p),
                         "train.max_epoch", "7"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    merged = yaml.safe_load(ok.stdout)
    assert merged["train"]["max_epoch"] == 7 and merged["privacy"]["enabled"] is True
    bad = subprocess.run([sys.executable, "-m", "torchreid_privacy", "config", "--config-file", str(p),
                          "train.max_epok", "7"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "train.max_epok" in bad.stderr and "train.max_epoch" in bad.stderr
