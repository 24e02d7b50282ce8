"""Under torchrun the ranks share the query blocks of the streamed evaluation (2 gloo processes)."""
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from rendezvous_store import agent_store
from torchreid_privacy.metrics.rank import evaluate_rank_blocks
from torchreid_privacy.metrics.settings import evaluate_settings, normalized_distance

CHUNK = 16  # 10 blocks of queries: ranks take 5 each


def _data(seed=0, queries=150, gallery=400, dim=24, ids=40):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))
    qp, gp = rng.integers(0, ids, queries), rng.integers(0, ids, gallery)
    qc, gc = rng.integers(0, 3, queries), rng.integers(0, 3, gallery)
    qf = torch.tensor(centres[qp] + rng.standard_normal((queries, dim)), dtype=torch.float32)
    gf = torch.tensor(centres[gp] + rng.standard_normal((gallery, dim)), dtype=torch.float32)
    return qf, gf, qp, gp, qc, gc


def _run(shard: bool):
    """(four-setting scores, CUHK03-metric CMC/mAP, the query blocks this process ranked)."""
    qf, gf, qp, gp, qc, gc = _data()
    feats = {"query": {"O": qf, "P": qf + 0.5}, "gallery": {"O": gf, "P": gf - 0.5}}
    scores = evaluate_settings(feats, q_pids=qp, g_pids=gp, q_camids=qc, g_camids=gc, chunk_size=CHUNK,
                               shard_queries=shard)
    ranked = []

    def block(start, stop):
        ranked.append(start)
        return normalized_distance(torch.nn.functional.normalize(qf[start:stop]), torch.nn.functional.normalize(gf))

    cmc, m_ap, m_inp = evaluate_rank_blocks(block, (len(qf), len(gf)), qp, gp, qc, gc, max_rank=10,
                                            use_metric_cuhk03=True, chunk_size=CHUNK, rng=0, shard_queries=shard)
    return scores, (cmc.tolist(), m_ap, m_inp), sorted(ranked)


def _worker(rank, world, rendezvous, out_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), **rendezvous)
    torch.set_num_threads(1)
    from torchreid_privacy.utils import distributed

    distributed.init_from_env(use_gpu=False)
    try:
        torch.save(_run(shard=True), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    with agent_store(2) as rendezvous:  # a port bound before the workers start (no free-port race)
        mp.start_processes(_worker, args=(2, rendezvous, str(out)), nprocs=2, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_each_rank_ranks_half_the_blocks_and_all_get_the_single_process_scores(two_ranks):
    single_scores, single_cuhk, single_blocks = _run(shard=False)
    assert single_blocks == list(range(0, 150, CHUNK))
    blocks = [r[2] for r in two_ranks]
    assert blocks[0] == single_blocks[0::2] and blocks[1] == single_blocks[1::2]  # disjoint halves
    for scores, cuhk, _ in two_ranks:
        for setting, values in single_scores.items():
            assert scores[setting] == pytest.approx(values, abs=1e-12), setting  # the same blocks, ranked elsewhere
        assert cuhk[0] == pytest.approx(single_cuhk[0], abs=1e-12)  # CUHK03 draws stay in query order
        assert cuhk[1:] == pytest.approx(single_cuhk[1:], abs=1e-12)


def test_without_a_process_group_sharding_is_a_no_op():
    assert _run(shard=True)[:2] == _run(shard=False)[:2]
