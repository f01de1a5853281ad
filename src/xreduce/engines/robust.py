"""Per-ring robust statistics (Cython kernels): sigma clipping and median / trimmed mean.

Both work on the pixels of a split-"no" CSR engine (each pixel, by its centre, in one ring)
with the corrected values ``x = signal / norm`` weighted by ``norm``; invalid pixels follow
the one rule of :mod:`xreduce.engines.preprocess`. The definitions are those of
``doc/integration.md`` ("sigma_clip and medfilt1d"). Each function returns, per frame, the per-bin
sums ``(signal, norm, norm2, count, variance)`` of the pixels kept.

Example
-------
>>> bg = ai.sigma_clip(frame, 500, unit="2th_deg", thres=3)   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xreduce.engines.preprocess import FrameArgs, Normalisation, invalid_pixels
from xreduce.ext import robust_stats
from xreduce.limits import check_allocation


def ring_pixels(engine: Any, args: FrameArgs, norm: Normalisation) -> tuple:
    """``(bins, signal, norm, valid)`` of the engine's entries: the bin of each entry, the
    frames' dark-corrected values (nframes, nnz) float64, the normalisation (nnz,) and
    whether each value is valid (nframes, nnz)."""
    static = engine.static_sums(norm)
    nframes = args.frames.shape[0]
    nnz = static.indices.shape[0]
    check_allocation(nframes * nnz * (8 + 8 + 1 + args.frames.itemsize), "data",
                     f"{nframes} frames x {nnz} ring pixels")
    bins = np.repeat(np.arange(engine.nbins), np.diff(static.indptr))
    pixels = static.indices
    values = args.frames[:, pixels]
    dark = None if args.dark is None else args.dark[pixels]
    valid = ~invalid_pixels(values, args.rule, dark)
    signal = values.astype(np.float64)
    if dark is not None:
        signal -= dark
    signal[~valid] = 0.0
    return bins, signal, norm.values[pixels], valid


def sigma_clip(bins: np.ndarray, signal: np.ndarray, norm: np.ndarray, valid: np.ndarray,
               nbins: int, thres: float, max_iter: int) -> list[tuple]:
    """Iterative per-ring rejection of ``|x - m| > thres * s`` (weighted mean ``m`` and
    spread ``s`` of the kept pixels), until nothing changes or after ``max_iter`` passes;
    the Cython kernel :func:`xreduce.ext.robust_stats.sigma_clip_rows`, parallel over rings
    and frames (bit for bit the NumPy statement ``tests/reference.py``
    ``sigma_clip_rings_reference``)."""
    return _per_ring(robust_stats.sigma_clip_rows, bins, signal, norm, valid, nbins,
                     float(thres), int(max_iter), np.empty(signal.shape, np.uint8))


def medfilt(bins: np.ndarray, signal: np.ndarray, norm: np.ndarray, valid: np.ndarray,
            nbins: int, lo: float, hi: float) -> list[tuple]:
    """Per-ring weighted percentile (``lo == hi``) or trimmed mean between two percentiles
    (in %): within a ring sorted by ``x``, each pixel spans a share ``norm / sum norm`` of
    the weight; keep the pixels whose share's centre lies in [lo, hi], or the pixel whose
    share holds the middle percentile when none does. The Cython kernel
    :func:`xreduce.ext.robust_stats.medfilt_rows`, parallel over rings and frames."""
    return _per_ring(robust_stats.medfilt_rows, bins, signal, norm, valid, nbins, lo / 100,
                     hi / 100, np.empty(signal.shape + (2,)))


def _per_ring(kernel, bins, signal, norm, valid, nbins, *params) -> list[tuple]:
    """Run a robust_stats kernel on the ring pixels; per frame, its five per-bin sums."""
    indptr = np.searchsorted(bins, np.arange(nbins + 1)).astype(np.int32)
    nframes = signal.shape[0]
    out = np.empty((5, nframes, nbins))
    kernel(np.ascontiguousarray(signal, dtype=np.float64),
           np.ascontiguousarray(valid).view(np.uint8),
           np.ascontiguousarray(norm, dtype=np.float64), indptr, *params, out)
    return [tuple(out[q, f] for q in range(5)) for f in range(nframes)]
