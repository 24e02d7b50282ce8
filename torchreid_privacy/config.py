"""Configuration: torchreid's schema + a ``privacy:`` section, from YAML and ``key value`` overrides.

Works like torchreid's ``scripts/main.py`` (yacs ``merge_from_file`` then ``merge_from_list``)
but checks every key and type against the schema, so a typo fails loudly instead of being
silently ignored::

    cfg = load_config("configs/quickstart.yaml", ["train.max_epoch", "5", "privacy.mode", "joint"])
    cfg.privacy.mode            # 'joint'
    imagedata_kwargs(cfg)       # ready for bridge.ImageDataManager(**...)
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import yaml

from torchreid_privacy.config_schema import (NULLABLE_TYPES, NUMBER_OR_WORD, OPEN_KEYS, PRIVACY_CHOICES, YAML_BOOL_ALIASES,
                                             defaults)


class ConfigError(ValueError):
    """A config problem; the message names the offending key, file or value."""


class Config(dict):
    """A dict with attribute access, recursively (``cfg.train.lr``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo: Dict[int, Any]) -> "Config":
        return _wrap(copy.deepcopy(to_dict(self), memo))

    @classmethod
    def wrap(cls, tree: Mapping[str, Any]) -> "Config":
        return _wrap(tree)


def _wrap(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return Config({k: _wrap(v) for k, v in tree.items()})
    if isinstance(tree, list):
        return [_wrap(v) for v in tree]
    return tree


def to_dict(cfg: Any) -> Any:
    """Plain dicts/lists all the way down (for YAML/JSON/checkpoints)."""
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def _flat_keys(tree: Mapping[str, Any], prefix: str = "") -> List[str]:
    keys = []
    for k, v in tree.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, Mapping) and full not in OPEN_KEYS:
            keys += _flat_keys(v, full + ".")
    return keys


def _closest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # compare the last component too (``train.lrr`` -> ``train.lr``)
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in valid}
        hit = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        close = [by_leaf[hit[0]]] if hit else []
    return f"; closest valid key: '{close[0]}'" if close else ""


def _type_name(t: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}.get(t, str(t))


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Check ``value`` against the default's type; int -> float and scalar -> 1-list allowed."""
    if default is None or (value is None and key in NULLABLE_TYPES):  # a nullable key may go back to null
        allowed = NULLABLE_TYPES.get(key, ())
        if value is None or isinstance(value, allowed) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(t) for t in allowed)} or null, "
                          f"got {value!r} ({type(value).__name__})")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool, got {value!r} ({type(value).__name__})")
    if isinstance(default, (float, str)) and key in NUMBER_OR_WORD:
        if isinstance(value, str) and value in NUMBER_OR_WORD[key]:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number or one of {', '.join(NUMBER_OR_WORD[key])}, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected float, got {value!r} ({type(value).__name__})")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r} ({type(value).__name__})")
    if isinstance(default, str):
        if isinstance(value, bool) and value in YAML_BOOL_ALIASES.get(key, {}):
            value = YAML_BOOL_ALIASES[key][value]
        if isinstance(value, str):
            choices = PRIVACY_CHOICES.get(key)
            if choices and value not in choices:
                raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
            return value
        raise ConfigError(f"{key}: expected str, got {value!r} ({type(value).__name__})")
    if isinstance(default, list):
        if isinstance(value, (list, tuple)):
            value = list(value)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # torchreid YAMLs write ``sources: market1501``
        else:
            raise ConfigError(f"{key}: expected list, got {value!r} ({type(value).__name__})")
        if default:  # element type from the default's first element
            proto = default[0]
            return [_coerce(f"{key}[{i}]", proto, v) for i, v in enumerate(value)]
        return value
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected mapping, got {value!r} ({type(value).__name__})")
        return dict(value)
    return value


def _merge(tree: Dict[str, Any], update: Mapping[str, Any], valid: List[str], prefix: str = "") -> None:
    for k, v in update.items():
        key = f"{prefix}{k}"
        if not isinstance(k, str) or k not in tree:
            raise ConfigError(f"unknown config key '{key}'{_closest(key, valid)}")
        if key in OPEN_KEYS:
            if v is None:
                v = {}
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key}: expected mapping, got {v!r} ({type(v).__name__})")
            tree[k] = dict(v)
        elif isinstance(tree[k], Mapping):
            if v is None:
                continue
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key}: expected mapping, got {v!r} ({type(v).__name__})")
            _merge(tree[k], v, valid, key + ".")
        else:
            tree[k] = _coerce(key, tree[k], v)


def _set_dotted(tree: Dict[str, Any], dotted: str, value: Any, valid: List[str]) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        path = ".".join(parts[: i + 1])
        if path in OPEN_KEYS:  # e.g. privacy.desensitizer.params.block 12
            node = node.setdefault(part, {})
            node[".".join(parts[i + 1:])] = value
            return
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise ConfigError(f"unknown config key '{dotted}'{_closest(dotted, valid)}")
        node = node[part]
    leaf = parts[-1]
    if dotted in OPEN_KEYS:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: expected mapping, got {value!r}")
        node[leaf] = dict(value)
        return
    if not isinstance(node, dict) or leaf not in node:
        raise ConfigError(f"unknown config key '{dotted}'{_closest(dotted, valid)}")
    if isinstance(node[leaf], dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: expected mapping, got {value!r} ({type(value).__name__})")
        _merge(node[leaf], value, valid, dotted + ".")
    else:
        node[leaf] = _coerce(dotted, node[leaf], value)


def _parse_value(text: str) -> Any:
    """Command-line values are YAML scalars/lists (``0.1``, ``true``, ``[a, b]``), like yacs."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_yaml(path: str | os.PathLike) -> Dict[str, Any]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {(str(exc).splitlines() or ['?'])[0]}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors raise these for a bad tagged scalar or date ('!!int abc', '2001-13-45',
        # '!!timestamp x'), and its composer recurses once per nesting level
        raise ConfigError(f"{path}: invalid YAML value ({type(exc).__name__}: {str(exc)[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return dict(data)


def _with_defaults(base: Dict[str, Any], schema: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """A copy of ``base`` (e.g. a checkpoint's config) with the keys it predates filled from the defaults."""
    schema = defaults() if schema is None else schema
    out = copy.deepcopy(base)
    for k, v in schema.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, Mapping) and isinstance(out[k], Mapping) and k != "params":
            out[k] = _with_defaults(dict(out[k]), v)
    return out


def load_config(config_file: Optional[str | os.PathLike] = None, overrides: Iterable[str] = (),
                base: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults <- YAML file <- ``key value`` pairs; every key and type validated."""
    tree = _with_defaults(dict(to_dict(base))) if base is not None else defaults()
    valid = _flat_keys(tree)
    if config_file:
        try:
            _merge(tree, load_yaml(config_file), valid)
        except ConfigError as exc:
            where = os.fspath(config_file)
            raise ConfigError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
    items = list(overrides)
    if len(items) % 2:
        raise ConfigError(f"overrides come in 'key value' pairs; '{items[-1]}' has no value")
    for key, text in zip(items[::2], items[1::2]):
        _set_dotted(tree, key, _parse_value(text), valid)
    cfg = Config.wrap(tree)
    try:
        check(cfg)
    except ConfigError as exc:
        where = os.fspath(config_file) if config_file and not items else ""
        if not where or str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from None
    return cfg


def privacy_config(privacy: Optional[Mapping[str, Any]] = None, base: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults (or ``base``) with ``privacy.enabled`` true and ``privacy`` merged in, validated.

    For Python users: ``privacy={"mode": "joint"}`` is the ``privacy:`` section of a YAML.
    """
    tree = copy.deepcopy(dict(to_dict(base))) if base is not None else defaults()
    _merge(tree, {"privacy": {"enabled": True, **dict(to_dict(privacy or {}))}}, _flat_keys(tree))
    cfg = Config.wrap(tree)
    check(cfg)
    return cfg


def check(cfg: Config) -> None:
    """Cross-field checks that a type check cannot see."""
    p = cfg.privacy
    if not 0.0 <= p.val_ratio < 1.0:
        raise ConfigError(f"privacy.val_ratio: expected a value in [0, 1), got {p.val_ratio}")
    if p.enabled and p.mode == "progressive" and p.val_ratio <= 0:
        raise ConfigError("privacy.val_ratio: progressive mode needs a validation split (> 0)")
    if p.val_period < 1:
        raise ConfigError(f"privacy.val_period: expected >= 1, got {p.val_period}")
    if cfg.data.height < 1 or cfg.data.width < 1:
        raise ConfigError("data.height/data.width: expected positive sizes")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size: expected >= 1, got {cfg.train.batch_size}")
    if len(cfg.data.norm_mean) != 3 or len(cfg.data.norm_std) != 3:
        raise ConfigError("data.norm_mean/data.norm_std: expected 3 values each")
    if any(s <= 0 for s in cfg.data.norm_std):
        raise ConfigError(f"data.norm_std: expected positive values, got {cfg.data.norm_std}")
    for name, w in p.weights.items():
        if w < 0:
            raise ConfigError(f"privacy.weights.{name}: expected >= 0, got {w}")
    # privacy.recovery keyed and privacy.decoder.keyed say the same thing; keep them in step
    if p.recovery == "keyed" or (p.recovery == "learned" and p.decoder.keyed):
        p.recovery, p.decoder.keyed = "keyed", True
    elif p.recovery == "sealed" and p.decoder.keyed:
        raise ConfigError("privacy.decoder.keyed: a sealed run trains no decoder (privacy.recovery sealed)")
    if p.inversion.enabled and p.recovery != "sealed":
        raise ConfigError("privacy.inversion.enabled: the inversion adversary is for privacy.recovery sealed "
                          "(a learned decoder needs P to stay invertible)")
    if p.inversion.weight < 0 or p.inversion.margin < 0:
        raise ConfigError("privacy.inversion.weight/margin: expected >= 0")
    if not 1 <= p.publish.quality <= 100:
        raise ConfigError(f"privacy.publish.quality: expected an integer in 1-100, got {p.publish.quality}")
    gate = p.upgrade.inversion_gate
    for key in ("pairs", "steps"):
        if gate[key] < 1:
            raise ConfigError(f"privacy.upgrade.inversion_gate.{key}: expected >= 1, got {gate[key]}")


def dump_yaml(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------- torchreid kwargs helpers
def use_gpu(cfg: Config) -> bool:
    import torch

    return bool(cfg.use_gpu) and torch.cuda.is_available()


def imagedata_kwargs(cfg: Config) -> Dict[str, Any]:
    """Keyword arguments for ``ImageDataManager`` (torchreid 0.2.5 signature)."""
    return {
        "root": cfg.data.root,
        "sources": cfg.data.sources,
        "targets": test_targets(cfg),
        "height": cfg.data.height,
        "width": cfg.data.width,
        "transforms": cfg.data.transforms,
        "k_tfm": cfg.data.k_tfm,
        "norm_mean": cfg.data.norm_mean,
        "norm_std": cfg.data.norm_std,
        "use_gpu": use_gpu(cfg),
        "split_id": cfg.data.split_id,
        "combineall": cfg.data.combineall,
        "load_train_targets": cfg.data.load_train_targets,
        "batch_size_train": cfg.train.batch_size,
        "batch_size_test": cfg.test.batch_size,
        "workers": cfg.data.workers,
        "num_instances": cfg.sampler.num_instances,
        "num_cams": cfg.sampler.num_cams,
        "num_datasets": cfg.sampler.num_datasets,
        "train_sampler": cfg.sampler.train_sampler,
        "train_sampler_t": cfg.sampler.train_sampler_t,
        "cuhk03_labeled": cfg.cuhk03.labeled_images,
        "cuhk03_classic_split": cfg.cuhk03.classic_split,
        "market1501_500k": cfg.market1501.use_500k_distractors,
    }


def test_targets(cfg: Config) -> List[str]:
    """``data.targets``; an empty list means the sources, as torchreid's ``targets=None`` does."""
    return list(cfg.data.targets or cfg.data.sources)


def optimizer_kwargs(cfg: Config) -> Dict[str, Any]:
    return {
        "optim": cfg.train.optim,
        "lr": cfg.train.lr,
        "weight_decay": cfg.train.weight_decay,
        "momentum": cfg.sgd.momentum,
        "sgd_dampening": cfg.sgd.dampening,
        "sgd_nesterov": cfg.sgd.nesterov,
        "rmsprop_alpha": cfg.rmsprop.alpha,
        "adam_beta1": cfg.adam.beta1,
        "adam_beta2": cfg.adam.beta2,
        "staged_lr": cfg.train.staged_lr,
        "new_layers": cfg.train.new_layers,
        "base_lr_mult": cfg.train.base_lr_mult,
    }


def lr_scheduler_kwargs(cfg: Config) -> Dict[str, Any]:
    return {
        "lr_scheduler": cfg.train.lr_scheduler,
        "stepsize": cfg.train.stepsize,
        "gamma": cfg.train.gamma,
        "max_epoch": cfg.train.max_epoch,
    }


def engine_run_kwargs(cfg: Config) -> Dict[str, Any]:
    return {
        "save_dir": cfg.data.save_dir,
        "max_epoch": cfg.train.max_epoch,
        "start_epoch": cfg.train.start_epoch,
        "fixbase_epoch": cfg.train.fixbase_epoch,
        "open_layers": cfg.train.open_layers,
        "start_eval": cfg.test.start_eval,
        "eval_freq": cfg.test.eval_freq,
        "test_only": cfg.test.evaluate,
        "print_freq": cfg.train.print_freq,
        "dist_metric": cfg.test.dist_metric,
        "normalize_feature": cfg.test.normalize_feature,
        "visrank": cfg.test.visrank,
        "visrank_topk": cfg.test.visrank_topk,
        "use_metric_cuhk03": cfg.cuhk03.use_metric_cuhk03,
        "ranks": cfg.test.ranks,
        "rerank": cfg.test.rerank,
    }
