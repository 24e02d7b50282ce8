"""Recovery attack: how well can someone without G_R undo G, given N leaked (P, O) pairs?

The attacker (``metrics.inversion``) trains a fresh U-Net of the decoder's family and size on N
training-set pairs (P = G(O) as published) with L1 only -- L1 maximizes PSNR, a GAN term would
only lower it -- and is scored by PSNR/SSIM(O, attacker(P)) on the test split, next to the
authorized decoder G_R and to the same attacker on the conventional M (as published). A large
``margin_db`` means recovery needs G_R itself, not just a few leaked pairs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchreid_privacy.metrics.image import ImageMetricAccumulator
from torchreid_privacy.metrics.inversion import build_attacker, train_attacker
from torchreid_privacy.utils.images import from_gan, to_gan
from torchreid_privacy.trained_run import TrainedRun

_LOSS_WINDOW = 10  # steps averaged for the reported first/last training L1


def _positive_int(flag: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{flag}: expected an integer >= 1, got {value!r}")
    return value


def check_pairs(pairs: Sequence[int]) -> list[int]:
    """Validated pair counts (non-empty, each >= 1, no repeats)."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError(f"--pairs: expected one or more pair counts, got {pairs!r}")
    counts = [_positive_int("--pairs", n) for n in pairs]
    if len(set(counts)) != len(counts):
        raise ValueError(f"--pairs: repeated pair count in {counts}")
    return counts


@torch.no_grad()
def evaluate_attackers(run: TrainedRun, nets: dict[Any, nn.Module], target: str,
                       seed: int = 0) -> dict[Any, dict[str, float]]:
    """PSNR/SSIM(O, net(X)) of every attacker over ``target``'s query+gallery, in one pass: each test
    image is read, anonymized (X = P) and desensitized (X = M, seeded) once for all attackers. A key
    ``("M", n)`` marks an attacker of M; any other key attacks P."""
    accs = {name: ImageMetricAccumulator() for name in nets}
    for net in nets.values():
        net.eval()
    gen = torch.Generator(device=run.device).manual_seed(seed)
    for o01 in run.eval_batches01(target):
        x = {"P": to_gan(run.model.protect(o01)), "M": to_gan(run.model.publish(run.model.conventional(o01, gen)))}
        for name, net in nets.items():
            source = name[0] if isinstance(name, tuple) else "P"
            accs[name].update(o01, from_gan(net(x[source])))
    return {name: acc.result() for name, acc in accs.items()}


def evaluate_attacker(run: TrainedRun, net: nn.Module, target: str) -> dict[str, float]:
    """PSNR/SSIM(O, net(P)) of one attacker (see :func:`evaluate_attackers`)."""
    return evaluate_attackers(run, {"attacker": net}, target)["attacker"]


@torch.no_grad()
def leaked_pairs(run: TrainedRun, n: int, seed: int, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, M, O) in [0,1] for the first ``n`` training images of a seeded permutation."""
    items = run.train_items()
    if n > len(items):
        raise ValueError(f"--pairs: {n} pairs asked, but the training set has only {len(items)} images")
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    o01 = run.images01([items[i][0] for i in order], batch_size)
    gen = torch.Generator(device=run.device).manual_seed(seed)
    chunks = [o01[i:i + batch_size] for i in range(0, n, batch_size)]
    p01 = torch.cat([run.model.protect(c) for c in chunks])
    m01 = torch.cat([run.model.publish(run.model.conventional(c, gen)) for c in chunks])
    return p01, m01, o01


def recovery_attack(checkpoint_path: str, pairs: Sequence[int], steps: int = 2000, batch_size: int = 16,
                    seed: int = 0, key: Any = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """PSNR/SSIM of an attacker trained on N leaked (P, O) pairs, for each N in ``pairs``, next to
    the key holder's recovery and to the same attacker trained on (M, O) pairs (the conventional
    desensitizer, the privacy yardstick).

    Larger N includes the pairs of smaller N; every attacker starts from the same seeded weights.
    Results: ``"16"``... for P, ``"M": {"16": ...}`` for M, ``margin_db`` = authorized PSNR - best
    P attacker (None for sealed runs, whose key holder recovers the exact file), ``vs_m_db`` = best
    P attacker - best M attacker (<= 1 dB: P no easier to invert than M).
    """
    counts = check_pairs(pairs)
    steps = _positive_int("--steps", steps)
    batch_size = _positive_int("--batch-size", batch_size)
    run = TrainedRun.open(checkpoint_path, overrides, key=key, need=("generator",))
    if run.model.keyed and not run.model.has_key:
        raise ValueError("--key-file: the run's decoder is keyed; the authorized decoder's numbers need its key")
    sealed = run.model.decoder is None
    target = run.test_targets[0]
    res = run.evaluate(target, grid_path=None, desc="authorized")
    image = res["image"]
    out: dict[str, Any] = {"protected": {k: float(image["O-P"][k]) for k in ("psnr", "ssim")},
                           "conventional": {k: float(image["O-M"][k]) for k in ("psnr", "ssim")},
                           "authorized": ({"psnr": None, "ssim": 1.0, "exact": True} if sealed else
                                          {k: float(image["O-R"][k]) for k in ("psnr", "ssim")}),
                           "M": {}}
    p01, m01, o01 = leaked_pairs(run, max(counts), seed)
    nets, w = {}, min(_LOSS_WINDOW, steps)
    for source, x01 in (("P", p01), ("M", m01)):
        for n in counts:
            net = build_attacker(run.config, seed).to(run.device)
            key_ = str(n) if source == "P" else ("M", str(n))
            nets[key_], losses = train_attacker(net, x01[:n], o01[:n], steps, batch_size, seed)
            row = {"steps": steps, "train_l1_start": sum(losses[:w]) / w, "train_l1": sum(losses[-w:]) / w}
            (out if source == "P" else out["M"])[str(n)] = row
    for name, m in evaluate_attackers(run, nets, target, seed).items():
        row = out["M"][name[1]] if isinstance(name, tuple) else out[name]
        row.update({"psnr": m["psnr"], "ssim": m["ssim"]})
    best_p = max(out[str(n)]["psnr"] for n in counts)
    best_m = max(out["M"][str(n)]["psnr"] for n in counts)
    out.update({"test_images": int(image["O-P"]["count"]), "steps": steps,
                "margin_db": None if sealed else out["authorized"]["psnr"] - best_p, "vs_m_db": best_p - best_m,
                "target": target, "checkpoint": run.path})
    return out
