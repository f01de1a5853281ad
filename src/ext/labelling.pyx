# cython: language_level=3
"""3D connected-component labelling of a thresholded frame stack, run by run.

The volume (frame, row, col) is scanned row by row for *runs*: maximal horizontal segments of
lit voxels (``value > threshold``).  Runs are joined with a union-find whose roots are always the
smallest run index of their component, so a single forward pass gives labels in raster order of
first appearance (the order scipy.ndimage.label uses).

Work split:

1. count runs per row (parallel over frames);
2. write the run column bounds and 3. join the runs inside each frame (parallel over frames:
   a frame only touches its own runs);
4. join runs of consecutive frames (serial, O(number of runs));
5. number the roots (serial, O(number of runs));
6. optionally paint the labels into a dense int32 output (parallel over frames).

Runs of row ``a`` and row ``b`` are neighbours when their column ranges overlap (6-connectivity,
``reach = 0``) or overlap after widening by one column (8 in plane / 26 in 3D, ``reach = 1``).

``frame_edges`` gives the label pairs that connect the runs of two frames; the Python front uses
it to merge labels across chunk borders and across the wrap of a 360-degree scan.
``run_statistics`` gives per-label voxel count, sum, maximum (first in raster order on ties) and
bounding box, read straight from the runs.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t, uint32_t
from libc.math cimport nextafterf, floor, INFINITY

cnp.import_array()

ctypedef fused pixel_t:
    uint8_t
    uint16_t
    int32_t
    uint32_t
    float
    double


cdef inline int64_t find_root(int64_t *parent, int64_t i) noexcept nogil:
    """Root of ``i`` with path compression."""
    cdef int64_t root = i, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


cdef inline void unite(int64_t *parent, int64_t a, int64_t b) noexcept nogil:
    """Join the sets of ``a`` and ``b``; the smaller root index stays the root."""
    a = find_root(parent, a)
    b = find_root(parent, b)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


cdef void merge_rows(int64_t *parent, const int32_t *c0, const int32_t *c1,
                     int64_t a, int64_t a_end, int64_t b, int64_t b_end,
                     int reach) noexcept nogil:
    """Unite every pair of neighbouring runs of two sorted rows (two-pointer sweep)."""
    while a < a_end and b < b_end:
        if c0[a] < c1[b] + reach and c0[b] < c1[a] + reach:
            unite(parent, a, b)
        if c1[a] < c1[b]:
            a = a + 1
        else:
            b = b + 1


cdef inline int64_t count_runs(const pixel_t *row, Py_ssize_t n, double threshold,
                               float threshold_f, int32_t threshold_i) noexcept nogil:
    """Number of runs of ``value > threshold`` in a row of ``n`` voxels.

    float32 rows compare with ``threshold_f``, the largest float32 not above ``threshold``
    (``v > threshold`` iff ``v > threshold_f`` for every float32 v), so the loop stays in single
    precision and vectorises twice as wide; uint8/uint16 rows compare with the integer
    ``threshold_i`` (floor of the threshold clamped to [-1, 65536]) for the same reason.
    """
    cdef Py_ssize_t c
    cdef int64_t starts
    if pixel_t is float:
        starts = <int64_t>(row[0] > threshold_f)
        for c in range(1, n):
            starts += (row[c] > threshold_f) > (row[c - 1] > threshold_f)  # NaN is never lit
    elif pixel_t is uint8_t or pixel_t is uint16_t:
        starts = <int64_t>(<int32_t>row[0] > threshold_i)
        for c in range(1, n):
            starts += (<int32_t>row[c] > threshold_i) > (<int32_t>row[c - 1] > threshold_i)
    else:
        starts = <int64_t>(row[0] > threshold)
        for c in range(1, n):
            starts += (row[c] > threshold) > (row[c - 1] > threshold)
    return starts


cdef inline int is_lit(const pixel_t *row, Py_ssize_t c, double threshold, float threshold_f,
                       int32_t threshold_i) noexcept nogil:
    """``row[c] > threshold`` in the cheapest exact form for the pixel type (see ``count_runs``)."""
    if pixel_t is float:
        return row[c] > threshold_f
    elif pixel_t is uint8_t or pixel_t is uint16_t:
        return <int32_t>row[c] > threshold_i
    else:
        return row[c] > threshold


cdef inline void fill_runs(const pixel_t *row, Py_ssize_t n, double threshold, float threshold_f,
                           int32_t threshold_i, int32_t *c0, int32_t *c1) noexcept nogil:
    """Write the first and one-past-last column of each run of a row.

    The row is read in blocks of 32 voxels; a block without any lit/unlit change (most of them
    at 1% lit) is skipped after one vectorisable test.
    """
    cdef Py_ssize_t c, j, end
    cdef int64_t k = 0
    cdef int lit, inside = 0, changed
    c = 0
    while c < n:
        end = c + 32 if c + 32 < n else n
        changed = is_lit(row, c, threshold, threshold_f, threshold_i) != inside
        for j in range(c + 1, end):
            changed |= is_lit(row, j, threshold, threshold_f, threshold_i) \
                != is_lit(row, j - 1, threshold, threshold_f, threshold_i)
        if changed:
            for j in range(c, end):
                lit = is_lit(row, j, threshold, threshold_f, threshold_i)
                if lit != inside:
                    if lit:
                        c0[k] = <int32_t>j
                    else:
                        c1[k] = <int32_t>j
                        k += 1
                    inside = lit
        c = end
    if inside:
        c1[k] = <int32_t>n


def label_runs(pixel_t[:, :, ::1] volume, double threshold, int connectivity,
               int32_t[:, :, ::1] out=None, int64_t label_offset=0):
    """Label the lit voxels (``value > threshold``) of one block of frames.

    Parameters
    ----------
    volume : ndarray, shape (frames, rows, cols), C-contiguous
    threshold : float
        Voxels strictly above it are lit.
    connectivity : {6, 26}
    out : int32 ndarray of the same shape, zero-filled, optional
        Receives ``label + 1 + label_offset`` on lit voxels (background stays 0).
    label_offset : int
        Added to the painted labels (chunked labelling numbers labels across chunks).

    Returns
    -------
    row_ptr : int64 ndarray (frames * rows + 1,)
        Runs of row ``r`` of frame ``f`` are ``row_ptr[f * rows + r]: row_ptr[f * rows + r + 1]``.
    c0, c1 : int32 ndarrays (n_runs,)
        First and one-past-last column of each run.
    labels : int64 ndarray (n_runs,)
        0-based label of each run, numbered in raster order of first appearance.
    n : int
        Number of components.
    """
    cdef Py_ssize_t F = volume.shape[0], R = volume.shape[1], C = volume.shape[2]
    cdef Py_ssize_t f, r, c
    cdef int64_t i, k, n_runs, start, root
    cdef int reach
    if connectivity == 6:
        reach = 0
    elif connectivity == 26:
        reach = 1
    else:
        raise ValueError(f"connectivity: expected 6 or 26, got {connectivity}")
    if out is not None and (out.shape[0] != F or out.shape[1] != R or out.shape[2] != C):
        raise ValueError("out: expected the shape of volume")

    cdef float threshold_f = <float>threshold
    if threshold_f > threshold:
        threshold_f = nextafterf(threshold_f, -INFINITY)
    cdef int32_t threshold_i = 65536  # NaN: nothing lit
    if threshold < -1.0:
        threshold_i = -1
    elif threshold < 65536.0:
        threshold_i = <int32_t>floor(threshold)
    row_ptr_arr = np.zeros(F * R + 1, dtype=np.int64)
    cdef int64_t[::1] row_ptr = row_ptr_arr
    # 1. count runs per row: a run starts where a lit voxel follows an unlit one (branch-free,
    #    so the compiler can vectorise it)
    for f in prange(F, nogil=True, schedule="static"):
        for r in range(R):
            row_ptr[f * R + r + 1] = count_runs(&volume[f, r, 0], C, threshold, threshold_f, threshold_i)
    for i in range(F * R):
        row_ptr[i + 1] += row_ptr[i]
    n_runs = row_ptr[F * R]

    c0_arr = np.empty(n_runs, dtype=np.int32)
    c1_arr = np.empty(n_runs, dtype=np.int32)
    parent_arr = np.arange(n_runs, dtype=np.int64)
    labels_arr = np.empty(n_runs, dtype=np.int64)
    cdef int32_t[::1] c0 = c0_arr
    cdef int32_t[::1] c1 = c1_arr
    cdef int64_t[::1] parent = parent_arr
    cdef int64_t[::1] labels = labels_arr
    cdef int32_t *pc0 = &c0[0] if n_runs > 0 else NULL
    cdef int32_t *pc1 = &c1[0] if n_runs > 0 else NULL
    cdef int64_t *pparent = &parent[0] if n_runs > 0 else NULL
    if n_runs == 0:
        return row_ptr_arr, c0_arr, c1_arr, labels_arr, 0

    # 2. run bounds (rows without runs are skipped), then 3. join the rows of the same frame:
    #    a frame only touches its own runs, so frames run in parallel
    for f in prange(F, nogil=True, schedule="static"):
        for r in range(R):
            k = row_ptr[f * R + r]
            if k != row_ptr[f * R + r + 1]:
                fill_runs(&volume[f, r, 0], C, threshold, threshold_f, threshold_i,
                          pc0 + k, pc1 + k)
        for r in range(1, R):
            merge_rows(pparent, pc0, pc1, row_ptr[f * R + r - 1], row_ptr[f * R + r],
                       row_ptr[f * R + r], row_ptr[f * R + r + 1], reach)

    # 4. join consecutive frames
    with nogil:
        for f in range(1, F):
            for r in range(R):
                start = row_ptr[f * R + r]
                if start == row_ptr[f * R + r + 1]:
                    continue
                merge_rows(pparent, pc0, pc1, row_ptr[(f - 1) * R + r],
                           row_ptr[(f - 1) * R + r + 1], start, row_ptr[f * R + r + 1], reach)
                if reach:
                    if r > 0:
                        merge_rows(pparent, pc0, pc1, row_ptr[(f - 1) * R + r - 1],
                                   row_ptr[(f - 1) * R + r], start, row_ptr[f * R + r + 1], 1)
                    if r + 1 < R:
                        merge_rows(pparent, pc0, pc1, row_ptr[(f - 1) * R + r + 1],
                                   row_ptr[(f - 1) * R + r + 2], start, row_ptr[f * R + r + 1], 1)

        # 5. number the roots (a root is the smallest run index of its set)
        k = 0
        for i in range(n_runs):
            root = find_root(pparent, i)
            if root == i:
                labels[i] = k
                k = k + 1
            else:
                labels[i] = labels[root]

    # 6. paint
    if out is not None:
        for f in prange(F, nogil=True, schedule="static"):
            for r in range(R):
                for i in range(row_ptr[f * R + r], row_ptr[f * R + r + 1]):
                    for c in range(c0[i], c1[i]):
                        out[f, r, c] = <int32_t>(labels[i] + 1 + label_offset)
    return row_ptr_arr, c0_arr, c1_arr, labels_arr, k


def frame_edges(const int64_t[::1] row_ptr_a, const int32_t[::1] c0_a, const int32_t[::1] c1_a,
                const int64_t[::1] labels_a,
                const int64_t[::1] row_ptr_b, const int32_t[::1] c0_b, const int32_t[::1] c1_b,
                const int64_t[::1] labels_b, int connectivity):
    """Label pairs ``(label_a, label_b)`` of neighbouring runs in two adjacent frames.

    ``row_ptr_a`` (rows + 1,) indexes the runs of frame a (starting at 0); same for b.
    Returns an int64 array (n_pairs, 2), unique pairs sorted.
    """
    cdef Py_ssize_t R = row_ptr_a.shape[0] - 1
    cdef Py_ssize_t r, dr, rb
    cdef int64_t a, b, a_end, b_end, n = 0, cap = 64
    cdef int reach
    if connectivity == 6:
        reach = 0
    elif connectivity == 26:
        reach = 1
    else:
        raise ValueError(f"connectivity: expected 6 or 26, got {connectivity}")
    if row_ptr_b.shape[0] != R + 1:
        raise ValueError("row_ptr_b: expected as many rows as row_ptr_a")
    pairs = np.empty((cap, 2), dtype=np.int64)
    cdef int64_t[:, ::1] p = pairs
    for r in range(R):
        for dr in range(-reach, reach + 1):
            rb = r + dr
            if rb < 0 or rb >= R:
                continue
            a = row_ptr_a[r]
            a_end = row_ptr_a[r + 1]
            b = row_ptr_b[rb]
            b_end = row_ptr_b[rb + 1]
            while a < a_end and b < b_end:
                if c0_a[a] < c1_b[b] + reach and c0_b[b] < c1_a[a] + reach:
                    if n == cap:
                        cap *= 2
                        pairs = np.resize(pairs, (cap, 2))
                        p = pairs
                    p[n, 0] = labels_a[a]
                    p[n, 1] = labels_b[b]
                    n += 1
                if c1_a[a] < c1_b[b]:
                    a += 1
                else:
                    b += 1
    if n == 0:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(pairs[:n], axis=0)


def run_statistics(pixel_t[:, :, ::1] volume, const int64_t[::1] row_ptr,
                   const int32_t[::1] c0, const int32_t[::1] c1,
                   const int64_t[::1] labels, int64_t n):
    """Per-label statistics read from the runs of :func:`label_runs`.

    Returns
    -------
    count : int64 (n,)
    total : float64 (n,)  sum of voxel values
    maximum : float64 (n,)
    argmax : int64 (n,)  flat index (in this block) of the maximum; ties: the lowest index
    bbox : int64 (n, 6)  frame, row, col minimum then frame, row, col maximum (inclusive)
    """
    cdef Py_ssize_t F = volume.shape[0], R = volume.shape[1], C = volume.shape[2]
    cdef Py_ssize_t f, r, c
    cdef int64_t i, lab
    cdef double v
    count_arr = np.zeros(n, dtype=np.int64)
    total_arr = np.zeros(n, dtype=np.float64)
    max_arr = np.full(n, -np.inf, dtype=np.float64)
    argmax_arr = np.full(n, -1, dtype=np.int64)
    bbox_arr = np.empty((n, 6), dtype=np.int64)
    if n == 0:
        return count_arr, total_arr, max_arr, argmax_arr, bbox_arr
    bbox_arr[:, :3] = np.iinfo(np.int64).max
    bbox_arr[:, 3:] = -1
    cdef int64_t[::1] count = count_arr
    cdef double[::1] total = total_arr
    cdef double[::1] vmax = max_arr
    cdef int64_t[::1] argmax = argmax_arr
    cdef int64_t[:, ::1] bbox = bbox_arr
    with nogil:
        for f in range(F):
            for r in range(R):
                for i in range(row_ptr[f * R + r], row_ptr[f * R + r + 1]):
                    lab = labels[i]
                    count[lab] += c1[i] - c0[i]
                    for c in range(c0[i], c1[i]):
                        v = <double>volume[f, r, c]
                        total[lab] += v
                        if v > vmax[lab] or argmax[lab] < 0:
                            vmax[lab] = v
                            argmax[lab] = (f * R + r) * C + c
                    if f < bbox[lab, 0]:
                        bbox[lab, 0] = f
                    if r < bbox[lab, 1]:
                        bbox[lab, 1] = r
                    if c0[i] < bbox[lab, 2]:
                        bbox[lab, 2] = c0[i]
                    if f > bbox[lab, 3]:
                        bbox[lab, 3] = f
                    if r > bbox[lab, 4]:
                        bbox[lab, 4] = r
                    if c1[i] - 1 > bbox[lab, 5]:
                        bbox[lab, 5] = c1[i] - 1
    return count_arr, total_arr, max_arr, argmax_arr, bbox_arr


def relabel(int32_t[:, :, ::1] labels, const int32_t[::1] lut):
    """Replace every label ``l`` by ``lut[l]`` in place (parallel over frames)."""
    cdef Py_ssize_t F = labels.shape[0], R = labels.shape[1], C = labels.shape[2]
    cdef Py_ssize_t f, r, c
    for f in prange(F, nogil=True, schedule="static"):
        for r in range(R):
            for c in range(C):
                if labels[f, r, c] != 0:
                    labels[f, r, c] = lut[labels[f, r, c]]
