"""What several subcommands share: config/override, weights and key arguments, result tables."""
from __future__ import annotations

import argparse
from typing import Optional

PROG = "torchreid-privacy"


def add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--config-file`` plus trailing ``key value`` overrides (collected by ``cli.main``, so flags
    may come before or after them)."""
    p.add_argument("--config-file", required=required, help="torchreid YAML config (with an optional privacy: section)")
    p.set_defaults(takes_overrides=True)
    p.epilog = ((p.epilog or "") + " Any further 'key value' pairs override the config, "
                "e.g. train.max_epoch 5 privacy.mode joint.").strip()


def add_weights_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--weights", metavar="URL_OR_PATH",
                   help=f"{what}: a local file or a URL (Google Drive links via gdown), cached; "
                        "loaded with weights_only=True")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the weights file (checked before loading)")


def weights_path(args: argparse.Namespace, configured: str = "") -> str:
    """Local path of --weights (or of ``configured``), downloaded and sha256-checked; '' if none."""
    from torchreid_privacy.utils import weights

    spec = args.weights or configured
    if args.sha256 and not spec:
        raise ValueError("--sha256: there are no weights to check (give --weights)")
    if not spec:
        return ""
    return weights.fetch(spec, sha256=args.sha256, what="--weights" if args.weights else "model.load_weights")


def add_key_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--key-file", metavar="PATH",
                   help=f"secret key of a keyed decoder ({what}); made by 'torchreid-privacy keygen'")


def read_key(args: argparse.Namespace, keyed: bool, required: bool) -> Optional[bytes]:
    """The key from --key-file, checked against whether the decoder is keyed."""
    from torchreid_privacy.sealing.keys import read_key_file

    if not keyed:
        if args.key_file:
            raise ValueError("--key-file: the decoder is not keyed (privacy.decoder.keyed is false)")
        return None
    if not args.key_file and not required:
        return None
    return read_key_file(args.key_file)


def int_list(flag: str, text: str) -> list:
    """Comma-separated integers of ``flag``."""
    out = []
    for v in text.split(","):
        if v.strip():
            try:
                out.append(int(v))
            except ValueError:
                raise ValueError(f"{flag}: expected comma-separated integers, got {v.strip()!r}") from None
    return out


def print_results(by_mode: dict) -> None:
    from torchreid_privacy.tools.report import format_table, summarize

    rows = {}
    for mode, res in by_mode.items():
        for target, r in (res.get("test") or {}).items():
            rows[mode if len(res["test"]) == 1 else f"{mode}/{target}"] = summarize(r)
    if rows:
        print(format_table(rows))


def default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover - torch import problems surface elsewhere
        return "cpu"
