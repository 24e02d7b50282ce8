"""The privacy engine: a torchreid ``Engine`` whose step trains G, G_R, C, D1 and D2 jointly.

Like torchreid's triplet engine, every net is registered with its optimizer and scheduler and
``forward_backward(data)`` returns a dict of floats. Evaluation (``evaluator``), the upgrade
policy (``upgrade``), checkpoint state (``state``), the run loop (``loop``), torchreid's
``run``/``test`` (``torchreid_api``) and defaults for missing parts (``parts``) live beside it.
torchreid's "get started" script works with its engine line swapped (README, "Python")::

    engine = torchreid_privacy.ImagePrivacyEngine(datamanager, model, optimizer=optimizer,
                                                  scheduler=scheduler, privacy={"mode": "progressive"})
    engine.run(save_dir="log/privacy", max_epoch=120, eval_freq=5)

Modes: ``baseline`` trains C on O and M; ``joint`` trains all five nets; ``progressive`` adds the
supervision upgrade (see ``upgrade.UpgradePolicy``).
"""
from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F

from torchreid_privacy import bridge

from torchreid_privacy.utils import distributed

from torchreid_privacy.sealing import keys
from torchreid_privacy.publish.through import through_channel
from torchreid_privacy.utils.amp import Precision
from torchreid_privacy.utils.images import from_gan, to_gan

from .compile_nets import CompiledNets
from .cpu_fast import channels_last_works, nets_to_channels_last, to_channels_last, use_fused_adam
from .evaluator import Evaluator
from .loop import check_finite
from .parts import EngineParts, complete_parts
from .sealed_step import sealed_step
from .supervision import SupervisionMixin, requires_grad as _requires_grad
from .torchreid_api import TorchreidRunAPI
from .upgrade import UpgradePolicy

# the loss terms of an identity code and of the crossed views (privacy.weights.<name>)
CODE_TERMS = ("code", "decode", "cross", "consistency")


log = logging.getLogger(__name__)


class PrivacyEngine(SupervisionMixin, TorchreidRunAPI, bridge.Engine):
    """Joint anonymization + identity-invariant ReID training (see the module docstring).

    Args:
        datamanager (torchreid.data.ImageDataManager): torchreid's data manager (identity
            sampler); its test targets hold the validation split (a ``<name>_val`` dataset, also a
            source) and the test sets.
        model: the ReID backbone C (a torchreid model; it is made to return features in training).
        optimizer (torch.optim.Optimizer | None): C's optimizer (built from the config when None).
        scheduler (torch.optim.lr_scheduler.LRScheduler | None): C's learning-rate scheduler
            (built from the config when None).
        privacy: the ``privacy:`` section, a mapping merged into the defaults (or a full ``Config``
            as ``config``).
        parts: everything else already built (``builder.build_privacy_engine`` passes G, G_R, D1,
            D2, their optimizers and schedulers, the ReID loss and its center optimizer); what is
            missing is built from the config.
        val_target: the validation target's name (default: the validation split found among the
            datamanager's sources and targets).
        test_targets: the test targets' names (default: the other targets).
        use_gpu: torchreid's ``use_gpu`` (default: whether CUDA is available).
        amp: ``train.amp`` (off | bf16 | fp16).
        compile_mode: ``train.compile`` (off | default | max-autotune): the step runs
            ``torch.compile``-d callables of the nets (compiled at the first step); the registered
            nets, so checkpoints and evaluation, stay the bare ones.
        cpu_fast: on a CPU (default: whenever the device is one), the nets train in channels-last
            layout (C only if a probe on a copy shows it supports it) and Adam uses its fused
            kernel (see ``cpu_fast``); float rounding differs from the contiguous layout, the
            method does not. ``False`` keeps torch's defaults.

    ``phase_timer``: None, or a callable ``timer(phase_name)`` returning a context manager that
    times that phase of the step (``bench step --breakdown``); None costs nothing.
    """

    def __init__(self, datamanager, model: torch.nn.Module, optimizer=None, scheduler=None,
                 privacy: Optional[Mapping[str, Any]] = None, *, config=None, parts: Optional[EngineParts] = None,
                 val_target: Optional[str] = None, test_targets: Optional[List[str]] = None,
                 use_gpu: Optional[bool] = None, amp: Optional[str] = None,
                 compile_mode: Optional[str] = None, cpu_fast: Optional[bool] = None) -> None:
        use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
        super().__init__(datamanager, use_gpu=use_gpu)
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.use_gpu else torch.device("cpu")
        parts = complete_parts(datamanager, bridge.want_features(model), optimizer, scheduler, privacy, config,
                               parts, val_target, test_targets, self.device)
        self.config, self.p, self.mode = parts.config, parts.config.privacy, parts.config.privacy.mode
        self.precision = Precision(amp if amp is not None else self.config.train.amp, self.device)
        self.compiled = CompiledNets(compile_mode if compile_mode is not None else self.config.train.compile)
        self.phase_timer: Optional[Callable[[str], AbstractContextManager]] = None
        self.model = model
        self.register_model("model", model, parts.optimizer, parts.scheduler)
        self.reid_loss, self.center_optimizer = parts.reid_loss, parts.center_optimizer
        if parts.center_optimizer is not None:  # centers: own SGD, constant lr (BoT/AGW)
            self.register_model("center", parts.reid_loss, parts.center_optimizer,
                                torch.optim.lr_scheduler.ConstantLR(parts.center_optimizer, factor=1.0, total_iters=0))
        self.nets = parts.nets
        for name, net in parts.nets.items():
            self.register_model(name, net, parts.optims[name], parts.scheds[name])
        from torchreid_privacy.registry import LOSSES

        if self.mode != "baseline":
            self.gan_loss = LOSSES.get("gan")(mode=self.p.gan_mode)
            self.code_loss = LOSSES.get("triplet")(margin=self.p.triplet.margin)
        self.cross_loss = LOSSES.get("cross_triplet")(margin=self.p.triplet.margin)
        # what the training step calls: the nets themselves, or their DDP wrappers (distribute())
        self._train_nets: Dict[str, torch.nn.Module] = dict(bridge.engine_models(self))
        self.inference = parts.inference.to(self.device)  # the one definition of "apply G / G_R / C"
        if cpu_fast is None:  # train.cpu_fast: true (default) = on for float32 training on a CPU
            # (not under autocast: oneDNN's channels-last bf16 convolutions give NaN for some shapes)
            cpu_fast = self.config.train.cpu_fast and self.device.type == "cpu" and not self.precision.enabled
        self.cpu_fast = bool(cpu_fast)
        self._channels_last: frozenset = frozenset()  # names of the nets whose step inputs go channels-last
        if self.cpu_fast:
            self._use_cpu_fast_paths()
        self.evaluator = Evaluator(self.inference, eval_seed=self.p.eval_seed, grid_images=self.p.grid_images,
                                   parse=self.parse_data_for_eval)
        self.keyed = self.inference.keyed
        self.supervisor: Optional[torch.nn.Module] = None  # frozen G snapshot after an upgrade
        self.val_target, self.test_targets = parts.val_target, parts.test_targets
        self.policy = UpgradePolicy(self.p.eps_psnr, self.p.eps_ssim, self.p.r1_floor, gate_psnr=self.p.gate_psnr,
                                    fallback=self.p.upgrade.fallback,
                                    inversion_gate=bool(self.p.upgrade.inversion_gate.enabled))
        self.best_score = -math.inf
        self.best_state: Optional[Dict[str, Any]] = None
        self.history: List[Dict[str, Any]] = []  # one entry per epoch: lr, mean losses, validation
        self.global_step = 0
        self.saved_epoch: Optional[int] = None  # epoch held by checkpoints/last.pth
        self.step_hooks: List[Any] = []  # callables(engine) run after every training step
        self._loss_sums: Dict[str, float] = {}
        self._loss_steps = 0

    def _use_cpu_fast_paths(self) -> None:
        """Channels-last nets (C if it supports it) and fused Adam: see ``cpu_fast``."""
        names = set(self.nets)
        sample = torch.linspace(-1.0, 1.0, 2 * 3 * self.config.data.height * self.config.data.width,
                                device=self.device).view(2, 3, self.config.data.height, self.config.data.width)
        if channels_last_works(self.model, sample):
            names.add("model")
        models = bridge.engine_models(self)
        nets_to_channels_last(models[n] for n in names)
        self._channels_last = frozenset(names)
        use_fused_adam(list(bridge.engine_optimizers(self).values()))

    # ------------------------------------------------------------------ keys, supervision
    def set_key(self, key: bytes) -> None:
        """The secret key the keyed decoder G_R(P, key) is trained with / recovers with."""
        self.inference.set_key(key)

    @property
    def has_key(self) -> bool:
        """Whether the keyed decoder's key was given (``set_key``)."""
        return self.inference.has_key

    @property
    def upgrades(self) -> List[Dict[str, Any]]:
        """The supervision upgrades so far, one dict per upgrade (epoch and the validation numbers
        that passed the gates)."""
        return self.policy.upgrades

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
        imgs, pids = self.parse_data_for_train(data)
        imgs, pids = imgs.to(self.device, non_blocking=True), pids.to(self.device, non_blocking=True)
        self.global_step += 1
        if self.mode == "baseline":
            out = self._baseline_step(imgs, pids)
        else:  # a sealed run trains no G_R and no D2 (recovery is cryptographic)
            out = self._joint_step(imgs, pids) if "decoder" in self.nets else sealed_step(self, imgs, pids)
        self.precision.update()
        for hook in self.step_hooks:
            hook(self)
        for k, v in out.items():
            self._loss_sums[k] = self._loss_sums.get(k, 0.0) + v
        self._loss_steps += 1
        return out

    def _phase(self, name: str) -> AbstractContextManager:
        """Times phase ``name`` of the step when a ``phase_timer`` is set (profiling), else nothing."""
        return nullcontext() if self.phase_timer is None else self.phase_timer(name)

    def as_published(self, x01: torch.Tensor) -> torch.Tensor:
        """P (or M) as C and the inversion adversary see it in training: with
        ``privacy.publish.train_through``, the published file's pixels in the forward pass and the
        differentiable stand-in's gradient in the backward pass (``publish.through``); else as is."""
        if not self.p.publish.train_through:
            return x01
        return through_channel(x01, self.inference.channel)

    def _baseline_step(self, imgs: torch.Tensor, pids: torch.Tensor) -> Dict[str, float]:
        """C on O and the conventional M (as published, with ``privacy.publish.train_through``)."""
        with self._phase("prep: to01, M"):
            m01 = self.as_published(self.supervision(self.inference.to01(imgs)))
            x = torch.cat([imgs, self.inference.normalize(m01)])
        with self._phase("C fwd (O, M) + ReID loss"):
            terms = self._reid(x, pids)
        check_finite({"reid_o": terms["reid_o"], "reid_p": terms["reid_p"]}, self.epoch + 1, self.global_step)
        w = self.p.weights
        self._step(w.reid_o * terms["reid_o"] + w.reid_p * terms["reid_p"] + w.cross * terms.get("cross", 0.0)
                   + w.consistency * terms.get("consistency", 0.0),
                   ["model"], phase="C step")
        return {k: float(v.detach()) for k, v in terms.items()}

    def _joint_step(self, imgs: torch.Tensor, pids: torch.Tensor) -> Dict[str, float]:
        with self._phase("prep: to01, M, to_gan"):
            o01 = self.inference.to01(imgs)
            m01 = self.supervision(o01)
            o, m = to_gan(o01), to_gan(m01)
        D1, D2 = self.nets["disc_op"], self.nets["disc_pr"]
        with self._phase("G fwd"):
            p, code = self.generate(o)
        with self._phase("G_R fwd"):
            r, r_wrong = self._decode(p)

        # D step: D1 real (O, M) vs fake (O, P); D2 real (P, O) vs fake (P, R)
        _requires_grad([D1, D2], True)
        pd, rd = p.detach(), r.detach()
        with self._phase("D step: D1, D2 fwd x4 + loss"):
            d_terms = {
                "d_op": (self.gan_loss(self._fwd("disc_op", o, m), True)
                         + self.gan_loss(self._fwd("disc_op", o, pd), False)),
                "d_pr": (self.gan_loss(self._fwd("disc_pr", pd, o), True)
                         + self.gan_loss(self._fwd("disc_pr", pd, rd), False)),
            }
        check_finite(d_terms, self.epoch + 1, self.global_step)
        self._step(d_terms["d_op"] + d_terms["d_pr"], ["disc_op", "disc_pr"], center=False, phase="D step")

        # G / G_R / C step
        _requires_grad([D1, D2], False)
        with self._phase("G step: D1, D2 fwd x2 + GAN, L1 losses"):
            terms = {
                "gan": (self.gan_loss(self._fwd("disc_op", o, p, bare=True), True)
                        + self.gan_loss(self._fwd("disc_pr", p, r, bare=True), True)),
                "rec_p": F.l1_loss(p, m),
                "rec_r": F.l1_loss(r, o),
            }
            if self.keyed:  # a wrong key must give back nothing beyond P itself
                terms["wrong_key"] = F.l1_loss(r_wrong, p.detach())
        with self._phase("C fwd (O, P) + ReID loss"):
            p_pub01 = self.as_published(from_gan(p))
            terms.update(self._reid(torch.cat([imgs, self.inference.normalize(p_pub01)]), pids))
        terms.update(self.code_terms(code, pids, to_gan(p_pub01)))
        main = {k: terms[k] for k in ("gan", "rec_p", "rec_r", "reid_o", "reid_p", "wrong_key", *CODE_TERMS)
                if k in terms}
        check_finite(main, self.epoch + 1, self.global_step)
        w = self.p.weights
        self._step(sum(getattr(w, k) * v for k, v in main.items()), ["model", "generator", "decoder"],
                   phase="G step (C, G, G_R)")
        _requires_grad([D1, D2], True)
        out = {k: float(v.detach()) for k, v in terms.items()}
        out.update({k: float(v.detach()) for k, v in d_terms.items()})
        return out

    def generate(self, o: torch.Tensor):
        """G's training forward: ``(P, identity code)``; the code is None unless G carries one
        (``carries_code``, e.g. ``residual_code``)."""
        if getattr(self.nets["generator"], "carries_code", False):
            return self._fwd("generator", o, with_code=True)
        return self._fwd("generator", o), None

    def code_terms(self, code: Optional[torch.Tensor], pids: torch.Tensor,
                   p_published: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """When G carries an identity code: ``code``, the batch-hard triplet on it (weight
        ``privacy.weights.code``), and ``decode``, the error of reading it back from P as published
        (GAN space; ``privacy.weights.decode``, for a G with a reader); else nothing."""
        terms: Dict[str, torch.Tensor] = {}
        if code is None:
            return terms
        if self.p.weights.code:
            terms["code"] = self.code_loss(code, pids)
        if self.p.weights.decode and p_published is not None and hasattr(self.nets["generator"], "decode_loss"):
            terms["decode"] = self.nets["generator"].decode_loss(p_published, code)
        return terms

    def _decode(self, p: torch.Tensor):
        """``(R, R from wrong keys or None)``: G_R's training forward on P."""
        if self.keyed:  # one decoder pass: right key on P, random wrong keys on a detached P
            # (one batch, so BatchNorm's batch statistics during training are those of the same
            # right/wrong mixture its running statistics hold at test time)
            b = p.shape[0]
            wrong = keys.random_key_planes(b, self.inference.key_channels, *p.shape[-2:], device=p.device)
            right = self.inference.key_planes(p).unsqueeze(0).expand(b, -1, -1, -1)
            both = self._fwd("decoder", torch.cat([p, p.detach()]), torch.cat([right, wrong]))
            return both[:b], both[b:]
        return self._fwd("decoder", p), None

    def _fwd(self, name: str, *inputs: torch.Tensor, bare: bool = False, **kwargs: Any):
        """A training forward of net ``name`` under autocast, outputs back in float32 (losses are
        float32 whatever ``train.amp`` is). ``bare`` bypasses DDP (a frozen discriminator).
        With ``train.compile`` the net's compiled callable runs; ``kwargs`` go to the net."""
        net = self.compiled(bridge.engine_models(self)[name] if bare else self._train_nets[name])
        if name in self._channels_last:
            inputs = tuple(to_channels_last(x) for x in inputs)
        with self.precision.autocast():
            out = net(*inputs, **kwargs)
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() for o in out)
        return out.float()

    def _reid(self, x: torch.Tensor, pids: torch.Tensor) -> Dict[str, torch.Tensor]:
        """ReID loss of C on the two stacked views of the batch (O, then M or P); with
        ``privacy.reid_forward separate`` C sees each view in its own forward (per-domain BatchNorm)."""
        b = pids.shape[0]
        if self.p.reid_forward == "separate":
            outs = [self._fwd("model", x[:b]), self._fwd("model", x[b:])]
            outs = [o if isinstance(o, (tuple, list)) else (o, o) for o in outs]
            logits, feats = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        else:
            out = self._fwd("model", x)
            logits, feats = out if isinstance(out, (tuple, list)) else (out, out)
        terms: Dict[str, torch.Tensor] = {}
        for i, tag in enumerate(("o", "p")):
            sl = slice(i * b, (i + 1) * b)
            total, parts = self.reid_loss(logits[sl], feats[sl], pids)
            terms[f"reid_{tag}"] = total
            for k, v in parts.items():
                terms[f"{k}_{tag}"] = v.detach()
        if self.p.weights.cross:  # the crossed settings O->P / P->O, trained directly
            terms["cross"] = self.cross_loss(feats[:b], feats[b:], pids)
        if self.p.weights.consistency:  # each image's P features agree with its O features
            terms["consistency"] = (F.normalize(feats[b:], dim=1) - F.normalize(feats[:b], dim=1)).pow(2).sum(1).mean()
        return terms

    def _step(self, loss: torch.Tensor, names: List[str], center: bool = True, phase: str = "step") -> None:
        """Backward ``loss`` and step the optimizers of nets ``names`` (and the centers')."""
        optims = [bridge.engine_optimizers(self)[n] for n in names]
        center = center and self.center_optimizer is not None
        if center:
            optims.append(self.center_optimizer)
        with self._phase(f"{phase}: backward"):
            for opt in optims:
                opt.zero_grad(set_to_none=True)
            self.precision.backward(loss)  # DDP averages the nets' gradients during backward
        with self._phase(f"{phase}: optimizers"):
            if center:  # centers learn at their own rate (lr center_lr), independent of the loss weight
                self.reid_loss.rescale_center_grad()
                distributed.average_gradients(self.reid_loss.center_parameters())
            for opt in optims:
                self.precision.step(opt)

    # ------------------------------------------------------------------ multi-process
    def distribute(self, sync_bn: bool = False, seed: int = 0) -> None:
        """Wrap every trainable net in DDP and shard the train batches (see ``distributed``)."""
        from .ddp import distribute

        distribute(self, sync_bn, seed)


ImagePrivacyEngine = PrivacyEngine  # torchreid's naming (ImageSoftmaxEngine, ImageTripletEngine)
