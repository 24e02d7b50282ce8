"""Where a training step's time goes: per-phase timers and FLOP counts (``bench step --breakdown``).

The privacy engine marks its phases (G fwd, D step fwd, G step backward, ...) through
``engine.phase_timer``; :class:`PhaseTimer` is such a timer. With one CPU thread the clock is
the thread's CPU time, which other processes on a shared machine do not inflate; on CUDA every
phase boundary synchronizes (so a phase's time is its kernels' time, at some cost in overlap).
FLOPs come from ``torch.utils.flop_counter`` (convolutions and matmuls; elementwise work is
not counted), which is what makes the joint step's floor visible: it runs C on twice the
images of a plain torchreid step, plus four GAN nets.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_clock(device: torch.device, kind: str = "wall") -> Callable[[], float]:
    """Seconds: ``wall`` (perf_counter), or ``thread`` (this thread's CPU time: CPU, one thread)."""
    if kind not in ("wall", "thread"):
        raise ValueError(f"--clock: expected wall or thread, got {kind!r}")
    if kind == "thread":
        if device.type != "cpu" or torch.get_num_threads() != 1:
            raise ValueError("--clock thread: needs the CPU with one thread (--threads 1); "
                             "other threads' work is not this thread's CPU time")
        return time.thread_time
    return time.perf_counter


class PhaseTimer:
    """``engine.phase_timer``: accumulates the time of each named phase over the timed steps."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device, self.clock = device, clock
        self.totals: Dict[str, float] = defaultdict(float)
        self.order: List[str] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        sync(self.device)
        start = self.clock()
        try:
            yield
        finally:
            sync(self.device)
            if name not in self.totals:
                self.order.append(name)
            self.totals[name] += self.clock() - start


def phase_breakdown(engine: Any, batches: List[Dict[str, Any]], steps: int,
                    clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """Run ``steps`` training steps with a :class:`PhaseTimer`; ms per step for each phase.

    Returns ``{"step_ms", "phases": [{"phase", "ms", "share"}], ...}`` with an ``other`` phase
    for what lies between the marked ones (loss checks, float conversion, Python).
    """
    timer = PhaseTimer(engine.device, clock)
    engine.phase_timer = timer
    total = 0.0
    try:
        for i in range(steps):
            sync(engine.device)
            start = clock()
            engine.forward_backward(batches[i % len(batches)])
            sync(engine.device)
            total += clock() - start
    finally:
        engine.phase_timer = None
    step_ms = 1e3 * total / steps
    phases = [{"phase": name, "ms": 1e3 * timer.totals[name] / steps} for name in timer.order]
    phases.append({"phase": "other (checks, floats, Python)", "ms": step_ms - sum(p["ms"] for p in phases)})
    for p in phases:
        p["share"] = p["ms"] / step_ms if step_ms > 0 else 0.0
    return {"step_ms": step_ms, "steps": steps, "phases": phases}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (convolutions, matmuls) that one call of ``fn`` runs, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def net_costs(engine: Any, batch: Dict[str, Any], steps: int = 3,
              clock: Callable[[], float] = time.perf_counter) -> List[Dict[str, Any]]:
    """Each net alone at the step's shapes: forward and forward+backward ms, and GFLOP.

    C runs on the two stacked views (2B images) as in the step; the discriminators on a
    (cond, img) pair; everything from the engine's own nets, their gradients cleared after.
    """
    from torchreid_privacy import bridge

    models = bridge.engine_models(engine)
    imgs = engine.parse_data_for_train(batch)[0].to(engine.device)
    x = (engine.inference.to01(imgs) * 2.0 - 1.0).detach()
    inputs = {"generator": (x,), "decoder": (x,), "disc_op": (x, x), "disc_pr": (x, x), "inverter": (x,),
              "model": (torch.cat([imgs, imgs]),)}
    rows = []
    for name, args in inputs.items():
        net = models.get(name)
        if net is None or (name == "decoder" and engine.keyed):
            continue
        leaf = tuple(a.detach().clone().requires_grad_(name != "model") for a in args)

        def fwd() -> Any:
            with engine.precision.autocast():
                return net(*leaf)

        def fwd_bwd() -> None:
            out = fwd()
            outs = out if isinstance(out, (tuple, list)) else (out,)
            sum(o.float().sum() for o in outs).backward()

        def timed(fn: Callable[[], Any]) -> float:
            fn()
            best = float("inf")
            for _ in range(steps):
                sync(engine.device)
                start = clock()
                fn()
                sync(engine.device)
                best = min(best, clock() - start)
            return 1e3 * best

        rows.append({"net": name, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
                     "fwd_ms": timed(fwd), "fwd_bwd_ms": timed(fwd_bwd),
                     "gflop_fwd": count_flops(fwd) / 1e9, "gflop_fwd_bwd": count_flops(fwd_bwd) / 1e9})
        net.zero_grad(set_to_none=True)
    return rows


def format_breakdown(breakdown: Dict[str, Any], title: str = "") -> str:
    lines = [f"{title}phase breakdown, ms per step (mean of {breakdown['steps']} steps)",
             f"{'phase':44s} {'ms':>9s} {'share':>7s}"]
    for p in breakdown["phases"]:
        lines.append(f"{p['phase']:44s} {p['ms']:9.1f} {100 * p['share']:6.1f}%")
    lines.append(f"{'step':44s} {breakdown['step_ms']:9.1f} {100.0:6.1f}%")
    return "\n".join(lines)


def format_net_costs(rows: List[Dict[str, Any]]) -> str:
    lines = ["each net alone at the step's shapes (best of the timed calls)",
             f"{'net':10s} {'params M':>9s} {'fwd ms':>8s} {'fwd+bwd ms':>11s} {'GFLOP fwd':>10s} {'GFLOP f+b':>10s}"]
    for r in rows:
        lines.append(f"{r['net']:10s} {r['params_m']:9.2f} {r['fwd_ms']:8.1f} {r['fwd_bwd_ms']:11.1f} "
                     f"{r['gflop_fwd']:10.2f} {r['gflop_fwd_bwd']:10.2f}")
    return "\n".join(lines)
