# cython: language_level=3
"""Per-ring sigma clipping and weighted percentiles over the rows of a CSR matrix
(Cython + OpenMP).

The statistic of doc/integration.md ("sigma_clip and medfilt1d") on the entries of each row
(a ring) and frame, independently, in parallel over (frame, row): weighted mean ``m = sum s /
sum n`` and spread ``s2 = sum n (x - m)^2 / sum n`` of the kept values ``x = s / n`` (weights
``n``); entries with ``|x - m| > thres * sqrt(s2)`` are rejected, until nothing changes or
after ``max_iter`` passes. Every sum runs over the row in entry order, one addition after the
other, with the same operations as the NumPy statement in ``tests/reference.py``
(``sigma_clip_rings_reference``), so the two agree bit for bit.

:func:`medfilt_rows` sorts each ring's valid entries by ``x`` (ties in entry order) and keeps
those whose share of the ring's weight has its centre in [lo, hi] (fractions), or the first
entry whose share holds the middle when none does (``weighted_percentile_rings_reference``).
"""
from cython.parallel cimport prange
cimport numpy as cnp
from libc.math cimport sqrt, fabs, isnan, isinf
from libc.float cimport DBL_MAX
from libc.stdlib cimport qsort

cnp.import_array()


cdef inline double _finite_or(double v) noexcept nogil:
    """numpy.nan_to_num of one value: NaN -> 0, +-inf -> +-DBL_MAX."""
    if isnan(v):
        return 0.0
    if isinf(v):
        return DBL_MAX if v > 0 else -DBL_MAX
    return v


def _check_rows(const double[:, ::1] signal, const cnp.uint8_t[:, ::1] valid,
                const double[::1] norm, const cnp.int32_t[::1] indptr,
                double[:, :, ::1] out):
    """The shapes both kernels share: entries of every frame, rows from 0 to nnz, outputs."""
    cdef Py_ssize_t nframes = signal.shape[0], nnz = signal.shape[1]
    cdef Py_ssize_t nbins = indptr.shape[0] - 1, b
    if valid.shape[0] != nframes or valid.shape[1] != nnz or norm.shape[0] != nnz:
        raise ValueError(f"valid, norm: expected ({nframes}, {nnz}) and ({nnz},) entries, got "
                         f"({valid.shape[0]}, {valid.shape[1]}) and ({norm.shape[0]},)")
    if nbins < 0 or indptr[0] != 0 or indptr[nbins] != nnz:
        raise ValueError(f"indptr: expected to run from 0 to the {nnz} entries")
    for b in range(nbins):
        if indptr[b + 1] < indptr[b]:
            raise ValueError("indptr: expected non-decreasing values")
    if out.shape[0] != 5 or out.shape[1] != nframes or out.shape[2] != nbins:
        raise ValueError(f"out: expected shape (5, {nframes}, {nbins})")


cdef void _clip_row(const double* s, const cnp.uint8_t* valid, const double* n,
                    Py_ssize_t count, double thres, int max_iter, unsigned char* keep,
                    double* out, Py_ssize_t stride) noexcept nogil:
    """Clip one row; out[q * stride] for q = 0..4: sum s, sum n, sum n^2, kept entries,
    spread^2 * sum n^2."""
    cdef Py_ssize_t j
    cdef int iteration
    cdef bint rejected
    cdef double sn = 0.0, sn2 = 0.0, ss, mean = 0.0, spread2 = 0.0, x, d, kept
    for j in range(count):
        keep[j] = valid[j] != 0
    for iteration in range(max_iter + 1):
        sn = 0.0
        sn2 = 0.0
        ss = 0.0
        for j in range(count):
            sn = sn + n[j] * keep[j]
            sn2 = sn2 + n[j] * n[j] * keep[j]
            ss = ss + s[j] * keep[j]
        mean = ss / sn
        spread2 = 0.0
        for j in range(count):
            x = s[j] / n[j]
            d = x - mean
            spread2 = spread2 + n[j] * (d * d) * keep[j]
        spread2 = spread2 / sn
        if iteration == max_iter:
            break
        rejected = False
        for j in range(count):
            if keep[j] and fabs(s[j] / n[j] - mean) > thres * sqrt(spread2):
                keep[j] = 0
                rejected = True
        if not rejected:
            break
    ss = 0.0
    kept = 0.0
    for j in range(count):
        ss = ss + s[j] * keep[j]
        kept = kept + <double> keep[j]
    out[0] = ss
    out[stride] = sn
    out[2 * stride] = sn2
    out[3 * stride] = kept
    out[4 * stride] = _finite_or(spread2 * sn2)


def sigma_clip_rows(const double[:, ::1] signal, const cnp.uint8_t[:, ::1] valid,
                    const double[::1] norm, const cnp.int32_t[::1] indptr, double thres,
                    int max_iter, cnp.uint8_t[:, ::1] keep, double[:, :, ::1] out):
    """Sigma-clip every row of every frame.

    Parameters
    ----------
    signal : (nframes, nnz) dark-corrected values of the matrix entries (0 where invalid).
    valid : (nframes, nnz) 1 where the entry's value is valid.
    norm : (nnz,) normalisation of each entry's pixel (> 0).
    indptr : (nbins + 1,) row boundaries of the entries.
    thres, max_iter : rejection threshold (in spreads) and most rejection passes.
    keep : (nframes, nnz) scratch, whether each entry is kept (each row uses its own part).
    out : (5, nframes, nbins) sum signal, sum norm, sum norm^2, kept entries and
        spread^2 * sum norm^2 of the kept entries.
    """
    cdef Py_ssize_t nframes = signal.shape[0], nnz = signal.shape[1]
    cdef Py_ssize_t nbins = indptr.shape[0] - 1
    _check_rows(signal, valid, norm, indptr, out)
    if keep.shape[0] != nframes or keep.shape[1] != nnz:
        raise ValueError(f"keep: expected shape ({nframes}, {nnz})")
    if max_iter < 0:
        raise ValueError(f"max_iter: expected >= 0, got {max_iter}")
    if nframes > 0 and nbins > 0 and nnz > 0:
        _each_row(_CLIP, signal, valid, norm, indptr, thres, 0.0, max_iter, &keep[0, 0],
                  NULL, out)
    elif nframes > 0 and nbins > 0:
        out[...] = 0.0


cdef struct _Entry:
    double x  # the corrected value
    double j  # the entry's position in its row (exact as a double), for stable ties


cdef int _by_value(const void* a, const void* b) noexcept nogil:
    cdef const _Entry* ea = <const _Entry*> a
    cdef const _Entry* eb = <const _Entry*> b
    if ea.x < eb.x:
        return -1
    if ea.x > eb.x:
        return 1
    return (ea.j > eb.j) - (ea.j < eb.j)


cdef void _percentile_row(const double* s, const cnp.uint8_t* valid, const double* n,
                          Py_ssize_t count, double lo, double hi, _Entry* entries,
                          double* out, Py_ssize_t stride) noexcept nogil:
    """Weighted percentile / trimmed mean of one row; out[q * stride] for q = 0..4: sum s,
    sum n, sum n^2, kept entries and 0 of the kept entries."""
    cdef Py_ssize_t k, m = 0, i, picked = -1
    cdef double total = 0.0, cum = 0.0, upper, lower, w, mid = 0.5 * (lo + hi)
    cdef double ss = 0.0, sn = 0.0, sn2 = 0.0, kept = 0.0
    cdef bint any_kept = False
    for k in range(count):
        if valid[k]:
            entries[m].x = s[k] / n[k]
            entries[m].j = <double> k
            m = m + 1
    qsort(entries, m, sizeof(_Entry), _by_value)
    for k in range(m):
        total = total + n[<Py_ssize_t> entries[k].j]
    for k in range(m):
        i = <Py_ssize_t> entries[k].j
        w = n[i]
        cum = cum + w
        upper = cum / total
        lower = upper - w / total
        if lo <= 0.5 * (upper + lower) <= hi:
            any_kept = True
            ss = ss + s[i]
            sn = sn + w
            sn2 = sn2 + w * w
            kept = kept + 1.0
        elif picked < 0 and lower <= mid <= upper:
            picked = i
    if not any_kept and picked >= 0:
        ss = s[picked]
        sn = n[picked]
        sn2 = n[picked] * n[picked]
        kept = 1.0
    out[0] = ss
    out[stride] = sn
    out[2 * stride] = sn2
    out[3 * stride] = kept
    out[4 * stride] = 0.0


def medfilt_rows(const double[:, ::1] signal, const cnp.uint8_t[:, ::1] valid,
                 const double[::1] norm, const cnp.int32_t[::1] indptr, double lo, double hi,
                 double[:, :, ::1] scratch, double[:, :, ::1] out):
    """Weighted percentile (``lo == hi``) or trimmed mean between two percentiles of every
    row of every frame; ``lo``, ``hi`` are fractions in [0, 1].

    Parameters as in :func:`sigma_clip_rows`; ``scratch`` is (nframes, nnz, 2) float64
    (each row sorts its own part).
    """
    cdef Py_ssize_t nframes = signal.shape[0], nnz = signal.shape[1]
    cdef Py_ssize_t nbins = indptr.shape[0] - 1
    _check_rows(signal, valid, norm, indptr, out)
    if scratch.shape[0] != nframes or scratch.shape[1] != nnz or scratch.shape[2] != 2:
        raise ValueError(f"scratch: expected shape ({nframes}, {nnz}, 2)")
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"lo, hi: expected 0 <= lo <= hi <= 1, got {lo}, {hi}")
    if nframes > 0 and nbins > 0 and nnz > 0:
        _each_row(_PERCENTILE, signal, valid, norm, indptr, lo, hi, 0, NULL, &scratch[0, 0, 0],
                  out)
    elif nframes > 0 and nbins > 0:
        out[...] = 0.0


cdef enum:
    _CLIP = 0
    _PERCENTILE = 1


cdef void _each_row(int kind, const double[:, ::1] signal, const cnp.uint8_t[:, ::1] valid,
                    const double[::1] norm, const cnp.int32_t[::1] indptr, double a, double b_,
                    int max_iter, cnp.uint8_t* keep, double* scratch,
                    double[:, :, ::1] out) noexcept:
    """Every (frame, row) cell in parallel: sigma clipping (``a`` = thres) or percentiles
    (``a``, ``b_`` = lo, hi); ``keep`` (nframes x nnz) or ``scratch`` (nframes x nnz x 2)
    gives each row its own part."""
    cdef Py_ssize_t nframes = signal.shape[0], nnz = signal.shape[1]
    cdef Py_ssize_t nbins = indptr.shape[0] - 1, cell, f, b, start, stop
    cdef Py_ssize_t stride = nframes * nbins
    with nogil:
        for cell in prange(nframes * nbins, schedule="dynamic"):
            f = cell // nbins
            b = cell % nbins
            start = indptr[b]
            stop = indptr[b + 1]
            if kind == _CLIP:
                _clip_row(&signal[f, 0] + start, &valid[f, 0] + start, &norm[0] + start,
                          stop - start, a, max_iter, keep + f * nnz + start, &out[0, f, b],
                          stride)
            else:
                _percentile_row(&signal[f, 0] + start, &valid[f, 0] + start, &norm[0] + start,
                                stop - start, a, b_,
                                <_Entry*> (scratch + 2 * (f * nnz + start)), &out[0, f, b],
                                stride)
