"""ONNX export of a ``PrivacyModel``'s three graphs: the anonymizer, the recovery decoder and C.

Why: the anonymizer is what runs at the edge (cameras, gateways), where onnxruntime is easier
to ship than torch. Each graph takes the [0,1] images of the model's size and computes exactly
what the ``PrivacyModel`` method of the same job computes, normalization included, so a caller
needs no knowledge of GAN range or ``data.norm_mean/std``:

================  ==========================================  =============================  ===================
``what``          inputs                                      output                         same as
================  ==========================================  =============================  ===================
``anonymizer``    ``image`` (N,3,H,W) float32 in [0,1]        ``anonymized`` P in [0,1]      ``model.anonymize``
``decoder``       ``anonymized`` (N,3,H,W) in [0,1]; keyed:   ``recovered`` R in [0,1]       ``model.recover``
                  also ``key_code`` (key_channels,) of +-1
``reid``          ``image`` (N,3,H,W) float32 in [0,1]        ``features`` (N,D) float32     ``model.features``
================  ==========================================  =============================  ===================

The keyed decoder takes the key's *code* (``keys.key_code(key, key_channels)``, a vector of
+-1), not its planes: the graph expands it to the constant planes itself, so a caller never
builds (N, C, H, W) tensors, and the key never enters the file. A baseline run has no G: its
anonymizer graph is the conventional desensitizer when that is deterministic and traceable
(``mosaic``); ``blur`` and ``noise`` are refused.

The file carries its facts in ONNX ``metadata_props`` (``what``, ``height``, ``width``,
``keyed``, ``key_channels``, ``batch``, ``producer``, ...), so ``anonymize --onnx`` needs no
checkpoint. Export uses torch's dynamo exporter (``torch.export``, the default of
``torch.onnx.export``, opset 18 natively); the legacy TorchScript exporter takes over when dynamo
fails or cannot convert to a requested older opset (``exporter=`` forces either; the file's
``exporter`` metadata says which one wrote it).

Example::

    model = torchreid_privacy.load("log/quickstart")
    export_onnx(model, "anonymizer", "anonymizer.onnx", dynamic_batch=True)
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from torchreid_privacy import kernels
from torchreid_privacy.utils.atomic import write_new
from torchreid_privacy.desensitize import resolve_desensitizer
from torchreid_privacy.utils.images import from_gan, normalize, to_gan
from torchreid_privacy.inference import PrivacyModel

log = logging.getLogger(__name__)

WHATS = ("anonymizer", "decoder", "reid")
EXPORTERS = ("auto", "dynamo", "torchscript")  # auto: dynamo, the legacy TorchScript exporter where it fails
DEFAULT_OPSET = 18  # the dynamo exporter's own opset: lower ones go through a version converter
TRACEABLE_DESENSITIZERS = ("mosaic",)  # deterministic and shape-static: a baseline's anonymizer graph
_EXAMPLE_BATCH = {True: 2, False: 1}  # a dynamic batch needs an example of >= 2 (1 is specialized)


class GanRangeGraph(nn.Module):
    """[0,1] images through a pix2pix net that works in GAN range: ``from_gan(net(to_gan(x)))``.
    With G it is ``PrivacyModel.anonymize`` (``image`` -> P), with G_R ``PrivacyModel.recover``
    (``anonymized`` -> R)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return from_gan(self.net(to_gan(x01)))


class ConventionalGraph(nn.Module):
    """``image`` [0,1] -> M, the baseline run's P (a deterministic desensitizer such as mosaic)."""

    def __init__(self, name: str, params: Dict) -> None:
        super().__init__()
        self.fn, self.params = resolve_desensitizer(name, params), dict(params)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fn(image, **self.params)


class KeyedDecoderGraph(nn.Module):
    """(``anonymized``, ``key_code``) -> R: the code's +-1 bits become constant planes inside
    the graph (``keys.key_planes``), so the result equals ``PrivacyModel.recover`` with that key."""

    def __init__(self, decoder: nn.Module, key_channels: int) -> None:
        super().__init__()
        self.decoder, self.key_channels = decoder, int(key_channels)

    def forward(self, anonymized: torch.Tensor, key_code: torch.Tensor) -> torch.Tensor:
        n, _, h, w = anonymized.shape
        planes = key_code.to(anonymized.dtype).view(1, self.key_channels, 1, 1).expand(n, self.key_channels, h, w)
        return from_gan(self.decoder(to_gan(anonymized), planes))


class ReidGraph(nn.Module):
    """``image`` [0,1] -> C's features of the normalized image, as ``PrivacyModel.features``."""

    def __init__(self, reid: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.reid = reid
        self.register_buffer("mean", mean.detach().clone().float().view(1, 3, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.reid(normalize(image, self.mean, self.std))
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return out.float()


def build_graph(model: PrivacyModel, what: str) -> Tuple[nn.Module, List[str], str]:
    """``(module, input names, output name)`` for ``what``; the module is a CPU copy in eval mode."""
    if what not in WHATS:
        raise ValueError(f"--what: expected one of {', '.join(WHATS)}, got {what!r}")
    if what == "anonymizer":
        if model.generator is not None:
            graph, inputs, output = GanRangeGraph(copy.deepcopy(model.generator)), ["image"], "anonymized"
        elif model.desensitizer in TRACEABLE_DESENSITIZERS:
            graph, inputs, output = (ConventionalGraph(model.desensitizer, model.desensitizer_params), ["image"],
                                     "anonymized")
        else:
            raise ValueError(f"--what anonymizer: this baseline-mode run has no generator and its conventional "
                             f"desensitizer '{model.desensitizer}' cannot be exported (only "
                             f"{', '.join(TRACEABLE_DESENSITIZERS)} can); export --what reid instead")
    elif what == "decoder":
        if model.decoder is None:
            raise ValueError("--what decoder: this run has no recovery decoder (baseline mode, or sealed recovery, "
                             "which is cryptographic: nothing to export)")
        if model.keyed:
            graph = KeyedDecoderGraph(copy.deepcopy(model.decoder), model.key_channels)
            inputs, output = ["anonymized", "key_code"], "recovered"
        else:
            graph, inputs, output = GanRangeGraph(copy.deepcopy(model.decoder)), ["anonymized"], "recovered"
    else:
        graph, inputs, output = ReidGraph(copy.deepcopy(model.reid), model.mean, model.std), ["image"], "features"
    return graph.cpu().eval(), inputs, output


def example_inputs(model: PrivacyModel, what: str, batch: int) -> Tuple[torch.Tensor, ...]:
    """Inputs of the right shapes for tracing (and for checking an exported file)."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, model.height, model.width, generator=gen)
    if what == "decoder" and model.keyed:
        code = torch.randint(0, 2, (model.key_channels,), generator=gen).float() * 2 - 1
        return image, code
    return (image,)


def metadata(model: PrivacyModel, what: str, dynamic_batch: bool, exporter: str) -> Dict[str, str]:
    """What ``anonymize --onnx`` and other consumers need to know without the checkpoint."""
    from torchreid_privacy import __version__

    props = {
        "what": what,
        "height": str(model.height),
        "width": str(model.width),
        "input_range": "[0,1]",
        "batch": "dynamic" if dynamic_batch else str(_EXAMPLE_BATCH[False]),
        "keyed": str(what == "decoder" and model.keyed).lower(),
        "key_channels": str(model.key_channels if what == "decoder" and model.keyed else 0),
        "mode": model.mode,
        "producer": f"torchreid-privacy {__version__}",
        "exporter": f"{exporter} (torch {torch.__version__})",
    }
    if what == "anonymizer":
        props.update(publish_format=model.channel.format, publish_quality=str(model.channel.quality))
    if what == "anonymizer" and model.generator is None:
        props["desensitizer"] = model.desensitizer
    if what == "reid":
        props["norm_mean"] = ",".join(f"{v:g}" for v in model.mean.flatten().tolist())
        props["norm_std"] = ",".join(f"{v:g}" for v in model.std.flatten().tolist())
    return props


def _check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 7:
        raise ValueError(f"--opset: expected an integer >= 7, got {opset!r}")
    return opset


def export_onnx(model: PrivacyModel, what: str, output: str, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, exporter: str = "auto") -> str:
    """Write the ONNX graph ``what`` (anonymizer | decoder | reid) of ``model`` to ``output``.

    The batch dimension is 1 unless ``dynamic_batch``. ``exporter``: ``dynamo`` (torch.export,
    torch's default), ``torchscript`` (the legacy exporter), or ``auto``: dynamo, and the legacy
    exporter when dynamo fails (a backbone torch.export cannot trace) or cannot reach an ``opset``
    below its own (its version converter fails on some ops). ``output`` must not exist (it is
    never overwritten); it appears whole or not at all. Raises ``ValueError`` naming ``--what`` or
    ``--opset``, ``FileExistsError`` naming ``--output``. Returns ``output``.
    """
    import onnx

    opset = _check_opset(opset)
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: expected one of {', '.join(EXPORTERS)}, got {exporter!r}")
    graph, inputs, out_name = build_graph(model, what)
    if os.path.lexists(output):
        raise FileExistsError(f"--output: {output} already exists; export never overwrites a file")
    args = example_inputs(model, what, _EXAMPLE_BATCH[bool(dynamic_batch)])
    tries = {"auto": ["dynamo", "torchscript"], "dynamo": ["dynamo"], "torchscript": ["torchscript"]}[exporter]
    missed: Dict[str, object] = {}  # exporter -> the opset it gave instead, or its exception
    with kernels.backends("torch"), _quiet_exporter(), torch.no_grad():
        for used in tries:
            if exporter == "auto" and used == "torchscript" and opset >= DEFAULT_OPSET and \
                    not isinstance(missed.get("dynamo"), Exception):
                continue  # dynamo ran: the legacy exporter adds nothing at or above dynamo's own opset
            export = _export_dynamo if used == "dynamo" else _export_legacy
            try:
                proto = export(graph, args, inputs, out_name, opset, dynamic_batch)
            except Exception as exc:  # auto: a backbone torch.export cannot trace gets the legacy exporter
                missed[used] = exc
                log.warning("the %s exporter failed: %s", used, _first_line(exc))
                continue
            got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
            if got == opset:
                break
            missed[used] = got
            log.info("the %s exporter gave opset %s instead of %d", used, got, opset)
        else:
            if all(isinstance(v, Exception) for v in missed.values()):
                raise next(iter(missed.values()))
            said = "; ".join(f"{k}: {_first_line(v) if isinstance(v, Exception) else f'gave opset {v}'}"
                             for k, v in missed.items())
            raise ValueError(f"--opset: could not export opset {opset} for this model ({said}); "
                             f"use {DEFAULT_OPSET}")
    onnx.helper.set_model_props(proto, metadata(model, what, dynamic_batch, used))
    onnx.checker.check_model(proto)
    try:
        write_new(output, proto.SerializeToString())
    except FileExistsError:
        raise FileExistsError(f"--output: {output} already exists; export never overwrites a file") from None
    log.info("exported %s (%s exporter, opset %d, batch %s) to %s", what, used, opset,
             "dynamic" if dynamic_batch else 1, output)
    return output


def _export_dynamo(graph: nn.Module, args: Tuple[torch.Tensor, ...], inputs: List[str], output: str, opset: int,
                   dynamic_batch: bool):
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        params = list(_forward_params(graph))
        dynamic_shapes = {name: ({0: batch} if t.dim() == 4 else None) for name, t in zip(params, args)}
    program = torch.onnx.export(graph, args, None, input_names=inputs, output_names=[output],
                                opset_version=opset, dynamo=True, verbose=False, dynamic_shapes=dynamic_shapes)
    return program.model_proto


def _export_legacy(graph: nn.Module, args: Tuple[torch.Tensor, ...], inputs: List[str], output: str, opset: int,
                   dynamic_batch: bool):
    import onnx

    axes: Optional[Dict[str, Dict[int, str]]] = None
    if dynamic_batch:
        axes = {name: {0: "batch"} for name, t in zip(inputs, args) if t.dim() == 4}
        axes[output] = {0: "batch"}
    buf = io.BytesIO()
    torch.onnx.export(graph, args, buf, input_names=inputs, output_names=[output], opset_version=opset,
                      dynamo=False, dynamic_axes=axes)
    return onnx.load_from_string(buf.getvalue())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _forward_params(graph: nn.Module) -> Iterator[str]:
    import inspect

    return iter(inspect.signature(graph.forward).parameters)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters print progress to stdout, log every optimization pass and warn about
    deprecation and opset conversion; keep a CLI's output to its own lines (failures still raise)."""
    names = ("torch.onnx", "onnxscript", "onnx_ir")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
