"""The Cython CSR engine: one fused pass of a compiled kernel over a sparse matrix per call.

An engine holds the CSR matrix (bins x pixels) and, per set of corrections, the
frame-invariant per-bin sums ``sum c*norm``, ``sum (c*norm)^2`` and ``count`` (computed once).
Engines are immutable once built and hold no per-call scratch, so one engine serves any
number of threads at once. The matrix is checked once, when the engine is made (built or
loaded from a file, :func:`validate_csr`); the kernels then make only O(1) checks.

Example
-------
>>> import numpy as np
>>> from types import SimpleNamespace
>>> m = SimpleNamespace(indptr=np.array([0, 2, 5]), indices=np.array([0, 1, 1, 2, 9]),
...                     data=None, shape=(2, 4))
>>> validate_csr(m)
Traceback (most recent call last):
...
ValueError: indices: expected pixel numbers in [0, 4), got values from 0 to 9
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from xreduce.engines.preprocess import _EMPTY_F32, FrameArgs, Normalisation, Sums
from xreduce.engines.registry import EngineKey
from xreduce.ext import csr_integrate
from xreduce.ext.openmp_info import max_threads
from xreduce.limits import check_allocation

_INT32_MAX = np.iinfo(np.int32).max


def validate_csr(matrix: Any) -> None:
    """Check a CSR matrix before any kernel reads it; a ValueError or TypeError names the
    array at fault.

    ``shape`` is (nbins, npix) of positive integers below 2**31; ``indptr`` (nbins + 1
    integers) starts at 0, never decreases and ends at the number of entries; ``indices``
    are pixel numbers in [0, npix); ``data`` (None or one finite coefficient per entry);
    ``radial_edges`` (and ``azimuthal_edges`` when present) are finite and increasing.
    Arrays are converted to the kernel dtypes in place on the matrix when they are
    integers or floats of another width.
    """
    shape = getattr(matrix, "shape", None)
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape)):
        raise ValueError(f"shape: expected (nbins, npix), two integers, got {shape!r}")
    nbins, npix = int(shape[0]), int(shape[1])
    if not (0 < nbins < _INT32_MAX and 0 < npix < _INT32_MAX):
        raise ValueError(f"shape: expected 0 < nbins, npix < 2**31, got {shape!r}")
    indptr = _integer_array(matrix, "indptr", 1)
    indices = _integer_array(matrix, "indices", 1)
    if indptr.shape != (nbins + 1,):
        raise ValueError(f"indptr: expected {nbins + 1} values (nbins + 1), got "
                         f"{indptr.shape[0]}")
    if indptr[0] != 0 or indptr[-1] != indices.shape[0]:
        raise ValueError(f"indptr: expected to run from 0 to the {indices.shape[0]} entries of "
                         f"indices, got {indptr[0]} .. {indptr[-1]}")
    if (np.diff(indptr) < 0).any():
        raise ValueError("indptr: expected non-decreasing values (a CSR row pointer)")
    if indices.size and (indices.min() < 0 or indices.max() >= npix):
        raise ValueError(f"indices: expected pixel numbers in [0, {npix}), got values from "
                         f"{indices.min()} to {indices.max()}")
    data = getattr(matrix, "data", None)
    if data is not None:
        data = np.asarray(data)
        if data.dtype.kind not in "uif" or data.shape != indices.shape:
            raise ValueError(f"data: expected {indices.shape[0]} real coefficients (one per "
                             f"entry), got shape {data.shape} of dtype {data.dtype}")
        if not np.isfinite(data).all():
            raise ValueError("data: expected finite coefficients, got NaN or infinite ones")
        _set(matrix, "data", np.ascontiguousarray(data, dtype=np.float32))
    _set(matrix, "indptr", np.ascontiguousarray(indptr, dtype=np.int32))
    _set(matrix, "indices", np.ascontiguousarray(indices, dtype=np.int32))
    for name, n in (("radial_edges", None), ("azimuthal_edges", None)):
        edges = getattr(matrix, name, None)
        if edges is None:
            continue
        edges = np.asarray(edges)
        if edges.ndim != 1 or edges.size < 2 or edges.dtype.kind not in "uif" \
                or not np.isfinite(edges).all() or (np.diff(edges) <= 0).any():
            raise ValueError(f"{name}: expected increasing finite bin edges, got "
                             f"shape {edges.shape} of dtype {edges.dtype}")
    radial = getattr(matrix, "radial_edges", None)
    azimuthal = getattr(matrix, "azimuthal_edges", None)
    na = 1 if azimuthal is None else len(azimuthal) - 1
    if radial is not None and (len(radial) - 1) * na != nbins:
        raise ValueError(f"radial_edges: {len(radial) - 1} radial x {na} azimuthal bins do not "
                         f"make the matrix's {nbins} rows")


def _integer_array(matrix: Any, name: str, ndim: int) -> np.ndarray:
    value = getattr(matrix, name, None)
    if value is None:
        raise ValueError(f"{name}: missing")
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" or arr.ndim != ndim:
        raise TypeError(f"{name}: expected a 1D integer array, got shape {arr.shape} of dtype "
                        f"{arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > _INT32_MAX):
        raise ValueError(f"{name}: expected values in [0, 2**31), got values from {arr.min()} "
                         f"to {arr.max()}")
    return arr


def _set(matrix: Any, name: str, value: np.ndarray) -> None:
    if getattr(matrix, name) is not value:
        try:
            setattr(matrix, name, value)
        except AttributeError:  # a frozen dataclass
            object.__setattr__(matrix, name, value)


@dataclass(frozen=True)
class StaticSums:
    """Frame-invariant sums of a CSR engine for one normalisation (and the matrix they use),
    with ``chunks``: bin boundaries cutting the rows into chunks of equal numbers of entries
    (:func:`xreduce.ext.csr_integrate.chunk_count`: the units of work of the parallel loop)."""

    indptr: np.ndarray
    indices: np.ndarray
    coef: np.ndarray | None
    sum_norm: np.ndarray
    sum_norm2: np.ndarray
    count: np.ndarray
    chunks: np.ndarray


class CsrEngine:
    """Integration with a CSR matrix (bins x pixels): one fused kernel pass per call.

    Parameters
    ----------
    key : EngineKey
    matrix : xreduce.sparse.CsrMatrix
        Its masked pixels are absent; ``matrix.data`` is None for the compact no-split
        variant. Checked by :func:`validate_csr` (a ValueError for an inconsistent one).
    """

    def __init__(self, key: EngineKey, matrix: Any):
        validate_csr(matrix)
        self.key = key
        self.matrix = matrix
        self.nbins = int(matrix.shape[0])
        self.npix = int(matrix.shape[1])
        self._static: OrderedDict[tuple, StaticSums] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"key": self.key, "matrix": self.matrix}  # the sums are recomputed on use

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["key"], state["matrix"])

    @property
    def radial_edges(self) -> np.ndarray:
        return self.matrix.radial_edges

    @property
    def azimuthal_edges(self) -> np.ndarray | None:
        return self.matrix.azimuthal_edges

    @property
    def nbytes(self) -> int:
        """Memory held by the matrix arrays, in bytes."""
        m = self.matrix
        return m.indptr.nbytes + m.indices.nbytes + (0 if m.data is None else m.data.nbytes)

    def static_sums(self, norm: Normalisation) -> StaticSums:
        """Frame-invariant sums for a normalisation, computed once and cached (thread-safe)."""
        found = self._static.get(norm.key)
        if found is not None:
            return found
        with self._lock:
            found = self._static.get(norm.key)
            if found is None:
                found = self._compute_static(norm)
                self._static[norm.key] = found
                while len(self._static) > 4:
                    self._static.popitem(last=False)
        return found

    def _compute_static(self, norm: Normalisation) -> StaticSums:
        m = self.matrix
        if norm.values.shape != (self.npix,):
            raise ValueError(f"norm: expected {self.npix} values (the matrix's pixels), got "
                             f"{norm.values.shape}")
        indptr, indices, coef = m.indptr, m.indices, m.data
        if norm.invalid is not None:
            keep = ~norm.invalid[indices]
            if not keep.all():  # drop pixels with an unusable normalisation (e.g. flat == 0)
                row = np.repeat(np.arange(self.nbins), np.diff(indptr))
                counts = np.bincount(row[keep], minlength=self.nbins)
                indptr = np.zeros(self.nbins + 1, dtype=np.int32)
                np.cumsum(counts, out=indptr[1:])
                indices = np.ascontiguousarray(indices[keep])
                coef = None if coef is None else np.ascontiguousarray(coef[keep])
        sums = [np.empty(self.nbins) for _ in range(3)]
        chunks = csr_integrate.balanced_chunks(
            indptr, csr_integrate.chunk_count(len(indices), max_threads()))
        csr_integrate.static_sums(indptr, indices, _EMPTY_F32 if coef is None else coef,
                                  coef is not None, norm.values, *sums, chunks=chunks)
        return StaticSums(indptr, indices, coef, *sums, chunks)

    #: :meth:`integrate` can finish the results in its pass (``empty``)
    finishes = True

    def integrate(self, args: FrameArgs, norm: Normalisation,
                  empty: float | None = None) -> Sums:
        """Integrate the frames of ``args``: one fused pass over the matrix. With ``empty``
        (the value of empty bins), the intensity, sigma and std are made in the same pass
        (``Sums.finished``): no second pass over the sums."""
        nframes, npix = args.frames.shape
        if npix != self.npix:
            raise ValueError(f"data: expected {self.npix} pixels a frame (the engine's), got "
                             f"{npix}")
        planes = 5 if empty is None else 8
        check_allocation(planes * 8 * nframes * self.nbins, "data",
                         f"{nframes} frames x {self.nbins} bins of {planes} float64 sums "
                         "and results")
        static = self.static_sums(norm)
        # one block for the sums and one for the results: large allocations (huge pages for
        # big 2D results) instead of one per array, whose page faults cost more than a 2D
        # frame's pass; apart, so that a kept result does not hold the sums
        block = np.empty((5, nframes, self.nbins))
        finished = None if empty is None else np.empty((3, nframes, self.nbins))
        coef = static.coef
        csr_integrate.integrate_frames(
            args.frames, static.indptr, static.indices,
            _EMPTY_F32 if coef is None else coef, coef is not None, norm.values,
            static.sum_norm, static.sum_norm2, static.count,
            *args.kernel_args(), *block, chunks=static.chunks, finished=finished,
            empty=0.0 if empty is None else float(empty),
            with_errors=args.error_model is not None)
        return Sums(*block, finished=finished)


def build(ai: Any, key: EngineKey, user_mask: np.ndarray | None) -> CsrEngine:
    """The ``("csr", "cython")`` builder: the matrix of :func:`xreduce.sparse.build_csr`."""
    from xreduce.sparse import build_csr

    mask = None if user_mask is None else user_mask.reshape(ai.detector.shape)
    matrix = build_csr(ai.geometry, key.npt_rad, key.npt_azim, unit=key.unit, split=key.split,
                       radial_range=key.radial_range, azimuth_range=key.azimuth_range,
                       mask=mask)
    return CsrEngine(key, matrix)
