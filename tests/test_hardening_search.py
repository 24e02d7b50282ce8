"""A user's faults in ``search``, its feature cache and index, image reading and ``test --features``;
one test (or a parametrized few) each, each failed on the code before the fix.

The CLI tests use the session's small joint run and a handful of tiny images of their own.
"""
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main
from torchreid_privacy.search.feature_cache import FeatureCache, FeatureCacheError

QUERY = ["0001_c1s1_000001_00.jpg", "0002_c1s1_000002_00.jpg"]
GALLERY = ["0001_c2s1_000003_00.jpg", "0002_c2s1_000004_00.jpg", "0003_c2s1_000005_00.jpg"]


def _images(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _folders(tmp_path):
    return _images(tmp_path / "q", QUERY), _images(tmp_path / "g", GALLERY, seed=1)


def _snapshot(*folders):
    return {str(p): p.stat().st_mtime_ns for f in folders for p in sorted(Path(f).rglob("*"))}


def _search(run, query, gallery, out, *extra):
    return main(["search", "--checkpoint", str(run), "--query", str(query), "--gallery", str(gallery),
                 "--output", str(out), *map(str, extra)])


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("torchreid-privacy: error:") and "\n" not in err and "internal error" not in err, err
    return err


@pytest.fixture(scope="module")
def bomb_png():
    """A 1-bit 20000 x 10000 PNG of about 25 KB: PIL refuses it (DecompressionBombError, not an OSError)."""
    width, height = 20000, 10000

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * ((1 + width // 8) * height), 9)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    assert len(data) < 64_000
    return data


# ------------------------------------------------------------------ 1. symbolic links inside --output
@pytest.mark.parametrize("link", ["ranklists", "cache", "output itself"])
def test_search_never_writes_through_a_link_in_its_output(trained_run, tmp_path, capsys, link):
    query, gallery = _folders(tmp_path)
    before = _snapshot(query, gallery)
    out = tmp_path / "out"
    if link == "output itself":
        (tmp_path / "elsewhere").mkdir()
        out.symlink_to(tmp_path / "elsewhere")
    else:
        out.mkdir()
        (out / link).symlink_to(query)  # OUTPUT/ranklists -> the query folder
    assert _search(trained_run, query, gallery, out) == 1
    err = _one_line_error(capsys)
    assert "--output" in err and "symbolic link" in err
    assert _snapshot(query, gallery) == before
    assert not (tmp_path / "elsewhere").exists() or not any((tmp_path / "elsewhere").iterdir())


def test_cache_index_and_folder_writers_refuse_links(tmp_path):
    from torchreid_privacy.folders.process import process_folder

    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "features-abc-raw").symlink_to(victim)
    with pytest.raises(OSError, match="features-abc-raw is a symbolic link"):  # atomic.UnsafeOutput
        FeatureCache(tmp_path / "cache", "abc", "raw")
    # anonymize/recover/unseal: an --output that is a link is refused before anything is written
    src = _images(tmp_path / "in", QUERY)
    (tmp_path / "out").symlink_to(victim)
    with pytest.raises(OSError, match="--output: .* is a symbolic link"):
        process_folder(str(src), str(tmp_path / "out"), lambda x: x, height=64, width=32)
    assert not any(victim.iterdir())


# ------------------------------------------------------------------ 2. a second search into one --output
def test_a_used_output_is_refused_or_overwritten_never_mixed(trained_run, tmp_path, capsys):
    query, gallery = _folders(tmp_path)
    out = tmp_path / "out"
    assert _search(trained_run, query, gallery, out) == 0
    first = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "cache" not in p.parts}
    capsys.readouterr()
    (query / QUERY[0]).unlink()  # the second search has one query: its rank lists are one PNG
    assert _search(trained_run, query, gallery, out) == 1
    err = _one_line_error(capsys)
    assert "--output" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "cache" not in p.parts} == first
    assert _search(trained_run, query, gallery, out, "--overwrite") == 0
    assert sorted(p.name for p in (out / "ranklists").iterdir()) == [QUERY[1] + ".png"]
    assert "features: 0 image(s) embedded" in capsys.readouterr().out  # its cache/ was kept
    (out / "ranklists" / "notes.txt").write_text("mine")  # not a search's file: never removed
    assert _search(trained_run, query, gallery, out, "--overwrite") == 1
    assert "notes.txt" in _one_line_error(capsys) and (out / "ranklists" / "notes.txt").exists()


# ------------------------------------------------------------------ 3. names that are not UTF-8; all or none
def test_a_gallery_name_that_is_not_utf8_is_skipped_and_named(trained_run, tmp_path, capsys):
    import json

    query, gallery = _folders(tmp_path)
    with open(os.fsencode(str(gallery)) + b"/0004_c2\xff.jpg", "wb") as f:
        f.write((gallery / GALLERY[0]).read_bytes())
    out = tmp_path / "out"
    assert _search(trained_run, query, gallery, out) == 0
    printed = capsys.readouterr().out
    assert "--gallery: skipped 1 file(s) whose name is not valid UTF-8" in printed and "0004_c2\\xff.jpg" in printed
    doc = json.loads((out / "ranks.json").read_text())
    assert doc["skipped_not_utf8"] == {"query": [], "gallery": ["0004_c2\\xff.jpg"]}
    assert len((out / "ranks.csv").read_text().splitlines()) == 1 + 2 * 3
    assert len(list((out / "ranklists").iterdir())) == 2


def test_outputs_are_written_all_or_none(trained_run, tmp_path, capsys, monkeypatch):
    from torchreid_privacy.search import query as search_module

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    real = search_module.rank_list_image
    monkeypatch.setattr(search_module, "rank_list_image", failing)
    query, gallery = _folders(tmp_path)
    out = tmp_path / "out"
    assert _search(trained_run, query, gallery, out) == 1
    assert "No space left" in _one_line_error(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["cache"]  # no ranks.json, ranks.csv, ranklists, temporaries


# ------------------------------------------------------------------ 4. damaged feature-cache shards
def _cache_with_a_shard(tmp_path):
    c = FeatureCache(tmp_path, "f" * 16, "raw")
    c.put((bytes([i]) * 32, np.full(4, i, np.float32)) for i in range(3))
    c.save()
    return c.path


@pytest.mark.parametrize("damage, blamed, why", [
    ("empty keys", "00000.keys.npy", "is unreadable"),
    ("garbage keys", "00000.keys.npy", "is unreadable"),
    ("empty feats", "00000.feats.npy", "is unreadable"),
    ("NaN feats", "00000.feats.npy", "holds a NaN or infinite feature"),
])
def test_a_damaged_shard_is_an_error_naming_its_file_and_the_fix(tmp_path, damage, blamed, why):
    folder = _cache_with_a_shard(tmp_path)
    if damage == "empty keys":
        (folder / "00000.keys.npy").write_bytes(b"")
    elif damage == "garbage keys":
        (folder / "00000.keys.npy").write_bytes(b"not a numpy file at all")
    elif damage == "empty feats":
        (folder / "00000.feats.npy").write_bytes(b"")
    else:
        np.save(folder / "00000.feats.npy", np.full((3, 4), np.nan, np.float32))
    with pytest.raises(FeatureCacheError) as exc:
        FeatureCache(tmp_path, "f" * 16, "raw")
    msg = str(exc.value)
    assert f"{folder / blamed} {why}" in msg and "delete its shard (00000.keys.npy and 00000.feats.npy" in msg


def test_a_nan_shard_stops_search_naming_it_and_nan_is_never_cached(trained_run, tmp_path, capsys):
    query, gallery = _folders(tmp_path)
    cache = tmp_path / "cache"
    assert _search(trained_run, query, gallery, tmp_path / "out", "--cache", cache, "--no-png") == 0
    feats = next(cache.glob("features-*-raw/00000.feats.npy"))
    np.save(feats, np.full(np.load(feats).shape, np.nan, np.float32))
    capsys.readouterr()
    assert _search(trained_run, query, gallery, tmp_path / "out2", "--cache", cache, "--no-png") == 1
    err = _one_line_error(capsys)
    assert str(feats) in err and "NaN" in err and not (tmp_path / "out2" / "ranks.json").exists()
    c = FeatureCache(tmp_path / "other", "e" * 16, "raw")
    c.put([(b"\x01" * 32, np.full(4, np.nan, np.float32))])
    c.save()
    assert len(FeatureCache(tmp_path / "other", "e" * 16, "raw")) == 0


# ------------------------------------------------------------------ 5. index files that are not what they claim
def test_an_index_or_its_metadata_that_is_not_what_its_name_promises_is_refused(tmp_path):
    import json

    pytest.importorskip("faiss")
    from torchreid_privacy.search.gallery_index import normalized, open_or_build

    feats = normalized(np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32))
    names = [f"{i}.jpg" for i in range(len(feats))]
    open_or_build(tmp_path, names, feats, "flat")
    ivf = tmp_path / "ivf"
    open_or_build(ivf, names, feats, "ivf")
    (tmp_path / "flat.faiss").write_bytes((ivf / "ivf.faiss").read_bytes())  # approximate, named exact
    with pytest.raises(ValueError, match=r"flat\.faiss holds a faiss IndexIVFFlat .* not the flat index"):
        open_or_build(tmp_path, names, feats, "flat")
    (tmp_path / "flat.faiss").unlink()
    assert not open_or_build(tmp_path, names, feats, "flat").reused  # rebuilt, as a missing file is
    for meta in ([1, 2], None, {"format": 1}):
        (tmp_path / "flat.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=r"--index: .*flat\.json .*not the description of a saved flat index"):
            open_or_build(tmp_path, names, feats, "flat")


# ------------------------------------------------------------------ 6. decompression bombs
def test_a_decompression_bomb_is_an_unreadable_image_everywhere(trained_run, tmp_path, capsys, caplog, bomb_png):
    from torchreid_privacy.data.folder import read_folder
    from torchreid_privacy.folders.process import process_folder

    # a folder dataset (Market-1501 layout)
    root = tmp_path / "market"
    _images(root / "bounding_box_train", ["0001_c1_a.jpg", "0001_c2_b.jpg", "0002_c1_c.jpg", "0002_c2_d.jpg"])
    _images(root / "query", ["0003_c1_e.jpg"])
    _images(root / "bounding_box_test", ["0003_c2_f.jpg"])
    (root / "bounding_box_test" / "0004_c1_bomb.png").write_bytes(bomb_png)
    with caplog.at_level(logging.WARNING):
        parts = read_folder(root)
    assert len(parts["gallery"]) == 1 and "skipped 1 unreadable image(s)" in caplog.text
    assert "0004_c1_bomb.png" in caplog.text
    # anonymize --input FOLDER: the other images are still written
    src = _images(tmp_path / "in", QUERY)
    (src / "bomb.png").write_bytes(bomb_png)
    report = process_folder(str(src), str(tmp_path / "anon"), lambda x: x, height=64, width=32)
    assert report.written == 2 and report.skipped_unreadable == [str(src / "bomb.png")]
    # a search gallery
    query, gallery = _folders(tmp_path)
    (gallery / "bomb.png").write_bytes(bomb_png)
    assert _search(trained_run, query, gallery, tmp_path / "out", "--no-png") == 0
    assert "--gallery: skipped 1 unreadable image(s): bomb.png" in capsys.readouterr().out


# ------------------------------------------------------------------ 7. test --features FILE
def test_test_features_naming_a_file_is_refused_before_the_evaluation(trained_run, tmp_path, capsys):
    afile = tmp_path / "features.npy"
    afile.write_bytes(b"a file")
    out = tmp_path / "test-out"
    assert main(["test", "--checkpoint", trained_run, "--output", str(out), "--features", str(afile)]) == 1
    err = _one_line_error(capsys)
    assert "--features" in err and "not a folder" in err
    assert not out.exists()
