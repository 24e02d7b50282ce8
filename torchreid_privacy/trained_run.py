"""A trained run opened for scoring: its ``PrivacyModel``, config and test data, no training engine.

Why: ``test`` and the attacks must see a checkpoint exactly as the run's own final test saw it
(same config, same G, same test split and transforms, same evaluator), but need neither
optimizers nor discriminators. ``TrainedRun.open`` builds only the model and the datamanager.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Dict, List, Optional

import torch

from torchreid_privacy import bridge, kernels

from torchreid_privacy.utils import checkpoint
from torchreid_privacy.builder import build_datamanager
from torchreid_privacy.config import Config, use_gpu
from torchreid_privacy.metrics.settings import SETTINGS
from torchreid_privacy.inference import PrivacyModel, checkpoint_config, model_from_checkpoint
from torchreid_privacy.plugins.engine import Evaluator
from torchreid_privacy.publish import round_to_8bit
from torchreid_privacy.plugins.engine.evaluator import parse_eval_batch


class TrainedRun:
    """``model`` (eval mode), ``config``, ``datamanager``, ``test_targets`` and ``path`` of a checkpoint."""

    def __init__(self, model: PrivacyModel, config: Config, datamanager: Any, test_targets: List[str],
                 path: str) -> None:
        self.model, self.config, self.datamanager = model, config, datamanager
        self.test_targets, self.path = test_targets, path
        self.evaluator = Evaluator(model, eval_seed=config.privacy.eval_seed, grid_images=config.privacy.grid_images)

    @classmethod
    def open(cls, path: str, overrides: Sequence[str] = (), key: Optional[bytes] = None,
             config_file: Optional[str] = None, need: Sequence[str] = ()) -> "TrainedRun":
        """Load the checkpoint (file or run directory) and build its test data.

        ``need`` names nets the checkpoint must hold (e.g. ``("generator", "decoder")``).
        """
        path = checkpoint.resolve(path)
        ckpt = checkpoint.load(path, need=tuple(need))
        cfg = checkpoint_config(ckpt, path, overrides, config_file)
        device = torch.device("cuda" if use_gpu(cfg) else "cpu")
        kernels.select_backends(cfg.privacy.kernels, device)
        model = model_from_checkpoint(ckpt, cfg, path)
        del ckpt
        if key is not None:
            model.set_key(key)
        model.to(device).eval()
        dm, _, targets = build_datamanager(cfg)
        return cls(model, cfg, dm, targets, path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def evaluate(self, target: str, grid_path: Optional[str] = None, desc: str = "test",
                 settings: Sequence[str] = SETTINGS) -> Dict[str, Any]:
        """Four-setting ranks and O-M/O-P/O-R metrics on ``target`` (as the run's final test);
        ``settings`` may add e.g. ``"O->M"`` (gallery of conventionally desensitized images)."""
        self.model.eval()
        evaluator = self.evaluator if tuple(settings) == SETTINGS else Evaluator(
            self.model, self.config.privacy.eval_seed, self.config.privacy.grid_images, settings=settings)
        return evaluator(self.datamanager.test_loader[target], grid_path, desc=f"{desc} {target}")

    @torch.no_grad()
    def images01(self, paths: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Images at ``paths`` -> (N, 3, H, W) in [0,1] through the test transform (resize, normalize)."""
        tf = self.datamanager.transform_te
        out = [round_to_8bit(self.model.to01(torch.stack([tf(bridge.read_image(p)) for p in paths[i:i + batch_size]])
                                             .to(self.device))) for i in range(0, len(paths), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 3, self.config.data.height, self.config.data.width)

    def eval_batches01(self, target: str) -> Iterator[torch.Tensor]:
        """[0,1] batches of ``target``'s query then gallery images (the images ``evaluate`` scores)."""
        for split in ("query", "gallery"):
            for data in self.datamanager.test_loader[target][split]:
                yield round_to_8bit(self.model.to01(parse_eval_batch(data)[0].to(self.device)))

    def train_items(self) -> list:
        """The training list ``[(path, pid, camid, ...), ...]`` (identities disjoint from test)."""
        return list(self.datamanager.train_loader.dataset.train)
