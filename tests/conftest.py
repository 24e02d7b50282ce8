import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined (see tests/kernels)

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use tiny tensors: one intra-op thread avoids OpenMP spin-waits on a shared 2-core box.
torch.set_num_threads(1)

from tiny_config import TINY  # noqa: E402  (shared with tests that run subprocesses)


@pytest.fixture(autouse=True)
def _registries_restored():
    """What a test registers (torchreid models and datasets, our components) is gone after it."""
    from torchreid_privacy import bridge
    from torchreid_privacy.registry import ALL_REGISTRIES, load_plugins

    load_plugins()
    torchreid_tables = bridge.registry_snapshot()
    ours = {name: dict(reg._items) for name, reg in ALL_REGISTRIES.items()}
    yield
    bridge.restore_registries(torchreid_tables)
    for name, reg in ALL_REGISTRIES.items():
        reg._items.clear()
        reg._items.update(ours[name])


@pytest.fixture(autouse=True)
def _deterministic_seed():
    """Every test starts from the same RNG state: a tolerance test cannot pass or fail by luck."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> str:
    """A small synthetic Market-1501 set shared by the integration tests."""
    from torchreid_privacy.data.synthetic import make_synthetic_market

    root = tmp_path_factory.mktemp("reid-data")
    make_synthetic_market(root, num_ids=24, train_images_per_id=8, gallery_per_id=4, num_junk=6, extra_test_ids=0)
    return str(root)


@pytest.fixture
def tiny_cfg(tiny_root, tmp_path):
    """Factory: the quickstart config shrunk for tests, plus overrides."""
    from torchreid_privacy.config import load_config
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    def make(*overrides: str):
        return load_config(packaged_config(QUICKSTART),
                           ["data.root", tiny_root, "data.save_dir", str(tmp_path / "run"), *TINY, *overrides])

    return make


@pytest.fixture(scope="session")
def trained_run(tiny_root, tmp_path_factory) -> str:
    """A joint-mode run directory (2 short epochs) for the CLI tests."""
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.config import load_config
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(packaged_config(QUICKSTART),
                      ["data.root", tiny_root, "data.save_dir", str(run), *TINY, "privacy.mode", "joint"])
    build_privacy_engine(cfg).run_privacy(save_dir=str(run), max_epoch=cfg.train.max_epoch)
    return str(run)
