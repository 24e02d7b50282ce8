"""``search --index``: faiss gives the brute-force rank lists (flat) or most of them (ivf, ivfpq, hnsw);
the index is saved beside the features and rebuilt only when they (or its build options) change;
streamed ranking."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchreid_privacy.cli import main
from torchreid_privacy.metrics import settings
from torchreid_privacy.metrics.ranking import distances, protocol_mask, top_k, top_k_features
from torchreid_privacy.search.gallery_index import (IndexOptions, normalized, open_or_build, recall_at_k,
                                                     search_top_k)

pytest.importorskip("faiss")


def clustered(n_ids=300, per_id=8, n_queries=200, dim=32, seed=0):
    """Identities as cluster centres, images as noisy copies; every query's identity in the gallery."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, dim, generator=g)
    g_pids = torch.arange(n_ids).repeat_interleave(per_id)
    gf = centres[g_pids] + 0.7 * torch.randn(len(g_pids), dim, generator=g)
    q_pids = torch.randint(0, n_ids, (n_queries,), generator=g)
    qf = centres[q_pids] + 0.7 * torch.randn(n_queries, dim, generator=g)
    g_cams = torch.randint(0, 6, (len(g_pids),), generator=g)
    q_cams = torch.randint(0, 6, (n_queries,), generator=g)
    return qf, gf, tuple(t.numpy() for t in (q_pids, g_pids, q_cams, g_cams))


def test_streamed_top_k_equals_the_whole_matrix(monkeypatch):
    qf, gf, ids = clustered()
    whole = top_k(distances(qf, gf), 10, protocol_mask(*ids))
    monkeypatch.setattr(settings, "BLOCK_BYTES", 20 * 2400 * 7)  # 7 queries per block
    streamed = top_k_features(qf, gf, 10, ids)
    np.testing.assert_array_equal(streamed[0], whole[0])
    np.testing.assert_allclose(streamed[1], whole[1], atol=1e-6)


@pytest.mark.parametrize("with_ids", [True, False])
def test_flat_index_gives_the_brute_force_rank_lists(with_ids):
    qf, gf, ids = clustered()
    ids = ids if with_ids else None
    exact = top_k_features(qf, gf, 10, ids)
    index = open_or_build(None, [str(i) for i in range(len(gf))], normalized(gf), "flat")
    found = search_top_k(index, qf, gf, 10, ids=ids, block=64)
    np.testing.assert_array_equal(found[0], exact[0])
    np.testing.assert_allclose(found[1], exact[1], atol=1e-6)
    if with_ids:  # the protocol's same-identity same-camera images are never listed
        q_pids, g_pids, q_cams, g_cams = ids
        assert not ((g_pids[found[0]] == q_pids[:, None]) & (g_cams[found[0]] == q_cams[:, None])).any()


@pytest.mark.parametrize("kind, nprobe, floor", [("ivf", 16, 0.9), ("ivfpq", 16, 0.5)])
def test_approximate_indexes_find_most_of_the_exact_top_10(kind, nprobe, floor):
    qf, gf, ids = clustered()
    exact, _ = top_k_features(qf, gf, 10, ids)
    index = open_or_build(None, [str(i) for i in range(len(gf))], normalized(gf), kind)
    assert index.kind == kind and 1 < index.nlist < len(gf)
    found, vals = search_top_k(index, qf, gf, 10, nprobe=nprobe, ids=ids)
    assert recall_at_k(found, exact) >= floor
    assert recall_at_k(search_top_k(index, qf, gf, 10, nprobe=1, ids=ids)[0], exact) < recall_at_k(found, exact)
    assert (np.diff(vals, axis=1)[np.isfinite(vals[:, 1:])] >= 0).all()  # ascending, as brute force


def test_hnsw_finds_the_exact_top_10_and_its_breadth_trades_recall_for_speed():
    qf, gf, ids = clustered(n_ids=600, per_id=8, dim=32)
    exact, exact_d = top_k_features(qf, gf, 10, ids)
    index = open_or_build(None, [str(i) for i in range(len(gf))], normalized(gf), "hnsw", hnsw_m=8,
                          ef_construction=20)
    assert index.kind == "hnsw" and index.hnsw_m == 8 and index.ef_construction == 20
    assert type(index.index).__name__ == "IndexHNSWFlat" and index.index.hnsw.efConstruction == 20
    found, vals = search_top_k(index, qf, gf, 10, ids=ids, ef_search=128)
    assert recall_at_k(found, exact) >= 0.97
    narrow = search_top_k(index, qf, gf, 10, ids=ids, ef_search=1)[0]  # efSearch is raised to k: 10
    assert recall_at_k(narrow, exact) < recall_at_k(found, exact)
    # the re-rank: an approximate list holds exact distances, ascending, and never the protocol's images
    hit = found == exact
    np.testing.assert_allclose(vals[hit], exact_d[hit], atol=1e-5)
    assert (np.diff(vals, axis=1) >= 0).all()
    q_pids, g_pids, q_cams, g_cams = ids
    assert not ((g_pids[found] == q_pids[:, None]) & (g_cams[found] == q_cams[:, None])).any()


def test_more_candidates_re_ranked_recover_what_compressed_codes_miss():
    qf, gf, ids = clustered()
    exact, _ = top_k_features(qf, gf, 10, ids)
    index = open_or_build(None, [str(i) for i in range(len(gf))], normalized(gf), "ivfpq")
    few = recall_at_k(search_top_k(index, qf, gf, 10, nprobe=16, ids=ids)[0], exact)
    many = recall_at_k(search_top_k(index, qf, gf, 10, nprobe=16, ids=ids, candidates=100)[0], exact)
    assert many >= few + 0.1 and many >= 0.9, (few, many)


def test_a_saved_hnsw_index_is_reused_and_rebuilt_when_its_build_options_change(tmp_path):
    _, gf, _ = clustered()
    names = [f"{i}.jpg" for i in range(len(gf))]
    first = open_or_build(tmp_path, names, normalized(gf), "hnsw", hnsw_m=8)
    meta = json.loads((tmp_path / "hnsw.json").read_text())
    assert (meta["hnsw_m"], meta["ef_construction"]) == (8, 40) and not first.reused
    again = open_or_build(tmp_path, names, normalized(gf), "hnsw")  # 0: the saved index's options
    assert again.reused and again.hnsw_m == 8 and again.index.hnsw.nb_neighbors(1) == 8
    other = open_or_build(tmp_path, names, normalized(gf), "hnsw", hnsw_m=12)
    assert not other.reused and json.loads((tmp_path / "hnsw.json").read_text())["hnsw_m"] == 12
    meta = json.loads((tmp_path / "hnsw.json").read_text())
    (tmp_path / "hnsw.json").write_text(json.dumps({**meta, "hnsw_m": 8}))  # the file has 12 links
    with pytest.raises(ValueError, match=r"hnsw\.faiss has 12 links per vector, .*hnsw\.json says 8"):
        open_or_build(tmp_path, names, normalized(gf), "hnsw")
    # an index saved before hnsw existed (no hnsw fields) still loads
    flat = open_or_build(tmp_path, names, normalized(gf), "flat")
    meta = json.loads((tmp_path / "flat.json").read_text())
    (tmp_path / "flat.json").write_text(json.dumps({k: v for k, v in meta.items()
                                                    if k not in ("hnsw_m", "ef_construction")}))
    assert open_or_build(tmp_path, names, normalized(gf), "flat").reused and not flat.reused


@pytest.mark.parametrize("field, value, flag", [("nprobe", 0, "--nprobe"), ("ef_search", 0, "--ef-search"),
                                                ("hnsw_m", 1, "--hnsw-m"), ("candidates", -1, "--candidates"),
                                                ("nlist", -3, "--nlist"), ("ef_construction", True,
                                                                           "--ef-construction")])
def test_bad_index_options_name_their_flag(field, value, flag):
    with pytest.raises(ValueError, match=f"^{flag}: expected"):
        IndexOptions(**{field: value}).check()


def test_saved_index_is_reused_rebuilt_when_features_change_and_a_bad_file_is_named(tmp_path):
    _, gf, _ = clustered()
    names = [f"{i}.jpg" for i in range(len(gf))]
    first = open_or_build(tmp_path, names, normalized(gf), "ivf")
    assert not first.reused and (tmp_path / "ivf.faiss").is_file()
    again = open_or_build(tmp_path, names, normalized(gf), "ivf")
    assert again.reused and again.digest == first.digest and again.nlist == first.nlist
    changed = gf.clone()
    changed[0] += 1.0
    rebuilt = open_or_build(tmp_path, names, normalized(changed), "ivf")
    assert not rebuilt.reused and rebuilt.digest != first.digest
    assert json.loads((tmp_path / "ivf.json").read_text())["digest"] == rebuilt.digest
    (tmp_path / "ivf.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match=r"--index: cannot read .*ivf\.faiss"):
        open_or_build(tmp_path, names, normalized(changed), "ivf")


def test_search_cli_with_a_flat_index_lists_what_brute_force_lists(trained_run, tiny_root, tmp_path, capsys):
    from torchreid_privacy.data.synthetic import DATASET_DIR, MARKET_SUBDIR

    split = Path(tiny_root) / DATASET_DIR / MARKET_SUBDIR
    query, gallery = split / "query", split / "bounding_box_test"
    common = ["search", "--checkpoint", trained_run, "--query", str(query), "--gallery", str(gallery), "--no-png",
              "--protect-gallery", "--cache", str(tmp_path / "cache")]
    assert main([*common, "--output", str(tmp_path / "brute")]) == 0
    assert main([*common, "--output", str(tmp_path / "flat"), "--index", "flat"]) == 0
    assert "index: flat over" in capsys.readouterr().out
    brute = json.loads((tmp_path / "brute" / "ranks.json").read_text())
    flat = json.loads((tmp_path / "flat" / "ranks.json").read_text())
    assert [[r["gallery"] for r in q["ranks"]] for q in flat["queries"]] == \
        [[r["gallery"] for r in q["ranks"]] for q in brute["queries"]]
    assert flat["metrics"] == brute["metrics"] and flat["index"]["kind"] == "flat" and brute["index"] is None
    assert main([*common, "--output", str(tmp_path / "again"), "--index", "flat"]) == 0
    assert "(reused)" in capsys.readouterr().out
    assert main([*common, "--output", str(tmp_path / "bad"), "--index", "flat", "--nprobe", "0"]) == 1
    assert "--nprobe: expected >= 1, got 0" in capsys.readouterr().err
    # hnsw on a gallery this small visits every image: the brute-force lists, its options reported and saved
    assert main([*common, "--output", str(tmp_path / "hnsw"), "--index", "hnsw", "--hnsw-m", "8",
                 "--ef-search", "64"]) == 0
    printed = capsys.readouterr().out
    assert "index: hnsw over" in printed and "M 8, efConstruction 40, efSearch 64" in printed
    graph = json.loads((tmp_path / "hnsw" / "ranks.json").read_text())
    assert [[r["gallery"] for r in q["ranks"]] for q in graph["queries"]] == \
        [[r["gallery"] for r in q["ranks"]] for q in brute["queries"]]
    assert (graph["index"]["hnsw_m"], graph["index"]["ef_search"]) == (8, 64)
    assert json.loads((tmp_path / "cache" / "index" / "anonymized" / "hnsw.json").read_text())["hnsw_m"] == 8
    assert main([*common, "--output", str(tmp_path / "bad2"), "--index", "hnsw", "--ef-search", "0"]) == 1
    assert "--ef-search: expected an integer >= 1, got 0" in capsys.readouterr().err


def test_bench_scale_rows_agree_and_report_time_memory_and_recall(tmp_path, capsys):
    out = tmp_path / "scale.json"
    rows = "eval-whole,eval-streamed,search-exact,flat,ivf"  # ivfpq: tested above, one process less here
    assert main(["bench", "scale", "--size", "tiny", "--rows", rows, "--threads", "1", "--nprobe", "16,1",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bench scale: tiny: 300 queries x 3000 gallery" in printed and "recall@10" in printed
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["eval-whole", "eval-streamed", "search-exact", "flat", "ivf"]
    for setting in ("O->O", "O->P", "P->O", "P->P"):  # the streamed evaluation is the old one's numbers
        assert rows["eval-streamed"][setting]["R1"] == pytest.approx(rows["eval-whole"][setting]["R1"], abs=1e-6)
        assert rows["eval-streamed"][setting]["mAP"] == pytest.approx(rows["eval-whole"][setting]["mAP"], abs=1e-6)
    assert rows["flat"]["recall_at_10"] == pytest.approx(1.0) and rows["ivf"]["recall_at_10"] >= 0.8
    sweep = rows["ivf"]["sweep"]  # one built index searched at each --nprobe; the row reports the first
    assert [s["nprobe"] for s in sweep] == [16, 1] and rows["ivf"]["nprobe"] == 16
    assert sweep[1]["recall_at_10"] < sweep[0]["recall_at_10"] and "| nprobe 1 " in printed
    assert rows["flat"]["match_recall_at_10"] == pytest.approx(1.0)
    assert sweep[1]["match_recall_at_10"] < sweep[0]["match_recall_at_10"] <= 1.0
    n_queries, n_gallery, dim = 300, 3000, 32  # SIZES["tiny"]
    features_mb = (n_queries + n_gallery) * dim * 4 / 2**20  # O, float32; the eval rows make P too
    assert all(r["features_mb"] == pytest.approx(features_mb * (2 if name.startswith("eval") else 1))
               for name, r in rows.items())
    assert all(r["features"] == "gaussian" for r in rows.values())
    assert rows["search-exact"]["O->O"]["R1"] == pytest.approx(rows["eval-whole"]["O->O"]["R1"])  # the same O
    assert sweep[0]["speedup"] == pytest.approx(rows["search-exact"]["ms_per_query"] / sweep[0]["ms_per_query"])
    # the old path's peak holds at least one setting's whole distance matrix (measured: 29 MB):
    # a peak mark that was not reset, or not read, would not show it
    assert rows["eval-whole"]["peak_mb_above_features"] >= n_queries * n_gallery * 4 / 2**20, rows["eval-whole"]
    for name in ("search-exact", "flat", "ivf"):  # a row's time covers its index build and every search
        r = rows[name]
        searched = sum(s["ms_per_query"] for s in r.get("sweep", [r])) * n_queries / 1000
        assert r["seconds"] >= r.get("build_s", 0.0) + searched > 0, r
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "scale", "--size", "tiny", "--rows", "flat,exact"])
    assert exit_.value.code == 2 and "--rows: unknown row 'exact'" in capsys.readouterr().err
