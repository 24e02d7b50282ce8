"""The hard synthetic style: deterministic, the plain layout, loaded by torchreid, measurably harder."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy import bridge
from torchreid_privacy.cli import main
from torchreid_privacy.data import (
    ensure_synthetic_market,
    make_synthetic_market,
    read_manifest,
    synthetic,
    synthetic_hard,
)
from torchreid_privacy.data.synthetic import MANIFEST, MARKET_SUBDIR

SMALL = dict(num_ids=12, train_images_per_id=4, gallery_per_id=3, num_junk=4, extra_test_ids=0)
STATS_IDS = 60  # enough test identities for stable retrieval statistics; both styles in ~4 s
NAME = re.compile(r"^(-1|\d{4})_c([1-6])s\d+_\d{6}_\d{2}\.jpg$")


def _files(dataset_dir: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(dataset_dir)): p.read_bytes()
            for p in sorted((dataset_dir / MARKET_SUBDIR).rglob("*.jpg"))}


@pytest.fixture(scope="module")
def both_styles(tmp_path_factory) -> Dict[str, Path]:
    """Plain and hard sets with the same parameters under one root."""
    root = tmp_path_factory.mktemp("styles")
    return {style: make_synthetic_market(root, num_ids=STATS_IDS, style=style, extra_test_ids=0) for style in ("plain", "hard")}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _files(make_synthetic_market(tmp_path / "a", seed=3, style="hard", **SMALL))
    b = _files(make_synthetic_market(tmp_path / "b", seed=3, style="hard", **SMALL))
    c = _files(make_synthetic_market(tmp_path / "c", seed=4, style="hard", **SMALL))
    assert a and a == b
    assert any(a[k] != c.get(k) for k in a)


def test_layout_names_and_image_size_match_the_plain_set(tmp_path):
    hard = make_synthetic_market(tmp_path, style="hard", **SMALL)
    plain = make_synthetic_market(tmp_path, **SMALL)
    assert hard == tmp_path.resolve() / "market1501_hard"
    manifest = read_manifest(hard)
    assert manifest["style"] == "hard" and manifest["counts"] == read_manifest(plain)["counts"]
    hard_files = _files(hard)
    assert sorted(hard_files) == sorted(_files(plain))  # same folders and file names
    assert all(NAME.match(Path(k).name) for k in hard_files)
    for path in (hard / MARKET_SUBDIR).rglob("*.jpg"):
        with Image.open(path) as img:
            assert (img.format, img.size, img.mode) == ("JPEG", (64, 128), "RGB")


def test_torchreid_loads_hard_and_its_val_split(tmp_path):
    make_synthetic_market(tmp_path, style="hard", **SMALL)
    ds = bridge.init_image_dataset("synthetic_market_hard", root=str(tmp_path), verbose=False)
    n_train_ids = SMALL["num_ids"] // 2
    assert ds.num_train_pids == n_train_ids and len(ds.train) == n_train_ids * SMALL["train_images_per_id"]
    assert len(ds.query) == (SMALL["num_ids"] - n_train_ids) * 2
    items = ds.train + ds.query + ds.gallery
    assert all(Path(p).parts[-4] == "market1501_hard" for p, *_ in items)
    val = bridge.init_image_dataset("synthetic_market_hard_val", root=str(tmp_path), verbose=False)
    assert len(val.query) > 0 and len(val.train) > 0
    # carved out of the hard training set only
    assert {p for p, *_ in val.train + val.query + val.gallery} == {p for p, *_ in ds.train}
    assert not (tmp_path / "market1501").exists()


def test_hard_dataset_is_generated_under_an_empty_root(tmp_path, monkeypatch):
    calls = []
    real = synthetic.make_synthetic_market

    def spy(root, style="plain"):
        calls.append(style)
        return real(root, style=style, **SMALL)  # the small set keeps the test fast

    monkeypatch.setattr(synthetic, "make_synthetic_market", spy)
    ds = bridge.init_image_dataset("synthetic_market_hard", root=str(tmp_path), verbose=False)
    assert calls == ["hard"] and len(ds.train) > 0
    assert read_manifest(tmp_path / "market1501_hard")["style"] == "hard"
    assert not (tmp_path / "market1501").exists()


@pytest.mark.parametrize("style", ["fancy", "Hard", "", None])
def test_bad_style_names_itself(tmp_path, style):
    with pytest.raises(ValueError, match="^style: .*plain, hard"):
        make_synthetic_market(tmp_path, style=style, **SMALL)
    with pytest.raises(ValueError, match="^style:"):
        ensure_synthetic_market(tmp_path, style=style)
    assert list(tmp_path.iterdir()) == []


def test_plain_and_hard_coexist_under_one_root(tmp_path):
    plain = make_synthetic_market(tmp_path, **SMALL)
    hard = make_synthetic_market(tmp_path, style="hard", **SMALL)
    assert (plain.name, hard.name) == ("market1501", "market1501_hard")
    plain_files, hard_files = _files(plain), _files(hard)
    assert all(plain_files[k] != hard_files[k] for k in plain_files)
    assert make_synthetic_market(tmp_path, **SMALL) == plain
    assert ensure_synthetic_market(tmp_path, style="hard") == hard
    assert _files(plain) == plain_files and _files(hard) == hard_files
    a = bridge.init_image_dataset("synthetic_market", root=str(tmp_path), verbose=False)
    b = bridge.init_image_dataset("synthetic_market_hard", root=str(tmp_path), verbose=False)
    assert not {p for p, *_ in a.train} & {p for p, *_ in b.train}


def test_manifest_without_style_is_plain_and_never_read_as_hard(tmp_path):
    plain = make_synthetic_market(tmp_path, **SMALL)
    manifest = json.loads((plain / MANIFEST).read_text(encoding="utf-8"))
    del manifest["style"]  # as written before the hard style existed
    (plain / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    assert make_synthetic_market(tmp_path, **SMALL) == plain
    plain.rename(tmp_path / "market1501_hard")
    with pytest.raises(FileExistsError, match="market1501_hard.*style"):
        make_synthetic_market(tmp_path, style="hard", **SMALL)
    with pytest.raises(FileExistsError, match="style"):
        bridge.init_image_dataset("synthetic_market_hard", root=str(tmp_path), verbose=False)


def test_foreign_hard_folder_is_never_overwritten(tmp_path):
    foreign = tmp_path / "market1501_hard" / MARKET_SUBDIR / "query" / "0001_c1s1_000001_00.jpg"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"real data")
    with pytest.raises(FileExistsError, match=re.escape(str(tmp_path / "market1501_hard"))):
        make_synthetic_market(tmp_path, style="hard", **SMALL)
    with pytest.raises(FileExistsError, match="synthetic.json"):
        bridge.init_image_dataset("synthetic_market_hard", root=str(tmp_path), verbose=False)
    assert foreign.read_bytes() == b"real data"




def test_make_data_cli_writes_the_hard_style(tmp_path, capsys):
    assert main(["make-data", "--root", str(tmp_path), "--ids", "4", "--style", "hard"]) == 0
    target = tmp_path.resolve() / "market1501_hard"
    assert str(target) in capsys.readouterr().out and read_manifest(target)["style"] == "hard"
    assert not (tmp_path / "market1501").exists()


def _grey(paths: List[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32) for p in paths])


def test_hard_crops_are_busier(both_styles):
    """Textured clothing and clutter: more gradient energy and far more varied crop borders."""
    stats = {}
    for style, path in both_styles.items():
        imgs = _grey(sorted(str(p) for p in (path / MARKET_SUBDIR / "bounding_box_train").glob("*.jpg")))
        half = imgs.reshape(len(imgs), 64, 2, 32, 2).mean((2, 4))  # half resolution: sensor noise does not count
        gradient = (np.abs(np.diff(half, axis=1)).mean() + np.abs(np.diff(half, axis=2)).mean()) / 2
        border = np.concatenate([imgs[:, :, :8], imgs[:, :, -8:]], axis=2).std(axis=(1, 2)).mean()
        stats[style] = gradient, border
    assert stats["hard"][0] > 1.15 * stats["plain"][0], stats
    assert stats["hard"][1] > 1.5 * stats["plain"][1], stats


def _band_colours(items) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean colour of 4 horizontal bands of the image centre (as in test_synthetic_data)."""
    feats = [np.asarray(Image.open(p), dtype=np.float32)[:, 16:48].reshape(4, 32, 32, 3).mean((1, 2)).ravel()
             for p, _, _, _ in items]
    return np.stack(feats), np.array([i[1] for i in items]), np.array([i[2] for i in items])


def _band_retrieval(dataset: str, root: Path) -> Tuple[float, float, float]:
    """Rank-1 and mAP of the band colours on ``dataset``'s test split, and a random ranking's mAP."""
    ds = bridge.init_image_dataset(dataset, root=str(root), verbose=False)
    qf, qp, qc = _band_colours(ds.query)
    gf, gp, gc = _band_colours(ds.gallery)
    cmc, mean_ap = bridge.torchreid_evaluate_rank(((qf[:, None] - gf[None]) ** 2).sum(-1), qp, gp, qc, gc)
    chance = np.mean([bridge.torchreid_evaluate_rank(np.random.default_rng(k).random((len(qp), len(gp))),
                                                     qp, gp, qc, gc)[1] for k in range(5)])
    return float(cmc[0]), float(mean_ap), float(chance)


def test_identity_is_harder_to_tell_but_still_there(both_styles):
    """Colour statistics identify far less often than on the plain set, yet better than guessing."""
    root = both_styles["plain"].parent
    plain_rank1, _, _ = _band_retrieval("synthetic_market", root)
    hard_rank1, hard_map, chance_map = _band_retrieval("synthetic_market_hard", root)
    assert hard_rank1 < 0.5 * plain_rank1, (hard_rank1, plain_rank1)
    assert hard_map > 2 * chance_map, (hard_map, chance_map)
