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


def structure_reference(connectivity):
    """The scipy.ndimage structuring element of 6- or 26-connectivity."""
    from scipy import ndimage
    return ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)


def label_wrapped_reference(mask, connectivity):
    """Label a 360-degree stack whose last frame touches its first.

    Labels the stack with frame 0 appended after the last frame (scipy.ndimage.label), then
    merges the two labels every voxel of frame 0 received (its own and its copy's) with a
    dictionary union-find. Returns (labels, n) with labels numbered 1..n in raster order.
    """
    from scipy import ndimage
    mask = np.asarray(mask, bool)
    extended = np.concatenate([mask, mask[:1]])
    labels, n = ndimage.label(extended, structure_reference(connectivity))
    parent = {i: i for i in range(1, n + 1)}

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in zip(labels[0][mask[0]], labels[-1][mask[0]]):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    labels = labels[:-1]
    out = np.zeros(labels.shape, np.int32)
    numbering = {}
    for index in zip(*np.nonzero(mask)):
        root = find(int(labels[index]))
        if root not in numbering:
            numbering[root] = len(numbering) + 1
        out[index] = numbering[root]
    return out, len(numbering)


def label_statistics_reference(values, labels, n):
    """Voxel count, sum, maximum, flat index of the first maximum and bounding box per label."""
    rows = []
    flat_values = np.asarray(values, np.float64).ravel()
    flat_labels = labels.ravel()
    for lab in range(1, n + 1):
        where = np.nonzero(flat_labels == lab)[0]  # ascending flat indices
        vals = flat_values[where]
        first_max = where[np.argmax(vals)]  # argmax returns the first maximum
        coords = np.array(np.unravel_index(where, labels.shape))
        rows.append((len(where), vals.sum(), vals.max(), first_max,
                     np.concatenate([coords.min(axis=1), coords.max(axis=1)])))
    return rows



# =====================================================================================
# NF-HEDM
# =====================================================================================

