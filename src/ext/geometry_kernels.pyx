# cython: language_level=3
"""Per-pixel geometry kernels: (radial, chi) at pixel centres or corners, and cos(incidence)^n.

The only caller is :mod:`xreduce.geometry`. Positions are given relative to the PONI in the
detector plane (``d1`` along the slow axis, ``d2`` along the fast axis, metres) and ``L``
along the detector normal; the rotation is the PONI one (rot1 first, then rot2, then rot3):

    t1 = d1*c2*c3 + d2*(c3*s1*s2 - c1*s3) - L*(c1*c3*s2 + s1*s3)
    t2 = d1*c2*s3 + d2*(c1*c3 + s1*s2*s3) - L*(c1*s2*s3 - c3*s1)
    t3 = d1*s2    - d2*c2*s1              + L*c1*c2

Radial quantity codes: 0 = 2theta (rad), 1 = q (nm^-1), 2 = r (m), 3 = d*^2 (nm^-2); each is
multiplied by ``scale`` before it is stored. chi = atan2(t1, t2) in radians.
All arithmetic is float64; outputs are float32 or float64.
"""
from cython.parallel cimport prange
from libc.math cimport atan2, cos, sin, sqrt, pow, M_PI

ctypedef fused real_out:
    float
    double

cdef struct Rotation:
    double a11, a12, a13, a21, a22, a23, a31, a32, a33


cdef Rotation _rotation(double rot1, double rot2, double rot3):
    cdef double c1 = cos(rot1), s1 = sin(rot1)
    cdef double c2 = cos(rot2), s2 = sin(rot2)
    cdef double c3 = cos(rot3), s3 = sin(rot3)
    cdef Rotation r
    r.a11 = c2 * c3
    r.a12 = c3 * s1 * s2 - c1 * s3
    r.a13 = -(c1 * c3 * s2 + s1 * s3)
    r.a21 = c2 * s3
    r.a22 = c1 * c3 + s1 * s2 * s3
    r.a23 = -(c1 * s2 * s3 - c3 * s1)
    r.a31 = s2
    r.a32 = -c2 * s1
    r.a33 = c1 * c2
    return r


cdef inline double _radial(double t1, double t2, double t3, int quantity,
                           double qfactor) noexcept nogil:
    """Radial quantity (unscaled) from the lab vector t."""
    cdef double rho2 = t1 * t1 + t2 * t2
    cdef double rho = sqrt(rho2)
    cdef double norm, s
    if quantity == 2:
        return rho
    if quantity == 0:
        return atan2(rho, t3)
    # sin(2theta / 2) without a transcendental call: with |t| the norm of t,
    # 1 - cos(2theta) = rho^2 / (|t| (|t| + t3)), free of cancellation when t3 >= 0.
    if t3 >= 0.0:
        norm = sqrt(rho2 + t3 * t3)
        s = rho / sqrt(2.0 * norm * (norm + t3))
    else:
        s = sin(0.5 * atan2(rho, t3))
    s = qfactor * s                             # q in nm^-1 (qfactor = 4e-9 pi / wavelength)
    if quantity == 1:
        return s
    return 0.25 * s * s / (M_PI * M_PI)         # d*^2 = (q / 2 pi)^2 in nm^-2


cdef inline double _chi(double t1, double t2) noexcept nogil:
    """atan2(t1, t2) in (-pi, pi]: atan2(-0.0, t2 < 0) = -pi is mapped to pi."""
    cdef double c = atan2(t1, t2)
    return M_PI if c == -M_PI else c


def _check_quantity(int quantity, double wavelength):
    if quantity < 0 or quantity > 3:
        raise ValueError(f"quantity: expected 0..3, got {quantity}")
    if quantity in (1, 3) and not wavelength > 0:
        raise ValueError(f"wavelength: needed for q and d*2, got {wavelength}")
    return 4e-9 * M_PI / wavelength if wavelength > 0 else 0.0


def grid_centres(double L, double rot1, double rot2, double rot3,
                 const double[::1] d1, const double[::1] d2,
                 int quantity, double scale, double wavelength,
                 real_out[:, ::1] radial, real_out[:, ::1] chi,
                 bint want_radial, bint want_chi):
    """Radial value and/or chi at the points (d1[i], d2[j], L).

    ``radial`` and ``chi`` have shape (len(d1), len(d2)); an array that is not wanted is not
    touched (any array of the right type may be passed in its place).
    """
    cdef Rotation r = _rotation(rot1, rot2, rot3)
    cdef double qfactor = _check_quantity(quantity, wavelength)
    cdef Py_ssize_t n1 = d1.shape[0], n2 = d2.shape[0], i, j
    cdef double u1, u2, u3, t1, t2, t3
    if want_radial and (radial.shape[0] != n1 or radial.shape[1] != n2):
        raise ValueError("radial: wrong shape")
    if want_chi and (chi.shape[0] != n1 or chi.shape[1] != n2):
        raise ValueError("chi: wrong shape")
    for i in prange(n1, nogil=True, schedule="static"):
        # the row-constant part of t
        u1 = d1[i] * r.a11 + L * r.a13
        u2 = d1[i] * r.a21 + L * r.a23
        u3 = d1[i] * r.a31 + L * r.a33
        for j in range(n2):
            t1 = u1 + d2[j] * r.a12
            t2 = u2 + d2[j] * r.a22
            t3 = u3 + d2[j] * r.a32
            if want_radial:
                radial[i, j] = <real_out> (scale * _radial(t1, t2, t3, quantity, qfactor))
            if want_chi:
                chi[i, j] = <real_out> _chi(t1, t2)


def grid_corners(double L, double rot1, double rot2, double rot3,
                 const double[::1] e1, const double[::1] e2,
                 int quantity, double scale, double wavelength,
                 real_out[:, :, :, ::1] out):
    """Corner array (rows, cols, 4, 2) of a flat detector from its pixel-edge positions.

    ``e1`` (rows + 1) and ``e2`` (cols + 1) are the positions of the pixel edges relative to
    the PONI. Each of the (rows + 1) x (cols + 1) corner points is computed once, then copied to
    the up-to-four pixels sharing it. Corner order: (0,0), (1,0), (1,1), (0,1).
    """
    cdef Rotation r = _rotation(rot1, rot2, rot3)
    cdef double qfactor = _check_quantity(quantity, wavelength)
    cdef Py_ssize_t n1 = e1.shape[0], n2 = e2.shape[0], i, j
    cdef double u1, u2, u3, t1, t2, t3
    if out.shape[0] != n1 - 1 or out.shape[1] != n2 - 1 or out.shape[2] != 4 or out.shape[3] != 2:
        raise ValueError("out: wrong shape")
    import numpy
    cdef double[:, ::1] rad = numpy.empty((n1, n2), numpy.float64)
    cdef double[:, ::1] ang = numpy.empty((n1, n2), numpy.float64)
    for i in prange(n1, nogil=True, schedule="static"):
        u1 = e1[i] * r.a11 + L * r.a13
        u2 = e1[i] * r.a21 + L * r.a23
        u3 = e1[i] * r.a31 + L * r.a33
        for j in range(n2):
            t1 = u1 + e2[j] * r.a12
            t2 = u2 + e2[j] * r.a22
            t3 = u3 + e2[j] * r.a32
            rad[i, j] = scale * _radial(t1, t2, t3, quantity, qfactor)
            ang[i, j] = _chi(t1, t2)
    for i in prange(n1 - 1, nogil=True, schedule="static"):
        for j in range(n2 - 1):
            out[i, j, 0, 0] = <real_out> rad[i, j]
            out[i, j, 0, 1] = <real_out> ang[i, j]
            out[i, j, 1, 0] = <real_out> rad[i + 1, j]
            out[i, j, 1, 1] = <real_out> ang[i + 1, j]
            out[i, j, 2, 0] = <real_out> rad[i + 1, j + 1]
            out[i, j, 2, 1] = <real_out> ang[i + 1, j + 1]
            out[i, j, 3, 0] = <real_out> rad[i, j + 1]
            out[i, j, 3, 1] = <real_out> ang[i, j + 1]


def scattered_points(double rot1, double rot2, double rot3,
                     const double[::1] d1, const double[::1] d2, const double[::1] d3,
                     int quantity, double scale, double wavelength,
                     real_out[:] radial, real_out[:] chi, bint want_radial, bint want_chi):
    """Radial value and/or chi at arbitrary points (d1[k], d2[k], d3[k]) (explicit detectors).

    ``d3`` is the distance along the detector normal (dist + out-of-plane offset). ``radial``
    and ``chi`` may be strided views (e.g. the two channels of a corner array).
    """
    cdef Rotation r = _rotation(rot1, rot2, rot3)
    cdef double qfactor = _check_quantity(quantity, wavelength)
    cdef Py_ssize_t n = d1.shape[0], k
    cdef double t1, t2, t3
    if d2.shape[0] != n or d3.shape[0] != n:
        raise ValueError("d1, d2, d3: lengths differ")
    if want_radial and radial.shape[0] != n:
        raise ValueError("radial: wrong length")
    if want_chi and chi.shape[0] != n:
        raise ValueError("chi: wrong length")
    for k in prange(n, nogil=True, schedule="static"):
        t1 = d1[k] * r.a11 + d2[k] * r.a12 + d3[k] * r.a13
        t2 = d1[k] * r.a21 + d2[k] * r.a22 + d3[k] * r.a23
        t3 = d1[k] * r.a31 + d2[k] * r.a32 + d3[k] * r.a33
        if want_radial:
            radial[k] = <real_out> (scale * _radial(t1, t2, t3, quantity, qfactor))
        if want_chi:
            chi[k] = <real_out> _chi(t1, t2)


def grid_cos_incidence(double L, const double[::1] d1, const double[::1] d2, double power,
                       double scale, real_out[:, ::1] out):
    """``scale * (L / sqrt(L^2 + d1^2 + d2^2)) ** power`` on the grid (d1[i], d2[j]).

    power 1: cos(incidence); power 3: relative solid angle.
    """
    cdef Py_ssize_t n1 = d1.shape[0], n2 = d2.shape[0], i, j
    cdef double c, base
    if out.shape[0] != n1 or out.shape[1] != n2:
        raise ValueError("out: wrong shape")
    for i in prange(n1, nogil=True, schedule="static"):
        base = L * L + d1[i] * d1[i]
        for j in range(n2):
            c = L / sqrt(base + d2[j] * d2[j])
            if power == 3.0:
                out[i, j] = <real_out> (scale * c * c * c)
            elif power == 1.0:
                out[i, j] = <real_out> (scale * c)
            else:
                out[i, j] = <real_out> (scale * pow(c, power))
