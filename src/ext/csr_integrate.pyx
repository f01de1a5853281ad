# cython: language_level=3
"""Fused per-frame integration with a CSR matrix (bins x pixels), Cython + OpenMP.

Two kernels:

- :func:`static_sums` computes, once per engine and set of corrections, the frame-invariant
  per-bin sums ``sum c*norm``, ``sum (c*norm)^2`` and ``count = sum c``.
- :func:`integrate_frames` makes one pass over the matrix per call (``prange`` over chunks
  of rows holding equal numbers of entries, about 256k; inside a chunk the frames loop
  outside its rows, so that the chunk's matrix stays in cache for the whole stack and the
  pixels neighbouring rings share are gathered from cache; 32-bit integer frames go two at
  a time, sharing the matrix reads). It reads the raw frames in their own dtype (no
  conversion copy) and accumulates ``sum c*(raw - dark)`` and ``sum c^2*variance`` in float64,
  8 entries at a time in independent lanes, prefetching the frame pixels 128 entries ahead;
  32-bit integer frames use an AVX2 gather where the CPU has it (csr_gather.h, identical
  results).

Invalid pixels are masked per frame by the one rule of doc/integration.md ("What is masked"),
written in raw_values.pxi: NaN and +-inf in float frames, negative values in signed integer
frames, the largest value of an integer dtype when ``check_max`` (the detector's
``max_value_invalid``: Dectris marks dead or overflowing pixels so), the dummy (bounds in the
frame's own type) and a NaN or infinite dark or variance. They contribute to neither the
signal nor the normalisation. Every shape is checked in O(1) at entry (ValueError); the
matrix's indices were checked once when its engine was made. The common path stays fast: the kernel does not read
the per-pixel normalisation at all; only when it meets an invalid pixel does it read that
pixel's normalisation and subtract it from the cached frame-invariant sums. A bin whose
pixels are all invalid gets exact zeros (not a rounding residue).

Error models (``error_mode``): 0 none, 1 Poisson (``v = max(raw, 1)``), 2 a variance array,
3 azimuthal (the weighted spread of the corrected pixel values ``(raw - dark) / norm`` in the
bin, weights ``c * norm``, by West's single-pass weighted update; ``sum_variance`` is then
``spread^2 * sum (c*norm)^2`` so that ``sem`` and ``std`` keep their usual formulas).
"""
from cython.parallel cimport prange
cimport cython
cimport openmp
from libc.math cimport sqrt
cimport numpy as cnp

cnp.import_array()

cdef extern from "csr_gather.h" nogil:
    void XR_PREFETCH(const void* p) noexcept
    int xr_has_avx2() noexcept
    Py_ssize_t xr_row_i32_avx2(const cnp.int32_t* frame, const cnp.int32_t* indices,
                               const cnp.float32_t* coef, Py_ssize_t j, Py_ssize_t stop,
                               Py_ssize_t nnz, Py_ssize_t ahead, int is_signed, int poisson,
                               double* sig, double* var) noexcept
    Py_ssize_t xr_row2_i32_avx2(const cnp.int32_t* frame_a, const cnp.int32_t* frame_b,
                                const cnp.int32_t* indices, const cnp.float32_t* coef,
                                Py_ssize_t j, Py_ssize_t stop, Py_ssize_t nnz,
                                Py_ssize_t ahead, int is_signed, int poisson, double* sig_a,
                                double* var_a, double* sig_b, double* var_b) noexcept

# Entries ahead whose frame pixels are prefetched: the gathers from the frame are the cost of
# a CSR pass (the frame is read in no particular order), and their addresses are known from
# the indices long before they are needed. 128 measured best of 64/128/256 on the bench.
# Entries per chunk of rows: a chunk's indices and coefficients (2 MB) are read from memory
# once for all the frames of a call, and the frame pixels its rows gather (neighbouring rings
# share cache lines) are reused from the core's cache; 256k measured as good as 512k and 1M
# and better than 128k and below on a Pilatus 2M 1D matrix (benchmarks/bench_stack.py).
cdef enum:
    PREFETCH_AHEAD = 128
    LANES = 8
    CHUNK_ENTRIES = 262144

include "raw_values.pxi"
include "frame_checks.pxi"

cdef bint _HAVE_AVX2 = xr_has_avx2() != 0
cdef bint _use_simd = _HAVE_AVX2


def simd(enabled=None):
    """Whether the AVX2 gather path (32-bit integer frames) is used; ``enabled`` switches it
    (it is on by default where the CPU has AVX2). Both paths give identical results."""
    global _use_simd
    if enabled is not None:
        _use_simd = bool(enabled) and _HAVE_AVX2
    return _use_simd


def chunk_count(Py_ssize_t nnz, int threads):
    """How many chunks the rows are cut into for the parallel loops: about CHUNK_ENTRIES
    entries each, and at least 4 per thread so that the threads finish together."""
    return int(max(4 * max(threads, 1), nnz // CHUNK_ENTRIES))


def balanced_chunks(const cnp.int32_t[::1] indptr, int nchunks):
    """Bin boundaries (int32, length <= nchunks + 1) cutting the rows into chunks of about
    equal numbers of entries, for the parallel loop: rows hold very different numbers of
    pixels (1D rings grow with the radius)."""
    import numpy as np

    cdef Py_ssize_t nbins = indptr.shape[0] - 1
    nnz = indptr[nbins] if nbins >= 0 else 0
    targets = np.linspace(0, nnz, max(nchunks, 1) + 1)[1:-1]
    cuts = np.searchsorted(np.asarray(indptr), targets, side="left")
    return np.unique(np.concatenate([[0], cuts, [max(nbins, 0)]])).astype(np.int32)


def _check_csr(const cnp.int32_t[::1] indptr, Py_ssize_t nnz, Py_ssize_t ncoef, bint has_coef):
    """O(1) consistency of a CSR matrix at a kernel entry: indptr starts at 0 and ends at the
    number of entries, coefficients match the entries. The O(nnz) checks (indptr monotonic,
    indices within the frame) are made once, when the engine is built or loaded
    (:func:`xreduce.engines.cython_csr.validate_csr`)."""
    if indptr.shape[0] < 1:
        raise ValueError("indptr: expected at least one value (nbins + 1), got none")
    cdef Py_ssize_t nbins = indptr.shape[0] - 1
    if indptr[0] != 0 or indptr[nbins] != nnz:
        raise ValueError(f"indptr: expected to run from 0 to the {nnz} entries of indices, got "
                         f"{indptr[0]} .. {indptr[nbins]}")
    if has_coef and ncoef != nnz:
        raise ValueError(f"coef: expected {nnz} coefficients (one per entry), got {ncoef}")


def _check_chunks(const cnp.int32_t[::1] bounds, Py_ssize_t nbins):
    """The chunk boundaries of the parallel loop: increasing bins from 0 to nbins."""
    cdef Py_ssize_t k
    if bounds.shape[0] < 1 or bounds[0] != 0 or bounds[bounds.shape[0] - 1] != nbins:
        raise ValueError(f"chunks: expected bin boundaries from 0 to {nbins}")
    for k in range(bounds.shape[0] - 1):
        if bounds[k + 1] < bounds[k]:
            raise ValueError("chunks: expected non-decreasing bin boundaries")


def _check_kernel_shapes(Py_ssize_t nframes, Py_ssize_t npix, const cnp.int32_t[::1] indptr,
                         Py_ssize_t nnz, Py_ssize_t ncoef, bint has_coef, Py_ssize_t nnorm,
                         Py_ssize_t nstatic, Py_ssize_t nstatic2, Py_ssize_t ncount,
                         Py_ssize_t ndark, bint has_dark, Py_ssize_t var_rows,
                         Py_ssize_t var_cols, int error_mode, Py_ssize_t nbounds, outputs):
    """O(1) shape checks of :func:`integrate_frames`: a ValueError naming the argument,
    never an out-of-bounds read."""
    _check_csr(indptr, nnz, ncoef, has_coef)
    _check_frame_args(npix, nframes, indptr.shape[0] - 1, nnorm,
                      (("static_norm", nstatic), ("static_norm2", nstatic2),
                       ("static_count", ncount)), ndark, has_dark, var_rows, var_cols,
                      error_mode, 3, "0, 1, 2 or 3", nbounds, outputs)


cdef inline bint _add_block(const raw_t* frame, const cnp.int32_t* indices,
                            const cnp.float32_t* coef, const cnp.float32_t* dark,
                            const cnp.float32_t* variance, Py_ssize_t j, int m, bint use_coef,
                            bint use_dark, int error_mode, bint check_values, bint check_max,
                            bint has_dummy, raw_t dummy_a, raw_t dummy_b, double* s,
                            double* v) noexcept nogil:
    """Add entries j..j+m-1 (m <= LANES) to lanes 0..m-1 of s and v; False, adding nothing,
    if one of their values is invalid. Called with m = LANES for whole blocks, so that the
    compiler unrolls those."""
    cdef cnp.int32_t i[LANES]
    cdef raw_t r[LANES]
    cdef double c = 1.0, x
    cdef bint bad = False
    cdef int k
    for k in range(m):
        i[k] = indices[j + k]
        r[k] = frame[i[k]]
        if check_values:
            bad = bad | _invalid(r[k], check_max, has_dummy, dummy_a, dummy_b) | \
                _invalid_correction(dark if use_dark else NULL,
                                    variance if error_mode == 2 else NULL, i[k])
    if bad:
        return False
    for k in range(m):
        if use_coef:
            c = coef[j + k]
        x = <double> r[k]
        if use_dark:
            s[k] = s[k] + c * (x - dark[i[k]])
        else:
            s[k] = s[k] + c * x
        if error_mode == 1:
            v[k] = v[k] + c * c * (x if x > 1.0 else 1.0)
        elif error_mode == 2:
            v[k] = v[k] + c * c * variance[i[k]]
    return True


cdef inline Py_ssize_t _fast_row(const raw_t* frame, const cnp.int32_t* indices,
                                 const cnp.float32_t* coef, const cnp.float32_t* dark,
                                 const cnp.float32_t* variance, Py_ssize_t j, Py_ssize_t stop,
                                 Py_ssize_t nnz, bint use_coef, bint use_dark, int error_mode,
                                 bint check_values, bint check_max, bint has_dummy,
                                 raw_t dummy_a, raw_t dummy_b, bint simd, double* s,
                                 double* v) noexcept nogil:
    """Accumulate entries j..stop of a row into the lanes s[LANES], v[LANES] in blocks of 8,
    the last one maybe partial (entry j+k into lane k: independent chains); stop before the
    first block holding an invalid value. Returns the index of the first entry not consumed.

    32-bit integer frames go through the AVX2 gather of csr_gather.h first when ``simd``;
    it adds in the same lanes and order, so both paths give identical results (and so does
    the two-frame gather, whose lanes this call may continue). Called with literal
    ``use_coef``, ``use_dark`` and ``error_mode`` so that the C compiler specialises each
    call site (the branches fold away after inlining).
    """
    cdef int k
    cdef Py_ssize_t n
    if raw_t is cnp.uint32_t or raw_t is cnp.int32_t:
        if simd and not use_dark and error_mode < 2 and not has_dummy:
            j = xr_row_i32_avx2(<const cnp.int32_t*> frame, indices,
                                coef if use_coef else NULL, j, stop, nnz, PREFETCH_AHEAD,
                                raw_t is cnp.int32_t, error_mode == 1, s, v)
    while j + LANES <= stop:
        if j + PREFETCH_AHEAD + LANES <= nnz:
            for k in range(LANES):
                XR_PREFETCH(frame + indices[j + PREFETCH_AHEAD + k])
        if not _add_block(frame, indices, coef, dark, variance, j, LANES, use_coef, use_dark,
                          error_mode, check_values, check_max, has_dummy, dummy_a, dummy_b, s, v):
            break
        j = j + LANES
    n = stop - j
    if 0 < n < LANES:  # the last, partial block (unless an invalid value stopped us)
        if _add_block(frame, indices, coef, dark, variance, j, n, use_coef, use_dark,
                      error_mode, check_values, check_max, has_dummy, dummy_a, dummy_b, s, v):
            j = stop
    return j


cdef inline double _lane_sum(const double* s) noexcept nogil:
    """The lanes added pairwise, in one fixed order."""
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))


cdef inline void _finish_bin(double signal, double variance, double norm, double norm2,
                             double empty, bint with_errors, double* intensity,
                             double* sigma, double* std) noexcept nogil:
    """One bin's results from its sums, the formulas of doc/integration.md ("Formulas"):
    where ``norm > 0`` ``intensity = signal / norm``, ``sigma = sqrt(variance) / norm`` and
    ``std = sqrt(variance / norm2)`` (the last two only ``with_errors``), elsewhere
    ``empty``."""
    if norm > 0.0:
        intensity[0] = signal / norm
        if with_errors:
            sigma[0] = sqrt(variance) / norm
            std[0] = sqrt(variance / norm2)
    else:
        intensity[0] = empty
        if with_errors:
            sigma[0] = empty
            std[0] = empty


cdef inline void _frame_row(const raw_t* frame, const cnp.int32_t* indices,
                            const cnp.float32_t* coef, bint has_coef, const double* norm,
                            double static_norm, double static_norm2, double static_count,
                            const cnp.float32_t* dark, const cnp.float32_t* var_ptr,
                            int error_mode, bint check_values, bint check_max, bint has_dummy,
                            raw_t dummy_a, raw_t dummy_b, bint simd, Py_ssize_t start,
                            Py_ssize_t stop, Py_ssize_t j, Py_ssize_t nnz, double* s,
                            double* v, double* out_signal, double* out_variance,
                            double* out_norm, double* out_norm2, double* out_count,
                            double* finished, Py_ssize_t plane, double empty,
                            bint with_errors) noexcept nogil:
    """One frame, one row: entries start..j-1 are already in the lanes s, v (the two-frame
    gather); the fast path goes on from j, the exact loop does the rest (invalid values,
    the azimuthal model), and the row's five sums are written to ``out_*[0]``; unless
    ``finished`` is NULL, its intensity, sigma and std too (:func:`_finish_bin`), at
    ``finished[0]``, ``finished[plane]`` and ``finished[2 * plane]``."""
    cdef bint has_dark = dark != NULL
    cdef double c, x, w, sig, var, bad_n = 0.0, bad_n2 = 0.0, bad_c = 0.0
    cdef double wsum = 0.0, wsum_before, mean = 0.0, m2 = 0.0, delta, sn, sn2, val
    cdef Py_ssize_t nbad = 0
    cdef cnp.int32_t idx
    cdef raw_t r
    if error_mode != 3:
        # Fast path (no normalisation read), specialised per call site; it stops at the
        # first invalid value and the exact loop below does the rest.
        if not has_dark and not has_dummy and has_coef and error_mode == 1:
            j = _fast_row(frame, indices, coef, NULL, NULL, j, stop, nnz, True, False, 1,
                          check_values, check_max, False, dummy_a, dummy_b, simd, s, v)
        elif not has_dark and not has_dummy and has_coef and error_mode == 0:
            j = _fast_row(frame, indices, coef, NULL, NULL, j, stop, nnz, True, False, 0,
                          check_values, check_max, False, dummy_a, dummy_b, simd, s, v)
        elif not has_dark and not has_dummy and not has_coef and error_mode == 1:
            j = _fast_row(frame, indices, NULL, NULL, NULL, j, stop, nnz, False, False, 1,
                          check_values, check_max, False, dummy_a, dummy_b, simd, s, v)
        elif not has_dark and not has_dummy and not has_coef and error_mode == 0:
            j = _fast_row(frame, indices, NULL, NULL, NULL, j, stop, nnz, False, False, 0,
                          check_values, check_max, False, dummy_a, dummy_b, simd, s, v)
        else:
            j = _fast_row(frame, indices, coef if has_coef else NULL, dark, var_ptr, j, stop,
                          nnz, has_coef, has_dark, error_mode, check_values, check_max,
                          has_dummy, dummy_a, dummy_b, simd, s, v)
    sig = _lane_sum(s)
    var = _lane_sum(v)
    while j < stop:
        idx = indices[j]
        c = coef[j] if has_coef else 1.0
        r = frame[idx]
        j = j + 1
        if check_values and (_invalid(r, check_max, has_dummy, dummy_a, dummy_b)
                             or _invalid_correction(dark, var_ptr, idx)):
            w = c * norm[idx]
            bad_n = bad_n + w
            bad_n2 = bad_n2 + w * w
            bad_c = bad_c + c
            nbad = nbad + 1
            continue
        val = <double> r
        if has_dark:
            val = val - dark[idx]
        sig = sig + c * val
        if error_mode == 1:
            x = <double> r
            if x < 1.0:
                x = 1.0
            var = var + c * c * x
        elif error_mode == 2:
            var = var + c * c * var_ptr[idx]
        elif error_mode == 3:
            w = c * norm[idx]
            if w > 0.0:
                x = val / norm[idx]
                wsum_before = wsum
                wsum = wsum + w
                delta = x - mean
                mean = mean + delta * w / wsum
                # w delta^2 W_before / W: equal to West's w delta (x - mean) but never below
                # zero in rounding (a zero-spread bin stays >= 0).
                m2 = m2 + w * delta * delta * (wsum_before / wsum)
    if nbad == 0:
        sn = static_norm
        sn2 = static_norm2
        out_count[0] = static_count
    elif nbad == stop - start:
        sn = 0.0
        sn2 = 0.0
        out_count[0] = 0.0
    else:
        sn = static_norm - bad_n
        sn2 = static_norm2 - bad_n2
        out_count[0] = static_count - bad_c
    if error_mode == 3:
        sn = wsum
        if wsum > 0.0 and sn2 > 0.0:
            var = m2 / wsum * sn2
    out_signal[0] = sig
    out_variance[0] = var
    out_norm[0] = sn
    out_norm2[0] = sn2
    if finished != NULL:
        _finish_bin(sig, var, sn, sn2, empty, with_errors, finished, finished + plane,
                    finished + 2 * plane)


cdef inline void _rows_frames(const raw_t* frame_a, const raw_t* frame_b,
                              const cnp.int32_t* indices, const cnp.float32_t* coef,
                              bint has_coef, const double* norm, const cnp.int32_t* indptr,
                              const double* static_norm, const double* static_norm2,
                              const double* static_count, const cnp.float32_t* dark,
                              const cnp.float32_t* var_a, const cnp.float32_t* var_b,
                              int error_mode, bint check_values, bint check_max,
                              bint has_dummy, raw_t dummy_a, raw_t dummy_b, bint simd,
                              Py_ssize_t first, Py_ssize_t last, Py_ssize_t nnz,
                              Py_ssize_t nbins, double* sig_out, double* var_out,
                              double* norm_out, double* norm2_out, double* count_out,
                              double* finished, Py_ssize_t plane, double empty,
                              bint with_errors) noexcept nogil:
    """Rows ``first..last-1`` of one frame (``frame_b`` NULL) or of two frames that share
    the matrix reads (32-bit integer frames on the AVX2 path); ``*_out`` point at the
    frame's (or the first frame's) output row, the second frame's lies ``nbins`` further
    (``finished`` too, NULL when not finishing). One call per chunk: the per-row work
    below is inlined here, not a call per row (whose cost shows on 2D cakes of short
    rows)."""
    cdef double s[2][LANES]
    cdef double v[2][LANES]
    cdef int k, q, nq = 1 if frame_b == NULL else 2
    cdef Py_ssize_t b, j, o
    for b in range(first, last):
        for q in range(nq):
            for k in range(LANES):
                s[q][k] = 0.0
                v[q][k] = 0.0
        j = indptr[b]
        if raw_t is cnp.uint32_t or raw_t is cnp.int32_t:
            if nq == 2:
                j = xr_row2_i32_avx2(<const cnp.int32_t*> frame_a,
                                     <const cnp.int32_t*> frame_b, indices,
                                     coef if has_coef else NULL, j, indptr[b + 1], nnz,
                                     PREFETCH_AHEAD, raw_t is cnp.int32_t, error_mode == 1,
                                     s[0], v[0], s[1], v[1])
        for q in range(nq):
            o = b + q * nbins
            _frame_row(frame_b if q else frame_a, indices, coef, has_coef, norm,
                       static_norm[b], static_norm2[b], static_count[b], dark,
                       var_b if q else var_a, error_mode, check_values, check_max, has_dummy,
                       dummy_a, dummy_b, simd, indptr[b], indptr[b + 1], j, nnz, s[q], v[q],
                       sig_out + o, var_out + o, norm_out + o, norm2_out + o, count_out + o,
                       NULL if finished == NULL else finished + o, plane, empty, with_errors)


cdef inline void _static_row(const cnp.int32_t* indices, const cnp.float32_t* coef,
                             bint has_coef, const double* norm, Py_ssize_t start,
                             Py_ssize_t stop, Py_ssize_t nnz, double* sum_norm,
                             double* sum_norm2, double* count) noexcept nogil:
    """sum c*norm, sum (c*norm)^2 and sum c over the entries start..stop-1 of a row, in 4
    independent lanes (no single dependency chain), added pairwise at the end; the
    normalisation of the pixels PREFETCH_AHEAD entries on is prefetched, as in the frame pass."""
    cdef double sn[4]
    cdef double sn2[4]
    cdef double sc[4]
    cdef double c, w
    cdef Py_ssize_t j, k
    for k in range(4):
        sn[k] = 0.0
        sn2[k] = 0.0
        sc[k] = 0.0
    j = start
    while j + 4 <= stop:
        if j + PREFETCH_AHEAD + 4 <= nnz:
            for k in range(4):
                XR_PREFETCH(norm + indices[j + PREFETCH_AHEAD + k])
        for k in range(4):
            c = coef[j + k] if has_coef else 1.0
            w = c * norm[indices[j + k]]
            sn[k] += w
            sn2[k] += w * w
            sc[k] += c
        j += 4
    for k in range(stop - j):
        c = coef[j + k] if has_coef else 1.0
        w = c * norm[indices[j + k]]
        sn[k] += w
        sn2[k] += w * w
        sc[k] += c
    sum_norm[0] = (sn[0] + sn[1]) + (sn[2] + sn[3])
    sum_norm2[0] = (sn2[0] + sn2[1]) + (sn2[2] + sn2[3])
    count[0] = (sc[0] + sc[1]) + (sc[2] + sc[3])


def static_sums(const cnp.int32_t[::1] indptr, const cnp.int32_t[::1] indices,
                const cnp.float32_t[::1] coef, bint has_coef, const double[::1] norm,
                double[::1] sum_norm, double[::1] sum_norm2, double[::1] count, chunks=None):
    """Per-bin ``sum c*norm``, ``sum (c*norm)^2`` and ``sum c`` into the three output arrays.

    ``coef`` is ignored (every coefficient is 1) when ``has_coef`` is false. ``chunks``: bin
    boundaries from :func:`balanced_chunks` (default: :func:`chunk_count` chunks).
    """
    cdef Py_ssize_t nbins = indptr.shape[0] - 1
    cdef Py_ssize_t b, c, nchunks
    if chunks is None:
        chunks = balanced_chunks(indptr, chunk_count(indices.shape[0],
                                                     openmp.omp_get_max_threads()))
    cdef const cnp.int32_t[::1] bounds = chunks
    _check_csr(indptr, indices.shape[0], coef.shape[0], has_coef)
    for name, out in (("sum_norm", sum_norm), ("sum_norm2", sum_norm2), ("count", count)):
        if out.shape[0] != nbins:
            raise ValueError(f"{name}: expected {nbins} values (one per bin), got {out.shape[0]}")
    _check_chunks(bounds, nbins)
    nchunks = bounds.shape[0] - 1
    if nbins <= 0 or nchunks <= 0:
        return
    cdef const cnp.float32_t* coef_ptr = &coef[0] if has_coef and coef.shape[0] > 0 else NULL
    cdef const cnp.int32_t* index_ptr = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const double* norm_ptr = &norm[0] if norm.shape[0] > 0 else NULL
    with nogil:
        for c in prange(nchunks, schedule="dynamic"):
            for b in range(bounds[c], bounds[c + 1]):
                _static_row(index_ptr, coef_ptr, has_coef, norm_ptr, indptr[b],
                            indptr[b + 1], indices.shape[0], &sum_norm[b], &sum_norm2[b],
                            &count[b])


@cython.boundscheck(False)
@cython.wraparound(False)
def integrate_frames(const raw_t[:, ::1] frames,
                     const cnp.int32_t[::1] indptr, const cnp.int32_t[::1] indices,
                     const cnp.float32_t[::1] coef, bint has_coef,
                     const double[::1] norm,
                     const double[::1] static_norm, const double[::1] static_norm2,
                     const double[::1] static_count,
                     const cnp.float32_t[::1] dark, bint has_dark,
                     const cnp.float32_t[:, ::1] variance, int error_mode,
                     bint check_values, bint check_max, bint has_dummy,
                     const raw_t[::1] dummy_bounds, double[:, ::1] out_signal, double[:, ::1] out_variance,
                     double[:, ::1] out_norm, double[:, ::1] out_norm2,
                     double[:, ::1] out_count, chunks=None, double[:, :, ::1] finished=None,
                     double empty=0.0, bint with_errors=False):
    """One fused pass over the matrix for a stack of frames (see the module docstring).

    Parameters
    ----------
    frames : (nframes, npix) array of any integer or float dtype, C-contiguous.
    indptr, indices, coef, has_coef : the CSR matrix (``coef`` unused when ``has_coef`` is false).
    norm : (npix,) float64 per-pixel normalisation (read only for invalid pixels and the
        azimuthal model).
    static_norm, static_norm2, static_count : (nbins,) frame-invariant sums from
        :func:`static_sums`.
    dark, has_dark : (npix,) float32 dark current.
    variance : (1 or nframes, npix) float32 variance (``error_mode == 2``).
    error_mode : 0 none, 1 Poisson, 2 variance array, 3 azimuthal.
    check_values : look for invalid values (the rule of raw_values.pxi).
    check_max : the dtype's largest value is invalid (the detector's ``max_value_invalid``).
    has_dummy, dummy_bounds : the dummy to mask, as two values of the frame's dtype (see
        :class:`xreduce.engines.preprocess.PixelRule`).
    out_* : (nframes, nbins) float64 outputs.
    chunks : bin boundaries from :func:`balanced_chunks` (the units of work of the parallel
        loop, taken dynamically by the threads); default: :func:`chunk_count` chunks,
        computed here.
    finished, empty, with_errors : when ``finished`` (3, nframes, nbins) float64 is given,
        the intensity, sigma and std of :func:`finish` are written there in the same pass
        (each row as its sums are made: no second pass, no second parallel region).
    """
    cdef Py_ssize_t nbins = indptr.shape[0] - 1
    cdef Py_ssize_t nframes = frames.shape[0]
    cdef double* fin = NULL
    cdef bint shared_variance = variance.shape[0] == 1
    cdef Py_ssize_t b, f, step, nnz = indices.shape[0]
    cdef const cnp.int32_t* indices_ptr = &indices[0] if indices.shape[0] > 0 else NULL
    cdef const cnp.float32_t* coef_ptr = &coef[0] if has_coef and coef.shape[0] > 0 else NULL
    cdef const raw_t* frame_b
    cdef const cnp.float32_t* var_a
    cdef const cnp.float32_t* var_b
    cdef raw_t dummy_a, dummy_b
    _check_kernel_shapes(frames.shape[0], frames.shape[1], indptr, indices.shape[0],
                         coef.shape[0], has_coef, norm.shape[0], static_norm.shape[0],
                         static_norm2.shape[0], static_count.shape[0], dark.shape[0], has_dark,
                         variance.shape[0], variance.shape[1], error_mode,
                         dummy_bounds.shape[0], (out_signal, out_variance, out_norm, out_norm2,
                                                 out_count))
    if finished is not None and (finished.shape[0] != 3 or finished.shape[1] != nframes
                                 or finished.shape[2] != nbins):
        raise ValueError(f"finished: expected shape (3, {nframes}, {nbins}), got "
                         f"({finished.shape[0]}, {finished.shape[1]}, {finished.shape[2]})")
    cdef const cnp.float32_t* dark_ptr = &dark[0] if has_dark and dark.shape[0] > 0 else NULL
    if frames.shape[1] == 0 or nframes == 0 or nbins == 0:
        return
    dummy_a = dummy_bounds[0]
    dummy_b = dummy_bounds[1]
    if finished is not None:
        fin = &finished[0, 0, 0]
    if chunks is None:
        chunks = balanced_chunks(indptr, chunk_count(nnz, openmp.omp_get_max_threads()))
    cdef const cnp.int32_t[::1] bounds = chunks
    _check_chunks(bounds, nbins)
    cdef Py_ssize_t ch, nchunks = bounds.shape[0] - 1
    cdef bint simd = _use_simd
    # Two frames share each matrix read where the AVX2 gather takes both (32-bit integer
    # frames, no dark, dummy or variance array), with the same sums as one at a time.
    cdef bint pairs = simd and (raw_t is cnp.int32_t or raw_t is cnp.uint32_t) \
        and not has_dark and not has_dummy and error_mode < 2
    with nogil:
        # Frames outside, rows inside a chunk: the chunk's matrix rows (~256k entries) stay
        # in the core's cache for all the frames, and the pixels a row gathers are still
        # cached when the next rows (neighbouring rings) gather them again.
        for ch in prange(nchunks, schedule="dynamic"):
            f = 0
            while f < nframes:
                step = 2 if pairs and f + 1 < nframes else 1
                frame_b = &frames[f + 1, 0] if step == 2 else NULL
                var_a = NULL
                var_b = NULL
                if error_mode == 2:
                    var_a = &variance[0 if shared_variance else f, 0]
                    var_b = &variance[0 if shared_variance else f + step - 1, 0]
                _rows_frames(&frames[f, 0], frame_b, indices_ptr, coef_ptr, has_coef, &norm[0],
                             &indptr[0], &static_norm[0], &static_norm2[0], &static_count[0],
                             dark_ptr, var_a, var_b, error_mode, check_values, check_max,
                             has_dummy, dummy_a, dummy_b, simd, bounds[ch], bounds[ch + 1],
                             nnz, nbins, &out_signal[f, 0], &out_variance[f, 0],
                             &out_norm[f, 0], &out_norm2[f, 0], &out_count[f, 0],
                             NULL if fin == NULL else fin + f * nbins, nframes * nbins, empty,
                             with_errors)
                f = f + step


def finish(const double[::1] signal, const double[::1] variance, const double[::1] norm,
           const double[::1] norm2, double empty, bint with_errors, double[::1] intensity,
           double[::1] sigma, double[::1] std):
    """Intensities and uncertainties from per-bin sums, one pass (all arrays flattened).

    Where ``norm > 0``: ``intensity = signal / norm``, and when ``with_errors``
    ``sigma = sqrt(variance) / norm`` and ``std = sqrt(variance / norm2)`` (``sigma`` and
    ``std`` may be empty arrays otherwise); elsewhere ``empty``. Equal, operation for
    operation, to the NumPy formulas of doc/integration.md ("Formulas").
    """
    cdef Py_ssize_t i, n = signal.shape[0]
    cdef int threads = 1 if n < 65536 else openmp.omp_get_max_threads()  # 2D cakes: threads
    with nogil:
        for i in prange(n, schedule="static", num_threads=threads):
            _finish_bin(signal[i], variance[i], norm[i], norm2[i], empty, with_errors,
                        &intensity[i], &sigma[i] if with_errors else NULL,
                        &std[i] if with_errors else NULL)
