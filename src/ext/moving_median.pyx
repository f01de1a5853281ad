# cython: language_level=3
"""Moving median along the first axis of a frames-major (n_frames, npix) stack.

The C kernel (moving_median_impl.h) keeps a sorted window per pixel for tiles of adjacent
pixels, updated branch-free in SIMD lanes, with runtime choice of AVX-512 / AVX2 / SSE2 and
OpenMP over tiles. The only caller is :func:`xreduce.median.moving_median`, which builds the
frame map (edge modes) and the ranks (even windows, shrink) given here.
"""
import numpy as np

from libc.stdint cimport int32_t, int64_t


cdef extern from "moving_median_impl.h" nogil:
    int mm_best_isa()
    int mm_run_f32(const float *stack, int64_t npix, int w, const int *vmap,
                   const int *samples, const int *rank_lo, const int *rank_hi, int ns,
                   const int *sub, float *out, int num_threads, int isa)
    int mm_run_f64(const double *stack, int64_t npix, int w, const int *vmap,
                   const int *samples, const int *rank_lo, const int *rank_hi, int ns,
                   const int *sub, double *out, int num_threads, int isa)
    int mm_run_i32(const int32_t *stack, int64_t npix, int w, const int *vmap,
                   const int *samples, const int *rank_lo, const int *rank_hi, int ns,
                   const int *sub, int32_t *out, int num_threads, int isa)

ISA_NAMES = ("sse2", "avx2", "avx512")


def best_isa():
    """Name of the widest instruction set the kernel will use on this CPU."""
    return ISA_NAMES[mm_best_isa()]


def supported_isas():
    """Names of every instruction set the kernel can use on this CPU, narrowest first."""
    return ISA_NAMES[: mm_best_isa() + 1]


def moving_median_frames(stack, int window, const int[::1] vmap, const int[::1] samples,
                         const int[::1] rank_lo, const int[::1] rank_hi, out,
                         int num_threads=0, isa=None, subtract_from=None):
    """Fill ``out[k]`` with the ranks ``rank_lo[k]``/``rank_hi[k]`` (mean if different) of
    the sorted window ``stack[vmap[samples[k] : samples[k] + window]]`` of every pixel, or,
    with ``subtract_from`` (int32, one frame index per sample; float stacks), with
    ``stack[subtract_from[k]] - median`` (rounded to the dtype, as NumPy subtracts).

    ``stack`` (n_frames, npix) and ``out`` (len(samples), npix): C-contiguous, same dtype,
    one of float32, float64, int32. ``vmap[v] == -1`` marks a missing frame (sorts last).
    ``isa``: None for the best present, else one of ``supported_isas()``.
    """
    cdef int isa_id = -1 if isa is None else ISA_NAMES.index(isa)
    cdef int ns = samples.shape[0]
    cdef int64_t npix = stack.shape[1]
    cdef int status = 0
    cdef float[:, ::1] sf, of
    cdef double[:, ::1] sd, od
    cdef int32_t[:, ::1] si, oi
    if rank_lo.shape[0] != ns or rank_hi.shape[0] != ns or out.shape[0] != ns:
        raise ValueError("samples, rank_lo, rank_hi and out must have the same length")
    if out.shape[1] != npix or out.dtype != stack.dtype:
        raise ValueError("out must have shape (len(samples), npix) and the stack's dtype")
    if ns and (samples[0] < 0 or samples[ns - 1] + window > vmap.shape[0]):
        raise ValueError("vmap does not cover the sample windows")
    cdef const int[::1] sub_view
    cdef const int* sub = NULL
    if subtract_from is not None:
        if stack.dtype.kind != "f":
            raise TypeError(f"subtract_from needs a float stack, got {stack.dtype}")
        sub_view = subtract_from
        if sub_view.shape[0] != ns:
            raise ValueError("subtract_from must have one frame index per sample")
        if ns and (min(subtract_from) < 0 or max(subtract_from) >= stack.shape[0]):
            raise ValueError("subtract_from: frame indices outside the stack")
        sub = &sub_view[0] if ns else NULL
    if stack.dtype == np.float32:
        sf = stack
        of = out
        with nogil:
            status = mm_run_f32(&sf[0, 0] if sf.shape[0] else NULL, npix, window, &vmap[0],
                                &samples[0], &rank_lo[0], &rank_hi[0], ns, sub, &of[0, 0],
                                num_threads, isa_id)
    elif stack.dtype == np.float64:
        sd = stack
        od = out
        with nogil:
            status = mm_run_f64(&sd[0, 0] if sd.shape[0] else NULL, npix, window, &vmap[0],
                                &samples[0], &rank_lo[0], &rank_hi[0], ns, sub, &od[0, 0],
                                num_threads, isa_id)
    elif stack.dtype == np.int32:
        si = stack
        oi = out
        with nogil:
            status = mm_run_i32(&si[0, 0] if si.shape[0] else NULL, npix, window, &vmap[0],
                                &samples[0], &rank_lo[0], &rank_hi[0], ns, sub, &oi[0, 0],
                                num_threads, isa_id)
    else:
        raise TypeError(f"stack: expected float32, float64 or int32, got {stack.dtype}")
    if status == -1:
        raise MemoryError("moving median: cannot allocate the per-thread window state")
    if status == -2:
        raise ValueError(f"isa: {isa!r} is not supported by this CPU")
    return out
