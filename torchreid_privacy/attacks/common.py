"""What both attacks share: a trained privacy engine from a checkpoint, and images as [0,1] tensors.

Why one place: the attacks must see the checkpoint exactly as ``torchreid-privacy test`` sees
it (same config, same G, same test split and transforms), or their numbers would not be
comparable with the privacy-utility table.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from torchreid_privacy import bridge


def engine_from_checkpoint(path: str, overrides: Iterable[str] = (), key: Any | None = None,
                           need: tuple[str, ...] = (), config_file: str | None = None) -> tuple[Any, str]:
    """(privacy engine with the checkpoint's nets loaded, resolved checkpoint path).

    The checkpoint's own config (or ``config_file``), plus ``overrides``, builds the engine, as
    ``test`` does; ``need`` names nets that must be in the checkpoint (e.g.
    ``("generator", "decoder")``); ``key`` is handed to ``engine.set_key`` when given.
    """
    from torchreid_privacy import checkpoint
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.config import load_config

    path = checkpoint.resolve(path)
    ckpt = checkpoint.load(path, need=need)
    if not config_file and not ckpt.get("config"):
        raise bridge.CheckpointError(f"{path}: checkpoint carries no config; give --config-file")
    cfg = load_config(config_file, overrides, base=None if config_file else ckpt["config"])
    cfg.model.load_weights = ""  # the checkpoint holds the trained backbone
    engine = build_privacy_engine(cfg)
    engine.load_state(ckpt, resume=False, source=path)
    if key is not None:
        set_key = getattr(engine, "set_key", None)
        if set_key is None:
            raise ValueError("--key: this privacy engine has no keyed anonymization (no set_key)")
        set_key(key)
    return engine, path


def read_images01(engine: Any, paths: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Images at ``paths`` -> (N, 3, H, W) in [0,1] on the engine's device, through the test transform
    (resize, to-tensor, normalize) of the engine's datamanager, so they look like test images."""
    dm = engine.datamanager
    out = []
    for i in range(0, len(paths), batch_size):
        batch = torch.stack([dm.transform_te(bridge.read_image(p)) for p in paths[i:i + batch_size]])
        out.append(engine._to01(batch.to(engine.device)))
    return torch.cat(out) if out else torch.zeros(0, 3, engine.config.data.height, engine.config.data.width)


def eval_batches01(engine: Any, target: str) -> Iterator[torch.Tensor]:
    """[0,1] batches of ``target``'s query then gallery images (the images ``evaluate`` scores)."""
    for split in ("query", "gallery"):
        for data in engine.test_loader[target][split]:
            imgs, _, _ = engine.parse_data_for_eval(data)
            yield engine._to01(imgs.to(engine.device))


def train_items(engine: Any) -> list:
    """The engine's training list ``[(path, pid, camid, ...), ...]`` (identities disjoint from test)."""
    return list(engine.datamanager.train_loader.dataset.train)
