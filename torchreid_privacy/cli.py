"""``torchreid-privacy`` command line: train | test | anonymize | recover | keygen | attack | demo |
list | config | make-data | split | bench.

Every failure a user can cause (bad config key or type, missing file, unreadable checkpoint,
bad parameter) ends in one line ``torchreid-privacy: error: ...`` naming the culprit and a
non-zero exit; an unexpected failure (a bug) is one line too, exit code 3;
``TORCHREID_PRIVACY_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

PROG = "torchreid-privacy"

from torchreid_privacy import distributed  # noqa: E402  (light: torch.distributed only)


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config-file", required=required, help="torchreid YAML config (with an optional privacy: section)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="'key value' overrides, e.g. train.max_epoch 5")


def _add_weights_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--weights", metavar="URL_OR_PATH",
                   help=f"{what}: a local file or a URL (Google Drive links via gdown), cached; "
                        "loaded with weights_only=True")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the weights file (checked before loading)")


def _weights_path(args: argparse.Namespace, configured: str = "") -> str:
    """Local path of --weights (or of ``configured``), downloaded and sha256-checked; '' if none."""
    from torchreid_privacy import weights

    spec = args.weights or configured
    if args.sha256 and not spec:
        raise ValueError("--sha256: there are no weights to check (give --weights)")
    if not spec:
        return ""
    return weights.fetch(spec, sha256=args.sha256, what="--weights" if args.weights else "model.load_weights")


def _add_key_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--key-file", metavar="PATH",
                   help=f"secret key of a keyed decoder ({what}); made by 'torchreid-privacy keygen'")


def _key(args: argparse.Namespace, keyed: bool, required: bool) -> Optional[bytes]:
    """The key from --key-file, checked against whether the decoder is keyed."""
    from torchreid_privacy.keys import read_key_file

    if not keyed:
        if args.key_file:
            raise ValueError("--key-file: the decoder is not keyed (privacy.decoder.keyed is false)")
        return None
    if not args.key_file and not required:
        return None
    return read_key_file(args.key_file)


def _apply_key(args: argparse.Namespace, engine, required: bool) -> None:
    key = _key(args, engine.keyed, required)
    if key is not None:
        engine.set_key(key)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train (privacy engine if privacy.enabled, else torchreid's engine)")
    p.add_argument("--resume", help="checkpoint file or run directory (its last.pth) to resume from; "
                                    "without --config-file the checkpoint's own config is used")
    _add_weights_args(p, "initial ReID backbone weights (sets model.load_weights)")
    _add_key_arg(p, "required when privacy.decoder.keyed is true")
    _add_config_args(p)

    p = sub.add_parser("test", help="evaluate a trained checkpoint on its test targets")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--output", help="write results.json and grids here (default: a test/ folder beside it)")
    _add_weights_args(p, "ReID backbone weights that replace the checkpoint's C (e.g. a third-party model "
                         "trained on raw images), evaluated with the checkpoint's G and G_R")
    _add_key_arg(p, "without it a keyed decoder's O-R is not measured")
    _add_config_args(p)

    for name, helptext in (("anonymize", "apply the encoder G to a folder (O -> P)"),
                           ("recover", "apply the recovery decoder G_R to a folder (P -> R)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--input", required=True, help="folder of images (never written to)")
        p.add_argument("--output", required=True, help="output folder (same file names; existing files kept)")
        p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--device", default="cuda" if _cuda() else "cpu")
        if name == "recover":
            _add_key_arg(p, "required when the checkpoint's decoder is keyed")

    p = sub.add_parser("keygen", help="write a new 128-bit secret key file (mode 0600, never overwrites)")
    p.add_argument("--output", required=True, help="key file to create")

    p = sub.add_parser("attack", help="privacy attacks on a trained run: `attack reid` (a third-party "
                                      "model trained on raw images), `attack recover` (an attacker "
                                      "decoder trained on N leaked (P, O) pairs)")
    p.add_argument("what", choices=["reid", "recover"])
    p.add_argument("--checkpoint", help="checkpoint file or run directory (default: the config's data.save_dir)")
    p.add_argument("--output", help="folder for attack.json (default: <run>/attack-<what>)")
    p.add_argument("--pairs", default="16,64,256", help="recover: leaked pair counts, comma-separated")
    p.add_argument("--steps", type=int, default=1000, help="recover: attacker training steps per pair count")
    p.add_argument("--batch-size", type=int, default=16, help="recover: attacker batch size")
    p.add_argument("--max-epoch", type=int, help="reid: third-party training epochs (default: train.max_epoch)")
    _add_key_arg(p, "for the authorized decoder's numbers of a keyed run")
    # no trailing 'key value' overrides here: they would swallow the options after `what`
    p.add_argument("--config-file", help="reid: the third party's config (default: the run's own); "
                                         "its data.save_dir names the run when --checkpoint is not given")

    p = sub.add_parser("demo", help="make the embedded dataset, train baseline/joint/progressive/progressive-keyed, "
                                    "attack the keyed run, print the tables")
    p.add_argument("--output", default="demo-output", help="run folder (default: demo-output)")
    p.add_argument("--data-root", help="where the synthetic dataset lives (default: OUTPUT/data)")
    p.add_argument("--modes", default="baseline,joint,progressive,progressive-keyed")
    p.add_argument("--no-attacks", action="store_true", help="skip the third-party ReID and recovery attacks")
    p.add_argument("--attack-pairs", default="16,64,256", help="leaked pair counts of the recovery attack")
    p.add_argument("--attack-steps", type=int, default=1000, help="recovery attacker training steps")
    _add_config_args(p)

    sub.add_parser("list", help="print every registered component by kind")

    p = sub.add_parser("bench", help="GPU microbenchmarks: `bench kernels` checks and times every Triton kernel")
    p.add_argument("what", choices=["kernels"])
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark (see --help after 'kernels')")

    p = sub.add_parser("config", help="print the merged config as YAML")
    _add_config_args(p)

    p = sub.add_parser("make-data", help="write the synthetic Market-1501-layout dataset")
    p.add_argument("--root", required=True)
    p.add_argument("--ids", type=int, default=None, help="number of identities (default: the generator's)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("split", help="identity-disjoint train/val split of a torchreid dataset's train set")
    p.add_argument("--dataset", required=True, help="torchreid dataset name, e.g. market1501")
    p.add_argument("--root", required=True)
    p.add_argument("--output", required=True, help="JSON file to write (never overwritten)")
    p.add_argument("--val-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="split seed (privacy.split_seed)")
    return ap


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        return False


def _cmd_train(args: argparse.Namespace) -> int:
    from torchreid_privacy import checkpoint
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
        cfg.model.load_weights = _weights_path(args, cfg.model.load_weights)
    if cfg.privacy.enabled:
        keyed = cfg.privacy.decoder.keyed and cfg.privacy.mode != "baseline"
        return _train_privacy(cfg, resume, _key(args, keyed, required=True))
    if distributed.launched_by_torchrun() or cfg.train.amp not in ("off", False) or cfg.train.sync_bn:
        raise ValueError("privacy.enabled: torchrun, train.amp and train.sync_bn need the privacy engine "
                         "(privacy.enabled true); torchreid's own engines run single-process in float32")
    if resume:
        cfg.model.resume = resume
    engine = build_torchreid_engine(cfg)
    engine.run(**engine_run_kwargs(cfg))
    return 0


def _print_results(by_mode: dict) -> None:
    from torchreid_privacy.report import format_table, summarize

    rows = {}
    for mode, res in by_mode.items():
        for target, r in (res.get("test") or {}).items():
            rows[mode if len(res["test"]) == 1 else f"{mode}/{target}"] = summarize(r)
    if rows:
        print(format_table(rows))


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
            _print_results({cfg.privacy.mode: results})
    finally:
        distributed.shutdown()
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    from torchreid_privacy.builder import engine_from_checkpoint

    replacement = _weights_path(args)  # before building: a bad file or hash fails fast
    engine, path = engine_from_checkpoint(args.checkpoint, args.opts, config_file=args.config_file)
    _apply_key(args, engine, required=False)
    cfg = engine.config
    results = {"mode": cfg.privacy.mode, "checkpoint": path, "test": {}}
    if replacement:
        from torchreid_privacy.weights import load_backbone_weights

        load_backbone_weights(engine.model, replacement)
        results["weights"] = replacement
    out = args.output or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "test")
    for target in engine.test_targets:
        results["test"][target] = engine.evaluate(target, os.path.join(out, f"grid-{target}.png"), desc="test")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)
    _print_results({cfg.privacy.mode: results})
    print(f"results: {os.path.join(out, 'results.json')}")
    return 0


def _cmd_folder(args: argparse.Namespace, which: str) -> int:
    from torchreid_privacy.builder import nets_from_checkpoint
    from torchreid_privacy.folder import check_folders, process_folder
    from torchreid_privacy.images import from_gan, to_gan

    check_folders(args.input, args.output)  # fail before loading anything
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")
    cfg, nets = nets_from_checkpoint(args.checkpoint, (which,), device=args.device)
    net = nets[which]
    fn = lambda x: from_gan(net(to_gan(x)))  # noqa: E731
    if which == "decoder":
        key = _key(args, cfg.privacy.decoder.keyed, required=True)
        if key is not None:
            from torchreid_privacy.keys import key_planes

            planes = key_planes(key, cfg.privacy.decoder.key_channels, cfg.data.height, cfg.data.width)
            planes = planes.to(args.device)
            fn = lambda x: from_gan(net(to_gan(x), planes))  # noqa: E731
    report = process_folder(args.input, args.output, fn,
                            height=cfg.data.height, width=cfg.data.width, batch_size=args.batch_size,
                            device=args.device, desc="anonymize" if which == "generator" else "recover")
    print(report.line())
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from torchreid_privacy.keys import write_key_file

    path = write_key_file(args.output)
    print(f"128-bit key written to {path} (mode 0600); keep it secret, it is never stored anywhere else")
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from torchreid_privacy import checkpoint
    from torchreid_privacy.config import load_config

    cfg = load_config(args.config_file) if args.config_file else None
    if not args.checkpoint and cfg is None:
        raise ValueError("--checkpoint: required (or --config-file of the trained run, whose data.save_dir is used)")
    from torchreid_privacy.keys import read_key_file

    path = checkpoint.resolve(args.checkpoint or cfg.data.save_dir)
    # an unkeyed run refuses a key when the attack loads it (engine.set_key)
    key = read_key_file(args.key_file) if args.key_file else None
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    out = args.output or os.path.join(run_dir, f"attack-{args.what}")
    os.makedirs(out, exist_ok=True)
    if args.what == "reid":
        from torchreid_privacy.attacks import reid_attack

        result = reid_attack(cfg, path, out, key=key, max_epoch=args.max_epoch)
        lines = [f"{s:5s} rank-1 {100 * result[s]['R1']:5.1f}  mAP {100 * result[s]['mAP']:5.1f}"
                 for s in ("O->O", "O->P", "P->O", "P->P")]
    else:
        from torchreid_privacy.attacks import recovery_attack

        pairs = [_int_flag("--pairs", v) for v in args.pairs.split(",") if v.strip()]
        result = recovery_attack(path, pairs, steps=args.steps, batch_size=args.batch_size, key=key)
        lines = [f"{name:>10s}  PSNR {result[name]['psnr']:6.2f}  SSIM {result[name]['ssim']:.3f}"
                 for name in ["authorized", *map(str, pairs)]]
    tmp = os.path.join(out, "attack.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=float)
    os.replace(tmp, os.path.join(out, "attack.json"))
    print("\n".join(lines))
    print(f"results: {os.path.join(out, 'attack.json')}")
    return 0


def _int_flag(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text.strip()!r}") from None


def _cmd_list(args: argparse.Namespace) -> int:
    from torchreid_privacy import bridge
    from torchreid_privacy.registry import ALL_REGISTRIES

    for kind, reg in ALL_REGISTRIES.items():
        print(f"{kind}: {', '.join(reg.names())}")
    print(f"torchreid models: {', '.join(bridge.available_models())}")
    print(f"torchreid datasets: {', '.join(bridge.available_datasets())}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from torchreid_privacy.config import dump_yaml, load_config

    print(dump_yaml(load_config(args.config_file, args.opts)), end="")
    return 0


def _cmd_make_data(args: argparse.Namespace) -> int:
    from torchreid_privacy.data.synthetic import make_synthetic_market

    kwargs = {"seed": args.seed}
    if args.ids is not None:
        kwargs["num_ids"] = args.ids
    path = make_synthetic_market(args.root, **kwargs)
    print(f"synthetic Market-1501 layout at {path}")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from torchreid_privacy.data.split import write_split
    from torchreid_privacy.data.validate import torchreid_data_errors

    with torchreid_data_errors():
        summary = write_split(args.dataset, args.root, args.output, val_ratio=args.val_ratio, seed=args.seed)
    print(summary if isinstance(summary, str) else f"split written to {args.output}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from torchreid_privacy.demo import run_demo

    run_demo(args.output, data_root=args.data_root, modes=[m for m in args.modes.split(",") if m],
             config_file=args.config_file, overrides=args.opts, attacks=not args.no_attacks,
             attack_pairs=[_int_flag("--attack-pairs", v) for v in args.attack_pairs.split(",") if v.strip()],
             attack_steps=args.attack_steps)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from torchreid_privacy import bench

    return bench.main(args.args)


COMMANDS = {
    "bench": _cmd_bench,
    "train": _cmd_train,
    "test": _cmd_test,
    "anonymize": lambda a: _cmd_folder(a, "generator"),
    "recover": lambda a: _cmd_folder(a, "decoder"),
    "demo": _cmd_demo,
    "keygen": _cmd_keygen,
    "attack": _cmd_attack,
    "list": _cmd_list,
    "config": _cmd_config,
    "make-data": _cmd_make_data,
    "split": _cmd_split,
}


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    if os.environ.get("TORCHREID_PRIVACY_DEBUG"):
        return COMMANDS[args.command](args)
    from torchreid_privacy.bridge import CheckpointError
    from torchreid_privacy.config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, ValueError, KeyError, OSError, FloatingPointError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line, with the way to the traceback
        print(f"{PROG}: error: internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
              f"rerun with TORCHREID_PRIVACY_DEBUG=1 for the traceback", file=sys.stderr)
        return 3


def _one_line(msg: str) -> str:
    return "; ".join(line.strip() for line in str(msg).splitlines() if line.strip()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
