"""Name -> component registries (timm/mmengine style).

Adding a component is one file plus one decorator: ``@DESENSITIZERS.register("mosaic")``.
Names are unique per registry; registering a different object under a taken name is an
error unless ``force=True``. Re-registering the *same* object (re-import of a module) is a
no-op, so registration is idempotent.
"""
from __future__ import annotations

import difflib
import logging
from importlib import metadata
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

ENTRY_POINT_GROUP = "torchreid_privacy.plugins"
"""The entry-point group through which other packages register components (see ``load_plugins``)."""


class Registry:
    """A named table of factories (classes or functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, Callable[..., Any]] = {}

    def register(self, name: Optional[str] = None, *, force: bool = False) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (default: ``obj.__name__``)."""

        def deco(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            old = self._items.get(key)
            if old is not None and not force and not _same_object(old, obj):
                raise KeyError(
                    f"{self.kind} '{key}' is already registered by "
                    f"{old.__module__}.{old.__qualname__}; pass force=True to replace it"
                )
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name`` (plugins loaded first); an unknown name is a
        ``KeyError`` listing the registered names and the closest one."""
        load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.kind} '{name}' (registered: {', '.join(self.names())}){hint}"

    def names(self) -> List[str]:
        """Every registered name, sorted (plugins loaded first)."""
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _same_object(a: Any, b: Any) -> bool:
    """True when ``b`` is ``a`` or the same definition re-created by a module reload."""
    if a is b:
        return True
    qualname = getattr(b, "__qualname__", "") or ""
    if "<lambda>" in qualname or "<locals>" in qualname:
        return False  # anonymous or local definitions cannot be told apart by name
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


DESENSITIZERS = Registry("desensitizer")
"""Conventional desensitizers (M): functions ``fn(images, **params)`` on (N, 3, H, W) batches in
[0, 1] returning the same shape (``mosaic``, ``blur``, ``noise``); ``privacy.desensitizer``."""
ANONYMIZERS = Registry("anonymizer")
"""Image-to-image networks for G, G_R and the inversion adversary: factories called with ``ngf``,
``num_downs``, ``norm`` (and ``in_channels`` for a keyed decoder) returning an ``nn.Module``
(``unet_128``, ``unet_256``, ``resnet_6blocks``, ``resnet_9blocks``, ``residual_code``, ``learned_mosaic``);
``privacy.generator``, ``privacy.decoder``."""
DISCRIMINATORS = Registry("discriminator")
"""Conditional PatchGAN discriminators D1, D2: factories called with ``ndf`` and ``n_layers``
(``basic``, ``n_layers``, ``pixel``); ``privacy.discriminator``."""
LOSSES = Registry("loss")
"""Loss modules the engine builds by name (``gan``, ``l1``, ``cross_entropy``, ``triplet``,
``cross_triplet``, ``weighted_triplet``, ``center``, ``reid``)."""
ENGINES = Registry("engine")
"""Training engines (``privacy``: ``PrivacyEngine``)."""
DETECTORS = Registry("detector")
"""Video people detectors for ``anonymize --input VIDEO`` and ``make-data --from-video``:
factories returning a callable ``detector(frame_index, rgb) -> (N, 6)`` boxes (``hog``,
``motion``, ``torchvision``, ``onnx``, ``file``); ``--detector``."""

ALL_REGISTRIES = {
    "desensitizers": DESENSITIZERS,
    "anonymizers": ANONYMIZERS,
    "discriminators": DISCRIMINATORS,
    "losses": LOSSES,
    "engines": ENGINES,
    "detectors": DETECTORS,
}
"""Every registry by its plural name (what ``torchreid-privacy list`` prints)."""

# discovered by name (as entry points are), not imported: the registry sits below its plugins
BUILTIN_PLUGIN_MODULES = ("torchreid_privacy.plugins", "torchreid_privacy.plugins.engine",
                          "torchreid_privacy.video.detectors")
_loaded = False


def load_plugins() -> None:
    """Import the built-in plugins and every entry point of group ``torchreid_privacy.plugins``.

    A third-party package declares ``entry_points={"torchreid_privacy.plugins": ["x = pkg.mod"]}``;
    importing ``pkg.mod`` runs its ``@REGISTRY.register`` decorators. A broken plugin is
    logged and skipped so it cannot take the built-ins down with it.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for name in BUILTIN_PLUGIN_MODULES:  # built-ins register on import, like any plugin
        importlib.import_module(name)

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a third-party plugin must not break the built-ins
            log.warning("skipping plugin entry point %s (%s): %s", ep.name, ep.value, exc)
