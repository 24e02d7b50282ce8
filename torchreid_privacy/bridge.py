"""The one place that knows how torchreid is laid out.

PyPI's ``torchreid==0.2.5`` puts everything under ``torchreid.reid.*``; a source install of
upstream deep-person-reid puts it under ``torchreid.*``. Everything else in this package
asks this module for torchreid's classes and functions, so a future torchreid layout
change is a one-file fix.

It also repairs what current torch broke in torchreid: checkpoints hold numpy scalars that
``torch.load(weights_only=True)`` (the default since torch 2.6) refuses, so we allow-list
exactly those numpy globals; and ``build_model`` defaults to downloading ImageNet weights,
so we pass ``pretrained=False`` unless weights are given.
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch


def _import_torchreid() -> ModuleType:
    """Return the module that holds torchreid's sub-packages (``data``, ``models``, ...)."""
    with warnings.catch_warnings():
        # torchreid warns at import that its Cython ranking is missing; our own evaluator
        # (torchreid_privacy.metrics.settings) is the fast path, so the warning is noise here.
        warnings.filterwarnings("ignore", message="Cython evaluation")
        top = importlib.import_module("torchreid")
        try:
            return importlib.import_module("torchreid.reid")  # PyPI 0.2.5 layout
        except ModuleNotFoundError:
            return top  # upstream source layout


reid = _import_torchreid()
LAYOUT = "pypi" if reid.__name__ == "torchreid.reid" else "source"
TORCHREID_VERSION: str = getattr(importlib.import_module("torchreid"), "__version__", "unknown")


def _sub(name: str) -> ModuleType:
    return importlib.import_module(f"{reid.__name__}.{name}")


models = _sub("models")
data = _sub("data")
datasets = _sub("data.datasets")
engine = _sub("engine")
losses = _sub("losses")
metrics = _sub("metrics")
optim = _sub("optim")
utils = _sub("utils")
torchtools = _sub("utils.torchtools")

# Re-exported torchreid API (the rest of the package imports these names from here).
ImageDataset = _sub("data.datasets.dataset").ImageDataset
ImageDataManager = data.ImageDataManager
Engine = engine.Engine
ImageSoftmaxEngine = engine.ImageSoftmaxEngine
ImageTripletEngine = engine.ImageTripletEngine
CrossEntropyLoss = losses.CrossEntropyLoss
TripletLoss = losses.TripletLoss
build_optimizer = optim.build_optimizer
build_lr_scheduler = optim.build_lr_scheduler
compute_distance_matrix = metrics.compute_distance_matrix
accuracy = metrics.accuracy
read_image = utils.read_image
build_transforms = _sub("data.transforms").build_transforms
RandomIdentitySampler = _sub("data.sampler").RandomIdentitySampler
MetricMeter = utils.MetricMeter
save_checkpoint = utils.save_checkpoint


def torchreid_evaluate_rank(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                            use_metric_cuhk03: bool = False):
    """torchreid's own ranking evaluator (Python loop unless its Cython lib is built).

    Kept as the reference our vectorized evaluator is tested against.
    """
    rank = _sub("metrics.rank")
    return rank.evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
        use_metric_cuhk03=use_metric_cuhk03, use_cython=False,
    )


# --------------------------------------------------------------------------- models
def _model_factory() -> Dict[str, Callable[..., torch.nn.Module]]:
    # module-level ``__model_factory`` is not name-mangled; vars() reaches it
    return vars(models)["__model_factory"]


def available_models() -> List[str]:
    return sorted(_model_factory())


def register_model(name: str, factory: Callable[..., torch.nn.Module], force: bool = False) -> None:
    """Add a backbone to torchreid's model factory (idempotent for the same factory)."""
    table = _model_factory()
    old = table.get(name)
    if old is not None and old is not factory and not force:
        same = (getattr(old, "__module__", None), getattr(old, "__qualname__", None)) == (
            getattr(factory, "__module__", None), getattr(factory, "__qualname__", None))
        if not same:
            raise KeyError(f"model '{name}' already exists in torchreid's model factory")
    table[name] = factory


def build_model(name: str, num_classes: int, loss: str = "softmax", pretrained: bool = False,
                use_gpu: bool = False) -> torch.nn.Module:
    """``torchreid.models.build_model`` without the surprise download.

    Random init by default. ``pretrained=True`` asks torchreid to fetch ImageNet weights
    (network; a failure names ``model.pretrained`` and the way out). Local weights are loaded
    by :mod:`torchreid_privacy.utils.weights` (``weights_only=True``, sha256-checked).
    """
    if name not in _model_factory():
        import difflib

        close = difflib.get_close_matches(name, available_models(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"model.name: unknown torchreid model '{name}'{hint}")
    pretrained = bool(pretrained)
    try:
        model = models.build_model(name=name, num_classes=num_classes, loss=loss,
                                   pretrained=pretrained, use_gpu=use_gpu)
    except Exception as exc:
        if not pretrained:
            raise
        raise ConnectionError(
            f"model.pretrained: could not fetch ImageNet weights for '{name}' ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}); offline, set "
            f"model.pretrained false or give model.load_weights PATH") from exc
    return model


def want_features(model: torch.nn.Module) -> torch.nn.Module:
    """Make a torchreid backbone return ``(logits, features)`` in train mode.

    torchreid's models pick their train-mode output by their ``loss`` attribute; a model built
    with ``loss='softmax'`` (torchreid's get-started script) returns logits only, but the
    privacy engine needs the features too for the triplet and center terms.
    """
    if getattr(model, "loss", None) == "softmax":
        model.loss = "triplet"
    return model


def model_name_of(model: torch.nn.Module) -> Optional[str]:
    """The ``model.name`` that builds ``model``'s architecture, or None if not unique.

    Candidates are the factory entries defined beside ``model``'s class (e.g. every OSNet
    width); the one whose state-dict names and shapes equal the model's wins. Lets a checkpoint
    of a model built by the user (torchreid's get-started script) be rebuilt by name later.
    """
    cls = type(model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    num_classes = next((v[0] for k, v in shapes.items() if k.startswith("classifier") and len(v) == 2), None)
    if num_classes is None:
        return None
    found = []
    for name, factory in _model_factory().items():
        if getattr(factory, "__module__", None) != cls.__module__:
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                candidate = factory(num_classes=num_classes, loss=getattr(model, "loss", "softmax"),
                                    pretrained=False, use_gpu=False)
        except Exception:  # a candidate that cannot be built offline is not this model
            continue
        if type(candidate) is cls and {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            found.append(name)
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- engines
def engine_models(engine: Any) -> Dict[str, torch.nn.Module]:
    """The nets registered with ``Engine.register_model`` (torchreid keeps them privately)."""
    return engine._models


def engine_optimizers(engine: Any) -> Dict[str, Any]:
    return engine._optims


def engine_schedulers(engine: Any) -> Dict[str, Any]:
    return engine._scheds


def train_epochs(engine: Any, max_epoch: int, start_epoch: int = 0, fixbase_epoch: int = 0,
                 open_layers: Any = None, print_freq: int = 10**9) -> None:
    """``Engine.run``'s training loop without its tests.

    Why: ``run`` always ends with a test through torchreid's Python evaluator, which fails on a
    gallery smaller than its 50 ranks once same-camera matches are removed (a user's small
    folder set), and costs time where the caller evaluates the model itself.
    """
    engine.start_epoch, engine.max_epoch = start_epoch, max_epoch
    for engine.epoch in range(start_epoch, max_epoch):
        engine.train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)


def set_engine_model(engine: Any, name: str, net: torch.nn.Module) -> None:
    """Replace a registered net (e.g. by its SyncBatchNorm conversion), optimizer kept."""
    engine._models[name] = net


def datamanager_normalization(dm: Any) -> tuple:
    """``(mean, std)`` of a torchreid datamanager's test transform (torchvision ``Normalize``)."""
    for t in getattr(dm.transform_te, "transforms", []):
        if hasattr(t, "mean") and hasattr(t, "std"):
            return [float(v) for v in t.mean], [float(v) for v in t.std]
    raise ValueError("datamanager: its test transform has no Normalize step; pass norm_mean/norm_std")


def failure_context(exc: BaseException) -> tuple:
    """``(function name, local variables)`` of the innermost frame of ``exc``'s traceback.

    torchreid's dataset and sampler code fails with bare asserts and IndexErrors; the locals of
    the failing frame (``img_path``, ``self``) are what lets us name the culprit.
    """
    tb = exc.__traceback__
    if tb is None:
        return "", {}
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name, dict(tb.tb_frame.f_locals)


# --------------------------------------------------------------------------- datasets
def _image_dataset_table() -> Dict[str, Any]:
    return vars(datasets)["__image_datasets"]


def available_datasets() -> List[str]:
    return sorted(_image_dataset_table())


def dataset_class(name: str) -> Optional[type]:
    """The class registered under ``name`` in torchreid's image dataset registry, or None."""
    return _image_dataset_table().get(name)


def registry_snapshot() -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Copies of torchreid's model-factory and image-dataset tables, for :func:`restore_registries`
    (the test suite puts back what a test registered)."""
    return dict(_model_factory()), dict(_image_dataset_table())


def restore_registries(snapshot: Tuple[Dict[str, Any], Dict[str, Any]]) -> None:
    """Make torchreid's two tables exactly what :func:`registry_snapshot` saw."""
    for table, saved in zip((_model_factory(), _image_dataset_table()), snapshot):
        table.clear()
        table.update(saved)


def register_dataset(name: str, dataset_cls: type, force: bool = False) -> None:
    """``register_image_dataset`` that tolerates re-registering the same class."""
    table = _image_dataset_table()
    old = table.get(name)
    if old is not None:
        if old is dataset_cls or force or (old.__module__, old.__qualname__) == (
                dataset_cls.__module__, dataset_cls.__qualname__):
            table[name] = dataset_cls
            return
        raise KeyError(f"dataset '{name}' already exists in torchreid's dataset registry")
    datasets.register_image_dataset(name, dataset_cls)


def init_image_dataset(name: str, **kwargs: Any):
    return datasets.init_image_dataset(name, **kwargs)


# --------------------------------------------------------------------------- checkpoints
# numpy globals that torchreid's checkpoints (``rank1`` is a numpy float) pickle
_NUMPY_SAFE_GLOBALS: List[Any] = [np.dtype, np.ndarray, np.float64, np.float32, np.int64, np.int32]


def _numpy_reconstructors() -> List[Any]:
    found = []
    for mod, attr in (("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                      ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
        try:
            found.append(getattr(importlib.import_module(mod), attr))
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType")
                  if hasattr(dtypes, n)]
    return found


def install_safe_globals() -> None:
    """Allow-list the numpy objects torchreid checkpoints contain for ``weights_only`` loads.

    With this, torchreid's own ``load_checkpoint`` / ``resume_from_checkpoint`` work again on
    torch >= 2.6, and no code-executing pickle is ever accepted.
    """
    torch.serialization.add_safe_globals(_NUMPY_SAFE_GLOBALS + _numpy_reconstructors())


class CheckpointError(RuntimeError):
    """A checkpoint could not be read safely; the message names the file."""


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse anything that would run code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    install_safe_globals()
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


install_safe_globals()
