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


def segment_reference(stack, seed_threshold, tau, bb_max, grow_limits=None, min_seed_voxels=1,
                      min_size=1, max_size=None, connectivity=26):
    """Double-threshold segmentation, written the slow obvious way (the rules of doc/segmentation.md).

    1. seeds: components of ``stack > seed_threshold`` (scipy.ndimage.label), those with at least
       ``min_seed_voxels`` voxels;
    2. per seed: maximum M (first in raster order on ties) at p; grow threshold
       ``min(clip(tau * M, *grow_limits), M)``; the component containing p of
       ``box >= threshold``, box = p +- bb_max clipped to the stack (scipy.ndimage.label on the box);
    3. blobs in order of decreasing M, then increasing flat index of p: a blob whose p is already
       claimed is dropped; else it keeps its unclaimed voxels, is dropped if their number is outside
       [min_size, max_size], else claims them.

    Returns a list of (peak flat index, sorted flat indices of the voxels), sorted by peak.
    """
    from scipy import ndimage
    stack = np.asarray(stack)
    structure = structure_reference(connectivity)
    bb_max = np.broadcast_to(np.asarray(bb_max, int), (3,))
    max_size = np.inf if max_size is None else max_size
    seeds, n = ndimage.label(stack > seed_threshold, structure)
    flat_stack = stack.ravel().astype(np.float64)
    flat_seeds = seeds.ravel()
    blobs = []
    for lab in range(1, n + 1):
        where = np.nonzero(flat_seeds == lab)[0]
        if len(where) < min_seed_voxels:
            continue
        vals = flat_stack[where]
        peak = int(where[np.argmax(vals)])
        top = vals.max()
        threshold = tau * top
        if grow_limits is not None:
            threshold = min(max(threshold, grow_limits[0]), grow_limits[1])
        threshold = min(threshold, top)
        p = np.array(np.unravel_index(peak, stack.shape))
        lo = np.maximum(p - bb_max, 0)
        hi = np.minimum(p + bb_max + 1, stack.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        components, _ = ndimage.label(stack[box].astype(np.float64) >= threshold, structure)
        inside = np.argwhere(components == components[tuple(p - lo)]) + lo
        voxels = np.sort(np.ravel_multi_index(inside.T, stack.shape))
        blobs.append((-top, peak, voxels))
    blobs.sort(key=lambda blob: (blob[0], blob[1]))
    claimed = set()
    accepted = []
    for _, peak, voxels in blobs:
        if peak in claimed:
            continue
        kept = [int(v) for v in voxels if int(v) not in claimed]
        if not min_size <= len(kept) <= max_size:
            continue
        claimed.update(kept)
        accepted.append((peak, np.array(kept, dtype=np.int64)))
    accepted.sort(key=lambda blob: blob[0])
    return accepted



# =====================================================================================
# NF-HEDM
# =====================================================================================

