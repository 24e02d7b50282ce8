"""``torchreid-privacy demo``: the main job on the embedded dataset.

Makes the synthetic Market-1501-layout set if missing, trains ``baseline``, ``joint`` and
``progressive`` with the quickstart config (small backbone, small generators, CPU-sized),
evaluates each on the test split, prints the privacy-utility table and writes
``OUTPUT/results.json`` plus O | M | P | R grids under ``OUTPUT/<mode>/grids``.
"""
from __future__ import annotations

import json
import os
import time
from importlib import resources
from typing import Any, Dict, Optional, Sequence

from torchreid_privacy.config import load_config
from torchreid_privacy.report import format_table, summarize

QUICKSTART = "quickstart.yaml"


def packaged_config(name: str) -> str:
    """Path of a YAML shipped in ``torchreid_privacy.configs`` (the repo's ``configs/``)."""
    path = resources.files("torchreid_privacy.configs").joinpath(name)
    return str(path)


def run_demo(output: str, data_root: Optional[str] = None, modes: Sequence[str] = ("baseline", "joint", "progressive"),
             config_file: Optional[str] = None, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.data.synthetic import make_synthetic_market

    for mode in modes:
        if mode not in ("baseline", "joint", "progressive"):
            raise ValueError(f"--modes: unknown mode '{mode}' (baseline, joint, progressive)")
    data_root = data_root or os.path.join(output, "data")
    t_start = time.time()
    make_synthetic_market(data_root)
    results: Dict[str, Any] = {}
    timings: Dict[str, float] = {}
    for mode in modes:
        cfg = load_config(config_file or packaged_config(QUICKSTART),
                          ["data.root", data_root, "data.save_dir", os.path.join(output, mode),
                           "privacy.enabled", "true", "privacy.mode", mode, *overrides])
        t0 = time.time()
        engine = build_privacy_engine(cfg)
        res = engine.run_privacy(save_dir=cfg.data.save_dir, max_epoch=cfg.train.max_epoch,
                                 print_freq=cfg.train.print_freq)
        timings[mode] = round(time.time() - t0, 1)
        target = next(iter(res["test"]))
        results[mode] = summarize(res["test"][target])
        results[mode]["upgrades"] = len(res["upgrades"])
        print(f"[{mode}] done in {timings[mode]:.0f}s, upgrades: {len(res['upgrades'])}", flush=True)
    os.makedirs(output, exist_ok=True)
    tmp = os.path.join(output, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, os.path.join(output, "results.json"))
    print()
    print(format_table({m: r for m, r in results.items()}))
    print(f"\nrank-1 in %, PSNR in dB; total {time.time() - t_start:.0f}s "
          f"({', '.join(f'{m} {t:.0f}s' for m, t in timings.items())})")
    print(f"results: {os.path.join(output, 'results.json')}; grids: {output}/<mode>/grids/")
    return results
