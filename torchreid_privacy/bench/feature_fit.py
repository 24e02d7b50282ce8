"""A generator of ReID-like features, fitted to the features a trained run's C really produces.

Why: ``bench scale`` needs a million-image gallery of ~100,000 identities, and the embedded sets
hold a few hundred identities at most; embedding a million augmented crops of them would also
take long on 2 cores (``run_crops`` measures it). So the gallery is drawn from a model of C's
features, fitted on the L2-normalized features of augmented crops of the run's test identities
(identities C never trained on, as a deployment gallery's are):

- identity means: a Gaussian over the per-identity mean features, low rank (the principal
  components of the means, less the share of within-identity noise that averaging leaves in them);
- camera offsets: the mean within-identity residual of each camera;
- per-image deviations: a gallery photo's spread around its identity: the spread of the images'
  centres (the mean of each image's augmented crops) plus the crops' spread around their image
  (full rank, from thousands of crops) scaled to what the plain crops show;
- P: the mean and covariance of ``f(P) - f(O)`` over the same crops (C's feature of the anonymized
  crop as published minus that of the raw crop).

A drawn image is ``normalize(mean_id + offset_cam + deviation)``, and its P is
``normalize(o + shift)``: L2-normalized as the evaluation ranks C's features. The fit is calibrated
and checked against the real features' exact-search R1/mAP (:mod:`.run_crops`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

FORMAT = 1
EIG_FLOOR = 1e-10  # relative: eigenvalues below it (of the largest) are rank deficiency, not variance


def l2n(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32), as the evaluation does with C's features."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _factor(cov: np.ndarray, max_rank: Optional[int] = None) -> np.ndarray:
    """(d, r) F with F F^T = the positive part of ``cov`` (its top ``max_rank`` components)."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    keep = vals > EIG_FLOOR * max(float(vals[0]), 1e-30)
    if max_rank is not None:
        keep[max_rank:] = False
    return (vecs[:, keep] * np.sqrt(vals[keep])).astype(np.float32)


@dataclass
class FeatureModel:
    """The fitted generator: ``sample`` draws O and P features of any gallery layout."""

    mean: np.ndarray           # (d,) centre of the identity means
    between: np.ndarray        # (d, r) factor of the identity means' covariance
    cam_offsets: np.ndarray    # (n_cams, d) each camera's mean within-identity residual
    within: np.ndarray         # (d, r) factor of the per-image deviations' covariance
    p_shift: np.ndarray        # (d,) mean of f(P) - f(O)
    p_factor: np.ndarray       # (d, r) factor of the covariance of f(P) - f(O)
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_cams(self) -> int:
        return int(self.cam_offsets.shape[0])

    def identity_means(self, n_ids: int, rng: np.random.Generator) -> np.ndarray:
        """(n_ids, d) new identities' mean features."""
        z = rng.standard_normal((n_ids, self.between.shape[1]), dtype=np.float32)
        return self.mean[None, :] + z @ self.between.T

    def sample(self, pids: np.ndarray, cams: np.ndarray, means: np.ndarray, rng: np.random.Generator,
               block: int = 65536) -> np.ndarray:
        """O features (n, d) float32, unit rows, of images of identities ``pids`` (rows of ``means``)
        seen by cameras ``cams`` (taken modulo the fitted cameras); written block by block."""
        n, d = len(pids), self.dim
        o = np.empty((n, d), np.float32)
        cams = np.asarray(cams) % self.n_cams
        for start in range(0, n, block):
            stop = min(start + block, n)
            z = rng.standard_normal((stop - start, self.within.shape[1]), dtype=np.float32)
            o[start:stop] = l2n(means[pids[start:stop]] + self.cam_offsets[cams[start:stop]] + z @ self.within.T)
        return o

    def sample_p(self, o: np.ndarray, rng: np.random.Generator, block: int = 65536) -> np.ndarray:
        """P features of the images whose O features are ``o``: ``normalize(o + shift)``."""
        p = np.empty_like(o)
        for start in range(0, len(o), block):
            stop = min(start + block, len(o))
            z = rng.standard_normal((stop - start, self.p_factor.shape[1]), dtype=np.float32)
            p[start:stop] = l2n(o[start:stop] + self.p_shift + z @ self.p_factor.T)
        return p

    def with_within_scale(self, scale: float) -> "FeatureModel":
        """The same model with the per-image deviations' spread times ``scale``."""
        return dataclasses.replace(self, within=self.within * np.float32(scale),
                                   info={**self.info, "within_scale": float(scale)})

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> str:
        """An ``.npz`` that ``load`` reads back (the ``info`` as JSON inside it)."""
        from torchreid_privacy.utils.atomic import write_with

        arrays = {k: getattr(self, k) for k in ("mean", "between", "cam_offsets", "within", "p_shift", "p_factor")}
        info = json.dumps({"format": FORMAT, **self.info})
        return write_with(path, lambda f: np.savez(f, info=np.array(info), **arrays))

    @classmethod
    def load(cls, path: str | Path, flag: str = "--features-from") -> "FeatureModel":
        """A model ``save`` wrote, or a ValueError naming the file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k], dtype=np.float32)
                          for k in ("mean", "between", "cam_offsets", "within", "p_shift", "p_factor")}
                info = json.loads(str(z["info"]))
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ValueError(f"{flag}: {path} is not a fitted feature model ({exc})") from exc
        d = arrays["mean"].shape
        ok = (isinstance(info, dict) and info.get("format") == FORMAT and len(d) == 1
              and arrays["between"].ndim == 2 and arrays["between"].shape[0] == d[0]
              and all(arrays[k].ndim == 2 and arrays[k].shape[0] == d[0] for k in ("within", "p_factor"))
              and arrays["cam_offsets"].ndim == 2 and arrays["cam_offsets"].shape[1] == d[0]
              and arrays["cam_offsets"].shape[0] >= 1 and arrays["p_shift"].shape == d)
        if not ok:
            raise ValueError(f"{flag}: {path} is not a fitted feature model of format {FORMAT} (shapes or info "
                             "do not match)")
        return cls(info=info, **arrays)


def _group_means(x: np.ndarray, rows: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """(n, d) mean of ``x``'s rows per group ``rows``, and each group's count."""
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, rows, x)
    counts = np.bincount(rows, minlength=n).astype(np.float64)
    return sums / np.maximum(counts, 1)[:, None], counts


def fit(o: np.ndarray, pids: np.ndarray, cams: np.ndarray, p: Optional[np.ndarray] = None,
        image: Optional[np.ndarray] = None, plain: Optional[np.ndarray] = None,
        info: Optional[Dict[str, Any]] = None) -> FeatureModel:
    """Fit :class:`FeatureModel` to C's features ``o`` (n, d) of identities ``pids`` and cameras ``cams``
    (0 .. n_cams - 1; several images per identity); ``p``: C's features of the same images' P (None: P = O).

    With ``image`` (the source image of each row, rows being crops of it) and ``plain`` (the rows
    that are each image's test-transform resize) the per-image deviation is modelled as a gallery
    photo's: the spread of the images' centres (the mean of their augmented crops) around their
    identity, plus the crops' spread around their image scaled to what the plain crops show;
    without them, every row is an image (the pooled within-identity covariance).
    """
    o = l2n(o).astype(np.float64)
    pids, cams = np.asarray(pids), np.asarray(cams)
    ids, pid_row = np.unique(pids, return_inverse=True)
    means, counts = _group_means(o, pid_row, len(ids))
    if len(ids) < 2 or counts.min() < 2:
        raise ValueError(f"fit: needs >= 2 identities of >= 2 images each, got {len(ids)} identities "
                         f"(fewest images {int(counts.min()) if len(counts) else 0})")
    n, d = o.shape
    n_cams = int(cams.max()) + 1
    if cams.min() < 0:
        raise ValueError("fit: cameras must be numbered from 0")
    resid = o - means[pid_row]
    offsets, _ = _group_means(resid, cams, n_cams)
    resid -= offsets[cams]
    meta: Dict[str, Any] = {"images": int(n), "identities": int(len(ids)), "cameras": n_cams, "dim": int(d)}
    plain_rows = np.asarray(plain, dtype=bool) if plain is not None else np.zeros(n, dtype=bool)
    images, img_row = np.unique(np.asarray(image), return_inverse=True) if image is not None else (None, None)
    aug_per_img = (np.bincount(img_row[~plain_rows], minlength=len(images)) if image is not None
                   else np.zeros(0, int))
    centre = means.mean(0)
    if image is None or not plain_rows.any() or aug_per_img.min() < 2:
        within = resid.T @ resid / max(1, n - len(ids) - n_cams + 1)
        leftover = within * float(np.mean(1.0 / counts))  # the noise averaging leaves in an identity's mean
    else:
        # an image's centre: the mean of its augmented crops; a crop's spread around it; the plain
        # crop's offset from it (what a gallery photo adds to its image), less the centre's own noise
        aug = ~plain_rows
        img_centre, _ = _group_means(resid[aug], img_row[aug], len(images))
        crop_dev = resid[aug] - img_centre[img_row[aug]]
        crop_cov = crop_dev.T @ crop_dev / max(1, int(aug.sum()) - len(images))
        per_img = float(np.mean(1.0 / aug_per_img))
        img_pid = pid_row[np.unique(img_row, return_index=True)[1]]
        img_cov = _psd(img_centre.T @ img_centre / max(1, len(images) - len(ids) - n_cams + 1) - crop_cov * per_img)
        offset = resid[plain_rows] - img_centre[img_row[plain_rows]]
        offset -= offset.mean(0)  # a shift every plain crop shares moves no distance
        spread = float(np.mean(np.sum(offset ** 2, 1)))
        scale2 = max(0.0, spread / max(float(np.trace(crop_cov)), 1e-30) - per_img)
        within = img_cov + scale2 * crop_cov
        leftover = img_cov * float(np.mean(1.0 / np.bincount(img_pid))) + crop_cov * float(np.mean(1.0 / counts))
        centre = centre + resid[plain_rows].mean(0)  # where plain photos sit, not the average crop
        meta.update(source_images=int(len(images)), image_trace=float(np.trace(img_cov)),
                    crop_trace=float(np.trace(crop_cov)), plain_crop_scale=float(np.sqrt(scale2)))
    between = np.cov(means, rowvar=False) - leftover
    if p is None:
        shift, p_cov = np.zeros(d), np.zeros((d, d))
    else:
        delta = l2n(p).astype(np.float64) - o
        shift = delta.mean(0)
        p_cov = np.cov(delta, rowvar=False)
    meta.update(within_trace=float(np.trace(within)), between_trace=float(np.trace(_psd(between))),
                **(info or {}))
    return FeatureModel(mean=centre.astype(np.float32), between=_factor(between, len(ids) - 1),
                        cam_offsets=offsets.astype(np.float32), within=_factor(within),
                        p_shift=shift.astype(np.float32), p_factor=_factor(p_cov) if p is not None
                        else np.zeros((d, 0), np.float32), info=meta)


def _psd(cov: np.ndarray) -> np.ndarray:
    """``cov`` with its negative eigenvalues (estimation noise of a difference) set to 0."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return (vecs * np.clip(vals, 0, None)) @ vecs.T
