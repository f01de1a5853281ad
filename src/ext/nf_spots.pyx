# cython: language_level=3
"""NF-HEDM spot prediction, ray projection onto tilted detectors, and footprint rasterisation.

Frames (MIDAS): beam along lab +X, rotation omega about +Z (stage tilted by the wedge angle
about lab +Y, with MIDAS's sign: lab = Ry(-wedge) Rz(omega) sample), detector distances
along +X.
All loops over orientations / spots run in OpenMP ``prange``. Spots are written into a buffer of
2 m rows per orientation (m reflections: at most two omegas each), chunk by chunk, then
compacted; footprints are written in two passes (count, then fill at prefix-sum offsets).
Front end: :mod:`xreduce.nf.spots` (the only caller).
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt, atan, floor, fabs, M_PI, sin, cos
from libc.stdlib cimport malloc, free

cnp.import_array()

cdef double DEG = 180.0 / M_PI
cdef double RAD = M_PI / 180.0
# Below this many inner iterations a call runs on one thread: starting a thread team costs more
# than it saves, and much more on a machine whose cores are busy.
cdef Py_ssize_t SMALL_WORK = 20000

include "nf_atan2.pxi"


def atan2_array(const double[::1] y, const double[::1] x):
    """The kernel's atan2 over arrays (radians), for tests."""
    cdef Py_ssize_t i, n = y.shape[0]
    if x.shape[0] != n:
        raise ValueError("y, x: expected equal lengths")
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] o = out
    for i in range(n):
        o[i] = _atan2(y[i], x[i])
    return out


cdef inline int _window(double omega, double y, double z, const double *ranges,
                        const double *boxes, Py_ssize_t nr, double *omega_out) noexcept nogil:
    """Index of the first OmegaRange holding omega (or omega +- 360) whose BoxSize holds (y, z);
    -1 if none."""
    cdef Py_ssize_t r
    cdef int s
    cdef double w
    for r in range(nr):
        if y < boxes[4 * r] or y > boxes[4 * r + 1] or z < boxes[4 * r + 2] \
                or z > boxes[4 * r + 3]:
            continue
        for s in range(3):
            w = omega + (0.0 if s == 0 else (360.0 if s == 1 else -360.0))
            if w >= ranges[2 * r] and w <= ranges[2 * r + 1]:
                omega_out[0] = w
                return <int>r
    return -1


cdef int _spots_of_orientation(
        Py_ssize_t i, const double *Ui, const double *g, Py_ssize_t ng,
        const double *gsin, double wavelength,
        double lsd0, const double *ranges, const double *boxes, Py_ssize_t nr,
        double tan_pole, double cw, double sw, double ome0, double ome_step,
        bint fill, Py_ssize_t offset,
        int *o_orient, int *o_refl, double *o_omega, double *o_ky,
        double *o_kz, int *o_frame) noexcept nogil:
    """Count (fill=0) or write (fill=1, from row ``offset``) the spots of orientation i.

    Memory is passed as raw pointers (no memoryview reference counting in the hot loop):
    Ui the 9 entries of U_i, g (ng, 3), gsin[m] = |g_m| sin(theta_m) (<= 0: cannot diffract),
    ranges (nr, 2), boxes (nr, 4), all C order.
    """
    cdef Py_ssize_t m, k
    cdef int n = 0, sol, nsol
    cdef double u00 = Ui[0], u01 = Ui[1], u02 = Ui[2]
    cdef double u10 = Ui[3], u11 = Ui[4], u12 = Ui[5]
    cdef double u20 = Ui[6], u21 = Ui[7], u22 = Ui[8]
    cdef double inv_wl = 1.0 / wavelength, inv_cw = 1.0 / cw, inv_rho, inv_kx
    cdef double gx, gy, gz, Gx, Gy, Gz, rho, ca, sa, cph, sph, c, s
    cdef double X, Y, Z, lx, ly, lz, kx, omega, w, asol, yd, zd
    for m in range(ng):
        if gsin[m] <= 0.0:
            continue
        gx = g[3 * m]; gy = g[3 * m + 1]; gz = g[3 * m + 2]
        Gx = u00 * gx + u01 * gy + u02 * gz
        Gy = u10 * gx + u11 * gy + u12 * gz
        Gz = u20 * gx + u21 * gy + u22 * gz
        rho = sqrt(Gx * Gx + Gy * Gy)
        if rho < 1e-12:
            continue
        # cw (Gx cos w - Gy sin w) + sw Gz = -|G| sin(theta)  ->  rho cos(w + phi) = K
        inv_rho = 1.0 / rho
        ca = (-gsin[m] - sw * Gz) * inv_cw * inv_rho
        if ca > 1.0 or ca < -1.0:
            continue
        sa = sqrt(1.0 - ca * ca)
        cph = Gx * inv_rho
        sph = Gy * inv_rho
        nsol = 1 if sa == 0.0 else 2
        for sol in range(nsol):
            asol = sa if sol == 0 else -sa
            # w = alpha - phi with cos(alpha) = ca, sin(alpha) = asol
            c = ca * cph + asol * sph
            s = asol * cph - ca * sph
            X = Gx * c - Gy * s
            Y = Gx * s + Gy * c
            Z = Gz
            lx = cw * X + sw * Z
            ly = Y
            lz = -sw * X + cw * Z
            kx = inv_wl + lx
            if kx <= 0.0:
                continue
            # |eta| < pole or 180 - |eta| < pole, without trigonometry
            if fabs(ly) < fabs(lz) * tan_pole:
                continue
            omega = _atan2(s, c) * DEG
            inv_kx = 1.0 / kx
            yd = ly * inv_kx
            zd = lz * inv_kx
            if _window(omega, lsd0 * yd, lsd0 * zd, ranges, boxes, nr, &w) < 0:
                continue
            if fill:
                k = offset + n
                o_orient[k] = <int>i
                o_refl[k] = <int>m
                o_omega[k] = w
                o_ky[k] = yd
                o_kz[k] = zd
                o_frame[k] = <int>floor((w - ome0) / ome_step)
            n += 1
    return n


def predict_spots(const double[:, :, ::1] U, const double[:, ::1] g, double wavelength_A,
                  double lsd0_um, const double[:, ::1] omega_ranges_deg,
                  const double[:, ::1] box_sizes_um, double exclude_pole_deg=0.0,
                  double wedge_deg=0.0, double omega_start_deg=0.0, double omega_step_deg=1.0,
                  int num_threads=0):
    """All spots of n orientations.

    Parameters
    ----------
    U : float64 (n, 3, 3) orientation matrices (crystal -> sample)
    g : float64 (m, 3) reciprocal vectors B hkl (1/A, crystal frame)
    wavelength_A, lsd0_um : wavelength; distance at which BoxSize windows are tested
    omega_ranges_deg : (r, 2); box_sizes_um : (r, 4) ymin ymax zmin zmax
    exclude_pole_deg, wedge_deg : MIDAS ExcludePoleAngle and Wedge (degrees, pole < 90)
    omega_start_deg, omega_step_deg : frame = floor((omega - start) / step)
    num_threads : 0 = OpenMP default

    Returns
    -------
    tuple (orientation int32, reflection int32, omega_deg, dir_y, dir_z, frame int32)
        ``dir_y, dir_z`` are ky/kx and kz/kx of the diffracted beam: the spot of a voxel at
        the origin is at (y, z) = Lsd * (dir_y, dir_z) on an untilted detector, and
        ``eta = atan2(-dir_y, dir_z)``.
    """
    cdef Py_ssize_t n = U.shape[0], i
    if U.shape[1] != 3 or U.shape[2] != 3 or g.shape[1] != 3:
        raise ValueError("U: expected (n, 3, 3); g: expected (m, 3)")
    if omega_ranges_deg.shape[0] != box_sizes_um.shape[0] or omega_ranges_deg.shape[1] != 2 \
            or box_sizes_um.shape[1] != 4:
        raise ValueError("omega_ranges_deg (r, 2) and box_sizes_um (r, 4) must pair up")
    if not (0.0 <= exclude_pole_deg < 90.0):
        raise ValueError(f"exclude_pole_deg: expected 0 <= value < 90, got {exclude_pole_deg}")
    if omega_step_deg == 0:
        raise ValueError("omega_step_deg: expected non-zero")
    cdef double cw = cos(wedge_deg * RAD), sw = -sin(wedge_deg * RAD)  # Ry(-wedge)
    cdef double tan_pole = np.tan(np.radians(exclude_pole_deg))
    g_arr = np.asarray(g)
    glen = np.sqrt((g_arr * g_arr).sum(axis=1))
    sin_t = 0.5 * wavelength_A * glen
    gsin_arr = np.where(sin_t < 1.0, glen * sin_t, -1.0)
    cdef const double[::1] gsin = gsin_arr
    # One pass per chunk of orientations into a buffer of 2 m rows per orientation (the most a
    # reflection list can give), then a serial compaction of each chunk.
    cdef Py_ssize_t m = g.shape[0], maxs = 2 * g.shape[0], chunk, c0, c1, r, k, total
    cdef Py_ssize_t nr = omega_ranges_deg.shape[0]
    if n == 0 or m == 0 or nr == 0:
        return (np.empty(0, np.int32), np.empty(0, np.int32)) + tuple(
            np.empty(0, np.float64) for _ in range(3)) + (np.empty(0, np.int32),)
    chunk = max(1, min(n, (1 << 19) // maxs))
    if num_threads == 0 and n * m < SMALL_WORK:
        num_threads = 1
    b_or = np.empty(chunk * maxs, dtype=np.int32)
    b_re = np.empty(chunk * maxs, dtype=np.int32)
    b_om = np.empty(chunk * maxs, dtype=np.float64)
    b_dy = np.empty(chunk * maxs, dtype=np.float64)
    b_dz = np.empty(chunk * maxs, dtype=np.float64)
    b_fr = np.empty(chunk * maxs, dtype=np.int32)
    cdef int[::1] w_or = b_or, w_re = b_re, w_fr = b_fr
    cdef double[::1] w_om = b_om, w_dy = b_dy, w_dz = b_dz
    counts = np.zeros(chunk, dtype=np.int64)
    cdef long long[::1] cnt = counts
    # Output grows geometrically; each chunk is compacted straight into it.
    cdef Py_ssize_t capacity = 0, used = 0, rr, base
    outs = None
    cdef int[::1] o_or, o_re, o_fr
    cdef double[::1] o_om, o_dy, o_dz
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        for i in prange(c0, c1, nogil=True, schedule="guided", num_threads=num_threads):
            cnt[i - c0] = _spots_of_orientation(
                i, &U[i, 0, 0], &g[0, 0], m, &gsin[0], wavelength_A, lsd0_um,
                &omega_ranges_deg[0, 0], &box_sizes_um[0, 0], nr, tan_pole,
                cw, sw, omega_start_deg, omega_step_deg, 1, (i - c0) * maxs, &w_or[0],
                &w_re[0], &w_om[0], &w_dy[0], &w_dz[0], &w_fr[0])
        total = 0
        for r in range(c1 - c0):
            total += cnt[r]
        if used + total > capacity:
            # first chunk: extrapolate to all orientations; later: grow by half
            capacity = max(used + total, <Py_ssize_t>(1.5 * capacity) if capacity else
                           <Py_ssize_t>(1.02 * total * n / (c1 - c0)) + 16)
            if outs is None:
                outs = [np.empty(capacity, dtype=b.dtype) for b in
                        (b_or, b_re, b_om, b_dy, b_dz, b_fr)]
            else:
                outs = [np.resize(o, capacity) for o in outs]
            o_or = outs[0]; o_re = outs[1]; o_om = outs[2]
            o_dy = outs[3]; o_dz = outs[4]; o_fr = outs[5]
        with nogil:
            for r in range(c1 - c0):
                base = r * maxs
                for rr in range(cnt[r]):
                    o_or[used] = w_or[base + rr]
                    o_re[used] = w_re[base + rr]
                    o_om[used] = w_om[base + rr]
                    o_dy[used] = w_dy[base + rr]
                    o_dz[used] = w_dz[base + rr]
                    o_fr[used] = w_fr[base + rr]
                    used += 1
    if capacity > used + used // 4:  # do not keep much unused memory alive
        return tuple(o[:used].copy() for o in outs)
    return tuple(o[:used] for o in outs)


cdef inline void _project(double a, double b, double c, double s, double dy, double dz,
                          double lsd, double bcy, double bcz, double px,
                          const double *Rt, double cw, double sw,
                          double *Ypx, double *Zpx) noexcept nogil:
    """Pixel (Y, Z) where the ray from sample point (a, b, 0) along (1, dy, dz) meets the
    detector at distance lsd (MIDAS tilt convention: the ray is rotated by Rt about the beam
    centre (lsd, 0, 0) and met with the untilted plane X = lsd). c, s: cos and sin of omega."""
    cdef double xa = a * c - b * s, ya = a * s + b * c
    # stage wedge: lab = Ry(-wedge) Rz(omega) sample (sw = -sin(wedge))
    cdef double px0 = cw * xa - lsd, py0 = ya, pz0 = -sw * xa
    cdef double qx, qy, qz, ex, ey, ez, t
    # rotate point (relative to the beam centre) and direction by Rt
    qx = Rt[0] * px0 + Rt[1] * py0 + Rt[2] * pz0
    qy = Rt[3] * px0 + Rt[4] * py0 + Rt[5] * pz0
    qz = Rt[6] * px0 + Rt[7] * py0 + Rt[8] * pz0
    ex = Rt[0] + Rt[1] * dy + Rt[2] * dz
    ey = Rt[3] + Rt[4] * dy + Rt[5] * dz
    ez = Rt[6] + Rt[7] * dy + Rt[8] * dz
    t = -qx / ex
    Ypx[0] = (qy + t * ey) / px + bcy
    Zpx[0] = (qz + t * ez) / px + bcz


def project_points(const double[::1] a_um, const double[::1] b_um, const double[::1] omega_deg,
                   const double[::1] dir_y, const double[::1] dir_z, const double[::1] lsd_um,
                   const double[:, ::1] bc_px, double px_um, const double[:, ::1] Rt,
                   double wedge_deg=0.0, int num_threads=0):
    """Pixel coordinates (n, D, 2) = (Y, Z) of n rays (sample point (a, b), omega, direction)
    on each of D detector distances."""
    cdef Py_ssize_t n = a_um.shape[0], nd = lsd_um.shape[0], i, d
    out = np.empty((n, nd, 2), dtype=np.float64)
    cdef double[:, :, ::1] o = out
    cdef double cw = cos(wedge_deg * RAD), sw = -sin(wedge_deg * RAD)  # Ry(-wedge)
    if num_threads == 0 and n * nd < SMALL_WORK:
        num_threads = 1
    for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
        for d in range(nd):
            _project(a_um[i], b_um[i], cos(omega_deg[i] * RAD), sin(omega_deg[i] * RAD),
                     dir_y[i], dir_z[i], lsd_um[d],
                     bc_px[d, 0], bc_px[d, 1], px_um, &Rt[0, 0], cw, sw, &o[i, d, 0],
                     &o[i, d, 1])
    return out


cdef int _raster(const double *vy, const double *vz, int nv, int ny, int nz, bint conservative,
                 bint fill, Py_ssize_t offset, int *o_y, int *o_z) noexcept nogil:
    """Pixels of a convex polygon (pixel centres at integer coordinates), nv <= 8.

    conservative=0: pixels whose centre is inside the polygon (edges included); if none, the
    pixel holding the vertex centroid. conservative=1: every pixel whose square overlaps it.
    Pixels off the detector (0..ny-1, 0..nz-1) are dropped. Returns the count.
    """
    cdef double ymin = vy[0], ymax = vy[0], zmin = vz[0], zmax = vz[0], area = 0.0, sgn
    cdef double cy = 0.0, cz = 0.0, half, val, nrm
    cdef double e_y[8]
    cdef double e_z[8]
    cdef double e_c[8]
    cdef int k, k1, iy, iz, iy0, iy1, iz0, iz1, n = 0
    cdef bint inside
    for k in range(nv):
        k1 = k + 1 if k + 1 < nv else 0
        ymin = vy[k] if vy[k] < ymin else ymin
        ymax = vy[k] if vy[k] > ymax else ymax
        zmin = vz[k] if vz[k] < zmin else zmin
        zmax = vz[k] if vz[k] > zmax else zmax
        area = area + vy[k] * vz[k1] - vy[k1] * vz[k]
        cy = cy + vy[k]
        cz = cz + vz[k]
    sgn = 1.0 if area >= 0 else -1.0
    half = 0.5 if conservative else 0.0
    # edge k: outward normal (e_y, e_z) (counter-clockwise order; sgn fixes clockwise ones);
    # a pixel centre p is outside the (grown) edge when p . e + e_c > 0
    for k in range(nv):
        k1 = k + 1 if k + 1 < nv else 0
        e_y[k] = sgn * (vz[k1] - vz[k])
        e_z[k] = -sgn * (vy[k1] - vy[k])
        nrm = fabs(e_y[k]) + fabs(e_z[k])
        e_c[k] = -(vy[k] * e_y[k] + vz[k] * e_z[k]) - half * nrm - 1e-9 * nrm
    if conservative:
        iy0 = <int>floor(ymin + 0.5); iy1 = <int>floor(ymax + 0.5)
        iz0 = <int>floor(zmin + 0.5); iz1 = <int>floor(zmax + 0.5)
    else:
        iy0 = <int>floor(ymin) + 1; iy1 = <int>floor(ymax)
        iz0 = <int>floor(zmin) + 1; iz1 = <int>floor(zmax)
        if ymin == floor(ymin):
            iy0 = iy0 - 1
        if zmin == floor(zmin):
            iz0 = iz0 - 1
    iy0 = 0 if iy0 < 0 else iy0
    iz0 = 0 if iz0 < 0 else iz0
    iy1 = ny - 1 if iy1 > ny - 1 else iy1
    iz1 = nz - 1 if iz1 > nz - 1 else iz1
    for iy in range(iy0, iy1 + 1):
        for iz in range(iz0, iz1 + 1):
            inside = True
            for k in range(nv):
                val = iy * e_y[k] + iz * e_z[k] + e_c[k]
                if val > 0.0:
                    inside = False
                    break
            if inside:
                if fill:
                    o_y[offset + n] = iy
                    o_z[offset + n] = iz
                n += 1
    if n == 0 and not conservative:
        iy = <int>floor(cy / nv + 0.5)
        iz = <int>floor(cz / nv + 0.5)
        if iy >= 0 and iy < ny and iz >= 0 and iz < nz:
            if fill:
                o_y[offset] = iy
                o_z[offset] = iz
            n = 1
    return n


cdef int _footprint_one(Py_ssize_t j, Py_ssize_t d, const int *voxel, const double *verts,
                        int nv, const double *omega, const double *dir_y,
                        const double *dir_z, const double *lsd, const double *bc, double px,
                        const double *Rt, double cw, double sw, int ny, int nz,
                        bint conservative, bint fill, Py_ssize_t offset,
                        int *o_y, int *o_z) noexcept nogil:
    """Footprint of spot j on distance d (raw pointers: verts (nvox, nv, 2), bc (D, 2))."""
    cdef double vy[8]
    cdef double vz[8]
    cdef int k
    cdef const double *v = verts + 2 * nv * voxel[j]
    cdef double c = cos(omega[j] * RAD), s = sin(omega[j] * RAD)
    for k in range(nv):
        _project(v[2 * k], v[2 * k + 1], c, s, dir_y[j], dir_z[j], lsd[d],
                 bc[2 * d], bc[2 * d + 1], px, Rt, cw, sw, &vy[k], &vz[k])
    return _raster(vy, vz, nv, ny, nz, conservative, fill, offset, o_y, o_z)


def footprints(const int[::1] voxel, const double[:, :, ::1] verts,
               const double[::1] omega_deg, const double[::1] dir_y, const double[::1] dir_z,
               const double[::1] lsd_um, const double[:, ::1] bc_px, double px_um,
               const double[:, ::1] Rt, double wedge_deg, int ny, int nz,
               bint conservative=False, int num_threads=0):
    """Detector pixels covered by spots: spot j of voxel ``voxel[j]`` (polygon ``verts[v]``,
    (x, y) um, 3 or 4 vertices) on each distance.

    Returns
    -------
    (indptr int64 (n*D + 1), pix_y int32, pix_z int32)
        Pixels of spot j on distance d are ``pix_[indptr[j*D + d] : indptr[j*D + d + 1]]``.
    """
    cdef Py_ssize_t n = voxel.shape[0], nd = lsd_um.shape[0], j, d
    if verts.shape[1] < 3 or verts.shape[1] > 8 or verts.shape[2] != 2:
        raise ValueError("verts: expected (nvoxels, 3..8, 2)")
    cdef int nv = verts.shape[1]
    cdef double cw = cos(wedge_deg * RAD), sw = -sin(wedge_deg * RAD)  # Ry(-wedge)
    if n == 0:
        return np.zeros(1, np.int64), np.empty(0, np.int32), np.empty(0, np.int32)
    if verts.shape[0] == 0 or nd == 0:
        raise ValueError("verts, lsd_um: expected at least one voxel and one distance")
    counts = np.zeros(n * nd + 1, dtype=np.int64)
    cdef long long[::1] cnt = counts
    if num_threads == 0 and n * nd * 16 < SMALL_WORK:
        num_threads = 1
    for j in prange(n, nogil=True, schedule="guided", num_threads=num_threads):
        for d in range(nd):
            cnt[j * nd + d + 1] = _footprint_one(
                j, d, &voxel[0], &verts[0, 0, 0], nv, &omega_deg[0], &dir_y[0], &dir_z[0],
                &lsd_um[0], &bc_px[0, 0], px_um, &Rt[0, 0], cw, sw, ny, nz, conservative, 0, 0,
                NULL, NULL)
    np.cumsum(counts, out=counts)
    total = counts[n * nd]
    pix_y = np.empty(total, dtype=np.int32)
    pix_z = np.empty(total, dtype=np.int32)
    cdef int[::1] py_ = pix_y, pz_ = pix_z
    if total == 0:
        return counts, pix_y, pix_z
    for j in prange(n, nogil=True, schedule="guided", num_threads=num_threads):
        for d in range(nd):
            _footprint_one(j, d, &voxel[0], &verts[0, 0, 0], nv, &omega_deg[0], &dir_y[0],
                           &dir_z[0], &lsd_um[0], &bc_px[0, 0], px_um, &Rt[0, 0], cw, sw, ny,
                           nz, conservative, 1, cnt[j * nd + d], &py_[0], &pz_[0])
    return counts, pix_y, pix_z


def set_bits(cnp.uint8_t[:, :, :, ::1] packed, const long long[::1] dist,
             const long long[::1] frame, const int[::1] pix_y, const int[::1] pix_z):
    """Light pixels in a bit-packed stack ``packed[d, frame, y, z >> 3]`` (bit 7 - (z & 7),
    numpy.packbits 'big' order). Entries with frame out of range are skipped. Serial."""
    cdef Py_ssize_t i, n = pix_y.shape[0]
    cdef long long f
    cdef int z
    with nogil:
        for i in range(n):
            f = frame[i]
            if f < 0 or f >= packed.shape[1]:
                continue
            z = pix_z[i]
            packed[dist[i], f, pix_y[i], z >> 3] |= <cnp.uint8_t>(0x80 >> (z & 7))
