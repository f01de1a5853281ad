"""Ring numbers from ring radii, and a starting geometry from them.

For a detector facing the beam, the radius of ring ``k`` is ``dist tan(2theta_k)``: the ratios
of the observed radii are ratios of ``tan(2theta_k)``, whatever the distance. Every observed ring
is tried as the anchor of every calibrant ring (so missing inner rings, hidden by a beam stop or
too weak, are tolerated); each anchor gives a distance, which predicts all the radii; the anchor
that explains the most observed rings (and leaves the fewest predicted rings unseen in between)
wins. See ``doc/calibration.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Geometry
from .points import pixel_to_plane

__all__ = ["RingAssignment", "assign_rings", "starting_geometry"]


@dataclass(frozen=True)
class RingAssignment:
    """Observed rings matched to calibrant rings.

    Attributes
    ----------
    observed : indices of the observed rings that were matched.
    calibrant : the calibrant ring index of each (same order).
    dist_px : the distance in pixel units that explains them (facing detector).
    n_observed : number of observed rings.
    relative_error : relative radius error of each match.
    """

    observed: np.ndarray
    calibrant: np.ndarray
    dist_px: float
    n_observed: int
    relative_error: np.ndarray

    @property
    def matched_fraction(self) -> float:
        return self.observed.size / max(self.n_observed, 1)


def _match(radii, tangents, dist_px, tolerance):
    """Nearest predicted ring of every observed radius, and whether it is within tolerance
    (``tolerance`` per predicted ring)."""
    predicted = dist_px * tangents
    k = np.clip(np.searchsorted(predicted, radii), 1, predicted.size - 1) if predicted.size > 1 \
        else np.zeros(radii.size, np.int64)
    if predicted.size > 1:
        k = np.where(np.abs(predicted[k - 1] - radii) < np.abs(predicted[k] - radii), k - 1, k)
    error = np.abs(predicted[k] - radii) / radii
    ok = error < tolerance[k]
    # one observed ring per calibrant ring: keep the closest
    for ring in np.unique(k[ok]):
        same = np.flatnonzero(ok & (k == ring))
        if same.size > 1:
            ok[same[np.argsort(error[same])[1:]]] = False
    return ok, k, error


def assign_rings(radii_px, strengths, ring_two_theta, pixel_size: float,
                 dist_range_m: tuple = (0.02, 5.0), tolerance: float = 0.01,
                 intensities=None, max_hypotheses: int = 3) -> list:
    """Calibrant ring numbers of observed ring radii, trying every anchor.

    Parameters
    ----------
    radii_px : observed ring radii, pixels (increasing).
    strengths : their strengths (a weak unmatched ring costs less than a strong one).
    ring_two_theta : 2theta (radians) of the calibrant rings.
    pixel_size : metres (the mean of the two pixel sizes).
    dist_range_m : distances considered, metres.
    tolerance : relative radius tolerance of a match at small angles; it grows as
        ``tolerance + 0.008 / cos^2(2theta)``, the mean-radius change of a ring seen on a
        detector tilted by 5 degrees.
    intensities : relative calibrant ring intensities (largest 100), optional: a strong ring
        predicted between matched rings (and well apart from its neighbours) but not seen
        costs more than a weak one; an observed ring inside the first predicted ring costs
        twice its relative strength.
    max_hypotheses : how many of the best numberings to return.

    Returns
    -------
    list of RingAssignment
        The best numberings, best first. A match counts by how unlikely it is by chance
        (``-log`` of twice the tolerance over the local spacing of the predicted rings), so that
        a fit to a dense set of high-order rings does not beat a few well-separated ones.

    Raises
    ------
    ValueError
        When no anchor explains at least 3 observed rings (or all of them, when fewer).

    Example
    -------
    >>> tth = np.radians([10.0, 14.2, 17.4, 20.2])
    >>> radii = 1000 * np.tan(tth[1:])          # the first ring is hidden
    >>> a = assign_rings(radii, np.ones(3), tth, 1e-4)[0]
    >>> a.calibrant.tolist(), round(a.dist_px)
    ([1, 2, 3], 1000)
    """
    radii = np.asarray(radii_px, dtype=np.float64)
    strengths = np.asarray(strengths, dtype=np.float64)
    two_theta = np.asarray(ring_two_theta, dtype=np.float64)
    reachable = two_theta < np.radians(89.0)
    tangents = np.tan(two_theta[reachable])
    tolerance = tolerance + 0.008 / np.cos(two_theta[reachable]) ** 2
    expected = (np.ones(tangents.size) if intensities is None
                else np.clip(np.asarray(intensities, dtype=np.float64)[:two_theta.size][reachable]
                             / 20.0, 0.1, 1.0))
    if radii.size == 0 or tangents.size == 0:
        raise ValueError("rings: nothing to assign (no observed ring or no calibrant ring in range)")
    weight = strengths / strengths.max()
    hypotheses = {}
    for j, radius in enumerate(radii):
        for k, tangent in enumerate(tangents):
            dist_px = radius / tangent
            if not dist_range_m[0] <= dist_px * pixel_size <= dist_range_m[1]:
                continue
            ok, ring, error = _match(radii, tangents, dist_px, tolerance)
            if ok.sum() >= 2:  # least-squares distance from the matches, then match again
                t = tangents[ring[ok]]
                dist_px = float(np.dot(radii[ok], t) / np.dot(t, t))
                ok, ring, error = _match(radii, tangents, dist_px, tolerance)
            if not ok.any():
                continue
            key = tuple(zip(np.flatnonzero(ok).tolist(), ring[ok].tolist()))
            if key in hypotheses:
                continue
            predicted = dist_px * tangents
            # evidence of a match: how unlikely it is by chance, given the local ring spacing
            spacing = np.minimum(np.abs(np.diff(predicted, prepend=-np.inf)),
                                 np.abs(np.diff(predicted, append=np.inf)))
            chance = np.minimum(1.0, 2 * tolerance * predicted / spacing)
            evidence = -np.log(chance[ring[ok]])
            span = (predicted > radii[ok].min() * 0.999) & (predicted < radii[ok].max() * 1.001)
            seen = np.zeros(tangents.size, bool)
            seen[ring[ok]] = True
            resolved = spacing > np.maximum(8.0, 4 * tolerance * predicted)
            unseen = float(expected[span & resolved & ~seen].sum())
            # observed rings inside the first predicted one cannot be calibrant rings
            impossible = float(weight[radii < 0.97 * predicted[0]].sum())
            score = (float(np.sum(evidence * (0.5 + 0.5 * weight[ok]))) - 0.5 * unseen
                     - 2.0 * impossible)
            hypotheses[key] = (score, -float(np.mean(error[ok])), ok, ring, error, dist_px)
    needed = min(3, radii.size)
    ranked = sorted(hypotheses.values(), key=lambda h: (h[0], h[1]), reverse=True)
    ranked = [h for h in ranked if h[2].sum() >= needed]
    if not ranked:
        best = max((int(h[2].sum()) for h in hypotheses.values()), default=0)
        raise ValueError(f"rings: the observed ring radii do not match the calibrant at this "
                         f"wavelength (best: {best} of {radii.size} rings, within distances "
                         f"{dist_range_m} m); check the calibrant and the energy")
    return [RingAssignment(np.flatnonzero(ok), ring[ok], float(dist_px), int(radii.size), error[ok])
            for _, _, ok, ring, error, dist_px in ranked[:max_hypotheses]]


def starting_geometry(centre_px: tuple, dist_px: float, detector, wavelength: float) -> Geometry:
    """A facing-detector geometry with the PONI at the ring centre.

    Example
    -------
    >>> from xreduce.detectors import Detector
    >>> g = starting_geometry((9.5, 19.5), 1000.0, Detector(1e-4, 1e-4, (20, 40)), 1e-10)
    >>> round(g.dist, 6), round(g.poni1, 6), round(g.poni2, 6)
    (0.1, 0.001, 0.002)
    """
    p1, p2 = pixel_to_plane(detector, centre_px[0], centre_px[1])
    pixel = 0.5 * (detector.pixel1 + detector.pixel2)
    return Geometry(float(dist_px * pixel), float(p1), float(p2), 0.0, 0.0, 0.0, wavelength, detector)
