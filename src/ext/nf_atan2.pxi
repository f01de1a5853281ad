# The NF kernels' atan2 (included by nf_spots.pyx and nf_overlap.pyx: one definition, the
# same bits in both). Needs `from libc.math cimport atan, fabs, M_PI` in the including module.

# atan(k / 8), k = 0..8
cdef double ATAN_TABLE[9]
for _k in range(9):
    ATAN_TABLE[_k] = atan(_k / 8.0)


cdef inline double _atan2(double y, double x) noexcept nogil:
    """atan2 to about 1 ulp, several times faster than glibc's correctly rounded one:
    reduce to t = min/max in [0, 1], then atan(t) = atan(c) + atan((t - c) / (1 + t c)) with
    c = k/8 the nearest table point (|u| <= 1/16) and the Taylor series to u^13 (error below
    1e-19)."""
    cdef double ax = fabs(x), ay = fabs(y), t, c, u, u2, r
    cdef bint swap = ay > ax
    cdef int k
    if ax == 0.0 and ay == 0.0:
        return 0.0
    t = ax / ay if swap else ay / ax
    k = <int>(t * 8.0 + 0.5)
    c = k * 0.125
    u = (t - c) / (1.0 + t * c)
    u2 = u * u
    r = ATAN_TABLE[k] + u * (1.0 - u2 * (1.0 / 3 - u2 * (1.0 / 5 - u2 * (1.0 / 7 - u2 * (
        1.0 / 9 - u2 * (1.0 / 11 - u2 * (1.0 / 13)))))))
    if swap:
        r = 0.5 * M_PI - r
    if x < 0.0:
        r = M_PI - r
    if y < 0.0:
        r = -r
    return r
