# cython: language_level=3
"""Dark/offset subtraction, scaling and float32 conversion of raw frames in one threaded pass.

The only caller is the DCT preprocessing (:mod:`xreduce.dct.preprocess`), which otherwise
needs three NumPy passes and temporaries for the same arithmetic.
"""
cimport openmp
from cython.parallel cimport prange
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t

ctypedef fused raw_t:
    uint8_t
    uint16_t
    int16_t
    int32_t
    uint32_t
    float
    double


def correct_frames(const raw_t[:, :, ::1] raw, const float[:, ::1] dark, float offset,
                   const float[::1] scale, float[:, :, ::1] out, Py_ssize_t row_start,
                   Py_ssize_t row_stop, int num_threads=0):
    """``out[f, r] = ((float32(raw[f, r]) - dark[r]) - offset) * scale[f]`` for the rows
    ``row_start <= r < row_stop``, each operation rounded to float32 as the same NumPy steps
    are.

    ``raw`` and ``out``: (frames, rows, cols), C-contiguous. ``dark``: (rows, cols), or an
    empty array for none; ``offset`` is applied only if non-zero; ``scale``: one factor per
    frame, or an empty array for none. ``num_threads``: OpenMP threads (0: all).
    """
    cdef Py_ssize_t n = raw.shape[0], rows = raw.shape[1], cols = raw.shape[2]
    cdef Py_ssize_t f, r, c, job, span = row_stop - row_start
    cdef bint has_dark = dark.shape[0] > 0, has_scale = scale.shape[0] > 0
    cdef bint has_offset = offset != 0
    cdef float v, s
    if out.shape[0] != n or out.shape[1] != rows or out.shape[2] != cols:
        raise ValueError("out must have the shape of raw")
    if has_dark and (dark.shape[0] != rows or dark.shape[1] != cols):
        raise ValueError("dark must have the shape of one frame")
    if has_scale and scale.shape[0] != n:
        raise ValueError("scale must have one factor per frame")
    if not 0 <= row_start <= row_stop <= rows:
        raise ValueError("rows outside the frames")
    if span == 0 or n == 0:
        return out
    if num_threads <= 0:
        num_threads = openmp.omp_get_max_threads()
    with nogil:
        for job in prange(n * span, num_threads=num_threads, schedule="static"):
            f = job // span
            r = row_start + job % span
            s = scale[f] if has_scale else 1.0
            for c in range(cols):
                v = <float>raw[f, r, c]
                if has_dark:
                    v = v - dark[r, c]
                if has_offset:
                    v = v - offset
                if has_scale:
                    v = v * s
                out[f, r, c] = v
    return out


def subtract_frames(const float[:, ::1] a, const float[:, ::1] b, float[:, ::1] out,
                    int num_threads=0):
    """``out = a - b`` in float32 (``out`` may be ``b``), frame by frame over OpenMP threads.

    ``a``, ``b`` and ``out``: (frames, pixels), C-contiguous, the same shape.
    """
    cdef Py_ssize_t n = a.shape[0], npix = a.shape[1], f, p
    if (b.shape[0] != n or b.shape[1] != npix or out.shape[0] != n
            or out.shape[1] != npix):
        raise ValueError("a, b and out must have the same shape")
    if num_threads <= 0:
        num_threads = openmp.omp_get_max_threads()
    with nogil:
        for f in prange(n, num_threads=num_threads, schedule="static"):
            for p in range(npix):
                out[f, p] = a[f, p] - b[f, p]
    return out
