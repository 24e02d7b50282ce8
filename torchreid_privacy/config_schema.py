"""Default configuration: torchreid's ``scripts/default_config.py`` schema plus ``privacy:``.

The torchreid part mirrors upstream key for key and default for default, so any torchreid
YAML loads unchanged. The ``privacy`` defaults are the paper's (DESIGN.md §1).
Keys listed in ``OPEN_KEYS`` hold free-form mappings (e.g. a desensitizer's parameters).
"""
from __future__ import annotations

from typing import Any, Dict

TORCHREID_DEFAULTS: Dict[str, Any] = {
    "model": {"name": "resnet50", "pretrained": True, "load_weights": "", "resume": ""},
    "data": {
        "type": "image",
        "root": "reid-data",
        "sources": ["market1501"],
        "targets": ["market1501"],
        "workers": 4,
        "split_id": 0,
        "height": 256,
        "width": 128,
        "combineall": False,
        "transforms": ["random_flip"],
        "k_tfm": 1,
        "norm_mean": [0.485, 0.456, 0.406],
        "norm_std": [0.229, 0.224, 0.225],
        "save_dir": "log",
        "load_train_targets": False,
    },
    "market1501": {"use_500k_distractors": False},
    "cuhk03": {"labeled_images": False, "classic_split": False, "use_metric_cuhk03": False},
    "sampler": {
        "train_sampler": "RandomSampler",
        "train_sampler_t": "RandomSampler",
        "num_instances": 4,
        "num_cams": 1,
        "num_datasets": 1,
    },
    "video": {"seq_len": 15, "sample_method": "evenly", "pooling_method": "avg"},
    "train": {
        "optim": "adam",
        "lr": 0.0003,
        "weight_decay": 5e-4,
        "max_epoch": 60,
        "start_epoch": 0,
        "batch_size": 32,
        "fixbase_epoch": 0,
        "open_layers": ["classifier"],
        "staged_lr": False,
        "new_layers": ["classifier"],
        "base_lr_mult": 0.1,
        "lr_scheduler": "single_step",
        "stepsize": [20],
        "gamma": 0.1,
        "print_freq": 20,
        "seed": 1,
        # torchreid-privacy additions (privacy engine only): mixed precision and, under
        # torchrun, SyncBatchNorm for every net (CUDA only)
        "amp": "off",  # off | bf16 | fp16
        # torch.compile of the nets the training step calls (checkpoints keep the bare nets)
        "compile": "off",  # off | default | max-autotune
        "sync_bn": False,
        # float32 on a CPU: nets train channels-last with fused Adam (3.55x instead of 4.11x
        # torchreid's step); false reproduces the contiguous layout's float rounding bit for bit
        "cpu_fast": True,
    },
    "sgd": {"momentum": 0.9, "dampening": 0.0, "nesterov": False},
    "rmsprop": {"alpha": 0.99},
    "adam": {"beta1": 0.9, "beta2": 0.999},
    "loss": {
        "name": "softmax",
        "softmax": {"label_smooth": True},
        "triplet": {"margin": 0.3, "weight_t": 1.0, "weight_x": 0.0},
    },
    "test": {
        "batch_size": 100,
        "dist_metric": "euclidean",
        "normalize_feature": False,
        "ranks": [1, 5, 10, 20],
        "evaluate": False,
        "eval_freq": -1,
        "start_eval": 0,
        "rerank": False,
        "visrank": False,
        "visrank_topk": 10,
    },
    # set by torchreid's scripts/main.py from torch.cuda.is_available(); a key here so YAML may pin it
    "use_gpu": True,
}

PRIVACY_DEFAULTS: Dict[str, Any] = {
    "enabled": False,
    "mode": "progressive",  # baseline | joint | progressive
    # params default to the desensitizer's own (paper) defaults: mosaic 24, blur 12, noise 0.5
    "desensitizer": {"name": "mosaic", "params": {}},
    # params: the anonymizer's own knobs (e.g. residual_code: code_size, code_levels, bound)
    "generator": {"name": "unet_128", "ngf": 64, "num_downs": None, "norm": "batch", "params": {}},
    # keyed: G_R also takes a secret key (train/test/recover --key-file); wrong keys give back P
    "decoder": {"name": "unet_128", "ngf": 64, "num_downs": None, "norm": "batch", "keyed": False,
                "key_channels": 64},
    "discriminator": {"name": "basic", "ndf": 64, "n_layers": 3},
    # how the key holder gets O back: "learned" = G_R (the paper), "keyed" = G_R(P, key)
    # (= decoder.keyed true), "sealed" = the original file travels encrypted with P (anonymize
    # --seal-key), so no G_R and no D2 are trained
    "recovery": "learned",
    # sealed mode: an inversion adversary A (the decoder's architecture) learns O from P.detach()
    # with L1 each step; G pays weight * relu(margin - L1(A(P), O)) (GAN range), a bounded push
    # that keeps A's error above margin while the ReID and L1(P, M) terms keep P useful and M-like
    "inversion": {"enabled": False, "weight": 1.0, "margin": 0.25},
    "gan_mode": "vanilla",  # vanilla | lsgan
    # code: the batch-hard triplet on the identity code of an anonymizer that carries one (residual_code);
    # decode: MSE of that code read back from P as published by the anonymizer's reader (residual_code);
    # cross: batch-hard triplet across the views (O anchors vs P, P anchors vs O); consistency: squared
    # distance between each image's normalized C features on P and on O; 0 = the paper's terms
    "weights": {"gan": 1.0, "rec_p": 100.0, "rec_r": 100.0, "reid_o": 1.0, "reid_p": 1.0,
                "center": 0.0005, "wrong_key": 10.0, "code": 1.0, "decode": 0.0, "cross": 0.0,
                "consistency": 0.0},
    "triplet": {"margin": 0.3, "weighted": False},
    "label_smooth": True,
    "lr": 3.5e-4,
    "gen_betas": [0.5, 0.999],
    "center_lr": 0.5,
    "warmup_epochs": 10,
    "warmup_factor": 0.01,
    "eps_psnr": 1.0,
    "eps_ssim": 0.05,
    # a number, or "auto": the validation O->P rank-1 of a finished joint run (train --floor-from RUN)
    "r1_floor": 0.75,
    # which PSNR the gates compare: per-image mean ("image") or 10 log10(1 / mean MSE) ("dataset", the paper's)
    "gate_psnr": "image",
    # fallback: while the latest validation fails the PSNR/SSIM gates, train on the conventional M
    # again (the paper's code); false: an upgrade is permanent
    "upgrade": {
        "fallback": False,
        # an upgrade also needs a quick attacker trained on `pairs` validation (published P, O)
        # pairs for `steps` steps to invert P no better than the same attacker inverts the
        # conventional M, plus margin_db (PSNR on held-out validation images)
        "inversion_gate": {"enabled": False, "margin_db": 0.5, "pairs": 256, "steps": 150},
    },
    # P as the user publishes it: every number about P (validation, upgrade gates, test, attacks,
    # search, views) is scored on these files; anonymize writes them. train_through: G's ReID and
    # adversary terms see P as published (forward) through a differentiable stand-in (backward)
    "publish": {"format": "jpeg", "quality": 95, "train_through": True},
    # C on O and on P: "joint" = one batch of both, "separate" = two forwards (BatchNorm statistics
    # per domain, the paper's code)
    "reid_forward": "joint",
    "val_period": 5,
    "val_ratio": 0.2,
    "split_seed": 0,  # identity-disjoint train/val split (torchreid-privacy split --seed)
    "kernels": "auto",  # auto | triton | torch
    "seed": 1,
    "grid_images": 8,
    # at the end of training: rank lists, t-SNE and the O | M | P | R grid of each test target in TensorBoard
    "tensorboard_views": True,
    "eval_seed": 0,
}

PRIVACY_CHOICES: Dict[str, tuple] = {
    "privacy.mode": ("baseline", "joint", "progressive"),
    "privacy.gan_mode": ("vanilla", "lsgan"),
    "privacy.kernels": ("auto", "triton", "torch"),
    "privacy.gate_psnr": ("image", "dataset"),
    "privacy.recovery": ("learned", "keyed", "sealed"),
    "privacy.reid_forward": ("joint", "separate"),
    "privacy.publish.format": ("jpeg", "png", "webp"),
    "train.amp": ("off", "bf16", "fp16"),
    "train.compile": ("off", "default", "max-autotune"),
    "privacy.generator.norm": ("batch", "instance", "none"),
    "privacy.decoder.norm": ("batch", "instance", "none"),
    "loss.name": ("softmax", "triplet"),
    "data.type": ("image", "video"),
}

# YAML 1.1 reads a bare ``off`` as false: the string the user meant
YAML_BOOL_ALIASES: Dict[str, Dict[bool, str]] = {"train.amp": {False: "off"}, "train.compile": {False: "off"}}

# free-form mappings: their inner keys are not checked against the schema
OPEN_KEYS = {"privacy.desensitizer.params", "privacy.generator.params"}

# number keys that also take one of these words
NUMBER_OR_WORD: Dict[str, tuple] = {"privacy.r1_floor": ("auto",)}

# keys whose default is None: any of these types is accepted
NULLABLE_TYPES: Dict[str, tuple] = {
    "privacy.generator.num_downs": (int,),
    "privacy.decoder.num_downs": (int,),
}


def defaults() -> Dict[str, Any]:
    """A fresh deep copy of the full default tree."""
    import copy

    tree = copy.deepcopy(TORCHREID_DEFAULTS)
    tree["privacy"] = copy.deepcopy(PRIVACY_DEFAULTS)
    return tree
