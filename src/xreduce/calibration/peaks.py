"""Ring peaks of a calibrant image: candidates without a geometry, control points with one.

Without a geometry (:func:`find_ring_candidates`): bright ridge pixels (white top-hat of the
3x3-median-smoothed image, above a robust noise threshold); a first ring centre from a
Hough-like vote (every ridge pixel votes along the line across its ridge); then the point
from which the distances of the ridge pixels nearest it form the sharpest histogram
(hill-climbing on fewer, inner rings); the ring radii as the peaks of that histogram, and a
RANSAC ellipse fit (scikit-image) of the innermost rings for a robust centre.

With a geometry (:func:`extract_control_points`): for each calibrant ring and azimuthal sector,
the pixels of a 2theta window around the expected ring, a linear background from the window's
outer parts, and the background-subtracted intensity centroid in 2theta (twice re-centred on the
peak). The centroid (2theta, chi) is turned back into a sub-pixel detector position with the
same geometry, so that a refinement can move the geometry under fixed points. See
``doc/calibration.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

from .points import angles_at, pixels_at_angles

__all__ = ["valid_pixels", "RingCandidates", "find_ring_candidates", "ControlPoints",
           "extract_control_points"]


def valid_pixels(image: np.ndarray, detector, mask=None) -> np.ndarray:
    """Boolean map of usable pixels: not masked by the detector or ``mask``, finite, not
    negative, and not the largest value of an integer type when the detector marks invalid
    pixels that way (``Detector.max_value_invalid``, doc/integration.md)."""
    image = np.asarray(image)
    valid = np.ones(image.shape, dtype=bool)
    if detector.mask is not None:
        valid &= np.asarray(detector.mask) == 0
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise ValueError(f"mask: expected shape {image.shape}, got {mask.shape}")
        valid &= mask == 0
    if image.dtype.kind == "f":
        valid &= np.isfinite(image)
    if image.dtype.kind in "fi":
        valid &= image >= 0
    if image.dtype.kind in "iu" and detector.max_value_invalid:
        valid &= image != np.iinfo(image.dtype).max
    return valid


@dataclass(frozen=True)
class RingCandidates:
    """What the image alone says about its rings.

    Attributes
    ----------
    centre : (row, col) of the common centre of the rings, pixel coordinates.
    radii : radii (pixels) of the rings seen, increasing: the mean radius of a RANSAC ellipse
        fit (rings whose ellipse fit fails, such as smeared outer rings of a tilted detector,
        are left out).
    strengths : summed ridge intensity of each ring (same order).
    rows, cols, weights : the ridge pixels used (pixel coordinates, top-hat value).
    """

    centre: tuple
    radii: np.ndarray
    strengths: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray


def _ridge(image: np.ndarray, valid: np.ndarray, width_px: int) -> np.ndarray:
    """White top-hat (image minus its grey opening) of the 3x3-median-smoothed image."""
    values = np.asarray(image, dtype=np.float64)
    fill = float(np.median(values[valid])) if valid.any() else 0.0
    values = np.where(valid, values, fill)
    values = ndimage.median_filter(values, size=3)
    opened = ndimage.grey_opening(values, size=(width_px, width_px))
    ridge = values - opened
    ridge[~ndimage.binary_erosion(valid, iterations=1, border_value=1)] = 0.0
    return ridge


def _sharpness(rows, cols, weights, centres, bin_px: float) -> np.ndarray:
    """How ring-like the distances from each of ``centres`` (m, 2) are: the power of the
    distance histogram above its 7-bin running mean (a narrow but smooth distribution, as seen
    from a point far outside the pattern, scores low). Weights are divided by the distance, so
    that every ring counts alike whatever its circumference: inner rings, the least distorted
    by a detector tilt, matter as much as outer ones. Pixels within 8 px of a centre are left
    out (a centre placed on a ridge would otherwise score that ridge's own pixels)."""
    centres = np.atleast_2d(np.asarray(centres, dtype=np.float64))
    scores = np.empty(len(centres))
    for start in range(0, len(centres), 64):  # 64 histograms at a time, one bincount
        block = centres[start:start + 64]
        r = np.hypot(rows[None, :] - block[:, :1], cols[None, :] - block[:, 1:])
        bins = (r / bin_px).astype(np.int64)
        width = int(bins.max()) + 1
        flat = bins + width * np.arange(len(block))[:, None]
        # pixels within 8 px do not count: a candidate on a ridge would score its own ridge
        weight = np.where(r < 8.0, 0.0, weights[None, :] / (r + 10.0))
        hist = np.bincount(flat.ravel(), weights=weight.ravel(),
                           minlength=width * len(block)).reshape(len(block), width)
        detail = hist - ndimage.uniform_filter1d(hist, 7, axis=1, mode="constant")
        scores[start:start + 64] = np.einsum("ij,ij->i", detail, detail)
    return scores


def _ridge_normals(ridge: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Direction (radians, in the (row, col) plane) across the ridge at each ridge pixel, from
    the Hessian of the Gaussian-smoothed ridge map: ``0.5 atan2(2 h_rc, h_rr - h_cc)`` is the
    direction along the ridge (the eigenvector of the largest eigenvalue), the normal is
    perpendicular to it. The doubled-angle components are smoothed over 1.5 pixels first (as
    a structure tensor is), which halves the scatter of the directions on noisy rings."""
    h_rr = ndimage.gaussian_filter(ridge, 1.5, order=(2, 0))
    h_cc = ndimage.gaussian_filter(ridge, 1.5, order=(0, 2))
    h_rc = ndimage.gaussian_filter(ridge, 1.5, order=(1, 1))
    along_cos = ndimage.gaussian_filter(h_rr - h_cc, 1.5)
    along_sin = ndimage.gaussian_filter(2 * h_rc, 1.5)
    r, c = rows.astype(np.int64), cols.astype(np.int64)
    return 0.5 * np.arctan2(along_sin[r, c], along_cos[r, c]) + 0.5 * np.pi


def _vote_centre(rows, cols, weights, normals, shape, cell_px: float = 2.0) -> tuple:
    """Hough-like vote for the ring centre: every ridge pixel votes along the line through it
    across its ridge (a ring's normals meet at its centre, however dense the rings); the
    maximum of the smoothed vote map, which extends a quarter of the detector beyond each
    edge. A vote counts 1 / (distance from its pixel + 10 px), so that every ring votes alike
    for its centre whatever its circumference and the inner rings, whose centres a tilt moves
    least, are not outvoted by the many outer ones."""
    margin = 0.25 * np.asarray(shape, dtype=np.float64)
    origin = -margin
    size = np.ceil((np.asarray(shape) + 2 * margin) / cell_px).astype(np.int64)
    reach = float(np.hypot(*shape))
    steps = np.arange(-reach, reach + cell_px, cell_px)
    steps = steps[np.abs(steps) > 3.0]  # not at the pixel itself
    votes = np.zeros(int(size[0] * size[1]))
    direction_r, direction_c = np.cos(normals), np.sin(normals)
    for start in range(0, rows.size, 256):  # 256 lines at a time
        part = slice(start, start + 256)
        r = (rows[part, None] + direction_r[part, None] * steps - origin[0]) / cell_px
        c = (cols[part, None] + direction_c[part, None] * steps - origin[1]) / cell_px
        inside = (r >= 0) & (c >= 0) & (r < size[0]) & (c < size[1])
        flat = r.astype(np.int64)[inside] * size[1] + c.astype(np.int64)[inside]
        vote = weights[part, None] / (np.abs(steps) + 10.0)
        votes += np.bincount(flat, weights=vote[inside], minlength=votes.size)
    votes = ndimage.gaussian_filter(votes.reshape(size), 1.0)
    best = np.unravel_index(int(np.argmax(votes)), votes.shape)
    return tuple(float(x) for x in origin + (np.asarray(best) + 0.5) * cell_px)


def _gap_near(r: np.ndarray, weights: np.ndarray, radius: float) -> float:
    """The emptiest radius (1-px bins of the ridge weight, smoothed over 2 px) within 20 % of
    ``radius``: a cut between two rings rather than through one (cutting through a ring seen
    from an off-centre point keeps only its near side and pulls the centre towards it)."""
    if radius >= r.max():
        return radius
    hist = ndimage.uniform_filter1d(np.bincount(r.astype(np.int64), weights=weights), 3)
    low, high = int(0.8 * radius), min(int(1.2 * radius) + 1, hist.size)
    if high <= low:
        return radius
    return float(low + int(np.argmin(hist[low:high])) + 0.5)


def _centre_of_inner_rings(rows, cols, weights, centre, rng, fractions=(1.0, 0.5, 0.25, 0.12),
                           min_points: int = 300, max_points: int = 6000) -> tuple:
    """Hill-climb from ``centre`` to the sharpest distance histogram (:func:`_sharpness`) of the
    ridge pixels nearest it: all of them, then the nearest half, quarter and eighth (each cut
    moved to a gap between rings, :func:`_gap_near`; at most ``max_points`` of each set, drawn
    with ``rng``, so that the inner rings keep their pixels on dense images).

    On a tilted detector each ring is an ellipse whose centre moves away from the beam as
    ``dist tan(tilt) tan^2(2theta)``: at short distance (many rings at large angles) the outer
    rings pull the sharpest point of all the rings tens of pixels off, while the inner rings'
    centres stay within a pixel of the beam (doc/calibration.md)."""
    centre = np.asarray(centre, dtype=np.float64)
    for fraction in fractions:
        r = np.hypot(rows - centre[0], cols - centre[1])
        near = np.flatnonzero(r <= _gap_near(r, weights, float(np.quantile(r, fraction))))
        if near.size < min_points:
            break
        if near.size > max_points:  # at most max_points of them, drawn from the nearest
            near = rng.choice(near, max_points, replace=False)
        step = 8.0
        for _ in range(40):  # 7 x 7 grids: move while the best point is not the middle one
            offsets = np.arange(-3, 4) * step
            local = np.array([(centre[0] + dr, centre[1] + dc) for dr in offsets for dc in offsets])
            scores = _sharpness(rows[near], cols[near], weights[near], local, max(step / 3, 0.5))
            best = int(np.argmax(scores))
            centre = local[best]
            if best == 24:  # the middle: finer
                step /= 2.5
                if step < 0.3:
                    break
    return float(centre[0]), float(centre[1])


def _ridge_threshold(values: np.ndarray, threshold_sigma: float) -> float:
    """Ridge level above the noise: median + ``threshold_sigma`` robust standard deviations
    (1.4826 MAD) of the values.

    On dense patterns (short distance) more than half of the pixels lie on rings, which raises
    the median and MAD so far that the weak inner rings fall below them; the same level is
    then taken from the lowest quarter of the values (a normal distribution's 6.25th and 25th
    percentiles lie 1.534 and 0.674 sigma below its median), when that is below half the
    first (on ordinary images the two agree within a few tens of per cent)."""
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    spread = max(spread, 1e-3 * float(np.percentile(values, 99.9)), 1e-12)
    level = median + threshold_sigma * spread
    low, quarter = np.percentile(values, [6.25, 25.0])
    tail_spread = max(float(quarter - low) / (1.534 - 0.674), 1e-12)
    tail_level = float(quarter) + (0.674 + threshold_sigma) * tail_spread
    return tail_level if tail_level < 0.5 * level else level


def find_ring_candidates(image: np.ndarray, detector, mask=None, *, width_px: int = 15,
                         threshold_sigma: float = 5.0, max_points: int = 6000,
                         seed: int = 0) -> RingCandidates:
    """Beam centre and ring radii from the image alone (no geometry).

    Parameters
    ----------
    image : 2D array
    detector : xreduce.detectors.Detector
    mask : array, optional
        Non-zero = ignore (on top of the detector's mask and invalid values).
    width_px : int
        Size of the top-hat element: features narrower than this are ridges (rings).
    threshold_sigma : float
        Ridge pixels are those above median + ``threshold_sigma`` robust standard deviations
        (of the noise: see :func:`_ridge_threshold`).
    max_points : int
        At most this many ridge pixels (the brightest) go into the centre search.
    seed : int
        Seed of the random choices (ridge-pixel samples, RANSAC ellipse fits).

    Raises
    ------
    ValueError
        When the image shows no ring (too few ridge pixels or no concentric rings).
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.shape != tuple(detector.shape):
        raise ValueError(f"image: expected a 2D image of the detector's shape {tuple(detector.shape)}, "
                         f"got shape {image.shape}")
    valid = valid_pixels(image, detector, mask)
    if valid.sum() < 100:
        raise ValueError("image: fewer than 100 valid pixels; nothing to calibrate on")
    ridge = _ridge(image, valid, int(width_px))
    inside = ridge[valid]
    threshold = _ridge_threshold(inside, threshold_sigma)
    rows, cols = np.nonzero(ridge > threshold)
    if rows.size < 50:
        raise ValueError(f"image: no rings found ({rows.size} ridge pixels above "
                         f"{threshold_sigma} sigma); is there a calibrant ring on this image?")
    weights = np.sqrt(ridge[rows, cols] - threshold)
    rows = rows.astype(np.float64)
    cols = cols.astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = (rng.choice(rows.size, max_points, replace=False) if rows.size > max_points
            else np.arange(rows.size))
    normals = _ridge_normals(ridge, rows[pick], cols[pick])
    seed = _vote_centre(rows[pick], cols[pick], weights[pick], normals, image.shape)
    centre = _centre_of_inner_rings(rows, cols, weights, seed, rng)
    centre, radii, strengths = _ellipse_rings(rows, cols, weights, centre, rng)
    if radii.size == 0:
        raise ValueError("image: the bright pixels form no concentric rings; "
                         "is there a calibrant ring on this image?")
    return RingCandidates(centre, radii, strengths, rows, cols, weights)


def _histogram_rings(rows, cols, weights, centre) -> tuple:
    """Peaks of the weighted distance histogram (1-pixel bins): radii, strengths, widths."""
    r = np.hypot(rows - centre[0], cols - centre[1])
    hist = np.bincount(r.astype(np.int64), weights=weights / (r + 10.0))
    smooth = ndimage.gaussian_filter1d(hist, 1.0)
    peaks, props = signal.find_peaks(smooth, prominence=0.03 * smooth.max(), distance=3,
                                     width=0)
    return peaks + 0.5, props["prominences"], props["widths"]


def _fit_ellipse(rows, cols, rng):
    """Ellipse of ring points: RANSAC circle (scikit-image) to reject stray points, then an
    ellipse fit of the inliers. Returns ((row, col) centre, mean radius, inlier fraction)."""
    from skimage.measure import CircleModel, EllipseModel, ransac

    if rows.size > 600:
        pick = rng.choice(rows.size, 600, replace=False)
        rows, cols = rows[pick], cols[pick]
    data = np.column_stack([cols, rows])
    try:
        circle, inliers = ransac(data, CircleModel, min_samples=3, residual_threshold=2.5,
                                 max_trials=60, rng=rng)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if circle is None or inliers is None or inliers.sum() < max(0.5 * rows.size, 12):
        return None
    ellipse = EllipseModel.from_estimate(data[inliers])
    if not ellipse:
        return None
    a, b = ellipse.axis_lengths
    xc, yc = ellipse.center
    if not (np.isfinite(a) and np.isfinite(b)) or min(a, b) < 0.8 * max(a, b):
        return None
    return (float(yc), float(xc)), float(math.sqrt(a * b)), float(inliers.mean())


def _ellipse_rings(rows, cols, weights, centre, rng) -> tuple:
    """Ring centre and radii from RANSAC ellipse fits, inner rings first.

    The distance histogram around the current centre gives ring bands; the innermost strong
    ones (nearly circles centred on the beam even for a tilted detector) are fitted first and
    re-centre the histogram; then every band is fitted and its ellipse's mean radius kept.
    """
    for _ in range(3):
        peaks, strength, widths = _histogram_rings(rows, cols, weights, centre)
        if peaks.size == 0:
            return centre, np.zeros(0), np.zeros(0)
        r = np.hypot(rows - centre[0], cols - centre[1])
        found = []
        for i in np.flatnonzero(strength > 0.2 * strength.max())[:2]:
            band = np.abs(r - peaks[i]) < max(3.0, widths[i])
            fit = _fit_ellipse(rows[band], cols[band], rng) if band.sum() >= 12 else None
            if fit is not None and abs(fit[1] - peaks[i]) < max(5.0, 0.05 * peaks[i]):
                found.append(fit[0])
        if not found:
            break
        new = tuple(np.mean(found, axis=0))
        moved = math.hypot(new[0] - centre[0], new[1] - centre[1])
        centre = new
        if moved < 0.2:
            break
    peaks, strength, widths = _histogram_rings(rows, cols, weights, centre)
    r = np.hypot(rows - centre[0], cols - centre[1])
    bounds = np.concatenate([[0.0], 0.5 * (peaks[1:] + peaks[:-1]), [np.inf]])
    radii, strengths = [], []
    for i, peak in enumerate(peaks):
        band = (r > bounds[i]) & (r < bounds[i + 1]) & (np.abs(r - peak) < max(4.0, 3 * widths[i]))
        fit = _fit_ellipse(rows[band], cols[band], rng) if band.sum() >= 12 else None
        if fit is None:  # a smeared or split peak (outer rings of a tilted detector): not used
            continue
        radius = fit[1]
        if radii and abs(radius - radii[-1]) < max(2.0, 0.01 * radius):  # split peak, same ring
            strengths[-1] += float(strength[i])
            continue
        radii.append(radius)
        strengths.append(float(strength[i]))
    order = np.argsort(radii)
    return centre, np.asarray(radii)[order], np.asarray(strengths)[order]


@dataclass(frozen=True)
class ControlPoints:
    """Sub-pixel ring positions of one image.

    Attributes
    ----------
    rows, cols : pixel coordinates of the points.
    ring : index of the calibrant ring of each point (into ``Calibrant.d_spacings``).
    sigma : standard uncertainty of each point along 2theta, radians (from Poisson statistics
        of the pixels that made it).
    """

    rows: np.ndarray
    cols: np.ndarray
    ring: np.ndarray
    sigma: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)

    def select(self, keep: np.ndarray) -> "ControlPoints":
        """The points where ``keep`` is True."""
        return ControlPoints(self.rows[keep], self.cols[keep], self.ring[keep], self.sigma[keep])


def extract_control_points(image: np.ndarray, geometry, ring_two_theta: np.ndarray,
                           rings: np.ndarray | None = None, *, valid: np.ndarray | None = None,
                           half_width: float | None = None, sector_px: float = 12.0,
                           min_snr: float = 5.0, min_pixels: int = 8) -> ControlPoints:
    """Sub-pixel control points along the expected rings of a geometry.

    Parameters
    ----------
    image : 2D array
    geometry : xreduce.geometry.Geometry
        The current geometry (its per-pixel 2theta and chi arrays are used).
    ring_two_theta : array
        2theta (radians) of every calibrant ring (``Calibrant.two_theta``).
    rings : array of int, optional
        Indices of the rings to extract (default: all of them on the detector).
    valid : bool array, optional
        Usable pixels (default :func:`valid_pixels`).
    half_width : float, optional
        Half-width (radians) of the 2theta window around each ring; it is always kept below
        0.45 times the distance to the neighbouring rings. Default: 4 pixel sizes seen from
        the sample.
    sector_px : float
        Target arc length of an azimuthal sector, pixels (one control point per sector).
    min_snr : float
        Sectors whose background-subtracted signal is below this many standard deviations
        give no point.
    min_pixels : int
        Sectors with fewer pixels in the window give no point.
    """
    image = np.asarray(image)
    if valid is None:
        valid = valid_pixels(image, geometry.detector)
    ring_two_theta = np.asarray(ring_two_theta, dtype=np.float64)
    if rings is None:
        rings = np.arange(ring_two_theta.size)
    rings = np.asarray(rings, dtype=np.int64)
    empty = ControlPoints(np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
    if rings.size == 0:
        return empty
    pixel_angle = min(geometry.detector.pixel1, geometry.detector.pixel2) / geometry.dist
    if half_width is None:
        half_width = 4.0 * pixel_angle
    tth = geometry.twotheta_array()
    chi = geometry.chi_array()
    centres = ring_two_theta[rings]
    order = np.argsort(centres)
    centres, rings = centres[order], rings[order]
    widths = np.empty(centres.size)
    sorted_all = np.sort(ring_two_theta)
    for n, c in enumerate(centres):
        k = np.searchsorted(sorted_all, c)
        near = [abs(sorted_all[j] - c) for j in (k - 1, k + 1) if 0 <= j < sorted_all.size]
        widths[n] = min([half_width] + [0.45 * g for g in near if g > 0])
    # nearest selected ring of every pixel, and its offset from it
    mids = 0.5 * (centres[1:] + centres[:-1])
    nearest = np.searchsorted(mids, tth)
    offset = tth - centres[nearest]
    inside = valid & (np.abs(offset) < widths[nearest])
    index = np.flatnonzero(inside)
    if index.size == 0:
        return empty
    ring_of = nearest.ravel()[index]
    delta = offset.ravel()[index]
    value = np.asarray(image, dtype=np.float64).ravel()[index]
    phi = chi.ravel()[index]
    # azimuthal sectors: about sector_px pixels of arc each
    radius_px = np.tan(centres) * geometry.dist / min(geometry.detector.pixel1, geometry.detector.pixel2)
    n_sectors = np.clip((2 * np.pi * radius_px / sector_px).astype(np.int64), 8, 720)
    sector = np.minimum(((phi + np.pi) / (2 * np.pi) * n_sectors[ring_of]).astype(np.int64),
                        n_sectors[ring_of] - 1)
    first = np.concatenate([[0], np.cumsum(n_sectors)[:-1]])
    group = first[ring_of] + sector
    n_groups = int(n_sectors.sum())
    w_ring = widths[ring_of]
    count = np.bincount(group, minlength=n_groups)

    def gsum(x, where=None):
        return np.bincount(group, weights=x if where is None else np.where(where, x, 0.0),
                           minlength=n_groups)

    # area in (2theta, chi) of each pixel: pixels crowd unevenly along 2theta, and an
    # unweighted centroid would lean towards the crowded side (by about 1e-4 of 2theta)
    flat_rows, flat_cols = np.divmod(index, tth.shape[1])
    area = _angular_area(geometry, flat_rows.astype(np.float64), flat_cols.astype(np.float64),
                         tth.ravel()[index], phi)
    # linear background in delta from the outer parts of the window (both sides)
    outer = np.abs(delta) > 0.6 * w_ring
    n_o, sd, sv = gsum(np.ones_like(delta), outer), gsum(delta, outer), gsum(value, outer)
    sdd, sdv = gsum(delta * delta, outer), gsum(delta * value, outer)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = n_o * sdd - sd * sd
        slope = np.where(det > 0, (n_o * sdv - sd * sv) / det, 0.0)
        level = np.where(n_o > 0, (sv - slope * sd) / np.maximum(n_o, 1), 0.0)
    signal_ = value - (level[group] + slope[group] * delta)
    variance = np.maximum(value, 1.0)
    group_width = widths[np.repeat(np.arange(rings.size), n_sectors)]
    # area-weighted centroid, re-centred on the peak, inner half-width 0.55 of the window
    centre_g = np.zeros(n_groups)
    for _ in range(4):
        inner = np.abs(delta - centre_g[group]) < 0.55 * w_ring
        s = gsum(area * signal_, inner)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(s > 0, gsum(area * signal_ * delta, inner) / s, 0.0)
        previous, centre_g = centre_g, np.clip(new, -0.6 * group_width, 0.6 * group_width)
    inner = np.abs(delta - centre_g[group]) < 0.55 * w_ring
    s = gsum(area * signal_, inner)
    s_plain = gsum(signal_, inner)
    noise = np.sqrt(gsum(variance, inner))
    spread = np.sqrt(gsum(area ** 2 * variance * (delta - centre_g[group]) ** 2, inner))
    n_in = gsum(np.ones_like(delta), inner)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos_chi = gsum(np.maximum(signal_, 0.0) * np.cos(phi), inner)
        sin_chi = gsum(np.maximum(signal_, 0.0) * np.sin(phi), inner)
        sigma = spread / s
        good = ((count >= min_pixels) & (n_in >= min_pixels) & (n_o >= 3)
                & (s_plain > min_snr * noise) & (s > 0) & np.isfinite(sigma) & (sigma > 0)
                & (np.abs(centre_g) < 0.55 * group_width)
                & (np.abs(centre_g - previous) < 0.05 * group_width))
    groups = np.flatnonzero(good)
    if groups.size == 0:
        return empty
    ring_local = np.repeat(np.arange(rings.size), n_sectors)[groups]
    point_tth = centres[ring_local] + centre_g[groups]
    point_chi = np.arctan2(sin_chi[groups], cos_chi[groups])
    rows, cols = pixels_at_angles(geometry, point_tth, point_chi)
    shape = geometry.detector.shape
    keep = (np.isfinite(rows) & np.isfinite(cols) & (rows > -0.5) & (cols > -0.5)
            & (rows < shape[0] - 0.5) & (cols < shape[1] - 0.5))
    return ControlPoints(rows[keep], cols[keep], rings[ring_local][keep], sigma[groups][keep])


def _angular_area(geometry, rows, cols, tth, chi) -> np.ndarray:
    """|d(2theta, chi) / d(row, col)| at pixel centres (forward differences of half a pixel
    from the angles ``tth``, ``chi`` already known there): the (2theta, chi) area of a pixel."""
    t_r, c_r = angles_at(geometry, rows + 0.5, cols)
    t_c, c_c = angles_at(geometry, rows, cols + 0.5)
    wrap = lambda x: (x + np.pi) % (2 * np.pi) - np.pi  # noqa: E731
    return np.abs((t_r - tth) * wrap(c_c - chi) - (t_c - tth) * wrap(c_r - chi))
