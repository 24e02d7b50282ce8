"""Four-setting evaluation of a ``PrivacyModel`` on one target's query and gallery.

Why its own module: the training engine (validation, final test), ``torchreid-privacy test`` and
the attacks score runs with it, so their numbers are the same numbers. Under torchrun every rank
embeds a strided share of each split and the features are gathered, so every rank computes the
same ranks and PSNR/SSIM (and takes the same upgrade decision).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch
from tqdm import tqdm

from torchreid_privacy.utils import distributed
from torchreid_privacy.metrics.settings import SETTINGS, ImageMetricAccumulator, evaluate_settings
from torchreid_privacy.utils.images import save_grid
from torchreid_privacy.inference import PrivacyModel

PAIRS = ("O-M", "O-P", "O-R", "O-R wrong key")


def parse_eval_batch(data: Mapping[str, Any]):
    """``(images, pids, camids)`` of a torchreid test batch (as ``Engine.parse_data_for_eval``)."""
    return data["img"], data["pid"], data["camid"]


class Evaluator:
    """Ranks (O->O, O->P, P->O, P->P) and image metrics (O-M, O-P, O-R) of ``model``.

    P is G(O), or M for a baseline model. A keyed model without its key is scored without O-R;
    with the key it also reports "O-R wrong key" (random wrong keys). ``eval_seed`` seeds the
    noise desensitizer and the wrong keys, so evaluations are repeatable.
    """

    def __init__(self, model: PrivacyModel, eval_seed: int = 0, grid_images: int = 8,
                 parse: Callable[[Any], tuple] = parse_eval_batch, settings: Sequence[str] = SETTINGS) -> None:
        self.model, self.eval_seed, self.grid_images, self.parse = model, eval_seed, grid_images, parse
        self.settings = tuple(settings)  # e.g. SETTINGS + ("O->M",): M is embedded only when named

    @torch.no_grad()
    def __call__(self, loaders: Mapping[str, Any], grid_path: Optional[str] = None,
                 desc: str = "eval") -> Dict[str, Any]:
        """``{"rank": {setting: {R1, R5, R10, mAP, mINP}}, "image": {pair: {psnr, psnr_dataset, ssim, count}}}``."""
        model = self.model
        device = model.device
        gen = torch.Generator(device=device).manual_seed(self.eval_seed)
        acc = {k: ImageMetricAccumulator() for k in PAIRS}
        can_recover = model.decoder is not None and (not model.keyed or model.has_key)
        feats: Dict[str, Dict[str, torch.Tensor]] = {}
        ids: Dict[str, Dict[str, torch.Tensor]] = {}
        grid = None
        main = distributed.is_main()
        with_m = any("M" in s.split("->") for s in self.settings)
        for split in ("query", "gallery"):
            fo, fp, fm, pids, camids = [], [], [], [], []
            for data in tqdm(distributed.shard_loader(loaders[split]), desc=f"{desc}/{split}", leave=False,
                             disable=None if main else True, dynamic_ncols=True):
                imgs, pid, camid = self.parse(data)
                imgs = imgs.to(device)
                o01 = model.to01(imgs)
                m01 = model.conventional(o01, gen)
                p01 = m01 if model.generator is None else model.anonymize(o01)
                acc["O-M"].update(o01, m01)
                acc["O-P"].update(o01, p01)
                r01 = None
                if can_recover:
                    r01 = model.recover(p01)
                    acc["O-R"].update(o01, r01)
                if model.keyed:  # what a holder of P and the decoder, without the key, recovers
                    acc["O-R wrong key"].update(o01, model.recover(p01, wrong_key_generator=gen))
                fo.append(model.embed(imgs).cpu())
                fp.append(model.embed(model.normalize(p01)).cpu())
                if with_m:
                    fm.append(model.embed(model.normalize(m01)).cpu())
                pids.append(torch.as_tensor(pid))
                camids.append(torch.as_tensor(camid))
                if grid is None and grid_path and main:
                    cols = [o01, m01, p01] + ([r01] if r01 is not None else [])
                    grid = [c[: self.grid_images] for c in cols]
            local = [torch.cat(pids), torch.cat(camids), torch.cat(fo), torch.cat(fp)] + ([torch.cat(fm)] if with_m else [])
            gathered = [distributed.unshard(list(col)) for col in zip(*distributed.gather_objects(local))]
            ids[split] = {"pids": gathered[0], "camids": gathered[1]}
            feats[split] = dict(zip("OPM", gathered[2:]))
        for name, merged in zip(acc, zip(*distributed.gather_objects(list(acc.values())))):
            acc[name] = ImageMetricAccumulator.merged(merged)
        if grid is not None:
            save_grid(grid_path, grid)
        rank = evaluate_settings(feats, q_pids=ids["query"]["pids"], g_pids=ids["gallery"]["pids"],
                                 q_camids=ids["query"]["camids"], g_camids=ids["gallery"]["camids"],
                                 settings=self.settings)
        return {"rank": rank, "image": {k: v.result() for k, v in acc.items() if v.count}}
