# cython: language_level=3
"""Double-threshold growth of difspots: bounded flood fills from seed maxima, in parallel.

``grow_blobs`` takes, for every seed, the position of its maximum M and its grow threshold, and
returns the connected component of voxels ``>= threshold`` that contains M, inside a box centred
on M. The box starts with half-size ``increment`` per axis and each of its six faces moves out by
``increment`` (up to a half-size of ``bb_max``) while the blob touches that face and the face is
not the edge of the volume. The result equals the component in the full ``bb_max`` box: a blob
that touches no movable face cannot leave its box. Seeds are independent and run in parallel
(``prange``, dynamic schedule), each thread with its own scratch box.

``resolve_overlaps`` then walks the blobs in a given priority order, serially, and lets each
voxel belong to the first blob that claims it (see :mod:`xreduce.dct.segment`).
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, parallel
from libc.stdint cimport int64_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset, memcpy
cimport openmp

cnp.import_array()

ctypedef fused pixel_t:
    uint8_t
    uint16_t
    int32_t
    uint32_t
    float
    double

cdef enum:
    CANDIDATE = 1  # inside the box and >= threshold
    IN_BLOB = 2


cdef int64_t fill_box(pixel_t[:, :, ::1] slab, int64_t frame_offset, const int64_t *lo,
                      const int64_t *hi, const int64_t *peak, double threshold,
                      const int *offsets, int n_offsets, uint8_t *state, int64_t *queue,
                      int64_t *packed, int64_t *bmin, int64_t *bmax) noexcept nogil:
    """Flood fill from ``peak`` inside the box ``[lo, hi]`` (global, inclusive).

    ``state`` receives the box padded by one voxel on every side (padded raster layout,
    ``(n0 + 2, n1 + 2, n2 + 2)``): 0 outside or below threshold, CANDIDATE, IN_BLOB. The zero
    border stops the fill without bounds checks, so a neighbour is one add away. ``queue`` gets
    the padded index of each blob voxel and ``packed`` its padded (frame, row, col) in 21-bit
    fields, updated by adds too (fields never underflow: blob voxels are never on the border).
    Returns the number of blob voxels and their bounding box in ``bmin``/``bmax`` (global,
    inclusive).
    """
    cdef int64_t n0 = hi[0] - lo[0] + 1, n1 = hi[1] - lo[1] + 1, n2 = hi[2] - lo[2] + 1
    cdef int64_t p1 = n1 + 2, p2 = n2 + 2
    cdef int64_t head = 0, tail = 0, li, nli, k, f, r, c, code, ncode
    cdef int64_t delta[26]
    cdef int64_t delta_packed[26]
    cdef int64_t fmin, fmax, rmin, rmax, cmin, cmax
    cdef uint8_t *dst
    cdef const pixel_t *src
    cdef int o
    for o in range(n_offsets):
        delta[o] = (offsets[3 * o] * p1 + offsets[3 * o + 1]) * p2 + offsets[3 * o + 2]
        delta_packed[o] = (<int64_t>offsets[3 * o] << 42) + (<int64_t>offsets[3 * o + 1] << 21) \
            + offsets[3 * o + 2]
    memset(state, 0, (n0 + 2) * p1 * p2)
    for f in range(n0):
        for r in range(n1):
            dst = state + ((f + 1) * p1 + r + 1) * p2 + 1
            src = &slab[lo[0] + f - frame_offset, lo[1] + r, lo[2]]
            for c in range(n2):
                dst[c] = <uint8_t>(src[c] >= threshold)
    f = peak[0] - lo[0] + 1
    r = peak[1] - lo[1] + 1
    c = peak[2] - lo[2] + 1
    fmin = fmax = f
    rmin = rmax = r
    cmin = cmax = c
    li = (f * p1 + r) * p2 + c
    if state[li] != CANDIDATE:
        return 0
    state[li] = IN_BLOB
    queue[tail] = li
    packed[tail] = (f << 42) | (r << 21) | c
    tail += 1
    while head < tail:
        li = queue[head]
        code = packed[head]
        head += 1
        for o in range(n_offsets):
            nli = li + delta[o]
            if state[nli] == CANDIDATE:
                state[nli] = IN_BLOB
                ncode = code + delta_packed[o]
                queue[tail] = nli
                packed[tail] = ncode
                tail += 1
                f = ncode >> 42
                r = (ncode >> 21) & 0x1FFFFF
                c = ncode & 0x1FFFFF
                if f < fmin:
                    fmin = f
                if f > fmax:
                    fmax = f
                if r < rmin:
                    rmin = r
                if r > rmax:
                    rmax = r
                if c < cmin:
                    cmin = c
                if c > cmax:
                    cmax = c
    bmin[0] = fmin - 1 + lo[0]
    bmax[0] = fmax - 1 + lo[0]
    bmin[1] = rmin - 1 + lo[1]
    bmax[1] = rmax - 1 + lo[1]
    bmin[2] = cmin - 1 + lo[2]
    bmax[2] = cmax - 1 + lo[2]
    return tail


def grow_blobs(pixel_t[:, :, ::1] slab, int64_t frame_offset, int64_t n_frames,
               const int64_t[:, ::1] peaks, const double[::1] thresholds,
               increment, bb_max, int connectivity, int num_threads=0):
    """Grow one blob per seed.

    Parameters
    ----------
    slab : ndarray (slab_frames, rows, cols)
        Frames ``frame_offset .. frame_offset + slab_frames - 1`` of the stack; must hold every
        frame within ``bb_max[0]`` of each peak (clipped to the stack).
    frame_offset : int
        Stack frame of ``slab[0]``.
    n_frames : int
        Frames of the whole stack (its frame edges are volume edges; slab edges are not).
    peaks : int64 (n, 3)
        Global (frame, row, col) of each seed maximum.
    thresholds : float64 (n,)
        Grow threshold of each seed: voxels ``>= threshold`` join the blob.
    increment, bb_max : 3 ints
        Box growth step and maximum half-size per axis (frame, row, col).
    connectivity : {6, 26}
    num_threads : int
        0: the OpenMP default.

    Returns
    -------
    offsets : int64 (n + 1,)
        Blob ``i`` is ``voxels[offsets[i]:offsets[i + 1]]``.
    voxels : int64
        Global flat indices ``(frame * rows + row) * cols + col``, ascending within a blob.
    values : float64
        Stack values at ``voxels``.
    boxes : int64 (n, 6)
        Final box of each seed: lower then upper corner (inclusive).
    """
    cdef Py_ssize_t n = peaks.shape[0]
    cdef int64_t R = slab.shape[1], C = slab.shape[2]
    cdef int64_t dims[3]
    cdef int64_t inc[3]
    cdef int64_t bb[3]
    cdef int offs[78]
    cdef int n_offsets = 0, df, dr, dc, k
    dims[0] = n_frames
    dims[1] = R
    dims[2] = C
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity: expected 6 or 26, got {connectivity}")
    if thresholds.shape[0] != n or (n and peaks.shape[1] != 3):
        raise ValueError("peaks, thresholds: expected shapes (n, 3) and (n,)")
    for k in range(3):
        inc[k] = int(increment[k])
        bb[k] = int(bb_max[k])
        if inc[k] < 1 or bb[k] < 1:
            raise ValueError("increment, bb_max: expected positive integers")
        if bb[k] > dims[k]:  # a larger box is clipped to the stack anyway
            bb[k] = dims[k]
        if inc[k] > bb[k]:
            inc[k] = bb[k]
        if dims[k] >= (1 << 21) - 2:
            raise ValueError("slab: every axis must be shorter than 2**21 - 2 voxels")
    for df in range(-1, 2):
        for dr in range(-1, 2):
            for dc in range(-1, 2):
                if df == 0 and dr == 0 and dc == 0:
                    continue
                if connectivity == 6 and abs(df) + abs(dr) + abs(dc) != 1:
                    continue
                offs[3 * n_offsets] = df
                offs[3 * n_offsets + 1] = dr
                offs[3 * n_offsets + 2] = dc
                n_offsets += 1
    # scratch size: the largest box
    cdef int64_t box_max = 1  # largest padded box
    for k in range(3):
        box_max *= min(2 * bb[k] + 1, dims[k]) + 2

    offsets_arr = np.zeros(n + 1, dtype=np.int64)
    boxes_arr = np.zeros((n, 6), dtype=np.int64)
    cdef int64_t[::1] counts = offsets_arr
    cdef int64_t[:, ::1] boxes = boxes_arr
    if n == 0:
        return offsets_arr, np.zeros(0, np.int64), np.zeros(0, np.float64), boxes_arr
    cdef int64_t **vox_out = <int64_t **>malloc(n * sizeof(int64_t *))
    cdef double **val_out = <double **>malloc(n * sizeof(double *))
    if vox_out == NULL or val_out == NULL:
        free(vox_out)
        free(val_out)
        raise MemoryError("grow_blobs: cannot allocate the result table")
    memset(vox_out, 0, n * sizeof(int64_t *))
    memset(val_out, 0, n * sizeof(double *))

    cdef Py_ssize_t s
    cdef int grew
    cdef int failed[1]
    failed[0] = 0
    cdef int threads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    cdef uint8_t *visited
    cdef int64_t *queue
    cdef int64_t *packed
    cdef int64_t *lo
    cdef int64_t *hi
    cdef int64_t *h_lo
    cdef int64_t *h_hi
    cdef int64_t *bmin
    cdef int64_t *bmax
    cdef int64_t *peak
    cdef int64_t count, j, f, r, c, n1, n2, li
    cdef double thr
    with nogil, parallel(num_threads=threads):
        visited = <uint8_t *>malloc(box_max)
        queue = <int64_t *>malloc(box_max * sizeof(int64_t))
        packed = <int64_t *>malloc(box_max * sizeof(int64_t))
        lo = <int64_t *>malloc(24 * sizeof(int64_t))
        if visited == NULL or queue == NULL or packed == NULL or lo == NULL:
            failed[0] = 1
        else:
            hi = lo + 3
            h_lo = lo + 6
            h_hi = lo + 9
            bmin = lo + 12
            bmax = lo + 15
            peak = lo + 18
        for s in prange(n, schedule="dynamic", chunksize=1):
            if failed[0]:
                continue
            thr = thresholds[s]
            for k in range(3):
                peak[k] = peaks[s, k]
                h_lo[k] = inc[k]
                h_hi[k] = inc[k]
            while True:
                for k in range(3):
                    lo[k] = peak[k] - h_lo[k]
                    if lo[k] < 0:
                        lo[k] = 0
                    hi[k] = peak[k] + h_hi[k]
                    if hi[k] > dims[k] - 1:
                        hi[k] = dims[k] - 1
                count = fill_box(slab, frame_offset, lo, hi, peak, thr, offs, n_offsets,
                                 visited, queue, packed, bmin, bmax)
                grew = 0
                if count > 0:
                    for k in range(3):
                        if bmin[k] == lo[k] and lo[k] > 0 and h_lo[k] < bb[k]:
                            h_lo[k] = h_lo[k] + inc[k]
                            if h_lo[k] > bb[k]:
                                h_lo[k] = bb[k]
                            grew = 1
                        if bmax[k] == hi[k] and hi[k] < dims[k] - 1 and h_hi[k] < bb[k]:
                            h_hi[k] = h_hi[k] + inc[k]
                            if h_hi[k] > bb[k]:
                                h_hi[k] = bb[k]
                            grew = 1
                if not grew:
                    break
            for k in range(3):
                boxes[s, k] = lo[k]
                boxes[s, 3 + k] = hi[k]
            counts[s + 1] = count
            if count > 0:
                vox_out[s] = <int64_t *>malloc(count * sizeof(int64_t))
                val_out[s] = <double *>malloc(count * sizeof(double))
                if vox_out[s] == NULL or val_out[s] == NULL:
                    failed[0] = 1
                else:
                    n1 = hi[1] - lo[1] + 3
                    n2 = hi[2] - lo[2] + 3
                    j = 0
                    for f in range(bmin[0], bmax[0] + 1):
                        for r in range(bmin[1], bmax[1] + 1):
                            for c in range(bmin[2], bmax[2] + 1):
                                li = ((f - lo[0] + 1) * n1 + (r - lo[1] + 1)) * n2 + (c - lo[2] + 1)
                                if visited[li] == IN_BLOB:
                                    vox_out[s][j] = (f * R + r) * C + c
                                    val_out[s][j] = <double>slab[f - frame_offset, r, c]
                                    j = j + 1
        free(visited)
        free(queue)
        free(packed)
        free(lo)

    for s in range(n):
        counts[s + 1] += counts[s]
    voxels_arr = np.empty(counts[n], dtype=np.int64)
    values_arr = np.empty(counts[n], dtype=np.float64)
    cdef int64_t[::1] voxels = voxels_arr
    cdef double[::1] values = values_arr
    for s in range(n):
        if vox_out[s] != NULL and val_out[s] != NULL and failed[0] == 0:
            memcpy(&voxels[counts[s]], vox_out[s], (counts[s + 1] - counts[s]) * sizeof(int64_t))
            memcpy(&values[counts[s]], val_out[s], (counts[s + 1] - counts[s]) * sizeof(double))
        free(vox_out[s])
        free(val_out[s])
    free(vox_out)
    free(val_out)
    if failed[0]:
        raise MemoryError("grow_blobs: out of memory for the scratch boxes or the blobs")
    return offsets_arr, voxels_arr, values_arr, boxes_arr


cdef inline uint64_t slot_of(int64_t key, int shift) noexcept nogil:
    return (<uint64_t>key * <uint64_t>0x9E3779B97F4A7C15ULL) >> shift


def resolve_overlaps(const int64_t[::1] order, const int64_t[::1] offsets,
                     const int64_t[::1] voxels, const int64_t[::1] peak_flat,
                     int64_t min_size, int64_t max_size):
    """Give each voxel to the first blob (in ``order``) that claims it.

    Walks blobs in ``order``: a blob whose peak voxel is already claimed is *absorbed*; else it
    keeps its unclaimed voxels, is *rejected* if their number is outside ``[min_size,
    max_size]`` (then it claims nothing) and otherwise *accepted* and claims them. Claims live in
    an open-addressing hash set, so memory scales with the blob voxels, not with the stack.

    Returns
    -------
    keep : uint8 (len(voxels),)  1 where the voxel stays in its blob
    status : int8 (n,)  0 accepted, 1 absorbed, 2 rejected by size
    """
    cdef Py_ssize_t n = offsets.shape[0] - 1
    cdef int64_t total = offsets[n] if n >= 0 else 0
    cdef int64_t cap = 16, i, b, v, kept
    cdef int shift = 60
    cdef uint64_t slot, mask
    while cap < 2 * total + 16:
        cap *= 2
        shift -= 1
    table_arr = np.full(cap, -1, dtype=np.int64)
    keep_arr = np.zeros(total, dtype=np.uint8)
    status_arr = np.zeros(n, dtype=np.int8)
    cdef int64_t[::1] table = table_arr
    cdef uint8_t[::1] keep = keep_arr
    cdef signed char[::1] status = status_arr
    mask = <uint64_t>(cap - 1)
    with nogil:
        for i in range(order.shape[0]):
            b = order[i]
            # peak claimed?
            slot = slot_of(peak_flat[b], shift) & mask
            while table[slot] != -1 and table[slot] != peak_flat[b]:
                slot = (slot + 1) & mask
            if table[slot] == peak_flat[b]:
                status[b] = 1
                continue
            kept = 0
            for v in range(offsets[b], offsets[b + 1]):
                slot = slot_of(voxels[v], shift) & mask
                while table[slot] != -1 and table[slot] != voxels[v]:
                    slot = (slot + 1) & mask
                if table[slot] == -1:
                    keep[v] = 1
                    kept = kept + 1
            if kept < min_size or kept > max_size:
                status[b] = 2
                for v in range(offsets[b], offsets[b + 1]):
                    keep[v] = 0
                continue
            for v in range(offsets[b], offsets[b + 1]):
                if keep[v]:
                    slot = slot_of(voxels[v], shift) & mask
                    while table[slot] != -1:
                        slot = (slot + 1) & mask
                    table[slot] = voxels[v]
    return keep_arr, status_arr
