import importlib
import subprocess
import sys
import textwrap

import pytest

from torchreid_privacy.registry import ALL_REGISTRIES, Registry


def test_register_build_and_unknown_name_hint():
    reg = Registry("widget")

    @reg.register("square")
    def square(x=2):
        return x * x

    assert reg.get("square")(3) == 9
    assert "square" in reg and reg.names() == ["square"]
    with pytest.raises(KeyError, match="did you mean 'square'"):
        reg.get("sqare")


def test_duplicate_name_is_an_error_unless_forced():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(KeyError, match="already registered"):
        reg.register("a")(lambda: 2)
    reg.register("a", force=True)(lambda: 3)
    assert reg.get("a")() == 3


def test_reimport_is_idempotent():
    import torchreid_privacy.plugins.desensitizers as mod

    before = {k: r.names() for k, r in ALL_REGISTRIES.items()}
    importlib.reload(mod)
    assert {k: r.names() for k, r in ALL_REGISTRIES.items()} == before


def test_builtins_registered():
    assert {"mosaic", "blur", "noise"} <= set(ALL_REGISTRIES["desensitizers"].names())
    assert {"unet_128", "unet_256", "resnet_6blocks", "resnet_9blocks"} <= set(ALL_REGISTRIES["anonymizers"].names())
    assert {"basic", "n_layers", "pixel"} <= set(ALL_REGISTRIES["discriminators"].names())
    assert {"gan", "center", "weighted_triplet", "cross_entropy", "triplet"} <= set(ALL_REGISTRIES["losses"].names())
    assert "privacy" in ALL_REGISTRIES["engines"].names()


def test_third_party_plugin_from_entry_point(tmp_path):
    """A package declaring the entry-point group gets its components registered."""
    pkg = tmp_path / "thirdparty_desens.py"
    pkg.write_text(textwrap.dedent('''
        from torchreid_privacy.registry import DESENSITIZERS

        @DESENSITIZERS.register("invert")
        def invert(images):
            return 1.0 - images
    '''))
    dist = tmp_path / "thirdparty_desens-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-desens\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[torchreid_privacy.plugins]\ninvert = thirdparty_desens\n")
    code = ("import torch, torchreid_privacy as t;"
            "from torchreid_privacy.desensitize import desensitize;"
            "x = torch.full((1, 3, 4, 4), 0.25);"
            "print(float(desensitize(x, 'invert').mean()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__('os').environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.75"
