# cython: language_level=3
"""Exact 2D median filter of each frame of a (n_frames, rows, cols) stack.

The C kernel (median_filter2d_impl.h) uses min/max networks for 3x3 and 5x5 windows and a
branch-free sorted insertion for other sizes, vectorised along rows (AVX-512 / AVX2 / SSE2
chosen at run time) with OpenMP over bands of rows. The only caller is
:func:`xreduce.median.median_filter2d`.
"""
import numpy as np

from libc.stdint cimport int32_t, int64_t, uint16_t


cdef extern from "median_filter2d_impl.h" nogil:
    int mf_run_f32(const float *frames, int64_t n_frames, int rows, int cols, int size_r,
                   int size_c, int mode, float cval, float *out, int num_threads, int isa)
    int mf_run_f64(const double *frames, int64_t n_frames, int rows, int cols, int size_r,
                   int size_c, int mode, double cval, double *out, int num_threads, int isa)
    int mf_run_i32(const int32_t *frames, int64_t n_frames, int rows, int cols, int size_r,
                   int size_c, int mode, int32_t cval, int32_t *out, int num_threads, int isa)
    int mf_run_u16(const uint16_t *frames, int64_t n_frames, int rows, int cols, int size_r,
                   int size_c, int mode, uint16_t cval, uint16_t *out, int num_threads,
                   int isa)

ISA_NAMES = ("sse2", "avx2", "avx512")


def median_filter_frames(stack, int size_r, int size_c, int mode, cval, out,
                         int num_threads=0, isa=None):
    """Filter every frame of ``stack`` into ``out`` (both C-contiguous (n, rows, cols), same
    dtype among float32, float64, int32, uint16). ``mode``: 0 reflect, 1 nearest, 2 mirror,
    3 wrap, 4 constant (``cval``). Output: the element of rank (size_r*size_c)//2."""
    cdef int isa_id = -1 if isa is None else ISA_NAMES.index(isa)
    cdef int status = 0
    cdef int64_t n = stack.shape[0]
    cdef int rows = stack.shape[1], cols = stack.shape[2]
    cdef float[:, :, ::1] sf, of
    cdef double[:, :, ::1] sd, od
    cdef int32_t[:, :, ::1] si, oi
    cdef uint16_t[:, :, ::1] su, ou
    cdef float cf
    cdef double cd
    cdef int32_t ci
    cdef uint16_t cu
    if out.shape != stack.shape or out.dtype != stack.dtype:
        raise ValueError("out must have the shape and dtype of stack")
    if n == 0 or rows == 0 or cols == 0:
        return out
    if stack.dtype == np.float32:
        sf = stack
        of = out
        cf = cval
        with nogil:
            status = mf_run_f32(&sf[0, 0, 0], n, rows, cols, size_r, size_c, mode, cf,
                                &of[0, 0, 0], num_threads, isa_id)
    elif stack.dtype == np.float64:
        sd = stack
        od = out
        cd = cval
        with nogil:
            status = mf_run_f64(&sd[0, 0, 0], n, rows, cols, size_r, size_c, mode, cd,
                                &od[0, 0, 0], num_threads, isa_id)
    elif stack.dtype == np.int32:
        si = stack
        oi = out
        ci = cval
        with nogil:
            status = mf_run_i32(&si[0, 0, 0], n, rows, cols, size_r, size_c, mode, ci,
                                &oi[0, 0, 0], num_threads, isa_id)
    elif stack.dtype == np.uint16:
        su = stack
        ou = out
        cu = cval
        with nogil:
            status = mf_run_u16(&su[0, 0, 0], n, rows, cols, size_r, size_c, mode, cu,
                                &ou[0, 0, 0], num_threads, isa_id)
    else:
        raise TypeError(f"stack: expected float32, float64, int32 or uint16, got {stack.dtype}")
    if status == -1:
        raise MemoryError("median filter: cannot allocate the per-thread row buffers")
    if status == -2:
        raise ValueError(f"isa: {isa!r} is not supported by this CPU")
    return out
