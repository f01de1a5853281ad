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
All arithmetic is float64; outputs are float32 or float64. The row loops live in
``geometry_kernels_impl.h`` (vectorized, with an AVX2 variant chosen at run time).
"""
from cython.parallel cimport parallel, prange
from libc.math cimport cos, sin, sqrt, pow, M_PI, NAN
from libc.stddef cimport ptrdiff_t
from libc.stdlib cimport free, malloc

cdef extern from "geometry_kernels_impl.h" nogil:
    ctypedef void (*xr_row_function)(ptrdiff_t n, const double *d2, double u1, double u2,
                                     double u3, double a12, double a22, double a32,
                                     int quantity, double scale, double qfactor,
                                     double *radial, double *chi)
    xr_row_function xr_select_row(int allow_simd)
    double xr_atan2_scalar(double y, double x)
    double xr_chi_scalar(double t1, double t2)
    double xr_sin_theta_scalar(double t1, double t2, double t3)

ctypedef fused real_out:
    float
    double

cdef int _allow_simd = 1


def set_simd(bint enabled) -> bool:
    """Allow (default) or forbid the AVX2 row kernel; returns the previous setting.

    Both paths give bit-identical results; this exists so that tests can check it.
    """
    global _allow_simd
    previous = bool(_allow_simd)
    _allow_simd = 1 if enabled else 0
    return previous


def simd_available() -> bool:
    """True when the AVX2 row kernel is compiled in and this CPU runs it."""
    return xr_select_row(1) != xr_select_row(0)


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
    """Radial quantity (unscaled) from the lab vector t (explicit-corner path)."""
    cdef double s
    if quantity == 2:
        return sqrt(t1 * t1 + t2 * t2)
    if quantity == 0:
        return xr_atan2_scalar(sqrt(t1 * t1 + t2 * t2), t3)
    s = qfactor * xr_sin_theta_scalar(t1, t2, t3)   # q in nm^-1 (qfactor = 4e-9 pi / wavelength)
    if quantity == 1:
        return s
    return 0.25 * s * s / (M_PI * M_PI)              # d*^2 = (q / 2 pi)^2 in nm^-2


cdef inline double _chi(double t1, double t2) noexcept nogil:
    """atan2(t1, t2) in (-pi, pi]."""
    return xr_chi_scalar(t1, t2)


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
    cdef xr_row_function row = xr_select_row(_allow_simd)
    cdef Py_ssize_t n1 = d1.shape[0], n2 = d2.shape[0], i, j
    cdef double u1, u2, u3
    cdef double *rad_row
    cdef double *chi_row
    cdef double *rad_buf
    cdef double *chi_buf
    if want_radial and (radial.shape[0] != n1 or radial.shape[1] != n2):
        raise ValueError("radial: wrong shape")
    if want_chi and (chi.shape[0] != n1 or chi.shape[1] != n2):
        raise ValueError("chi: wrong shape")
    if n1 == 0 or n2 == 0:
        return
    if real_out is double:
        for i in prange(n1, nogil=True, schedule="static"):
            rad_row = NULL
            chi_row = NULL
            if want_radial:
                rad_row = &radial[i, 0]
            if want_chi:
                chi_row = &chi[i, 0]
            row(n2, &d2[0], d1[i] * r.a11 + L * r.a13, d1[i] * r.a21 + L * r.a23,
                d1[i] * r.a31 + L * r.a33, r.a12, r.a22, r.a32, quantity, scale, qfactor,
                rad_row, chi_row)
    else:
        with nogil, parallel():
            # float32 output: each thread computes a row in float64, then rounds it
            rad_buf = <double *> malloc(n2 * sizeof(double))
            chi_buf = <double *> malloc(n2 * sizeof(double))
            for i in prange(n1, schedule="static"):
                rad_row = NULL
                chi_row = NULL
                if want_radial:
                    rad_row = rad_buf
                if want_chi:
                    chi_row = chi_buf
                row(n2, &d2[0], d1[i] * r.a11 + L * r.a13, d1[i] * r.a21 + L * r.a23,
                    d1[i] * r.a31 + L * r.a33, r.a12, r.a22, r.a32, quantity, scale, qfactor,
                    rad_row, chi_row)
                for j in range(n2):
                    if want_radial:
                        radial[i, j] = <real_out> rad_buf[j]
                    if want_chi:
                        chi[i, j] = <real_out> chi_buf[j]
            free(rad_buf)
            free(chi_buf)


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
    if out.shape[0] != n1 - 1 or out.shape[1] != n2 - 1 or out.shape[2] != 4 or out.shape[3] != 2:
        raise ValueError("out: wrong shape")
    import numpy
    cdef double[:, ::1] rad = numpy.empty((n1, n2), numpy.float64)
    cdef double[:, ::1] ang = numpy.empty((n1, n2), numpy.float64)
    cdef xr_row_function row = xr_select_row(_allow_simd)
    for i in prange(n1, nogil=True, schedule="static"):
        row(n2, &e2[0], e1[i] * r.a11 + L * r.a13, e1[i] * r.a21 + L * r.a23,
            e1[i] * r.a31 + L * r.a33, r.a12, r.a22, r.a32, quantity, scale, qfactor,
            &rad[i, 0], &ang[i, 0])
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


def grid_radial_bounds(double L, double rot1, double rot2, double rot3,
                       const double[::1] e1, const double[::1] e2,
                       int quantity, double scale, double wavelength, double[:, :, ::1] out):
    """Each pixel's radial (min, max) over its 4 corners, for a flat detector.

    ``e1`` (rows + 1) and ``e2`` (cols + 1) are the pixel-edge positions relative to the PONI;
    ``out`` has shape (rows, cols, 2). The radial value of each corner point is computed once
    (the same values as :func:`grid_corners`); a pixel with a non-finite corner gets NaN.
    """
    cdef Rotation r = _rotation(rot1, rot2, rot3)
    cdef double qfactor = _check_quantity(quantity, wavelength)
    cdef Py_ssize_t n1 = e1.shape[0], n2 = e2.shape[0], i, j
    cdef double a, b, c, d, lo, hi
    if out.shape[0] != n1 - 1 or out.shape[1] != n2 - 1 or out.shape[2] != 2:
        raise ValueError("out: wrong shape")
    import numpy
    cdef double[:, ::1] rad = numpy.empty((n1, n2), numpy.float64)
    cdef xr_row_function row = xr_select_row(_allow_simd)
    for i in prange(n1, nogil=True, schedule="static"):
        row(n2, &e2[0], e1[i] * r.a11 + L * r.a13, e1[i] * r.a21 + L * r.a23,
            e1[i] * r.a31 + L * r.a33, r.a12, r.a22, r.a32, quantity, scale, qfactor,
            &rad[i, 0], NULL)
    for i in prange(n1 - 1, nogil=True, schedule="static"):
        for j in range(n2 - 1):
            a = rad[i, j]
            b = rad[i + 1, j]
            c = rad[i + 1, j + 1]
            d = rad[i, j + 1]
            if (a + b + c + d) - (a + b + c + d) != 0.0:     # some corner is not finite
                out[i, j, 0] = out[i, j, 1] = NAN
                continue
            lo = a if a < b else b
            lo = c if c < lo else lo
            lo = d if d < lo else lo
            hi = a if a > b else b
            hi = c if c > hi else hi
            hi = d if d > hi else hi
            out[i, j, 0] = lo
            out[i, j, 1] = hi


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
