"""Image(s) of a calibrant -> refined geometry, with the checks that say whether to trust it.

:func:`calibrate` chains the steps of ``doc/calibration.md``: ring candidates and a starting
geometry from the image alone (or the user's guess), then extraction of control points and
refinement, adding rings outwards, then validation against the integrated profile and the
quality thresholds of :class:`Thresholds`. :func:`calibrate_jointly` refines several images
(e.g. at several distances) with one wavelength.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..calibrant import Calibrant, energy_to_wavelength, get_calibrant
from ..geometry import Geometry
from .assign import RingAssignment, assign_rings, starting_geometry
from .peaks import (ControlPoints, RingCandidates, extract_control_points, find_ring_candidates,
                    valid_pixels)
from .refine import PARAMETERS, Refinement, check_fix, refine_geometry

__all__ = ["Thresholds", "CalibrationResult", "calibrate", "calibrate_jointly"]


@dataclass(frozen=True)
class Thresholds:
    """When a calibration is called poor (``CalibrationResult.problems``, non-zero exit).

    Attributes
    ----------
    min_rings : fewer rings with at least 5 control points than this is too few.
    min_points : fewer control points than this is too few.
    max_rms_px : RMS residual above this (as a radial distance on the detector, pixels).
    max_relative_sigma_dist : sigma(dist) / dist above this.
    max_sigma_poni_px : sigma(poni1), sigma(poni2) above this many pixels.
    max_sigma_rotation : sigma(rot1, rot2, rot3) above this, radians.
    max_relative_sigma_wavelength : sigma(wavelength) / wavelength above this.
    max_unexplained_fraction : integrated-profile peaks that match no calibrant ring, as a
        fraction of all the strong peaks, above this.
    max_missing_fraction : strong, resolved calibrant rings inside the integrated profile
        that show no peak, as a fraction of those expected, above this.
    max_ring_offset_px : a ring (of at least 5 points) whose mean residual is above this, as a
        radial distance on the detector in pixels (a good geometry leaves every ring centred).
    """

    min_rings: int = 3
    min_points: int = 30
    max_rms_px: float = 0.5
    max_relative_sigma_dist: float = 1e-3
    max_sigma_poni_px: float = 1.0
    max_sigma_rotation: float = 1e-3
    max_relative_sigma_wavelength: float = 1e-3
    max_unexplained_fraction: float = 0.2
    max_missing_fraction: float = 0.5
    max_ring_offset_px: float = 0.25


@dataclass
class CalibrationResult:
    """Everything a calibration found, and whether it is good enough.

    Attributes
    ----------
    geometry : the refined geometry (the first image's, for a joint refinement).
    refinement : the least-squares result (uncertainties, correlations, residuals per ring).
    calibrant : the calibrant used.
    start : the starting geometry (bootstrapped or given) of each image.
    candidates : what the image alone said (None when a guess was given).
    assignment : the ring numbering of the candidates (None when a guess was given).
    validation : per image, the integrated-profile check (matched and unexplained peaks).
    problems : reasons the fit is poor (empty list = good, see :class:`Thresholds`).
    stages : (description, geometry of each image) after each step of the outward refinement,
        e.g. ``"3 rings, tilts"``: the innermost rings refined with tilts, the start handed to
        pyFAI's scripted path in comparisons (doc/calibration.md).
    """

    geometry: Geometry
    refinement: Refinement
    calibrant: Calibrant
    start: list
    candidates: list = field(default_factory=list)
    assignment: list = field(default_factory=list)
    validation: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    stages: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no quality threshold is exceeded."""
        return not self.problems

    @property
    def geometries(self) -> list:
        return self.refinement.geometries

    def report(self) -> dict:
        """A JSON-serialisable summary (parameters, uncertainties, correlations, rings, checks);
        non-finite numbers (an undetermined parameter's uncertainty) become None."""
        ref = self.refinement
        return _finite({
            "ok": self.ok,
            "problems": list(self.problems),
            "warnings": list(ref.warnings),
            "calibrant": {"name": self.calibrant.name, "source": self.calibrant.source},
            "geometries": [{**g.parameters(), "detector": g.detector.name} for g in ref.geometries],
            "start": [s.parameters() for s in self.start],
            "free_parameters": list(ref.names),
            "values": ref.values,
            "uncertainties": ref.uncertainties,
            "correlation": np.round(ref.correlation, 6).tolist(),
            "chi2_reduced": ref.chi2_reduced,
            "rms_residual_mdeg": ref.rms_mdeg,
            "rms_residual_px": ref.rms_px(),
            "points": [len(p) for p in ref.points],
            "rings": ref.per_ring,
            "validation": self.validation,
            "thresholds": asdict(self.thresholds),
            "units": {"dist": "m", "poni1": "m", "poni2": "m", "rot1": "rad", "rot2": "rad",
                      "rot3": "rad", "wavelength": "m", "residual": "millidegree 2theta"},
        })


def _finite(value):
    """``value`` with every non-finite float (and NumPy scalar) made JSON-safe."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _wavelength(energy_kev, wavelength, geometry) -> float:
    if energy_kev is not None and wavelength is not None:
        raise ValueError("energy_kev, wavelength: give one of them, not both")
    if energy_kev is not None:
        return energy_to_wavelength(energy_kev)
    if wavelength is not None:
        value = float(wavelength)
        if not (math.isfinite(value) and 0 < value < 1e-6):
            raise ValueError(f"wavelength: expected metres (1 Angstrom = 1e-10), got {wavelength!r}")
        return value
    if geometry is not None and geometry.wavelength is not None:
        return geometry.wavelength
    raise ValueError("energy_kev: the energy (or the wavelength) is needed to place the rings")


#: Bootstrap images larger than this (pixels along either axis) are binned down to it first.
BOOTSTRAP_SIZE = 600
#: Only this many of the innermost ring candidates are numbered.
MAX_BOOTSTRAP_RINGS = 8


def _binned_for_bootstrap(image, valid, detector):
    """The image binned (mean of the valid pixels of each block) to at most BOOTSTRAP_SIZE
    pixels a side, its valid map, a plain detector of that shape, and the binning factor."""
    from ..detectors import Detector

    factor = max(1, math.ceil(max(image.shape) / BOOTSTRAP_SIZE))
    if factor == 1:
        return image, valid, detector, 1
    rows, cols = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    values = np.where(valid, image, 0.0)[:rows, :cols].astype(np.float64)
    counts = valid[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor).sum((1, 3))
    sums = values.reshape(rows // factor, factor, cols // factor, factor).sum((1, 3))
    small_valid = counts >= 0.5 * factor * factor
    small = np.where(small_valid, sums / np.maximum(counts, 1), -1.0)
    small_detector = Detector(detector.pixel1 * factor, detector.pixel2 * factor, small.shape,
                              mask=~small_valid, orientation=detector.orientation)
    return small, small_valid, small_detector, factor


def _bootstrap(image, detector, calibrant, wavelength, valid):
    """Ring candidates (on a binned copy of large images), and the starting geometries of the
    best ring numberings."""
    small, small_valid, small_detector, factor = _binned_for_bootstrap(image, valid, detector)
    candidates = find_ring_candidates(small, small_detector, mask=~small_valid)
    if factor > 1:  # back to the full-resolution pixel coordinates
        candidates = RingCandidates(
            tuple(c * factor + (factor - 1) / 2 for c in candidates.centre),
            candidates.radii * factor, candidates.strengths, candidates.rows * factor,
            candidates.cols * factor, candidates.weights)
    pixel = 0.5 * (detector.pixel1 + detector.pixel2)
    # the innermost rings only: outer bands of a tilted or dense pattern are the least reliable
    inner = slice(0, MAX_BOOTSTRAP_RINGS)
    assignments = assign_rings(candidates.radii[inner], candidates.strengths[inner],
                               calibrant.two_theta(wavelength), pixel,
                               intensities=calibrant.intensity)
    starts = [starting_geometry(candidates.centre, a.dist_px, detector, wavelength)
              for a in assignments]
    return candidates, assignments, starts


def _rings_on_detector(geometry, calibrant) -> np.ndarray:
    tth = geometry.twotheta_array()
    rings = calibrant.two_theta(geometry.wavelength)
    inside = (rings > np.nanmin(tth)) & (rings < np.nanmax(tth))
    return np.flatnonzero(inside)


def _stages(geometry, calibrant, assignment):
    """2theta limits of the outward stages: the first 3 rings, then x1.6 in tan(2theta)."""
    rings = calibrant.two_theta(geometry.wavelength)
    on = _rings_on_detector(geometry, calibrant)
    if on.size == 0:
        raise ValueError("geometry: no calibrant ring falls on the detector with this geometry")
    if assignment is not None:
        first = rings[np.sort(assignment.calibrant)[:3]].max()
    else:
        first = rings[on[:3]].max()
    limits = [first * 1.02]
    top = rings[on].max()
    while limits[-1] < top:
        limits.append(math.atan(min(math.tan(limits[-1]) * 1.6, 1e6)) if limits[-1] < math.pi / 2
                      else top * 1.01)
        if limits[-1] <= limits[-2]:
            limits[-1] = top * 1.01
    limits[-1] = max(limits[-1], top * 1.01)
    return limits


def _refine_outwards(images, valids, starts, calibrant, fix, assignments, half_width_px):
    """Extraction and refinement, adding rings outwards, then two passes over every ring.

    The first rings are extracted with wide windows (up to 0.45 of the distance to the next
    ring) and refined without tilts, then with them; each later stage adds the rings up to
    1.6 times further out (in tan 2theta) with narrower windows; the last two passes use
    ``half_width_px`` on every ring. Returns the last refinement and, per step, a description
    and the geometries it gave.
    """
    geometries = list(starts)
    stage_limits = [_stages(g, calibrant, a) for g, a in zip(geometries, assignments)]
    n_stages = max(len(s) for s in stage_limits)
    # (stage, window half-width in pixels, tilts refined)
    schedule = [(0, 40.0, False), (0, 15.0, True)]
    schedule += [(stage, 10.0, True) for stage in range(1, n_stages)]
    schedule += [(n_stages - 1, half_width_px, True)] * 2
    refinement, stages = None, []
    for stage, width_px, tilts in schedule:
        points = []
        for image, valid, geo, limits in zip(images, valids, geometries, stage_limits):
            rings = calibrant.two_theta(geo.wavelength)
            limit = limits[min(stage, len(limits) - 1)]
            pixel_angle = min(geo.detector.pixel1, geo.detector.pixel2) / geo.dist
            points.append(extract_control_points(image, geo, rings, np.flatnonzero(rings <= limit),
                                                 valid=valid, half_width=width_px * pixel_angle))
        stage_fix = fix if tilts else tuple(set(fix) | {"rot1", "rot2", "rot3", "wavelength"})
        if sum(len(p) for p in points) <= 10:
            raise ValueError("image: too few ring points could be extracted around the expected "
                             "rings; the starting geometry is probably wrong")
        refinement = refine_geometry(points, geometries, calibrant.d_spacings, fix=stage_fix)
        geometries = refinement.geometries
        n_rings = len({int(k) for p in points for k in p.ring})
        stages.append((f"{n_rings} rings, {'tilts' if tilts else 'no tilts'}", list(geometries)))
    return refinement, stages


def calibrate(image, detector, calibrant: Calibrant | str, *, energy_kev: float | None = None,
              wavelength: float | None = None, geometry: Geometry | None = None,
              fix=("rot3", "wavelength"), mask=None, half_width_px: float = 5.0,
              thresholds: Thresholds = Thresholds(), validate: bool = True) -> CalibrationResult:
    """Refine the geometry of a calibrant image, from no more than the detector and energy.

    Parameters
    ----------
    image : 2D array
        The calibrant image (raw counts; dead pixels and detector sentinels are masked).
    detector : Detector or str
    calibrant : Calibrant or str (name or ``.D`` file)
    energy_kev, wavelength : float
        The X-ray energy (keV) or wavelength (metres); one of them, or a guess with a wavelength.
    geometry : Geometry, optional
        A starting geometry; without one it is bootstrapped from the image (beam centre from
        the ring pattern, distance from the ring numbering, no tilt).
    fix : names of parameters not refined (default rot3 and wavelength: a single image cannot
        separate the wavelength from the distance).
    mask : array, optional
        Non-zero = ignore the pixel.
    half_width_px : float
        Half-width of the 2theta window around each ring, in pixels (always below 0.45 of the
        distance to the neighbouring rings).
    thresholds : Thresholds
        When to call the result poor (``result.problems``).
    validate : bool
        Integrate the image with the refined geometry and compare the profile's peaks with the
        calibrant (needs the integration engine).

    Returns
    -------
    CalibrationResult
        ``result.geometry`` and ``result.ok``; ``result.problems`` says why a fit is poor.

    Raises
    ------
    ValueError
        Bad input, no ring on the image, or rings that do not match the calibrant.

    Example
    -------
    >>> from xreduce import get_detector
    >>> from xreduce.calibrant import fake_calibration_image
    >>> det = get_detector("Pilatus 1M").binned(4)
    >>> truth = Geometry(0.1, 0.09, 0.085, 0.01, -0.02, 0, 1e-10, det)
    >>> image = fake_calibration_image(truth, "LaB6", fwhm_deg=0.5)
    >>> result = calibrate(image, det, "LaB6", wavelength=1e-10)
    >>> result.ok, round(result.geometry.dist, 4)
    (True, 0.1)
    """
    return calibrate_jointly([image], [detector], calibrant, energy_kev=energy_kev,
                             wavelength=wavelength, geometries=None if geometry is None else [geometry],
                             fix=fix, masks=None if mask is None else [mask],
                             half_width_px=half_width_px, thresholds=thresholds, validate=validate)


def calibrate_jointly(images, detectors, calibrant: Calibrant | str, *,
                      energy_kev: float | None = None, wavelength: float | None = None,
                      geometries=None, fix=("rot3",), masks=None, half_width_px: float = 5.0,
                      thresholds: Thresholds = Thresholds(),
                      validate: bool = True) -> CalibrationResult:
    """Calibrate several images of the same calibrant (e.g. at several distances) jointly.

    Each image has its own dist, poni1, poni2, rot1, rot2, rot3; the wavelength is shared (and
    refined unless ``fix`` names it: images at several distances separate it from the
    distance). Parameters as :func:`calibrate`, one entry per image in ``images``,
    ``detectors``, ``geometries`` and ``masks``.
    """
    calibrant = get_calibrant(calibrant)
    fix = check_fix(fix)
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("images: expected at least one image")
    if isinstance(detectors, (str,)) or not isinstance(detectors, (list, tuple)):
        detectors = [detectors] * len(images)
    from ..detectors import Detector, get_detector

    detectors = [get_detector(d) if isinstance(d, str) else d for d in detectors]
    for d in detectors:
        if not isinstance(d, Detector):
            raise TypeError(f"detector: expected a Detector or a detector name, got {type(d).__name__}")
    if len(detectors) != len(images):
        raise ValueError(f"detectors: expected {len(images)}, got {len(detectors)}")
    if geometries is not None and len(geometries) != len(images):
        raise ValueError(f"geometries: expected {len(images)}, got {len(geometries)}")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"masks: expected {len(images)}, got {len(masks)}")
    guess = None if geometries is None else geometries[0]
    wl = _wavelength(energy_kev, wavelength, guess)
    valids, options, candidates = [], [], []
    for n, (image, detector) in enumerate(zip(images, detectors)):
        if image.ndim != 2 or image.shape != tuple(detector.shape):
            raise ValueError(f"image: expected a 2D image of the detector's shape "
                             f"{tuple(detector.shape)}, got shape {image.shape}")
        valid = valid_pixels(image, detector, None if masks is None else masks[n])
        valids.append(valid)
        if geometries is None or geometries[n] is None:
            cand, assigns, starts = _bootstrap(image, detector, calibrant, wl, valid)
            candidates.append(cand)
            options.append(list(zip(assigns, starts)))
        else:
            start = geometries[n]
            if not isinstance(start, Geometry):
                raise TypeError(f"geometry: expected a Geometry, got {type(start).__name__}")
            candidates.append(None)
            options.append([(None, start.with_(wavelength=wl, detector=detector))])
    # every image starts from its best ring numbering; while the result is poor, the next
    # numbering of each bootstrapped image is tried (at most 3 tries)
    best, failure = None, None
    for attempt in range(max(len(o) for o in options)):
        chosen = [o[min(attempt, len(o) - 1)] for o in options]
        assignments = [c[0] for c in chosen]
        starts = [c[1] for c in chosen]
        try:
            refinement, stages = _refine_outwards(images, valids, starts, calibrant, fix,
                                                  assignments, float(half_width_px))
        except ValueError as error:
            failure = failure or error
            continue
        result = CalibrationResult(refinement.geometries[0], refinement, calibrant, starts,
                                   candidates, assignments, thresholds=thresholds, stages=stages)
        if validate:
            from .report import validate_profile

            result.validation = [validate_profile(image, geo, calibrant, valid)
                                 for image, geo, valid in zip(images, refinement.geometries, valids)]
        result.problems = _problems(result, thresholds)
        if best is None or len(result.problems) < len(best.problems):
            best = result
        if result.ok:
            break
    if best is None:
        raise failure
    return best


def _problems(result: CalibrationResult, limits: Thresholds) -> list:
    ref = result.refinement
    problems = []
    n_rings = len({(r["image"], r["ring"]) for r in ref.per_ring if r["points"] >= 5})
    n_points = sum(len(p) for p in ref.points)
    if n_rings < limits.min_rings:
        problems.append(f"only {n_rings} rings with at least 5 control points (at least "
                        f"{limits.min_rings} needed)")
    if n_points < limits.min_points:
        problems.append(f"only {n_points} control points (at least {limits.min_points} needed)")
    rms_px = ref.rms_px()
    if not rms_px <= limits.max_rms_px:
        problems.append(f"RMS residual {rms_px:.3g} px ({ref.rms_mdeg:.3g} mdeg) above "
                        f"{limits.max_rms_px} px: the rings do not fit this calibrant and "
                        f"wavelength")
    for name, sigma in ref.uncertainties.items():
        base = name.split("[")[0]
        image = int(name.split("[")[1][:-1]) if "[" in name else 0
        geo = ref.geometries[image]
        pixel = min(geo.detector.pixel1, geo.detector.pixel2)
        if base == "dist":
            bad, limit = sigma / geo.dist, limits.max_relative_sigma_dist
        elif base in ("poni1", "poni2"):
            bad, limit = sigma / pixel, limits.max_sigma_poni_px
        elif base == "wavelength":
            bad, limit = sigma / geo.wavelength, limits.max_relative_sigma_wavelength
        else:
            bad, limit = sigma, limits.max_sigma_rotation
        if not bad <= limit:
            problems.append(f"{name} is poorly determined (uncertainty {sigma:.3g}, limit "
                            f"{limit:g}{' relative' if base in ('dist', 'wavelength') else ''}"
                            f"{' px' if base.startswith('poni') else ''})")
    for ring in ref.per_ring:
        geo = ref.geometries[ring["image"]]
        offset_px = abs(math.radians(ring["mean_mdeg"] * 1e-3)) * geo.dist / min(
            geo.detector.pixel1, geo.detector.pixel2)
        if ring["points"] >= 5 and offset_px > limits.max_ring_offset_px:
            problems.append(f"image {ring['image']}: ring {ring['ring']} is off by {offset_px:.2f} px "
                            f"on average ({ring['mean_mdeg']:.3g} mdeg; limit "
                            f"{limits.max_ring_offset_px} px): rings misnumbered or a wrong "
                            f"wavelength?")
            break
    for n, check in enumerate(result.validation):
        if check.get("missing_fraction", 0.0) > limits.max_missing_fraction:
            problems.append(f"image {n}: {len(check['missing_rings'])} strong {result.calibrant.name} "
                            f"rings show no peak in the integrated profile (rings "
                            f"{check['missing_rings'][:6]}): wrong geometry or calibrant?")
        if check.get("unexplained_fraction", 0.0) > limits.max_unexplained_fraction:
            peaks = ", ".join(f"{x:.3f}" for x in check["unexplained_deg"][:5])
            problems.append(f"image {n}: integrated profile has peaks that match no {result.calibrant.name} "
                            f"ring (2theta = {peaks} deg): wrong calibrant or wavelength?")
    return problems


__all__ += ["PARAMETERS", "ControlPoints", "RingCandidates", "RingAssignment"]
