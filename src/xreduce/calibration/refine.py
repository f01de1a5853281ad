"""Least-squares refinement of PONI geometries on control points, with uncertainties.

The residual of a control point is ``(2theta(point; geometry) - 2theta_ring(wavelength)) /
sigma``, with ``sigma`` the point's own uncertainty (Poisson statistics of its pixels), so that
the reduced chi-square of a good fit is near 1 and the covariance ``s^2 (J^T J)^-1`` of the
parameters (``s^2`` the reduced chi-square) is honest even when sigma is misjudged. The fit is
``scipy.optimize.least_squares`` with a soft-L1 loss and bounds; points beyond 5 robust standard
deviations are then dropped and the fit repeated with plain least squares, whose Jacobian gives
the covariance. Several images are refined jointly with one wavelength. See
``doc/calibration.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from .peaks import ControlPoints
from .points import angles_from_parameters, pixel_to_plane

__all__ = ["PARAMETERS", "Refinement", "refine_geometry", "check_fix"]

PARAMETERS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")
_BOUNDS = {"dist": (1e-4, 100.0), "poni1": (-10.0, 10.0), "poni2": (-10.0, 10.0),
           "rot1": (-math.pi / 2, math.pi / 2), "rot2": (-math.pi / 2, math.pi / 2),
           "rot3": (-math.pi, math.pi), "wavelength": (1e-13, 1e-8)}
#: Correlation above which two free parameters are reported as not separable by the data.
CORRELATION_WARNING = 0.999
#: Units the optimiser sees (so that finite-difference steps suit every parameter): the
#: wavelength in Angstrom, everything else in SI.
_SCALE = {"wavelength": 1e10}


def check_fix(fix) -> tuple:
    """Validate the names of fixed parameters (a comma-separated string or a sequence).

    Example
    -------
    >>> check_fix("rot3, wavelength")
    ('rot3', 'wavelength')
    """
    if fix is None:
        return ()
    if isinstance(fix, str):
        fix = [name.strip() for name in fix.split(",") if name.strip()]
    fix = tuple(str(name) for name in fix)
    unknown = [name for name in fix if name not in PARAMETERS]
    if unknown:
        raise ValueError(f"fix: expected names among {PARAMETERS}, got {unknown}")
    return fix


@dataclass
class Refinement:
    """Result of :func:`refine_geometry`.

    Attributes
    ----------
    geometries : the refined geometries (one per image).
    names : names of the free parameters (``"dist"``, or ``"dist[1]"`` for image 1 of several).
    values, uncertainties : dicts name -> value / standard uncertainty (SI units).
    correlation : correlation matrix of the free parameters (order of ``names``).
    residuals : per image, the 2theta residual of every kept point (radians).
    points : per image, the control points kept (outliers removed).
    chi2_reduced : reduced chi-square (1 = residuals as expected from the points' sigmas).
    per_ring : list of dicts: image, ring, points, mean and rms residual (millidegrees).
    warnings : messages about parameters the data cannot separate or determine.
    """

    geometries: list
    names: list
    values: dict
    uncertainties: dict
    correlation: np.ndarray
    residuals: list
    points: list
    chi2_reduced: float
    per_ring: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    @property
    def rms_mdeg(self) -> float:
        """RMS 2theta residual of all kept points, millidegrees."""
        allres = np.concatenate(self.residuals) if self.residuals else np.zeros(0)
        return float(np.degrees(np.sqrt(np.mean(allres ** 2))) * 1e3) if allres.size else math.nan

    def rms_px(self) -> float:
        """RMS residual expressed as a radial distance on the detector, pixels."""
        values = []
        for geo, res in zip(self.geometries, self.residuals):
            pixel = min(geo.detector.pixel1, geo.detector.pixel2)
            values.append(res * geo.dist / pixel)  # d r = dist d(2theta) / cos^2, lower bound
        allres = np.concatenate(values) if values else np.zeros(0)
        return float(np.sqrt(np.mean(allres ** 2))) if allres.size else math.nan


def _layout(n_images: int, fix: tuple) -> list:
    """(image index or None for shared, parameter name) of every free parameter."""
    layout = []
    if "wavelength" not in fix:
        layout.append((None, "wavelength"))
    for image in range(n_images):
        for name in PARAMETERS[:6]:
            if name not in fix:
                layout.append((image, name))
    return layout


def _label(image, name, n_images) -> str:
    return name if image is None or n_images == 1 else f"{name}[{image}]"


def refine_geometry(points: ControlPoints | list, geometries, d_spacings, fix=("rot3", "wavelength"),
                    loss: str = "soft_l1", outlier_sigma: float = 5.0) -> Refinement:
    """Refine one or several geometries on their control points.

    Parameters
    ----------
    points : ControlPoints or list of them (one per image)
    geometries : Geometry or list of them (starting values; one per image, same wavelength)
    d_spacings : array
        The calibrant's d-spacings (Angstrom); point ``ring`` indices refer to it.
    fix : names of the parameters kept as they are (any of :data:`PARAMETERS`).
    loss : robust loss of the first pass (``scipy.optimize.least_squares``).
    outlier_sigma : points beyond this many robust standard deviations are dropped.

    Returns
    -------
    Refinement

    Raises
    ------
    ValueError
        Fewer points than free parameters, or inconsistent inputs.
    """
    single = isinstance(points, ControlPoints)
    points = [points] if single else list(points)
    geometries = [geometries] if not isinstance(geometries, (list, tuple)) else list(geometries)
    if len(points) != len(geometries) or not points:
        raise ValueError(f"points: expected one set of control points per geometry, got "
                         f"{len(points)} for {len(geometries)} geometries")
    fix = check_fix(fix)
    wavelength = geometries[0].wavelength
    if wavelength is None or any(g.wavelength != wavelength for g in geometries):
        raise ValueError("geometries: expected the same (set) wavelength for every image")
    d_m = np.asarray(d_spacings, dtype=np.float64) * 1e-10
    layout = _layout(len(geometries), fix)
    planes = [pixel_to_plane(g.detector, p.rows, p.cols) for g, p in zip(geometries, points)]
    n_points = sum(len(p) for p in points)
    if n_points <= len(layout):
        raise ValueError(f"points: {n_points} control points cannot determine {len(layout)} "
                         f"free parameters")

    def unpack(x):
        params = [g.parameters() for g in geometries]
        shared = wavelength
        for value, (image, name) in zip(x, layout):
            value = value / _SCALE.get(name, 1.0)
            if image is None:
                shared = value
            else:
                params[image][name] = value
        for p in params:
            p["wavelength"] = shared
        return params

    def residual(x, keep):
        out = []
        for params, (p1, p2), pts, mask in zip(unpack(x), planes, points, keep):
            tth = angles_from_parameters(params["dist"], params["poni1"], params["poni2"],
                                         params["rot1"], params["rot2"], params["rot3"],
                                         p1[mask], p2[mask])[0]
            ratio = np.clip(params["wavelength"] / (2 * d_m[pts.ring[mask]]), -1, 1)
            out.append((tth - 2 * np.arcsin(ratio)) / pts.sigma[mask])
        return np.concatenate(out)

    x0 = np.array([geometries[0].wavelength if image is None else getattr(geometries[image], name)
                   for image, name in layout])
    scale = np.array([_SCALE.get(name, 1.0) for _, name in layout])
    x0 = x0 * scale
    low = np.array([_BOUNDS[name][0] for _, name in layout]) * scale
    high = np.array([_BOUNDS[name][1] for _, name in layout]) * scale
    x0 = np.clip(x0, low + 1e-12 * np.abs(low), high - 1e-12 * np.abs(high))
    keep = [np.ones(len(p), bool) for p in points]
    first = least_squares(residual, x0, args=(keep,), bounds=(low, high), loss=loss, f_scale=3.0,
                          x_scale="jac", jac="3-point", max_nfev=200 * (len(layout) + 1))
    r = residual(first.x, keep)
    spread = 1.4826 * np.median(np.abs(r - np.median(r)))
    limit = outlier_sigma * max(spread, 1e-12)
    start = 0
    for n, pts in enumerate(points):
        keep[n] = np.abs(r[start:start + len(pts)]) < limit
        start += len(pts)
    second = least_squares(residual, first.x, args=(keep,), bounds=(low, high), loss="linear",
                           x_scale="jac", jac="3-point", max_nfev=200 * (len(layout) + 1))
    r = second.fun
    dof = max(r.size - len(layout), 1)
    chi2 = float(np.dot(r, r) / dof)
    names = [_label(image, name, len(geometries)) for image, name in layout]
    covariance, warnings = _covariance(second.jac, chi2, names)  # in the optimiser's units
    covariance = covariance / np.outer(scale, scale)
    sigma = np.sqrt(np.clip(np.diag(covariance), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        correlation = covariance / np.outer(sigma, sigma)
    final = unpack(second.x)
    refined = [g.with_(**p) for g, p in zip(geometries, final)]
    kept_points = [p.select(k) for p, k in zip(points, keep)]
    residuals = []
    for geo, (p1, p2), pts, k in zip(refined, planes, points, keep):
        tth = angles_from_parameters(geo.dist, geo.poni1, geo.poni2, geo.rot1, geo.rot2, geo.rot3,
                                     p1[k], p2[k])[0]
        residuals.append(tth - 2 * np.arcsin(np.clip(geo.wavelength / (2 * d_m[pts.ring[k]]), -1, 1)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if abs(correlation[i, j]) > CORRELATION_WARNING:
                pair = {names[i].split("[")[0], names[j].split("[")[0]}
                remedy = ("fix one of them, or refine images at several distances jointly"
                          if pair == {"dist", "wavelength"} else
                          "fix one of them, or use rings at larger angles")
                warnings.append(f"{names[i]} and {names[j]} are correlated "
                                f"({correlation[i, j]:+.4f}): these data barely separate them; "
                                f"{remedy}")
    per_ring = []
    for image, (pts, res) in enumerate(zip(kept_points, residuals)):
        for ring in np.unique(pts.ring):
            sel = pts.ring == ring
            per_ring.append({"image": image, "ring": int(ring), "points": int(sel.sum()),
                             "mean_mdeg": float(np.degrees(res[sel].mean()) * 1e3),
                             "rms_mdeg": float(np.degrees(np.sqrt(np.mean(res[sel] ** 2))) * 1e3)})
    return Refinement(refined, names, dict(zip(names, (second.x / scale).tolist())),
                      dict(zip(names, sigma.tolist())), correlation, residuals, kept_points, chi2,
                      per_ring, warnings)


def _covariance(jac: np.ndarray, chi2: float, names: list) -> tuple:
    """s^2 (J^T J)^-1 by SVD; parameters in a null direction get an infinite uncertainty."""
    warnings = []
    _, singular, vt = np.linalg.svd(jac, full_matrices=False)
    tiny = singular <= singular.max() * 1e-10 if singular.size else np.zeros(0, bool)
    inverse = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, singular) ** 2)
    covariance = (vt.T * inverse) @ vt * max(chi2, 1e-300)
    for direction in vt[tiny]:
        involved = [names[i] for i in np.flatnonzero(np.abs(direction) > 0.1)]
        warnings.append(f"the data do not determine {', '.join(involved)}: fix some of them")
        for i in np.flatnonzero(np.abs(direction) > 0.1):
            covariance[i, i] = np.inf
    return covariance, warnings
