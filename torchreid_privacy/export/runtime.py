"""Run the graphs of ``torchreid-privacy export`` with onnxruntime: numpy in, numpy out.

Why a module of its own that imports only numpy, onnxruntime and the standard library: the
anonymizer's home is the edge, where torch is a heavy dependency. This file does not import
torch or the rest of the package, so it can be copied beside an exported ``.onnx`` and used
on its own::

    from onnx_runtime import OnnxAnonymizer      # or torchreid_privacy.export.runtime
    anonymize = OnnxAnonymizer("anonymizer.onnx")
    p01 = anonymize(o01)   # (N, 3, H, W) float32 in [0,1] at (anonymize.height, anonymize.width)

The file's ``metadata_props`` (written by ``export_onnx``) say what it computes and at what size.
A graph exported without ``--dynamic-batch`` takes a fixed batch; the runner feeds it in
chunks of that size, so callers may pass any N.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnxruntime as ort

__all__ = ["OnnxGraph", "OnnxAnonymizer", "providers_for"]


def providers_for(device: str) -> List[str]:
    """onnxruntime providers for a torch-style device name: CUDA first when asked for and
    available in this onnxruntime build, else CPU."""
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxGraph:
    """An exported graph: its metadata, and ``run(*arrays)`` over any batch size.

    Args:
        path: the ``.onnx`` file written by ``torchreid-privacy export``.
        providers: onnxruntime execution providers (default: CPU).
        threads: intra-op threads (default: onnxruntime's choice, all cores).
    """

    def __init__(self, path: str, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--onnx: no such file: {path}")
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(path, sess_options=opts,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"--onnx: {path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        self.path = path
        self.metadata: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        for key in ("what", "height", "width"):
            if key not in self.metadata:
                raise ValueError(f"--onnx: {path} lacks metadata '{key}'; was it written by "
                                 "'torchreid-privacy export'?")
        self.what = self.metadata["what"]
        self.height, self.width = int(self.metadata["height"]), int(self.metadata["width"])
        self.inputs = self.session.get_inputs()
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self.inputs[0].shape[0]
        self.fixed_batch: Optional[int] = first if isinstance(first, int) else None

    @property
    def input_names(self) -> List[str]:
        return [i.name for i in self.inputs]

    def run(self, *arrays: np.ndarray) -> np.ndarray:
        """The graph's output for ``arrays`` (one per input, in order; float32). Image inputs
        (4-D) may hold any batch size; other inputs (a key code) are passed as they are."""
        if len(arrays) != len(self.inputs):
            raise ValueError(f"{self.path}: expected {len(self.inputs)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(arrays)}")
        feeds = {}
        for spec, arr in zip(self.inputs, arrays):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if arr.ndim != len(spec.shape):
                raise ValueError(f"{spec.name}: expected {len(spec.shape)}-D input of shape {spec.shape}, "
                                 f"got shape {arr.shape}")
            if arr.ndim == 4 and tuple(arr.shape[1:]) != (3, self.height, self.width):
                raise ValueError(f"{spec.name}: expected (N, 3, {self.height}, {self.width}) images, "
                                 f"got shape {arr.shape}")
            feeds[spec.name] = arr
        batched = [name for name, arr in feeds.items() if arr.ndim == 4]
        n = feeds[batched[0]].shape[0] if batched else 1
        if n == 0:
            raise ValueError(f"{batched[0]}: empty batch")
        if self.fixed_batch is None or not batched:
            return self.session.run(None, feeds)[0]
        # a fixed batch (export without --dynamic-batch gives 1): feed the images in chunks of it
        step, outs = self.fixed_batch, []
        for start in range(0, n, step):
            chunk = dict(feeds)
            for name in batched:
                chunk[name] = feeds[name][start:start + step]
                if chunk[name].shape[0] != step:
                    raise ValueError(f"{name}: this graph takes batches of exactly {step} image(s), so "
                                     f"N must be a multiple of {step}, got {n}")
            outs.append(self.session.run(None, chunk)[0])
        return np.concatenate(outs)


class OnnxAnonymizer(OnnxGraph):
    """``anonymizer(o01) -> p01``: an exported anonymizer graph, raw [0,1] images in, P in [0,1] out."""

    def __init__(self, path: str, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> None:
        super().__init__(path, providers, threads)
        if self.what != "anonymizer":
            raise ValueError(f"--onnx: {path} holds the '{self.what}' graph, not the anonymizer "
                             "(export it with --what anonymizer)")
        # how the run publishes P (privacy.publish); files exported before it existed: the default
        self.publish_format = self.metadata.get("publish_format", "jpeg")
        self.publish_quality = int(self.metadata.get("publish_quality", "95"))

    def __call__(self, x01: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 in [0,1] at the model's size -> P, same shape, in [0,1]."""
        x01 = np.asarray(x01)
        if x01.ndim != 4:
            raise ValueError(f"images: expected an (N, 3, {self.height}, {self.width}) batch, got shape {x01.shape}")
        if x01.shape[0] == 0:
            return np.zeros_like(x01, dtype=np.float32)
        return self.run(x01)
