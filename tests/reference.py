"""Slow, obviously-correct NumPy reference implementations of every xreduce kernel.

Tests compare the compiled kernels (Cython and OpenCL) against these. Each function is written
for clarity, not speed: plain loops and textbook formulas, no shared code with the package.
"""
import numpy as np


# =====================================================================================
# Geometry (foundation)
# =====================================================================================



# =====================================================================================
# Sparse matrix builder: pixel splitting (integration)
# =====================================================================================



# =====================================================================================
# Integration: sums, intensities, uncertainties (integration)
# =====================================================================================



# =====================================================================================
# Medians (DCT preprocessing)
# =====================================================================================



# =====================================================================================
# Labelling and double-threshold segmentation (DCT)
# =====================================================================================



# =====================================================================================
# NF-HEDM
# =====================================================================================


def nf_b_matrix(lattice_parameter):
    """B from the reciprocal basis by cross products, put in the frame of the QR factorisation.

    a, b, c are built in an arbitrary orthonormal frame; a* = (b x c) / V etc. B is the upper
    triangular R of [a* b* c*] = Q R (positive diagonal): a* along x, b* in the xy plane.
    """
    a, b, c, al, be, ga = lattice_parameter
    al, be, ga = np.radians([al, be, ga])
    va = np.array([a, 0.0, 0.0])
    vb = np.array([b * np.cos(ga), b * np.sin(ga), 0.0])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    vc = np.array([cx, cy, np.sqrt(c * c - cx * cx - cy * cy)])
    vol = np.dot(va, np.cross(vb, vc))
    recip = np.column_stack([np.cross(vb, vc), np.cross(vc, va), np.cross(va, vb)]) / vol
    q, r = np.linalg.qr(recip)
    signs = np.sign(np.diag(r))
    return r * signs[:, None]


def nf_misorientation_brute(R1, R2, sym_mats):
    """Misorientation angle (radians) by brute force over both sides: for every pair of
    symmetry matrices S1, S2, the rotation angle of (R1 S1)^T (R2 S2) from its trace; minimum.

    R1, R2: (n, 3, 3) orientation matrices; sym_mats: (m, 3, 3).
    """
    best = np.full(len(R1), np.inf)
    for S1 in sym_mats:
        A = R1 @ S1
        for S2 in sym_mats:
            Bm = R2 @ S2
            tr = np.einsum("nji,nji->n", A, Bm)  # trace(A^T B)
            ang = np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))
            best = np.minimum(best, ang)
    return best


def nf_spots_brute(U, g, wavelength, lsd, omega_ranges, box_sizes, exclude_pole=0.0, wedge=0.0):
    """Spots by the textbook route, one orientation and reflection at a time.

    Diffraction condition for lab G = Ry(wedge) Rz(w) U g written as a cos w + b sin w = c and
    solved as a quadratic in cos w (sin w from the linear equation). eta = acos(z / |(y, z)|),
    negative when y > 0; spot y = -R sin(eta), z = R cos(eta), R = Lsd tan(2 theta) with theta
    from Bragg's law. Windows: omega (or omega +- 360) in an OmegaRange whose BoxSize holds
    (y, z). Returns a list of (orientation, reflection, omega_deg, eta_deg, y, z).
    """
    out = []
    cw, sw = np.cos(np.radians(wedge)), np.sin(np.radians(wedge))
    for i, Ui in enumerate(U):
        for m, gm in enumerate(g):
            G = Ui @ gm
            glen = np.linalg.norm(gm)
            sin_t = wavelength * glen / 2
            if sin_t >= 1:
                continue
            theta = np.arcsin(sin_t)
            # cw (Gx cos w - Gy sin w) + sw Gz = -|G| sin(theta)
            a, b, c = -cw * G[0], cw * G[1], glen * sin_t + sw * G[2]
            disc = a * a + b * b - c * c
            if disc < 0 or abs(b) < 1e-14:
                continue
            roots = set()
            for sign in (1.0, -1.0):
                cos_w = (a * c + sign * abs(b) * np.sqrt(disc)) / (a * a + b * b)
                if abs(cos_w) > 1:
                    continue
                sin_w = (c - a * cos_w) / b
                roots.add((round(cos_w, 15), round(sin_w, 15)))
            for cos_w, sin_w in roots:
                omega = np.degrees(np.arctan2(sin_w, cos_w))
                Rz = np.array([[cos_w, -sin_w, 0], [sin_w, cos_w, 0], [0, 0, 1]])
                Ry = np.array([[cw, 0, sw], [0, 1, 0], [-sw, 0, cw]])
                Gl = Ry @ Rz @ G
                eta = np.degrees(np.arccos(Gl[2] / np.hypot(Gl[1], Gl[2])))
                if Gl[1] > 0:
                    eta = -eta
                if abs(eta) < exclude_pole or 180 - abs(eta) < exclude_pole:
                    continue
                R = lsd * np.tan(2 * theta)
                y, z = -R * np.sin(np.radians(eta)), R * np.cos(np.radians(eta))
                for (lo, hi), (y0, y1, z0, z1) in zip(omega_ranges, box_sizes):
                    if not (y0 <= y <= y1 and z0 <= z <= z1):
                        continue
                    hit = [w for w in (omega, omega + 360, omega - 360) if lo <= w <= hi]
                    if hit:
                        out.append((i, m, hit[0], eta, y, z))
                        break
    return out


def nf_ray_on_detector(point, direction, lsd, Rt, bc, px):
    """Pixel (Y, Z) where the line point + t direction meets a detector whose plane passes
    through (lsd, 0, 0) with in-plane axes Rt^T e_y and Rt^T e_z (the MIDAS tilt convention):
    solve point + t d = C + u e_y + v e_z as a 3x3 linear system."""
    C = np.array([lsd, 0.0, 0.0])
    ey = Rt.T @ np.array([0.0, 1.0, 0.0])
    ez = Rt.T @ np.array([0.0, 0.0, 1.0])
    t, u, v = np.linalg.solve(np.column_stack([direction, -ey, -ez]), C - point)
    return u / px + bc[0], v / px + bc[1]


def nf_misorientation_brute_quaternion(q1, q2, sym_q):
    """Misorientation angle (radians) by brute force with quaternions (w, x, y, z): for every
    pair S1, S2 of symmetry quaternions, the full Hamilton product (q1 S1)^-1 (q2 S2) and its
    angle 2 acos|w|; minimum over all pairs."""

    def mul(a, b):
        w1, x1, y1, z1 = a
        w2, x2, y2, z2 = b
        return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                         w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                         w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                         w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])

    out = np.empty(len(q1))
    for i in range(len(q1)):
        best = np.inf
        for s1 in sym_q:
            a = mul(q1[i], s1)
            a_inv = a * np.array([1, -1, -1, -1]) / np.dot(a, a)
            for s2 in sym_q:
                w = mul(a_inv, mul(q2[i], s2))[0]
                best = min(best, 2 * np.arccos(min(1.0, abs(w))))
        out[i] = best
    return out
