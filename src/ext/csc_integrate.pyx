# cython: language_level=3
"""1D integration pixel by pixel (the ``csc`` method), Cython + OpenMP, from frames in memory
or straight from their bitshuffle-LZ4 chunks (each block decoded into the core's cache and
integrated there: the frame never goes to memory). Why and how: doc/integration.md, "The csc
method"; the window kernel is csc_window.h.

The matrix is held pixel-major: per pixel ``base`` (uint16, a multiple of 4), ``meta``
(uint8: the number of bins, at most 8, in the low 4 bits; the shift of the first bin from
``base`` in the high 4) and its coefficients in ``coef`` (float32, pixel order). The pixels
are cut into slices of ``SLICE`` pixels, each with its own sums, added in slice order at the
end: the sums do not depend on the number of threads, on how many frames a call holds, or on
whether the frames came decompressed or compressed (tested).

Invalid pixels follow the one rule of raw_values.pxi (doc/integration.md, "What is masked"),
as in csr_integrate.pyx: they add nothing, and their ``c * norm``, ``(c * norm)^2`` and ``c``
are taken from the frame-invariant sums; a bin whose entries are all invalid gets zeros.
Error models 0 (none), 1 (Poisson, ``max(raw, 1)``) and 2 (a variance array); the azimuthal
model needs the bin's mean first and is the csr method's.
"""
from cython.parallel cimport prange, parallel
cimport cython
cimport openmp
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import numpy as np

cnp.import_array()

include "raw_values.pxi"
include "frame_checks.pxi"

cdef extern from "csc_window.h" nogil:
    ctypedef struct xr_window:
        int64_t base
    void xr_window_reset(xr_window* w)
    void xr_window_flush(xr_window* w, int nf, int with_var, double* acc_sig,
                         double* acc_var, int64_t stride)
    void xr_csc_portable(const uint16_t* base, const uint8_t* meta, const float* coef,
                         int64_t* off, int64_t p0, int64_t n, int nf, const void* raw32,
                         int is_unsigned, const double* val, const double* wgt,
                         int64_t vstride, int with_var, xr_window* w, double* acc_sig,
                         double* acc_var, int64_t stride)
    void xr_csc_avx512(const uint16_t* base, const uint8_t* meta, const float* coef,
                       int64_t* off, int64_t p0, int64_t n, int nf, const void* raw32,
                       int is_unsigned, const double* val, const double* wgt,
                       int64_t vstride, int with_var, xr_window* w, double* acc_sig,
                       double* acc_var, int64_t stride)
    int xr_csc_has_avx512()

cdef extern from "bitshuffle_lz4_impl.h" nogil:
    int64_t xr_lz4_block(const uint8_t* src, int64_t n_src, uint8_t* dst, int64_t n_dst)
    void xr_bitunshuffle(const uint8_t* src, uint8_t* dst, int64_t n, int64_t size, int stream)

cdef enum:
    SLICE = 65536   # pixels a slice: a multiple of every default bitshuffle block (8192 bytes)
    GRAIN = 2048    # pixels converted at a time (the doubles of 4 frames stay in L1)
    FRAMES = 4      # frames sharing one pass over the coefficients (XR_CSC_FRAMES)

#: Pixels a slice (the unit of work and of the partial sums).
slice_pixels = SLICE

cdef bint _HAVE_AVX512 = xr_csc_has_avx512() != 0
cdef bint _use_simd = _HAVE_AVX512


def simd(enabled=None):
    """Whether the AVX-512 window kernel is used (on by default where the CPU has AVX-512F
    and VL); ``enabled`` switches it. Both paths give identical sums (tested).

    >>> from xreduce.ext import csc_integrate
    >>> csc_integrate.simd() in (True, False)
    True
    """
    global _use_simd
    if enabled is not None:
        _use_simd = bool(enabled) and _HAVE_AVX512
    return _use_simd


cdef struct Pass:
    const uint16_t* base
    const uint8_t* meta
    const float* coef
    const int64_t* slice_off
    const double* norm
    const float* dark
    const float* variance
    Py_ssize_t var_step      # 0: one variance for all frames, else npix
    Py_ssize_t npix
    Py_ssize_t nbins
    Py_ssize_t stride        # nbins + 8: one frame's accumulators in a slice
    Py_ssize_t nframes
    int error_mode
    bint check_values
    bint check_max
    bint has_dummy
    bint simd
    double* acc_sig          # (nslices, nframes, stride)
    double* acc_var
    double* bad              # (nslices, nframes, 4, nbins): sum c*norm, (c*norm)^2, c, entries
    uint8_t* bad_used        # (nslices, nframes): bad holds sums (zeroed on first use)


cdef struct Scratch:
    double* val              # FRAMES * GRAIN
    double* wgt
    uint8_t* bad
    xr_window* window


cdef inline Scratch _new_scratch() noexcept nogil:
    """A thread's scratch (assigned, not filled through a pointer, inside the parallel block:
    so Cython makes the variable private to each thread)."""
    cdef Scratch s
    s.val = <double*>malloc(FRAMES * GRAIN * sizeof(double))
    s.wgt = <double*>malloc(FRAMES * GRAIN * sizeof(double))
    s.bad = <uint8_t*>malloc(FRAMES * GRAIN)
    s.window = <xr_window*>malloc(sizeof(xr_window))
    return s


cdef inline bint _scratch_ok(Scratch* s) noexcept nogil:
    return s.val != NULL and s.wgt != NULL and s.bad != NULL and s.window != NULL


cdef inline void _free_scratch(Scratch* s) noexcept nogil:
    free(s.val)
    free(s.wgt)
    free(s.bad)
    free(s.window)


cdef inline void _bad_pixels(Pass* P, Py_ssize_t sl, Py_ssize_t frame, const uint8_t* bad,
                             Py_ssize_t p0, Py_ssize_t n, int64_t off) noexcept nogil:
    """Invalid pixels p0.. (bad[k]) of one frame: their c*norm, (c*norm)^2, c and entries
    into the slice's bad sums."""
    cdef Py_ssize_t k, j, b, p
    cdef int cnt, sh
    cdef double c, w
    cdef Py_ssize_t nb = P.nbins
    cdef double* sums = P.bad + (sl * P.nframes + frame) * 4 * nb
    cdef uint8_t* used = P.bad_used + sl * P.nframes + frame
    for k in range(n):
        p = p0 + k
        cnt = P.meta[p] & 15
        if cnt and bad[k]:
            if not used[0]:
                memset(sums, 0, 4 * nb * sizeof(double))
                used[0] = 1
            sh = P.meta[p] >> 4
            for j in range(cnt):
                c = <double>P.coef[off + j]
                b = P.base[p] + sh + j
                w = c * P.norm[p]
                sums[b] += w
                sums[nb + b] += w * w
                sums[2 * nb + b] += c
                sums[3 * nb + b] += 1.0
        off += cnt


cdef inline void _grain(Pass* P, const raw_t* raw, Py_ssize_t vstride, Py_ssize_t sl,
                        Py_ssize_t frame0, int nf, Py_ssize_t p0, Py_ssize_t n, int64_t* off,
                        Scratch* S, raw_t dummy_a, raw_t dummy_b) noexcept nogil:
    """Pixels p0 .. p0 + n - 1 (n <= GRAIN) of frames frame0 .. frame0 + nf - 1, whose raw
    values start at raw (frame f at raw + f * vstride), into the slice's windows."""
    cdef Py_ssize_t k, f, p, nbad = 0
    cdef raw_t r
    cdef double x
    cdef bint invalid
    cdef double* acc_sig = P.acc_sig + (sl * P.nframes + frame0) * P.stride
    cdef double* acc_var = P.acc_var + (sl * P.nframes + frame0) * P.stride
    cdef const float* var_f
    cdef int64_t start = off[0]
    cdef bint with_var = P.error_mode != 0
    if raw_t is cnp.int32_t or raw_t is cnp.uint32_t:
        if P.dark == NULL and P.error_mode < 2 and not P.has_dummy:
            # the common case: no conversion, the kernel reads the raw values, unless one is
            # invalid (found by this scan, which the compiler vectorises)
            if P.check_values:
                for f in range(nf):
                    for k in range(n):
                        nbad += _invalid(raw[f * vstride + k], P.check_max, False, dummy_a,
                                         dummy_b)
            if nbad == 0:
                if P.simd:
                    xr_csc_avx512(P.base, P.meta, P.coef, off, p0, n, nf, raw,
                                  raw_t is cnp.uint32_t, NULL, NULL, vstride, with_var,
                                  S.window, acc_sig, acc_var, P.stride)
                else:
                    xr_csc_portable(P.base, P.meta, P.coef, off, p0, n, nf, raw,
                                    raw_t is cnp.uint32_t, NULL, NULL, vstride, with_var,
                                    S.window, acc_sig, acc_var, P.stride)
                return
    for f in range(nf):  # values as doubles (invalid ones as zeros), the variance term too
        nbad = 0
        var_f = NULL
        if P.error_mode == 2:
            var_f = P.variance + (frame0 + f) * P.var_step
        for k in range(n):
            p = p0 + k
            r = raw[f * vstride + k]
            invalid = P.check_values and (
                _invalid(r, P.check_max, P.has_dummy, dummy_a, dummy_b)
                or _invalid_correction(P.dark, var_f, p))
            S.bad[f * GRAIN + k] = invalid
            if invalid:
                S.val[f * GRAIN + k] = 0.0
                S.wgt[f * GRAIN + k] = 0.0
                nbad += 1
                continue
            x = <double> r
            S.val[f * GRAIN + k] = x - P.dark[p] if P.dark != NULL else x
            if P.error_mode == 1:
                S.wgt[f * GRAIN + k] = x if x > 1.0 else 1.0
            elif P.error_mode == 2:
                S.wgt[f * GRAIN + k] = var_f[p]
        if nbad:
            _bad_pixels(P, sl, frame0 + f, S.bad + f * GRAIN, p0, n, start)
    if P.simd:
        xr_csc_avx512(P.base, P.meta, P.coef, off, p0, n, nf, NULL, 0, S.val, S.wgt, GRAIN,
                      with_var, S.window, acc_sig, acc_var, P.stride)
    else:
        xr_csc_portable(P.base, P.meta, P.coef, off, p0, n, nf, NULL, 0, S.val, S.wgt, GRAIN,
                        with_var, S.window, acc_sig, acc_var, P.stride)


cdef inline void _begin_slice(Pass* P, Py_ssize_t sl, Py_ssize_t frame0, int nf,
                              Scratch* S) noexcept nogil:
    memset(P.acc_sig + (sl * P.nframes + frame0) * P.stride, 0, nf * P.stride * sizeof(double))
    memset(P.acc_var + (sl * P.nframes + frame0) * P.stride, 0, nf * P.stride * sizeof(double))
    xr_window_reset(S.window)


cdef inline void _end_slice(Pass* P, Py_ssize_t sl, Py_ssize_t frame0, int nf,
                            Scratch* S) noexcept nogil:
    xr_window_flush(S.window, nf, P.error_mode != 0,
                    P.acc_sig + (sl * P.nframes + frame0) * P.stride,
                    P.acc_var + (sl * P.nframes + frame0) * P.stride, P.stride)


cdef void _combine(Pass* P, const double* static_norm, const double* static_norm2,
                   const double* static_count, const double* entries, double* out_signal,
                   double* out_variance, double* out_norm, double* out_norm2,
                   double* out_count, double* nbad) noexcept nogil:
    """The slices' sums added in slice order, the invalid pixels' normalisation taken off the
    frame-invariant sums (zeros where all a bin's entries are invalid), as csr_integrate.
    Frames on the threads; per frame the slices' rows added whole (``nbad``: a work array of
    (nframes, nbins)). Each bin's sums start at 0 and take the slices in order, so the result
    does not depend on the threads."""
    cdef Py_ssize_t nslices = (P.npix + SLICE - 1) // SLICE
    cdef Py_ssize_t f, b, s, nb = P.nbins
    cdef const double* sig
    cdef const double* var
    cdef const double* sums
    cdef double* o_sig
    cdef double* o_var
    cdef double* o_n
    cdef double* o_n2
    cdef double* o_c
    cdef double* o_bad
    cdef bint any_bad
    for f in prange(P.nframes, schedule="static"):
        o_sig = out_signal + f * nb
        o_var = out_variance + f * nb
        o_n = out_norm + f * nb
        o_n2 = out_norm2 + f * nb
        o_c = out_count + f * nb
        o_bad = nbad + f * nb
        memset(o_sig, 0, nb * sizeof(double))
        memset(o_var, 0, nb * sizeof(double))
        any_bad = False
        for s in range(nslices):
            sig = P.acc_sig + (s * P.nframes + f) * P.stride
            for b in range(nb):
                o_sig[b] = o_sig[b] + sig[b]
            if P.error_mode != 0:
                var = P.acc_var + (s * P.nframes + f) * P.stride
                for b in range(nb):
                    o_var[b] = o_var[b] + var[b]
            if P.bad_used[s * P.nframes + f]:
                if not any_bad:
                    any_bad = True
                    memset(o_n, 0, nb * sizeof(double))
                    memset(o_n2, 0, nb * sizeof(double))
                    memset(o_c, 0, nb * sizeof(double))
                    memset(o_bad, 0, nb * sizeof(double))
                sums = P.bad + (s * P.nframes + f) * 4 * nb
                for b in range(nb):
                    o_n[b] = o_n[b] + sums[b]
                    o_n2[b] = o_n2[b] + sums[nb + b]
                    o_c[b] = o_c[b] + sums[2 * nb + b]
                    o_bad[b] = o_bad[b] + sums[3 * nb + b]
        if not any_bad:
            memcpy(o_n, static_norm, nb * sizeof(double))
            memcpy(o_n2, static_norm2, nb * sizeof(double))
            memcpy(o_c, static_count, nb * sizeof(double))
            continue
        for b in range(nb):
            if o_bad[b] == 0.0:
                o_n[b] = static_norm[b]
                o_n2[b] = static_norm2[b]
                o_c[b] = static_count[b]
            elif o_bad[b] == entries[b]:
                o_n[b] = 0.0
                o_n2[b] = 0.0
                o_c[b] = 0.0
            else:
                o_n[b] = static_norm[b] - o_n[b]
                o_n2[b] = static_norm2[b] - o_n2[b]
                o_c[b] = static_count[b] - o_c[b]


cdef void _combine_into(Pass* P, const double[::1] static_norm,
                        const double[::1] static_norm2, const double[::1] static_count,
                        const double[::1] entries, double[:, ::1] out_signal,
                        double[:, ::1] out_variance, double[:, ::1] out_norm,
                        double[:, ::1] out_norm2, double[:, ::1] out_count):
    """:func:`_combine` into the outputs, with its work array, the GIL released."""
    cdef double[:, ::1] nbad = np.empty((P.nframes, P.nbins))
    with nogil:
        _combine(P, &static_norm[0], &static_norm2[0], &static_count[0], &entries[0],
                 &out_signal[0, 0], &out_variance[0, 0], &out_norm[0, 0], &out_norm2[0, 0],
                 &out_count[0, 0], &nbad[0, 0])


def _check_matrix(const uint16_t[::1] base, const uint8_t[::1] meta, const cnp.float32_t[::1] coef,
                  const int64_t[::1] slice_off, Py_ssize_t nbins):
    """O(1) consistency of the pixel-major matrix at a kernel entry (its contents were checked
    once, when the engine was made: xreduce.engines.cython_csc)."""
    cdef Py_ssize_t npix = base.shape[0]
    cdef Py_ssize_t nslices = (npix + SLICE - 1) // SLICE
    if meta.shape[0] != npix:
        raise ValueError(f"meta: expected {npix} values (one per pixel), got {meta.shape[0]}")
    if slice_off.shape[0] != nslices + 1 or slice_off[0] != 0 \
            or slice_off[nslices] != coef.shape[0]:
        raise ValueError(f"slice_off: expected {nslices + 1} offsets from 0 to the "
                         f"{coef.shape[0]} coefficients")
    if nbins < 1:
        raise ValueError(f"nbins: expected at least 1, got {nbins}")


def static_sums(const uint16_t[::1] base, const uint8_t[::1] meta,
                const cnp.float32_t[::1] coef, const int64_t[::1] slice_off,
                const double[::1] norm, Py_ssize_t nbins):
    """Per-bin ``sum c*norm``, ``sum (c*norm)^2`` and ``sum c`` (three float64 arrays), slice by
    slice then added in slice order."""
    _check_matrix(base, meta, coef, slice_off, nbins)
    cdef Py_ssize_t npix = base.shape[0]
    if norm.shape[0] != npix:
        raise ValueError(f"norm: expected {npix} values (one per pixel), got {norm.shape[0]}")
    cdef Py_ssize_t nslices = (npix + SLICE - 1) // SLICE
    parts = np.zeros((max(nslices, 1), 3, nbins + 8))
    cdef double[:, :, ::1] part = parts
    cdef Py_ssize_t s, p, j, b
    cdef int64_t o
    cdef int cnt
    cdef double c, w
    with nogil:
        for s in prange(nslices, schedule="dynamic"):
            o = slice_off[s]
            for p in range(s * SLICE, min(npix, (s + 1) * SLICE)):
                cnt = meta[p] & 15
                for j in range(cnt):
                    c = <double>coef[o + j]
                    b = base[p] + (meta[p] >> 4) + j
                    w = c * norm[p]
                    part[s, 0, b] += w
                    part[s, 1, b] += w * w
                    part[s, 2, b] += c
                o = o + cnt
    total = np.zeros((3, nbins))
    for s in range(nslices):  # slice order
        total += parts[s, :, :nbins]
    return total[0].copy(), total[1].copy(), total[2].copy()


cdef void _setup(Pass* P, const uint16_t[::1] base, const uint8_t[::1] meta,
                 const cnp.float32_t[::1] coef, const int64_t[::1] slice_off,
                 const double[::1] norm, const cnp.float32_t[::1] dark, bint has_dark,
                 const cnp.float32_t[:, ::1] variance, int error_mode, bint check_values,
                 bint check_max, bint has_dummy, Py_ssize_t nframes, Py_ssize_t nbins,
                 double[:, :, ::1] acc, double[:, :, :, ::1] bad,
                 uint8_t[:, ::1] bad_used):
    P.base = &base[0]
    P.meta = &meta[0]
    P.coef = &coef[0] if coef.shape[0] else NULL
    P.slice_off = &slice_off[0]
    P.norm = &norm[0]
    P.dark = &dark[0] if has_dark and dark.shape[0] else NULL
    P.variance = &variance[0, 0] if error_mode == 2 and variance.shape[1] else NULL
    P.var_step = 0 if variance.shape[0] == 1 else variance.shape[1]
    P.npix = base.shape[0]
    P.nbins = nbins
    P.stride = nbins + 8
    P.nframes = nframes
    P.error_mode = error_mode
    P.check_values = check_values
    P.check_max = check_max
    P.has_dummy = has_dummy
    P.simd = _use_simd
    P.acc_sig = &acc[0, 0, 0]
    P.acc_var = &acc[1, 0, 0]
    P.bad = &bad[0, 0, 0, 0]
    P.bad_used = &bad_used[0, 0]


def _check_call(Py_ssize_t npix, Py_ssize_t nframes, Py_ssize_t nbins, Py_ssize_t nnorm,
                Py_ssize_t nstatic, Py_ssize_t nstatic2, Py_ssize_t ncount, Py_ssize_t nentries,
                Py_ssize_t ndark, bint has_dark, Py_ssize_t var_rows, Py_ssize_t var_cols,
                int error_mode, Py_ssize_t nbounds, outputs):
    _check_frame_args(npix, nframes, nbins, nnorm,
                      (("static_norm", nstatic), ("static_norm2", nstatic2),
                       ("static_count", ncount), ("entries", nentries)), ndark, has_dark,
                      var_rows, var_cols, error_mode, 2,
                      "0, 1 or 2 (the csc method has no azimuthal error model)", nbounds,
                      outputs)


def _work_arrays(Py_ssize_t nframes, Py_ssize_t npix, Py_ssize_t nbins):
    nslices = max((npix + SLICE - 1) // SLICE, 1)
    return (np.empty((2, nslices * nframes, nbins + 8)),
            np.empty((nslices, nframes, 4, nbins)),
            np.zeros((nslices, nframes), np.uint8))


@cython.boundscheck(False)
@cython.wraparound(False)
def integrate_frames(const raw_t[:, ::1] frames, const uint16_t[::1] base,
                     const uint8_t[::1] meta, const cnp.float32_t[::1] coef,
                     const int64_t[::1] slice_off, const double[::1] norm,
                     const double[::1] static_norm, const double[::1] static_norm2,
                     const double[::1] static_count, const double[::1] entries,
                     const cnp.float32_t[::1] dark, bint has_dark,
                     const cnp.float32_t[:, ::1] variance, int error_mode,
                     bint check_values, bint check_max, bint has_dummy,
                     const raw_t[::1] dummy_bounds, double[:, ::1] out_signal,
                     double[:, ::1] out_variance, double[:, ::1] out_norm,
                     double[:, ::1] out_norm2, double[:, ::1] out_count):
    """The five per-bin sums of frames (nframes, npix) of any integer or float dtype, as
    csr_integrate.integrate_frames makes them (same arguments, the matrix pixel-major; the
    static sums from :func:`static_sums`; ``entries`` the number of entries of each bin)."""
    cdef Py_ssize_t nframes = frames.shape[0], npix = frames.shape[1]
    cdef Py_ssize_t nbins = static_norm.shape[0]
    _check_matrix(base, meta, coef, slice_off, nbins)
    if npix != base.shape[0]:
        raise ValueError(f"frames: expected {base.shape[0]} pixels a frame, got {npix}")
    _check_call(npix, nframes, nbins, norm.shape[0], static_norm.shape[0],
                static_norm2.shape[0], static_count.shape[0], entries.shape[0], dark.shape[0],
                has_dark, variance.shape[0], variance.shape[1], error_mode,
                dummy_bounds.shape[0],
                (out_signal, out_variance, out_norm, out_norm2, out_count))
    if nframes == 0 or npix == 0:
        return
    acc, bad, bad_used = _work_arrays(nframes, npix, nbins)
    cdef Pass P
    _setup(&P, base, meta, coef, slice_off, norm, dark, has_dark, variance, error_mode,
           check_values, check_max, has_dummy, nframes, nbins, acc, bad, bad_used)
    cdef raw_t dummy_a = dummy_bounds[0], dummy_b = dummy_bounds[1]
    cdef Py_ssize_t nslices = (npix + SLICE - 1) // SLICE
    cdef Py_ssize_t ngroups = (nframes + FRAMES - 1) // FRAMES
    cdef Py_ssize_t t, sl, f0, p0, p_end
    cdef int nf
    cdef int64_t off
    cdef Scratch S
    cdef bint ok
    nomem = np.zeros(1, np.int8)
    cdef cnp.int8_t[::1] nomem_v = nomem
    with nogil, parallel():
        S = _new_scratch()
        ok = _scratch_ok(&S)
        for t in prange(nslices * ngroups, schedule="dynamic"):
            if not ok:
                nomem_v[0] = 1
                continue
            sl = t // ngroups
            f0 = (t % ngroups) * FRAMES
            nf = <int>min(<Py_ssize_t>FRAMES, nframes - f0)
            _begin_slice(&P, sl, f0, nf, &S)
            off = slice_off[sl]
            p_end = min(npix, (sl + 1) * SLICE)
            p0 = sl * SLICE
            while p0 < p_end:
                _grain(&P, &frames[f0, p0], npix, sl, f0, nf, p0, min(<Py_ssize_t>GRAIN,
                       p_end - p0), &off, &S, dummy_a, dummy_b)
                p0 = p0 + GRAIN
            _end_slice(&P, sl, f0, nf, &S)
        _free_scratch(&S)
    if nomem[0]:
        raise MemoryError("csc_integrate: out of memory for a thread's scratch")
    _combine_into(&P, static_norm, static_norm2, static_count, entries, out_signal,
                  out_variance, out_norm, out_norm2, out_count)


include "big_endian.pxi"


@cython.boundscheck(False)
@cython.wraparound(False)
def integrate_chunks(chunks, const uint16_t[::1] base, const uint8_t[::1] meta,
                     const cnp.float32_t[::1] coef, const int64_t[::1] slice_off,
                     const double[::1] norm, const double[::1] static_norm,
                     const double[::1] static_norm2, const double[::1] static_count,
                     const double[::1] entries, const cnp.float32_t[::1] dark, bint has_dark,
                     const cnp.float32_t[:, ::1] variance, int error_mode, bint check_values,
                     bint check_max, bint has_dummy, const raw_t[::1] dummy_bounds,
                     double[:, ::1] out_signal, double[:, ::1] out_variance,
                     double[:, ::1] out_norm, double[:, ::1] out_norm2,
                     double[:, ::1] out_count):
    """:func:`integrate_frames` of frames given as their stored chunks, one frame each:
    ``chunks`` a list of ``(raw, stored, plan)`` with ``raw`` the chunk's bytes (uint8),
    ``stored`` True for a chunk whose filter was skipped (the frame's bytes as they are) and
    ``plan`` the ``bitshuffle_lz4.block_index`` of a compressed one; all with the same block
    size. Each block is decoded into the thread's cache and integrated there; the sums are
    identical to those of the decompressed frames (tested). The frames' dtype is that of
    ``dummy_bounds`` (32-bit integers). Returns the list of frames whose chunk did not
    decode (their sums are then meaningless)."""
    if not (raw_t is cnp.int32_t or raw_t is cnp.uint32_t):
        raise TypeError("integrate_chunks: expected 32-bit integer frames")
    cdef Py_ssize_t nframes = len(chunks), npix = base.shape[0]
    cdef Py_ssize_t nbins = static_norm.shape[0]
    _check_matrix(base, meta, coef, slice_off, nbins)
    _check_call(npix, nframes, nbins, norm.shape[0], static_norm.shape[0],
                static_norm2.shape[0], static_count.shape[0], entries.shape[0], dark.shape[0],
                has_dark, variance.shape[0], variance.shape[1], error_mode,
                dummy_bounds.shape[0],
                (out_signal, out_variance, out_norm, out_norm2, out_count))
    if nframes == 0 or npix == 0:
        return []
    cdef int64_t block = -1
    cdef int itemsize = sizeof(raw_t)
    keep = []  # the buffers, alive until the end
    srcs = np.zeros(nframes, np.uintp)
    ends = np.zeros(nframes, np.int64)
    stored = np.zeros(nframes, np.uint8)
    plans = []
    for f, (raw, is_stored, plan) in enumerate(chunks):
        arr = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
        keep.append(arr)
        srcs[f] = arr.ctypes.data
        ends[f] = arr.shape[0]
        if is_stored:
            if arr.shape[0] != npix * itemsize:
                raise ValueError(f"chunks: frame {f} stored raw holds {arr.shape[0]} bytes, "
                                 f"expected {npix * itemsize}")
            stored[f] = 1
            plans.append(None)
            continue
        if plan is None:
            raise ValueError(f"chunks: frame {f} has no block plan (block_index)")
        b, st, sz = plan
        if block >= 0 and b != block:
            raise ValueError("chunks: expected the same block size in every chunk")
        block = b
        st = np.asarray(st, np.int64)
        sz = np.asarray(sz, np.int64)
        if st.shape != sz.shape or (st.size and (st.min() < 12 or sz.min() < 0
                                                 or (st + sz).max() > arr.shape[0])) \
                or arr.shape[0] < (npix % 8) * itemsize:
            raise ValueError(f"chunks: the block plan of frame {f} does not fit its chunk")
        plans.append((st, sz))
    if block < 0:
        block = GRAIN
    if block <= 0 or block % 8 or SLICE % block:
        raise ValueError(f"chunks: expected a block size dividing {SLICE} pixels, got {block}")
    cdef Py_ssize_t nblk = npix // block + (1 if (npix % block) - (npix % block) % 8 > 0 else 0)
    starts = np.zeros((nframes, max(nblk, 1)), np.int64)
    sizes = np.zeros((nframes, max(nblk, 1)), np.int64)
    for f, plan in enumerate(plans):
        if plan is not None:
            if plan[0].shape[0] != nblk:
                raise ValueError(f"chunks: frame {f}: expected {nblk} blocks, got "
                                 f"{plan[0].shape[0]}")
            starts[f, :nblk] = plan[0]
            sizes[f, :nblk] = plan[1]
    cdef const int64_t[:, ::1] st_v = starts
    cdef const int64_t[:, ::1] sz_v = sizes
    cdef const uintptr_t[::1] src_v = srcs
    cdef const int64_t[::1] end_v = ends
    cdef const uint8_t[::1] stored_v = stored
    status = np.zeros(nframes, np.int8)
    cdef cnp.int8_t[::1] status_v = status

    acc, bad, bad_used = _work_arrays(nframes, npix, nbins)
    cdef Pass P
    _setup(&P, base, meta, coef, slice_off, norm, dark, has_dark, variance, error_mode,
           check_values, check_max, has_dummy, nframes, nbins, acc, bad, bad_used)
    cdef raw_t dummy_a = dummy_bounds[0], dummy_b = dummy_bounds[1]
    cdef Py_ssize_t nslices = (npix + SLICE - 1) // SLICE
    cdef Py_ssize_t ngroups = (nframes + FRAMES - 1) // FRAMES
    cdef Py_ssize_t t, sl, f0, fr, p0, p_end, bk, count, lo, n
    cdef Py_ssize_t full = npix // block
    cdef int nf, q
    cdef int64_t off, got
    cdef Scratch S
    cdef bint ok
    cdef uint8_t* lz
    cdef uint8_t* frames_buf
    cdef const uint8_t* src
    cdef int64_t bytes_block = block * itemsize
    nomem = np.zeros(1, np.int8)
    cdef cnp.int8_t[::1] nomem_v = nomem
    with nogil, parallel():
        S = _new_scratch()
        ok = _scratch_ok(&S)
        lz = <uint8_t*>malloc(bytes_block + 64)
        frames_buf = <uint8_t*>malloc(FRAMES * bytes_block + 64)
        ok = ok and lz != NULL and frames_buf != NULL
        for t in prange(nslices * ngroups, schedule="dynamic"):
            if not ok:
                nomem_v[0] = 1
                continue
            sl = t // ngroups
            f0 = (t % ngroups) * FRAMES
            nf = <int>min(<Py_ssize_t>FRAMES, nframes - f0)
            _begin_slice(&P, sl, f0, nf, &S)
            off = slice_off[sl]
            p_end = min(npix, (sl + 1) * SLICE)
            lo = sl * SLICE
            while lo < p_end:  # one block of every frame of the group, then its pixels
                bk = lo // block
                n = min(block, npix - lo)
                for q in range(nf):
                    fr = f0 + q
                    src = <const uint8_t*>src_v[fr]
                    if stored_v[fr]:
                        memcpy(frames_buf + q * bytes_block, src + lo * itemsize, n * itemsize)
                        continue
                    count = block if bk < full else (npix - lo) // 8 * 8
                    if count > 0:
                        got = xr_lz4_block(src + st_v[fr, bk], sz_v[fr, bk], lz,
                                           count * itemsize)
                        if got != count * itemsize:
                            status_v[fr] = -3
                            memset(frames_buf + q * bytes_block, 0, n * itemsize)
                            continue
                        xr_bitunshuffle(lz, frames_buf + q * bytes_block, count, itemsize, 0)
                    if count < n:  # the last values, stored raw at the chunk's end
                        memcpy(frames_buf + q * bytes_block + count * itemsize,
                               src + end_v[fr] - (n - count) * itemsize, (n - count) * itemsize)
                p0 = 0
                while p0 < n:
                    _grain(&P, <const raw_t*>(frames_buf) + p0, block, sl, f0, nf, lo + p0,
                           min(<Py_ssize_t>GRAIN, n - p0), &off, &S, dummy_a, dummy_b)
                    p0 = p0 + GRAIN
                lo = lo + block
            _end_slice(&P, sl, f0, nf, &S)
        _free_scratch(&S)
        free(lz)
        free(frames_buf)
    if nomem[0]:
        raise MemoryError("csc_integrate: out of memory for a thread's scratch")
    _combine_into(&P, static_norm, static_norm2, static_count, entries, out_signal,
                  out_variance, out_norm, out_norm2, out_count)
    return [int(f) for f in np.flatnonzero(status)]
