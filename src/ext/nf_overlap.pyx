# cython: language_level=3
"""NF-HEDM overlap kernel: confidence of (voxel, orientation) pairs and their refinement.

MIDAS's rules (doc/nf_fit.md, "Rules"): the spots of one orientation are predicted for a voxel
at the origin (strict OmegaRange / BoxSize windows at the first distance, frames outside
0..n_frames-1 dropped); a triangle voxel's footprint is projected through the tilted first
detector, rasterised once (one pixel, or the rounded triangle plus a 0.99-pixel edge band), and
carried to every distance by scaling the spot centre; a footprint pixel is a hit only when lit
at every distance. Confidence = hits / counted pixels.

Lit pixels are the uint32 words of MIDAS's SpotsInfo.bin (bit k, LSB first, of word k / 32,
k = ((distance * n_frames + frame) * NrPixelsY + y) * NrPixelsZ + z).

Orientation-major: ``screen`` predicts each orientation's spots once and scores every pair
against them; ``refine`` runs a bounded Nelder-Mead per voxel (one voxel per OpenMP iteration,
so the result does not depend on the thread count). Front end: :mod:`xreduce.nf.overlap`.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt, atan, floor, fabs, cos, sin, M_PI
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint32_t, int64_t

cnp.import_array()

cdef double DEG = 180.0 / M_PI
cdef double RAD = M_PI / 180.0
DEF MAXD = 8          # detector distances
DEF EDGE_BAND2 = 0.9801  # squared distance (px^2) to an edge line that still counts (MIDAS)


include "nf_atan2.pxi"


cdef struct Setup:
    int nd, ny, nz, nframes, nrefl, nranges, one_pixel
    int max_pixels          # proven bound on the pixels one spot counts; 0: no early exits
    double lsd[MAXD]
    double scale[MAXD]      # lsd[d] / lsd[0]
    double bcy[MAXD]
    double bcz[MAXD]
    double px, inv_wl, ome0, ostep, tan_pole
    double Rt[9]
    double p0x, p0y, p0z    # Rt (-Lsd0, 0, 0)
    const double *g        # (nrefl, 3) crystal reciprocal vectors, 1/A
    const double *gsin     # |g| sin(theta); <= 0: cannot diffract
    const double *ranges   # (nranges, 2) degrees
    const double *boxes    # (nranges, 4) um
    const uint32_t *words  # SpotsInfo words


cdef struct Spot:
    double y, z, c, s       # undisplaced position at the first distance (um), cos/sin omega
    double cy, cz           # its pixel at the first distance (tilt rule)
    int frame
    int base_y[MAXD]        # floor((c - BC0) Lsd_L / Lsd0 + BC_L): the centre at distance L
    int base_z[MAXD]


cdef int _predict_reflection(const Setup *S, const double *U, int m, Spot *out) noexcept nogil:
    """Spots (0, 1 or 2, written to out) of reflection m of orientation U (row-major 3x3,
    crystal -> sample) for a voxel at the origin."""
    cdef int sol, n = 0, r, nsol, ok
    cdef double gx, gy, gz, Gx, Gy, Gz, rho, ca, sa, cph, sph, c, s, X, Y, Z, kx, w, y, z
    cdef double lsd0 = S.lsd[0]
    if S.gsin[m] <= 0.0:
        return 0
    gx = S.g[3 * m]; gy = S.g[3 * m + 1]; gz = S.g[3 * m + 2]
    Gx = U[0] * gx + U[1] * gy + U[2] * gz
    Gy = U[3] * gx + U[4] * gy + U[5] * gz
    Gz = U[6] * gx + U[7] * gy + U[8] * gz
    rho = sqrt(Gx * Gx + Gy * Gy)
    if rho < 1e-12:
        return 0
    # Gx cos w - Gy sin w = -|G| sin(theta)  ->  rho cos(w + phi) = ca rho
    ca = -S.gsin[m] / rho
    if ca > 1.0 or ca < -1.0:
        return 0
    sa = sqrt(1.0 - ca * ca)
    cph = Gx / rho
    sph = Gy / rho
    nsol = 1 if sa == 0.0 else 2
    for sol in range(nsol):
        if sol == 1:
            sa = -sa
        c = ca * cph + sa * sph      # cos(alpha - phi)
        s = sa * cph - ca * sph      # sin(alpha - phi)
        X = Gx * c - Gy * s
        Y = Gx * s + Gy * c
        Z = Gz
        kx = S.inv_wl + X
        if kx <= 0.0:
            continue
        if fabs(Y) < fabs(Z) * S.tan_pole:   # |eta| or 180 - |eta| below ExcludePoleAngle
            continue
        w = _atan2(s, c) * DEG
        y = lsd0 * Y / kx
        z = lsd0 * Z / kx
        ok = 0
        for r in range(S.nranges):
            if (S.ranges[2 * r] < w < S.ranges[2 * r + 1]
                    and S.boxes[4 * r] < y < S.boxes[4 * r + 1]
                    and S.boxes[4 * r + 2] < z < S.boxes[4 * r + 3]):
                ok = 1
                break
        if not ok:
            continue
        r = <int>floor((w - S.ome0) / S.ostep)
        if r < 0 or r >= S.nframes:
            continue
        out[n].y = y
        out[n].z = z
        out[n].c = c
        out[n].s = s
        out[n].frame = r
        _spot_centre(S, &out[n])
        n += 1
    return n


cdef int _predict(const Setup *S, const double *U, Spot *out) noexcept nogil:
    """All spots of orientation U for a voxel at the origin (reflection order)."""
    cdef int m, n = 0
    for m in range(S.nrefl):
        n += _predict_reflection(S, U, m, &out[n])
    return n


cdef inline void _tilted_pixel(const Setup *S, double dy, double dz, double *py,
                               double *pz) noexcept nogil:
    """Pixel of the point (dy, dz) um of the first detector plane, through MIDAS's tilt rule:
    P0 = Rt (-Lsd0, 0, 0), P1 = Rt (0, dy, dz), P0 - (P1 - P0) P0x / (P1x - P0x)."""
    cdef const double *R = S.Rt
    cdef double p0x = S.p0x, p0y = S.p0y, p0z = S.p0z
    cdef double p1x = R[1] * dy + R[2] * dz
    cdef double p1y = R[4] * dy + R[5] * dz
    cdef double p1z = R[7] * dy + R[8] * dz
    cdef double f = p0x / (p1x - p0x)
    py[0] = (p0y - (p1y - p0y) * f) / S.px + S.bcy[0]
    pz[0] = (p0z - (p1z - p0z) * f) / S.px + S.bcz[0]


cdef inline void _spot_centre(const Setup *S, Spot *sp) noexcept nogil:
    """The spot's undisplaced pixel at the first distance and its integer centre at each."""
    cdef int d
    _tilted_pixel(S, sp.y, sp.z, &sp.cy, &sp.cz)
    for d in range(S.nd):
        sp.base_y[d] = <int>floor((sp.cy - S.bcy[0]) * S.scale[d] + S.bcy[d])
        sp.base_z[d] = <int>floor((sp.cz - S.bcz[0]) * S.scale[d] + S.bcz[d])


cdef inline int _round_int(double x) noexcept nogil:
    """C's round() (halves away from zero) as an int, inline (|x| < 2^31): x - trunc(x) is
    exact (Sterbenz), so the result equals <int>round(x) for every such x."""
    cdef int t = <int>x
    cdef double d = x - <double>t
    if d >= 0.5:
        return t + 1
    if d <= -0.5:
        return t - 1
    return t


cdef inline int _lit(const Setup *S, int d, int frame, int y, int z) noexcept nogil:
    cdef int64_t k = ((<int64_t>d * S.nframes + frame) * S.ny + y) * <int64_t>S.nz + z
    return (S.words[k >> 5] >> (k & 31)) & 1


cdef void _count_spot(const Setup *S, const Spot *sp, const double *v, long *hits,
                      long *counted) noexcept nogil:
    """Add one spot's footprint of the triangle v (3 x (x, y) um, MIDAS vertex order)."""
    cdef double vy[3]
    cdef double vz[3]
    cdef double xa, ya, t
    cdef int k, k1, d, i, j, inside, near, iy0, iy1, iz0, iz1, py, pz, hit, cross
    cdef int ry[3]
    cdef int rz[3]
    cdef int ey[3]
    cdef int ez[3]
    cdef double band[3]
    cdef const int *base_y = sp.base_y
    cdef const int *base_z = sp.base_z
    for k in range(3):
        xa = v[2 * k] * sp.c - v[2 * k + 1] * sp.s
        ya = v[2 * k] * sp.s + v[2 * k + 1] * sp.c
        t = 1.0 - xa / S.lsd[0]
        _tilted_pixel(S, ya + sp.y * t, sp.z * t, &vy[k], &vz[k])
        if vy[k] < 0.0 or vy[k] > S.ny or vz[k] < 0.0 or vz[k] > S.nz:
            return  # the whole spot is dropped
    if S.one_pixel:
        iy0 = _round_int((vy[0] + vy[1] + vy[2]) / 3.0 - sp.cy)
        iz0 = _round_int((vz[0] + vz[1] + vz[2]) / 3.0 - sp.cz)
        iy1 = iy0
        iz1 = iz0
    else:
        for k in range(3):
            ry[k] = _round_int(vy[k] - sp.cy)
            rz[k] = _round_int(vz[k] - sp.cz)
        for k in range(3):
            k1 = k + 1 if k < 2 else 0
            ey[k] = ry[k1] - ry[k]
            ez[k] = rz[k1] - rz[k]
            # squared distance to the edge line below 0.9801 px^2: cross^2 < band (none for a
            # collapsed edge)
            band[k] = EDGE_BAND2 * (ey[k] * ey[k] + ez[k] * ez[k])
        iy0 = min(ry[0], min(ry[1], ry[2])); iy1 = max(ry[0], max(ry[1], ry[2]))
        iz0 = min(rz[0], min(rz[1], rz[2])); iz1 = max(rz[0], max(rz[1], rz[2]))
    for i in range(iy0, iy1 + 1):
        for j in range(iz0, iz1 + 1):
            if not S.one_pixel:
                inside = 1
                near = 0
                for k in range(3):
                    cross = ey[k] * (j - rz[k]) - ez[k] * (i - ry[k])
                    if cross < 0:
                        inside = 0
                    if <double>cross * cross < band[k]:
                        near = 1
                if not inside and not near:
                    continue
            hit = 1
            for d in range(S.nd):
                py = base_y[d] + i
                pz = base_z[d] + j
                if py < 0 or py >= S.ny or pz < 0 or pz >= S.nz:
                    return  # MIDAS skips the rest of this spot's pixels
                hit &= _lit(S, d, sp.frame, py, pz)   # no branch: the loads overlap
            counted[0] += 1
            hits[0] += hit


# Early exits (doc/nf_fit.md, "Early exits"): a spot counts at most S.max_pixels pixels (a
# bound proven from the geometry by xreduce.nf.overlap), so after some spots with `misses` of
# `counted`, and at most `rest` pixels still to come, 1 - confidence >= misses / (counted +
# rest). A count stops once that bound exceeds the threshold by more than EXIT_MARGIN (then
# the exact value would exceed it too, even after rounding). A spot counting more than the
# bound sets this flag and the Python front end raises.
DEF EXIT_MARGIN = 1e-12
cdef int bound_violated = 0


cdef inline void _check_bound(const Setup *S, long before, long after) noexcept nogil:
    global bound_violated
    if after - before > S.max_pixels:
        bound_violated = 1


def take_bound_violation():
    """Whether a spot counted more pixels than the early-exit bound since the last call."""
    global bound_violated
    out = bound_violated != 0
    bound_violated = 0
    return out


cdef double _one_minus_confidence(const Setup *S, Spot *buf, const double *U, const double *v,
                                  double fmax) noexcept nogil:
    """1 - confidence of orientation U at voxel v, spots predicted reflection by reflection.
    With S.max_pixels > 0 the count stops once the result provably exceeds fmax, and fmax is
    returned: every comparison the simplex makes with fmax then takes the same branch."""
    cdef long hits = 0, counted = 0, before, rest
    cdef int m, k, n
    cdef int bounded = S.max_pixels > 0 and fmax < 1.0
    for m in range(S.nrefl):
        n = _predict_reflection(S, U, m, buf)
        for k in range(n):
            before = counted
            _count_spot(S, &buf[k], v, &hits, &counted)
            if bounded:
                _check_bound(S, before, counted)
        if bounded:
            rest = 2 * <long>(S.nrefl - m - 1) * S.max_pixels   # <= 2 spots per reflection
            if <double>(counted - hits) > (fmax + EXIT_MARGIN) * <double>(counted + rest):
                return fmax
    if counted == 0:
        return 1.0
    return 1.0 - <double>hits / <double>counted


cdef void _euler_matrix(double p1, double P, double p2, double *U) noexcept nogil:
    """Bunge R = Rz(phi1) Rx(Phi) Rz(phi2), row-major."""
    cdef double c1 = cos(p1), s1 = sin(p1), c = cos(P), s = sin(P), c2 = cos(p2), s2 = sin(p2)
    U[0] = c1 * c2 - s1 * c * s2
    U[1] = -c1 * s2 - s1 * c * c2
    U[2] = s1 * s
    U[3] = s1 * c2 + c1 * c * s2
    U[4] = -s1 * s2 + c1 * c * c2
    U[5] = -c1 * s
    U[6] = s * s2
    U[7] = s * c2
    U[8] = c


cdef void _rotvec_times(const double *r, const double *U0, double *U) noexcept nogil:
    """U = exp([r]x) U0 (Rodrigues), r a rotation vector in radians."""
    cdef double th = sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]), a, b, kx, ky, kz
    cdef double M[9]
    cdef int i, j
    if th < 1e-300:
        for i in range(9):
            U[i] = U0[i]
        return
    kx = r[0] / th; ky = r[1] / th; kz = r[2] / th
    a = sin(th); b = 1.0 - cos(th)
    M[0] = 1.0 - b * (ky * ky + kz * kz); M[1] = -a * kz + b * kx * ky; M[2] = a * ky + b * kx * kz
    M[3] = a * kz + b * kx * ky; M[4] = 1.0 - b * (kx * kx + kz * kz); M[5] = -a * kx + b * ky * kz
    M[6] = -a * ky + b * kx * kz; M[7] = a * kx + b * ky * kz; M[8] = 1.0 - b * (kx * kx + ky * ky)
    for i in range(3):
        for j in range(3):
            U[3 * i + j] = M[3 * i] * U0[j] + M[3 * i + 1] * U0[3 + j] + M[3 * i + 2] * U0[6 + j]


cdef void _setup(Setup *S, const double[::1] lsd, const double[:, ::1] bc, double px,
                 const double[:, ::1] Rt, int ny, int nz, int nframes, double wavelength,
                 const double[:, ::1] g, const double[::1] gsin,
                 const double[:, ::1] ranges, const double[:, ::1] boxes, double ome0,
                 double ostep, double pole_deg, bint one_pixel,
                 const uint32_t[::1] words) except *:
    cdef int d, i
    if lsd.shape[0] < 1 or lsd.shape[0] > MAXD or bc.shape[0] != lsd.shape[0]:
        raise ValueError(f"lsd, bc: expected 1..{MAXD} distances with one beam centre each")
    if g.shape[1] != 3 or gsin.shape[0] != g.shape[0]:
        raise ValueError("g: expected (m, 3) with one gsin per reflection")
    if ranges.shape[0] != boxes.shape[0] or ranges.shape[0] < 1:
        raise ValueError("ranges, boxes: expected one BoxSize per OmegaRange")
    cdef int64_t nbits = <int64_t>lsd.shape[0] * nframes * ny * <int64_t>nz
    if words.shape[0] != (nbits + 31) // 32:
        raise ValueError(f"words: expected {(nbits + 31) // 32} uint32 words for "
                         f"({lsd.shape[0]}, {nframes}, {ny}, {nz}), got {words.shape[0]}")
    S.nd = lsd.shape[0]; S.ny = ny; S.nz = nz; S.nframes = nframes
    S.nrefl = g.shape[0]; S.nranges = ranges.shape[0]; S.one_pixel = one_pixel
    S.max_pixels = 0
    for d in range(S.nd):
        S.lsd[d] = lsd[d]; S.bcy[d] = bc[d, 0]; S.bcz[d] = bc[d, 1]
    for d in range(S.nd):
        S.scale[d] = S.lsd[d] / S.lsd[0]
    S.px = px; S.inv_wl = 1.0 / wavelength; S.ome0 = ome0; S.ostep = ostep
    S.tan_pole = np.tan(np.radians(pole_deg))
    for i in range(9):
        S.Rt[i] = Rt[i // 3, i % 3]
    S.p0x = -S.Rt[0] * S.lsd[0]
    S.p0y = -S.Rt[3] * S.lsd[0]
    S.p0z = -S.Rt[6] * S.lsd[0]
    S.g = &g[0, 0] if g.shape[0] else NULL
    S.gsin = &gsin[0] if g.shape[0] else NULL
    S.ranges = &ranges[0, 0]
    S.boxes = &boxes[0, 0]
    S.words = &words[0]


def screen(const double[::1] lsd, const double[:, ::1] bc, double px, const double[:, ::1] Rt,
           int ny, int nz, int nframes, double wavelength, const double[:, ::1] g,
           const double[::1] gsin, const double[:, ::1] ranges, const double[:, ::1] boxes,
           double ome0, double ostep, double pole_deg, bint one_pixel,
           const uint32_t[::1] words, const double[:, :, ::1] U, const double[:, :, ::1] verts,
           const int64_t[::1] pair_orientation, const int64_t[::1] pair_voxel,
           int num_threads=0, double min_confidence=0.0, int max_pixels=0):
    """Confidence of each (orientation, voxel) pair; spots of each orientation computed once.

    U (n, 3, 3) orientations; verts (nvox, 3, 2) triangles in MIDAS vertex order (um);
    pairs must be sorted by orientation for the spot cache to be shared (any order works).
    min_confidence > 0 with max_pixels > 0 (a proven bound on the pixels of one spot): a
    pair's count stops once its confidence is provably below min_confidence, and it is
    reported as NaN.
    """
    cdef Setup S
    _setup(&S, lsd, bc, px, Rt, ny, nz, nframes, wavelength, g, gsin, ranges, boxes, ome0,
           ostep, pole_deg, one_pixel, words)
    S.max_pixels = max_pixels if min_confidence > 0.0 else 0
    cdef double fmax = 1.0 - min_confidence
    cdef Py_ssize_t n = U.shape[0], npairs = pair_voxel.shape[0], i, k
    if verts.shape[1] != 3 or verts.shape[2] != 2:
        raise ValueError("verts: expected (nvoxels, 3, 2) triangles")
    if pair_orientation.shape[0] != npairs:
        raise ValueError("pair_orientation, pair_voxel: expected equal lengths")
    for k in range(npairs):
        if not (0 <= pair_orientation[k] < n) or not (0 <= pair_voxel[k] < verts.shape[0]):
            raise ValueError(f"pair {k}: orientation or voxel index out of range")
    # pairs grouped by orientation (stable: each group keeps the caller's order)
    order = np.argsort(np.asarray(pair_orientation), kind="stable")
    ptr_arr = np.searchsorted(np.asarray(pair_orientation)[order], np.arange(n + 1))
    cdef const int64_t[::1] od = np.ascontiguousarray(order, dtype=np.int64)
    cdef const int64_t[::1] ptr = np.ascontiguousarray(ptr_arr, dtype=np.int64)
    hits_arr = np.zeros(npairs, dtype=np.int64)
    counted_arr = np.zeros(npairs, dtype=np.int64)
    cdef int64_t[::1] hits = hits_arr, counted = counted_arr
    counts = np.zeros(n, dtype=np.int32)
    cdef int[::1] cnt = counts
    if npairs:
        for i in prange(n, nogil=True, schedule="dynamic", num_threads=num_threads):
            if ptr[i + 1] > ptr[i]:
                cnt[i] = _screen_orientation(&S, &U[i, 0, 0], &verts[0, 0, 0], &od[0],
                                             ptr[i], ptr[i + 1], &pair_voxel[0], &hits[0],
                                             &counted[0], fmax)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counted_arr > 0, hits_arr / np.maximum(counted_arr, 1), 0.0)
    out[hits_arr < 0] = np.nan
    return out, counts


cdef int _screen_orientation(const Setup *S, const double *U, const double *verts,
                             const int64_t *order, int64_t k0, int64_t k1,
                             const int64_t *pair_voxel, int64_t *hits,
                             int64_t *counted, double fmax) noexcept nogil:
    """One orientation against its pairs order[k0:k1]: spot by spot over all of its voxels, so
    the detector region of a spot stays in cache. A pair whose 1 - confidence provably exceeds
    fmax (early exits, S.max_pixels > 0) stops, marked by hits -1. Returns the number of
    spots."""
    cdef Spot *buf = <Spot *>malloc((2 * S.nrefl + 1) * sizeof(Spot))
    cdef int ns, s
    cdef int64_t k, pk
    cdef long h, c, rest
    cdef int bounded = S.max_pixels > 0 and fmax < 1.0
    if buf == NULL:
        return -1
    ns = _predict(S, U, buf)
    for s in range(ns):
        rest = <long>(ns - s - 1) * S.max_pixels
        for k in range(k0, k1):
            pk = order[k]
            if hits[pk] < 0:
                continue
            h = 0
            c = 0
            _count_spot(S, &buf[s], &verts[6 * pair_voxel[pk]], &h, &c)
            hits[pk] += h
            counted[pk] += c
            if bounded:
                _check_bound(S, 0, c)
                if (<double>(counted[pk] - hits[pk])
                        > (fmax + EXIT_MARGIN) * <double>(counted[pk] + rest)):
                    hits[pk] = -1
    free(buf)
    return ns


cdef double _objective(const Setup *S, Spot *buf, const double *x, int rotvec,
                       const double *U0, const double *v, double fmax) noexcept nogil:
    """1 - confidence at parameters x; any value >= fmax when it provably is >= fmax."""
    cdef double U[9]
    if rotvec:
        _rotvec_times(x, U0, U)
    else:
        _euler_matrix(x[0], x[1], x[2], U)
    return _one_minus_confidence(S, buf, U, v, fmax)


cdef inline double _clamp(double x, double lo, double hi) noexcept nogil:
    return lo if x < lo else (hi if x > hi else x)


cdef int _nelder_mead(const Setup *S, Spot *buf, double *x, const double *lo, const double *hi,
                      double step, int rotvec, const double *U0, const double *v, double ftol,
                      double xtol, double xtol_abs, int max_evals,
                      double *fbest) noexcept nogil:
    """Bounded Nelder-Mead (3 parameters; points clamped to the box). Standard coefficients
    (reflection 1, expansion 2, contraction 1/2, shrink 1/2); stops on the first of: objective
    0, f spread of the simplex <= ftol (relative), simplex size <= xtol (relative) or <=
    xtol_abs (radians; 0: off), max_evals (doc/nf_fit.md, "Refinement"). Returns the
    evaluations used."""
    cdef double P[4][3]
    cdef double F[4]
    cdef double cen[3]
    cdef double xr[3]
    cdef double xe[3]
    cdef double xc[3]
    cdef double fr, fe, fc, tmp, spread, size
    cdef int i, j, k, ev = 0, hi_i, lo_i, nh_i, use_contract
    for i in range(4):
        for j in range(3):
            P[i][j] = x[j]
        if i > 0:
            P[i][i - 1] = x[i - 1] + step
            if P[i][i - 1] > hi[i - 1]:
                P[i][i - 1] = x[i - 1] - step
            P[i][i - 1] = _clamp(P[i][i - 1], lo[i - 1], hi[i - 1])
        F[i] = _objective(S, buf, P[i], rotvec, U0, v, 1.0)
        ev += 1
        if i == 0 and F[0] <= 0.0:
            break   # the start is a perfect fit: the simplex would stop on it (same result)
    if F[0] <= 0.0:
        fbest[0] = F[0]
        return ev
    while ev < max_evals:
        # order: lowest, highest, next highest (ties: the earlier vertex counts as better)
        lo_i = 0; hi_i = 0
        for i in range(1, 4):
            if F[i] < F[lo_i]:
                lo_i = i
            if F[i] >= F[hi_i]:
                hi_i = i
        nh_i = lo_i
        for i in range(4):
            if i != hi_i and F[i] >= F[nh_i]:
                nh_i = i
        if F[lo_i] <= 0.0:
            break
        spread = fabs(F[hi_i] - F[lo_i])
        size = 0.0
        for i in range(4):
            for j in range(3):
                tmp = fabs(P[i][j] - P[lo_i][j])
                size = tmp if tmp > size else size
        # either criterion stops (as nlopt's): f values of the simplex within ftol
        # (relative), or the simplex smaller than xtol (relative to the point)
        if spread <= ftol * 0.5 * (fabs(F[lo_i]) + fabs(F[hi_i])):
            break
        if size <= xtol * (fabs(P[lo_i][0]) + fabs(P[lo_i][1]) + fabs(P[lo_i][2]) + 1e-3):
            break
        if size <= xtol_abs:
            break
        for j in range(3):
            cen[j] = 0.0
            for i in range(4):
                if i != hi_i:
                    cen[j] += P[i][j]
            cen[j] /= 3.0
        for j in range(3):
            xr[j] = _clamp(2.0 * cen[j] - P[hi_i][j], lo[j], hi[j])
        # each trial below is compared with one value only (the exact result is kept only
        # when below it): its count may stop once it provably is not (same branches)
        fr = _objective(S, buf, xr, rotvec, U0, v, F[hi_i])
        ev += 1
        if fr < F[lo_i]:
            for j in range(3):
                xe[j] = _clamp(3.0 * cen[j] - 2.0 * P[hi_i][j], lo[j], hi[j])
            fe = _objective(S, buf, xe, rotvec, U0, v, fr)
            ev += 1
            if fe < fr:
                for j in range(3):
                    P[hi_i][j] = xe[j]
                F[hi_i] = fe
            else:
                for j in range(3):
                    P[hi_i][j] = xr[j]
                F[hi_i] = fr
            continue
        if fr < F[nh_i]:
            for j in range(3):
                P[hi_i][j] = xr[j]
            F[hi_i] = fr
            continue
        # contraction: outside when the reflection improved on the worst, else inside
        use_contract = fr < F[hi_i]
        for j in range(3):
            if use_contract:
                xc[j] = cen[j] + 0.5 * (xr[j] - cen[j])
            else:
                xc[j] = cen[j] + 0.5 * (P[hi_i][j] - cen[j])
        fc = _objective(S, buf, xc, rotvec, U0, v, fr if use_contract else F[hi_i])
        ev += 1
        if fc < (fr if use_contract else F[hi_i]):
            for j in range(3):
                P[hi_i][j] = xc[j]
            F[hi_i] = fc
            continue
        for i in range(4):
            if i == lo_i:
                continue
            for j in range(3):
                P[i][j] = P[lo_i][j] + 0.5 * (P[i][j] - P[lo_i][j])
            F[i] = _objective(S, buf, P[i], rotvec, U0, v, 1.0)
            ev += 1
    lo_i = 0
    for i in range(1, 4):
        if F[i] < F[lo_i]:
            lo_i = i
    for j in range(3):
        x[j] = P[lo_i][j]
    fbest[0] = F[lo_i]
    return ev


def refine(const double[::1] lsd, const double[:, ::1] bc, double px, const double[:, ::1] Rt,
           int ny, int nz, int nframes, double wavelength, const double[:, ::1] g,
           const double[::1] gsin, const double[:, ::1] ranges, const double[:, ::1] boxes,
           double ome0, double ostep, double pole_deg, bint one_pixel,
           const uint32_t[::1] words, const double[:, :, ::1] verts,
           const int64_t[::1] cand_indptr, const double[:, ::1] cand_euler,
           double tol_rad, bint rotation_vector, double ftol=1e-5, double xtol=1e-5,
           int max_evals=5000, bint stop_at_one=True, int num_threads=0, int restarts=0,
           int max_pixels=0, double step_rad=0.0, double xtol_abs_rad=0.0):
    """Refine the candidates of each voxel (voxel v: rows cand_indptr[v]:cand_indptr[v+1] of
    cand_euler, Bunge radians) by bounded Nelder-Mead within +-tol_rad.

    rotation_vector False (MIDAS): box of +-tol on each Euler angle, initial step tol / 2.
    True: box of +-tol on each component of a rotation vector applied to the start
    orientation (no singularity at Phi = 0 or 180 deg). stop_at_one: skip the remaining
    candidates of a voxel once one reaches 1 - confidence < 1e-4 (MIDAS, SaveNSolutions 1).

    Returns (params (ncand, 3), confidence (ncand,), evaluations (ncand,) int32): params are
    the refined Euler angles, or the rotation vector to apply to the start orientation; 0
    evaluations marks a candidate skipped by stop_at_one. max_pixels > 0 (a proven bound on the
    pixels of one spot) lets a trial point's count stop once it provably loses (early exits:
    same simplex steps, same results). step_rad > 0: initial simplex step (default tol / 2).
    xtol_abs_rad > 0: also stop once the simplex is smaller than this (radians).
    """
    cdef Setup S
    _setup(&S, lsd, bc, px, Rt, ny, nz, nframes, wavelength, g, gsin, ranges, boxes, ome0,
           ostep, pole_deg, one_pixel, words)
    S.max_pixels = max_pixels
    cdef Py_ssize_t nvox = cand_indptr.shape[0] - 1, ncand = cand_euler.shape[0], v
    if nvox != verts.shape[0] or verts.shape[1] != 3 or verts.shape[2] != 2:
        raise ValueError("verts: expected (nvoxels, 3, 2) with one row per cand_indptr voxel")
    if cand_euler.shape[1] != 3 or cand_indptr[0] != 0 or cand_indptr[nvox] != ncand:
        raise ValueError("cand_indptr, cand_euler: expected CSR rows of (ncand, 3)")
    if not tol_rad > 0:
        raise ValueError(f"tol_rad: expected > 0, got {tol_rad}")
    params_out = np.zeros((ncand, 3), dtype=np.float64)
    conf_out = np.zeros(ncand, dtype=np.float64)
    evals_out = np.zeros(ncand, dtype=np.int32)
    cdef double[:, ::1] po = params_out
    cdef double[::1] co = conf_out
    cdef int[::1] ev = evals_out
    if ncand == 0:
        return params_out, conf_out, evals_out
    for v in prange(nvox, nogil=True, schedule="dynamic", num_threads=num_threads):
        _refine_voxel(&S, &verts[v, 0, 0], cand_indptr[v], cand_indptr[v + 1], &cand_euler[0, 0],
                      tol_rad, rotation_vector, ftol, xtol, xtol_abs_rad, max_evals,
                      stop_at_one, restarts,
                      step_rad if step_rad > 0 else tol_rad / 2.0, &po[0, 0],
                      &co[0], &ev[0])
    return params_out, conf_out, evals_out


cdef void _refine_voxel(const Setup *S, const double *v, int64_t c0, int64_t c1,
                        const double *cand, double tol, int rotvec, double ftol, double xtol,
                        double xtol_abs, int max_evals, int stop_at_one, int restarts, double step,
                        double *po, double *co, int *ev) noexcept nogil:
    """Refine candidates c0..c1-1 of one voxel (all scratch is local to this call)."""
    cdef Spot *buf = <Spot *>malloc((2 * S.nrefl + 1) * sizeof(Spot))
    cdef double x[3]
    cdef double lo[3]
    cdef double hi[3]
    cdef double U0[9]
    cdef double f, fprev
    cdef int64_t c
    cdef int j, r
    if buf == NULL:
        return  # left at confidence 0 and 0 evaluations
    for c in range(c0, c1):
        if rotvec:
            _euler_matrix(cand[3 * c], cand[3 * c + 1], cand[3 * c + 2], U0)
        for j in range(3):
            x[j] = 0.0 if rotvec else cand[3 * c + j]
            lo[j] = x[j] - tol
            hi[j] = x[j] + tol
        ev[c] = _nelder_mead(S, buf, x, lo, hi, step, rotvec, U0, v, ftol, xtol, xtol_abs,
                             max_evals, &f)
        # option (not MIDAS): restart from the best point while it improves; a simplex on a
        # piecewise-constant objective often stops on a flat patch short of the peak
        for r in range(restarts):
            if f < 1e-4:
                break
            fprev = f
            ev[c] += _nelder_mead(S, buf, x, lo, hi, step, rotvec, U0, v, ftol, xtol,
                                  xtol_abs, max_evals, &f)
            if not f < fprev:
                break
        co[c] = 1.0 - f
        for j in range(3):
            po[3 * c + j] = x[j]
        if stop_at_one and f < 1e-4:
            break
    free(buf)
