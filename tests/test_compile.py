"""train.compile: the step runs compiled nets, gives eager's losses, and checkpoints keep the bare nets.

The engine tests compile with the ``aot_eager`` backend (``TORCHREID_PRIVACY_COMPILE_BACKEND``):
graph capture and AOT autograd exactly as ``train.compile default`` does them, without
inductor's C++ code generation, whose cold compile of the five tiny nets takes about 75 s on
a 2-core machine (5 s with a warm cache). ``bench step`` covers inductor.
"""
import pytest
import torch

from torchreid_privacy import bridge
from torchreid_privacy.builder import build_privacy_engine
from torchreid_privacy.config import ConfigError, load_config
from torchreid_privacy.plugins.engine.compile_nets import BACKEND_ENV_VAR, CompiledNets, compile_mode

STEPS = 2
TOLERANCE = 1e-5  # relative, per loss term (measured: identical on this CPU)


def _engine(tiny_cfg, *overrides):
    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", *overrides))
    engine.set_model_mode("train")
    return engine


def test_compiled_step_matches_eager_and_checkpoints_keep_bare_keys(tiny_cfg, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "aot_eager")
    eager = _engine(tiny_cfg)
    compiled = _engine(tiny_cfg, "train.compile", "default")
    assert compiled.compiled.mode == "default" and compiled.compiled.backend == "aot_eager"
    loader = iter(eager.train_loader)
    for step in range(STEPS):
        data = next(loader)
        want, got = eager.forward_backward(data), compiled.forward_backward(data)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=TOLERANCE, abs=1e-7), (step, k)
    # every net the step runs went through torch.compile (D1/D2 once, frozen or not)
    assert len(compiled.compiled) == 5
    models = bridge.engine_models(compiled)
    assert not any(isinstance(m, torch._dynamo.eval_frame.OptimizedModule) for m in models.values())
    want_keys = {n: list(m.state_dict()) for n, m in bridge.engine_models(eager).items()}
    got_keys = {n: list(m.state_dict()) for n, m in models.items()}
    assert got_keys == want_keys
    assert not any("_orig_mod" in k for keys in got_keys.values() for k in keys)
    state = compiled.state()
    assert not any("_orig_mod" in k for k in _nested_keys(state))


def _nested_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _nested_keys(v)


def test_compiled_nets_compiles_each_net_once():
    nets = CompiledNets("default", backend="aot_eager")
    a, b = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    fa = nets(a)
    assert fa is not a and nets(a) is fa and nets(b) is not fa and len(nets) == 2
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(fa(x), a(x))
    off = CompiledNets("off")
    assert off(a) is a and len(off) == 0 and not off.enabled
    # mode is inductor's option: another backend with max-autotune still compiles and runs
    torch.testing.assert_close(CompiledNets("max-autotune", backend="aot_eager")(b)(x), b(x))


def test_compile_config_values(tiny_cfg, tmp_path):
    cfg_file = tmp_path / "compile.yaml"
    cfg_file.write_text("train:\n  compile: off\n")  # YAML 1.1 reads a bare off as false
    assert load_config(str(cfg_file)).train.compile == "off"
    assert tiny_cfg().train.compile == "off"
    assert tiny_cfg("train.compile", "max-autotune").train.compile == "max-autotune"
    with pytest.raises(ConfigError, match="train.compile: expected one of off, default, max-autotune"):
        tiny_cfg("train.compile", "fast")
    assert compile_mode(False) == "off"
    with pytest.raises(ValueError, match="train.compile"):
        compile_mode("fast")
