"""OpenCL CSR integration engine: the GPU (or CPU OpenCL) twin of the Cython CSR engine.

The sparse matrix (bins x pixels) and the per-bin frame-invariant sums (sum c*n, sum (c*n)^2,
sum c, with n the per-pixel normalisation flat*solid angle*polarisation*...) are uploaded once.
Each frame then costs one upload of the raw frame in its own dtype and one kernel launch
(``opencl/csr_integrate.cl``), which converts the pixels in registers, leaves out the invalid
ones by the one rule of :mod:`xreduce.engines.preprocess` (the dummy compared in the frame's
own type) and removes their share of the normalisation, exactly as the Cython engine does.

Accumulation is compensated float32 (double-word, about 48 significant bits) on GPUs, float64
on CPU devices that support it (faster there), or as asked with ``precision=``.

The integrator's methods ``(split, "csr", "opencl")`` use :class:`OpenCLIntegrationEngine`
on the device of the method's target (``("bbox", "csr", "opencl", "gpu:0")`` or
``target=``; default ``XREDUCE_OPENCL_DEVICE``, else "any"); ``(split, "csr", "any")`` uses it
when an OpenCL device exists and the Cython engine otherwise.

Example
-------
>>> import numpy as np
>>> from types import SimpleNamespace
>>> csr = SimpleNamespace(indptr=np.array([0, 2, 3], np.int32),
...                       indices=np.array([0, 1, 2], np.int32),
...                       data=np.array([1.0, 0.5, 1.0], np.float32), shape=(2, 3))
>>> engine = OpenCLCsrEngine(csr)                                   # doctest: +SKIP
>>> sums = engine.integrate(np.array([4, 2, 7], np.uint16))         # doctest: +SKIP
>>> sums.signal                                                     # doctest: +SKIP
array([5., 7.])
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np

from xreduce.engines.preprocess import FrameArgs, Normalisation, PixelRule, Sums, pixel_rule
from xreduce.limits import check_allocation
from xreduce.opencl import ENV_DEVICE, OpenCLUnavailableError, build_program, get_context

ERROR_MODELS = {"none": 0, "poisson": 1, "variance": 2, "azimuthal": 3}

#: numpy dtype -> (OpenCL C type, its maximum) of the raw frames the kernel reads directly.
_FRAME_TYPES = {
    np.dtype(np.uint8): ("uchar", "UCHAR_MAX"), np.dtype(np.int8): ("char", "CHAR_MAX"),
    np.dtype(np.uint16): ("ushort", "USHRT_MAX"), np.dtype(np.int16): ("short", "SHRT_MAX"),
    np.dtype(np.uint32): ("uint", "UINT_MAX"), np.dtype(np.int32): ("int", "INT_MAX"),
    np.dtype(np.uint64): ("ulong", "ULONG_MAX"), np.dtype(np.int64): ("long", "LONG_MAX"),
    np.dtype(np.float32): ("float", "0"), np.dtype(np.float64): ("double", "0"),
}


@dataclasses.dataclass(frozen=True)
class CsrSums:
    """Per-bin sums of one frame (arrays of shape (nbins,)) or of a stack ((nframes, nbins)).

    ``signal`` = sum c (raw - dark), ``variance`` = sum c^2 v, ``normalization`` = sum c n,
    ``normalization2`` = sum (c n)^2, ``count`` = sum c, all over the valid (and, after sigma
    clipping, kept) pixels, as float64; ``valid`` is the number of such CSR entries (int32).
    """

    signal: np.ndarray
    variance: np.ndarray
    normalization: np.ndarray
    normalization2: np.ndarray
    count: np.ndarray
    valid: np.ndarray

    @property
    def intensity(self) -> np.ndarray:
        """sum_signal / sum_normalization (NaN where the bin is empty)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.valid > 0, self.signal / self.normalization, np.nan)


def _import_pyopencl():
    try:
        import pyopencl
        import pyopencl.array  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise OpenCLUnavailableError(f"pyopencl cannot be imported ({err})") from err
    return pyopencl


def _get_context(device: Any):
    """A pyopencl Context for `device`: a Context passes through, the rest goes to get_context."""
    cl = _import_pyopencl()
    return device if isinstance(device, cl.Context) else get_context(device)


def _has_fp64(device) -> bool:
    return "cl_khr_fp64" in device.extensions.split()


def _to_double_word(values: np.ndarray) -> np.ndarray:
    """float64 values -> (n, 2) float32 pairs hi + lo."""
    hi = values.astype(np.float32)
    lo = (values - hi.astype(np.float64)).astype(np.float32)
    return np.ascontiguousarray(np.stack([hi, lo], axis=-1))


class OpenCLCsrEngine:
    """Integrate frames with a CSR matrix on an OpenCL device.

    Parameters
    ----------
    csr : CsrMatrix or any object with ``indptr``, ``indices``, ``data`` (None: all ones)
        and ``shape`` = (nbins, npix).
    normalization : per-pixel normalisation n (flat * solid angle * polarisation * ...),
        shape (npix,) or the frame shape; None means 1 everywhere.
    presums : optional (3, nbins) float64 frame-invariant sums (sum c n, sum (c n)^2, sum c)
        already computed with this matrix and normalisation (e.g. by the Cython engine).
    device : "any", "cpu", "gpu", (platform_id, device_id), a pyopencl Context, or None
        (reads ``XREDUCE_OPENCL_DEVICE``).
    precision : "float32" (compensated: double-word accumulation, about 48 bits), "float64"
        (needs ``cl_khr_fp64``) or None: float64 on CPU devices that have it (there it is
        both the more exact and, measured on PoCL, the 3-6x faster choice), compensated
        float32 elsewhere (GPUs, whose float64 units are slow or absent).
    workgroup_size : work-items per bin (power of two); default 1 on CPUs, 8 to 256 on GPUs
        by the mean row length.

    Examples
    --------
    >>> engine = OpenCLCsrEngine(csr, normalization=solid_angle, device="gpu")  # doctest: +SKIP
    >>> sums = engine.integrate(frame, error_model="poisson")                   # doctest: +SKIP
    >>> intensity = sums.signal / sums.normalization                            # doctest: +SKIP
    """

    def __init__(self, csr: Any, normalization: np.ndarray | None = None,
                 presums: np.ndarray | None = None, device: Any = None,
                 precision: str | None = None, workgroup_size: int | None = None) -> None:
        cl = _import_pyopencl()
        if precision not in (None, "float32", "float64"):
            raise ValueError(f"precision: expected 'float32', 'float64' or None, got {precision!r}")
        nbins, npix = (int(n) for n in csr.shape)
        indptr = np.ascontiguousarray(csr.indptr, dtype=np.int32)
        indices = np.ascontiguousarray(csr.indices, dtype=np.int32)
        if indptr.shape != (nbins + 1,) or indptr[0] != 0 or indptr[-1] != len(indices):
            raise ValueError(f"csr: indptr must have nbins + 1 = {nbins + 1} entries from 0 to "
                             f"nnz = {len(indices)}, got shape {indptr.shape}")
        if len(indices) and (indices.min() < 0 or indices.max() >= npix):
            raise ValueError(f"csr: indices must lie in [0, {npix}), got "
                             f"[{indices.min()}, {indices.max()}]")
        coefs = None if csr.data is None else np.ascontiguousarray(csr.data, dtype=np.float32)
        norm = self._per_pixel(normalization, npix, "normalization", fill=1.0,
                               dtype=np.float64)

        self.context = _get_context(device)
        self.device = self.context.devices[0]
        if precision is None:
            cpu = bool(self.device.type & cl.device_type.CPU)
            precision = "float64" if cpu and _has_fp64(self.device) else "float32"
        if precision == "float64" and not _has_fp64(self.device):
            raise ValueError(f"precision: 'float64' needs cl_khr_fp64, which device "
                             f"{self.device.name!r} lacks; use 'float32' (compensated)")
        self.precision = precision
        self.nbins, self.npix, self.nnz = nbins, npix, len(indices)
        if workgroup_size is None:
            workgroup_size = self._default_workgroup_size(cl)
        if workgroup_size < 1 or workgroup_size & (workgroup_size - 1):
            raise ValueError(f"workgroup_size: expected a power of two, got {workgroup_size}")
        self.workgroup_size = min(workgroup_size, self.device.max_work_group_size)
        self._has_coef = coefs is not None

        # the normalisation in the accumulation precision: the kernel reads it for the pixels
        # it leaves out, and the frame-invariant sums below are computed from the same values
        # float32 mode: the rounding error of each value too, for the azimuthal model's
        # deviations from the bin mean (formed in double-word, see csr_integrate.cl)
        norm_lo = None if precision == "float64" else \
            (norm - norm.astype(np.float32).astype(np.float64)).astype(np.float32)
        norm = norm.astype(np.float64 if precision == "float64" else np.float32)
        if presums is None:  # frame-invariant per-bin sums, in float64 on the host
            rows = np.repeat(np.arange(nbins), np.diff(indptr))
            c = np.ones(self.nnz) if coefs is None else coefs.astype(np.float64)
            cn = c * norm.astype(np.float64)[indices]
            presums = np.stack([np.bincount(rows, cn, nbins), np.bincount(rows, cn * cn, nbins),
                                np.bincount(rows, c, nbins)])
        presums = np.asarray(presums, np.float64)
        if presums.shape != (3, nbins):
            raise ValueError(f"presums: expected shape (3, {nbins}), got {presums.shape}")
        presums = presums if precision == "float64" else _to_double_word(presums)

        self._check_memory(indptr.nbytes + indices.nbytes + (0 if coefs is None else coefs.nbytes)
                           + norm.nbytes + (0 if norm_lo is None else norm_lo.nbytes)
                           + presums.nbytes, "the CSR matrix and per-pixel arrays")
        mf = cl.mem_flags
        ro = mf.READ_ONLY | mf.COPY_HOST_PTR

        def upload(array):
            return cl.Buffer(self.context, ro, hostbuf=array)

        self._indptr, self._indices = upload(indptr), upload(indices)
        self._coefs = upload(coefs) if coefs is not None else upload(np.zeros(1, np.float32))
        self._norm = upload(norm)
        self._norm_lo = self._coefs if norm_lo is None else upload(norm_lo)
        self._presums = upload(presums)
        self._acc_itemsize = 8  # one double or one float2 per sum
        self._flags = None
        self._kernels: dict = {}
        self._lock = threading.Lock()  # kernels' arguments and the clip flags are shared
        self.queue = cl.CommandQueue(self.context)
        self._transfer_queue = cl.CommandQueue(self.context)

    # ------------------------------------------------------------------ helpers
    def _default_workgroup_size(self, cl) -> int:
        """1 on CPUs (a work-item per bin, no barriers); on GPUs about one work-item per 8
        entries of the mean row, between 8 (2D: short rows) and 256 (1D: long rows)."""
        if self.device.type & cl.device_type.CPU:
            return 1
        per_row = self.nnz / max(self.nbins, 1)
        size = 8
        while size < 256 and size * 8 < per_row:
            size *= 2
        return size

    @staticmethod
    def _per_pixel(array, npix: int, name: str, fill: float, dtype=np.float32) -> np.ndarray:
        if array is None:
            return np.full(npix, fill, dtype)
        array = np.asarray(array)
        if array.size != npix:
            raise ValueError(f"{name}: expected {npix} pixels, got shape {array.shape}")
        if array.dtype.kind not in "uif":
            raise TypeError(f"{name}: expected a real numeric array, got dtype {array.dtype}")
        return np.ascontiguousarray(array.ravel(), dtype=dtype)

    def _check_memory(self, nbytes: int, what: str) -> None:
        limit = self.device.global_mem_size
        if nbytes > limit:
            raise MemoryError(f"{what} need {nbytes / 2**20:.0f} MiB but OpenCL device "
                              f"{self.device.name!r} has {limit / 2**20:.0f} MiB")

    def _frame_dtype(self, dtype: np.dtype, name: str = "frame") -> np.dtype:
        """The dtype the kernel reads for frames of `dtype` (converted on the host if needed)."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "uif":
            raise TypeError(f"{name}: expected an integer or float image, got dtype {dtype}")
        native = dtype.newbyteorder("=")
        if native == np.float64 and not _has_fp64(self.device):
            return np.dtype(np.float32)
        if native not in _FRAME_TYPES:  # float16, float128...
            return np.dtype(np.float32)
        return native

    def _kernel(self, frame_dtype: np.dtype, error_model: int, has_dark: bool):
        defines = {
            "FRAME_T": _FRAME_TYPES[frame_dtype][0],
            "FRAME_MAX": _FRAME_TYPES[frame_dtype][1],
            "FRAME_IS_FLOAT": int(frame_dtype.kind == "f"),
            "FRAME_IS_SIGNED": int(frame_dtype.kind == "i"),
            "FRAME_IS_DOUBLE": int(frame_dtype == np.float64),
            "WG": self.workgroup_size,
            "HAS_COEF": int(self._has_coef),
            "HAS_DARK": int(has_dark),
            "ERROR_MODEL": error_model,
            "USE_DOUBLE": int(self.precision == "float64"),
        }
        key = tuple(sorted(defines.items()))
        if key not in self._kernels:
            program = build_program(self.context, "csr_integrate.cl", defines)
            self._kernels[key] = _import_pyopencl().Kernel(program, "csr_integrate")
        return self._kernels[key]

    def _variance(self, error_model: str, variance, nframes: int) -> np.ndarray | None:
        """The variance as (1 or nframes, npix) float32, checked against the error model."""
        if error_model not in ERROR_MODELS:
            raise ValueError(f"error_model: expected one of {sorted(ERROR_MODELS)}, "
                             f"got {error_model!r}")
        if (variance is None) == (error_model == "variance"):
            raise ValueError("variance: an array is needed with error_model='variance' and only "
                             f"then, got {'None' if variance is None else 'an array'} with "
                             f"error_model={error_model!r}")
        if variance is None:
            return None
        variance = np.asarray(variance)
        if variance.dtype.kind not in "uif":
            raise TypeError(f"variance: expected a real numeric array, got dtype {variance.dtype}")
        if variance.size not in (self.npix, nframes * self.npix):
            raise ValueError(f"variance: expected {self.npix} values (shared) or "
                             f"{nframes * self.npix} (one set per frame), got shape "
                             f"{variance.shape}")
        return np.ascontiguousarray(variance, dtype=np.float32).reshape(-1, self.npix)

    def _flags_buffer(self, max_iter: int):
        cl = _import_pyopencl()
        if max_iter == 0:
            return self._coefs
        if self._flags is None:
            self._flags = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, max(self.nnz, 1))
        return self._flags

    def _sums(self, out: np.ndarray, valid: np.ndarray) -> CsrSums:
        """Host arrays (..., 5, nbins[, 2]) -> CsrSums of float64."""
        values = out.astype(np.float64)
        if self.precision == "float32":
            values = values[..., 0] + values[..., 1]
        return CsrSums(*(values[..., q, :] for q in range(5)), valid=valid)

    # ------------------------------------------------------------------ public API
    def integrate(self, frame: np.ndarray, error_model: str = "poisson",
                  variance: np.ndarray | None = None, dark: np.ndarray | None = None,
                  dummy: float | None = None, delta_dummy: float | None = None,
                  max_value_invalid: bool = False) -> CsrSums:
        """Per-bin sums of one frame.

        Parameters
        ----------
        frame : raw frame of any integer or float dtype with npix pixels (uploaded as it is).
        error_model : "none", "poisson" (v = max(raw, 1)), "variance" (``variance`` given) or
            "azimuthal" (the weighted spread of s / n in the bin, weights c n:
            sum_variance = spread^2 * sum (c n)^2).
        variance : per-pixel variance, only with error_model="variance".
        dark : per-pixel dark current subtracted from the frame (s = raw - dark), or None.
        dummy, delta_dummy : pixels equal to dummy (within delta_dummy, compared in the
            frame's type) are invalid; so are NaN and inf, negative values of signed integers
            and pixels whose dark or variance is NaN or inf (the rule of doc/integration.md).
        max_value_invalid : the integer type's maximum is invalid too (Dectris detectors).

        Returns
        -------
        CsrSums with arrays of shape (nbins,).
        """
        return self.sigma_clip(frame, error_model=error_model, variance=variance, dark=dark,
                               dummy=dummy, delta_dummy=delta_dummy, max_iter=0,
                               max_value_invalid=max_value_invalid)

    def sigma_clip(self, frame: np.ndarray, thres: float = 5.0, max_iter: int = 5,
                   error_model: str = "poisson", variance: np.ndarray | None = None,
                   dark: np.ndarray | None = None, dummy: float | None = None,
                   delta_dummy: float | None = None, max_value_invalid: bool = False) -> CsrSums:
        """Per-bin sums after iterative sigma clipping.

        At each of at most ``max_iter`` iterations, CSR entries whose corrected value s / n lies
        further than ``thres * std`` from the bin mean (std = sqrt(sum_variance / sum_norm2),
        from the previous iteration) are left out for good; a bin stops when nothing moved or
        a single entry is left. Other parameters as in :meth:`integrate`.
        """
        if not hasattr(frame, "dtype"):
            raise TypeError(f"frame: expected a numpy array, got {type(frame).__name__}")
        frame = np.asarray(frame)
        if frame.dtype.kind not in "uif":
            raise TypeError(f"frame: expected an integer or float image, got dtype {frame.dtype}")
        if frame.size != self.npix:
            raise ValueError(f"frame: expected {self.npix} pixels, got shape {frame.shape}")
        sums = self.integrate_stack(frame.reshape(1, -1), error_model=error_model,
                                    variance=variance, dark=dark, dummy=dummy,
                                    delta_dummy=delta_dummy, max_iter=max_iter, thres=thres,
                                    max_value_invalid=max_value_invalid)
        return CsrSums(*(getattr(sums, f.name)[0] for f in dataclasses.fields(CsrSums)))

    def integrate_stack(self, stack: Any, error_model: str = "poisson",
                        variance: np.ndarray | None = None, dark: np.ndarray | None = None,
                        dummy: float | None = None, delta_dummy: float | None = None,
                        max_iter: int = 0, thres: float = 5.0, max_value_invalid: bool = False,
                        rule: PixelRule | None = None) -> CsrSums:
        """Per-bin sums of every frame of a stack (shape (nframes, ...) with npix pixels a frame).

        A numpy stack is streamed with two frame buffers: the upload of frame i+1 (on a
        transfer queue) overlaps the kernel of frame i. A ``pyopencl.array.Array`` already on
        this engine's context is read in place, without any transfer. ``max_iter > 0`` applies
        sigma clipping (see :meth:`sigma_clip`) to every frame. ``variance`` is shared
        (npix values) or given per frame. ``rule`` (a PixelRule, from the integrator) replaces
        ``dummy``, ``delta_dummy`` and ``max_value_invalid``. Returns CsrSums with arrays of
        shape (nframes, nbins).
        """
        cl = _import_pyopencl()
        on_device = isinstance(stack, cl.array.Array)
        if not on_device:
            stack = np.asarray(stack)
        if stack.dtype.kind not in "uif":
            raise TypeError(f"stack: expected integer or float frames, got dtype {stack.dtype}")
        if stack.ndim < 2 or stack.size != stack.shape[0] * self.npix:
            raise ValueError(f"stack: expected shape (nframes, ...) with {self.npix} pixels a "
                             f"frame, got {stack.shape}")
        nframes = stack.shape[0]
        max_iter = int(max_iter)
        if max_iter < 0:
            raise ValueError(f"max_iter: expected >= 0, got {max_iter}")
        if max_iter and error_model == "none":
            raise ValueError("error_model: sigma clipping needs an error model, got 'none'")
        if on_device:
            if stack.context.int_ptr != self.context.int_ptr:
                raise ValueError("stack: a pyopencl array must live on this engine's context")
            frame_dtype = np.dtype(stack.dtype)
            if not stack.flags.c_contiguous or frame_dtype not in _FRAME_TYPES or (
                    frame_dtype == np.float64 and not _has_fp64(self.device)):
                raise TypeError(f"stack: a device array must be C-contiguous with a dtype the "
                                f"device reads, got {stack.dtype}")
        else:
            frame_dtype = self._frame_dtype(stack.dtype, "stack")
        if rule is None:
            rule = pixel_rule(frame_dtype, dummy, delta_dummy, max_value_invalid)
        rule = rule.for_dtype(frame_dtype)
        check_allocation(nframes * self.nbins * (5 * 8 + 4), "stack",
                         f"{nframes} frames x {self.nbins} bins of 5 sums")
        variance = self._variance(error_model, variance, nframes)
        dark = None if dark is None else self._per_pixel(dark, self.npix, "dark", fill=0.0)
        frame_nbytes = self.npix * frame_dtype.itemsize
        self._check_memory(2 * frame_nbytes + (0 if variance is None else variance.nbytes),
                           "the frame buffers")
        if frame_nbytes > self.device.max_mem_alloc_size:
            raise MemoryError(f"frame: {frame_nbytes / 2**20:.0f} MiB exceeds the largest buffer "
                              f"({self.device.max_mem_alloc_size / 2**20:.0f} MiB) of "
                              f"{self.device.name!r}")
        mf = cl.mem_flags
        ro = mf.READ_ONLY | mf.COPY_HOST_PTR
        with self._lock:
            kernel = self._kernel(frame_dtype, ERROR_MODELS[error_model], dark is not None)
            dark_buf = self._coefs if dark is None else cl.Buffer(self.context, ro, hostbuf=dark)
            var_bufs = [self._coefs] if variance is None else \
                [cl.Buffer(self.context, ro, hostbuf=v) for v in variance]
            flags = self._flags_buffer(max_iter)
            if self.precision == "float64":
                out = np.empty((nframes, 5, self.nbins), np.float64)
            else:
                out = np.empty((nframes, 5, self.nbins, 2), np.float32)
            valid = np.empty((nframes, self.nbins), np.int32)
            out_bufs = [cl.Buffer(self.context, mf.WRITE_ONLY, out[0].nbytes) for _ in range(2)]
            valid_bufs = [cl.Buffer(self.context, mf.WRITE_ONLY, valid[0].nbytes)
                          for _ in range(2)]
            if on_device:
                base = stack.offset // frame_dtype.itemsize
                frame_bufs = [stack.base_data] * 2
            else:
                frame_bufs = [cl.Buffer(self.context, mf.READ_ONLY, frame_nbytes)
                              for _ in range(2)]
            scalars = (np.int32(rule.max_invalid), np.int32(rule.has_dummy), rule.bounds[0],
                       rule.bounds[1])  # the bounds in the frame's own type
            kernel_events: list = [None, None]
            wg = self.workgroup_size
            for i in range(nframes):
                slot = i % 2
                if on_device:
                    offset, wait = base + i * self.npix, None
                else:
                    host = np.ascontiguousarray(stack[i].reshape(-1), dtype=frame_dtype)
                    previous = None if kernel_events[slot] is None else [kernel_events[slot]]
                    # the transfer queue fills one buffer while the kernel reads the other
                    upload = cl.enqueue_copy(self._transfer_queue, frame_bufs[slot], host,
                                             is_blocking=False, wait_for=previous)
                    offset, wait = 0, [upload]
                kernel.set_args(frame_bufs[slot], np.uint64(offset), dark_buf,
                                var_bufs[i if len(var_bufs) > 1 else 0], self._norm, self._norm_lo,
                                self._indptr, self._indices, self._coefs, self._presums,
                                np.int32(self.nbins), *scalars, np.int32(max_iter),
                                np.float32(thres), flags, out_bufs[slot], valid_bufs[slot])
                kernel_events[slot] = cl.enqueue_nd_range_kernel(
                    self.queue, kernel, (self.nbins * wg,), (wg,), wait_for=wait)
                cl.enqueue_copy(self.queue, out[i], out_bufs[slot], is_blocking=False)
                cl.enqueue_copy(self.queue, valid[i], valid_bufs[slot], is_blocking=False)
            self.queue.finish()
            self._transfer_queue.finish()
        return self._sums(out, valid)


# ---------------------------------------------------------------------- integrator back end
class OpenCLIntegrationEngine:
    """The ``("csr", "opencl")`` engine of :class:`xreduce.integrator.AzimuthalIntegrator`.

    It shares the Cython CSR engine's matrix and frame-invariant sums (so both back ends see
    the same pixels, including those dropped for an unusable normalisation) and integrates on
    the OpenCL device: the matrix is uploaded once per set of corrections, each call uploads
    only the raw frames.

    Parameters
    ----------
    cpu_engine : xreduce.engines.CsrEngine
    device : as :func:`xreduce.opencl.get_context` (None: ``XREDUCE_OPENCL_DEVICE``).
    precision : "float32" (compensated), "float64" or None (see OpenCLCsrEngine).

    Examples
    --------
    >>> res = ai.integrate1d(frame, 1000, method=("bbox", "csr", "opencl"))  # doctest: +SKIP
    """

    def __init__(self, cpu_engine: Any, device: Any = None, precision: str | None = None):
        self.context = _get_context(device)  # OpenCLUnavailableError before any work
        self.key = cpu_engine.key
        self.matrix = cpu_engine.matrix
        self.nbins = cpu_engine.nbins
        self.radial_edges = cpu_engine.radial_edges
        self.azimuthal_edges = cpu_engine.azimuthal_edges
        self.nbytes = cpu_engine.nbytes  # host memory held by the shared matrix, in bytes
        self.precision = precision
        self._device_spec = device
        self._cpu = cpu_engine
        self._engines: dict = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        return (OpenCLIntegrationEngine, (self._cpu, self._device_spec, self.precision))

    @property
    def device_engines(self) -> list[OpenCLCsrEngine]:
        """The device-side engines uploaded so far (one per set of corrections, two kept)."""
        with self._lock:
            return list(self._engines.values())

    def device_engine(self, norm: Any, context: Any = None) -> OpenCLCsrEngine:
        """The device-side engine for a normalisation on ``context`` (default: this engine's
        device), uploaded on first use; the two most recent are kept."""
        context = self.context if context is None else context
        key = (norm.key, context.int_ptr)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                static = self._cpu.static_sums(norm)
                csr = SimpleNamespace(indptr=static.indptr, indices=static.indices,
                                      data=static.coef, shape=self.matrix.shape)
                presums = np.stack([static.sum_norm, static.sum_norm2, static.count])
                engine = OpenCLCsrEngine(csr, normalization=norm.values, presums=presums,
                                         device=context, precision=self.precision)
                while len(self._engines) >= 2:
                    self._engines.pop(next(iter(self._engines)))
                self._engines[key] = engine
            return engine

    def integrate(self, args: FrameArgs, norm: Normalisation, max_iter: int = 0,
                  thres: float = 5.0) -> Sums:
        """Integrate the frames of ``args`` (a FrameArgs) on the device; returns engines.Sums.

        Frames already on a device (a ``pyopencl.array.Array``) are read in place, on their
        own context; ``max_iter > 0`` sigma-clips each bin (see OpenCLCsrEngine.sigma_clip).
        """
        context = args.frames.context if is_device_array(args.frames) else None
        sums = self.device_engine(norm, context).integrate_stack(
            args.frames, error_model=args.error_model or "none", variance=args.variance,
            dark=args.dark, rule=args.rule, max_iter=max_iter, thres=thres)
        return Sums(sums.signal, sums.variance, sums.normalization, sums.normalization2,
                    sums.count)


def is_device_array(data: Any) -> bool:
    """Whether ``data`` is a ``pyopencl.array.Array`` (False, without importing pyopencl,
    when pyopencl was never imported)."""
    module = sys.modules.get("pyopencl.array")
    return module is not None and isinstance(data, module.Array)


def device_frames(data: Any, shape: tuple[int, int], implementation: str | None) -> tuple:
    """A device-resident frame or stack as an (n, npix) view of the same buffer, and whether it
    was a stack; a TypeError unless an OpenCL engine (implementation "opencl" or "any") reads it."""
    if implementation not in ("opencl", "any"):
        raise TypeError(f"data: a pyopencl.array.Array is integrated in place only by the OpenCL "
                        f"engine; use method=(split, 'csr', 'opencl'), or pass data.get() (a host "
                        f"copy) to the {implementation or 'NumPy'!r} implementation")
    if data.ndim not in (2, 3) or tuple(data.shape[-2:]) != tuple(shape):
        raise ValueError(f"data: expected a frame of shape {shape} or a stack (n, *{shape}) "
                         f"matching the detector, got shape {data.shape}")
    if not data.flags.c_contiguous:
        raise TypeError("data: a device array must be C-contiguous; make it so with .copy()")
    nframes = data.shape[0] if data.ndim == 3 else 1
    return data.reshape(nframes, shape[0] * shape[1]), data.ndim == 3


def resolve_target(target: str | None) -> str:
    """The device an OpenCL engine key names: the target, else ``XREDUCE_OPENCL_DEVICE``, else
    "any" (resolved when the key is made, so that engines on two devices never mix)."""
    if target is not None:
        return target
    return os.environ.get(ENV_DEVICE, "any").strip().lower() or "any"


def _cython_engine(ai: Any, key: Any, user_mask: Any) -> Any:
    """The integrator's Cython CSR engine for the same matrix, from its engine cache: an
    OpenCL engine next to a Cython one builds no second matrix."""
    return ai.engine(dataclasses.replace(key, implementation="cython", device=None), user_mask)


def build_opencl(ai: Any, key: Any, user_mask: Any) -> OpenCLIntegrationEngine:
    """The ``("csr", "opencl")`` builder, on the device of ``key.device``."""
    _get_context(key.device)  # fail fast, before the matrix is built
    return OpenCLIntegrationEngine(_cython_engine(ai, key, user_mask), device=key.device)


def build_any(ai: Any, key: Any, user_mask: Any) -> Any:
    """The ``("csr", "any")`` builder: OpenCL when a device is there, else the Cython engine."""
    cpu_engine = _cython_engine(ai, key, user_mask)
    try:
        return OpenCLIntegrationEngine(cpu_engine, device=key.device)
    except OpenCLUnavailableError:
        return cpu_engine
