"""``folder:PATH`` datasets: a user's crops in Market-1501 or one-folder-per-identity layout."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from torchreid_privacy import bridge
from torchreid_privacy.data.folder import (FolderLayoutError, read_folder, register_folder_dataset,
                                           register_folder_names)
from tiny_config import TINY


def _market_dir(tiny_root: str) -> Path:
    return Path(tiny_root) / "market1501"  # holds Market-1501-v15.09.15/, as the archive unpacks


def _identity_copy(tiny_root: str, dst: Path, ids: int = 0) -> Path:
    """The tiny set's train crops (of its first ``ids`` identities) as <pid>/<cam>_<rest>.jpg (camera as 'cam3')."""
    train = _market_dir(tiny_root) / "Market-1501-v15.09.15" / "bounding_box_train"
    keep = sorted({p.name.split("_")[0] for p in train.glob("*.jpg")})[:ids or None]
    for path in sorted(train.glob("*.jpg")):
        pid, cam, rest = path.name.split("_", 2)
        if pid not in keep:
            continue
        folder = dst / f"person{pid}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"cam{cam[1]}_{rest}")
    return dst


def test_market_layout_reads_as_torchreid_market1501(tiny_root):
    """Same items as torchreid's own Market-1501 loader on the same files."""
    ours = read_folder(_market_dir(tiny_root))
    theirs = bridge.init_image_dataset("market1501", root=tiny_root, mode="train", verbose=False)
    for split in ("train", "query", "gallery"):
        assert ours[split] == sorted(tuple(it[:3]) for it in getattr(theirs, split)), split  # torchreid globs unsorted


def test_identity_layout_split(tiny_root, tmp_path):
    root = _identity_copy(tiny_root, tmp_path / "ids")
    parts = read_folder(root, test_ratio=0.5, split_seed=0)
    train_paths = {p for p, _, _ in parts["train"]}
    test_pids = {Path(p).parent.name for p, _, _ in parts["query"] + parts["gallery"]}
    assert test_pids and not test_pids & {Path(p).parent.name for p in train_paths}  # identities disjoint
    n_ids = sum(1 for p in root.iterdir() if p.is_dir())
    assert sorted({pid for _, pid, _ in parts["train"]}) == list(range(n_ids - len(test_pids)))  # relabelled
    assert len(test_pids) == round(0.5 * n_ids)
    for path, pid, cam in parts["query"]:  # one query per identity per camera, matched on another camera
        assert sum(1 for q in parts["query"] if q[1] == pid and q[2] == cam) == 1
        assert any(g[1] == pid and g[2] != cam for g in parts["gallery"]), path
    assert all(Path(p).name.startswith(f"cam{c + 1}_") for p, _, c in parts["query"])  # cameras from names
    assert read_folder(root, 0.5, 0) == parts  # reproducible
    assert read_folder(root, 0.5, 1)["query"] != parts["query"]  # the seed draws another split


def test_unreadable_and_unparsable_files_are_counted_skips(tiny_root, tmp_path, caplog):
    root = _identity_copy(tiny_root, tmp_path / "ids")
    person = sorted(p for p in root.iterdir())[0]
    (person / "cam1_broken.jpg").write_bytes(b"not an image")
    (person / "noseparator.jpg").write_bytes(next(person.glob("cam*")).read_bytes())
    with caplog.at_level(logging.WARNING):
        parts = read_folder(root)
    paths = {Path(p).name for split in parts.values() for p, _, _ in split}
    assert "cam1_broken.jpg" not in paths and "noseparator.jpg" not in paths
    assert "skipped 1 unreadable image(s)" in caplog.text and "cam1_broken.jpg" in caplog.text
    assert "skipped 1 file(s) whose name is not <cam>_<anything>" in caplog.text


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such folder"),
    (lambda root: root.mkdir(), "is empty"),
    (lambda root: (root / "a").mkdir(parents=True) or (root / "a" / "nocam.jpg").write_bytes(b"x"),
     "no image with a parsable name"),
    (lambda root: (root / "bounding_box_train").mkdir(parents=True), "not query, bounding_box_test"),
])
def test_bad_folders_name_the_folder_and_layout(tmp_path, make, message):
    root = tmp_path / "crops"
    make(root)
    with pytest.raises(FolderLayoutError, match=message) as err:
        read_folder(root)
    assert str(root) in str(err.value) and "one subfolder per identity" in str(err.value)


def test_one_identity_one_camera_and_mixed_layouts_refused(tiny_root, tmp_path):
    one_id = _identity_copy(tiny_root, tmp_path / "one", ids=1)
    with pytest.raises(FolderLayoutError, match=f"folder:{one_id}: one identity only"):
        read_folder(one_id)
    one_cam = _identity_copy(tiny_root, tmp_path / "cam")
    for path in one_cam.rglob("*.jpg"):
        path.rename(path.with_name("cam1_" + path.name.split("_", 1)[1] + path.suffix))
    with pytest.raises(FolderLayoutError, match="one camera only"):
        read_folder(one_cam)
    mixed = tmp_path / "mixed"
    shutil.copytree(_market_dir(tiny_root) / "Market-1501-v15.09.15", mixed)
    _identity_copy(tiny_root, mixed, ids=2)
    with pytest.raises(FolderLayoutError, match=f"folder:{mixed}: mixed layouts.*identity folders"):
        read_folder(mixed)


def test_config_names_register_with_val_split(tiny_root, tiny_cfg, tmp_path, monkeypatch):
    """``data.sources ['folder:REL']`` (relative to the working directory): train, val split and test."""
    from torchreid_privacy.builder import build_datamanager

    _identity_copy(tiny_root, tmp_path / "crops")
    monkeypatch.chdir(tmp_path)
    dm, val_target, targets = build_datamanager(tiny_cfg("data.sources", "['folder:crops']"))
    assert targets == ["folder:crops"]  # quickstart's empty data.targets: the sources
    assert val_target == "folder:crops_val" and set(dm.test_loader) == {"folder:crops_val", "folder:crops"}
    assert dm.num_train_pids > 0
    with pytest.raises(FolderLayoutError, match="data.sources: folder:missing: no such folder"):
        register_folder_names(["folder:missing"])
    register_folder_dataset("folder:crops", tmp_path / "crops")  # the same registration again: a no-op


def test_train_on_a_folder_with_one_override(tiny_root, tmp_path):
    """The README's promise: the quickstart config trains on a folder of crops, no code."""
    from torchreid_privacy.cli import main
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    crops = _identity_copy(tiny_root, tmp_path / "crops")
    before = sorted(p.relative_to(crops) for p in crops.rglob("*"))
    rc = main(["train", "--config-file", packaged_config(QUICKSTART), f"data.sources", f"['folder:{crops}']",
               "data.save_dir", str(tmp_path / "run"), *TINY, "train.max_epoch", "1", "privacy.mode", "joint"])
    assert rc == 0
    results = (tmp_path / "run" / "results.json").read_text()
    assert f"folder:{crops}" in results
    # the run's tools find the folder dataset again from the checkpoint's config
    assert main(["visualize", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "views")]) == 0
    assert any((tmp_path / "views").glob("*.png"))
    assert main(["attack", "reid", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "attack"),
                 "--max-epoch", "1"]) == 0
    assert sorted(p.relative_to(crops) for p in crops.rglob("*")) == before  # the input folder is only read


def test_torchreid_python_habit_any_name(tiny_root, tmp_path):
    """``register_folder_dataset(name, path)``, then torchreid's own ImageDataManager by that name."""
    import torchreid_privacy.data as data

    crops = _identity_copy(tiny_root, tmp_path / "crops")
    data.register_folder_dataset("my_cams", crops)
    dm = bridge.ImageDataManager(root=str(tmp_path), sources="my_cams", height=64, width=32, workers=0,
                                 batch_size_train=8, batch_size_test=8, transforms=None)
    parts = read_folder(crops)
    assert dm.num_train_pids == len({pid for _, pid, _ in parts["train"]})
    assert len(dm.test_loader["my_cams"]["query"].dataset) == len(parts["query"])
