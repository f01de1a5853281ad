"""The ``("csc", "cython")`` engine: 1D integration pixel by pixel (doc/integration.md, "The
csc method").

The CSR matrix of the csr method (same bins, same coefficients) is turned pixel-major once;
each frame is then read once, in its own order, and each pixel's few bins are added in an
8-bin window held in registers (``xreduce.ext.csc_integrate``). Frames given as their
bitshuffle-LZ4 chunks (:class:`xreduce.io.chunks.RawChunks`) are integrated block by block
as they are decoded, in the core's cache: the stack integration's fastest path. The sums
equal the csr method's to rounding (the order of the additions differs), and do not depend
on the threads, the frames a call or the frames' form (compressed or not).

Example
-------
>>> import numpy as np
>>> from xreduce.detectors import Detector
>>> from xreduce.geometry import Geometry
>>> from xreduce.integrator import AzimuthalIntegrator
>>> det = Detector(172e-6, 172e-6, (64, 64))
>>> ai = AzimuthalIntegrator(Geometry(0.05, 0.005, 0.005, 0.0, 0.0, 0.0, 1e-10, det))
>>> frame = np.full((64, 64), 7, np.int32)
>>> csc = ai.integrate1d(frame, 20, method=("bbox", "csc", "cython"))
>>> csr = ai.integrate1d(frame, 20, method=("bbox", "csr", "cython"))
>>> bool(np.allclose(csc.intensity, csr.intensity, rtol=1e-12))
True
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from xreduce.engines.cython_csr import CsrEngine, validate_csr
from xreduce.engines.preprocess import FrameArgs, Normalisation, Sums
from xreduce.engines.registry import EngineKey
from xreduce.ext import csc_integrate
from xreduce.limits import check_allocation

#: Bins a pixel may cover (its window of 8 starts at a multiple of 4, so 5 always fit).
MAX_PIXEL_BINS = 8


class CscUnsupported(ValueError):
    """An integration the csc method does not do (2D, the azimuthal error model, pixels wider
    than its window, too many bins): the csr method does it."""


@dataclass(frozen=True)
class PixelMatrix:
    """A 1D matrix pixel-major (the layout of ``xreduce.ext.csc_integrate``): per pixel
    ``base`` (uint16, a multiple of 4) and ``meta`` (uint8, number of bins | shift << 4), the
    coefficients in pixel order, where each slice of pixels starts in them (``slice_off``)
    and the entries of each bin (float64)."""

    base: np.ndarray
    meta: np.ndarray
    coef: np.ndarray
    slice_off: np.ndarray
    entries: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.base, self.meta, self.coef, self.slice_off,
                                      self.entries))


def pixel_major(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray | None,
                shape: tuple[int, int]) -> PixelMatrix:
    """The pixel-major form of a checked 1D CSR matrix (bins x pixels); ValueError when a
    pixel's bins do not follow each other or do not fit its 8-bin window.

    >>> m = pixel_major(np.array([0, 1, 3]), np.array([0, 0, 1]), None, (2, 2))
    >>> m.base.tolist(), m.meta.tolist(), m.coef.tolist(), m.entries.tolist()
    ([0, 0], [2, 17], [1.0, 1.0, 1.0], [1.0, 2.0])
    """
    nbins, npix = int(shape[0]), int(shape[1])
    if nbins > 65536 - MAX_PIXEL_BINS:
        raise CscUnsupported(f"npt: the csc method takes at most {65536 - MAX_PIXEL_BINS} "
                             f"bins, got {nbins} (use the csr method)")
    rows = np.repeat(np.arange(nbins, dtype=np.int32), np.diff(indptr))
    order = np.argsort(indices, kind="stable")  # by pixel, bins increasing within a pixel
    pixels, bins = indices[order], rows[order]
    coef = np.ones(len(order), np.float32) if data is None \
        else np.ascontiguousarray(data[order], dtype=np.float32)
    count = np.bincount(pixels, minlength=npix).astype(np.int64)
    start = np.zeros(npix + 1, np.int64)
    np.cumsum(count, out=start[1:])
    first = np.zeros(npix, np.int64)
    used = count > 0
    first[used] = bins[start[:-1][used]]
    within = np.arange(len(order)) - start[pixels]
    if not np.array_equal(bins - first[pixels], within):
        raise CscUnsupported("method: the csc method needs each pixel's bins to follow each "
                             "other (1D integration); use the csr method")
    base = first & ~3
    shift = first - base
    if count.max(initial=0) > MAX_PIXEL_BINS or (shift + count > MAX_PIXEL_BINS).any():
        raise CscUnsupported(f"npt: a pixel covers {int(count.max())} bins, more than the "
                             f"csc method's window holds (at most 5 always fit); use fewer "
                             f"bins or the csr method")
    size = csc_integrate.slice_pixels
    bounds = np.minimum(np.arange(0, npix + size, size), npix)[:max(1, -(-npix // size)) + 1]
    return PixelMatrix(base.astype(np.uint16), (count | shift << 4).astype(np.uint8), coef,
                       np.ascontiguousarray(start[bounds]),
                       np.diff(indptr).astype(np.float64))


@dataclass(frozen=True)
class StaticSums:
    """Frame-invariant sums for one normalisation, and the matrix they go with (pixels with an
    unusable normalisation removed)."""

    pixels: PixelMatrix
    sum_norm: np.ndarray
    sum_norm2: np.ndarray
    count: np.ndarray


class CscEngine:
    """Integration pixel by pixel (1D only): one pass over the frames per call.

    Parameters
    ----------
    key : EngineKey
    matrix : xreduce.sparse.CsrMatrix
        The csr method's matrix, checked by :func:`validate_csr`, kept pixel-major only.
    """

    #: the results are made from the sums by the integrator
    finishes = False
    #: takes :class:`xreduce.io.chunks.CompressedFrames` (the integrator decompresses them
    #: for the other engines)
    takes_compressed = True

    def __init__(self, key: EngineKey, matrix: Any):
        if key.npt_azim is not None:
            raise CscUnsupported("method: the csc method integrates in 1D only; use the "
                                 "csr method for 2D")
        validate_csr(matrix)
        self.key = key
        self.nbins = int(matrix.shape[0])
        self.npix = int(matrix.shape[1])
        self.radial_edges = matrix.radial_edges
        self.azimuthal_edges = matrix.azimuthal_edges
        self.pixels = pixel_major(matrix.indptr, matrix.indices, matrix.data, matrix.shape)
        self._static: OrderedDict[tuple, StaticSums] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"key": self.key, "pixels": self.pixels, "nbins": self.nbins,
                "npix": self.npix, "radial_edges": self.radial_edges,
                "azimuthal_edges": self.azimuthal_edges}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._static = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Memory held by the matrix arrays, in bytes."""
        return self.pixels.nbytes

    #: frame-invariant sums per normalisation, cached as the csr engine caches them
    static_sums = CsrEngine.static_sums

    def _compute_static(self, norm: Normalisation) -> StaticSums:
        m = self.pixels
        if norm.values.shape != (self.npix,):
            raise ValueError(f"norm: expected {self.npix} values (the matrix's pixels), got "
                             f"{norm.values.shape}")
        if norm.invalid is not None and (norm.invalid & (m.meta & 15 > 0)).any():
            m = _without_pixels(m, norm.invalid)  # unusable normalisation (e.g. flat == 0)
        sums = csc_integrate.static_sums(m.base, m.meta, m.coef, m.slice_off, norm.values,
                                         self.nbins)
        return StaticSums(m, *sums)

    def integrate(self, args: FrameArgs, norm: Normalisation) -> Sums:
        """Integrate the frames of ``args`` (an array (n, npix), or compressed chunks from
        the integrator, decoded in the same pass where they allow it)."""
        if args.error_model == "azimuthal":
            raise CscUnsupported("error_model: the csc method has no azimuthal error model "
                                 "(it needs each bin's mean first); use the csr method")
        nframes, npix = args.frames.shape
        if npix != self.npix:
            raise ValueError(f"data: expected {self.npix} pixels a frame (the engine's), got "
                             f"{npix}")
        check_allocation(5 * 8 * nframes * self.nbins, "data",
                         f"{nframes} frames x {self.nbins} bins of 5 float64 sums")
        static = self.static_sums(norm)
        m = static.pixels
        block = np.empty((5, nframes, self.nbins))
        common = (m.base, m.meta, m.coef, m.slice_off, norm.values, static.sum_norm,
                  static.sum_norm2, static.count, m.entries, *args.kernel_args(), *block)
        frames = args.frames
        chunks = fusable_chunks(frames)
        if chunks is not None:
            try:
                bad = csc_integrate.integrate_chunks(chunks, *common)
            finally:
                frames.raw.release()
            if bad:
                raise ValueError(f"url: the bitshuffle-LZ4 chunk of frame(s) "
                                 f"{[frames.raw.start + f for f in bad]} of {frames.raw.name} "
                                 f"is damaged")
            return Sums(*block)
        if hasattr(frames, "decompress"):
            frames = frames.decompress()
        csc_integrate.integrate_frames(frames, *common)
        return Sums(*block)


def _without_pixels(m: PixelMatrix, drop: np.ndarray) -> PixelMatrix:
    """``m`` without the pixels flagged in ``drop`` (their coefficients removed)."""
    count = (m.meta & 15).astype(np.int64)
    keep_entry = np.repeat(~drop, count)
    meta = np.where(drop, 0, m.meta).astype(np.uint8)
    kept = np.concatenate([[0], np.cumsum(keep_entry)])
    rows = np.repeat(m.base.astype(np.int64), count) + (np.arange(count.sum()) - np.repeat(
        np.cumsum(count) - count, count)) + np.repeat((m.meta >> 4).astype(np.int64), count)
    entries = np.bincount(rows[keep_entry], minlength=len(m.entries)).astype(np.float64)
    return PixelMatrix(m.base, meta, np.ascontiguousarray(m.coef[keep_entry]),
                       kept[m.slice_off], entries)


def fusable_chunks(frames: Any) -> list | None:
    """The ``chunks`` argument of ``csc_integrate.integrate_chunks`` for compressed frames
    (a :class:`~xreduce.io.chunks.CompressedFrames`) that allow it (one frame a chunk,
    32-bit integers, blocks dividing a slice), else None (they are decompressed first)."""
    raw = getattr(frames, "raw", None)
    if raw is None or raw.per_chunk != 1 or raw.dtype.kind not in "iu" \
            or raw.dtype.itemsize != 4 or not raw.dtype.isnative:
        return None
    chunks = []
    for (_, filter_mask, data), blocks in zip(raw.pieces, raw.blocks):
        if filter_mask & 1:
            chunks.append((data, True, None))
            continue
        # damaged, or blocks of another size: the decompression says which
        if blocks is None or csc_integrate.slice_pixels % blocks[0]:
            return None
        chunks.append((data, False, blocks))
    return chunks if len(chunks) == len(raw) else None


def build(ai: Any, key: EngineKey, user_mask: np.ndarray | None) -> CscEngine:
    """The ``("csc", "cython")`` builder: the csr method's matrix, made pixel-major."""
    from xreduce.sparse import build_csr

    if key.npt_azim is not None:
        raise CscUnsupported("method: the csc method integrates in 1D only; use the csr "
                             "method for 2D")
    mask = None if user_mask is None else user_mask.reshape(ai.detector.shape)
    matrix = build_csr(ai.geometry, key.npt_rad, key.npt_azim, unit=key.unit, split=key.split,
                       radial_range=key.radial_range, azimuth_range=key.azimuth_range,
                       mask=mask)
    return CscEngine(key, matrix)
