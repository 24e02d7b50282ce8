"""The privacy engine: joint training of G, G_R, C, D1, D2 and the supervision upgrade.

A torchreid ``Engine`` subclass: every net is registered with its optimizer and scheduler
(``register_model``), so torchreid's ``save_model``/``set_model_mode``/``update_lr`` work on
all of them, and ``forward_backward(data)`` returns a dict of floats like torchreid's
softmax/triplet engines.

Example::

    from torchreid_privacy import bridge
    from torchreid_privacy.config import load_config
    from torchreid_privacy.builder import build_privacy_engine

    cfg = load_config("configs/quickstart.yaml", ["privacy.mode", "progressive"])
    engine = build_privacy_engine(cfg)          # datamanager, C, G, G_R, D1, D2, optimizers
    results = engine.run_privacy(save_dir="log/quickstart", max_epoch=cfg.train.max_epoch)
    results["test"]["rank"]["O->P"]["R1"]

Modes: ``baseline`` trains C on O and M (no generator; P := M at test time), ``joint``
trains all five nets, ``progressive`` adds the supervision upgrade: every ``val_period``
epochs, if on the validation split PSNR(O,P) < PSNR(O,M) + eps_psnr and SSIM(O,P) <
SSIM(O,M) + eps_ssim (M: the conventional desensitizer) and O->P rank-1 beats the best so
far and ``r1_floor``, a frozen copy of G becomes the supervision: M = G_snapshot(O).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from torchreid_privacy import bridge, checkpoint, distributed, kernels, keys
from torchreid_privacy.amp import Precision
from torchreid_privacy.config import Config, to_dict
from torchreid_privacy.desensitize import resolve_desensitizer
from torchreid_privacy.evaluation import ImageMetricAccumulator, evaluate_settings
from torchreid_privacy.images import denormalize, from_gan, normalize, save_grid, to_gan
from torchreid_privacy.registry import ENGINES, LOSSES

log = logging.getLogger(__name__)

SETTINGS = ("O->O", "O->P", "P->O", "P->P")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/Inf; the message names the term and the step."""


def _requires_grad(nets: List[torch.nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


@ENGINES.register("privacy")
class PrivacyEngine(bridge.Engine):
    """Joint anonymization + identity-invariant ReID training (see module docstring).

    Args:
        datamanager: torchreid ``ImageDataManager`` whose train loader yields O batches
            (identity sampler) and whose ``test_loader`` holds ``val_target`` and test targets.
        model: the ReID backbone C (built with ``loss='triplet'``: returns logits, features).
        optimizer, scheduler: C's optimizer and scheduler.
        privacy: the ``privacy`` config section.
        nets: ``generator``, ``decoder``, ``disc_op`` (D1), ``disc_pr`` (D2) modules
            (omitted in baseline mode) with their ``optims``/``scheds`` dicts.
        reid_loss: a ``ReIDLoss`` (label-smoothed CE + triplet + center) with its own
            ``center_optimizer`` (SGD, lr ``privacy.center_lr``).
        norm_mean, norm_std: the datamanager's normalization (to get O in [0,1]).
        val_target: name of the validation target in ``datamanager.test_loader`` (or None).
    """

    def __init__(self, datamanager, model: torch.nn.Module, optimizer, scheduler, privacy: Config,
                 reid_loss: torch.nn.Module, center_optimizer, norm_mean, norm_std,
                 nets: Optional[Dict[str, torch.nn.Module]] = None,
                 optims: Optional[Dict[str, Any]] = None, scheds: Optional[Dict[str, Any]] = None,
                 val_target: Optional[str] = None, test_targets: Optional[List[str]] = None,
                 use_gpu: bool = False, config: Optional[Config] = None, amp: str = "off") -> None:
        super().__init__(datamanager, use_gpu=use_gpu)
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.use_gpu else torch.device("cpu")
        self.precision = Precision(amp, self.device)
        self.p = privacy
        self.mode = privacy.mode
        self.config = config
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.reid_loss = reid_loss
        self.center_optimizer = center_optimizer
        if center_optimizer is not None:  # centers: own SGD, constant lr (BoT/AGW)
            self.register_model("center", reid_loss, center_optimizer,
                                torch.optim.lr_scheduler.ConstantLR(center_optimizer, factor=1.0, total_iters=0))
        nets, optims, scheds = nets or {}, optims or {}, scheds or {}
        if self.mode != "baseline":
            for name in ("generator", "decoder", "disc_op", "disc_pr"):
                if name not in nets:
                    raise ValueError(f"privacy.mode={self.mode} needs the '{name}' network")
                self.register_model(name, nets[name], optims[name], scheds[name])
            self.gan_loss = LOSSES.get("gan")(mode=privacy.gan_mode)
        self.nets = nets
        # what the training step calls: the nets themselves, or their DDP wrappers (distribute())
        self._train_nets: Dict[str, torch.nn.Module] = dict(self._models)
        self.mean = torch.tensor(norm_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(norm_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.desensitizer = privacy.desensitizer.name
        self.desensitizer_params = dict(privacy.desensitizer.params)
        # checked once here, then called directly per batch (no per-step range check);
        # mosaic/blur have fused Triton kernels (used on CUDA, torch reference elsewhere)
        plugin = resolve_desensitizer(self.desensitizer, self.desensitizer_params)
        fused = {"mosaic": kernels.mosaic, "blur": kernels.gaussian_blur}
        self._desensitize = fused.get(self.desensitizer, plugin)
        self.supervisor: Optional[torch.nn.Module] = None  # frozen G snapshot after an upgrade
        # keyed recovery: the secret lives only in memory (set_key), never in state() or logs
        self.keyed = self.mode != "baseline" and bool(privacy.decoder.keyed)
        self.__key: Optional[bytes] = None
        self._planes: Dict[Any, torch.Tensor] = {}
        self.val_target = val_target
        self.test_targets = test_targets or [t for t in datamanager.test_loader if t != val_target]
        self.best_score = -math.inf
        self.best_upgrade_r1 = -math.inf
        self.best_state: Optional[Dict[str, Any]] = None
        self.upgrades: List[Dict[str, Any]] = []
        self.history: List[Dict[str, Any]] = []  # one entry per epoch: lr, mean losses, validation
        self.global_step = 0
        self._loss_sums: Dict[str, float] = {}
        self._loss_steps = 0
        self._saved_epoch: Optional[int] = None  # epoch held by checkpoints/last.pth
        self.step_hooks: List[Any] = []  # callables(engine) run after every training step

    # ------------------------------------------------------------------ multi-process
    def distribute(self, sync_bn: bool = False, seed: int = 0) -> None:
        """Wrap every trainable net in DDP and shard the train batches (see ``distributed``).

        Call after ``torch.distributed`` is initialized. Checkpoints and evaluation keep using
        the bare nets. The discriminators run three times per step (real, fake, and for the G
        loss), so their BatchNorm buffers are not broadcast per
        forward (in-place buffer broadcasts between forwards would break autograd);
        ``evaluate`` gives every rank rank 0's buffers before it uses them.
        """
        if sync_bn:
            if self.device.type != "cuda":
                raise ValueError("train.sync_bn: SyncBatchNorm needs CUDA (torch has no CPU implementation)")
            for name in self._models:
                if name != "center":
                    self._models[name] = distributed.convert_sync_batchnorm(self._models[name])
        # torchreid's epoch loop re-opens every layer of C (open_all_layers) at each epoch start;
        # do it before wrapping, or DDP would leave a parameter frozen at wrap time (e.g. a
        # BNNeck bias) out of its gradient averaging and the ranks would drift apart
        for p in self.model.parameters():
            p.requires_grad_(True)
        wrapped = {}
        for name, net in self._models.items():
            if name == "center":  # the centers' gradients are averaged by hand in _step
                continue
            # nets run more than once per step (D1, D2) must not re-broadcast their
            # buffers in place between forwards; evaluate() syncs them from rank 0 instead
            repeated = name.startswith("disc")
            wrapped[name] = distributed.wrap_ddp(net, self.device, broadcast_buffers=not repeated)
        self._train_nets.update(wrapped)
        dm = self.datamanager
        self.train_loader = distributed.train_loader(
            dm.train_loader.dataset, dm.train_loader.batch_size, self._num_instances(), seed=seed,
            num_workers=dm.train_loader.num_workers, pin_memory=dm.train_loader.pin_memory)

    def _num_instances(self) -> int:
        sampler = self.datamanager.train_loader.sampler
        k = getattr(sampler, "num_instances", None)
        if k is None:
            raise ValueError("sampler.train_sampler: distributed training needs RandomIdentitySampler "
                             f"(P x K batches), got {type(sampler).__name__}")
        return int(k)

    # ------------------------------------------------------------------ keyed recovery
    def set_key(self, key: bytes) -> None:
        """The secret key the keyed decoder G_R(P, key) is trained with / recovers with."""
        if not self.keyed:
            raise ValueError("--key-file: this decoder is not keyed (privacy.decoder.keyed is false)")
        self.__key = bytes(key)
        self._planes = {}

    @property
    def has_key(self) -> bool:
        return self.__key is not None

    def key_planes(self, like: torch.Tensor) -> torch.Tensor:
        """The key's planes at ``like``'s image size, on its device."""
        if self.__key is None:
            raise ValueError("--key-file: the keyed decoder needs the secret key "
                             "(create one with 'torchreid-privacy keygen --output PATH')")
        size = tuple(like.shape[-2:])
        if size not in self._planes:
            channels = self.p.decoder.key_channels
            self._planes[size] = keys.key_planes(self.__key, channels, *size).to(like.device)
        return self._planes[size]

    @torch.no_grad()
    def recover(self, p01: torch.Tensor, wrong_key_generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """R in [0,1] from P in [0,1]: G_R(P), or G_R(P, key) when keyed. With
        ``wrong_key_generator`` a keyed decoder gets random wrong keys instead (what a thief sees)."""
        p = to_gan(p01)
        decoder = self.nets["decoder"]
        if not self.keyed:
            return from_gan(decoder(p))
        if wrong_key_generator is not None:
            key = keys.random_key_planes(p.shape[0], self.p.decoder.key_channels, *p.shape[-2:],
                                         generator=wrong_key_generator, device=p.device)
        else:
            key = self.key_planes(p)
        return from_gan(decoder(p, key))

    # ------------------------------------------------------------------ helpers
    def _to01(self, x: torch.Tensor) -> torch.Tensor:
        return denormalize(x, self.mean, self.std)

    def _norm(self, x01: torch.Tensor) -> torch.Tensor:
        return normalize(x01, self.mean, self.std)

    def conventional(self, o01: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """M from the conventional desensitizer (mosaic/blur/noise) on [0,1] images."""
        params = dict(self.desensitizer_params)
        if self.desensitizer == "noise" and generator is not None:
            params["generator"] = generator
        return self._desensitize(o01, **params)

    @torch.no_grad()
    def supervision(self, o01: torch.Tensor) -> torch.Tensor:
        """Current supervision M in [0,1]: the conventional one, or G_snapshot(O) after an upgrade."""
        if self.supervisor is not None:
            return from_gan(self.supervisor(to_gan(o01)))
        return self.conventional(o01)

    def _check(self, terms: Dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.item()} at epoch {self.epoch + 1}, "
                    f"step {self.global_step}; stopping")

    def _fwd(self, name: str, *inputs: torch.Tensor, bare: bool = False):
        """A training forward of net ``name`` under autocast, outputs back in float32.

        Losses are then computed in float32 whatever ``train.amp`` is. ``bare`` bypasses the
        DDP wrapper (for a frozen discriminator inside the generator loss).
        """
        net = self._models[name] if bare else self._train_nets[name]
        with self.precision.autocast():
            out = net(*inputs)
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() for o in out)
        return out.float()

    def _reid(self, x: torch.Tensor, pids: torch.Tensor, n_views: int) -> Dict[str, torch.Tensor]:
        """ReID loss of C on ``n_views`` stacked views of the batch (O then M or P)."""
        out = self._fwd("model", x)
        logits, feats = out if isinstance(out, (tuple, list)) else (out, out)
        b = pids.shape[0]
        terms: Dict[str, torch.Tensor] = {}
        for i, tag in enumerate(["o", "p"][:n_views]):
            sl = slice(i * b, (i + 1) * b)
            total, parts = self.reid_loss(logits[sl], feats[sl], pids)
            terms[f"reid_{tag}"] = total
            for k, v in parts.items():
                terms[f"{k}_{tag}"] = v.detach()
        return terms

    # ------------------------------------------------------------------ training step
    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers=None) -> Dict[str, float]:
        """torchreid's epoch loop; returns the epoch's mean loss terms (kept in ``history``)."""
        self._loss_sums, self._loss_steps = {}, 0
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        super().train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
        return {k: v / self._loss_steps for k, v in self._loss_sums.items()}

    def forward_backward(self, data: Dict[str, Any]) -> Dict[str, float]:
        """One training step (D step, then G/G_R/C step); returns every loss term as a float."""
        out = self._train_step(data)
        self.precision.update()
        for hook in self.step_hooks:
            hook(self)
        for k, v in out.items():
            self._loss_sums[k] = self._loss_sums.get(k, 0.0) + v
        self._loss_steps += 1
        return out

    def _train_step(self, data: Dict[str, Any]) -> Dict[str, float]:
        imgs, pids = self.parse_data_for_train(data)
        imgs, pids = imgs.to(self.device, non_blocking=True), pids.to(self.device, non_blocking=True)
        o01 = self._to01(imgs)
        m01 = self.supervision(o01)
        w = self.p.weights
        self.global_step += 1
        if self.mode == "baseline":
            terms = self._reid(torch.cat([imgs, self._norm(m01)]), pids, 2)
            loss = w.reid_o * terms["reid_o"] + w.reid_p * terms["reid_p"]
            self._check({"reid_o": terms["reid_o"], "reid_p": terms["reid_p"]})
            self._step(loss, ["model"])
            return {k: float(v.detach()) for k, v in terms.items()}

        D1, D2 = self.nets["disc_op"], self.nets["disc_pr"]
        o, m = to_gan(o01), to_gan(m01)
        p = self._fwd("generator", o)
        if self.keyed:  # one decoder pass: right key on P, random wrong keys on a detached P
            # (one batch, so BatchNorm's batch statistics during training are those of the same
            # right/wrong mixture its running statistics hold at test time)
            b = p.shape[0]
            wrong = keys.random_key_planes(b, self.p.decoder.key_channels, *p.shape[-2:], device=p.device)
            right = self.key_planes(p).unsqueeze(0).expand(b, -1, -1, -1)
            both = self._fwd("decoder", torch.cat([p, p.detach()]), torch.cat([right, wrong]))
            r, r_wrong = both[:b], both[b:]
        else:
            r = self._fwd("decoder", p)

        # D step: D1 real (O, M) vs fake (O, P); D2 real (P, O) vs fake (P, R)
        _requires_grad([D1, D2], True)
        pd, rd = p.detach(), r.detach()
        d_terms = {
            "d_op": self.gan_loss(self._fwd("disc_op", o, m), True) + self.gan_loss(self._fwd("disc_op", o, pd), False),
            "d_pr": self.gan_loss(self._fwd("disc_pr", pd, o), True) + self.gan_loss(self._fwd("disc_pr", pd, rd), False),
        }
        self._check(d_terms)
        self._step(d_terms["d_op"] + d_terms["d_pr"], ["disc_op", "disc_pr"], center=False)

        # G / G_R / C step
        _requires_grad([D1, D2], False)
        terms = {
            "gan": (self.gan_loss(self._fwd("disc_op", o, p, bare=True), True)
                    + self.gan_loss(self._fwd("disc_pr", p, r, bare=True), True)),
            "rec_p": F.l1_loss(p, m),
            "rec_r": F.l1_loss(r, o),
        }
        if self.keyed:  # a wrong key must give back nothing beyond P itself
            terms["wrong_key"] = F.l1_loss(r_wrong, p.detach())
        terms.update(self._reid(torch.cat([imgs, self._norm(from_gan(p))]), pids, 2))
        main = {k: terms[k] for k in ("gan", "rec_p", "rec_r", "reid_o", "reid_p", "wrong_key") if k in terms}
        self._check(main)
        loss = sum(getattr(w, k) * v for k, v in main.items())
        self._step(loss, ["model", "generator", "decoder"])
        _requires_grad([D1, D2], True)
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update({k: float(v.detach()) for k, v in d_terms.items()})
        return out

    def _step(self, loss: torch.Tensor, names: List[str], center: bool = True) -> None:
        optims = [self._optims[n] for n in names]
        center = center and self.center_optimizer is not None
        if center:
            optims.append(self.center_optimizer)
        for opt in optims:
            opt.zero_grad(set_to_none=True)
        self.precision.backward(loss)  # DDP averages the nets' gradients during backward
        if center:  # centers learn at their own rate (lr center_lr), independent of the loss weight
            self.reid_loss.rescale_center_grad()
            distributed.average_gradients(self.reid_loss.center_parameters())
        for opt in optims:
            self.precision.step(opt)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def anonymize(self, o01: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """P in [0,1]: G(O), or M in baseline mode."""
        if self.mode == "baseline":
            return self.conventional(o01, generator)
        return from_gan(self.nets["generator"](to_gan(o01)))

    @torch.no_grad()
    def evaluate(self, target: str, grid_path: Optional[str] = None, desc: str = "eval") -> Dict[str, Any]:
        """Four-setting ranks and O-M/O-P/O-R image metrics on one target's query/gallery."""
        self.set_model_mode("eval")
        for net in self._models.values():  # all ranks evaluate rank 0's running statistics
            distributed.broadcast_buffers(net)
        gen = torch.Generator(device=self.device).manual_seed(self.p.eval_seed)
        acc = {k: ImageMetricAccumulator() for k in ("O-M", "O-P", "O-R", "O-R wrong key")}
        can_recover = not self.keyed or self.has_key
        feats: Dict[str, Dict[str, torch.Tensor]] = {}
        ids: Dict[str, Dict[str, torch.Tensor]] = {}
        grid = None
        loaders = self.test_loader[target]
        main = distributed.is_main()
        for split in ("query", "gallery"):
            fo, fp, pids, camids = [], [], [], []
            # each rank embeds a strided share of the split; the pieces are gathered below
            for data in tqdm(distributed.shard_loader(loaders[split]), desc=f"{desc} {target}/{split}", leave=False,
                             disable=None if main else True, dynamic_ncols=True):
                imgs, pid, camid = self.parse_data_for_eval(data)
                imgs = imgs.to(self.device)
                o01 = self._to01(imgs)
                m01 = self.conventional(o01, gen)
                p01 = m01 if self.mode == "baseline" else self.anonymize(o01)
                acc["O-M"].update(o01, m01)
                acc["O-P"].update(o01, p01)
                r01 = None
                if self.mode != "baseline" and can_recover:
                    r01 = self.recover(p01)
                    acc["O-R"].update(o01, r01)
                if self.keyed:
                    acc["O-R wrong key"].update(o01, self.recover(p01, wrong_key_generator=gen))
                fo.append(self._features(imgs))
                fp.append(self._features(self._norm(p01)))
                pids.append(torch.as_tensor(pid))
                camids.append(torch.as_tensor(camid))
                if grid is None and grid_path and main:
                    cols = [o01, m01, p01] + ([r01] if r01 is not None else [])
                    grid = [c[: self.p.grid_images] for c in cols]
            local = [torch.cat(fo), torch.cat(fp), torch.cat(pids), torch.cat(camids)]
            gathered = [distributed.unshard(list(col)) for col in zip(*distributed.gather_objects(local))]
            feats[split] = {"O": gathered[0], "P": gathered[1]}
            ids[split] = {"pids": gathered[2], "camids": gathered[3]}
        for name, merged in zip(acc, zip(*distributed.gather_objects(list(acc.values())))):
            acc[name] = ImageMetricAccumulator.merged(merged)
        if grid is not None:
            save_grid(grid_path, grid)
        rank = evaluate_settings(feats, q_pids=ids["query"]["pids"], g_pids=ids["gallery"]["pids"],
                                 q_camids=ids["query"]["camids"], g_camids=ids["gallery"]["camids"])
        image = {k: v.result() for k, v in acc.items() if v.count}
        self.set_model_mode("train")
        if self.supervisor is not None:
            self.supervisor.eval()
        return {"rank": rank, "image": image}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return out.float().cpu()

    # ------------------------------------------------------------------ validation + upgrade
    def gates(self, val: Dict[str, Any]) -> Dict[str, bool]:
        """The three upgrade conditions on a validation result."""
        om, op = val["image"]["O-M"], val["image"]["O-P"]
        r1 = val["rank"]["O->P"]["R1"]
        return {
            "psnr": op["psnr"] < om["psnr"] + self.p.eps_psnr,
            "ssim": op["ssim"] < om["ssim"] + self.p.eps_ssim,
            "rank1": r1 > max(self.best_upgrade_r1, self.p.r1_floor),
        }

    def maybe_upgrade(self, val: Dict[str, Any]) -> bool:
        """Progressive mode: snapshot G as the new supervision when every gate holds."""
        if self.mode != "progressive":
            return False
        gates = self.gates(val)
        if not all(gates.values()):
            return False
        r1 = val["rank"]["O->P"]["R1"]
        self.best_upgrade_r1 = r1
        snap = copy.deepcopy(self.nets["generator"]).eval()  # buffers: rank 0's, set by evaluate()
        _requires_grad([snap], False)
        self.supervisor = snap
        event = {"epoch": self.epoch + 1, "val_r1_op": r1,
                 "psnr_op": val["image"]["O-P"]["psnr"], "ssim_op": val["image"]["O-P"]["ssim"]}
        self.upgrades.append(event)
        if self.writer is not None:
            self.writer.add_scalar("Upgrade/val_r1_op", r1, self.epoch + 1)
            self.writer.add_scalar("Upgrade/count", len(self.upgrades), self.epoch + 1)
        log.info("supervision upgraded at epoch %d (val O->P rank-1 %.3f)", self.epoch + 1, r1)
        return True

    @staticmethod
    def selection_score(val: Dict[str, Any]) -> float:
        """Model selection on the validation split: mean mAP over the four settings.

        mAP rather than rank-1: a validation split holds few queries, and its rank-1
        saturates within a few epochs, which would freeze selection at an early epoch.
        """
        return sum(val["rank"][s]["mAP"] for s in SETTINGS) / len(SETTINGS)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> Dict[str, Any]:
        return {
            "format": "torchreid-privacy/1",
            "mode": self.mode,
            "epoch": self.epoch + 1,
            "models": {n: m.state_dict() for n, m in self._models.items()},
            "optims": {n: o.state_dict() for n, o in self._optims.items()},
            "scheds": {n: s.state_dict() for n, s in self._scheds.items() if s is not None},
            "supervisor": None if self.supervisor is None else self.supervisor.state_dict(),
            "best_score": self.best_score,
            "best_upgrade_r1": self.best_upgrade_r1,
            "upgrades": self.upgrades,
            "history": self.history,
            "num_classes": self.datamanager.num_train_pids,
            "config": to_dict(self.config) if self.config is not None else None,
            "rng": checkpoint.rng_state(),
            # every rank's RNG (augmentation, noise) so a multi-process resume is exact too
            "rng_ranks": distributed.gather_objects(checkpoint.rng_state()) if distributed.world_size() > 1 else None,
            "amp_scaler": self.precision.state_dict(),
            "global_step": self.global_step,
        }

    def load_state(self, ckpt: Dict[str, Any], resume: bool = True, source: str = "checkpoint") -> None:
        """Load every net (and the supervisor snapshot); with ``resume`` also optimizers,
        schedulers, best metrics, history, step counter and RNG states, so training goes on
        exactly as if it had never stopped. ``source`` names the file in error messages."""
        if resume and ckpt.get("mode") != self.mode:
            raise bridge.CheckpointError(f"{source}: checkpoint was trained with privacy.mode {ckpt.get('mode')}, "
                                         f"the config says {self.mode}")
        for name, net in self._models.items():
            if name not in ckpt["models"]:
                raise bridge.CheckpointError(f"{source}: checkpoint lacks network '{name}'")
            checkpoint.load_state(net, ckpt["models"][name], f"{source} [{name}]")
        if ckpt.get("supervisor") is not None:
            snap = copy.deepcopy(self.nets["generator"]).eval()
            checkpoint.load_state(snap, ckpt["supervisor"], f"{source} [supervisor]")
            _requires_grad([snap], False)
            self.supervisor = snap
        if not resume:
            return
        missing = [n for n in self._optims if n not in ckpt.get("optims", {})]
        if missing:
            raise bridge.CheckpointError(f"{source}: checkpoint lacks optimizer state for {', '.join(missing)}")
        for name, opt in self._optims.items():
            opt.load_state_dict(ckpt["optims"][name])
        for name, sched in self._scheds.items():
            if sched is not None and name in ckpt["scheds"]:
                sched.load_state_dict(ckpt["scheds"][name])
        self.best_score = ckpt["best_score"]
        self.best_upgrade_r1 = ckpt["best_upgrade_r1"]
        self.upgrades = list(ckpt["upgrades"])
        self.history = list(ckpt["history"])
        self.global_step = ckpt.get("global_step", 0)
        self.precision.load_state_dict(ckpt.get("amp_scaler"))
        per_rank = ckpt.get("rng_ranks")
        if per_rank and len(per_rank) == distributed.world_size():
            checkpoint.set_rng_state(per_rank[distributed.rank()])
        else:
            checkpoint.set_rng_state(ckpt.get("rng"))

    def _resume(self, resume: str | Dict[str, Any], save_dir: str) -> int:
        """Restore a run from a checkpoint (file, run directory or loaded dict); returns its epoch.

        The in-memory best state (used for the final test) is taken back from ``best.pth`` of
        the run, checked to be the one ``best_score`` refers to.
        """
        if isinstance(resume, dict):
            ck, source = resume, "resume checkpoint"
        else:
            source = checkpoint.resolve(resume, prefer=(checkpoint.LAST, checkpoint.BEST), flag="--resume")
            ck = checkpoint.load(source)
        self.load_state(ck, resume=True, source=source)
        places = [os.path.join(save_dir, checkpoint.CKPT_DIR, checkpoint.BEST)]
        if not isinstance(resume, dict):
            places.append(os.path.join(os.path.dirname(os.path.abspath(source)), checkpoint.BEST))
        self.best_state = None
        for path in places:
            if os.path.isfile(path):
                best = checkpoint.load(path)
                if best.get("best_score") == self.best_score and best.get("epoch", 0) <= ck["epoch"]:
                    self.best_state = best
                    break
        if self.best_state is None and self.best_score > -math.inf:
            log.warning("resume: no best.pth with best_score %.4f found; the final test uses the best "
                        "epoch from now on, or the last weights", self.best_score)
        self._saved_epoch = ck["epoch"]
        log.info("resumed from %s at epoch %d (step %d)", source, ck["epoch"], self.global_step)
        return ck["epoch"]

    def _last_good(self, ckpt_dir: str) -> str:
        if self._saved_epoch is None:
            return "no checkpoint was written yet"
        return f"last good checkpoint: {os.path.join(ckpt_dir, checkpoint.LAST)} (epoch {self._saved_epoch})"

    # ------------------------------------------------------------------ the loop
    def run_privacy(self, save_dir: str, max_epoch: int, start_epoch: int = 0, print_freq: int = 10**9,
                    resume: Optional[str | Dict[str, Any]] = None, eval_test: bool = True) -> Dict[str, Any]:
        """Train, validate/upgrade every ``val_period`` epochs, select on val, test once.

        Returns (and writes to ``save_dir/results.json``) ``{"mode", "test": {target: ...},
        "val": last validation, "upgrades": [...], "history": [...]}``; ``history`` has one
        entry per epoch (``lr``, mean ``losses``, and the validation rank-1s when validated).

        ``resume`` (a checkpoint file, run directory or loaded checkpoint) continues a run
        exactly: the same seed gives the same losses as a run that never stopped. A NaN/Inf
        loss raises :class:`NonFiniteLossError`; ``checkpoints/last.pth`` then still holds the
        last completed epoch.
        """
        from torch.utils.tensorboard import SummaryWriter

        if self.keyed and not self.has_key:
            raise ValueError("--key-file: privacy.decoder.keyed is true, so training needs the secret key "
                             "(create one with 'torchreid-privacy keygen --output PATH')")
        main = distributed.is_main()  # only rank 0 writes logs, grids, checkpoints and results
        if main:
            os.makedirs(save_dir, exist_ok=True)
        ckpt_dir = os.path.join(save_dir, checkpoint.CKPT_DIR)
        if resume:
            start_epoch = self._resume(resume, save_dir)
        if self.writer is None and main:
            self.writer = SummaryWriter(log_dir=save_dir)
        self.max_epoch = max_epoch
        t0 = time.time()
        val = None
        bar = tqdm(range(start_epoch, max_epoch), desc=f"train [{self.mode}]", disable=None if main else True,
                   dynamic_ncols=True)
        for self.epoch in bar:
            entry: Dict[str, Any] = {"epoch": self.epoch + 1, "lr": self.get_current_lr()}
            try:
                entry["losses"] = self.train(print_freq=print_freq)
            except NonFiniteLossError as exc:
                raise NonFiniteLossError(f"{exc}; {self._last_good(ckpt_dir)}") from None
            last = self.epoch + 1 == max_epoch
            if self.val_target and ((self.epoch + 1) % self.p.val_period == 0 or last):
                val = self.evaluate(self.val_target, os.path.join(save_dir, "grids", f"val-epoch{self.epoch + 1:03d}.png"),
                                    desc="val")
                self._log_eval("Val", val)
                upgraded = self.maybe_upgrade(val)
                score = self.selection_score(val)
                entry.update({"score": score, "upgraded": upgraded,
                              "val_r1": {s: val["rank"][s]["R1"] for s in SETTINGS}})
                bar.set_postfix(val_r1_op=f"{val['rank']['O->P']['R1']:.2f}", upgrades=len(self.upgrades))
            self.history.append(entry)
            best = "score" in entry and entry["score"] >= self.best_score  # ties: the later model
            if best:
                self.best_score = entry["score"]
            state = self.state()  # once per epoch, on every rank: it gathers the ranks' RNG states
            if best:
                self.best_state = copy.deepcopy(state)
                if main:
                    checkpoint.save_atomic(state, os.path.join(ckpt_dir, checkpoint.BEST))
            if main:
                checkpoint.save_atomic(state, os.path.join(ckpt_dir, checkpoint.LAST))
            self._saved_epoch = self.epoch + 1
        if self.best_state is not None:
            self.load_state(self.best_state, resume=False)
        results: Dict[str, Any] = {"mode": self.mode, "val": val, "upgrades": self.upgrades,
                                   "history": self.history, "train_seconds": round(time.time() - t0, 1)}
        if eval_test:
            results["test"] = {}
            for target in self.test_targets:
                res = self.evaluate(target, os.path.join(save_dir, "grids", f"test-{target}.png"), desc="test")
                self._log_eval(f"Test/{target}", res)
                results["test"][target] = res
        if main:
            with open(os.path.join(save_dir, "results.json.tmp"), "w") as f:
                json.dump(results, f, indent=2, default=float)
            os.replace(os.path.join(save_dir, "results.json.tmp"), os.path.join(save_dir, "results.json"))
            self.writer.flush()
        distributed.barrier()  # nobody leaves before rank 0 has written everything
        return results

    def _log_eval(self, prefix: str, res: Dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = self.epoch + 1
        for setting, r in res["rank"].items():
            self.writer.add_scalar(f"{prefix}/rank1/{setting}", r["R1"], step)
            self.writer.add_scalar(f"{prefix}/mAP/{setting}", r["mAP"], step)
        for pair, m in res["image"].items():
            self.writer.add_scalar(f"{prefix}/psnr/{pair}", m["psnr"], step)
            self.writer.add_scalar(f"{prefix}/ssim/{pair}", m["ssim"], step)
