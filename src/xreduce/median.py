"""Exact medians of image stacks: moving median along frames and 2D median filter per frame.

Two public functions, each with a Cython+OpenMP back end (SIMD, runtime CPU dispatch) and an
OpenCL back end giving bit-identical results:

- :func:`moving_median`: for every pixel, the median of a window of frames around each frame
  (the per-pixel background of a rotation series, as in DCT preprocessing).
- :func:`median_filter2d`: the median of a ``size`` neighbourhood of every pixel of each frame,
  equal to :func:`scipy.ndimage.median_filter` on one frame.

Conventions shared by both:

- **Window placement** (as scipy.ndimage and MATLAB's ``movmedian``): the window of index
  ``i`` spans ``i - size // 2 .. i + (size - 1) // 2``; an even window has one more element
  before the centre than after.
- **NaN**: a NaN anywhere in a window makes that output NaN (as :func:`numpy.median`).
- **Edges** (``mode``), as scipy.ndimage: ``"reflect"`` (d c b a | a b c d | d c b a),
  ``"mirror"`` (d c b | a b c d | c b a), ``"nearest"`` (a a a | a b c d | d d d),
  ``"wrap"`` (b c d | a b c d | a b c); :func:`moving_median` also has ``"shrink"`` (the
  window is cut at the ends, as MATLAB's ``"shrink"`` endpoints) and
  :func:`median_filter2d` has ``"constant"`` (outside values are ``cval``).
"""
from __future__ import annotations

import numbers
from typing import Optional, Union

import numpy as np

__all__ = ["moving_median", "median_filter2d"]

MOVING_MODES = ("nearest", "reflect", "mirror", "wrap", "shrink")
FILTER_MODES = ("reflect", "nearest", "mirror", "wrap", "constant")
_BACKENDS = ("cython", "opencl")
_EXACT_FLOAT64_INT = 2**53


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_threads(num_threads) -> int:
    """None or 0: every core; more than the cores: capped to them (doc/limits.md)."""
    from xreduce.limits import check_num_threads

    return check_num_threads(num_threads, "num_threads")


#: A moving-median window may always have this many frames, whatever the stack length.
WINDOW_ALWAYS_ALLOWED = 1025
#: Beyond WINDOW_ALWAYS_ALLOWED, a window may hold at most this many times the stack's frames.
WINDOW_FRAMES_RATIO = 4


def effective_window(window: int, n_frames: int, mode: str, name: str = "window") -> int:
    """The window the kernels use for ``window`` on ``n_frames`` frames (doc/dct.md, limits).

    With ``mode="shrink"`` a window of 2 * n_frames - 1 frames or more covers the whole stack
    for every frame, so it is clipped there (the result is identical). With the padding modes
    the window's cost grows with its length while its content is mostly padding: windows
    longer than ``max(WINDOW_ALWAYS_ALLOWED, WINDOW_FRAMES_RATIO * n_frames)`` are refused.

    Raises
    ------
    ValueError
        The window is beyond that limit (the message names ``name``).
    """
    if mode == "shrink":
        return min(window, max(1, 2 * n_frames - 1))
    limit = max(WINDOW_ALWAYS_ALLOWED, WINDOW_FRAMES_RATIO * n_frames)
    if window > limit:
        raise ValueError(
            f"{name}: a window of {window} frames on a stack of {n_frames} frames is refused: "
            f"with mode {mode!r} at most max({WINDOW_ALWAYS_ALLOWED}, {WINDOW_FRAMES_RATIO} x "
            f"frames) = {limit} frames (beyond, the window is mostly padding and its cost grows "
            "with its length); use mode 'shrink' (a longer window is clipped to the stack) or "
            "a shorter window")
    return window


def _kernel_dtype(name: str, array: np.ndarray, native: tuple = ()) -> np.dtype:
    """The dtype the kernels compute in, exact for every value of ``array``: float32,
    float64, int32 (smaller integers too), float64 for wider integers; ``native`` dtypes
    have kernels of their own."""
    dtype = array.dtype
    if dtype in (np.float32, np.float64) or dtype in native:
        return dtype
    if dtype.kind in "iu":
        if dtype.itemsize < 4 or dtype == np.int32:
            return np.dtype(np.int32)
        if dtype == np.uint32:
            return np.dtype(np.float64)
        if array.size and (
            int(array.max()) >= _EXACT_FLOAT64_INT or int(array.min()) <= -_EXACT_FLOAT64_INT
        ):
            raise ValueError(
                f"{name}: {dtype} values beyond +-2**53 cannot be handled exactly; "
                "convert to float64 first if rounding is acceptable"
            )
        return np.dtype(np.float64)
    raise TypeError(
        f"{name}: expected a float32, float64 or integer array, got dtype {dtype}"
    )


# ------------------------------------------------------------------------------------------
# Moving median along frames
# ------------------------------------------------------------------------------------------


def _frame_map(n_frames: int, window: int, mode: str) -> np.ndarray:
    """Real frame of each virtual index k (virtual frame k - window // 2), -1 for none.

    The window of output frame i is ``map[i : i + window]``.
    """
    v = np.arange(n_frames + window - 1, dtype=np.int64) - window // 2
    if mode == "nearest":
        k = np.clip(v, 0, n_frames - 1)
    elif mode == "wrap":
        k = np.mod(v, n_frames)
    elif mode == "reflect":
        k = np.mod(v, 2 * n_frames)
        k = np.where(k < n_frames, k, 2 * n_frames - 1 - k)
    elif mode == "mirror":
        if n_frames == 1:
            k = np.zeros_like(v)
        else:
            period = 2 * n_frames - 2
            k = np.mod(v, period)
            k = np.where(k < n_frames, k, period - k)
    else:  # shrink
        k = np.where((v >= 0) & (v < n_frames), v, -1)
    return np.ascontiguousarray(k, dtype=np.int32)


def _sample_frames(n_frames: int, step: int) -> np.ndarray:
    samples = np.arange(0, n_frames, step)
    if samples[-1] != n_frames - 1:
        samples = np.append(samples, n_frames - 1)
    return np.ascontiguousarray(samples, dtype=np.int32)


def _ranks(frame_map: np.ndarray, samples: np.ndarray, window: int, even: str):
    valid = np.concatenate([[0], np.cumsum(frame_map >= 0)])
    count = valid[samples + window] - valid[samples]  # frames present in each window
    low, high = (count - 1) // 2, count // 2
    if even == "lower":
        high = low
    elif even == "upper":
        low = high
    return np.ascontiguousarray(low, np.int32), np.ascontiguousarray(high, np.int32)


def _interpolate(medians: np.ndarray, samples: np.ndarray, n_frames: int, how: str,
                 dtype: np.dtype) -> np.ndarray:
    """Expand medians at ``samples`` to every frame (nearest sample or linear).

    Linear values are ``m0 + (m1 - m0) * t`` in float64, cast to ``dtype``; computed frame by
    frame so the temporaries stay one frame large.
    """
    frames = np.arange(n_frames)
    after = np.searchsorted(samples, frames, side="left")  # first sample >= frame
    after = np.minimum(after, len(samples) - 1)
    before = np.maximum(after - 1, 0)
    exact = samples[after] == frames
    before = np.where(exact, after, before)
    if how == "nearest":
        pick = np.where(frames - samples[before] <= samples[after] - frames, before, after)
        return medians[pick].astype(dtype, copy=False)
    out = np.empty((n_frames,) + medians.shape[1:], dtype)
    for i in range(n_frames):
        b, a = before[i], after[i]
        if a == b:
            out[i] = medians[b]
            continue
        t = (i - samples[b]) / float(samples[a] - samples[b])
        m0 = medians[b].astype(np.float64)
        step = medians[a].astype(np.float64)
        step -= m0
        step *= t
        step += m0
        out[i] = step
    return out


def moving_median(
    stack: np.ndarray,
    window: int,
    axis: int = 0,
    mode: str = "nearest",
    step: int = 1,
    interpolation: str = "nearest",
    even: str = "mean",
    out: Optional[np.ndarray] = None,
    backend: str = "cython",
    num_threads: Optional[int] = None,
    *,
    isa: Optional[str] = None,
    device=None,
) -> np.ndarray:
    """Exact moving median of every pixel along one axis of a stack of frames.

    Parameters
    ----------
    stack : ndarray
        Frames, any number of dimensions; float32, float64 or integers.
    window : int
        Number of frames in the window (>= 1, odd or even). The window of frame ``i`` spans
        ``i - window // 2 .. i + (window - 1) // 2``.
    axis : int
        The frame axis.
    mode : {"nearest", "reflect", "mirror", "wrap", "shrink"}
        How windows are filled past the first and last frame (see the module notes);
        ``"shrink"`` uses only the frames that exist, so windows at the ends are shorter.
    step : int
        Compute the median every ``step`` frames (and at the last frame) only, and fill the
        frames between by ``interpolation``. ``1``: every frame exactly.
    interpolation : {"nearest", "linear"}
        With ``step > 1``: copy the nearest computed frame (the earlier one on ties) or
        interpolate linearly between the two around.
    even : {"mean", "lower", "upper"}
        The median of an even number of values: the mean of the two middle ones (as
        :func:`numpy.median` and MATLAB), or the lower / upper one (always an input value;
        ``"upper"`` is what :func:`scipy.ndimage.median_filter` takes).
    out : ndarray, optional
        Where to write the result; shape of ``stack`` and the result dtype below.
    backend : {"cython", "opencl"}
        Compiled back end; both give identical results.
    num_threads : int, optional
        OpenMP threads of the Cython back end (default: all).
    isa : {"sse2", "avx2", "avx512"}, optional
        Force one SIMD code path of the Cython back end (testing and benchmarking);
        default: the widest the CPU supports.
    device : optional
        OpenCL device for ``backend="opencl"``, as for :func:`xreduce.opencl.get_context`.

    Returns
    -------
    ndarray
        Same shape as ``stack``. Floating stacks keep their dtype. Integer stacks keep theirs
        too, unless a value can be a mean (``even="mean"`` with an even window or
        ``mode="shrink"``, or ``interpolation="linear"`` with ``step > 1``): then float64.

    Notes
    -----
    NaN: a NaN anywhere in a pixel's window makes its median NaN, as :func:`numpy.median`.
    The Cython kernel keeps a sorted window for tiles of adjacent pixels in SIMD lanes and
    updates it branch-free (remove the outgoing frame, insert the incoming one); its cost per
    pixel-frame grows linearly with ``window``. The frame axis is moved first if it is not
    axis 0, which copies the stack.

    Example
    -------
    >>> import numpy as np
    >>> from xreduce.median import moving_median
    >>> stack = np.arange(10, dtype=np.float32).reshape(5, 2, 1) ** 2
    >>> moving_median(stack, 3)[:, 0, 0]
    array([ 0.,  4., 16., 36., 64.], dtype=float32)
    """
    stack = np.asarray(stack)
    if stack.ndim == 0:
        raise ValueError("stack: expected an array with at least one dimension, got a scalar")
    window = _check_int("window", window, 1)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis: expected an integer, got {axis!r}")
    if not -stack.ndim <= axis < stack.ndim:
        raise ValueError(f"axis: expected an integer in [{-stack.ndim}, {stack.ndim}), got {axis!r}")
    axis = int(axis) % stack.ndim
    mode = _check_choice("mode", mode, MOVING_MODES)
    step = _check_int("step", step, 1)
    interpolation = _check_choice("interpolation", interpolation, ("nearest", "linear"))
    even = _check_choice("even", even, ("mean", "lower", "upper"))
    backend = _check_choice("backend", backend, _BACKENDS)
    threads = _check_threads(num_threads)
    kernel_dtype = _kernel_dtype("stack", stack)

    n_frames = stack.shape[axis]
    window = effective_window(window, n_frames, mode) if n_frames else window
    frame_map = _frame_map(n_frames, window, mode) if n_frames else None
    samples = _sample_frames(n_frames, step) if n_frames else np.zeros(0, np.int32)
    if n_frames:
        rank_lo, rank_hi = _ranks(frame_map, samples, window, even)
    else:
        rank_lo = rank_hi = samples
    averages = bool(np.any(rank_lo != rank_hi))
    linear = step > 1 and interpolation == "linear"
    if stack.dtype.kind in "iu" and (averages or linear):
        result_dtype = np.dtype(np.float64)
        kernel_dtype = np.dtype(np.float64)
    else:
        result_dtype = stack.dtype
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != stack.shape or out.dtype != result_dtype:
            raise ValueError(
                f"out: expected an ndarray of shape {stack.shape} and dtype {result_dtype}, got "
                f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}"
            )
    if stack.size == 0:
        result = np.empty(stack.shape, result_dtype)
        if out is not None:
            out[...] = result
            return out
        return result

    frames = np.moveaxis(stack, axis, 0)
    other_shape = frames.shape[1:]
    flat = np.ascontiguousarray(frames, dtype=kernel_dtype).reshape(n_frames, -1)
    if backend == "cython":
        from xreduce.ext import moving_median as ext

        direct = (out is not None and step == 1 and axis == 0 and out.dtype == kernel_dtype
                  and out.flags.c_contiguous)
        medians = (out.reshape(flat.shape) if direct
                   else np.empty((len(samples), flat.shape[1]), kernel_dtype))
        ext.moving_median_frames(
            flat, window, frame_map, samples, rank_lo, rank_hi, medians, threads, isa
        )
        if direct:
            return out
    else:
        medians = _moving_median_opencl(flat, window, frame_map, samples, rank_lo, rank_hi,
                                        device)
    if step > 1:
        medians = _interpolate(medians, samples, n_frames, interpolation, result_dtype)
    result = medians.astype(result_dtype, copy=False).reshape((n_frames,) + other_shape)
    result = np.moveaxis(result, 0, axis)
    if out is not None:
        out[...] = result
        return out
    return np.ascontiguousarray(result)


def _run_moving_median(flat, window, frame_map, samples, rank_lo, rank_hi, backend="cython",
                       num_threads=0, device=None, out=None, subtract_from=None):
    """Medians at ``samples`` of a frames-major (n, npix) array with a given frame map.

    The building block of :func:`moving_median` and of chunked pipelines, which pass a
    frame map into a block of frames they hold. Returns (len(samples), npix); with
    ``subtract_from`` (a frame index of ``flat`` per sample), ``flat[subtract_from] - medians``
    instead (in the same pass for the Cython back end).
    """
    if backend == "opencl":
        medians = _moving_median_opencl(flat, window, frame_map, samples, rank_lo, rank_hi,
                                        device)
        if subtract_from is None:
            return medians
        return np.subtract(flat[subtract_from], medians, out=out)
    from xreduce.ext import moving_median as ext

    if out is None:
        out = np.empty((len(samples), flat.shape[1]), flat.dtype)
    sub = None if subtract_from is None else np.ascontiguousarray(subtract_from, np.int32)
    return ext.moving_median_frames(flat, window, frame_map, samples, rank_lo, rank_hi, out,
                                    num_threads, subtract_from=sub)


_OPENCL_WINDOW_MAX = 4096


def _opencl_type(ctx, dtype: np.dtype) -> dict:
    from xreduce.opencl import OpenCLUnavailableError

    if dtype == np.float64:
        if not all(d.double_fp_config for d in ctx.devices):
            raise OpenCLUnavailableError(
                f"OpenCL device {ctx.devices[0].name!r} has no double precision (float64)"
            )
        return {"T": "double", "IS_FLOAT": 1, "USE_DOUBLE": 1}
    if dtype == np.float32:
        return {"T": "float", "IS_FLOAT": 1}
    if dtype == np.int32:
        return {"T": "int", "IS_FLOAT": 0}
    raise TypeError(f"OpenCL median kernels: no kernel for {dtype}")  # pragma: no cover


def _window_capacity(size: int, what: str) -> int:
    if size > _OPENCL_WINDOW_MAX:
        raise ValueError(
            f"{what}: the OpenCL back end holds at most {_OPENCL_WINDOW_MAX} values per window "
            f"in private memory, got {size}; use backend='cython'"
        )
    return max(8, 1 << (size - 1).bit_length())


def _moving_median_opencl(flat, window, frame_map, samples, rank_lo, rank_hi, device):
    import pyopencl as cl

    from xreduce import opencl

    ctx = opencl.get_context(device)
    queue = opencl.get_queue(ctx)
    defines = dict(_opencl_type(ctx, flat.dtype), WINDOW_MAX=_window_capacity(window, "window"))
    program = opencl.build_program(ctx, "median.cl", defines)
    npix = flat.shape[1]
    d_stack = opencl.to_device(queue, flat)
    d_map = opencl.to_device(queue, frame_map)
    d_samples = opencl.to_device(queue, samples)
    d_lo = opencl.to_device(queue, rank_lo)
    d_hi = opencl.to_device(queue, rank_hi)
    d_out = opencl.empty(queue, (len(samples), npix), flat.dtype)
    kernel = cl.Kernel(program, "moving_median")
    kernel(queue, (npix,), None, d_stack.data, np.int64(npix), np.int32(window), d_map.data,
           d_samples.data, d_lo.data, d_hi.data, np.int32(len(samples)), d_out.data)
    return d_out.get()


# ------------------------------------------------------------------------------------------
# 2D median filter
# ------------------------------------------------------------------------------------------


def _filter_size(size) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"size: expected an int or a (rows, cols) pair of ints, got {size!r}")
    if min(size) < 1:
        raise ValueError(f"size: expected sizes >= 1, got {tuple(size)}")
    return int(size[0]), int(size[1])


#: Windows with more values than this are filtered by selection (cost ~ size**2 per pixel)
#: instead of the compiled kernel's sorted insertion (cost ~ size**4 / SIMD width).
SELECTION_ABOVE = 441  # 21 x 21
_SELECTION_BLOCK_BYTES = 32 * 2**20


def _check_filter_cost(shape: tuple, size_r: int, size_c: int, dtype: np.dtype) -> None:
    """Refuse a filter whose padded frame or per-row window copies exceed the memory limit."""
    from xreduce.limits import check_allocation

    rows, cols = shape[-2:]
    padded = (rows + size_r - 1) * (cols + size_c - 1)
    one_row = cols * size_r * size_c
    check_allocation(max(padded, one_row) * dtype.itemsize, "size",
                     f"a {size_r} x {size_c} median window on frames of {rows} x {cols}")


def _median_by_selection(stack: np.ndarray, size_r: int, size_c: int, mode: str,
                         cval) -> np.ndarray:
    """The 2D median by selection (:func:`numpy.partition`) over blocks of rows: the same
    value as the kernel (rank ``size_r * size_c // 2``, NaN in a window gives NaN, the same
    index maps at the edges), at a cost that scales for large windows."""
    from numpy.lib.stride_tricks import sliding_window_view

    n, rows, cols = stack.shape
    edge = "shrink" if mode == "constant" else mode  # -1 outside: cval
    rmap, cmap = _frame_map(rows, size_r, edge), _frame_map(cols, size_c, edge)
    rank = size_r * size_c // 2
    per_row = max(1, cols * size_r * size_c * stack.dtype.itemsize)
    block = max(1, _SELECTION_BLOCK_BYTES // per_row)
    out = np.empty_like(stack)
    floating = stack.dtype.kind == "f"
    for f in range(n):
        padded = stack[f][np.maximum(rmap, 0)][:, np.maximum(cmap, 0)]
        padded[rmap < 0, :] = cval
        padded[:, cmap < 0] = cval
        for r0 in range(0, rows, block):
            r1 = min(rows, r0 + block)
            windows = sliding_window_view(padded[r0:r1 + size_r - 1], (size_r, size_c))
            windows = windows.reshape(r1 - r0, cols, size_r * size_c)
            selected = np.partition(windows, rank, axis=-1)[..., rank]
            if floating:
                selected[np.isnan(windows).any(axis=-1)] = np.nan
            out[f, r0:r1] = selected
    return out


def median_filter2d(
    frame_or_stack: np.ndarray,
    size: Union[int, tuple[int, int]] = 3,
    mode: str = "reflect",
    cval: float = 0.0,
    out: Optional[np.ndarray] = None,
    backend: str = "cython",
    num_threads: Optional[int] = None,
    *,
    isa: Optional[str] = None,
    device=None,
) -> np.ndarray:
    """Exact 2D median filter of one frame or of each frame of a stack.

    Parameters
    ----------
    frame_or_stack : ndarray
        One frame (rows, cols) or a stack (frames, rows, cols), filtered frame by frame;
        float32, float64 or integers.
    size : int or (int, int)
        Window rows and columns (>= 1). Windows are placed as in scipy.ndimage.
    mode : {"reflect", "nearest", "mirror", "wrap", "constant"}
        Edge handling, as :func:`scipy.ndimage.median_filter`.
    cval : float
        Outside value for ``mode="constant"``.
    out : ndarray, optional
        Where to write the result (same shape and dtype as the input).
    backend : {"cython", "opencl"}
        Compiled back end; both give identical results.
    num_threads : int, optional
        OpenMP threads of the Cython back end (default: all).
    isa : {"sse2", "avx2", "avx512"}, optional
        Force one SIMD code path of the Cython back end (testing); default: the widest.
    device : optional
        OpenCL device for ``backend="opencl"``.

    Returns
    -------
    ndarray
        Same shape and dtype as the input: the element of rank ``(rows * cols) // 2`` of each
        window, i.e. the median, and for an even count the upper middle value, exactly as
        :func:`scipy.ndimage.median_filter`. A window holding a NaN gives NaN.

    Notes
    -----
    3x3 windows use a min/max network on sorted column triples shared by neighbouring
    outputs; 5x5 windows sort their columns (shared) and rank levels, then select among the
    13 entries that can be the median; other sizes keep the smallest half of each window
    sorted by branch-free insertion. All run in SIMD lanes along rows with OpenMP over rows
    and frames.

    Example
    -------
    >>> import numpy as np
    >>> from xreduce.median import median_filter2d
    >>> frame = np.zeros((5, 5), np.float32); frame[2, 2] = 100.0   # one hot pixel
    >>> float(median_filter2d(frame, 3).max())
    0.0
    """
    data = np.asarray(frame_or_stack)
    if data.ndim not in (2, 3):
        raise ValueError(
            f"frame_or_stack: expected a 2D frame or a 3D stack of frames, got {data.ndim} dims"
        )
    size_r, size_c = _filter_size(size)
    mode = _check_choice("mode", mode, FILTER_MODES)
    backend = _check_choice("backend", backend, _BACKENDS)
    threads = _check_threads(num_threads)
    if not isinstance(cval, numbers.Real):
        raise TypeError(f"cval: expected a real number, got {cval!r}")
    kernel_dtype = _kernel_dtype("frame_or_stack", data, native=(np.dtype(np.uint16),))
    if out is not None and (
        not isinstance(out, np.ndarray) or out.shape != data.shape or out.dtype != data.dtype
    ):
        raise ValueError(
            f"out: expected an ndarray of shape {data.shape} and dtype {data.dtype}, got "
            f"{getattr(out, 'shape', type(out).__name__)} {getattr(out, 'dtype', '')}"
        )
    stack = np.ascontiguousarray(data.reshape((-1,) + data.shape[-2:]), dtype=kernel_dtype)
    if mode == "constant":
        cval_k = np.array(cval).astype(kernel_dtype)
        if kernel_dtype.kind in "iu" and cval_k != cval:
            raise ValueError(f"cval: {cval!r} is not representable in {data.dtype}")
    else:
        cval_k = np.zeros((), kernel_dtype)
    _check_filter_cost(stack.shape, size_r, size_c, kernel_dtype)
    if stack.size == 0:
        result = np.empty(data.shape, data.dtype)
    elif size_r * size_c > SELECTION_ABOVE and backend == "cython":
        result = _median_by_selection(stack, size_r, size_c, mode, cval_k[()])
        result = result.reshape(data.shape)
    elif backend == "cython":
        from xreduce.ext import median_filter2d as ext

        direct = (out is not None and out.dtype == kernel_dtype and out.flags.c_contiguous
                  and not np.shares_memory(out, stack))
        filtered = out.reshape(stack.shape) if direct else np.empty_like(stack)
        ext.median_filter_frames(stack, size_r, size_c, FILTER_MODES.index(mode), cval_k[()],
                                 filtered, threads, isa)
        if direct:
            return out
        result = filtered.reshape(data.shape)
    else:
        result = _median_filter2d_opencl(stack, size_r, size_c, mode, cval_k, device)
        result = result.reshape(data.shape)
    result = result.astype(data.dtype, copy=False)
    if out is not None:
        out[...] = result
        return out
    return result


def _median_filter2d_opencl(stack, size_r, size_c, mode, cval, device):
    import pyopencl as cl

    from xreduce import opencl

    ctx = opencl.get_context(device)
    queue = opencl.get_queue(ctx)
    dtype = stack.dtype if stack.dtype != np.uint16 else np.dtype(np.int32)
    stack = stack.astype(dtype, copy=False)
    rank = (size_r * size_c) // 2
    defines = dict(_opencl_type(ctx, dtype), WINDOW_MAX=_window_capacity(rank + 1, "size"),
                   MODE=FILTER_MODES.index(mode))
    program = opencl.build_program(ctx, "median.cl", defines)
    n_frames, rows, cols = stack.shape
    d_in = opencl.to_device(queue, stack)
    d_out = opencl.empty(queue, stack.shape, dtype)
    kernel = cl.Kernel(program, "median_filter2d")
    kernel(queue, (cols, rows, n_frames), None, d_in.data, np.int32(rows), np.int32(cols),
           np.int32(size_r), np.int32(size_c), np.int32(rank), cval.astype(dtype)[()],
           d_out.data)
    return d_out.get()
