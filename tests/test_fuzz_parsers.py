"""Every parser of a user's file, fed random and mutated input (``hypothesis``): each case ends in
success or in a user error, exactly what ``torchreid_privacy.cli.main`` prints as one line and
exit 1/2 (``ConfigError``, ``CheckpointError``, ``ValueError`` and its subclasses such as
``MotFormatError`` and the sealing errors, ``KeyError``, ``OSError``, ``FloatingPointError``),
whose message names the file (the command line prints it as one line). Any other exception is an
"internal error" (exit 3).

Inputs: a valid file with 1-4 mutations (bit flips, bytes set, inserted, deleted, duplicated,
the file truncated, format tokens such as ``nan``, ``1e999``, a BOM or YAML/JSON punctuation
spliced in; offsets drawn uniformly or near the format's structure: chunk, segment, header and
footer boundaries), or random bytes. A success must also be right where the format promises it:
a sealed payload or sidecar that opens gives back exactly what was sealed, MOT boxes are finite.
``derandomize``: the same cases on every run; ``@example``: the smallest known failing input of
a parser that fails today (its test is ``xfail(strict=True)``: it flips when the parser is fixed).

Here a few dozen cases per parser (the suite: < 40 s); ``tests/benchmarks/test_fuzz_parsers_bench.py``
runs 1,000 per parser and lists every distinct failure with its smallest input.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

KEY = bytes(range(32))
EXAMPLES = 50  # per parser in the suite; the benchmark runs 1,000


def user_errors() -> tuple:
    """What ``cli._run`` prints as a one-line user error (exit 1, or 2 for ConfigError)."""
    from torchreid_privacy.bridge import CheckpointError
    from torchreid_privacy.config import ConfigError

    return (ConfigError, CheckpointError, ValueError, KeyError, OSError, FloatingPointError)


def message(exc: BaseException) -> str:
    """The text ``cli._run`` prints for ``exc``."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


class BadError(AssertionError):
    """A user error whose message does not name the file."""


class WrongResult(AssertionError):
    """A parser that succeeded with a result its format does not allow."""


# -------------------------------------------------------------------------------------- mutations

# bytes that mean something to some format: separators, numbers that are not, encodings, punctuation
TOKENS = [b"\x00", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf", b"\xc3", b"\xe2\x80\xa8", b"\n", b"\r\n", b"\t", b" ",
          b",", b";", b":", b"#", b"-", b"-1", b"0", b"00", b"1", b"2", b"1.5", b"nan", b"NaN", b"inf", b"-inf",
          b"1e999", b"-1e999", b"1e-999", b"18446744073709551616", b"9" * 40, b"\xc2\xb2", b"\xd9\xa3",
          b"[", b"]", b"{", b"}", b"\"", b"'", b"null", b"true", b"[]", b"{}", b"[[[[[[[[", b"\\u0000",
          b"Infinity", b"-Infinity", b"&a ", b"*a", b"<<: *a", b"!!binary ", b"!!python/object ", b"? ",
          b"2001-13-45", b"0x1F", b"0o17", b"--- ", b"...", b"%YAML 1.1\n", b"|", b">"]


@st.composite
def mutated(draw, seed: bytes, hot: Sequence[int] = (), most: int = 4) -> bytes:
    """``seed`` after 1..``most`` random edits (offsets uniform or within 8 bytes of a ``hot`` offset)."""
    data = bytearray(seed)

    def offset(end: int) -> int:  # 0..end
        if hot and draw(st.booleans()):
            near = draw(st.sampled_from(list(hot)))
            return min(max(near + draw(st.integers(-8, 8)), 0), end)
        return draw(st.integers(0, end))

    for _ in range(draw(st.integers(1, most))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate", "token", "token"]))
        if op in ("flip", "set") and n:
            i = min(offset(n - 1), n - 1)
            data[i] = data[i] ^ (1 << draw(st.integers(0, 7))) if op == "flip" else draw(st.integers(0, 255))
        elif op == "insert":
            i = offset(n)
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            i = offset(n - 1)
            del data[i:i + draw(st.integers(1, 32))]
        elif op == "truncate":
            del data[draw(st.integers(0, n)):]
        elif op == "duplicate" and n:
            i = offset(n - 1)
            chunk = data[i:i + draw(st.integers(1, 64))]
            j = offset(n)
            data[j:j] = chunk
        elif op == "token":
            i = offset(n)
            tok = draw(st.sampled_from(TOKENS))
            if draw(st.booleans()):
                data[i:i + len(tok)] = tok  # over what was there
            else:
                data[i:i] = tok
    return bytes(data)


def inputs(seed: bytes, hot: Sequence[int] = (), random_size: int = 256) -> st.SearchStrategy[bytes]:
    """Mostly mutations of a valid file, some random bytes, and the valid file itself."""
    return st.one_of(mutated(seed, hot), mutated(seed, hot), mutated(seed, hot),
                     st.binary(max_size=random_size), st.just(seed))


# ---------------------------------------------------------------------------------------- targets

@dataclass
class Target:
    """One parser: ``make(folder)`` writes its valid files and returns a context; ``run(ctx, data)``
    puts ``data`` where the parser reads it, calls it and checks a success; ``names(ctx)``: any of
    these in a message names the file."""

    name: str
    make: Callable[[Path], Any]
    strategy: Callable[[Any], st.SearchStrategy]
    run: Callable[[Any, Any], None]
    names: Callable[[Any], List[str]]


def check(target: Target, ctx: Any, data: Any) -> None:
    """Raises when ``data`` ends in anything but success or a user error naming the file (the command
    line prints any message as one line)."""
    try:
        target.run(ctx, data)
    except user_errors() as exc:
        text = message(exc).strip()
        names = target.names(ctx)
        if not any(n in text for n in names):  # cli._one_line makes any message one line
            raise BadError(f"{type(exc).__name__} whose message does not name {names[0]}: {text[:300]!r}") from exc


def _replace(path: Path, data: bytes) -> None:
    """A new file (a new inode: a memory map of the old one, if any, keeps its bytes)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


# --- det.txt / gt.txt

def _mot_make(folder: Path):
    from torchreid_privacy.video.mot import write_mot

    boxes = {0: np.array([[10.5, 20.0, 40.0, 90.0, 0.9, -1], [100, 20, 130, 95, 0.4, -1]]),
             4: np.array([[12.0, 22.0, 42.0, 92.0, 0.8, -1]])}
    det = write_mot(folder / "seed-det.txt", boxes).read_bytes()
    gt = write_mot(folder / "seed-gt.txt", {0: np.array([[1, 2, 30, 60, 1, 7]])}, gt=True).read_bytes()
    seed = b"# frame,id,left,top,width,height,conf\n" + det + gt + b"3,5,1,1,10,10,0,7,0.5\n3,6,1,1,10,10,1,3,1\n"
    return {"path": folder / "det.txt", "seed": seed}


def _mot_run(ctx, data: bytes) -> None:
    from torchreid_privacy.video.mot import read_mot

    _replace(ctx["path"], data)
    for kwargs in ({"evaluation": True}, {"evaluation": False}, {"skip_bad_boxes": True, "skipped": []}):
        boxes = read_mot(ctx["path"], **kwargs)
        for frame, arr in boxes.items():
            if not (isinstance(frame, int) and frame >= 0 and arr.ndim == 2 and arr.shape[1] == 6
                    and np.isfinite(arr).all()):
                raise WrongResult(f"frame {frame!r}: {arr!r}")


MOT = Target("mot", _mot_make, lambda ctx: inputs(ctx["seed"], [m for m in range(len(ctx["seed"]))
                                                                if ctx["seed"][m:m + 1] in b",\n"]),
             _mot_run, lambda ctx: [str(ctx["path"])])


# --- key files

def _key_make(folder: Path):
    from torchreid_privacy.sealing.keys import write_key_file

    path = folder / "secret.key"
    write_key_file(str(path), KEY)
    return {"path": path, "seed": path.read_bytes()}


def _key_run(ctx, data: bytes) -> None:
    from torchreid_privacy.sealing.keys import read_key_file

    _replace(ctx["path"], data)
    os.chmod(ctx["path"], 0o600)
    key = read_key_file(str(ctx["path"]))
    if len(key) not in (16, 32):
        raise WrongResult(f"a {len(key)}-byte key")


KEYS = Target("key-file", _key_make, lambda ctx: inputs(ctx["seed"], [0, 32, 64], random_size=80), _key_run,
              lambda ctx: [str(ctx["path"])])


# --- sealed payloads in PNG and JPEG

def _png_hot(data: bytes) -> List[int]:
    out, pos = [8], 8
    while pos + 8 <= len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        pos += 12 + n
        out.append(pos)
    return out


def _jpeg_hot(data: bytes) -> List[int]:
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] not in (0, 0xFF)][:64]


def _payload_make(fmt: str):
    def make(folder: Path):
        from torchreid_privacy.sealing.payload import seal

        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(buf, format=fmt)
        original = b"the original crop's bytes " * 3
        name = "p.png" if fmt == "PNG" else "p.jpg"
        sealed = seal(buf.getvalue(), original, name, KEY, original_name="0001_c1s1_000151_01.jpg")
        assert sealed.sidecar is None  # embedded: the container is what is fuzzed
        hot = _png_hot(sealed.image) if fmt == "PNG" else _jpeg_hot(sealed.image)
        return {"path": folder / name, "seed": sealed.image, "original": original, "hot": hot}
    return make


def _payload_run(ctx, data: bytes) -> None:
    from torchreid_privacy.sealing.payload import unseal_file

    _replace(ctx["path"], data)
    if unseal_file(ctx["path"], KEY) != ctx["original"]:
        raise WrongResult("a changed file unsealed to other bytes than the original")


PNG = Target("payload-png", _payload_make("PNG"), lambda ctx: inputs(ctx["seed"], ctx["hot"]), _payload_run,
             lambda ctx: [str(ctx["path"])])
JPEG = Target("payload-jpeg", _payload_make("JPEG"), lambda ctx: inputs(ctx["seed"], ctx["hot"]), _payload_run,
              lambda ctx: [str(ctx["path"])])


def _forged_payload_make(folder: Path):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return {"path": folder / "p.png", "p": buf.getvalue()}


def _forged_payload_run(ctx, case) -> None:
    """A payload a key holder's other program wrote: authenticated, any plaintext."""
    from torchreid_privacy.sealing import containers, payload

    version, plaintext = case
    nonce = bytes(12)
    digest = containers.canonical_digest(ctx["p"], True)
    header = payload._HEADER.pack(payload.MAGIC, version, nonce)
    body = payload.aead_for(KEY).encrypt(nonce, plaintext, payload._associated_data("p.png", digest, version))
    _replace(ctx["path"], containers.embed(ctx["p"], header + body))
    payload.unseal_file(ctx["path"], KEY)


FORGED_PAYLOAD = Target(
    "payload-authenticated-plaintext", _forged_payload_make,
    lambda ctx: st.tuples(st.sampled_from([1, 2]), st.one_of(
        st.binary(max_size=40),
        st.builds(lambda n, name, rest: struct.pack(">H", n) + name + rest, st.integers(0, 65535),
                  st.binary(max_size=12), st.binary(max_size=24)))),
    _forged_payload_run, lambda ctx: [str(ctx["path"])])


# --- video sidecars

def _sidecar_make(folder: Path):
    from torchreid_privacy.video.io import VideoWriter
    from torchreid_privacy.video.sealed_crops import SealedCropsWriter, encode_png, video_digest

    rng = np.random.default_rng(0)
    video = folder / "v.mkv"
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    with VideoWriter(video, 32, 32, Fraction(10)) as w:
        for f in frames:
            w.write(f)
    writer = SealedCropsWriter(video, KEY, 32, 32, Fraction(10))
    crops = []
    for i, f in enumerate(frames):
        png = encode_png(f[4:20, 4:12])
        writer.add(i, 0, (4, 4, 12, 20), png)
        crops.append(png)
    writer.finish(3, video_digest(video))
    side = writer.publish()
    seed = side.read_bytes()
    n, = struct.unpack(">I", seed[-8:-4])
    footer = len(seed) - 8 - 28 - n
    hot = [0, 4, 5, 9, 15, footer, footer + n, len(seed) - 8, len(seed) - 4]
    return {"video": video, "path": side, "seed": seed, "crops": crops, "hot": hot}


def _sidecar_open(ctx) -> None:
    from torchreid_privacy.video.sealed_crops import open_sealed_crops

    _, records = open_sealed_crops(ctx["video"], KEY)
    if [c.png for c in records] != ctx["crops"]:
        raise WrongResult("a changed sidecar opened with other crops than those sealed")


def _sidecar_run(ctx, data: bytes) -> None:
    _replace(ctx["path"], data)
    _sidecar_open(ctx)


SIDECAR = Target("video-sidecar", _sidecar_make, lambda ctx: inputs(ctx["seed"], ctx["hot"]), _sidecar_run,
                 lambda ctx: [str(ctx["path"])])


def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.text(max_size=12),
                        st.floats(allow_nan=True, allow_infinity=True))
    return st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                        max_leaves=6)


def _forged_footer(ctx, draw_fields: dict, version: int, plaintexts: List[bytes]) -> bytes:
    """A sidecar a key holder's other program wrote: every tag right, any footer JSON and record plaintext."""
    from torchreid_privacy.sealing.payload import aead_for
    from torchreid_privacy.video import sealed_crops as sc

    aead = aead_for(KEY)
    binding = sc.VideoBinding("v.mkv", 32, 32, Fraction(10))
    out, digest = bytearray(sc.MAGIC + bytes((version,))), hashlib.sha256()
    for i, plaintext in enumerate(plaintexts):
        head = sc._RECORD.pack(i, 0, 4, 4, 12, 20)
        nonce = os.urandom(12)
        body = head + nonce + aead.encrypt(nonce, plaintext, sc._record_ad(binding, i, head))
        record = sc._U32.pack(len(body)) + body
        out += record
        digest.update(record)
    fields = {"version": version, "video": "v.mkv", "width": 32, "height": 32, "fps": "10", "frames": 3,
              "crops": len(plaintexts), "records_sha256": digest.hexdigest(),
              "video_sha256": ctx["digest"].hex()}
    fields.update(draw_fields)
    footer = json.dumps(fields, allow_nan=True).encode("utf-8")
    nonce = os.urandom(12)
    out += footer + nonce + aead.encrypt(nonce, b"", sc._footer_ad(footer)) + sc._U32.pack(len(footer)) + sc.MAGIC
    return bytes(out)


def _forged_sidecar_make(folder: Path):
    from torchreid_privacy.video.sealed_crops import video_digest

    ctx = _sidecar_make(folder)
    ctx["digest"] = video_digest(ctx["video"])
    return ctx


def _forged_sidecar_run(ctx, case) -> None:
    fields, version, plaintexts = case
    _replace(ctx["path"], _forged_footer(ctx, fields, version, plaintexts))
    from torchreid_privacy.video.sealed_crops import open_sealed_crops

    _, records = open_sealed_crops(ctx["video"], KEY)
    for _ in records:
        pass


FORGED_SIDECAR = Target(
    "video-sidecar-authenticated-content", _forged_sidecar_make,
    lambda ctx: st.tuples(
        st.dictionaries(st.sampled_from(["version", "video", "width", "height", "fps", "frames", "crops",
                                         "records_sha256", "video_sha256", "other"]), _json_values(), max_size=3),
        st.sampled_from([1, 2]), st.lists(st.binary(max_size=24), max_size=2)),
    _forged_sidecar_run, lambda ctx: [str(ctx["path"])])


# --- feature-cache shards

def _cache_make(folder: Path):
    from torchreid_privacy.search.feature_cache import FeatureCache, content_digest

    cache = FeatureCache(folder, "0123456789abcdef", "raw")
    digests = [content_digest(bytes([i])) for i in range(3)]
    cache.put(zip(digests, np.arange(24, dtype=np.float32).reshape(3, 8)))
    cache.save()
    keys, feats = cache.path / "00000.keys.npy", cache.path / "00000.feats.npy"
    seeds = {"keys": keys.read_bytes(), "feats": feats.read_bytes()}
    del cache
    return {"folder": folder, "dir": keys.parent, "files": {"keys": keys, "feats": feats}, "seeds": seeds,
            "digests": digests}


def _cache_strategy(ctx):
    return st.tuples(st.sampled_from(["keys", "feats"]),
                     st.one_of(mutated(ctx["seeds"]["keys"], [0, 6, 8, 10, 128]),
                               mutated(ctx["seeds"]["feats"], [0, 6, 8, 10, 128]), st.binary(max_size=200)))


def _cache_run(ctx, case) -> None:
    from torchreid_privacy.search.feature_cache import FeatureCache

    which, data = case
    for name, path in ctx["files"].items():
        _replace(path, data if name == which else ctx["seeds"][name])
    cache = FeatureCache(ctx["folder"], "0123456789abcdef", "raw")
    for feature in cache.get(ctx["digests"] + [bytes(32)]):
        if feature is not None and (feature.ndim != 1 or len(feature) != cache.dim):
            raise WrongResult(f"a feature of shape {feature.shape} in a {cache.dim}-d cache")


CACHE = Target("feature-cache", _cache_make, _cache_strategy, _cache_run,
               lambda ctx: [str(ctx["dir"])] + [p.name for p in ctx["files"].values()])


# --- gallery index metadata

def _index_make(folder: Path):
    from torchreid_privacy.search.gallery_index import normalized, open_or_build

    names = [f"{i:04d}_c1s1_{i:06d}_00.jpg" for i in range(40)]
    features = normalized(np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32))
    open_or_build(folder, names, features, "flat")
    index, meta = folder / "flat.faiss", folder / "flat.json"
    return {"folder": folder, "names": names, "features": features, "index": index, "path": meta,
            "index_bytes": index.read_bytes(), "seed": meta.read_bytes()}


def _index_run(ctx, data: bytes) -> None:
    from torchreid_privacy.search.gallery_index import open_or_build

    _replace(ctx["index"], ctx["index_bytes"])
    _replace(ctx["path"], data)
    index = open_or_build(ctx["folder"], ctx["names"], ctx["features"], "flat")
    if index.size != len(ctx["names"]):
        raise WrongResult(f"an index of {index.size} features for {len(ctx['names'])}")


INDEX = Target("index-metadata", _index_make,
               lambda ctx: inputs(ctx["seed"], [i for i, c in enumerate(ctx["seed"]) if c in b",:{}"]),
               _index_run, lambda ctx: [str(ctx["path"])])


# --- frontier files

def _frontier_args_make(folder: Path):
    from torchreid_privacy.studies.frontier import ARGS_FILE

    out = folder / "sweep"
    out.mkdir()
    args = {"config": "/cfg/quickstart.yaml", "overrides": ["train.max_epoch", "2"], "seeds": 3, "quick": False,
            "variants": None, "dataset": None, "data_root": None}
    path = out / ARGS_FILE
    path.write_text(json.dumps(args, indent=2), encoding="utf-8")
    return {"out": out, "path": path, "args": args, "seed": path.read_bytes()}


def _frontier_args_run(ctx, data: bytes) -> None:
    from torchreid_privacy.studies.frontier import check_output

    _replace(ctx["path"], data)
    check_output(str(ctx["out"]), ctx["args"], resume=True)


FRONTIER_ARGS = Target("frontier_args.json", _frontier_args_make,
                       lambda ctx: inputs(ctx["seed"], [i for i, c in enumerate(ctx["seed"]) if c in b",:{}[]"]),
                       _frontier_args_run,  # "--resume: SWEEP was started with ..." names the sweep's folder
                       lambda ctx: [str(ctx["path"]), ctx["path"].name, str(ctx["out"])])


def _third_party_make(folder: Path):
    from torchreid_privacy.studies.frontier import Job

    job = Job("third_party", 1, config_file="", overrides=[], folder=str(folder / "third_party" / "seed1"),
              threads=1)
    os.makedirs(job.folder)
    path = Path(job.folder) / "third_party.json"
    path.write_text(json.dumps({"seed": 1, "weights": str(folder / "tp" / "model.pth.tar")}), encoding="utf-8")
    return {"job": job, "path": path, "seed": path.read_bytes()}


def _third_party_run(ctx, data: bytes) -> None:
    from torchreid_privacy.studies.frontier import _finished

    _replace(ctx["path"], data)
    result = _finished(ctx["job"])
    # what the sweep reads next: done[i]["weights"], a path
    if not isinstance(result, dict) or not isinstance(result.get("weights"), str):
        raise WrongResult(f"third_party.json read as {result!r:.100}, not a result with its weights' path")


THIRD_PARTY = Target("third_party.json", _third_party_make,
                     lambda ctx: inputs(ctx["seed"], [i for i, c in enumerate(ctx["seed"]) if c in b",:{}\""]),
                     _third_party_run, lambda ctx: [str(ctx["path"]), ctx["path"].name])


# --- YAML configs

def _config_make(folder: Path):
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    seed = Path(packaged_config(QUICKSTART)).read_bytes()
    hot = [i for i, c in enumerate(seed) if c in b":\n[]{}"][::3]
    return {"path": folder / "config.yaml", "seed": seed, "hot": hot}


def _config_run(ctx, data: bytes) -> None:
    from torchreid_privacy.config import load_config

    _replace(ctx["path"], data)
    load_config(str(ctx["path"]))


CONFIG = Target("yaml-config", _config_make, lambda ctx: inputs(ctx["seed"], ctx["hot"]), _config_run,
                lambda ctx: [str(ctx["path"])])


# --- folder datasets: the names of files and folders

SEED_NAMES = ["0001_c1s1_000151_01.jpg", "0002_c2s1_000301_00.png", "-1_c1s1_000001_00.jpg", "0000_c3_x.jpg",
              "cam3_x.jpg", "c10_y.png", "3_z.bmp", "camera2_a.jpeg", "front_b.webp", "x.jpg", "1.png"]
NAME_BITS = ["_", "-", ".", "c", "cam", "0", "1", "007", "-1", "²", "٣", "𝟙", "Ⅻ", " ", "é", ".jpg", ".png",
             ".PNG", ".txt", "_c", "99999999999999999999"]


def _file_name(seed: str) -> st.SearchStrategy[str]:
    """A file or folder name: a seed name with pieces spliced in, or random text (a legal Linux name)."""
    spliced = st.builds(lambda s, i, bit, cut: (s[:i] + bit + s[i + cut:]), st.just(seed),
                        st.integers(0, len(seed)), st.sampled_from(NAME_BITS), st.integers(0, 3))
    return st.one_of(spliced, spliced, st.text(max_size=24)).filter(_legal_name)


def _legal_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\x00" not in name and len(name.encode()) < 200


@st.composite
def _tree(draw):
    """``(layout, {folder: [file names]}, unreadable names)``."""
    layout = draw(st.sampled_from(["market", "identity"]))
    folders = (["bounding_box_train", "query", "bounding_box_test"] if layout == "market" else
               draw(st.lists(_file_name(draw(st.sampled_from(["0001", "0002", "17", "person_a", "c1"]))),
                             min_size=1, max_size=4, unique=True)))
    tree = {d: draw(st.lists(_file_name(draw(st.sampled_from(SEED_NAMES))), max_size=5, unique=True))
            for d in folders}
    unreadable = draw(st.sets(st.sampled_from([n for names in tree.values() for n in names] or ["-"]),
                              max_size=2))
    return layout, tree, unreadable


def _folder_make(folder: Path):
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buf, format="PNG")
    return {"root": folder / "cams", "png": buf.getvalue()}


def _folder_run(ctx, case) -> None:
    from torchreid_privacy.data.folder import read_folder

    layout, tree, unreadable = case
    root = ctx["root"]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for d, names in tree.items():
        (root / d).mkdir(exist_ok=True)
        for n in names:
            if not (root / d / n).exists():
                (root / d / n).write_bytes(b"not an image" if n in unreadable else ctx["png"])
    parts = read_folder(root)
    for split, items in parts.items():
        for path, pid, camid in items:
            if not (isinstance(pid, int) and isinstance(camid, int) and os.path.isfile(path)):
                raise WrongResult(f"{split}: {(path, pid, camid)!r}")


FOLDER = Target("folder-dataset", _folder_make, lambda ctx: _tree(), _folder_run,
                lambda ctx: [str(ctx["root"])])


def _folder_name_run(ctx, name: str) -> None:
    from torchreid_privacy.data.folder import folder_path, register_folder_names

    folder_path(name)
    register_folder_names([name, "market1501"])


FOLDER_NAME = Target("folder-name", lambda folder: {}, lambda ctx: st.one_of(
    st.builds(lambda s: "folder:" + s, st.text(max_size=40)), st.text(max_size=40)),
    _folder_name_run, lambda ctx: ["folder:"])


TARGETS = {t.name: t for t in (MOT, KEYS, PNG, JPEG, FORGED_PAYLOAD, SIDECAR, FORGED_SIDECAR, CACHE, INDEX,
                               FRONTIER_ARGS, THIRD_PARTY, CONFIG, FOLDER, FOLDER_NAME)}


# ------------------------------------------------------------------------------------------ driving

def fuzz(target: Target, max_examples: int, examples: Sequence[Any] = (), **extra) -> None:
    """``max_examples`` cases of ``target`` (after ``examples``), in a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = target.make(Path(tmp))

        def case(data):
            check(target, ctx, data)

        test = given(data=target.strategy(ctx))(case)
        for ex in examples:
            test = example(data=ex)(test)
        test = settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                        suppress_health_check=list(HealthCheck), print_blob=False, **extra)(test)
        test()


def _npy(arr: np.ndarray, old: bytes = b"", new: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue().replace(old, new, 1)


_KEYS, _FEATS = np.zeros((3, 32), np.uint8), np.zeros((3, 8), np.float32)
# inputs that once failed, kept as fixed examples (parser -> (what was wrong, inputs))
KNOWN: Dict[str, Tuple[str, List[Any]]] = {
    "payload-authenticated-plaintext": (
        "sealing.payload._unseal: an authenticated plaintext shorter than its length fields raises struct.error "
        "(internal error); a sealed name that is not UTF-8 a UnicodeDecodeError that does not name the file",
        [(1, b""), (2, b"\x00\x00"), (1, b"\x00\x01\x80")]),
    "feature-cache": (
        "tools.feature_cache.FeatureCache._load: np.load of a damaged .npy header raises SyntaxError, "
        "tokenize.TokenError, MemoryError (a huge stated shape: keys are read whole) or OverflowError, none "
        "caught (only OSError and ValueError are)",
        [("keys", _npy(_KEYS, b"{'descr'", b"z'descr'")), ("feats", _npy(_FEATS, b"'<f4'", b"'<,4'")),
         ("keys", _npy(_KEYS, b"(3, 32)", b"(10000000000000, 32)")),
         ("keys", _npy(_KEYS, b"(3, 32)", b"(99999999999999999999999, 32)"))]),
    "frontier_args.json": (
        "tools.frontier.read_json (check_output): a frontier_args.json that is not UTF-8 raises "
        "UnicodeDecodeError without the file's name (f.read() is outside the try)",
        [b"\x80", b"", b"[]", b"1"]),
    "third_party.json": (
        "tools.frontier._finished: a third_party.json that is not UTF-8 raises UnicodeDecodeError without the "
        "file's name; JSON that is not an object with a 'weights' path is returned as the job's result (the sweep "
        "then fails on done[i]['weights']: TypeError or a KeyError naming no file)",
        [b"\x80", b"[]", b"{}", b""]),
    "yaml-config": (
        "config.load_yaml: a config that is not UTF-8 (UnicodeDecodeError) or holds a bad tagged scalar or date "
        "(ValueError from PyYAML's constructors) fails without the file's name; '!!timestamp x' raises "
        "AttributeError and deep nesting RecursionError (internal errors); config.check's messages name the key "
        "but not the file",
        [b"\x80", b"a: 2001-13-45\n", b"a: !!timestamp x\n", b"a: " + b"[" * 3000 + b"\n",
         b"privacy: {val_ratio: .nan}\n"]),
    "folder-dataset": (
        "data.folder._word_ids: a camera word or identity folder of digits str.isdigit accepts but int() does not "
        "('\u00b2', superscript two) raises ValueError without the folder's name",
        [("identity", {"1": ["\u00b2_a.png"]}, set()), ("identity", {"\u00b2": ["c1_a.png"]}, set())]),
}


@pytest.mark.parametrize("name", list(TARGETS))
def test_parser_fails_only_with_a_user_error_naming_the_file(name):
    fuzz(TARGETS[name], EXAMPLES, examples=KNOWN[name][1] if name in KNOWN else ())
