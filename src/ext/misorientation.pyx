# cython: language_level=3
"""Misorientation angles with crystal symmetry and reduction to the fundamental zone.

Quaternions are (w, x, y, z) unit quaternions; orientation q maps crystal to sample and crystal
symmetry acts on the right (q S). For a pair, p = conj(q1) q2 is computed once; the scalar part
of p S is a 4-term dot product, so each symmetry operator costs 4 multiply-adds.
Front end: :func:`xreduce.nf.crystal.misorientation_rad` and ``fundamental_zone``.
"""
import numpy as np
from cython.parallel cimport prange
from libc.math cimport acos, fabs, sqrt, NAN


def misorientation_angles(const double[:, ::1] q1, const double[:, ::1] q2,
                          const double[:, ::1] sym, int num_threads=0):
    """Angles (radians) min_S 2 acos|w(conj(q1) q2 S)| for n pairs (q1[i], q2[i]).

    Parameters
    ----------
    q1, q2 : float64 (n, 4), C-contiguous quaternions (normalised here; a zero one gives NaN)
    sym : float64 (m, 4) symmetry quaternions
    num_threads : int, 0 = OpenMP default

    Returns
    -------
    numpy.ndarray float64 (n,)
    """
    cdef Py_ssize_t n = q1.shape[0], m = sym.shape[0], i, k
    if q2.shape[0] != n or q1.shape[1] != 4 or q2.shape[1] != 4 or sym.shape[1] != 4:
        raise ValueError("q1, q2: expected two (n, 4) arrays of the same n; sym: (m, 4)")
    if m < 1:
        raise ValueError("sym: expected at least one symmetry quaternion")
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] res = out
    if num_threads == 0 and n * m < 20000:  # too little work for a thread team
        num_threads = 1
    cdef double a0, a1, a2, a3, b0, b1, b2, b3, p0, p1, p2, p3, w, best, norm2
    for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
        a0 = q1[i, 0]; a1 = -q1[i, 1]; a2 = -q1[i, 2]; a3 = -q1[i, 3]
        b0 = q2[i, 0]; b1 = q2[i, 1]; b2 = q2[i, 2]; b3 = q2[i, 3]
        p0 = a0 * b0 - a1 * b1 - a2 * b2 - a3 * b3
        p1 = a0 * b1 + a1 * b0 + a2 * b3 - a3 * b2
        p2 = a0 * b2 - a1 * b3 + a2 * b0 + a3 * b1
        p3 = a0 * b3 + a1 * b2 - a2 * b1 + a3 * b0
        best = 0.0
        for k in range(m):
            w = fabs(p0 * sym[k, 0] - p1 * sym[k, 1] - p2 * sym[k, 2] - p3 * sym[k, 3])
            best = w if w > best else best
        norm2 = (a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3) * (b0 * b0 + b1 * b1 + b2 * b2 + b3 * b3)
        if norm2 == 0.0:
            res[i] = NAN
            continue
        best = best / sqrt(norm2)
        if best > 1.0:
            best = 1.0
        res[i] = 2.0 * acos(best)
    return out


def reduce_to_fundamental_zone(const double[:, ::1] q, const double[:, ::1] sym,
                               int num_threads=0):
    """For each q, the equivalent q S with the largest |w|, sign flipped so that w >= 0."""
    cdef Py_ssize_t n = q.shape[0], m = sym.shape[0], i, k, kbest
    if q.shape[1] != 4 or sym.shape[1] != 4 or m < 1:
        raise ValueError("q: expected (n, 4); sym: expected (m, 4) with m >= 1")
    out = np.empty((n, 4), dtype=np.float64)
    cdef double[:, ::1] res = out
    if num_threads == 0 and n * m < 20000:
        num_threads = 1
    cdef double a0, a1, a2, a3, s0, s1, s2, s3, w, best, sign
    for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
        a0 = q[i, 0]; a1 = q[i, 1]; a2 = q[i, 2]; a3 = q[i, 3]
        best = -1.0
        kbest = 0
        for k in range(m):
            w = fabs(a0 * sym[k, 0] - a1 * sym[k, 1] - a2 * sym[k, 2] - a3 * sym[k, 3])
            if w > best:
                best = w
                kbest = k
        s0 = sym[kbest, 0]; s1 = sym[kbest, 1]; s2 = sym[kbest, 2]; s3 = sym[kbest, 3]
        w = a0 * s0 - a1 * s1 - a2 * s2 - a3 * s3
        sign = 1.0 if w >= 0 else -1.0
        res[i, 0] = sign * w
        res[i, 1] = sign * (a0 * s1 + a1 * s0 + a2 * s3 - a3 * s2)
        res[i, 2] = sign * (a0 * s2 - a1 * s3 + a2 * s0 + a3 * s1)
        res[i, 3] = sign * (a0 * s3 + a1 * s2 - a2 * s1 + a3 * s0)
    return out
