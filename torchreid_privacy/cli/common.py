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
    from torchreid_privacy.studies.report import format_table, summarize

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


def add_video_detection_args(p: argparse.ArgumentParser, only: str = "video only") -> None:
    """``--detector`` and its companions, shared by ``anonymize --input VIDEO`` and ``make-data --from-video``
    (``only``: the help's prefix naming when the flags apply). Unset flags stay None."""
    from torchreid_privacy.video.detectors import DEFAULT_DETECTOR

    p.add_argument("--detector", metavar="SPEC",
                   help=f"{only}: who finds the people: hog, motion, torchvision:NAME, onnx:FILE, file:det.txt, "
                        f"several joined with + (the union of their boxes); default {DEFAULT_DETECTOR}")
    p.add_argument("--detections", metavar="FILE",
                   help=f"{only}: pedestrian boxes as a MOTChallenge det.txt/gt.txt (frames 1-based); an alias "
                        "of --detector file:FILE")
    p.add_argument("--detector-threshold", type=float, metavar="SCORE",
                   help=f"{only}: the detectors' score threshold (each detector's own default otherwise)")
    p.add_argument("--detector-weights", metavar="FILE",
                   help=f"{only}: a torchvision:NAME detector's state dict (its own weights API otherwise, "
                        "which needs a network)")
    p.add_argument("--hog-min-height", type=float, metavar="PX",
                   help=f"{only}: the smallest person a hog detector looks for (upscaled pyramid levels, slower "
                        "below 128; default 40 for --detector hog, 128 in the default motion+hog)")
    p.add_argument("--skip-bad-boxes", action="store_true", default=None,
                   help=f"{only}: count and skip det.txt/gt.txt rows with NaN/inf or empty boxes instead of "
                        "refusing the file")
