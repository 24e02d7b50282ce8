"""``anonymize``, ``recover`` (image folders through G / G_R; videos: boxes through G, originals
sealed beside the video) and ``keygen``."""
from __future__ import annotations

import argparse

from torchreid_privacy.publish.channel import FORMATS

from torchreid_privacy.video.temporal import TemporalSettings

from .common import add_key_arg, add_video_detection_args, default_device, read_key

TEMPORAL = TemporalSettings()
VIDEO_ONLY = ("--detector", "--detections", "--detector-threshold", "--detector-weights", "--hog-min-height",
              "--skip-bad-boxes",
              "--ground-truth", "--max-gap", "--extend", "--box-margin", "--fail-closed", "--crops")


def add_parsers(sub) -> None:
    for name, helptext in (("anonymize", "apply the encoder G to a folder, or to every pedestrian of a video (O -> P)"),
                           ("recover", "apply the recovery decoder G_R to a folder (P -> R), or unseal a video's "
                                       "original crops")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--input", required=True, help="folder of images, or a video file (never written to)" + (
            "" if name == "anonymize" else "; for a video: the anonymized video beside its .sealed sidecar"))
        p.add_argument("--output", required=True, help="output folder (same file names; existing files kept)" + (
            "; for a video --input: a new video file (.mp4, .mov, .mkv lossless, .avi), never overwritten"
            if name == "anonymize" else "; for a video --input: a new folder of the original crops + boxes.json"))
        p.add_argument("--checkpoint", help="checkpoint file or run directory" + (
            "" if name == "anonymize" else "; not needed for sealed images (--key-file unseals them exactly)"))
        if name == "anonymize":
            p.add_argument("--seal-key", metavar="KEYFILE",
                           help="seal each input file's exact bytes into its P (AES-GCM under this key file, "
                                "made by keygen), so the key holder recovers the original exactly; for a video: "
                                "each box's original crop, in OUTPUT.sealed beside the video")
            p.add_argument("--neutral-names", action="store_true",
                           help="with --seal-key: write P under keyed neutral names (P's name otherwise keeps the "
                                "input's, which in Market-style names carries the person ID and camera); the "
                                "original names travel only inside the sealed payloads")
            p.add_argument("--onnx", metavar="FILE.onnx", help="run this exported anonymizer with onnxruntime "
                                                               "instead of a checkpoint (no torch model loaded)")
            p.add_argument("--format", choices=sorted(FORMATS),
                           help="file format of P (default: the run's privacy.publish.format, jpeg unless "
                                "configured; the suffix follows it: a.png -> a.jpg)")
            p.add_argument("--quality", type=int, help="JPEG/WebP quality 1-100 (default: privacy.publish.quality)")
            add_video_detection_args(p)
            p.add_argument("--ground-truth", metavar="GT.txt",
                           help="video only: a MOT gt.txt of the video; report the privacy recall (people whose "
                                "head band is >= 90%% and box >= 70%% under anonymized pixels), the worst frame, and "
                                "write OUTPUT.recall.json and the missed boxes as OUTPUT.missed.txt")
            p.add_argument("--max-gap", type=int, metavar="FRAMES",
                           help=f"video only: fill a track's gaps up to this many frames (default {TEMPORAL.max_gap})")
            p.add_argument("--extend", type=int, metavar="FRAMES",
                           help=f"video only: cover a track this many frames before its first and after its last "
                                f"box (default {TEMPORAL.extend})")
            p.add_argument("--box-margin", type=float, metavar="SHARE",
                           help=f"video only: grow every box by this share of its width/height on each side "
                                f"(default {TEMPORAL.margin})")
            p.add_argument("--fail-closed", action="store_true",
                           help="video only: desensitize a frame whole when its moving area (background "
                                "subtraction) is not covered by boxes; frames whose detector fails always are")
            p.add_argument("--crops", metavar="DIR",
                           help="video only: also write each box's published P as a ReID image set in this new "
                                "folder (Market-style names TRACK_c1s1_FRAME_K, for search --gallery)")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--device", default=default_device())
        if name == "recover":
            add_key_arg(p, "unseals sealed images exactly; required when the checkpoint's decoder is keyed")
            p.add_argument("--allow-unsealed", action="store_true",
                           help="with --key-file: also run the decoder on images that carry no seal while others "
                                "do (a stripped seal looks like that; their recovery is only approximate)")
        p.set_defaults(func=anonymize if name == "anonymize" else recover)

    p = sub.add_parser("keygen", help="write a new secret key file (mode 0600, never overwrites)")
    p.add_argument("--output", required=True, help="key file to create")
    p.set_defaults(func=keygen)


def _check(args: argparse.Namespace) -> None:
    from torchreid_privacy.folders.process import check_folders

    check_folders(args.input, args.output)  # fail before loading anything
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")


def _video_input(args: argparse.Namespace, video_only: tuple = ()) -> bool:
    """Whether --input is a video file; refuses video-only flags for a folder."""
    from torchreid_privacy.video.io import is_video

    if is_video(args.input):
        return True
    for flag in video_only:
        if getattr(args, flag.lstrip("-").replace("-", "_")) not in (None, False):
            raise ValueError(f"{flag}: only for a video --input; {args.input} is not a video file")
    return False


def anonymize(args: argparse.Namespace) -> int:
    from torchreid_privacy.folders.process import process_folder
    from torchreid_privacy.inference import load

    if _video_input(args, video_only=VIDEO_ONLY):
        return _anonymize_video(args)
    _check(args)
    if args.onnx or not args.checkpoint:
        return _anonymize_onnx(args)
    seal_key = None
    if args.neutral_names and not args.seal_key:
        raise ValueError("--neutral-names: needs --seal-key (the original names travel only in the sealed payloads)")
    if args.seal_key:
        from torchreid_privacy.sealing.keys import read_key_file

        seal_key = read_key_file(args.seal_key, flag="--seal-key")  # before loading anything
    model = load(args.checkpoint, device=args.device)  # a baseline run's P is its conventional M
    channel = publish_channel(args, model.channel)
    report = process_folder(args.input, args.output, model.anonymize, height=model.height, width=model.width,
                            batch_size=args.batch_size, device=args.device, desc="anonymize", seal_key=seal_key,
                            channel=channel, neutral_names=args.neutral_names)
    print(f"P written as {channel.label} (the files every number about P is measured on)")
    print(report.line())
    return 0 if report.ok else 1


def publish_channel(args: argparse.Namespace, default):
    """The channel P is written with: the run's (or the ONNX file's) unless --format/--quality say otherwise."""
    from torchreid_privacy.publish import PublishChannel

    return PublishChannel(args.format or default.format, default.quality if args.quality is None else args.quality)


def _anonymize_video(args: argparse.Namespace) -> int:
    """``anonymize --input VIDEO``: each detected box through the run's G (M for a baseline run),
    published as the run's P files are; ``--seal-key`` seals the original crops beside the video."""
    from torchreid_privacy.inference import load
    from torchreid_privacy.video.anonymize import (anonymize_video, check_video_paths, read_ground_truth,
                                                   video_detector)

    for flag, value in (("--onnx", args.onnx), ("--neutral-names", args.neutral_names)):
        if value:
            raise ValueError(f"{flag}: not supported with a video --input")
    if not args.checkpoint:
        raise ValueError("--checkpoint: required for a video --input")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {args.batch_size}")
    check_video_paths(args.input, args.output, args.crops, sealed=bool(args.seal_key),
                      recall=bool(args.ground_truth))  # before loading anything
    seal_key = None
    if args.seal_key:
        from torchreid_privacy.sealing.keys import read_key_file

        seal_key = read_key_file(args.seal_key, flag="--seal-key")
    temporal = TemporalSettings(**{k: v for k, v in (("max_gap", args.max_gap), ("extend", args.extend),
                                                      ("margin", args.box_margin)) if v is not None})
    if args.ground_truth:
        read_ground_truth(args.ground_truth)  # a bad file is refused before the model loads
    detector = video_detector(args.detections, args.detector, **detector_options(args))
    model = load(args.checkpoint, device=args.device)
    channel = publish_channel(args, model.channel)
    report = anonymize_video(args.input, args.output, model, detector, channel, batch_size=args.batch_size,
                             device=args.device, seal_key=seal_key, crops_dir=args.crops, temporal=temporal,
                             fail_closed=args.fail_closed, ground_truth=args.ground_truth)
    print(f"people found by {detector.name}; boxes written as {channel.label} P into {report.output}")
    if report.sidecar is not None:
        print(f"original crops sealed in {report.sidecar} (recover --input {report.output} --key-file KEYFILE)")
    if report.crops_dir is not None:
        print(f"{report.boxes} P crop(s) written to {report.crops_dir}")
    for line in report.lines():
        print(line)
    return 0


def detector_options(args: argparse.Namespace) -> dict:
    """``build_detector``'s keyword arguments from the detection flags."""
    return {"threshold": args.detector_threshold, "weights": args.detector_weights, "device": args.device,
            "skip_bad_boxes": bool(args.skip_bad_boxes), "hog_min_height": args.hog_min_height}


def _anonymize_onnx(args: argparse.Namespace) -> int:
    """``anonymize --onnx``: the folder through onnxruntime (torchreid_privacy.export.folder)."""
    if not args.onnx:
        raise ValueError("--checkpoint: required (or --onnx FILE.onnx for an exported anonymizer)")
    if args.checkpoint:
        raise ValueError("--onnx: give either --onnx or --checkpoint, not both")
    if getattr(args, "seal_key", None):  # never write unsealed P when sealing was asked for
        raise ValueError("--seal-key: not supported with --onnx yet; use --checkpoint")
    from torchreid_privacy.export.folder import anonymize_folder_onnx
    from torchreid_privacy.export.runtime import OnnxAnonymizer, providers_for

    runner = OnnxAnonymizer(args.onnx, providers=providers_for(args.device))
    from torchreid_privacy.publish import PublishChannel

    channel = publish_channel(args, PublishChannel(runner.publish_format, runner.publish_quality))
    report = anonymize_folder_onnx(args.input, args.output, runner, batch_size=args.batch_size, channel=channel)
    print(report.line())
    return 0 if report.ok else 1


def recover(args: argparse.Namespace) -> int:
    """Sealed images are unsealed with --key-file (exact bytes); the rest go through G_R."""
    from torchreid_privacy.folders.process import process_folder

    if _video_input(args):
        return _recover_video(args)
    _check(args)
    only = None
    if args.key_file:
        report = _unseal(args)
        if not report.unsealed:
            return 0 if report.ok else 1
        only = report.unsealed
        any_sealed = bool(report.restored or report.failed or report.skipped_existing)
        if any_sealed and not args.allow_unsealed:
            # a stripped or deleted seal looks exactly like this: never turn exact recovery into G_R's silently
            raise ValueError(f"--allow-unsealed: {len(only)} image(s) carry no seal while others do (e.g. {only[0]}); "
                             "a stripped or removed seal looks like that, and the decoder would only approximate "
                             "the original. Pass --allow-unsealed (with --checkpoint) to recover them anyway")
        if not args.checkpoint:
            raise ValueError(f"--checkpoint: {len(only)} image(s) are not sealed (e.g. {only[0]}); recovering "
                             "them needs the run's decoder")
    else:
        from torchreid_privacy.folders.process import sealed_images

        sealed = sealed_images(args.input)
        if sealed:
            raise ValueError(f"--key-file: {len(sealed)} image(s) are sealed (e.g. {sealed[0]}); give the key file "
                             "to recover their originals exactly")
        if not args.checkpoint:
            raise ValueError("--checkpoint: required (or --key-file KEYFILE for sealed images)")
    model = _decoder_model(args)
    if only is not None and not model.keyed and not any_sealed:
        # nothing was sealed and the decoder takes no key: refuse rather than silently ignore the key
        raise ValueError(f"--key-file: no image in {args.input} is sealed and the decoder is not keyed "
                         "(privacy.decoder.keyed is false)")
    folder = process_folder(args.input, args.output, model.recover, height=model.height, width=model.width,
                            batch_size=args.batch_size, device=args.device, desc="recover", only=only)
    print(folder.line())
    return 0 if (only is None or report.ok) and folder.ok else 1


def _recover_video(args: argparse.Namespace) -> int:
    """``recover --input VIDEO``: the original crops from the video's sealed sidecar, exactly."""
    from torchreid_privacy.sealing.payload import sidecar_path
    from torchreid_privacy.sealing.keys import read_key_file
    from torchreid_privacy.video.sealed_crops import recover_video_crops

    if not args.key_file:
        raise ValueError(f"--key-file: required; a video's P is recovered only from its sealed sidecar "
                         f"{sidecar_path(args.input)} (anonymize --seal-key), with that key file")
    for flag, value in (("--checkpoint", args.checkpoint), ("--allow-unsealed", args.allow_unsealed)):
        if value:
            raise ValueError(f"{flag}: not used for a video --input (its crops are unsealed with --key-file alone)")
    report = recover_video_crops(args.input, read_key_file(args.key_file), args.output)
    print(report.line())
    return 0


def _unseal(args: argparse.Namespace):
    import sys

    from torchreid_privacy.folders.process import unseal_folder
    from torchreid_privacy.sealing.keys import read_key_file

    report = unseal_folder(args.input, args.output, read_key_file(args.key_file))
    for _, message in report.failed:
        print(f"torchreid-privacy: {message}", file=sys.stderr)
    if report.hint:
        print(f"torchreid-privacy: {report.hint}", file=sys.stderr)
    print(report.line())
    return report


def _decoder_model(args: argparse.Namespace):
    """The run's PrivacyModel with its (keyed) decoder ready."""
    from torchreid_privacy.inference import load

    model = load(args.checkpoint, device=args.device)
    if model.decoder is None:
        raise ValueError(f"--checkpoint: {args.checkpoint} has no recovery decoder (baseline mode, or sealed "
                         "recovery: its images unseal with --key-file)")
    if model.keyed:
        model.set_key(read_key(args, True, required=True))
    return model


def keygen(args: argparse.Namespace) -> int:
    from torchreid_privacy.sealing.keys import KEY_BYTES, write_key_file

    path = write_key_file(args.output)
    print(f"{8 * KEY_BYTES}-bit key written to {path} (mode 0600); keep it secret, it is never stored anywhere else")
    return 0
