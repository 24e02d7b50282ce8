"""``attack reid`` and ``attack recover``: privacy attacks on a trained run."""
from __future__ import annotations

import argparse
import os

from .common import add_key_arg, int_list


def add_parsers(sub) -> None:
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
    add_key_arg(p, "for the authorized decoder's numbers of a keyed run")
    p.add_argument("--config-file", help="reid: the third party's config (default: the run's own); "
                                         "its data.save_dir names the run when --checkpoint is not given")
    p.set_defaults(func=attack)


def attack(args: argparse.Namespace) -> int:
    from torchreid_privacy.utils import atomic
    from torchreid_privacy.utils import checkpoint
    from torchreid_privacy.config import load_config
    from torchreid_privacy.metrics.settings import SETTINGS
    from torchreid_privacy.sealing.keys import read_key_file

    cfg = load_config(args.config_file) if args.config_file else None
    if not args.checkpoint and cfg is None:
        raise ValueError("--checkpoint: required (or --config-file of the trained run, whose data.save_dir is used)")
    path = checkpoint.resolve(args.checkpoint or cfg.data.save_dir)
    key = read_key_file(args.key_file) if args.key_file else None  # an unkeyed run refuses it on load
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    out = args.output or os.path.join(run_dir, f"attack-{args.what}")
    os.makedirs(out, exist_ok=True)
    if args.what == "reid":
        from torchreid_privacy.attacks import reid_attack

        result = reid_attack(cfg, path, out, key=key, max_epoch=args.max_epoch)
        lines = [f"{s:5s} rank-1 {100 * result[s]['R1']:5.1f}  mAP {100 * result[s]['mAP']:5.1f}"
                 for s in (*SETTINGS, "O->M")]
    else:
        from torchreid_privacy.attacks import recovery_attack

        from torchreid_privacy.studies.report import format_psnr_rows

        pairs = int_list("--pairs", args.pairs)
        result = recovery_attack(path, pairs, steps=args.steps, batch_size=args.batch_size, key=key)
        rows = {"key holder": result["authorized"], "P itself": result["protected"], "M itself": result["conventional"]}
        for n in pairs:
            rows[f"attacker on P, {n} pairs"] = result[str(n)]
            rows[f"attacker on M, {n} pairs"] = result["M"][str(n)]
        lines = [format_psnr_rows(f"inversion attack ({args.steps} steps)", rows)]
    atomic.write_json(os.path.join(out, "attack.json"), result)
    print("\n".join(lines))
    print(f"results: {os.path.join(out, 'attack.json')}")
    return 0
