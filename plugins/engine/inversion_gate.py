"""The inversion gate of the progressive upgrade (``privacy.upgrade.inversion_gate``).

Why: the paper's gates compare PSNR/SSIM(O, P) with M's, which says how close P *looks* to O, not
how much of O it *carries*; each upgrade makes G's own output the new M, so a G that keeps a shirt's
checks (which the mosaic erases) ratchets that leak in. The gate asks the question an attacker
would: a fresh attacker U-Net (``metrics.inversion``) trained for ``steps`` steps on ``pairs``
training images as published (P, O) must not invert the validation images better than the same
attacker trained on the conventional (M, O) pairs, plus ``margin_db``. The M number is measured
once per run (M does not change); it is never the adversary G trains against.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from torchreid_privacy import bridge
from torchreid_privacy.metrics.inversion import inversion_psnr
from torchreid_privacy.publish import round_to_8bit
from torchreid_privacy.utils import distributed

_SEED = 0


class InversionGate:
    """Measures ``{"psnr_p", "psnr_m", "margin_db"}`` for the engine's current G (see the module)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cfg = engine.config
        self.settings = engine.p.upgrade.inversion_gate
        self.psnr_m: Optional[float] = None  # the conventional M's, measured once
        self._images: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def _load(self, paths: List[str]) -> torch.Tensor:
        tf, model = self.engine.datamanager.transform_te, self.engine.inference
        batches = [torch.stack([tf(bridge.read_image(p)) for p in paths[i:i + 64]]) for i in range(0, len(paths), 64)]
        return torch.cat([round_to_8bit(model.to01(b.to(model.device))) for b in batches])

    def images(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(O of ``pairs`` seeded training images, O of the validation query+gallery images) in [0,1]."""
        if self._images is None:
            train = [item[0] for item in self.engine.train_loader.dataset.train]
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(_SEED)).tolist()
            val = self.engine.test_loader[self.engine.val_target]
            held = [item[0] for split in ("query", "gallery") for item in getattr(val[split].dataset, split)]
            self._images = (self._load([train[i] for i in order[:self.settings.pairs]]), self._load(held))
        return self._images

    @torch.no_grad()
    def _published(self, o01: torch.Tensor, conventional: bool) -> torch.Tensor:
        model = self.engine.inference
        if conventional:
            gen = torch.Generator(device=model.device).manual_seed(_SEED)
            return torch.cat([model.publish(model.conventional(o01[i:i + 64], gen)) for i in range(0, len(o01), 64)])
        return torch.cat([model.protect(o01[i:i + 64]) for i in range(0, len(o01), 64)])

    def _psnr(self, conventional: bool) -> float:
        o_train, o_held = self.images()
        train = (self._published(o_train, conventional), o_train)
        held = (self._published(o_held, conventional), o_held)
        return inversion_psnr(self.cfg, train, held, steps=self.settings.steps, seed=_SEED)

    def measure(self) -> Dict[str, float]:
        """The gate's numbers for G as it is now (eval mode, every rank takes rank 0's)."""
        self.engine.set_model_mode("eval")
        try:
            if self.psnr_m is None:
                self.psnr_m = distributed.gather_objects(self._psnr(conventional=True))[0]
            psnr_p = distributed.gather_objects(self._psnr(conventional=False))[0]
        finally:
            self.engine.set_model_mode("train")
            if self.engine.supervisor is not None:
                self.engine.supervisor.eval()
        return {"psnr_p": psnr_p, "psnr_m": self.psnr_m, "margin_db": float(self.settings.margin_db)}
