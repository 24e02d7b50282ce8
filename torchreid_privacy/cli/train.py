"""``train``, ``test`` and ``config``."""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional

from torchreid_privacy.utils import distributed

from .common import add_config_args, add_key_arg, add_weights_args, print_results, read_key, weights_path


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train (privacy engine if privacy.enabled, else torchreid's engine)")
    p.add_argument("--resume", help="checkpoint file or run directory (its last.pth) to resume from; "
                                    "without --config-file the checkpoint's own config is used")
    add_weights_args(p, "initial ReID backbone weights (sets model.load_weights)")
    add_key_arg(p, "required when privacy.decoder.keyed is true")
    p.add_argument("--floor-from", metavar="RUN", help="set privacy.r1_floor to the validation O->P rank-1 of this "
                                                       "finished joint run (its directory or results.json)")
    add_config_args(p)
    p.set_defaults(func=train)

    p = sub.add_parser("test", help="evaluate a trained checkpoint on its test targets")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--output", help="write results.json and grids here (default: a test/ folder beside it)")
    add_weights_args(p, "ReID backbone weights that replace the checkpoint's C (e.g. a third-party model "
                        "trained on raw images), evaluated with the checkpoint's G and G_R")
    add_key_arg(p, "without it a keyed decoder's O-R is not measured")
    p.add_argument("--features", metavar="DIR", help="keep the features the evaluation computes (C on O, C on P "
                                                      "as published) as memory-mapped shards in DIR, appended "
                                                      "by file content; search --cache DIR reuses them")
    add_config_args(p)
    p.set_defaults(func=test)

    p = sub.add_parser("config", help="print the merged config as YAML")
    add_config_args(p)
    p.set_defaults(func=config)


def train(args: argparse.Namespace) -> int:
    from torchreid_privacy.utils import checkpoint
    from torchreid_privacy.builder import build_torchreid_engine
    from torchreid_privacy.config import engine_run_kwargs, load_config

    resume = None
    if args.resume:  # fail before building anything if the checkpoint is missing or damaged
        resume = checkpoint.resolve(args.resume, prefer=(checkpoint.LAST, checkpoint.BEST), flag="--resume")
    if args.config_file:
        cfg = load_config(args.config_file, args.opts)
    elif resume:
        ck = checkpoint.load(resume)
        if not ck.get("config"):
            raise ValueError(f"--config-file: required, {resume} carries no config")
        cfg = load_config(base=ck["config"], overrides=args.opts)
        del ck
    else:
        raise ValueError("--config-file: required (or --resume a run that carries its config)")
    if args.weights or args.sha256:
        cfg.model.load_weights = weights_path(args, cfg.model.load_weights)
    if args.floor_from:
        cfg.privacy.r1_floor = _floor_from(args.floor_from)
    elif cfg.privacy.enabled and cfg.privacy.r1_floor == "auto":
        raise ValueError("--floor-from: privacy.r1_floor is auto; give the finished joint run to take it from")
    if cfg.privacy.enabled:
        keyed = cfg.privacy.decoder.keyed and cfg.privacy.mode != "baseline"
        return _train_privacy(cfg, resume, read_key(args, keyed, required=True))
    if distributed.launched_by_torchrun() or cfg.train.amp not in ("off", False) or cfg.train.sync_bn:
        raise ValueError("privacy.enabled: torchrun, train.amp and train.sync_bn need the privacy engine "
                         "(privacy.enabled true); torchreid's own engines run single-process in float32")
    if resume:
        cfg.model.resume = resume
    build_torchreid_engine(cfg).run(**engine_run_kwargs(cfg))
    return 0


def _floor_from(run: str) -> float:
    import json

    from torchreid_privacy.plugins.engine.upgrade import floor_from_results

    path = os.path.join(run, "results.json") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--floor-from: no results.json at {path}")
    with open(path, encoding="utf-8") as f:
        floor = floor_from_results(json.load(f))
    logging.getLogger(__name__).info("privacy.r1_floor %.3f from %s", floor, path)
    return floor


def _train_privacy(cfg, resume: Optional[str], key: Optional[bytes] = None) -> int:
    """Privacy-engine training; one process, or one of N under torchrun (rank 0 prints)."""
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.config import use_gpu

    if distributed.launched_by_torchrun():
        ctx = distributed.init_from_env(use_gpu(cfg))
        logging.getLogger().setLevel(logging.INFO if ctx.rank == 0 else logging.WARNING)
    try:
        engine = build_privacy_engine(cfg)
        if key is not None:
            engine.set_key(key)
        results = engine.run_privacy(save_dir=cfg.data.save_dir, max_epoch=cfg.train.max_epoch,
                                     start_epoch=cfg.train.start_epoch,
                                     print_freq=cfg.train.print_freq if distributed.is_main() else 10**9,
                                     resume=resume)
        if distributed.is_main():
            print_results({cfg.privacy.mode: results})
    finally:
        distributed.shutdown()
    return 0


def test(args: argparse.Namespace) -> int:
    from torchreid_privacy.utils import atomic
    from torchreid_privacy.trained_run import TrainedRun

    replacement = weights_path(args)  # before building: a bad file or hash fails fast
    features = None
    if args.features:  # before any work: a file, a link or a file on the way is refused naming the flag
        features = atomic.safe_output_dir(args.features, "--features")
    run = TrainedRun.open(args.checkpoint, args.opts, config_file=args.config_file)
    key = read_key(args, run.model.keyed, required=False)
    if key is not None:
        run.model.set_key(key)
    results = {"mode": run.config.privacy.mode, "checkpoint": run.path, "test": {}}
    if replacement:
        from torchreid_privacy.utils.weights import load_backbone_weights

        load_backbone_weights(run.model.reid, replacement)
        results["weights"] = replacement
    out = args.output or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(run.path))), "test")
    caches = {}
    if features is not None:
        from torchreid_privacy.search.feature_cache import evaluation_hook

        caches, hook = evaluation_hook(run.model, features)  # its shards are checked here, before the evaluation
        run.evaluator.batch_hooks.append(hook)
    for target in run.test_targets:
        results["test"][target] = run.evaluate(target, os.path.join(out, f"grid-{target}.png"))
    for kind, cache in caches.items():
        cache.save()
        print(f"features ({kind}): {len(cache)} in {cache.path}")
    atomic.write_json(os.path.join(out, "results.json"), results)
    print_results({run.config.privacy.mode: results})
    print(f"results: {os.path.join(out, 'results.json')}")
    return 0


def config(args: argparse.Namespace) -> int:
    from torchreid_privacy.config import dump_yaml, load_config

    print(dump_yaml(load_config(args.config_file, args.opts)), end="")
    return 0
