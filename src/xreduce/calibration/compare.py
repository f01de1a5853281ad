"""pyFAI's scripted calibration path on the same image, for comparisons (tests, benchmark).

``SingleGeometry.extract_cp`` (pyFAI's control-point extraction around the rings of a starting
geometry) then ``GeometryRefinement.refine3`` (its least squares), from a starting geometry we
give it, then ``GeometryRefinement.curve_fit`` for pyFAI's own standard uncertainties. Needs
pyFAI (optional).

Why the start matters and what a fair comparison is (``doc/calibration.md``, "pyFAI's scripted
path"): ``extract_cp`` looks for each ring only within a quarter of the spacing to its
neighbours around where the starting geometry puts it, and by default (``max_rings=None``) on
every ring of the detector at once. From a tilt-free start the outer rings of a tilted detector
lie further off than that, their points are given the neighbouring ring's number, and
``refine3`` settles on a wrong geometry. :func:`pyfai_refine` with ``rings_outwards=True``
extracts the rings a few at a time, refining between, as pyFAI-calib2's users do by hand;
``reextract`` repeats the extraction and refinement around pyFAI's own result.
:func:`agreement` compares two results parameter by parameter within their combined stated
uncertainties.
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np

__all__ = ["pyfai_refine", "pyfai_refine_points", "agreement", "point_offsets_px",
           "subpixel_bias", "wrong_ring_fraction", "COMPARED"]

#: The parameters compared (rot3 and the wavelength are fixed on both sides).
COMPARED = ("dist", "poni1", "poni2", "rot1", "rot2")
_SEVEN = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")


def _pyfai_detector(detector, image=None):
    import pyFAI.detectors

    theirs = pyFAI.detectors.Detector(detector.pixel1, detector.pixel2,
                                      max_shape=tuple(detector.shape))
    mask = (np.zeros(detector.shape, np.int8) if detector.mask is None
            else np.asarray(detector.mask, np.int8).copy())
    if image is not None:
        mask |= (np.asarray(image) < 0).astype(np.int8)
    theirs.mask = mask
    return theirs


def _pyfai_calibrant(calibrant, wavelength):
    import pyFAI.calibrant

    return pyFAI.calibrant.Calibrant(dspacing=list(map(float, calibrant.d_spacings)),
                                     wavelength=wavelength)


def _pyfai_uncertainties(refinement, fix) -> dict | None:
    """pyFAI's own standard uncertainties at its solution: ``GeometryRefinement.curve_fit``
    (``scipy.optimize.curve_fit`` from the current geometry, unweighted: covariance
    s^2 (J^T J)^-1 with s^2 the residual variance). It refits, and keeps its answer when that
    lowers the sum of squares (it finishes the convergence ``refine3``'s SLSQP may stop short
    of in a strongly correlated valley). Only for the two parameter sets it knows: rot3 and the
    wavelength fixed (``with_rot=True``), or every rotation and the wavelength fixed; None for
    any other ``fix``."""
    fixed = set(fix)
    if fixed == {"rot3", "wavelength"}:
        with_rot = True
    elif fixed == {"rot1", "rot2", "rot3", "wavelength"}:
        with_rot = False
    else:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # curve_fit prints its matrices
        error, _ = refinement.curve_fit(with_rot=with_rot)
    names = COMPARED if with_rot else COMPARED[:3]
    return {name: float(error[name]) for name in names}


def _result(refinement, fix, data, truth, calibrant, uncertainties: bool) -> dict:
    out = {"refine3": {name: float(getattr(refinement, name)) for name in _SEVEN}}
    if uncertainties:
        out["uncertainties"] = _pyfai_uncertainties(refinement, fix)
    out.update({name: float(getattr(refinement, name)) for name in _SEVEN})
    out["points"] = int(len(data))
    out["data"] = data
    if truth is not None:
        out["wrong_ring"] = wrong_ring_fraction(data, truth, calibrant)
    return out


def pyfai_refine(image, start, calibrant, fix=("rot3", "wavelength"), max_rings=None,
                 seed: int | None = 0, rings_outwards: bool = False, truth=None,
                 pts_per_deg: float = 1.0, reextract: int = 0,
                 uncertainties: bool = True) -> dict:
    """Refine ``start`` (an xreduce Geometry) on ``image`` with pyFAI's scripted path.

    pyFAI picks control points at random from NumPy's global generator, so its result moves
    from run to run; ``seed`` (None: leave the generator alone) seeds that generator first, so
    that comparisons are reproducible.

    Parameters
    ----------
    max_rings, pts_per_deg : passed to ``extract_cp`` (None: every ring on the detector; pyFAI's
        default of 1 point per degree of azimuth and ring).
    rings_outwards : extract 3 rings, refine (tilts fixed, then free), then 2, 4, 8, ... times
        as many rings, refining after each, before the last ``extract_cp(max_rings)`` +
        ``refine3``: pyFAI's own tools in the order a pyFAI-calib2 user applies them.
    reextract : after that, this many more rounds of ``extract_cp`` + ``refine3`` around
        pyFAI's own current geometry (what a pyFAI-calib2 user does after a first fit).
    truth : xreduce Geometry, optional
        When given, ``wrong_ring`` in the result is the fraction of pyFAI's final control
        points that do not lie on the ring they were given (:func:`wrong_ring_fraction`).
    uncertainties : call ``GeometryRefinement.curve_fit`` at the end for pyFAI's own standard
        uncertainties (it may finish the convergence: the values returned are after it; the
        values ``refine3`` gave are under ``"refine3"``).

    Returns
    -------
    dict
        The refined parameters (SI), ``uncertainties`` (pyFAI's, dict name -> standard
        uncertainty, None when ``fix`` is not one of the sets ``curve_fit`` knows), ``refine3``
        (the parameters before ``curve_fit``), ``points`` (the number of control points pyFAI
        extracted last), ``data`` (those points: rows of (row, col, ring)) and ``wrong_ring``
        (when ``truth`` is given).

    Example
    -------
    >>> from xreduce.calibration.synthetic import synthetic_case
    >>> from xreduce.calibrant import get_calibrant
    >>> truth, image = synthetic_case("LaB6", "Pilatus 1M", 4, 0.12, (0.4, 0.55), 3, 30)
    >>> theirs = pyfai_refine(image, truth, get_calibrant("LaB6"))  # doctest: +SKIP
    >>> sorted(theirs["uncertainties"])  # doctest: +SKIP
    ['dist', 'poni1', 'poni2', 'rot1', 'rot2']
    """
    import pyFAI.geometry
    from pyFAI.goniometer import SingleGeometry

    if seed is not None:
        np.random.seed(seed)
    detector = _pyfai_detector(start.detector, image)
    geometry = pyFAI.geometry.Geometry(dist=start.dist, poni1=start.poni1, poni2=start.poni2,
                                       rot1=start.rot1, rot2=start.rot2, rot3=start.rot3,
                                       detector=detector, wavelength=start.wavelength)
    single = SingleGeometry("calibration", np.asarray(image, dtype=np.float32),
                            calibrant=_pyfai_calibrant(calibrant, start.wavelength),
                            detector=detector, geometry=geometry)
    refinement = single.geometry_refinement
    fix = list(fix)
    if rings_outwards:
        n_rings = int(np.sum(np.isfinite(calibrant.d_spacings)))
        schedule = [(3, fix + ["rot1", "rot2", "rot3"]), (3, fix)]
        while schedule[-1][0] < n_rings:
            schedule.append((2 * schedule[-1][0], fix))
        for rings, stage_fix in schedule:
            single.extract_cp(max_rings=rings, pts_per_deg=pts_per_deg)  # around the current geometry
            if len(single.control_points.getList()) > 6:
                refinement.refine3(fix=sorted(set(stage_fix)))
    for _ in range(1 + int(reextract)):
        single.extract_cp(max_rings=max_rings, pts_per_deg=pts_per_deg)
        refinement.refine3(fix=fix)
    data = np.asarray(refinement.data, dtype=np.float64).reshape(-1, 3)
    return _result(refinement, fix, data, truth, calibrant, uncertainties)


def pyfai_refine_points(points, start, calibrant, fix=("rot3", "wavelength"),
                        weighted: bool = True, uncertainties: bool = False) -> dict:
    """pyFAI's ``GeometryRefinement.refine3`` on OUR control points, from ``start``.

    With ``weighted`` each point gets the weight 1 / sigma (pyFAI's optional fourth data
    column multiplies each 2theta residual), so that pyFAI minimises the same chi-square as
    :func:`xreduce.calibration.refine_geometry` (without its robust first pass and outlier
    rejection); without, every point counts alike, as for pyFAI's own points.

    Parameters
    ----------
    points : ControlPoints (ours, one image)
    start : xreduce Geometry
    uncertainties : also call ``curve_fit`` (unweighted) for pyFAI's standard uncertainties.

    Returns
    -------
    dict : as :func:`pyfai_refine` (no ``wrong_ring``), and ``sum_squares``: pyFAI's objective
        (weighted sum of squared 2theta residuals) where it stopped.
    """
    from pyFAI.geometryRefinement import GeometryRefinement

    columns = [points.rows, points.cols, points.ring.astype(np.float64)]
    if weighted:
        weight = 1.0 / np.asarray(points.sigma, dtype=np.float64)
        columns.append(weight / np.median(weight))  # scale-free: only ratios matter
    data = np.column_stack(columns)
    refinement = GeometryRefinement(data, dist=start.dist, poni1=start.poni1, poni2=start.poni2,
                                    rot1=start.rot1, rot2=start.rot2, rot3=start.rot3,
                                    detector=_pyfai_detector(start.detector),
                                    wavelength=start.wavelength,
                                    calibrant=_pyfai_calibrant(calibrant, start.wavelength))
    refinement.refine3(fix=list(fix))
    free = [name for name in refinement.PARAM_ORDER if name not in fix]
    values = np.array([getattr(refinement, name) * (1e10 if name == "wavelength" else 1.0)
                       for name in free])
    sum_squares = refinement.residu3(values, free, {name: getattr(refinement, name) for name in fix},
                                     data[:, 0], data[:, 1], data[:, 2].astype(np.int32),
                                     data[:, 3] if weighted else None)
    out = _result(refinement, list(fix), data[:, :3], None, calibrant, uncertainties)
    out["sum_squares"] = float(sum_squares)
    return out


def agreement(ours, ours_sigma: dict, theirs: dict, theirs_sigma: dict, truth=None,
              names=COMPARED) -> list:
    """Parameter-by-parameter comparison of two refined geometries with their uncertainties.

    Parameters
    ----------
    ours : xreduce Geometry; ``ours_sigma`` its standard uncertainties (name -> SI)
    theirs : dict name -> value; ``theirs_sigma`` its standard uncertainties
    truth : xreduce Geometry, optional (synthetic images)

    Returns
    -------
    list of dict, one per parameter: ``ours``, ``theirs``, ``sigma_ours``, ``sigma_theirs``,
    ``combined`` (sqrt(sigma_ours^2 + sigma_theirs^2)), ``diff_combined`` ((theirs - ours) /
    combined); with ``truth``: ``truth``, ``ours_err_sigma`` and ``theirs_err_sigma`` (each
    one's error in its own uncertainty) and ``closer`` ("xreduce", "pyFAI" or "tie").

    Example
    -------
    >>> from xreduce.detectors import Detector
    >>> from xreduce.geometry import Geometry
    >>> g = Geometry(0.1, 0.01, 0.01, 0.0, 0.0, 0.0, 1e-10, Detector(1e-4, 1e-4, (10, 10)))
    >>> row = agreement(g, {"dist": 3e-6}, {"dist": 0.100004}, {"dist": 4e-6}, names=("dist",))[0]
    >>> round(row["combined"], 9), round(row["diff_combined"], 3)
    (5e-06, 0.8)
    """
    rows = []
    for name in names:
        mine, other = float(getattr(ours, name)), float(theirs[name])
        s_mine, s_other = float(ours_sigma[name]), float(theirs_sigma[name])
        combined = math.hypot(s_mine, s_other)
        row = {"name": name, "ours": mine, "theirs": other, "sigma_ours": s_mine,
               "sigma_theirs": s_other, "combined": combined,
               "diff_combined": (other - mine) / combined if combined > 0 else math.inf}
        if truth is not None:
            true = float(getattr(truth, name))
            row.update(truth=true, ours_err_sigma=(mine - true) / s_mine,
                       theirs_err_sigma=(other - true) / s_other,
                       closer=("tie" if abs(mine - true) == abs(other - true) else
                               "xreduce" if abs(mine - true) < abs(other - true) else "pyFAI"))
        rows.append(row)
    return rows


def point_offsets_px(data: np.ndarray, truth, calibrant) -> np.ndarray:
    """Radial distance (pixels, signed, outwards positive) under ``truth`` of each point (rows
    of ``(row, col, ring)``) from the ring it was given."""
    from .points import angles_at

    data = np.asarray(data, dtype=np.float64).reshape(-1, 3)
    tth, _ = angles_at(truth, data[:, 0], data[:, 1])
    rings = calibrant.two_theta(truth.wavelength)[data[:, 2].astype(np.int64)]
    pixel = min(truth.detector.pixel1, truth.detector.pixel2)
    return (tth - rings) * truth.dist / np.cos(tth) ** 2 / pixel


def wrong_ring_fraction(data: np.ndarray, truth, calibrant, tolerance_px: float = 2.0) -> float:
    """Fraction of pyFAI control points (rows of ``(row, col, ring)``) that do not lie on the
    ring they were given: under ``truth`` more than ``tolerance_px`` pixels (radially) from it
    (on a neighbouring ring, or on no ring at all)."""
    if np.asarray(data).size == 0:
        return float("nan")
    return float(np.mean(np.abs(point_offsets_px(data, truth, calibrant)) > tolerance_px))


def subpixel_bias(data: np.ndarray, truth, calibrant, bins: int = 5) -> tuple:
    """Mean offset of control points from their true ring against where, within a pixel, the
    true ring crosses: the signature of "pixel locking" (a sub-pixel peak position pulled
    towards the nearest pixel centre).

    Only points where the ring runs within about 30 degrees of a pixel axis are used (there
    the radial direction is nearly along the other axis, so the crossing's phase is one
    number): for each, the offset along that axis and the phase (-0.5 to 0.5 px from the
    nearest pixel centre) of the true ring on the same radial line.

    Returns
    -------
    (edges, mean, error, count) : phase bin edges (bins + 1), and per bin the mean offset
        along the axis (pixels, positive = towards larger index), its standard error and the
        number of points. Unbiased points give means near 0; pixel locking gives positive
        means for negative phases and negative for positive ones.
    """
    from .points import beam_centre_px

    data = np.asarray(data, dtype=np.float64).reshape(-1, 3)
    offsets = point_offsets_px(data, truth, calibrant)
    beam = beam_centre_px(truth)
    d_row, d_col = data[:, 0] - beam[0], data[:, 1] - beam[1]
    radius = np.hypot(d_row, d_col)
    u_row, u_col = d_row / radius, d_col / radius
    phases, along = [], []
    for position, unit in ((data[:, 0], u_row), (data[:, 1], u_col)):
        sel = np.abs(unit) > 0.85
        crossing = position[sel] - offsets[sel] * unit[sel]
        phases.append(crossing - np.round(crossing))
        along.append(offsets[sel] * np.sign(unit[sel]))
    phase, along = np.concatenate(phases), np.concatenate(along)
    edges = np.linspace(-0.5, 0.5, bins + 1)
    index = np.clip(np.digitize(phase, edges) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    mean = np.array([along[index == b].mean() if count[b] else np.nan for b in range(bins)])
    error = np.array([along[index == b].std() / math.sqrt(count[b]) if count[b] > 1 else np.nan
                      for b in range(bins)])
    return edges, mean, error, count
