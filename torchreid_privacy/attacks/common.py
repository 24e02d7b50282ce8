"""What both attacks share: a trained privacy engine from a checkpoint, and images as [0,1] tensors.

Why one place: the attacks must see the checkpoint exactly as ``torchreid-privacy test`` sees
it (same config, same G, same test split and transforms), or their numbers would not be
comparable with the privacy-utility table.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from torchreid_privacy import bridge
from torchreid_privacy.builder import engine_from_checkpoint  # noqa: F401  (re-exported)


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
