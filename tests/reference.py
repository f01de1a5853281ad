"""Slow, obviously-correct NumPy reference implementations of every xreduce kernel.

Tests compare the compiled kernels (Cython and OpenCL) against these. Each function is written
for clarity, not speed: plain loops and textbook formulas, no shared code with the package.
"""
import numpy as np


# =====================================================================================
# Geometry (foundation)
# =====================================================================================

def geometry_lab_vectors(dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2, shape, offset=(0.5, 0.5)):
    """Lab vectors (t1, t2, t3) of the detector points (i + offset1, j + offset2), in metres.

    Independent of the package: the point (p1, p2, L) in the detector frame is turned by three
    textbook rotation matrices, R3 @ R2 @ R1 (rot1 applied first). i, j run over ``shape``.
    """
    i = np.arange(shape[0], dtype=np.float64)[:, None] + offset[0]
    j = np.arange(shape[1], dtype=np.float64)[None, :] + offset[1]
    p1 = i * pixel1 - poni1 + 0.0 * j
    p2 = j * pixel2 - poni2 + 0.0 * i
    p3 = np.full(p1.shape, dist)
    # Rotations of the PONI convention: about axis 1 by -rot1, about axis 2 by -rot2, about
    # axis 3 by rot3 (right-handed matrices), composed R3 @ R2 @ R1.
    c, s = np.cos, np.sin
    r1 = np.array([[1, 0, 0], [0, c(rot1), -s(-rot1)], [0, s(-rot1), c(rot1)]])
    r2 = np.array([[c(rot2), 0, s(-rot2)], [0, 1, 0], [-s(-rot2), 0, c(rot2)]])
    r3 = np.array([[c(rot3), -s(rot3), 0], [s(rot3), c(rot3), 0], [0, 0, 1]])
    rotation = r3 @ r2 @ r1
    points = np.stack([p1, p2, p3], axis=-1)            # (rows, cols, 3)
    t = points @ rotation.T
    return t[..., 0], t[..., 1], t[..., 2]


def geometry_arrays(dist, poni1, poni2, rot1, rot2, rot3, wavelength, pixel1, pixel2, shape,
                    offset=(0.5, 0.5)):
    """2theta, chi (rad), q (nm^-1), r (m), d*^2 (nm^-2) at points (i + offset1, j + offset2)."""
    t1, t2, t3 = geometry_lab_vectors(dist, poni1, poni2, rot1, rot2, rot3, pixel1, pixel2,
                                      shape, offset)
    tth = np.arctan2(np.hypot(t1, t2), t3)
    chi = np.arctan2(t1, t2)
    q = 4e-9 * np.pi / wavelength * np.sin(tth / 2)
    dstar2 = (2e-9 / wavelength * np.sin(tth / 2)) ** 2
    return {"2th": tth, "chi": chi, "q": q, "r": np.hypot(t1, t2), "d*2": dstar2}


def geometry_corners(dist, poni1, poni2, rot1, rot2, rot3, wavelength, pixel1, pixel2, shape,
                     quantity="2th"):
    """(rows, cols, 4, 2) array of (quantity, chi) at corners (0,0), (1,0), (1,1), (0,1)."""
    out = np.empty(tuple(shape) + (4, 2))
    for k, (o1, o2) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
        arrays = geometry_arrays(dist, poni1, poni2, rot1, rot2, rot3, wavelength, pixel1,
                                 pixel2, shape, offset=(o1, o2))
        out[:, :, k, 0] = arrays[quantity]
        out[:, :, k, 1] = arrays["chi"]
    return out


def geometry_solid_angle(dist, poni1, poni2, pixel1, pixel2, shape):
    """Relative solid angle cos(alpha)^3 at pixel centres, alpha from the detector normal."""
    rows, cols = shape
    out = np.empty(shape)
    for i in range(rows):
        for j in range(cols):
            p1 = (i + 0.5) * pixel1 - poni1
            p2 = (j + 0.5) * pixel2 - poni2
            out[i, j] = (dist / np.sqrt(dist ** 2 + p1 ** 2 + p2 ** 2)) ** 3
    return out


def geometry_polarization(tth, chi, factor, axis_offset):
    """Polarization factor from 2theta and chi arrays (radians)."""
    cos2 = np.cos(tth) ** 2
    return 0.5 * (1 + cos2 - factor * np.cos(2 * (chi + axis_offset)) * (1 - cos2))




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

