import subprocess
import sys

import numpy as np
import pytest
import torch

from torchreid_privacy import bridge


def test_layout_detected_and_api_resolved():
    assert bridge.LAYOUT in ("pypi", "source")
    assert "osnet_x0_25" in bridge.available_models()
    assert "market1501" in bridge.available_datasets()


def test_build_model_is_offline_and_names_unknown():
    m = bridge.build_model("osnet_x0_25", num_classes=5, loss="triplet")
    assert sum(p.numel() for p in m.parameters()) > 0
    with pytest.raises(KeyError, match="did you mean 'osnet_x0_25'"):
        bridge.build_model("osnet_x0_26", num_classes=5)


def test_register_model_idempotent_and_guarded():
    def factory(num_classes, loss="softmax", pretrained=False, use_gpu=False, **kw):
        return torch.nn.Linear(2, num_classes)

    bridge.register_model("tiny_test_net", factory)
    bridge.register_model("tiny_test_net", factory)  # same factory: fine
    assert isinstance(bridge.build_model("tiny_test_net", 3), torch.nn.Linear)
    with pytest.raises(KeyError, match="already exists"):
        bridge.register_model("tiny_test_net", lambda **kw: None)


def test_torchreid_checkpoints_load_again(tmp_path):
    """torchreid saves rank1 as a numpy scalar; weights_only loading needs the allow-list."""
    m = bridge.build_model("osnet_x0_25", num_classes=4, loss="softmax")
    opt = torch.optim.Adam(m.parameters())
    bridge.save_checkpoint({"state_dict": m.state_dict(), "epoch": 3, "rank1": np.float64(0.42),
                            "optimizer": opt.state_dict()}, str(tmp_path), is_best=False)
    path = str(tmp_path / "model.pth.tar-3")
    ck = bridge.load_checkpoint(path)
    assert float(ck["rank1"]) == pytest.approx(0.42)
    start = bridge.torchtools.resume_from_checkpoint(path, m, optimizer=opt)
    assert start == 3


def test_torchreid_checkpoint_fails_without_allow_list(tmp_path):
    """The fix is needed: a fresh interpreter without the bridge cannot load the file."""
    path = tmp_path / "ck.pth"
    torch.save({"rank1": np.float64(0.5)}, path)
    code = f"import torch; torch.load({str(path)!r}, weights_only=True)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0
    assert float(bridge.load_checkpoint(path)["rank1"]) == 0.5


def test_code_executing_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(bridge.CheckpointError, match="evil.pth"):
        bridge.load_checkpoint(path)


def test_no_other_module_imports_torchreid():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("torchreid_privacy", "plugins", "kernels", "tests"):
        for f in (root / folder).rglob("*.py"):
            # test_torchreid_habit.py runs torchreid's own get-started script, as a user would
            if f.name in ("bridge.py", "test_bridge.py", "test_torchreid_habit.py"):
                continue
            if re.search(r"^\s*(import torchreid\b|from torchreid[ .])", f.read_text(), re.M):
                offenders.append(str(f.relative_to(root)))
    assert offenders == []


def test_pretrained_download_failure_names_the_setting():
    def factory(num_classes, loss="softmax", pretrained=False, use_gpu=False, **kw):
        if pretrained:
            raise OSError("Temporary failure in name resolution")
        return torch.nn.Linear(2, num_classes)

    bridge.register_model("offline_test_net", factory)
    assert isinstance(bridge.build_model("offline_test_net", 3), torch.nn.Linear)
    with pytest.raises(ConnectionError, match="model.pretrained: could not fetch ImageNet weights for 'offline_test_net'"):
        bridge.build_model("offline_test_net", 3, pretrained=True)


def test_a_registration_made_by_a_test_is_gone_afterwards_part1():
    bridge.register_model("left_behind_net", lambda **kw: None)
    assert "left_behind_net" in bridge.available_models()


def test_a_registration_made_by_a_test_is_gone_afterwards_part2():
    """Runs after part 1 (pytest keeps file order): conftest restored torchreid's tables."""
    assert "left_behind_net" not in bridge.available_models()
