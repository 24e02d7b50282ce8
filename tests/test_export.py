"""ONNX export: every graph matches its PrivacyModel method under onnxruntime (1e-4, batch 1 and
8), carries its metadata, never overwrites; ``anonymize --onnx`` equals the torch path within one
grey level without touching the input folder; the runner module imports no torch."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from tiny_config import TINY
from torchreid_privacy.export import exporter as export_mod
from torchreid_privacy.sealing import keys
from torchreid_privacy.cli import main
from torchreid_privacy.config import load_config
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config
from torchreid_privacy.export.exporter import export_onnx
from torchreid_privacy.utils.images import from_gan, to_gan
from torchreid_privacy.inference import PrivacyModel, model_from_config
from torchreid_privacy.models.nets import build_decoder, build_generator, build_reid_model
from torchreid_privacy.export.runtime import OnnxAnonymizer, OnnxGraph

TOL = 1e-4
KEY = bytes(range(32))
GRAPHS = ("anonymizer", "decoder", "decoder_keyed", "reid")


def _randomize_bn(*nets: torch.nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm is not an identity the export could drop."""
    gen = torch.Generator().manual_seed(1)
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def _model(*overrides: str, baseline: bool = False) -> PrivacyModel:
    cfg = load_config(packaged_config(QUICKSTART), [*TINY, "privacy.decoder.key_channels", "8", *overrides])
    reid = build_reid_model(cfg, num_classes=6, loss="triplet", load_weights=False)
    g = d = None
    if not baseline:
        g, d = build_generator(cfg), build_decoder(cfg)
    with torch.no_grad():
        _randomize_bn(*(n for n in (reid, g, d) if n is not None))
    return model_from_config(cfg, reid, g, d).eval()


@pytest.fixture(scope="module")
def models():
    keyed = _model("privacy.decoder.keyed", "true")
    keyed.set_key(KEY)
    return {"plain": _model(), "keyed": keyed}


@pytest.fixture(scope="module")
def onnx_files(models, tmp_path_factory):
    """The four dynamic-batch graphs, exported once for the module."""
    out = tmp_path_factory.mktemp("onnx")
    files = {}
    for name in GRAPHS:
        model = models["keyed" if name == "decoder_keyed" else "plain"]
        files[name] = export_onnx(model, name.split("_")[0], str(out / f"{name}.onnx"), dynamic_batch=True)
    return files


def _torch_and_inputs(model: PrivacyModel, name: str, n: int):
    x = torch.rand(n, 3, model.height, model.width)
    if name == "anonymizer":
        return model.anonymize(x), (x,)
    if name == "reid":
        return model.features(x), (x,)
    if name == "decoder":
        return model.recover(x), (x,)
    return model.recover(x), (x, keys.key_code(KEY, model.key_channels))


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_matches_torch_at_batch_1_and_8(models, onnx_files, name):
    model = models["keyed" if name == "decoder_keyed" else "plain"]
    graph = OnnxGraph(onnx_files[name], threads=1)
    assert graph.fixed_batch is None
    for n in (1, 8):
        want, inputs = _torch_and_inputs(model, name, n)
        got = graph.run(*(t.numpy() for t in inputs))
        assert got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() < TOL, f"{name} at batch {n}"
    meta = graph.metadata
    assert meta["what"] == name.split("_")[0] and (meta["height"], meta["width"]) == ("64", "32")
    assert meta["batch"] == "dynamic" and meta["producer"].startswith("torchreid-privacy ")
    assert meta["keyed"] == str(name == "decoder_keyed").lower()
    assert meta["exporter"].startswith("dynamo")
    assert onnx.load(onnx_files[name]).opset_import[0].version == export_mod.DEFAULT_OPSET


def test_keyed_graph_takes_the_key_code_as_input(models, onnx_files):
    """The key is an input, not baked in: a wrong code gives what torch gives with the wrong planes."""
    model = models["keyed"]
    graph = OnnxGraph(onnx_files["decoder_keyed"], threads=1)
    assert graph.input_names == ["anonymized", "key_code"]
    assert graph.metadata["key_channels"] == "8"
    p = torch.rand(3, 3, model.height, model.width)
    wrong = -keys.key_code(KEY, 8)
    want = from_gan(model.decoder(to_gan(p), wrong.view(8, 1, 1).expand(8, model.height, model.width)))
    got = graph.run(p.numpy(), wrong.numpy())
    assert np.abs(got - want.detach().numpy()).max() < TOL
    assert np.abs(got - model.recover(p).numpy()).max() > 1e-3  # the key matters


def test_fixed_batch_graph_takes_one_image_and_runner_feeds_chunks(models, tmp_path):
    model = models["plain"]
    path = export_onnx(model, "reid", str(tmp_path / "reid.onnx"), opset=17, exporter="torchscript")
    proto = onnx.load(path)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 32]
    assert proto.opset_import[0].version == 17
    graph = OnnxGraph(path, threads=1)
    assert graph.fixed_batch == 1 and graph.metadata["batch"] == "1"
    assert graph.metadata["exporter"].startswith("torchscript")
    x = torch.rand(8, 3, 64, 32)
    with pytest.raises(Exception):  # onnxruntime itself refuses another batch size
        graph.session.run(None, {"image": x.numpy()})
    assert np.abs(graph.run(x.numpy()) - model.features(x).numpy()).max() < TOL


def test_auto_falls_back_to_torchscript_when_dynamo_misses_the_opset(models, tmp_path, monkeypatch):
    legacy = export_mod._export_legacy
    # stand-in for a dynamo export whose version converter failed: it keeps its own opset
    monkeypatch.setattr(export_mod, "_export_dynamo", lambda g, a, i, o, opset, d: legacy(g, a, i, o, 18, d))
    path = export_onnx(models["plain"], "reid", str(tmp_path / "r.onnx"), opset=16)
    assert onnx.load(path).opset_import[0].version == 16
    assert OnnxGraph(path).metadata["exporter"].startswith("torchscript")
    with pytest.raises(ValueError, match="^--opset: could not export opset 16 .*dynamo: gave opset 18"):
        export_onnx(models["plain"], "reid", str(tmp_path / "r2.onnx"), opset=16, exporter="dynamo")
    assert not (tmp_path / "r2.onnx").exists()


def test_auto_falls_back_to_torchscript_when_dynamo_fails(models, tmp_path, monkeypatch):
    def untraceable(*args):
        raise RuntimeError("torch.export could not trace this backbone")

    monkeypatch.setattr(export_mod, "_export_dynamo", untraceable)
    x = torch.rand(3, 3, 64, 32)
    path = export_onnx(models["plain"], "reid", str(tmp_path / "r.onnx"), dynamic_batch=True)
    graph = OnnxGraph(path, threads=1)
    assert graph.metadata["exporter"].startswith("torchscript") and graph.fixed_batch is None
    assert np.abs(graph.run(x.numpy()) - models["plain"].features(x).numpy()).max() < TOL
    with pytest.raises(RuntimeError, match="could not trace"):
        export_onnx(models["plain"], "reid", str(tmp_path / "r2.onnx"), exporter="dynamo")
    assert not (tmp_path / "r2.onnx").exists()


def test_baseline_mosaic_exports_noise_is_refused(tmp_path):
    model = _model("privacy.mode", "baseline", baseline=True)
    path = export_onnx(model, "anonymizer", str(tmp_path / "m.onnx"), dynamic_batch=True)
    run = OnnxAnonymizer(path, threads=1)
    assert run.metadata["desensitizer"] == "mosaic" and run.metadata["mode"] == "baseline"
    for n in (1, 8):
        x = torch.rand(n, 3, 64, 32)
        assert np.abs(run(x.numpy()) - model.anonymize(x).numpy()).max() < 1e-6
    noisy = _model("privacy.mode", "baseline", "privacy.desensitizer.name", "noise",
                   "privacy.desensitizer.params", "{sigma: 0.5}", baseline=True)
    with pytest.raises(ValueError, match="^--what anonymizer: .*'noise'"):
        export_onnx(noisy, "anonymizer", str(tmp_path / "n.onnx"))
    with pytest.raises(ValueError, match="^--what decoder: .*no recovery decoder"):
        export_onnx(model, "decoder", str(tmp_path / "n.onnx"))
    assert not (tmp_path / "n.onnx").exists()


def test_bad_requests_name_the_flag(models, tmp_path):
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="^--output: .*exists.onnx already exists"):
        export_onnx(models["plain"], "anonymizer", str(existing))
    assert existing.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="^--what: "):
        export_onnx(models["plain"], "generator", str(tmp_path / "x.onnx"))
    with pytest.raises(ValueError, match="^--opset: "):
        export_onnx(models["plain"], "anonymizer", str(tmp_path / "x.onnx"), opset=3)


def test_runner_checks_inputs_and_graph_kind(onnx_files, tmp_path):
    run = OnnxAnonymizer(onnx_files["anonymizer"], threads=1)
    assert (run.height, run.width) == (64, 32)
    with pytest.raises(ValueError, match="^image: expected \\(N, 3, 64, 32\\)"):
        run(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="^--onnx: .*'reid' graph, not the anonymizer"):
        OnnxAnonymizer(onnx_files["reid"])
    with pytest.raises(FileNotFoundError, match="^--onnx: no such file"):
        OnnxAnonymizer(str(tmp_path / "missing.onnx"))
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="^--onnx: .*not a loadable ONNX model"):
        OnnxAnonymizer(str(bogus))


def test_runner_module_imports_no_torch(onnx_files):
    """onnx_runtime.py runs on its own (copied to an edge device): numpy + onnxruntime, no torch."""
    import torchreid_privacy.export.runtime as mod

    code = (
        "import importlib.util, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('onnx_runtime', {mod.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"p = m.OnnxAnonymizer({onnx_files['anonymizer']!r}, threads=1)(np.full((2, 3, 64, 32), 0.5, np.float32))\n"
        "assert p.shape == (2, 3, 64, 32) and 0 <= p.min() <= p.max() <= 1\n"
        "assert 'torch' not in sys.modules, sorted(k for k in sys.modules if 'torch' in k)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_anonymize_onnx_cli_matches_torch_within_one_grey_level(trained_run, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "cam1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(128, 64), (64, 32), (90, 41), (40, 20), (200, 100)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / "cam1" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (70, 30), dtype=np.uint8)).save(src / "grey.png")
    (src / "broken.png").write_bytes(b"not an image")
    before = _tree_digest(src)

    onnx_path = str(tmp_path / "anon.onnx")
    assert main(["export", "--checkpoint", trained_run, "--what", "anonymizer", "--output", onnx_path,
                 "--dynamic-batch"]) == 0
    assert main(["export", "--checkpoint", trained_run, "--what", "anonymizer", "--output", onnx_path]) == 1
    assert "--output:" in capsys.readouterr().err

    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "torch"), "--checkpoint", trained_run,
                 "--batch-size", "4", "--device", "cpu"]) == 0
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "onnx"), "--onnx", onnx_path,
                 "--batch-size", "4", "--device", "cpu"]) == 0
    assert "written 6, skipped (already in output) 0, skipped (unreadable) 1" in capsys.readouterr().out
    assert _tree_digest(src) == before, "the input folder was written to"

    names = sorted(p.relative_to(tmp_path / "torch").as_posix() for p in (tmp_path / "torch").rglob("*.*"))
    assert names == sorted(p.relative_to(tmp_path / "onnx").as_posix() for p in (tmp_path / "onnx").rglob("*.*"))
    assert len(names) == 6
    for name in names:
        a = np.asarray(Image.open(tmp_path / "torch" / name), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=np.int16)
        assert a.shape == b.shape == (64, 32, 3)
        assert np.abs(a - b).max() <= 1, name

    # a second run keeps every existing output
    written = _tree_digest(tmp_path / "onnx")
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "onnx"), "--onnx", onnx_path]) == 0
    assert "written 0, skipped (already in output) 6" in capsys.readouterr().out
    assert _tree_digest(tmp_path / "onnx") == written


def test_anonymize_needs_checkpoint_or_onnx(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o")]) == 1
    assert "error: --checkpoint: required" in capsys.readouterr().err
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--onnx", "x.onnx",
                 "--checkpoint", str(tmp_path / "run")]) == 1
    assert "error: --onnx: give either" in capsys.readouterr().err
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--onnx", "x.onnx",
                 "--seal-key", str(tmp_path / "k.key")]) == 1
    assert "error: --seal-key: not supported with --onnx" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("generator", ["learned_mosaic", "residual_code"])
def test_the_mosaic_family_generators_export(generator, tmp_path):
    """The shipped sealed config's G (learned_mosaic: cells pooled to a grid that does not divide
    the image) and residual_code export and match torch under onnxruntime at batch 1 and 8."""
    params = "{render: blocks}" if generator == "residual_code" else "{}"
    model = _model("privacy.generator.name", generator, "privacy.generator.num_downs", "null",
                   "privacy.generator.params", params)
    graph = OnnxGraph(export_onnx(model, "anonymizer", str(tmp_path / "g.onnx"), dynamic_batch=True), threads=1)
    for n in (1, 8):
        want, (x,) = _torch_and_inputs(model, "anonymizer", n)
        assert np.abs(graph.run(x.numpy()) - want.numpy()).max() < TOL, f"{generator} at batch {n}"
