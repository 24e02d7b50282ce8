"""The training step of a sealed run (``privacy.recovery sealed``): no G_R, no D2.

Recovery is cryptographic (the original travels sealed with P), so P need not be invertible.
G trains against D1 (real pair (O, M)), L1(P, M), the ReID terms on O and P, and, with
``privacy.inversion.enabled``, against an inversion adversary A: each step A learns O from
P.detach() with L1 (its own optimizer), then G pays ``weight * relu(margin - L1(A(P), O))`` with
A frozen. C and A see P as published (``engine.as_published``). The hinge is bounded: once A's error exceeds ``margin`` G feels nothing more, so the
ReID and L1(P, M) terms keep P useful and M-like.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F

from torchreid_privacy.utils.images import from_gan, to_gan

from .loop import check_finite


def _requires_grad(nets, flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def sealed_step(engine: Any, imgs: torch.Tensor, pids: torch.Tensor) -> Dict[str, float]:
    """One D1 step, one A step (if any), one G/C step; returns every loss term as a float."""
    where = (engine.epoch + 1, engine.global_step)
    o01 = engine.inference.to01(imgs)
    o, m = to_gan(o01), to_gan(engine.supervision(o01))
    p, code = engine.generate(o)
    D1, A = engine.nets["disc_op"], engine.nets.get("inverter")
    frozen = [D1] + ([A] if A is not None else [])

    # C and A see P as published (privacy.publish.train_through), D1 and L1(P, M) the raw output
    p_pub01 = engine.as_published(from_gan(p))
    p_pub = to_gan(p_pub01)
    _requires_grad(frozen, True)
    pd = p.detach()
    side = {"d_op": engine.gan_loss(engine._fwd("disc_op", o, m), True)
            + engine.gan_loss(engine._fwd("disc_op", o, pd), False)}
    check_finite(side, *where)
    engine._step(side["d_op"], ["disc_op"], center=False)
    if A is not None:  # the adversary learns to invert the current G
        side["inverter_l1"] = F.l1_loss(engine._fwd("inverter", p_pub.detach()), o)
        check_finite({"inverter_l1": side["inverter_l1"]}, *where)
        engine._step(side["inverter_l1"], ["inverter"], center=False)

    _requires_grad(frozen, False)
    terms = {"gan": engine.gan_loss(engine._fwd("disc_op", o, p, bare=True), True), "rec_p": F.l1_loss(p, m)}
    if A is not None:
        inv = F.l1_loss(engine._fwd("inverter", p_pub, bare=True), o)
        terms["inversion"] = torch.relu(engine.p.inversion.margin - inv)
        terms["inversion_l1"] = inv.detach()
    terms.update(engine._reid(torch.cat([imgs, engine.inference.normalize(p_pub01)]), pids))
    terms.update(engine.code_terms(code, pids, p_pub))
    w = engine.p.weights
    weights = {"gan": w.gan, "rec_p": w.rec_p, "reid_o": w.reid_o, "reid_p": w.reid_p, "code": w.code,
               "decode": w.decode, "cross": w.cross, "consistency": w.consistency,
               "inversion": engine.p.inversion.weight}
    main = {k: terms[k] for k in weights if k in terms}
    check_finite(main, *where)
    engine._step(sum(weights[k] * v for k, v in main.items()), ["model", "generator"])
    _requires_grad(frozen, True)
    out = {k: float(v.detach()) for k, v in terms.items()}
    out.update({k: float(v.detach()) for k, v in side.items()})
    return out
