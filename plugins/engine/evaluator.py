"""Four-setting evaluation of a ``PrivacyModel`` on one target's query and gallery, on P as published.

Why its own module: the training engine (validation, upgrade gates, final test), ``torchreid-privacy
test`` and the attacks score runs with it, so their numbers are the same numbers. P (and M) are
scored as the files a user publishes (``PrivacyModel.publish``: 8-bit, ``privacy.publish``'s format
and quality); the float P that never leaves memory is scored beside it as ``rank_unpublished`` /
``image_unpublished``. Under torchrun every rank embeds a strided share of each split and the
features are gathered, so every rank computes the same ranks and PSNR/SSIM (and takes the same
upgrade decision).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from tqdm import tqdm

from torchreid_privacy.metrics.settings import SETTINGS, ImageMetricAccumulator, evaluate_settings
from torchreid_privacy.inference import PrivacyModel
from torchreid_privacy.publish import round_to_8bit
from torchreid_privacy.utils import distributed
from torchreid_privacy.utils.images import save_grid

PAIRS = ("O-M", "O-P", "O-R", "O-R wrong key")
UNPUBLISHED_PAIRS = ("O-M", "O-P")
BatchHook = Callable[[str, Any, Dict[str, torch.Tensor]], None]


def parse_eval_batch(data: Mapping[str, Any]):
    """``(images, pids, camids)`` of a torchreid test batch (as ``Engine.parse_data_for_eval``)."""
    return data["img"], data["pid"], data["camid"]


class Evaluator:
    """Ranks (O->O, O->P, P->O, P->P) and image metrics (O-M, O-P, O-R) of ``model``.

    P is G(O), or M for a baseline model, as published. A keyed model without its key is scored
    without O-R; with the key it also reports "O-R wrong key" (random wrong keys). R is recovered
    from published P (what the key holder receives). ``eval_seed`` seeds the noise desensitizer
    and the wrong keys, so evaluations are repeatable. ``batch_hooks``: callables
    ``(split, data, images)`` run on every batch, ``images`` holding ``O``, ``M``, ``P`` (published),
    ``P unpublished`` and ``M unpublished`` in [0,1] and C's features ``f O`` / ``f P``.
    """

    def __init__(self, model: PrivacyModel, eval_seed: int = 0, grid_images: int = 8,
                 parse: Callable[[Any], tuple] = parse_eval_batch, settings: Sequence[str] = SETTINGS,
                 per_query: bool = False) -> None:
        self.model, self.eval_seed, self.grid_images, self.parse = model, eval_seed, grid_images, parse
        self.per_query = per_query  # add "hits": each setting's rank-1 hit per query (paired comparisons)
        self.settings = tuple(settings)  # e.g. SETTINGS + ("O->M",): M is embedded only when named
        self.batch_hooks: List[BatchHook] = []

    @torch.no_grad()
    def __call__(self, loaders: Mapping[str, Any], grid_path: Optional[str] = None,
                 desc: str = "eval") -> Dict[str, Any]:
        """``{"rank": {setting: {R1, R5, R10, mAP, mINP}}, "image": {pair: {psnr, psnr_dataset, ssim, count}},
        "rank_unpublished": ..., "image_unpublished": ..., "publish": {format, quality}}``."""
        model = self.model
        device = model.device
        gen = torch.Generator(device=device).manual_seed(self.eval_seed)
        acc = {k: ImageMetricAccumulator() for k in PAIRS}
        raw = {k: ImageMetricAccumulator() for k in UNPUBLISHED_PAIRS}
        can_recover = model.decoder is not None and (not model.keyed or model.has_key)
        feats: Dict[str, Dict[str, torch.Tensor]] = {}
        ids: Dict[str, Dict[str, torch.Tensor]] = {}
        grid = None
        main = distributed.is_main()
        with_m = any("M" in s.split("->") for s in self.settings)
        kinds = ["P", "P unpublished"] + (["M"] if with_m else [])
        for split in ("query", "gallery"):
            cols: Dict[str, List[torch.Tensor]] = {k: [] for k in ["pids", "camids", "O", *kinds]}
            for data in tqdm(distributed.shard_loader(loaders[split]), desc=f"{desc}/{split}", leave=False,
                             disable=None if main else True, dynamic_ncols=True):
                imgs, pid, camid = self.parse(data)
                imgs = imgs.to(device)
                o01 = round_to_8bit(model.to01(imgs))
                m_raw = model.conventional(o01, gen)
                p_raw = m_raw if model.generator is None else model.anonymize(o01)
                m01 = model.publish(m_raw)
                p01 = m01 if model.generator is None else model.publish(p_raw)
                for name, x in (("O-M", m01), ("O-P", p01)):
                    acc[name].update(o01, x)
                for name, x in (("O-M", m_raw), ("O-P", p_raw)):
                    raw[name].update(o01, x)
                r01 = None
                if can_recover:
                    r01 = model.recover(p01)
                    acc["O-R"].update(o01, r01)
                if model.keyed:  # what a holder of P and the decoder, without the key, recovers
                    acc["O-R wrong key"].update(o01, model.recover(p01, wrong_key_generator=gen))
                images = {"O": o01, "M": m01, "P": p01, "P unpublished": p_raw, "M unpublished": m_raw,
                          "f O": model.embed(imgs), "f P": model.embed(model.normalize(p01))}
                cols["O"].append(images["f O"].cpu())
                cols["P"].append(images["f P"].cpu())
                cols["P unpublished"].append(model.embed(model.normalize(p_raw)).cpu())
                if with_m:
                    cols["M"].append(model.embed(model.normalize(m01)).cpu())
                cols["pids"].append(torch.as_tensor(pid))
                cols["camids"].append(torch.as_tensor(camid))
                for hook in self.batch_hooks:
                    hook(split, data, images)
                if grid is None and grid_path and main:
                    grid = [c[: self.grid_images] for c in [o01, m01, p01] + ([r01] if r01 is not None else [])]
            local = [torch.cat(v) for v in cols.values()]
            gathered = [distributed.unshard(list(col)) for col in zip(*distributed.gather_objects(local))]
            merged = dict(zip(cols, gathered))
            ids[split] = {"pids": merged.pop("pids"), "camids": merged.pop("camids")}
            feats[split] = merged
        for table in (acc, raw):
            for name, parts in zip(list(table), zip(*distributed.gather_objects(list(table.values())))):
                table[name] = ImageMetricAccumulator.merged(parts)
        if grid is not None:
            save_grid(grid_path, grid)
        labels = dict(q_pids=ids["query"]["pids"], g_pids=ids["gallery"]["pids"],
                      q_camids=ids["query"]["camids"], g_camids=ids["gallery"]["camids"])
        # every rank holds the gathered features: each ranks 1/N of the query blocks
        shard = distributed.is_initialized()
        hits: Optional[Dict[str, Any]] = {} if self.per_query else None
        rank = evaluate_settings(feats, settings=self.settings, shard_queries=shard, hits=hits, **labels)
        unpublished = {side: {"O": feats[side]["O"], "P": feats[side]["P unpublished"]} for side in feats}
        with_p = [s for s in SETTINGS if "P" in s.split("->")]
        out = {"rank": rank, "image": {k: v.result() for k, v in acc.items() if v.count},
               "rank_unpublished": evaluate_settings(unpublished, settings=with_p, shard_queries=shard, **labels),
               "image_unpublished": {k: v.result() for k, v in raw.items() if v.count},
               "publish": model.channel.as_dict()}
        if hits is not None:
            out["hits"] = {k: v.tolist() for k, v in hits.items()}
        return out
