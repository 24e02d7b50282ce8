"""Multi-process training of the privacy engine: DDP wrappers and the sharded train loader.

Checkpoints and evaluation keep using the bare nets, so a checkpoint loads the same with or
without DDP. The discriminators run three times per step (real, fake, and for the G loss), so
their BatchNorm buffers are not broadcast per forward (in-place buffer broadcasts between
forwards would break autograd); ``evaluate`` gives every rank rank 0's buffers before use.
"""
from __future__ import annotations

from typing import Any

from torchreid_privacy import bridge

from torchreid_privacy.utils import distributed
from torchreid_privacy.plugins.norm_act import convert_sync_batchnorm


def distribute(engine: Any, sync_bn: bool = False, seed: int = 0) -> None:
    """Wrap every trainable net of ``engine`` in DDP and shard its train batches.

    Call after ``torch.distributed`` is initialized.
    """
    models = bridge.engine_models(engine)
    if sync_bn:
        if engine.device.type != "cuda":
            raise ValueError("train.sync_bn: SyncBatchNorm needs CUDA (torch has no CPU implementation)")
        for name in list(models):
            if name != "center":
                bridge.set_engine_model(engine, name, convert_sync_batchnorm(models[name]))
        engine.model = models["model"]
        engine.inference.reid = models["model"]
        for name in engine.nets:
            engine.nets[name] = models[name]
        if engine.nets:
            engine.inference.generator, engine.inference.decoder = engine.nets["generator"], engine.nets.get("decoder")
    # torchreid's epoch loop re-opens every layer of C (open_all_layers) at each epoch start;
    # do it before wrapping, or DDP would leave a parameter frozen at wrap time (e.g. a
    # BNNeck bias) out of its gradient averaging and the ranks would drift apart
    for p in engine.model.parameters():
        p.requires_grad_(True)
    for name, net in models.items():
        if name == "center":  # the centers' gradients are averaged by hand in the step
            continue
        # nets run more than once per step (D1, D2) must not re-broadcast their buffers in
        # place between forwards; evaluate() syncs them from rank 0 instead
        engine._train_nets[name] = distributed.wrap_ddp(net, engine.device,
                                                        broadcast_buffers=not name.startswith("disc"))
    dm = engine.datamanager
    engine.train_loader = distributed.train_loader(
        dm.train_loader.dataset, dm.train_loader.batch_size, _num_instances(dm), seed=seed,
        num_workers=dm.train_loader.num_workers, pin_memory=dm.train_loader.pin_memory)


def _num_instances(dm: Any) -> int:
    k = getattr(dm.train_loader.sampler, "num_instances", None)
    if k is None:
        raise ValueError("sampler.train_sampler: distributed training needs RandomIdentitySampler "
                         f"(P x K batches), got {type(dm.train_loader.sampler).__name__}")
    return int(k)
