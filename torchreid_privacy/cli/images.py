"""``anonymize``, ``recover`` (image folders through G / G_R) and ``keygen``."""
from __future__ import annotations

import argparse

from .common import add_key_arg, default_device, read_key


def add_parsers(sub) -> None:
    for name, helptext in (("anonymize", "apply the encoder G to a folder (O -> P)"),
                           ("recover", "apply the recovery decoder G_R to a folder (P -> R)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--input", required=True, help="folder of images (never written to)")
        p.add_argument("--output", required=True, help="output folder (same file names; existing files kept)")
        p.add_argument("--checkpoint", required=name == "recover", help="checkpoint file or run directory")
        if name == "anonymize":
            p.add_argument("--onnx", metavar="FILE.onnx", help="run this exported anonymizer with onnxruntime "
                                                               "instead of a checkpoint (no torch model loaded)")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--device", default=default_device())
        if name == "recover":
            add_key_arg(p, "required when the checkpoint's decoder is keyed")
        p.set_defaults(func=anonymize if name == "anonymize" else recover)

    p = sub.add_parser("keygen", help="write a new secret key file (mode 0600, never overwrites)")
    p.add_argument("--output", required=True, help="key file to create")
    p.set_defaults(func=keygen)


def _check(args: argparse.Namespace) -> None:
    from torchreid_privacy.folder import check_folders

    check_folders(args.input, args.output)  # fail before loading anything
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")


def anonymize(args: argparse.Namespace) -> int:
    from torchreid_privacy.folder import process_folder
    from torchreid_privacy.inference import load

    _check(args)
    if args.onnx or not args.checkpoint:
        return _anonymize_onnx(args)
    model = load(args.checkpoint, device=args.device)
    report = process_folder(args.input, args.output, model.anonymize, height=model.height, width=model.width,
                            batch_size=args.batch_size, device=args.device, desc="anonymize")
    print(report.line())
    return 0


def _anonymize_onnx(args: argparse.Namespace) -> int:
    """``anonymize --onnx``: the folder through onnxruntime (torchreid_privacy.onnx_folder)."""
    if not args.onnx:
        raise ValueError("--checkpoint: required (or --onnx FILE.onnx for an exported anonymizer)")
    if args.checkpoint:
        raise ValueError("--onnx: give either --onnx or --checkpoint, not both")
    from torchreid_privacy.onnx_folder import anonymize_folder_onnx
    from torchreid_privacy.onnx_runtime import OnnxAnonymizer, providers_for

    runner = OnnxAnonymizer(args.onnx, providers=providers_for(args.device))
    print(anonymize_folder_onnx(args.input, args.output, runner, batch_size=args.batch_size).line())
    return 0


def recover(args: argparse.Namespace) -> int:
    from torchreid_privacy.folder import process_folder
    from torchreid_privacy.inference import load

    _check(args)
    model = load(args.checkpoint, device=args.device)
    if model.decoder is None:
        raise ValueError(f"--checkpoint: {args.checkpoint} has no recovery decoder (trained in baseline mode)")
    key = read_key(args, model.keyed, required=True)
    if key is not None:
        model.set_key(key)
    report = process_folder(args.input, args.output, model.recover, height=model.height, width=model.width,
                            batch_size=args.batch_size, device=args.device, desc="recover")
    print(report.line())
    return 0


def keygen(args: argparse.Namespace) -> int:
    from torchreid_privacy.keys import KEY_BYTES, write_key_file

    path = write_key_file(args.output)
    print(f"{8 * KEY_BYTES}-bit key written to {path} (mode 0600); keep it secret, it is never stored anywhere else")
    return 0
