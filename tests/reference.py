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
