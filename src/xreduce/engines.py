"""Integration engines and their cache.

An *engine* holds everything an integration needs that does not change from frame to frame:
the CSR matrix (or, for the histogram method, the pixel positions), and, per set of
corrections, the frame-invariant per-bin sums ``sum c*norm``, ``sum (c*norm)^2`` and
``count``. Engines are immutable once built and hold no per-call scratch, so one engine serves
any number of threads at once. Engines are looked up in an :class:`EngineCache` by an
:class:`EngineKey` holding everything the engine depends on.

Implementations are registered in :data:`IMPLEMENTATIONS` under ``(algorithm,
implementation)``, e.g. ``("csr", "cython")``; an OpenCL back end adds its own entries with
the same interface (``build(key, integrator) -> engine``, ``engine.integrate(...) -> Sums``).

Example
-------
>>> cache = EngineCache(max_engines=4)
>>> cache.get_or_create("k", lambda: 42)
42
"""
from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from xreduce.ext import csr_integrate, histogram
from xreduce.ext.openmp_info import max_threads

ERROR_MODES = {None: 0, "poisson": 1, "variance": 2, "azimuthal": 3}
"""Error model name -> kernel code."""

_EMPTY_F32 = np.zeros(0, dtype=np.float32)
_EMPTY_VAR = np.zeros((1, 0), dtype=np.float32)
_EMPTY_F64 = np.zeros(0, dtype=np.float64)


def digest(array: np.ndarray | None) -> str | None:
    """Fingerprint of an array's content, dtype and shape (CRC-32), or None.

    It costs about 2 ms for a 4-Mpixel uint8 mask (8 ms for a float32 flat); engines and
    normalisations are looked up by it, so an array changed in place between calls is seen as
    a new one.
    """
    if array is None:
        return None
    buf = np.ascontiguousarray(array)
    mv = memoryview(buf).cast("B")
    return f"{buf.dtype.str}{buf.shape}:{zlib.crc32(mv):08x}"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on (the geometry is the integrator's own).

    ``radial_range`` is in ``unit``, ``azimuth_range`` in degrees, both as given by the user
    (None: the default range). ``npt_azim`` is None for 1D engines.
    """

    algorithm: str
    implementation: str
    split: str
    unit: str
    npt_rad: int
    npt_azim: int | None
    radial_range: tuple[float, float] | None
    azimuth_range: tuple[float, float] | None
    mask_digest: str | None


@dataclass(frozen=True)
class Normalisation:
    """Per-pixel normalisation ``flat * solid angle * polarization * absorption * factor``.

    ``values`` is float64 of length npix; ``invalid`` (bool, or None when there are none)
    flags pixels whose normalisation is not finite and positive (they are masked); ``key``
    identifies the set of corrections.
    """

    key: tuple
    values: np.ndarray
    invalid: np.ndarray | None


@dataclass(frozen=True)
class Sums:
    """Per-bin sums for a stack of frames, each (nframes, nbins) float64."""

    signal: np.ndarray
    variance: np.ndarray
    norm: np.ndarray
    norm2: np.ndarray
    count: np.ndarray


@dataclass(frozen=True)
class StaticSums:
    """Frame-invariant sums of a CSR engine for one normalisation (and the matrix they use),
    with ``chunks``: bin boundaries cutting the rows into 16 chunks of equal numbers of
    entries per OpenMP thread (the units of work of the per-frame parallel loop)."""

    indptr: np.ndarray
    indices: np.ndarray
    coef: np.ndarray | None
    sum_norm: np.ndarray
    sum_norm2: np.ndarray
    count: np.ndarray
    chunks: np.ndarray


@dataclass(frozen=True)
class FrameArgs:
    """The validated per-call arrays of an integration (frames flattened to (n, npix))."""

    frames: np.ndarray
    dark: np.ndarray | None
    variance: np.ndarray | None
    error_model: str | None
    dummy: float | None
    delta_dummy: float


def _frame_kernel_args(args: FrameArgs) -> tuple:
    dark = _EMPTY_F32 if args.dark is None else args.dark
    variance = _EMPTY_VAR if args.variance is None else args.variance
    has_dummy = args.dummy is not None
    return (dark, args.dark is not None, variance, ERROR_MODES[args.error_model],
            True, has_dummy, float(args.dummy) if has_dummy else 0.0, float(args.delta_dummy))


class CsrEngine:
    """Integration with a CSR matrix (bins x pixels): one fused kernel pass per call.

    Parameters
    ----------
    key : EngineKey
    matrix : xreduce.sparse.CsrMatrix
        Its masked pixels are absent; ``matrix.data`` is None for the compact no-split variant.
    """

    def __init__(self, key: EngineKey, matrix: Any):
        self.key = key
        self.matrix = matrix
        self.nbins = int(matrix.shape[0])
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
        chunks = csr_integrate.balanced_chunks(indptr, 16 * max_threads())
        csr_integrate.static_sums(indptr, indices, _EMPTY_F32 if coef is None else coef,
                                  coef is not None, norm.values, *sums, chunks=chunks)
        return StaticSums(indptr, indices, coef, *sums, chunks)

    def integrate(self, args: FrameArgs, norm: Normalisation) -> Sums:
        """Integrate the frames of ``args``: one fused pass over the matrix."""
        static = self.static_sums(norm)
        nframes = args.frames.shape[0]
        # one block for the five outputs: a single large allocation (huge pages for big 2D
        # results) instead of five, whose page faults cost more than a 2D frame's pass
        out = list(np.empty((5, nframes, self.nbins)))
        coef = static.coef
        csr_integrate.integrate_frames(
            args.frames, static.indptr, static.indices,
            _EMPTY_F32 if coef is None else coef, coef is not None, norm.values,
            static.sum_norm, static.sum_norm2, static.count,
            *_frame_kernel_args(args), *out, chunks=static.chunks)
        return Sums(*out)


class HistogramEngine:
    """Integration without a matrix: each call histograms the pixels (splits no and bbox).

    Holds the pixel extents in (radial, azimuthal) space and the bin edges. Cheap to build,
    slower per frame than a CSR engine: meant for one-off frames.
    """

    def __init__(self, key: EngineKey, radial_edges: np.ndarray,
                 azimuthal_edges: np.ndarray | None, azimuth_limits: tuple[float, float],
                 rad_lo: np.ndarray, rad_hi: np.ndarray, azi_lo: np.ndarray | None,
                 azi_hi: np.ndarray | None, skip: np.ndarray):
        self.key = key
        self.radial_edges = radial_edges
        self.azimuthal_edges = azimuthal_edges
        self.azimuth_limits = azimuth_limits
        self.rad_lo, self.rad_hi = rad_lo, rad_hi
        self.azi_lo, self.azi_hi = azi_lo, azi_hi
        self.skip = skip
        self.nr = len(radial_edges) - 1
        self.na = 1 if azimuthal_edges is None else len(azimuthal_edges) - 1
        self.nbins = self.nr * self.na
        self.nbytes = sum(a.nbytes for a in (rad_lo, rad_hi, azi_lo, azi_hi, skip) if a is not None)

    def integrate(self, args: FrameArgs, norm: Normalisation) -> Sums:
        """Histogram the frames of ``args`` into per-thread accumulators, then merge them."""
        nframes = args.frames.shape[0]
        nthreads = max_threads()
        error_mode = ERROR_MODES[args.error_model]
        nfields = 8 if error_mode == 3 else 5
        acc = np.zeros((nthreads, nframes, self.nbins, nfields))
        skip = self.skip if norm.invalid is None else self.skip | norm.invalid.view(np.uint8)
        use_azimuth = self.azi_lo is not None
        a0, a1 = self.azimuth_limits if use_azimuth else (0.0, 1.0)
        histogram.histogram_frames(
            args.frames, self.rad_lo, self.rad_hi,
            self.azi_lo if use_azimuth else _EMPTY_F64, self.azi_hi if use_azimuth else _EMPTY_F64,
            use_azimuth, self.key.split == "bbox",
            float(self.radial_edges[0]), float(self.radial_edges[-1]), self.nr, a0, a1, self.na,
            skip, norm.values, *_frame_kernel_args(args), acc)
        histogram.merge_threads(acc, error_mode)
        total = acc[0]
        sum_norm = total[..., 2]
        variance = total[..., 1]
        if error_mode == 3:
            sum_norm = total[..., 5]
            with np.errstate(invalid="ignore", divide="ignore"):
                variance = np.where(sum_norm > 0, total[..., 7] / sum_norm * total[..., 3], 0.0)
        return Sums(np.ascontiguousarray(total[..., 0]), np.ascontiguousarray(variance),
                    np.ascontiguousarray(sum_norm), np.ascontiguousarray(total[..., 3]),
                    np.ascontiguousarray(total[..., 4]))


class EngineCache:
    """A thread-safe, size-limited cache of engines (least recently used evicted first).

    ``get_or_create`` builds a missing engine under a lock, so concurrent first calls build it
    once and every thread gets the same engine.
    """

    def __init__(self, max_engines: int = 8):
        self.max_engines = max_engines
        self._engines: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.RLock()  # reentrant: an OpenCL builder gets the Cython engine

    def get_or_create(self, key: Any, build: Callable[[], Any]) -> Any:
        """The engine for ``key``, built by ``build()`` when missing."""
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = build()
                self._engines[key] = engine
                while len(self._engines) > self.max_engines:
                    self._engines.popitem(last=False)
            else:
                self._engines.move_to_end(key)
            return engine

    def put(self, key: Any, engine: Any) -> None:
        """Insert a ready engine (e.g. one loaded from a file)."""
        with self._lock:
            self._engines[key] = engine

    def items(self) -> list[tuple[Any, Any]]:
        """A snapshot of the cached (key, engine) pairs."""
        with self._lock:
            return list(self._engines.items())

    def clear(self) -> None:
        with self._lock:
            self._engines.clear()

    def __len__(self) -> int:
        return len(self._engines)
