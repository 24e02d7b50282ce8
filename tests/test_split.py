"""Identity-disjoint validation split and the ``<base>_val`` datasets."""
from __future__ import annotations

import importlib
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from torchreid_privacy import bridge
from torchreid_privacy.data import (
    datasets,
    make_synthetic_market,
    register_val_split,
    split_identities,
    write_split,
)

N_IDS = 20  # synthetic set -> 10 training identities -> 8 train / 2 val


def _toy_labels(n_ids: int = 40, seed: int = 0):
    """Identities with 2..10 images on 1..4 cameras (some single-camera, as in real data)."""
    rng = np.random.default_rng(seed)
    pids, camids = [], []
    for pid in range(n_ids):
        n, cams = int(rng.integers(2, 11)), rng.choice(6, size=int(rng.integers(1, 5)), replace=False)
        pids += [pid * 7 + 3] * n
        camids += rng.choice(cams, size=n).tolist()
    return np.array(pids), np.array(camids)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split")
    make_synthetic_market(root, num_ids=N_IDS, num_junk=4, extra_test_ids=0)
    return root


def test_split_is_identity_disjoint_and_a_partition():
    pids, camids = _toy_labels()
    s = split_identities(pids, camids, val_ratio=0.2, seed=0)
    train_ids = set(pids[s["train"]])
    val_ids = set(pids[s["val_gallery"]]) | set(pids[s["val_query"]])
    assert not train_ids & val_ids
    assert set(pids[s["val_query"]]) <= set(pids[s["val_gallery"]])
    everything = s["train"] + s["val_gallery"] + s["val_query"]
    assert sorted(everything) == list(range(len(pids)))
    assert len(val_ids) == int(np.ceil(0.2 * len(set(pids.tolist()))))


def _val_queries_by_pid(pids, split):
    counts = defaultdict(int)
    for i in split["val_query"]:
        counts[int(pids[i])] += 1
    return {int(p): counts[int(p)] for p in set(pids[split["val_gallery"] + split["val_query"]].tolist())}


def test_query_share_per_identity_follows_query_ratio():
    rng = np.random.default_rng(0)
    sizes = rng.integers(2, 16, size=30)  # images spread evenly over 3 cameras
    pids = np.repeat(np.arange(30), sizes)
    camids = np.concatenate([np.arange(n) % 3 for n in sizes])
    s = split_identities(pids, camids, val_ratio=0.5, query_ratio=0.2, seed=0)
    for pid, n_query in _val_queries_by_pid(pids, s).items():
        n = int(sizes[pid])
        assert n_query == min(n - 1, max(1, round(0.2 * n))), (pid, n, n_query)


def test_queries_keep_an_other_camera_match():
    # 9 images on camera 0 and 1 on camera 1: taking the camera-1 image as one of the 4 queries
    # would leave the camera-0 queries without a valid match, so it must stay in the gallery
    pids = np.repeat(np.arange(40), 10)
    camids = np.tile([0] * 9 + [1], 40)
    single = np.repeat([100, 101, 102, 103], 4)  # one camera only: can never be matched
    pids, camids = np.concatenate([pids, single]), np.concatenate([camids, np.zeros(16, int)])
    s = split_identities(pids, camids, val_ratio=0.5, query_ratio=0.4, seed=1)
    gallery = defaultdict(set)
    for i in s["val_gallery"]:
        gallery[pids[i]].add(camids[i])
    for q in s["val_query"]:  # the Market-1501 protocol leaves a valid match for every query
        assert gallery[pids[q]] - {camids[q]}, (pids[q], camids[q])
    for pid, n_query in _val_queries_by_pid(pids, s).items():
        assert n_query == (0 if pid >= 100 else 4), (pid, n_query)


def test_split_is_deterministic_by_seed():
    pids, camids = _toy_labels()
    a = split_identities(pids, camids, seed=5)
    assert a == split_identities(pids, camids, seed=5)
    assert a != split_identities(pids, camids, seed=6)


@pytest.mark.parametrize("kwargs, name", [
    ({"val_ratio": 0.0}, "val_ratio"), ({"val_ratio": 1.0}, "val_ratio"),
    ({"query_ratio": 1.5}, "query_ratio"), ({"val_ratio": "0.2"}, "val_ratio"),
])
def test_bad_ratios_name_themselves(kwargs, name):
    pids, camids = _toy_labels()
    with pytest.raises(ValueError, match=f"^{name}:"):
        split_identities(pids, camids, **kwargs)


def test_too_few_identities_is_an_error_naming_val_ratio():
    with pytest.raises(ValueError, match="^val_ratio:"):
        split_identities([1, 1, 2, 2], [0, 1, 0, 1], val_ratio=0.9)
    with pytest.raises(ValueError, match="^val_ratio:"):
        split_identities([1, 1], [0, 1])
    with pytest.raises(ValueError, match="^camids:"):
        split_identities([1, 1, 2], [0, 1])


def test_write_split_json_from_train_set_only(synthetic_root, tmp_path):
    out = write_split("synthetic_market", synthetic_root, tmp_path / "split.json", seed=2)
    doc = json.loads(out.read_text())
    assert (doc["dataset"], doc["seed"], doc["val_ratio"]) == ("synthetic_market", 2, 0.2)
    for key in ("train", "val_query", "val_gallery"):
        assert doc[key] and all(len(item) == 3 for item in doc[key])
        assert all("/bounding_box_train/" in path for path, _, _ in doc[key])  # never the test set
    assert sorted({pid for _, pid, _ in doc["train"]}) == list(range(N_IDS // 2 - 2))
    def file_ids(key):  # the identity as written in the file name, independent of relabelling
        return {re.search(r"/(\d{4})_c", path).group(1) for path, _, _ in doc[key]}

    assert not file_ids("train") & (file_ids("val_gallery") | file_ids("val_query"))
    assert file_ids("val_query") <= file_ids("val_gallery")
    again = write_split("synthetic_market", synthetic_root, tmp_path / "again.json", seed=2)
    assert again.read_text() == out.read_text()


def test_write_split_refuses_to_overwrite(synthetic_root, tmp_path):
    target = tmp_path / "split.json"
    target.write_text("keep me")
    with pytest.raises(FileExistsError, match=re.escape(str(target))):
        write_split("synthetic_market", synthetic_root, target)
    assert target.read_text() == "keep me"
    with pytest.raises(ValueError, match="^val_ratio:"):
        write_split("synthetic_market", synthetic_root, tmp_path / "new.json", val_ratio=0.99)
    assert not (tmp_path / "new.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]  # no temp files left


def test_val_dataset_through_image_data_manager(synthetic_root):
    dm = bridge.ImageDataManager(root=str(synthetic_root), sources="synthetic_market_val", height=64,
                                 width=32, batch_size_train=8, batch_size_test=16, workers=0, use_gpu=False)
    n_train = N_IDS // 2 - int(np.ceil(0.2 * (N_IDS // 2)))
    assert dm.num_train_pids == n_train
    train = dm.train_loader.dataset.train
    assert sorted({pid for _, pid, _, _ in train}) == list(range(n_train))
    query = dm.test_loader["synthetic_market_val"]["query"].dataset.data
    gallery = dm.test_loader["synthetic_market_val"]["gallery"].dataset.data
    assert query and gallery and {q[1] for q in query} <= {g[1] for g in gallery}
    paths = [item[0] for item in train + query + gallery]
    assert all("/bounding_box_train/" in p for p in paths) and len(set(paths)) == len(paths)
    batch = next(iter(dm.train_loader))
    assert tuple(batch["img"].shape[1:]) == (3, 64, 32)


def test_val_dataset_kwargs_and_other_bases(synthetic_root):
    default = bridge.init_image_dataset("synthetic_market_val", root=str(synthetic_root), verbose=False)
    wider = bridge.init_image_dataset("synthetic_market_val", root=str(synthetic_root), verbose=False,
                                      val_ratio=0.5, split_seed=3)
    assert default.num_train_pids == 8 and wider.num_train_pids == 5
    market = bridge.init_image_dataset("market1501_val", root=str(synthetic_root), verbose=False,
                                       market1501_500k=False, split_id=0, cuhk03_labeled=False)
    assert sorted(p for p, *_ in market.train) == sorted(p for p, *_ in default.train)


def test_registration_is_idempotent_and_guarded():
    importlib.reload(datasets)
    importlib.reload(datasets)
    names = bridge.available_datasets()
    for name in ("synthetic_market", "synthetic_market_val", "market1501_val", "msmt17_val", "cuhk03_val"):
        assert name in names
    register_val_split("market1501")  # same parameters again: a no-op
    with pytest.raises(KeyError, match="market1501_val"):
        register_val_split("market1501", val_ratio=0.3)
    with pytest.raises(ValueError, match="^base_name:"):
        register_val_split("no_such_dataset")
    cls = register_val_split("dukemtmcreid", name="duke_val_30", val_ratio=0.3)
    assert bridge.available_datasets().count("duke_val_30") == 1 and cls.default_val_ratio == 0.3


def test_reload_keeps_a_split_reconfigured_with_force(synthetic_root):
    register_val_split("synthetic_market", val_ratio=0.5, force=True)  # what a config with val_ratio does
    try:
        importlib.reload(datasets)
        ds = bridge.init_image_dataset("synthetic_market_val", root=str(synthetic_root), verbose=False)
        assert ds.val_ratio == 0.5 and ds.num_train_pids == 5
    finally:
        register_val_split("synthetic_market", force=True)
