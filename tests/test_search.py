"""``search``: same numbers as ``test``'s O->P, a feature cache that really skips work, safe folders."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main
from torchreid_privacy.data.synthetic import DATASET_DIR, MARKET_SUBDIR
from torchreid_privacy.visualization.drawing import HIT, MISS, RankRow, rank_list_image
from torchreid_privacy.search.feature_cache import FeatureCache
from torchreid_privacy.metrics.ranking import top_k
from torchreid_privacy.search.query import parse_labels


def _split_dirs(tiny_root):
    base = Path(tiny_root) / DATASET_DIR / MARKET_SUBDIR
    return base / "query", base / "bounding_box_test"


def _snapshot(*folders):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in sorted(Path(f).rglob("*"))}


def _images(folder, names, sizes=((32, 64),), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        w, h = sizes[i % len(sizes)]
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _search(*args):
    return main(["search", *map(str, args)])


@pytest.fixture(scope="module")
def test_scores(trained_run):
    """The four-setting evaluation ``test`` reports for the run (the reference)."""
    from torchreid_privacy.trained_run import TrainedRun

    return TrainedRun.open(trained_run).evaluate("synthetic_market")["rank"]


@pytest.mark.parametrize("flag,setting", [("--protect-gallery", "O->P"), (None, "O->O")])
def test_search_equals_test_on_the_embedded_split(trained_run, tiny_root, test_scores, tmp_path, capsys,
                                                  flag, setting):
    query, gallery = _split_dirs(tiny_root)
    before = _snapshot(query, gallery)
    out = tmp_path / "out"
    assert _search("--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output", out,
                   *([flag] if flag else [])) == 0
    doc = json.loads((out / "ranks.json").read_text())
    assert doc["setting"] == setting and doc["labels"] == "market1501"
    for metric in ("R1", "R5", "R10", "mAP", "mINP"):
        assert doc["metrics"][metric] == pytest.approx(test_scores[setting][metric], abs=1e-6), metric
    printed = capsys.readouterr().out
    assert f"{setting}: rank-1 {100 * test_scores[setting]['R1']:.1f}%" in printed
    # torchreid's gallery: junk (pid -1) left out, distractors (pid 0) kept
    junk = [p.name for p in gallery.iterdir() if p.name.startswith("-1_")]
    assert junk and "3 junk image(s)" in printed
    listed = {r["gallery"] for q in doc["queries"] for r in q["ranks"]}
    assert not listed & set(junk)
    # the protocol: no gallery image of the query's identity and camera is listed
    for q in doc["queries"]:
        assert len(q["ranks"]) == 10 and all(not (r["pid"] == q["pid"] and r["camid"] == q["camid"])
                                             for r in q["ranks"])
        assert [r["distance"] for r in q["ranks"]] == sorted(r["distance"] for r in q["ranks"])
    pngs = sorted(p.name for p in (out / "ranklists").iterdir())
    assert pngs == sorted(f"{p.name}.png" for p in query.iterdir())
    rows = (out / "ranks.csv").read_text().splitlines()
    assert rows[0] == "query,rank,gallery,distance,query_pid,gallery_pid,hit" and len(rows) == 1 + 10 * len(pngs)
    assert _snapshot(query, gallery) == before  # nothing written into the inputs


def test_rank_list_png_layout_and_hit_colours(trained_run, tiny_root, tmp_path):
    query, gallery = _split_dirs(tiny_root)
    out = tmp_path / "out"
    assert _search("--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output", out,
                   "--topk", "5", "--no-cache") == 0
    doc = json.loads((out / "ranks.json").read_text())
    first = doc["queries"][0]
    with Image.open(out / "ranklists" / f"{first['query']}.png") as im:
        arr = np.asarray(im.convert("RGB"))
    hits = [r["hit"] for r in first["ranks"]]
    # one strip: query + 5 results at 128 px high, wider than tall; green frames iff hits
    assert arr.shape[0] < 260 and arr.shape[1] > 5 * 64
    assert (np.all(arr == HIT, axis=-1).sum() > 0) == any(hits)
    assert (np.all(arr == MISS, axis=-1).sum() > 0) == (not all(hits))
    assert not (out / "cache").exists()


def test_rank_list_image_frames_and_layout():
    q = np.zeros((64, 32, 3), np.uint8)
    g = [np.full((64, 32, 3), 90, np.uint8)] * 3
    labelled = np.asarray(rank_list_image([RankRow(q, g, [0.1, 0.2, 0.3], [True, False, True])]))
    unlabelled = np.asarray(rank_list_image([RankRow(q, g, [0.1, 0.2, 0.3])]))
    green, red = np.all(labelled == HIT, axis=-1).sum(), np.all(labelled == MISS, axis=-1).sum()
    assert green == pytest.approx(2 * red, rel=0.01) and red > 0
    assert not np.all(unlabelled == HIT, axis=-1).any() and not np.all(unlabelled == MISS, axis=-1).any()
    four = rank_list_image([RankRow(q, g, [0.1, 0.2, 0.3], label=s) for s in ("O->O", "O->P", "P->O", "P->P")])
    assert four.height > 4 * 128 and four.width > labelled.shape[1]  # a row per setting, plus a label column


def test_feature_cache_skips_work_and_follows_content(trained_run, tmp_path, capsys):
    names = [f"{i:04d}_c{1 + i % 3}s1_000100_00.jpg" for i in range(1, 7)]
    query = _images(tmp_path / "q", names[:2])
    gallery = _images(tmp_path / "g", names, seed=1)
    out, cache = tmp_path / "out", tmp_path / "shared-cache"
    args = ("--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--cache", cache, "--no-png")
    assert _search(*args, "--output", out, "--protect-gallery") == 0
    assert "features: 8 image(s) embedded" in capsys.readouterr().out
    first = json.loads((out / "ranks.json").read_text())["queries"]
    assert _search(*args, "--output", tmp_path / "out2", "--protect-gallery") == 0
    printed = capsys.readouterr().out
    assert "features: 0 image(s) embedded" in printed and "8 from the cache" in printed
    second = json.loads((tmp_path / "out2" / "ranks.json").read_text())
    assert second["queries"] == first and second["timings"]["cached"] == 8 and second["timings"]["computed"] == 0
    # an edited file is a miss; a raw (unprotected) gallery is another cache entry
    _images(gallery, [names[0]], seed=7)
    assert _search(*args, "--output", tmp_path / "out3", "--protect-gallery") == 0
    assert json.loads((tmp_path / "out3" / "ranks.json").read_text())["timings"]["computed"] == 1
    assert _search(*args, "--output", tmp_path / "out4") == 0
    assert json.loads((tmp_path / "out4" / "ranks.json").read_text())["timings"]["computed"] == 6


def test_feature_cache_round_trips_any_digest_appends_shards_and_names_a_damaged_one(tmp_path):
    from torchreid_privacy.search.feature_cache import FeatureCacheError

    digests = [bytes(32), b"\x01" * 31 + b"\x00", b"\xff" * 32]  # numpy "S" dtype would strip trailing zeros
    c = FeatureCache(tmp_path, "f" * 16, "raw")
    c.put((d, np.full(4, i, np.float32)) for i, d in enumerate(digests))
    c.save()
    again = FeatureCache(tmp_path, "f" * 16, "raw")
    assert [None if f is None else float(f[0]) for f in again.get(digests)] == [0.0, 1.0, 2.0]
    assert again.get([b"\x02" * 32]) == [None]
    # new images are appended as a shard of their own: the first shard is never rewritten
    first = (c.path / "00000.feats.npy").stat().st_mtime_ns
    again.put([(b"\x02" * 32, np.full(4, 9, np.float32)), (digests[0], np.full(4, 7, np.float32))])
    again.save()
    third = FeatureCache(tmp_path, "f" * 16, "raw")
    assert third.shards == 2 and len(third) == 4 and (c.path / "00000.feats.npy").stat().st_mtime_ns == first
    assert float(third.get([b"\x02" * 32])[0][0]) == 9.0 and float(third.get([digests[0]])[0][0]) == 0.0
    with pytest.raises(FeatureCacheError, match="a 5-d feature .* are 4-d"):
        third.put([(b"\x03" * 32, np.zeros(5, np.float32))])
    # damage is named, not mixed in: a missing features file, another dimension, a broken file
    (c.path / "00001.feats.npy").unlink()
    with pytest.raises(FeatureCacheError, match=r"00001\.feats\.npy is missing"):
        FeatureCache(tmp_path, "f" * 16, "raw")
    np.save(c.path / "00001.feats.npy", np.zeros((3, 4), np.float32))  # the shard has 1 key
    with pytest.raises(FeatureCacheError, match=r"00001\.feats\.npy holds float32 \(3, 4\), not \(1, dim\)"):
        FeatureCache(tmp_path, "f" * 16, "raw")
    np.save(c.path / "00001.feats.npy", np.zeros((1, 8), np.float32))
    with pytest.raises(FeatureCacheError, match=r"00001\.feats\.npy has 8-d features, the cache's others 4-d"):
        FeatureCache(tmp_path, "f" * 16, "raw")
    (c.path / "00001.feats.npy").write_bytes(b"not a numpy file")
    with pytest.raises(FeatureCacheError, match=r"00001\.feats\.npy is unreadable"):
        FeatureCache(tmp_path, "f" * 16, "raw")


def test_unlabelled_folders_mixed_sizes_unreadable_and_clamped_topk(trained_run, tmp_path, capsys):
    query = _images(tmp_path / "q", ["a.jpg", "b.png"], sizes=((20, 50), (300, 120)))
    gallery = _images(tmp_path / "g", ["x.jpg", "y.png", "sub/z.bmp"], sizes=((64, 128), (10, 10), (33, 99)))
    (gallery / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (query / "empty.png").write_bytes(b"")
    before = _snapshot(query, gallery)
    out = tmp_path / "out"
    assert _search("--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output", out,
                   "--gallery-protected", "--topk", "50") == 0
    printed = capsys.readouterr().out
    assert "--gallery: skipped 1 unreadable image(s): broken.jpg" in printed
    assert "--query: skipped 1 unreadable image(s): empty.png" in printed
    assert "--topk: 50 is more than the gallery's 3 image(s); showing 3" in printed
    assert "identity labels: off" in printed and "O->P: rank-1" not in printed
    doc = json.loads((out / "ranks.json").read_text())
    assert doc["setting"] == "O->P" and doc["metrics"] is None and doc["topk"] == 3
    assert doc["skipped"] == {"query": ["empty.png"], "gallery": ["broken.jpg"]}
    assert [len(q["ranks"]) for q in doc["queries"]] == [3, 3]
    assert {r["gallery"] for r in doc["queries"][0]["ranks"]} == {"x.jpg", "y.png", "sub/z.bmp"}
    assert sorted(p.name for p in (out / "ranklists").iterdir()) == ["a.jpg.png", "b.png.png"]
    assert _snapshot(query, gallery) == before


def _error(capsys, *args):
    code = _search(*args)
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("torchreid-privacy: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("empty", ["query", "gallery"])
def test_empty_folder_is_refused(trained_run, tmp_path, capsys, empty):
    folders = {"query": _images(tmp_path / "q", ["a.jpg"]), "gallery": _images(tmp_path / "g", ["b.jpg"])}
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("not an image")
    folders[empty] = tmp_path / "e"
    err = _error(capsys, "--checkpoint", trained_run, "--query", folders["query"], "--gallery", folders["gallery"],
                 "--output", tmp_path / "out")
    assert f"--{empty}: no images in" in err


def test_only_unreadable_images_is_refused(trained_run, tmp_path, capsys):
    query = _images(tmp_path / "q", ["a.jpg"])
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "bad.jpg").write_bytes(b"garbage")
    err = _error(capsys, "--checkpoint", trained_run, "--query", query, "--gallery", tmp_path / "g",
                 "--output", tmp_path / "out")
    assert "--gallery: none of the images" in err and "bad.jpg" in err


def test_both_gallery_flags_are_refused(trained_run, tmp_path, capsys):
    query, gallery = _images(tmp_path / "q", ["a.jpg"]), _images(tmp_path / "g", ["b.jpg"])
    err = _error(capsys, "--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output",
                 tmp_path / "out", "--gallery-protected", "--protect-gallery")
    assert "--gallery-protected" in err and "--protect-gallery" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["query", "query/sub", "gallery/sub", "parent"])
def test_output_in_or_around_an_input_is_refused(trained_run, tmp_path, capsys, where):
    root = tmp_path / "data"
    query, gallery = _images(root / "query", ["a.jpg"]), _images(root / "gallery", ["b.jpg"])
    before = _snapshot(root)
    out = root if where == "parent" else root / where
    err = _error(capsys, "--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output", out)
    assert "--output" in err and ("inside" in err or "contains" in err)
    assert _snapshot(root) == before


def test_cache_inside_an_input_and_bad_numbers_are_refused(trained_run, tmp_path, capsys):
    query, gallery = _images(tmp_path / "q", ["a.jpg"]), _images(tmp_path / "g", ["b.jpg"])
    base = ("--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output", tmp_path / "out")
    assert "--cache" in _error(capsys, *base, "--cache", gallery / "c")
    assert "--topk: expected >= 1" in _error(capsys, *base, "--topk", "0")
    assert "--no-cache" in _error(capsys, *base, "--cache", tmp_path / "c", "--no-cache")
    assert "--query: not a folder" in _error(capsys, "--checkpoint", trained_run, "--query", tmp_path / "nope",
                                             "--gallery", gallery, "--output", tmp_path / "out")
    assert sorted(os.listdir(gallery)) == ["b.jpg"]


def test_label_parsing_and_top_k():
    assert parse_labels(["0001_c1s1_000151_00.jpg", "sub/-1_c3s2_000001_01.png"])[1].tolist() == [1, -1]
    assert parse_labels(["0001_c1s1.jpg", "photo.jpg"]) is None
    d = np.array([[0.3, 0.1, 0.2, 0.1]], np.float32)
    idx, vals = top_k(d, 3)
    assert idx.tolist() == [[1, 3, 2]] and vals[0].tolist() == pytest.approx([0.1, 0.1, 0.2])
    idx, vals = top_k(d, 4, exclude=np.array([[False, True, True, False]]))
    assert idx.tolist() == [[3, 0, -1, -1]] and np.isinf(vals[0, 2:]).all()


def test_torchrun_ranks_share_the_feature_extraction(trained_run, tiny_root, test_scores, tmp_path):
    """Two ranks each embed half the images into their own cache shard; rank 0 ranks alone, with the
    single process's metrics."""
    import subprocess
    import sys

    query, gallery = _split_dirs(tiny_root)

    def torchrun(*args):  # --standalone: a rendezvous port the kernel picks (no free-port race)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "-m", "torchreid_privacy", "search", "--checkpoint", trained_run, "--query", str(query),
               "--gallery", str(gallery), "--no-png", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1"))

    out = tmp_path / "out"
    proc = torchrun("--output", out, "--protect-gallery")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("O->P: rank-1") == 1  # printed by rank 0 only
    doc = json.loads((out / "ranks.json").read_text())
    for metric in ("R1", "mAP"):
        assert doc["metrics"][metric] == pytest.approx(test_scores["O->P"][metric], abs=1e-6), metric
    for kind in ("raw", "anonymized"):  # one shard per rank, together every image once
        folder = next((out / "cache").glob(f"features-*-{kind}"))
        shards = sorted(p.name for p in folder.glob("*.keys.npy"))
        assert sorted(name.split(".")[0].split("-")[1] for name in shards) == ["r0", "r1"], shards
        rows = [len(np.load(folder / name)) for name in shards]
        expected = (len(list(query.iterdir())) if kind == "raw" else
                    sum(1 for p in gallery.iterdir() if not p.name.startswith("-1_")))  # junk left out
        assert abs(rows[0] - rows[1]) <= 1 and sum(rows) == expected
    refused = torchrun("--output", tmp_path / "nocache", "--no-cache")
    assert refused.returncode != 0 and "--no-cache: under torchrun the ranks hand their features over" in \
        refused.stderr


def test_test_features_are_the_shards_search_reads(trained_run, tiny_root, test_scores, tmp_path, capsys):
    """``test --features DIR`` keeps the evaluation's features; ``search --cache DIR`` embeds nothing new."""
    feats = tmp_path / "features"
    for attempt in range(2):  # the second test finds every image already there: no new shard
        assert main(["test", "--checkpoint", trained_run, "--output", str(tmp_path / f"test{attempt}"),
                     "--features", str(feats)]) == 0
        assert "features (anonymized):" in capsys.readouterr().out
        for kind in ("raw", "anonymized"):
            assert len(list(next(feats.glob(f"features-*-{kind}")).glob("*.keys.npy"))) == 1
    query, gallery = _split_dirs(tiny_root)
    assert _search("--checkpoint", trained_run, "--query", query, "--gallery", gallery, "--output", tmp_path / "s",
                   "--protect-gallery", "--cache", feats, "--no-png") == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "s" / "ranks.json").read_text())
    assert "features: 0 image(s) embedded" in printed  # query (raw) and gallery (P) all from test's shards
    for metric in ("R1", "mAP"):
        assert doc["metrics"][metric] == pytest.approx(test_scores["O->P"][metric], abs=1e-6), metric
