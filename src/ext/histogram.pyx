# cython: language_level=3
"""Integration without a matrix: histograms with per-thread private accumulators (Cython + OpenMP).

For one-off frames, where building a CSR matrix would cost more than it saves. Each pixel is
placed by its position in (radial, azimuthal) space, either by its centre (split "no") or by
spreading it uniformly over its bounding box (split "bbox"); the coefficient of a bin is the
fraction of the box inside it. Threads accumulate into private copies of the bins (no atomics),
which are merged at the end.

Pixels whose azimuthal box crosses the chi discontinuity are given with ``azi_hi > pi``; the
part of the box beyond pi is wrapped round to -pi.

The raw frames are read in their own dtype; invalid pixels are masked by the one rule of
raw_values.pxi (doc/integration.md, "What is masked"), as in :mod:`xreduce.ext.csr_integrate`.
The caller bounds the accumulators' memory by passing blocks of frames
(:mod:`xreduce.engines.histogram`); :func:`merge_threads` merges them in parallel. Accumulator fields (last axis of ``acc``): 0 signal, 1 variance,
2 norm, 3 norm^2, 4 count, and for the azimuthal error model 5 weight, 6 weighted mean,
7 weighted sum of squared deviations.
"""
from cython.parallel cimport prange, parallel, threadid
cimport cython
cimport numpy as cnp
from libc.math cimport floor, M_PI

cnp.import_array()

include "raw_values.pxi"


def histogram_frames(const raw_t[:, ::1] frames,
                     const double[::1] rad_lo, const double[::1] rad_hi,
                     const double[::1] azi_lo, const double[::1] azi_hi, bint use_azimuth,
                     bint split, double r0, double r1, int nr, double a0, double a1, int na,
                     const cnp.uint8_t[::1] skip, const double[::1] norm,
                     const cnp.float32_t[::1] dark, bint has_dark,
                     const cnp.float32_t[:, ::1] variance, int error_mode,
                     bint check_values, bint check_max, bint has_dummy,
                     const raw_t[::1] dummy_bounds, double[:, :, :, ::1] acc):
    """Accumulate a stack of frames into per-thread bins.

    Parameters
    ----------
    frames : (nframes, npix) raw frames, any integer or float dtype, C-contiguous.
    rad_lo, rad_hi : (npix,) radial extent of each pixel (equal to the centre for split "no").
    azi_lo, azi_hi, use_azimuth : (npix,) azimuthal extent in radians; ignored (and may be
        empty) when ``use_azimuth`` is false.
    split : spread each pixel over its bounding box (else the centre ``rad_lo``/``azi_lo``
        places it).
    r0, r1, nr, a0, a1, na : bin ranges and numbers (azimuth in radians, within [-pi, pi]).
    skip : (npix,) 1 for statically masked pixels.
    norm : (npix,) per-pixel normalisation.
    dark, has_dark, variance, error_mode, check_values, check_max, has_dummy, dummy_bounds :
        as in :func:`xreduce.ext.csr_integrate.integrate_frames`.
    acc : (nthreads, nframes, na*nr, nfields) zeroed accumulators, bin = i_azim*nr + i_rad;
        nfields is 8 for the azimuthal error model, 5 otherwise.
    """
    cdef Py_ssize_t npix = frames.shape[1]
    cdef Py_ssize_t nframes = frames.shape[0]
    cdef int nthreads = acc.shape[0]
    cdef bint shared_variance = variance.shape[0] == 1
    cdef double rscale = nr / (r1 - r0)
    cdef double ascale = na / (a1 - a0) if use_azimuth else 0.0
    cdef double rwidth = (r1 - r0) / nr
    cdef double awidth = (a1 - a0) / na if use_azimuth else 0.0
    cdef Py_ssize_t i, f, fv, bin_
    cdef int tid, ir, ir0, ir1, ia, ia0, ia1, k0, k1, shift
    cdef double plo, phi, qlo = 0.0, qhi = 0.0, lo, hi, fr, fa, c, s, x, w, n, delta, vv
    cdef double edge_lo, edge_hi, part
    cdef raw_t v, dummy_a, dummy_b
    cdef const cnp.float32_t* dark_ptr
    cdef const cnp.float32_t* var_ptr
    if npix != rad_lo.shape[0] or npix != rad_hi.shape[0] or npix != skip.shape[0] \
            or npix != norm.shape[0]:
        raise ValueError(f"frames: expected {rad_lo.shape[0]} pixels a frame (the engine's), "
                         f"got {npix}")
    if use_azimuth and (azi_lo.shape[0] != npix or azi_hi.shape[0] != npix):
        raise ValueError(f"azi_lo: expected {npix} values, got {azi_lo.shape[0]}")
    if has_dark and dark.shape[0] != npix:
        raise ValueError(f"dark: expected {npix} values (one per pixel), got {dark.shape[0]}")
    if error_mode == 2 and (variance.shape[1] != npix or variance.shape[0] not in (1, nframes)):
        raise ValueError(f"variance: expected shape (1 or {nframes}, {npix}), got "
                         f"({variance.shape[0]}, {variance.shape[1]})")
    if not 0 <= error_mode <= 3:
        raise ValueError(f"error_mode: expected 0, 1, 2 or 3, got {error_mode}")
    if nr <= 0 or na <= 0 or acc.shape[1] != nframes or acc.shape[2] != <Py_ssize_t> nr * na \
            or acc.shape[3] < (8 if error_mode == 3 else 5) or nthreads <= 0:
        raise ValueError(f"acc: expected shape (threads, {nframes}, {nr * na}, "
                         f"{8 if error_mode == 3 else 5})")
    if dummy_bounds.shape[0] != 2:
        raise ValueError(f"dummy_bounds: expected 2 values, got {dummy_bounds.shape[0]}")
    if npix == 0 or nframes == 0:
        return
    dummy_a = dummy_bounds[0]
    dummy_b = dummy_bounds[1]
    dark_ptr = &dark[0] if has_dark else NULL
    with nogil, parallel(num_threads=nthreads):
        tid = threadid()
        for i in prange(npix, schedule="static"):
            if skip[i]:
                continue
            n = norm[i]
            plo = rad_lo[i]
            phi = rad_hi[i] if split else plo
            if phi < r0 or plo > r1 or (phi == plo and plo >= r1):
                continue  # outside (bins are half-open: a point on the top edge is out)
            ir0 = <int> floor((plo - r0) * rscale) if plo > r0 else 0
            ir1 = <int> floor((phi - r0) * rscale) if phi < r1 else nr - 1
            if ir1 >= nr:
                ir1 = nr - 1
            if ir0 >= nr:
                ir0 = nr - 1
            ia0 = 0
            ia1 = 0
            if use_azimuth:
                # Azimuthal bins touched by the box and by its copy 2 pi lower (a box beyond
                # pi wraps round); both copies' fractions add up in a bin they share.
                qlo = azi_lo[i]
                qhi = azi_hi[i] if split else qlo
                ia0 = na
                ia1 = -1
                for shift in range(2 if (split and qhi > M_PI) else 1):
                    lo = qlo - 2.0 * M_PI * shift
                    hi = qhi - 2.0 * M_PI * shift
                    if hi < a0 or lo > a1 or (hi == lo and lo >= a1):
                        continue
                    k0 = <int> floor((lo - a0) * ascale) if lo > a0 else 0
                    k1 = <int> floor((hi - a0) * ascale) if hi < a1 else na - 1
                    if k1 >= na:
                        k1 = na - 1
                    if k0 >= na:
                        k0 = na - 1
                    if k0 < ia0:
                        ia0 = k0
                    if k1 > ia1:
                        ia1 = k1
            for ia in range(ia0, ia1 + 1):
                fa = 1.0
                if use_azimuth and split and qhi > qlo:
                    fa = 0.0
                    for shift in range(2 if qhi > M_PI else 1):
                        lo = qlo - 2.0 * M_PI * shift
                        hi = qhi - 2.0 * M_PI * shift
                        edge_lo = a0 + ia * awidth
                        edge_hi = a0 + (ia + 1) * awidth
                        part = min(hi, edge_hi) - max(lo, edge_lo)
                        if part > 0.0:
                            fa = fa + part / (qhi - qlo)
                    if fa <= 0.0:
                        continue
                for ir in range(ir0, ir1 + 1):
                    fr = 1.0
                    if split and phi > plo:
                        fr = (min(phi, r0 + (ir + 1) * rwidth) - max(plo, r0 + ir * rwidth)) / (phi - plo)
                        if fr <= 0.0:
                            continue
                    c = fr * fa
                    bin_ = ia * nr + ir
                    for f in range(nframes):
                        v = frames[f, i]
                        fv = 0 if shared_variance else f
                        var_ptr = &variance[fv, 0] if error_mode == 2 else NULL
                        if check_values and (
                                _invalid(v, check_max, has_dummy, dummy_a, dummy_b)
                                or _invalid_correction(dark_ptr, var_ptr, i)):
                            continue
                        s = <double> v
                        if has_dark:
                            s = s - dark[i]
                        acc[tid, f, bin_, 0] += c * s
                        if error_mode == 1:
                            vv = <double> v
                            if vv < 1.0:
                                vv = 1.0
                            acc[tid, f, bin_, 1] += c * c * vv
                        elif error_mode == 2:
                            acc[tid, f, bin_, 1] += c * c * variance[fv, i]
                        acc[tid, f, bin_, 2] += c * n
                        acc[tid, f, bin_, 3] += c * c * n * n
                        acc[tid, f, bin_, 4] += c
                        if error_mode == 3:
                            w = c * n
                            x = s / n
                            acc[tid, f, bin_, 5] += w
                            delta = x - acc[tid, f, bin_, 6]
                            acc[tid, f, bin_, 6] += delta * w / acc[tid, f, bin_, 5]
                            acc[tid, f, bin_, 7] += w * delta * (x - acc[tid, f, bin_, 6])


def merge_threads(double[:, :, :, ::1] acc, int error_mode):
    """Merge per-thread accumulators into thread 0; return nothing.

    Sums add; for the azimuthal model the weighted means and squared deviations are combined
    with Chan's parallel formula. Parallel over the (frame, bin) cells: each cell is merged by
    one thread, threads in order, so the result does not depend on the thread count used here.
    """
    cdef Py_ssize_t nthreads = acc.shape[0], nframes = acc.shape[1], nbins = acc.shape[2]
    cdef Py_ssize_t t, f, b, k, cell
    cdef double wa, wb, w, delta
    if acc.shape[3] < (8 if error_mode == 3 else 5):
        raise ValueError(f"acc: expected 8 fields (5 without the azimuthal model), got "
                         f"{acc.shape[3]}")
    with nogil:
        for cell in prange(nframes * nbins, schedule="static"):
            f = cell // nbins
            b = cell % nbins
            for t in range(1, nthreads):
                if error_mode == 3:
                    wa = acc[0, f, b, 5]
                    wb = acc[t, f, b, 5]
                    w = wa + wb
                    if wb > 0.0:
                        delta = acc[t, f, b, 6] - acc[0, f, b, 6]
                        acc[0, f, b, 6] += delta * wb / w
                        acc[0, f, b, 7] += acc[t, f, b, 7] + delta * delta * wa * wb / w
                        acc[0, f, b, 5] = w
                for k in range(5):
                    acc[0, f, b, k] += acc[t, f, b, k]
