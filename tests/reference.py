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


def split_polygon_unwrapped(corners, chi_lo=-np.pi):
    """One pixel's corners (4, 2) = (radial, chi rad) mapped into [chi_lo, chi_lo + 2 pi); when
    they span more than pi the pixel straddles the discontinuity and its low corners get 2 pi."""
    poly = np.array(corners, dtype=float)
    poly[:, 1] = chi_lo + np.mod(poly[:, 1] - chi_lo, 2 * np.pi)
    if poly[:, 1].max() - poly[:, 1].min() > np.pi:
        poly[poly[:, 1] < chi_lo + np.pi, 1] += 2 * np.pi
    return poly


def split_clip_polygon(points, axis, bound, keep_above):
    """Sutherland-Hodgman against one line: keep points with coord >= bound (or <= bound)."""
    def inside(p):
        return p[axis] >= bound if keep_above else p[axis] <= bound

    out = []
    for k in range(len(points)):
        current, previous = points[k], points[k - 1]
        if inside(current) != inside(previous):
            t = (bound - previous[axis]) / (current[axis] - previous[axis])
            crossing = [previous[0] + t * (current[0] - previous[0]),
                        previous[1] + t * (current[1] - previous[1])]
            crossing[axis] = bound
            out.append(crossing)
        if inside(current):
            out.append(list(current))
    return out


def split_polygon_area(points):
    """Signed shoelace area."""
    area = 0.0
    for k in range(len(points)):
        x0, y0 = points[k - 1]
        x1, y1 = points[k]
        area += x0 * y1 - x1 * y0
    return area / 2


def split_area_in_rectangle(points, xlo, xhi, ylo, yhi):
    """Signed area of the polygon inside the rectangle, clipping by its four sides in turn."""
    for axis, bound, keep_above in ((0, xlo, True), (0, xhi, False),
                                    (1, ylo, True), (1, yhi, False)):
        points = split_clip_polygon(points, axis, bound, keep_above)
        if len(points) < 3:
            return 0.0
    return split_polygon_area(points)


def split_segments_cross(p, q, r, s):
    """True when the segments p-q and r-s cross at a point interior to both."""
    def side(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


def split_overlap_fraction(lo, hi, bin_lo, bin_hi):
    """Fraction of [lo, hi] in [bin_lo, bin_hi); a zero-width interval is a point."""
    if hi == lo:
        return 1.0 if bin_lo <= lo < bin_hi else 0.0
    return max(0.0, min(hi, bin_hi) - max(lo, bin_lo)) / (hi - lo)


def split_matrix_dense(corners, centers, split, radial_edges, azimuthal_edges=None,
                       azimuth_range_rad=None, chi_lo=-np.pi, mask=None):
    """Dense (nbins, npix) pixel-splitting matrix, one pixel and one bin at a time.

    corners (npix, k, 2) (k = 4, or 6 for hexagonal pixels) and centers (npix, 2) hold
    (radial, chi in radians). 2D when
    `azimuthal_edges` is given (bins azimuth-major); 1D otherwise, over `azimuth_range_rad`
    (None: the full circle). A pixel unwrapped past the chi period also contributes through its
    copy shifted by -2 pi. Full split: clipped area / pixel area, where a self-intersecting or
    zero-area polygon falls back to its bounding box. Pseudo: the bounding box shrunk
    about its centre to the pixel's area.
    """
    if azimuthal_edges is None:
        if azimuth_range_rad is None:
            azimuthal_edges = np.array([chi_lo, chi_lo + 2 * np.pi])
        else:
            azimuthal_edges = np.array(azimuth_range_rad, dtype=float)
    nrad, nazim = len(radial_edges) - 1, len(azimuthal_edges) - 1
    npix = len(corners) if corners is not None else len(centers)
    matrix = np.zeros((nazim * nrad, npix))
    for pixel in range(npix):
        if mask is not None and mask[pixel]:
            continue
        if split == "no":
            radial, chi = centers[pixel]
            chi = chi_lo + np.mod(chi - chi_lo, 2 * np.pi)
            for j in range(nazim):
                for i in range(nrad):
                    if (radial_edges[i] <= radial < radial_edges[i + 1]
                            and azimuthal_edges[j] <= chi < azimuthal_edges[j + 1]):
                        matrix[j * nrad + i, pixel] = 1.0
            continue
        poly = split_polygon_unwrapped(corners[pixel], chi_lo)
        origin = poly.min(axis=0)
        local = poly - origin                      # local coordinates: precise areas
        (rlo, clo), (rhi, chi) = local.min(axis=0), local.max(axis=0)
        area = split_polygon_area(local.tolist())
        box = (rlo, rhi, clo, chi)
        if split == "pseudo":
            box_area = (rhi - rlo) * (chi - clo)
            scale = np.sqrt(abs(area) / box_area) if box_area > 0 else 1.0
            mid_r, mid_c = (rlo + rhi) / 2, (clo + chi) / 2
            half_r, half_c = (rhi - rlo) / 2 * scale, (chi - clo) / 2 * scale
            box = (mid_r - half_r, mid_r + half_r, mid_c - half_c, mid_c + half_c)
        n = len(local)                             # 4 corners, or 6 for hexagonal pixels
        bow_tie = any(split_segments_cross(local[i], local[(i + 1) % n], local[j],
                                           local[(j + 1) % n])
                      for i in range(n) for j in range(i + 2, n) if (j + 1) % n != i)
        use_polygon = split == "full" and area != 0 and not bow_tie
        for j in range(nazim):
            for i in range(nrad):
                xlo, xhi = radial_edges[i] - origin[0], radial_edges[i + 1] - origin[0]
                ylo, yhi = azimuthal_edges[j] - origin[1], azimuthal_edges[j + 1] - origin[1]
                if xhi <= rlo or xlo >= rhi or not any(  # far from the pixel: nothing to clip
                        yhi + shift > clo and ylo + shift < chi for shift in (0.0, 2 * np.pi)):
                    if rhi > rlo and chi > clo:
                        continue
                if use_polygon:
                    coef = sum(split_area_in_rectangle(local.tolist(), xlo, xhi,
                                                       ylo + shift, yhi + shift)
                               for shift in (0.0, 2 * np.pi)) / area
                else:
                    coef = split_overlap_fraction(box[0], box[1], xlo, xhi) * sum(
                        split_overlap_fraction(box[2], box[3], ylo + shift, yhi + shift)
                        for shift in (0.0, 2 * np.pi))
                matrix[j * nrad + i, pixel] = coef
    return matrix



# =====================================================================================
# Integration: sums, intensities, uncertainties (integration)
# =====================================================================================

def valid_values_reference(values, dummy=None, delta_dummy=0.0, max_value_invalid=True):
    """True where a raw pixel value is usable (doc/integration.md, "What is masked"), stated
    literally, value by value: finite floats; integers >= 0, and below the dtype's maximum
    when ``max_value_invalid``; not the dummy, compared in the frame's own type: for floats
    ``|v - T(dummy)| <= T(delta_dummy)`` computed in T, for integers
    ``|v - dummy| <= delta_dummy`` exactly (as fractions)."""
    from fractions import Fraction

    values = np.asarray(values)
    kind = values.dtype.kind
    ok = np.ones(values.shape, bool)
    for i, v in np.ndenumerate(values):
        if kind == "f":
            good = bool(np.isfinite(v))
            if good and dummy is not None:
                d, delta = values.dtype.type(dummy), values.dtype.type(delta_dummy or 0.0)
                if np.isfinite(d) and np.isfinite(delta):
                    with np.errstate(over="ignore"):
                        good = not (abs(values.dtype.type(v - d)) <= delta)
        else:
            good = v >= 0 and not (max_value_invalid and v == np.iinfo(values.dtype).max)
            if good and dummy is not None:
                good = abs(Fraction(int(v)) - Fraction(dummy)) > Fraction(delta_dummy or 0.0)
        ok[i] = good
    return ok


def csr_to_dense(indptr, indices, data, npix):
    """Dense (nbins, npix) coefficient matrix of a CSR matrix (data None: coefficients 1)."""
    dense = np.zeros((len(indptr) - 1, npix))
    for b in range(len(indptr) - 1):
        for j in range(indptr[b], indptr[b + 1]):
            dense[b, indices[j]] += 1.0 if data is None else data[j]
    return dense


def integrate_dense_reference(frame, coef, norm, dark=None, variance=None, error_model=None,
                              dummy=None, delta_dummy=0.0, max_value_invalid=True):
    """Per-bin sums of doc/integration.md ("Formulas") for one frame, bin by bin with a dense matrix.

    Returns a dict: signal, variance, norm, norm2, count (each (nbins,)). Invalid pixels (see
    valid_values_reference) are left out of every sum. Azimuthal model: two-pass weighted
    spread of x = signal/norm with weights c*norm, variance = spread^2 * sum (c*norm)^2.
    """
    frame = np.asarray(frame).ravel()
    ok = valid_values_reference(frame, dummy, delta_dummy, max_value_invalid)
    if dark is not None:  # a NaN or infinite dark or variance masks its pixel
        ok &= np.isfinite(np.asarray(dark, np.float64).ravel())
    if error_model == "variance":
        ok &= np.isfinite(np.asarray(variance, np.float64).ravel())
    raw = frame.astype(np.float64)
    signal = raw - (0.0 if dark is None else np.asarray(dark, np.float64).ravel())
    if error_model == "poisson":
        var = np.maximum(raw, 1.0)
    elif error_model == "variance":
        var = np.asarray(variance, np.float64).ravel()
    else:
        var = np.zeros_like(raw)
    out = {k: np.zeros(coef.shape[0]) for k in ("signal", "variance", "norm", "norm2", "count")}
    for b in range(coef.shape[0]):
        c = np.where(ok, coef[b], 0.0)
        sel = c > 0
        c, s, n, v = c[sel], signal[sel], norm[sel], var[sel]
        out["signal"][b] = np.sum(c * s)
        out["norm"][b] = np.sum(c * n)
        out["norm2"][b] = np.sum((c * n) ** 2)
        out["count"][b] = np.sum(c)
        if error_model == "azimuthal":
            if out["norm"][b] > 0:
                w = c * n
                x = s / n
                mean = np.sum(w * x) / np.sum(w)
                spread2 = np.sum(w * (x - mean) ** 2) / np.sum(w)
                out["variance"][b] = spread2 * out["norm2"][b]
        else:
            out["variance"][b] = np.sum(c * c * v)
    return out


def bbox_matrix_reference(rad_lo, rad_hi, edges, azi_lo=None, azi_hi=None, azi_edges=None):
    """Dense (nbins, npix) matrix of bounding-box splitting, bin = i_azim * nrad + i_rad.

    Each pixel spreads uniformly over [rad_lo, rad_hi] x [azi_lo, azi_hi] (radians; an
    azimuthal box reaching beyond pi wraps round to -pi); the coefficient of a bin is the
    fraction of the box inside it. A zero-width box puts all of its weight in the bin that
    holds it (bins are half-open: [low, high)).
    """
    def fractions(lo, hi, e):
        f = np.zeros(len(e) - 1)
        if hi > lo:
            f = np.clip(np.minimum(hi, e[1:]) - np.maximum(lo, e[:-1]), 0, None) / (hi - lo)
        elif e[0] <= lo < e[-1]:
            f[np.searchsorted(e, lo, side="right") - 1] = 1.0
        return f

    nrad = len(edges) - 1
    nazi = 1 if azi_edges is None else len(azi_edges) - 1
    dense = np.zeros((nrad * nazi, len(rad_lo)))
    for i in range(len(rad_lo)):
        fr = fractions(rad_lo[i], rad_hi[i], edges)
        if azi_edges is None:
            fa = np.ones(1)
        else:
            fa = fractions(azi_lo[i], azi_hi[i], azi_edges)
            if azi_hi[i] > np.pi:
                fa = fa + fractions(azi_lo[i] - 2 * np.pi, azi_hi[i] - 2 * np.pi, azi_edges)
        dense[:, i] = np.outer(fa, fr).ravel()
    return dense




def pyfai_bbox_limits(centres, corners, low_limit=None):
    """Radial box of each pixel as pyFAI's "bbox" splitting draws it (1D).

    pyFAI does not use the true bounding box of the 4 corners: it takes the pixel centre
    ``c`` plus or minus the largest distance of any corner from it,
    ``d = max_k |corner_k - c|``, i.e. a box symmetric about the centre, at least as wide as
    the true one. For units that cannot be negative (2theta, q, r) it clips the low end at
    ``low_limit`` (0), which makes the box of a pixel on the beam centre asymmetric again.

    ``centres`` (npix,), ``corners`` (npix, 4); returns (lo, hi) for
    :func:`bbox_matrix_reference`.
    """
    centres = np.asarray(centres, np.float64)
    d = np.abs(np.asarray(corners, np.float64) - centres[:, None]).max(axis=1)
    lo, hi = centres - d, centres + d
    if low_limit is not None:
        lo = np.maximum(lo, low_limit)
    return lo, hi


# =====================================================================================
# Medians (DCT preprocessing)
# =====================================================================================

# np.pad modes that match scipy.ndimage's edge modes.
_PAD_MODE = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect", "wrap": "wrap"}


def _median_of_sorted(values, even):
    """Median of a 1D array: NaN if any NaN; even counts by `even` (mean / lower / upper)."""
    if np.isnan(values).any():
        return np.nan
    ordered = np.sort(values)
    m = len(ordered)
    if even == "mean":
        return np.median(values)
    return ordered[(m - 1) // 2] if even == "lower" else ordered[m // 2]


def moving_median_reference(stack, window, axis=0, mode="nearest", even="mean"):
    """Median of each frame's explicit window of frames, per pixel (float64 or input dtype).

    The window of frame i covers frames i - window//2 .. i + (window-1)//2; frames outside
    are filled with np.pad (edge/symmetric/reflect/wrap) or dropped ("shrink").
    Odd windows and even="mean" use numpy.median directly.
    """
    data = np.moveaxis(np.asarray(stack), axis, 0)
    n = data.shape[0]
    before, after = window // 2, (window - 1) // 2
    result = []
    if mode == "shrink":
        windows = [data[max(0, i - before): min(n, i + after + 1)] for i in range(n)]
    else:
        padded = np.pad(data, [(before, after)] + [(0, 0)] * (data.ndim - 1),
                        mode=_PAD_MODE[mode])
        windows = [padded[i: i + window] for i in range(n)]
    for w in windows:
        if even == "mean":
            result.append(np.median(w, axis=0))
        else:
            flat = w.reshape(len(w), -1)
            med = [_median_of_sorted(flat[:, p], even) for p in range(flat.shape[1])]
            result.append(np.array(med).reshape(w.shape[1:]))
    return np.moveaxis(np.array(result), 0, axis)


def step_interpolation_reference(full, step, interpolation):
    """Keep frames 0, step, 2*step, ... and the last of `full` (frames on axis 0), and
    fill the others from the nearest kept frame (earlier on ties) or linearly, per pixel."""
    n = full.shape[0]
    kept = list(range(0, n, step))
    if kept[-1] != n - 1:
        kept.append(n - 1)
    result = np.empty(full.shape, np.float64)
    for i in range(n):
        left = max(k for k in kept if k <= i)
        right = min(k for k in kept if k >= i)
        if interpolation == "nearest":
            result[i] = full[left] if i - left <= right - i else full[right]
        elif left == right:
            result[i] = full[left]
        else:
            t = (i - left) / (right - left)
            a, b = full[left].astype(np.float64), full[right].astype(np.float64)
            result[i] = a + (b - a) * t
    return result


def median_filter2d_reference(frame, size, mode="reflect", cval=0.0):
    """Element of rank (rows*cols)//2 of each window of a 2D frame, NaN if the window has one.

    Same window placement and edge modes as scipy.ndimage.median_filter.
    """
    rows, cols = size
    frame = np.asarray(frame)
    pads = [(rows // 2, (rows - 1) // 2), (cols // 2, (cols - 1) // 2)]
    if mode == "constant":
        padded = np.pad(frame, pads, mode="constant", constant_values=cval)
    else:
        padded = np.pad(frame, pads, mode=_PAD_MODE[mode])
    out = np.empty_like(frame)
    rank = (rows * cols) // 2
    for r in range(frame.shape[0]):
        for c in range(frame.shape[1]):
            w = padded[r: r + rows, c: c + cols].ravel()
            out[r, c] = np.nan if np.isnan(w.astype(np.float64)).any() else np.sort(w)[rank]
    return out




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

    Diffraction condition for lab G = Ry(-wedge) Rz(w) U g (MIDAS's sign of Wedge; Ry the
    right-handed rotation about +Y) written as a cos w + b sin w = c and
    solved as a quadratic in cos w (sin w from the linear equation). eta = acos(z / |(y, z)|),
    negative when y > 0; spot y = -R sin(eta), z = R cos(eta), R = Lsd tan(2 theta) with theta
    from Bragg's law. Windows: omega (or omega +- 360) in an OmegaRange whose BoxSize holds
    (y, z). Returns a list of (orientation, reflection, omega_deg, eta_deg, y, z).
    """
    out = []
    cw, sw = np.cos(np.radians(-wedge)), np.sin(np.radians(-wedge))
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


# =====================================================================================
# NF-HEDM image processing (MIDAS's ProcessImagesCombined rules, doc/nf.md)
# =====================================================================================

def nf_process_images_reference(frames, blanket=0.0, med_filt_radius=1, do_log=False,
                                log_mask_radius=4, gauss_filt_radius=1.0):
    """Lit pixels (n_frames, NrPixelsY, NrPixelsZ) of one distance's raw frames
    (n_frames, NrPixelsZ rows, NrPixelsY columns), written plainly with NumPy/SciPy:
    per-pixel lower median of the sorted frames, I' = max(I - median - blanket, 0), a
    (2r+1)^2 median with the border of width r unchanged, I'' != 0 or MIDAS's LoG mask
    (integer kernel summed where it fits, edge = non-zero pixel with a response sign change in
    its 3x3 neighbourhood, edges filled), then y = NrPixelsY - 1 - column,
    z = NrPixelsZ - 1 - row."""
    frames = np.asarray(frames, dtype=np.float64)
    n, nz, ny = frames.shape
    background = np.sort(frames, axis=0)[(n - 1) // 2]
    out = np.zeros((n, ny, nz), bool)
    r = med_filt_radius
    for j in range(n):
        sig = np.maximum(frames[j] - background - blanket, 0.0)
        if r > 0:
            windows = np.lib.stride_tricks.sliding_window_view(sig, (2 * r + 1, 2 * r + 1))
            sig = sig.copy()
            sig[r:nz - r, r:ny - r] = np.median(windows, axis=(-2, -1))
        if do_log:
            lit = (_nf_log_mask_reference(sig, log_mask_radius, gauss_filt_radius)
                   | _nf_log_mask_reference(sig, 4, 1.0))  # MIDAS adds the (4, 1) mask
        else:
            lit = sig != 0
        for row, col in zip(*np.nonzero(lit)):
            out[j, ny - 1 - col, nz - 1 - row] = True
    return out


def _nf_log_mask_reference(sig, R, s):
    """MIDAS's LoG spot mask of one frame, written plainly."""
    from scipy import ndimage

    nz, ny = sig.shape
    kern = np.zeros((2 * R + 1, 2 * R + 1))
    for a in range(-R, R + 1):
        for b in range(-R, R + 1):
            r2 = a * a + b * b
            kern[a + R, b + R] = int(79720 * (-1 / (np.pi * s ** 4))
                                     * (1 - r2 / (2 * s * s)) * np.exp(-r2 / (2 * s * s)))
    resp = np.zeros_like(sig)
    win = np.lib.stride_tricks.sliding_window_view(sig, kern.shape)
    resp[R:nz - R, R:ny - R] = np.einsum("ijab,ab->ij", win, kern)
    edge = np.zeros(sig.shape, bool)
    for row in range(1, nz - 1):
        for col in range(1, ny - 1):
            if sig[row, col] == 0:
                continue
            me = resp[row, col] < 0
            nb = resp[row - 1:row + 2, col - 1:col + 2] < 0
            edge[row, col] = bool(np.any(nb != me))
    return ndimage.binary_fill_holes(edge)


def weighted_percentile_rings_reference(ring_of_pixel, x, w, nbins, lo, hi):
    """medfilt1d's statistic (doc/integration.md, "sigma_clip and medfilt1d"), ring by ring
    in a plain loop: pixels sorted by value ``x`` (ties by their order), pixel k spans the
    share [W_{k-1}, W_k] / W of the ring's weight. ``lo == hi == p``: the weighted mean of the
    pixels whose share's centre is exactly p/100 if any, else the value of the first pixel
    whose share contains p/100; ``lo < hi``: the weighted mean ``sum x w / sum w`` of the
    pixels whose share's centre lies in [lo, hi] / 100, else the first pixel whose share
    contains the middle percentile. NaN for an empty ring."""
    out = np.full(nbins, np.nan)
    for b in range(nbins):
        sel = np.flatnonzero(ring_of_pixel == b)
        if sel.size == 0:
            continue
        order = sel[np.lexsort((x[sel],))]
        xs, ws = x[order], w[order]
        total = ws.sum()
        upper = np.cumsum(ws) / total
        lower = upper - ws / total
        centre = (upper + lower) / 2
        keep = (centre >= lo / 100) & (centre <= hi / 100)
        if keep.any():
            out[b] = np.sum(xs[keep] * ws[keep]) / np.sum(ws[keep])
            continue
        mid = (lo + hi) / 200
        for k in range(xs.size):
            if lower[k] <= mid <= upper[k]:
                out[b] = xs[k]
                break
    return out


def sigma_clip_rings_reference(bins, signal, norm, valid, nbins, thres, max_iter):
    """sigma_clip's statistic (doc/integration.md, "sigma_clip and medfilt1d") in NumPy, for
    every ring at once: per frame, the weighted mean m and spread s2 of the kept x = s / n
    (weights n), rejecting |x - m| > thres * sqrt(s2) until nothing changes or after
    max_iter passes. Returns per frame (sum s, sum n, sum n^2, kept, nan_to_num(s2 sum n^2)).
    """
    out = []
    for f in range(signal.shape[0]):
        keep = valid[f].copy()
        s = signal[f]
        x = s / norm
        for iteration in range(max_iter + 1):
            sn = np.bincount(bins, norm * keep, nbins)
            sn2 = np.bincount(bins, norm * norm * keep, nbins)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.bincount(bins, s * keep, nbins) / sn
                spread2 = np.bincount(bins, norm * (x - mean[bins]) ** 2 * keep, nbins) / sn
            if iteration == max_iter:
                break
            reject = keep & (np.abs(x - mean[bins]) > thres * np.sqrt(spread2[bins]))
            if not reject.any():
                break
            keep &= ~reject
        out.append((np.bincount(bins, s * keep, nbins), sn, sn2,
                    np.bincount(bins, keep.astype(np.float64), nbins),
                    np.nan_to_num(spread2 * sn2)))
    return out


# ---- NF-HEDM: MIDAS's footprint and confidence rules (issue 11b) --------------------------
# Written from REFERENCE section 5b / doc/nf_fit.md without the kernels: spots from
# nf_spots_brute (textbook eta route), footprints pixel by pixel in NumPy.


def nf_midas_spots(U, g, geometry, n_frames):
    """Spots (y, z, omega_deg, frame) of one orientation U for a voxel at the origin, MIDAS's
    windows: OmegaRange / BoxSize at the first distance, ExcludePoleAngle, frames in range."""
    spots = nf_spots_brute(U[None], g, geometry.wavelength_A, geometry.lsd_um[0],
                           geometry.omega_ranges_deg, geometry.box_sizes_um,
                           geometry.exclude_pole_deg)
    out = []
    for _, _, omega, _, y, z in spots:
        frame = int(np.floor((omega - geometry.omega_start_deg) / geometry.omega_step_deg))
        if 0 <= frame < n_frames:
            out.append((y, z, omega, frame))
    return out


_NF_TILTS = {}


def _nf_tilt(geometry):
    key = tuple(geometry.tilts_deg)
    if key not in _NF_TILTS:
        _NF_TILTS[key] = _nf_tilt_matrix(key)
    return _NF_TILTS[key]


def _nf_tilt_matrix(tilts_deg):
    tx, ty, tz = np.radians(tilts_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _nf_first_pixel(point_yz, geometry):
    """MIDAS's tilt rule at the first distance: the line through P0 = R(-Lsd, 0, 0) and
    P1 = R(0, y, z) met with the plane x = 0."""
    R = _nf_tilt(geometry)
    p0 = R @ np.array([-geometry.lsd_um[0], 0.0, 0.0])
    p1 = R @ np.array([0.0, point_yz[0], point_yz[1]])
    s = -p0[0] / (p1[0] - p0[0])
    hit = p0 + s * (p1 - p0)
    bc = geometry.bc_px[0]
    return np.array([hit[1] / geometry.px_um + bc[0], hit[2] / geometry.px_um + bc[1]])


def nf_midas_footprint(spot, triangle, geometry, one_pixel):
    """Pixels of one spot's footprint, as a list of (n_distances, 2) integer arrays in
    MIDAS's order (first index outer), cut where a pixel leaves a detector; None when a
    vertex leaves the first detector (spot dropped)."""
    y, z, omega, _ = spot
    ny, nz = geometry.detector_shape
    w = np.radians(omega)
    corners = []
    for X, Y in triangle:
        xa = X * np.cos(w) - Y * np.sin(w)
        ya = X * np.sin(w) + Y * np.cos(w)
        t = 1 - xa / geometry.lsd_um[0]
        p = _nf_first_pixel((ya + y * t, z * t), geometry)
        if p[0] < 0 or p[0] > ny or p[1] < 0 or p[1] > nz:
            return None
        corners.append(p)
    centre = _nf_first_pixel((y, z), geometry)
    offsets = np.array(corners) - centre
    if one_pixel:
        cells = [np.round(offsets.mean(axis=0)).astype(int)]
    else:
        r = np.round(offsets).astype(int)
        cells = []
        for i in range(r[:, 0].min(), r[:, 0].max() + 1):
            for j in range(r[:, 1].min(), r[:, 1].max() + 1):
                p = np.array([i, j])
                keep_in, keep_near = True, False
                for k in range(3):
                    a, b = r[k], r[(k + 1) % 3]
                    edge = b - a
                    cross = edge[0] * (p - a)[1] - edge[1] * (p - a)[0]
                    keep_in &= cross >= 0
                    if edge @ edge > 0:
                        keep_near |= cross ** 2 / (edge @ edge) < 0.9801
                if keep_in or keep_near:
                    cells.append(p)
    bc0 = np.array(geometry.bc_px[0])
    bases = [np.floor((centre - bc0) * L / geometry.lsd_um[0] + np.array(bc)).astype(int)
             for L, bc in zip(geometry.lsd_um, geometry.bc_px)]
    out = []
    for cell in cells:
        pix = np.array([base + cell for base in bases])
        if np.any(pix < 0) or np.any(pix[:, 0] >= ny) or np.any(pix[:, 1] >= nz):
            break
        out.append(pix)
    return out


def nf_midas_confidence(U, triangle, g, geometry, lit, one_pixel):
    """Confidence of orientation U at a triangle voxel against a boolean lit stack
    (n_distances, n_frames, NrPixelsY, NrPixelsZ)."""
    hits = counted = 0
    for spot in nf_midas_spots(U, g, geometry, lit.shape[1]):
        pixels = nf_midas_footprint(spot, triangle, geometry, one_pixel)
        for pix in pixels or ():
            counted += 1
            hits += all(lit[d, spot[3], pix[d, 0], pix[d, 1]] for d in range(len(pix)))
    return hits / counted if counted else 0.0


def nf_midas_lit_words(orientations, triangles, g, geometry, n_frames, one_pixel):
    """Binary images where every voxel lights its own footprint at every distance, as
    SpotsInfo words (uint32, bit k = ((d * n_frames + frame) * NY + y) * NZ + z, LSB first):
    each voxel scores 1.0 at its orientation. Built from bit indices, never a dense stack."""
    ny, nz = geometry.detector_shape
    bits = []
    cache = {}
    for U, tri in zip(orientations, triangles):
        key = U.tobytes()
        if key not in cache:
            cache[key] = nf_midas_spots(U, g, geometry, n_frames)
        for spot in cache[key]:
            for pix in nf_midas_footprint(spot, tri, geometry, one_pixel) or ():
                for d in range(len(pix)):
                    bits.append(((d * n_frames + spot[3]) * ny + pix[d, 0]) * nz + pix[d, 1])
    total = len(geometry.lsd_um) * n_frames * ny * nz
    words = np.zeros((total + 31) // 32, dtype=np.uint32)
    bits = np.unique(np.asarray(bits, dtype=np.int64))
    np.bitwise_or.at(words, bits >> 5, (np.uint32(1) << (bits & 31).astype(np.uint32)))
    return words


# ---- stacks: bitshuffle-LZ4 chunks (issue 12) ------------------------------------------------


def bitshuffle_block_reference(elements):
    """The bit-shuffled bytes of one block (doc/stack.md, "Direct chunk reads"): row
    ``8 j + k`` holds bit ``k`` of byte ``j`` of every element, element ``8 g + m`` at bit
    ``m`` of byte ``g``. ``elements``: a 1D array whose length is a multiple of 8."""
    n = elements.shape[0]
    raw = np.ascontiguousarray(elements).view(np.uint8).reshape(n, elements.dtype.itemsize)
    bits = np.unpackbits(raw, axis=1, bitorder="little")  # column 8 j + k
    return np.packbits(bits.T, axis=1, bitorder="little").reshape(-1)


def lz4_literal_block_reference(data):
    """An LZ4 block that stores ``data`` (bytes) as one literal run: a valid block that any
    LZ4 decoder must give back unchanged."""
    n = len(data)
    token = min(n, 15) << 4
    extra = b""
    if n >= 15:
        rest = n - 15
        extra = b"\xff" * (rest // 255) + bytes([rest % 255])
    return bytes([token]) + extra + bytes(data)


def bitshuffle_lz4_chunk_reference(elements, block):
    """A bitshuffle-LZ4 chunk (the HDF5 filter's layout) of a 1D array, its blocks stored as
    literal-only LZ4 blocks (see :func:`lz4_literal_block_reference`)."""
    import struct

    size = elements.dtype.itemsize
    n = elements.shape[0]
    parts = [struct.pack(">QI", n * size, block * size)]
    start = 0
    while n - start >= 8:
        count = min(block, (n - start) // 8 * 8)
        payload = lz4_literal_block_reference(
            bitshuffle_block_reference(elements[start:start + count]))
        parts.append(struct.pack(">I", len(payload)) + payload)
        start += count
    parts.append(np.ascontiguousarray(elements[start:]).tobytes())
    return np.frombuffer(b"".join(parts), np.uint8)


def lz4_decode_reference(block):
    """Decode an LZ4 block byte by byte (lz4's block format: token, literal count, literals,
    2-byte little-endian offset, match length; the last sequence has literals only)."""
    out = bytearray()
    ip = 0
    while ip < len(block):
        token = block[ip]
        ip += 1
        count = token >> 4
        if count == 15:
            while True:
                count += block[ip]
                ip += 1
                if block[ip - 1] != 255:
                    break
        out += block[ip:ip + count]
        ip += count
        if ip >= len(block):
            break
        offset = block[ip] | block[ip + 1] << 8
        ip += 2
        length = token & 15
        if length == 15:
            while True:
                length += block[ip]
                ip += 1
                if block[ip - 1] != 255:
                    break
        for _ in range(length + 4):
            out.append(out[-offset])
    return bytes(out)
