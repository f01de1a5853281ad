"""pyFAI's scripted calibration path on the same image, for comparisons (tests, benchmark).

``SingleGeometry.extract_cp`` (pyFAI's control-point extraction around the rings of a starting
geometry) then ``GeometryRefinement.refine3`` (its least squares), from a starting geometry we
give it. Needs pyFAI (optional).

Why the start matters (``doc/calibration.md``, "pyFAI's scripted path"): ``extract_cp`` looks
for each ring only within a quarter of the spacing to its neighbours around where the starting
geometry puts it, and by default (``max_rings=None``) on every ring of the detector at once.
From a tilt-free start the outer rings of a tilted detector lie further off than that, their
points are given the neighbouring ring's number, and ``refine3`` settles on a wrong geometry.
:func:`pyfai_refine` with ``rings_outwards=True`` extracts the rings a few at a time, refining
between, as pyFAI-calib2's users do by hand.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pyfai_refine", "wrong_ring_fraction"]


def pyfai_refine(image, start, calibrant, fix=("rot3", "wavelength"), max_rings=None,
                 seed: int | None = 0, rings_outwards: bool = False, truth=None) -> dict:
    """Refine ``start`` (an xreduce Geometry) on ``image`` with pyFAI's scripted path.

    pyFAI picks control points at random from NumPy's global generator, so its result moves
    by about one of our standard uncertainties from run to run; ``seed`` (None: leave the
    generator alone) seeds that generator first, so that comparisons are reproducible.

    Parameters
    ----------
    max_rings : passed to ``extract_cp`` (None: every ring on the detector).
    rings_outwards : extract 3 rings, refine (tilts fixed, then free), then 2, 4, 8, ... times
        as many rings, refining after each, before the last ``extract_cp(max_rings)`` +
        ``refine3``: pyFAI's own tools in the order a pyFAI-calib2 user applies them.
    truth : xreduce Geometry, optional
        When given, ``wrong_ring`` in the result is the fraction of pyFAI's final control
        points that do not lie on the ring they were given (:func:`wrong_ring_fraction`).

    Returns the refined parameters (SI), ``points`` (the number of control points pyFAI
    extracted last) and ``wrong_ring`` (when ``truth`` is given).
    """
    import pyFAI.calibrant
    import pyFAI.detectors
    import pyFAI.geometry
    from pyFAI.goniometer import SingleGeometry

    if seed is not None:
        np.random.seed(seed)
    det = start.detector
    detector = pyFAI.detectors.Detector(det.pixel1, det.pixel2, max_shape=tuple(det.shape))
    mask = np.zeros(det.shape, np.int8) if det.mask is None else np.asarray(det.mask, np.int8).copy()
    mask |= (np.asarray(image) < 0).astype(np.int8)
    detector.mask = mask
    their_calibrant = pyFAI.calibrant.Calibrant(dspacing=list(map(float, calibrant.d_spacings)),
                                                wavelength=start.wavelength)
    geometry = pyFAI.geometry.Geometry(dist=start.dist, poni1=start.poni1, poni2=start.poni2,
                                       rot1=start.rot1, rot2=start.rot2, rot3=start.rot3,
                                       detector=detector, wavelength=start.wavelength)
    single = SingleGeometry("calibration", np.asarray(image, dtype=np.float32),
                            calibrant=their_calibrant, detector=detector, geometry=geometry)
    refinement = single.geometry_refinement
    fix = list(fix)
    if rings_outwards:
        n_rings = int(np.sum(np.isfinite(calibrant.d_spacings)))
        schedule = [(3, fix + ["rot1", "rot2", "rot3"]), (3, fix)]
        while schedule[-1][0] < n_rings:
            schedule.append((2 * schedule[-1][0], fix))
        for rings, stage_fix in schedule:
            single.extract_cp(max_rings=rings)  # around the current geometry
            if len(single.control_points.getList()) > 6:
                refinement.refine3(fix=sorted(set(stage_fix)))
    single.extract_cp(max_rings=max_rings)
    refinement.refine3(fix=fix)
    out = {name: float(getattr(refinement, name))
           for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")}
    out["points"] = int(len(single.control_points.getList())) if single.control_points else 0
    if truth is not None:
        out["wrong_ring"] = wrong_ring_fraction(np.asarray(refinement.data), truth, calibrant)
    return out


def wrong_ring_fraction(data: np.ndarray, truth, calibrant, tolerance_px: float = 2.0) -> float:
    """Fraction of pyFAI control points (rows of ``(row, col, ring)``) that do not lie on the
    ring they were given: under ``truth`` more than ``tolerance_px`` pixels (radially) from it
    (on a neighbouring ring, or on no ring at all)."""
    from .points import angles_at

    if data.size == 0:
        return float("nan")
    tth, _ = angles_at(truth, data[:, 0], data[:, 1])
    rings = calibrant.two_theta(truth.wavelength)[data[:, 2].astype(np.int64)]
    pixel = min(truth.detector.pixel1, truth.detector.pixel2)
    off_px = np.abs(tth - rings) * truth.dist / np.cos(tth) ** 2 / pixel
    return float(np.mean(off_px > tolerance_px))
