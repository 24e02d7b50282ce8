"""``export``: a checkpoint's anonymizer, recovery decoder or ReID model as an ONNX file."""
from __future__ import annotations

import argparse


def add_parsers(sub) -> None:
    from torchreid_privacy.export.exporter import DEFAULT_OPSET, WHATS

    p = sub.add_parser("export", help="export the anonymizer, decoder or ReID model to ONNX (for onnxruntime)",
                       description="Each graph takes [0,1] images at the model's size (normalization inside the "
                                   "graph). The keyed decoder takes the key's code as a second input, "
                                   "'key_code' (key_channels,) of +-1. Needs: pip install 'torchreid-privacy[export]'.")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    p.add_argument("--what", required=True, choices=WHATS, help="which graph to export")
    p.add_argument("--output", required=True, help="the .onnx file to create (never overwritten)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: a fixed batch of 1)")
    p.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    import os

    from torchreid_privacy.export.exporter import export_onnx
    from torchreid_privacy.inference import load

    if os.path.lexists(args.output):  # fail before loading anything
        raise FileExistsError(f"--output: {args.output} already exists; export never overwrites a file")
    model = load(args.checkpoint, device="cpu")
    path = export_onnx(model, args.what, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch)
    print(f"{args.what} exported to {path} (opset {args.opset}, batch "
          f"{'dynamic' if args.dynamic_batch else 1}, input {model.height}x{model.width} in [0,1])")
    return 0
