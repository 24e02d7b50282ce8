"""Multi-process training on ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m torchreid_privacy train --config-file X.yaml`` sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; :func:`init_from_env` turns them into a process group
(nccl on CUDA, gloo on CPU). ``train.batch_size`` stays the *global* batch, so a recipe
keeps its meaning when N changes: each rank trains on ``batch_size / N`` images made of
whole P x K identity groups (:class:`DistributedIdentitySampler`). Only rank 0 logs, writes
grids, checkpoints and ``results.json``; evaluation shards query/gallery over the ranks and
gathers the features (:func:`shard_loader`, :func:`gather_objects`).
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, Subset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str


def launched_by_torchrun() -> bool:
    """True when the torchrun environment (``RANK`` and ``WORLD_SIZE``) is present."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or a plain single process): the one that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer from torchrun, got {value!r}") from None


def init_from_env(use_gpu: bool, timeout_s: int = 1800) -> DistContext:
    """Join the process group torchrun describes (nccl with CUDA, gloo otherwise).

    With CUDA each process takes ``cuda:LOCAL_RANK`` as its current device.
    """
    rank_, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank_
    if use_gpu:
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK: {local}, but only {torch.cuda.device_count()} CUDA device(s) are visible")
        torch.cuda.set_device(local)
    backend = "nccl" if use_gpu else "gloo"
    if not is_initialized():
        dist.init_process_group(backend=backend, rank=rank_, world_size=world, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=rank_, world_size=world, local_rank=local, backend=backend)


def shutdown(barrier_timeout_s: int = 60) -> None:
    """Leave the process group together.

    Why the barrier: a rank that tears down its gloo threads (or rank 0 the TCP store it hosts)
    while another rank is still talking to it aborts that rank ("terminate called without an
    active exception", seen in 2 of 7 two-process runs). Every rank first waits for all to arrive;
    a rank that does not arrive (it failed) releases the others after ``barrier_timeout_s``.
    """
    if not is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=barrier_timeout_s))
        else:
            dist.barrier()
    except RuntimeError as exc:  # a rank failed before shutting down: leave anyway
        log.warning("distributed shutdown without all ranks: %s", str(exc).splitlines()[0])
    finally:
        dist.destroy_process_group()


class DistributedIdentitySampler(Sampler[int]):
    """torchreid's ``RandomIdentitySampler`` for N processes.

    Every rank draws the same sequence of global batches (P identities x K images, seeded
    by ``seed`` and the epoch), and rank ``r`` takes groups ``r*P/N .. (r+1)*P/N - 1`` of
    each: whole identity groups, never split, never duplicated within an epoch. With N = 1
    it yields the global batches themselves, so a 1-process run sees the same images per
    step as the union of the N ranks.

    Args:
        data_source: torchreid's train list of ``(path, pid, camid, ...)`` tuples.
        batch_size: the global batch (``train.batch_size``).
        num_instances: K, images per identity in a batch (``sampler.num_instances``).
    """

    def __init__(self, data_source: Sequence[Any], batch_size: int, num_instances: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if num_instances < 1 or batch_size % num_instances:
            raise ValueError(f"train.batch_size: {batch_size} is not a multiple of "
                             f"sampler.num_instances={num_instances}")
        pids_per_batch = batch_size // num_instances
        if pids_per_batch % world_size:
            raise ValueError(f"train.batch_size: {batch_size} = {pids_per_batch} identities x {num_instances}; "
                             f"the identities must split evenly over {world_size} processes")
        self.index_of = defaultdict(list)
        for index, item in enumerate(data_source):
            self.index_of[int(item[1])].append(index)
        self.pids = sorted(self.index_of)
        if len(self.pids) < pids_per_batch:
            raise ValueError(f"train.batch_size: needs {pids_per_batch} identities per batch, "
                             f"the train set has {len(self.pids)}")
        self.k, self.p, self.rank, self.world, self.seed = num_instances, pids_per_batch, rank, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def global_batches(self) -> List[List[List[int]]]:
        """This epoch's global batches, each a list of P identity groups of K indices."""
        rng = np.random.RandomState((self.seed * 1_000_003 + self.epoch) % 2**32)
        groups = {}
        for pid in self.pids:
            idxs = list(self.index_of[pid])
            if len(idxs) < self.k:
                idxs = list(rng.choice(idxs, size=self.k, replace=True))
            idxs = [int(i) for i in rng.permutation(idxs)]
            groups[pid] = [idxs[i:i + self.k] for i in range(0, len(idxs) - self.k + 1, self.k)]
        available = [pid for pid in self.pids if groups[pid]]
        batches = []
        while len(available) >= self.p:
            chosen = [available[i] for i in rng.choice(len(available), size=self.p, replace=False)]
            batches.append([groups[pid].pop(0) for pid in chosen])
            available = [pid for pid in available if groups[pid]]
        return batches

    def __iter__(self) -> Iterator[int]:
        share = self.p // self.world
        for batch in self.global_batches():
            for group in batch[self.rank * share:(self.rank + 1) * share]:
                yield from group

    def __len__(self) -> int:
        return len(self.global_batches()) * self.p // self.world * self.k


def train_loader(dataset: Any, batch_size: int, num_instances: int, seed: int, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """The per-rank train loader: the distributed identity sampler, ``batch_size / N`` per step."""
    world, r = world_size(), rank()
    sampler = DistributedIdentitySampler(dataset.train, batch_size, num_instances, rank=r, world_size=world,
                                         seed=seed)
    return DataLoader(dataset, sampler=sampler, batch_size=batch_size // world, shuffle=False,
                      num_workers=num_workers, pin_memory=pin_memory, drop_last=True)


def shard_loader(loader: DataLoader) -> DataLoader:
    """This rank's strided share (``r, r+N, r+2N, ...``) of an evaluation loader.

    :func:`unshard` puts the gathered pieces back into the loader's order.
    """
    world, r = world_size(), rank()
    if world == 1:
        return loader
    indices = list(range(r, len(loader.dataset), world))
    return DataLoader(Subset(loader.dataset, indices), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, drop_last=False)


def unshard(pieces: List[torch.Tensor]) -> torch.Tensor:
    """Interleave rank-strided rows (rank r holds rows r, r+N, ...) back into one tensor."""
    if len(pieces) == 1:
        return pieces[0]
    total = sum(p.shape[0] for p in pieces)
    out = pieces[0].new_empty((total, *pieces[0].shape[1:]))
    for r, piece in enumerate(pieces):
        out[r::len(pieces)] = piece
    return out


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj`` (picklable, e.g. CPU tensors), in rank order; ``[obj]`` when alone."""
    if not is_initialized() or world_size() == 1:
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(net: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm running statistics).

    DDP syncs buffers at the start of each training forward, and each rank then updates
    them with its own batch; before evaluating or snapshotting a net in eval mode, all ranks
    take rank 0's so they compute with the very same network.
    """
    if world_size() == 1:
        return
    for buf in net.buffers():
        dist.broadcast(buf, src)


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of parameters that live outside a DDP wrapper."""
    world = world_size()
    if world == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def wrap_ddp(net: torch.nn.Module, device: torch.device, broadcast_buffers: bool = True) -> torch.nn.Module:
    """``DistributedDataParallel`` on this rank's device (CPU: no device_ids)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    # torch >= 2.14 renamed the per-forward buffer sync; both keep the initial broadcast
    key = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
           else "broadcast_buffers")
    kwargs = {key: broadcast_buffers}
    if device.type == "cuda":
        kwargs["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    return DDP(net, **kwargs)
