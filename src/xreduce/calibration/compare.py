"""pyFAI's scripted calibration path on the same image, for comparisons (tests, benchmark).

``SingleGeometry.extract_cp`` (pyFAI's control-point extraction around the rings of a starting
geometry) then ``GeometryRefinement.refine3`` (its least squares), from a starting geometry we
give it. Needs pyFAI (optional).
"""
from __future__ import annotations

import numpy as np

__all__ = ["pyfai_refine"]


def pyfai_refine(image, start, calibrant, fix=("rot3", "wavelength"), max_rings=None,
                 seed: int | None = 0) -> dict:
    """Refine ``start`` (an xreduce Geometry) on ``image`` with pyFAI's scripted path.

    pyFAI picks control points at random from NumPy's global generator, so its result moves
    by about one of our standard uncertainties from run to run; ``seed`` (None: leave the
    generator alone) seeds that generator first, so that comparisons are reproducible.

    Returns the refined parameters (SI) and ``points``, the number of control points pyFAI
    extracted.
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
    single.extract_cp(max_rings=max_rings)
    single.geometry_refinement.refine3(fix=list(fix))
    refined = single.geometry_refinement
    out = {name: float(getattr(refined, name))
           for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")}
    out["points"] = int(len(single.control_points.getList())) if single.control_points else 0
    return out
