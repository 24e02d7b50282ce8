"""``torchreid-privacy bench step``: the whole joint training step, eager vs compile vs Triton vs AMP.

One table, one row per way of running the privacy engine's step (``forward_backward``) on the
same batches from the same seed: torch eager (``privacy.kernels torch``), ``train.compile``,
the Triton kernels (``privacy.kernels triton``; on a CPU Triton's interpreter runs them, so
that row checks correctness only and its time means nothing), ``train.amp`` bf16 (and fp16 on
CUDA). The baseline is torchreid's plain triplet step (same backbone, batch, threads: C alone
with torchreid's label-smoothed CE + batch-hard triplet, Adam), timed step by step in
alternation with every row so a busy machine slows both alike; ``x plain`` is the ratio of the
two medians. Columns: ms per step (median), images/s, first step seconds (compilation
included), peak memory above the row's start (CUDA; "-" on CPU), and the largest relative
difference of the first step's losses from the eager row's (a correctness check).

Sizes: ``tiny`` (the test config), ``quickstart`` (default: 64x32, batch 32 = 8 ids x 4,
tiny_reid, unet_128 ngf 16 with 5 levels), ``paper`` (256x128, batch 64 = 16 ids x 4,
``--model`` resnet50_agw by default, unet_128 ngf 64, PatchGAN ndf 64: for a GPU)::

    TRITON_INTERPRET=1 torchreid-privacy bench step --threads 1 --clock thread --breakdown  # CPU
    torchreid-privacy bench step --size paper --device cuda --breakdown --output step.json   # GPU

(on a CPU the Triton row needs ``TRITON_INTERPRET=1`` set before start; without it the row
reads "skipped").

``--breakdown`` adds the eager row's time per phase of the step (G, G_R, D step, G step, C)
and each net alone (ms, GFLOP). Writes everything to ``--output`` as JSON.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from torchreid_privacy.bench import step_profile

SIZES: Dict[str, List[str]] = {
    "tiny": ["data.height", "64", "data.width", "32", "train.batch_size", "16", "privacy.generator.ngf", "8",
             "privacy.decoder.ngf", "8", "privacy.discriminator.ndf", "8"],
    "quickstart": [],
    "paper": ["data.height", "256", "data.width", "128", "train.batch_size", "64", "sampler.num_instances", "4",
              "privacy.generator.ngf", "64", "privacy.generator.num_downs", "7", "privacy.decoder.ngf", "64",
              "privacy.decoder.num_downs", "7", "privacy.discriminator.ndf", "64",
              "privacy.desensitizer.params.block", "24"],
}
PAPER_MODEL = "resnet50_agw"
# row name -> (privacy.kernels, train.compile, train.amp)
ROWS: Dict[str, tuple] = {
    "eager": ("torch", "off", "off"),
    "compile": ("torch", "default", "off"),
    "compile max-autotune": ("torch", "max-autotune", "off"),
    "triton": ("triton", "off", "off"),
    "compile + triton": ("triton", "default", "off"),
    "amp bf16": ("torch", "off", "bf16"),
    "amp fp16": ("torch", "off", "fp16"),
}
# compiled rows last: their compilation is the slow part, and --budget-s skips what is left
DEFAULT_ROWS = {"cpu": ["eager", "triton", "amp bf16", "compile"],
                "cuda": ["eager", "triton", "amp bf16", "amp fp16", "compile"]}
BUDGET_S = 240.0  # rows starting later are skipped, so a GPU run stays under 5 minutes
PLAIN = "torchreid plain triplet"
Row = Dict[str, Any]


def build_config(size: str, device: torch.device, data_root: str, save_dir: str, mode: str = "joint",
                 model: Optional[str] = None, extra: Sequence[str] = ()) -> Any:
    """The quickstart config at ``size`` for ``device`` (plus ``extra`` dotted overrides)."""
    from torchreid_privacy.config import load_config
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    if size not in SIZES:
        raise ValueError(f"--size: expected one of {', '.join(SIZES)}, got {size!r}")
    overrides = ["data.root", data_root, "data.save_dir", save_dir, "privacy.mode", mode,
                 "use_gpu", str(device.type == "cuda").lower(), *SIZES[size]]
    name = model or (PAPER_MODEL if size == "paper" else None)
    if name:
        overrides += ["model.name", name, "model.pretrained", "false"]
    return load_config(packaged_config(QUICKSTART), overrides + list(extra))


def row_overrides(name: str) -> List[str]:
    kernels, compile_mode, amp = ROWS[name]
    return ["privacy.kernels", kernels, "train.compile", compile_mode, "train.amp", amp]


def plain_step(cfg: Any, num_classes: int, device: torch.device) -> Callable[[Dict[str, Any]], None]:
    """torchreid's plain triplet step on C alone: label-smoothed CE + torchreid's TripletLoss, Adam."""
    from torchreid_privacy import bridge
    from torchreid_privacy.models.nets import build_reid_model

    model = build_reid_model(cfg, num_classes, loss="triplet").to(device).train()
    opt = bridge.build_optimizer(model, optim="adam", lr=cfg.train.lr)
    xent = bridge.CrossEntropyLoss(num_classes, use_gpu=device.type == "cuda")
    trip = bridge.TripletLoss(margin=cfg.loss.triplet.margin)

    def step(batch: Dict[str, Any]) -> None:
        imgs, pids = batch["img"].to(device), batch["pid"].to(device)
        logits, feats = model(imgs)
        loss = xent(logits, pids) + trip(feats, pids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss.detach())  # as a training loop logs it (and a CUDA step ends here)

    return step


def _rel_diff(a: Dict[str, float], b: Dict[str, float]) -> Optional[float]:
    keys = set(a) & set(b)
    if not keys:
        return None
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-8) for k in keys)


def _error(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"failed: {type(exc).__name__}: {first[:100]}"


class StepBench:
    """Runs the rows on one device at one size; see the module docstring."""

    def __init__(self, size: str = "quickstart", device: str = "cpu", steps: int = 10, warmup: int = 2,
                 mode: str = "joint", model: Optional[str] = None, clock: str = "wall",
                 data_root: Optional[str] = None, log: Callable[[str], None] = print) -> None:
        from torchreid_privacy.kernels import dispatch

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here (use --device cpu)")
        if steps < 1 or warmup < 0:
            raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
        self.size, self.steps, self.warmup, self.mode, self.model, self.log = size, steps, warmup, mode, model, log
        self.clock = step_profile.step_clock(self.device, clock)
        self.interpreted = self.device.type == "cpu"  # Triton runs in its interpreter on a CPU
        self.triton_ok = dispatch.HAS_TRITON and (dispatch.INTERPRET if self.interpreted else not dispatch.INTERPRET)
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-step-")
        self._own_data = data_root is None  # else the user's dataset (a torchreid layout) is used as is
        self.data_root = data_root or os.path.join(self._tmp.name, "data")
        self.batches: List[Dict[str, Any]] = []
        self.plain: Optional[Callable[[Dict[str, Any]], None]] = None
        self.plain_times: List[float] = []
        self.eager_losses: Optional[Dict[str, float]] = None
        self.setup = ""

    def config(self, extra: Sequence[str] = ()) -> Any:
        return build_config(self.size, self.device, self.data_root, os.path.join(self._tmp.name, "run"),
                            self.mode, self.model, extra)

    def _engine(self, name: str) -> Any:
        from torchreid_privacy.builder import build_privacy_engine
        from torchreid_privacy.data.synthetic import make_synthetic_market

        if self._own_data:
            make_synthetic_market(self.data_root)
        cfg = self.config(row_overrides(name))
        engine = build_privacy_engine(cfg)
        engine.set_model_mode("train")
        if not self.batches:  # the same batches for every row (and the plain step)
            p = cfg.privacy
            self.setup = (f"C {cfg.model.name}, batch {cfg.train.batch_size}, {cfg.data.height}x{cfg.data.width}, "
                          f"G/G_R {p.generator.name} ngf {p.generator.ngf}, D {p.discriminator.name} "
                          f"ndf {p.discriminator.ndf}")
            loader = iter(engine.train_loader)
            self.batches = [next(loader) for _ in range(min(4, len(engine.train_loader)))]
            self.plain = plain_step(cfg, engine.datamanager.num_train_pids, self.device)
        return engine

    def _time(self, fn: Callable[[], Any]) -> float:
        step_profile.sync(self.device)
        start = self.clock()
        fn()
        step_profile.sync(self.device)
        return self.clock() - start

    def _skip(self, name: str) -> Optional[str]:
        kernels, _, amp = ROWS[name]
        if kernels == "triton" and not self.triton_ok:
            return ("skipped: Triton on a CPU needs its interpreter (TRITON_INTERPRET=1 set before start)"
                    if self.interpreted else "skipped: Triton unavailable (installed? TRITON_INTERPRET unset?)")
        if amp == "fp16" and self.device.type != "cuda":
            return "skipped: fp16 autocast is for CUDA"
        return None

    def run_row(self, name: str) -> Row:
        if name not in ROWS:
            raise ValueError(f"--rows: unknown row {name!r} (known: {', '.join(ROWS)})")
        kernels, compile_mode, amp = ROWS[name]
        row: Row = {"row": name, "kernels": kernels, "compile": compile_mode, "amp": amp, "status": "ok",
                    "note": "correctness only, time meaningless (interpreter)"
                    if kernels == "triton" and self.interpreted else ""}
        skip = self._skip(name)
        if skip:
            row["status"] = skip
            return row
        engine = None
        try:
            if self.device.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            engine = self._engine(name)
            first: Dict[str, float] = {}
            row["first_step_s"] = self._time(lambda: first.update(engine.forward_backward(self.batches[0])))
            if name == "eager":
                self.eager_losses = first
            row["loss_rel_diff"] = _rel_diff(first, self.eager_losses) if self.eager_losses else None
            steps = 1 if row["note"] else self.steps  # the interpreter: one timed step is plenty
            for i in range(0 if row["note"] else self.warmup):
                engine.forward_backward(self.batches[(i + 1) % len(self.batches)])
            joint, plain = [], []
            for i in range(steps):
                batch = self.batches[(i + 1 + self.warmup) % len(self.batches)]
                joint.append(self._time(lambda: engine.forward_backward(batch)))
                plain.append(self._time(lambda: self.plain(batch)))
            self.plain_times += plain
            n = self.batches[0]["img"].shape[0]
            row["ms_step"] = 1e3 * statistics.median(joint)
            row["ms_min"] = 1e3 * min(joint)
            row["images_s"] = n / statistics.median(joint)
            row["plain_ms"] = 1e3 * statistics.median(plain)
            row["x_plain"] = statistics.median(joint) / statistics.median(plain)
            row["peak_mb"] = ((torch.cuda.max_memory_allocated(self.device) - base) / 2**20
                              if self.device.type == "cuda" else None)
            row["compiled"] = len(engine.compiled) if compile_mode != "off" else 0
        except Exception as exc:  # a benchmark reports a failed row and goes on
            row["status"] = _error(exc)
        finally:
            del engine  # before the next row allocates (peak memory, and CPU RAM at paper size)
        return row

    def plain_row(self) -> Row:
        n = self.batches[0]["img"].shape[0] if self.batches else 0
        row: Row = {"row": PLAIN, "kernels": "-", "compile": "off", "amp": "off", "status": "ok",
                    "note": "the baseline: C alone, torchreid's losses"}
        if not self.plain_times:
            row["status"] = "no row ran"
            return row
        med = statistics.median(self.plain_times)
        row.update({"ms_step": 1e3 * med, "ms_min": 1e3 * min(self.plain_times), "images_s": n / med,
                    "x_plain": 1.0, "plain_ms": 1e3 * med})
        if self.device.type == "cuda" and self.plain is not None:
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            self.plain(self.batches[0])
            row["peak_mb"] = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
        return row

    def breakdown(self, steps: int) -> Dict[str, Any]:
        """Phase breakdown of a fresh eager engine, each net alone, and the FLOP ratio."""
        engine = self._engine("eager")
        for i in range(self.warmup):
            engine.forward_backward(self.batches[i % len(self.batches)])
        report = step_profile.phase_breakdown(engine, self.batches, steps, self.clock)
        report["nets"] = step_profile.net_costs(engine, self.batches[0], clock=self.clock)
        joint_flops = step_profile.count_flops(lambda: engine.forward_backward(self.batches[0]))
        plain_flops = step_profile.count_flops(lambda: self.plain(self.batches[0]))
        report.update(gflop_joint=joint_flops / 1e9, gflop_plain=plain_flops / 1e9,
                      flop_ratio=joint_flops / plain_flops if plain_flops else None)
        return report

    def close(self) -> None:
        self._tmp.cleanup()


def format_table(rows: List[Row]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    head = (f"{'row':24s} {'kernels':7s} {'compile':12s} {'amp':4s} {'ms/step':>9s} {'images/s':>9s} "
            f"{'x plain':>8s} {'1st step s':>10s} {'peak MiB':>9s} {'loss diff':>9s}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['row']:24s} {r['kernels']:7s} {r['compile']:12s} {r['amp']:4s} {r['status']}")
            continue
        lines.append(f"{r['row']:24s} {r['kernels']:7s} {r['compile']:12s} {r['amp']:4s} "
                     f"{num(r.get('ms_step'), '{:.1f}'):>9s} {num(r.get('images_s'), '{:.0f}'):>9s} "
                     f"{num(r.get('x_plain'), '{:.2f}x'):>8s} {num(r.get('first_step_s'), '{:.1f}'):>10s} "
                     f"{num(r.get('peak_mb'), '{:.0f}'):>9s} {num(r.get('loss_rel_diff'), '{:.1e}'):>9s}  "
                     f"{r.get('note', '')}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the table (and ``--breakdown``), write ``--output``; 0 if every row ran, 2 otherwise."""
    parser = argparse.ArgumentParser(prog="torchreid-privacy bench step", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="quickstart", choices=list(SIZES))
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--model", default=None, help=f"ReID backbone (default: the config's; {PAPER_MODEL} "
                                                      "at --size paper)")
    parser.add_argument("--mode", default="joint", choices=["joint", "progressive", "baseline"])
    parser.add_argument("--rows", default=None, help=f"comma-separated, of: {', '.join(ROWS)} "
                                                     f"(default CPU: {','.join(DEFAULT_ROWS['cpu'])}; "
                                                     f"CUDA: {','.join(DEFAULT_ROWS['cuda'])})")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row (default 10; --quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 2; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="2 timed steps and 1 warm-up step per row")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"],
                        help="wall time, or this thread's CPU time (CPU, --threads 1: robust on a busy machine)")
    parser.add_argument("--breakdown", action="store_true", help="time per phase and per net (eager row)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help=f"rows that would start after this many seconds are skipped (default {BUDGET_S:.0f})")
    parser.add_argument("--data-root", default=None, help="synthetic dataset folder (default: a temporary one)")
    parser.add_argument("--output", default=None, help="write the rows (and breakdown) here as JSON")
    opts = parser.parse_args([] if argv is None else list(argv))
    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        parser.error(f"--device: expected cpu or cuda, got {device!r}")
    if opts.threads is not None:
        if opts.threads < 1:
            parser.error(f"--threads: expected >= 1, got {opts.threads}")
        torch.set_num_threads(opts.threads)
    rows = [r for r in (opts.rows.split(",") if opts.rows else DEFAULT_ROWS[device]) if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(ROWS)})")
    if "eager" not in rows:
        rows.insert(0, "eager")  # the reference of the loss-difference column
    steps = opts.steps if opts.steps is not None else (2 if opts.quick else 10)
    warmup = opts.warmup if opts.warmup is not None else (1 if opts.quick else 2)
    try:
        bench = StepBench(opts.size, device, steps, warmup, opts.mode, opts.model, opts.clock, opts.data_root)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.perf_counter()
    try:
        name = (torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)")
        print(f"bench step: {opts.mode} step, size {opts.size}, {name}, torch {torch.__version__}, "
              f"{steps} timed steps per row")
        results = []
        for r in rows:
            if time.perf_counter() - started > opts.budget_s:
                results.append({"row": r, "kernels": ROWS[r][0], "compile": ROWS[r][1], "amp": ROWS[r][2],
                                "status": f"skipped: --budget-s {opts.budget_s:g} spent"})
            else:
                results.append(bench.run_row(r))
        results.insert(0, bench.plain_row())
        print(format_table(results))
        print(bench.setup)
        report: Dict[str, Any] = {
            "device": name, "size": opts.size, "setup": bench.setup, "mode": opts.mode,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "clock": opts.clock, "steps": steps,
            "warmup": warmup, "batch": int(bench.batches[0]["img"].shape[0]) if bench.batches else None,
            "rows": results}
        if opts.breakdown:
            report["breakdown"] = bench.breakdown(steps)
            b = report["breakdown"]
            print(step_profile.format_breakdown(b, "eager: "))
            print(step_profile.format_net_costs(b["nets"]))
            print(f"GFLOP per step: joint {b['gflop_joint']:.2f}, plain {b['gflop_plain']:.2f} "
                  f"(ratio {b['flop_ratio']:.2f}x: the joint step's floor at equal FLOP efficiency)")
        report["wall_s"] = time.perf_counter() - started
        print(f"bench step: {report['wall_s']:.0f} s")
        if opts.output:
            from torchreid_privacy.utils import atomic

            atomic.write_json(opts.output, report)
            print(f"wrote {opts.output}")
    finally:
        bench.close()
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in results) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
