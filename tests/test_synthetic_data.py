"""The synthetic Market-1501: deterministic, Market layout, read by torchreid, learnable."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy import bridge
from torchreid_privacy.data import make_synthetic_market, read_manifest, synthetic, synthetic_hard, synthetic_people
from torchreid_privacy.data.synthetic import MARKET_SUBDIR

SMALL = dict(num_ids=8, train_images_per_id=3, gallery_per_id=3, num_junk=4, extra_test_ids=0)
NAME = re.compile(r"^(-1|\d{4})_c([1-6])s\d+_\d{6}_\d{2}\.jpg$")
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")


def _files(dataset_dir: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(dataset_dir)): p.read_bytes()
            for p in sorted((dataset_dir / MARKET_SUBDIR).rglob("*.jpg"))}


def _names(dataset_dir: Path, folder: str) -> List[str]:
    return sorted(p.name for p in (dataset_dir / MARKET_SUBDIR / folder).glob("*.jpg"))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> Path:
    """The default-size set, generated once (about 5 s)."""
    return make_synthetic_market(tmp_path_factory.mktemp("default"))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _files(make_synthetic_market(tmp_path / "a", seed=3, **SMALL))
    b = _files(make_synthetic_market(tmp_path / "b", seed=3, **SMALL))
    c = _files(make_synthetic_market(tmp_path / "c", seed=4, **SMALL))
    assert a and a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)


def test_layout_names_and_image_size(default_set):
    assert default_set.name == "market1501"
    manifest = read_manifest(default_set)
    for folder in FOLDERS:
        names = _names(default_set, folder)
        assert len(names) == manifest["counts"][folder]
        bad = [n for n in names if not NAME.match(n)]
        assert not bad, bad[:3]
    assert len(set(_names(default_set, "bounding_box_test")) & set(_names(default_set, "query"))) == 0
    img = Image.open(next((default_set / MARKET_SUBDIR / "query").glob("*.jpg")))
    assert (img.format, img.size, img.mode) == ("JPEG", (64, 128), "RGB")


def test_junk_pids_only_in_gallery(default_set):
    def pids(folder: str) -> set:
        return {NAME.match(n).group(1) for n in _names(default_set, folder)}

    assert {"-1", "0000"} <= pids("bounding_box_test")
    for folder in ("bounding_box_train", "query"):
        assert not {"-1", "0000"} & pids(folder)
    # train and test identities are disjoint, every query identity is in the gallery
    assert not pids("bounding_box_train") & pids("query")
    assert pids("query") <= pids("bounding_box_test")


def test_torchreid_market1501_loader_reads_it(tmp_path):
    make_synthetic_market(tmp_path, **SMALL)
    ds = bridge.init_image_dataset("market1501", root=str(tmp_path), verbose=False)
    n_train_ids = SMALL["num_ids"] // 2
    n_test_ids = SMALL["num_ids"] - n_train_ids
    assert ds.num_train_pids == n_train_ids
    assert sorted({pid for _, pid, _, _ in ds.train}) == list(range(n_train_ids))
    assert len(ds.train) == n_train_ids * SMALL["train_images_per_id"]
    assert len(ds.query) == n_test_ids * 2  # query_per_id default
    # pid -1 junk is ignored by the loader, 0000 distractors are kept
    assert len(ds.gallery) == n_test_ids * SMALL["gallery_per_id"] + SMALL["num_junk"] // 2
    assert {camid for _, _, camid, _ in ds.gallery} <= set(range(6))


def test_extra_test_ids_add_queries_and_change_no_other_file(tmp_path):
    """Test-only identities come from their own stream: the set without them is a byte-identical
    subset (so the training identities and their images never change), and each adds its
    queries and gallery images to the test split only."""
    base = _files(make_synthetic_market(tmp_path / "a", **SMALL))
    grown_dir = make_synthetic_market(tmp_path / "b", **{**SMALL, "extra_test_ids": 5})
    grown = _files(grown_dir)
    assert {k: grown[k] for k in base} == base
    added = sorted(set(grown) - set(base))
    assert len(added) == 5 * (2 + SMALL["gallery_per_id"])
    assert not [k for k in added if "bounding_box_train" in str(k)]
    ds = bridge.init_image_dataset("market1501", root=str(tmp_path / "b"), verbose=False)
    n_test_ids = SMALL["num_ids"] - SMALL["num_ids"] // 2 + 5
    assert len(ds.query) == n_test_ids * 2 and ds.num_train_pids == SMALL["num_ids"] // 2
    assert read_manifest(grown_dir)["extra_test_ids"] == 5
    with pytest.raises(FileExistsError, match="extra_test_ids"):
        make_synthetic_market(tmp_path / "b", **SMALL)


def test_default_set_has_500_queries(default_set):
    """The embedded set: 500 queries (one rank-1 point is 0.2), 50 training identities."""
    manifest = read_manifest(default_set)
    assert manifest["counts"]["query"] == 500
    assert len({NAME.match(n).group(1) for n in _names(default_set, "bounding_box_train")}) == 50


def test_sets_written_before_test_only_ids_read_as_none(tmp_path):
    path = make_synthetic_market(tmp_path, **SMALL)
    manifest = read_manifest(path)
    del manifest["extra_test_ids"]
    (path / "synthetic.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert make_synthetic_market(tmp_path, **SMALL) == path


def test_synthetic_market_dataset_generates_and_matches_market1501(default_set):
    root = default_set.parent
    ours = bridge.init_image_dataset("synthetic_market", root=str(root), verbose=False)
    market = bridge.init_image_dataset("market1501", root=str(root), verbose=False)
    for split in ("query", "gallery"):
        assert sorted(getattr(ours, split)) == sorted(getattr(market, split))
    assert sorted((p, c) for p, _, c, _ in ours.train) == sorted((p, c) for p, _, c, _ in market.train)
    assert sorted({pid for _, pid, _, _ in ours.train}) == list(range(ours.num_train_pids))


def test_synthetic_market_generates_under_empty_root(tmp_path, monkeypatch):
    calls = []
    real = synthetic.make_synthetic_market

    def spy(root):
        calls.append(root)
        return real(root, **SMALL)  # the small set keeps the test fast

    monkeypatch.setattr(synthetic, "make_synthetic_market", spy)
    ds = bridge.init_image_dataset("synthetic_market", root=str(tmp_path), verbose=False)
    assert len(calls) == 1 and len(ds.train) > 0 and (tmp_path / "market1501" / "synthetic.json").is_file()


def test_existing_complete_set_is_returned_unchanged(tmp_path):
    path = make_synthetic_market(tmp_path, **SMALL)
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    assert make_synthetic_market(tmp_path, **SMALL) == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == before
    with pytest.raises(FileExistsError, match=re.escape(str(path)) + ".*num_ids"):
        make_synthetic_market(tmp_path, **{**SMALL, "num_ids": 10})


def test_foreign_folder_is_never_overwritten(tmp_path):
    foreign = tmp_path / "market1501"
    (foreign / MARKET_SUBDIR / "query").mkdir(parents=True)
    (foreign / MARKET_SUBDIR / "query" / "0001_c1s1_000001_00.jpg").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match=re.escape(str(foreign))):
        make_synthetic_market(tmp_path, **SMALL)
    with pytest.raises(FileExistsError, match="synthetic.json"):
        bridge.init_image_dataset("synthetic_market", root=str(tmp_path), verbose=False)
    assert (foreign / MARKET_SUBDIR / "query" / "0001_c1s1_000001_00.jpg").read_bytes() == b"real data"


@pytest.mark.parametrize("style, module, render", [("plain", synthetic_people, "_render"),
                                                    ("hard", synthetic_hard, "render")])
def test_killed_generation_leaves_no_half_set(tmp_path, monkeypatch, style, module, render):
    real = getattr(module, render)
    count = {"n": 0}

    def dies(*args):
        count["n"] += 1
        if count["n"] > 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(module, render, dies)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_market(tmp_path, style=style, **SMALL)
    assert count["n"] == 6 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, value", [
    ("num_ids", 3), ("num_ids", 1501), ("num_ids", 10.0), ("extra_test_ids", -1), ("extra_test_ids", 1493), ("seed", -1), ("num_cameras", 7),
    ("cameras_per_id", 1), ("train_images_per_id", 1), ("query_per_id", 0), ("query_per_id", 4),
    ("gallery_per_id", 1), ("num_junk", -2),
])
def test_bad_parameters_name_themselves(tmp_path, name, value):
    with pytest.raises(ValueError, match=f"^{name}:"):
        make_synthetic_market(tmp_path, **{**SMALL, name: value})
    assert not (tmp_path / "market1501").exists()


def _band_colours(items) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean colour of 4 horizontal bands of the image centre: a crude appearance feature."""
    feats = [np.asarray(Image.open(p), dtype=np.float32)[:, 16:48].reshape(4, 32, 32, 3).mean((1, 2)).ravel()
             for p, _, _, _ in items]
    return np.stack(feats), np.array([i[1] for i in items]), np.array([i[2] for i in items])


def test_identity_is_learnable_but_not_trivial(default_set):
    ds = bridge.init_image_dataset("market1501", root=str(default_set.parent), verbose=False)
    qf, qp, qc = _band_colours(ds.query)
    gf, gp, gc = _band_colours(ds.gallery)
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    cmc, _ = bridge.torchreid_evaluate_rank(dist, qp, gp, qc, gc)
    chance = 1.0 / len(set(gp.tolist()))
    # colours carry identity (far above chance); cameras add enough nuisance that they do not solve it
    assert 8 * chance < cmc[0] < 0.8, cmc[0]
