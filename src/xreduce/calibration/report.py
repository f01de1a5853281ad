"""Validation of a refined geometry, and the figure that shows it.

:func:`validate_profile` integrates the image with the refined geometry (the public
``AzimuthalIntegrator.integrate1d``, 2theta in degrees) and compares the peaks of the profile
with the calibrant's rings: the offset of every matched peak, and the strong peaks no ring
explains (a wrong calibrant or wavelength shows as such peaks). :func:`plot_calibration` draws
the refined rings over the image and the residual of every control point against azimuth.
"""
from __future__ import annotations

import os

import numpy as np
from scipy import signal

from .points import angles_at, pixels_at_angles

__all__ = ["validate_profile", "plot_calibration"]


def validate_profile(image, geometry, calibrant, valid=None, strong_fraction: float = 0.02) -> dict:
    """Peaks of the integrated profile against the calibrant's rings.

    A peak counts when its prominence is above 8 Poisson standard errors of the profile and
    ``strong_fraction`` of its range (no solid-angle correction, so that rings of any angle
    compare on the raw counts).

    Returns a dict: ``matched`` (list of {ring, two_theta_deg, offset_mdeg}), ``unexplained_deg``
    (2theta of strong peaks more than 3 bins from any ring), ``unexplained_fraction`` (of the
    strong peaks), ``missing_rings`` (strong calibrant rings, at least 6 bins from the others and
    inside the profile, with no peak), ``missing_fraction`` (of those expected), ``bin_mdeg``
    (the bin width).
    """
    from ..integrator import AzimuthalIntegrator

    tth = geometry.twotheta_array()
    extent = (np.nanmax(tth) - np.nanmin(tth)) * geometry.dist / min(geometry.detector.pixel1,
                                                                        geometry.detector.pixel2)
    npt = int(np.clip(extent, 100, 5000))
    mask = None if valid is None else (~np.asarray(valid)).astype(np.uint8)
    result = AzimuthalIntegrator(geometry).integrate1d(np.asarray(image, dtype=np.float32), npt,
                                                       unit="2th_deg", mask=mask,
                                                       correct_solid_angle=False,
                                                       error_model="poisson")
    x = np.asarray(result.radial, dtype=np.float64)
    y = np.nan_to_num(np.asarray(result.intensity, dtype=np.float64))
    step = float(x[1] - x[0])
    base = np.percentile(y[y > 0], 10) if np.any(y > 0) else 0.0
    sigma = np.asarray(result.sigma, dtype=np.float64)
    noise = float(np.median(sigma[np.isfinite(sigma) & (y > 0)])) if np.any(y > 0) else 0.0
    peaks, props = signal.find_peaks(y, prominence=max(8 * noise, strong_fraction * (y.max() - base),
                                                       1e-12))
    rings = np.degrees(calibrant.two_theta(geometry.wavelength))
    matched, unexplained = [], []
    for p in peaks:
        lo, hi = max(p - 2, 0), min(p + 3, y.size)
        w = np.clip(y[lo:hi] - base, 0, None)
        position = float(np.dot(w, x[lo:hi]) / w.sum()) if w.sum() > 0 else float(x[p])
        k = int(np.argmin(np.abs(rings - position))) if rings.size else -1
        if k >= 0 and abs(rings[k] - position) <= 3 * step:
            matched.append({"ring": k, "two_theta_deg": float(rings[k]),
                            "offset_mdeg": float((position - rings[k]) * 1e3)})
        else:
            unexplained.append(position)
    total = len(matched) + len(unexplained)
    # strong rings inside the profile, resolved from their neighbours, that show no peak
    filled = x[y > 0]
    strong = (calibrant.intensity[:rings.size] >= 10.0 if calibrant.intensity is not None
              else np.ones(rings.size, bool))
    expected = []
    if filled.size:
        for k, ring in enumerate(rings):
            others = np.delete(rings, k)
            resolved = others.size == 0 or np.min(np.abs(others - ring)) > 6 * step
            if strong[k] and resolved and filled.min() + 3 * step < ring < filled.max() - 3 * step:
                expected.append(k)
    found = {m["ring"] for m in matched}
    missing = [k for k in expected if k not in found]
    return {"matched": matched, "unexplained_deg": unexplained,
            "unexplained_fraction": len(unexplained) / total if total else 1.0,
            "missing_rings": missing,
            "missing_fraction": len(missing) / len(expected) if expected else 0.0,
            "bin_mdeg": step * 1e3}


def plot_calibration(path: str | os.PathLike, image, result, image_index: int = 0) -> None:
    """Save a PNG: the refined rings over the image (left), residual vs azimuth (right).

    Parameters
    ----------
    path : output file (written atomically).
    image : the calibrant image.
    result : :class:`xreduce.calibration.CalibrationResult`.
    image_index : which image of a joint calibration.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.writers import atomic_output

    geometry = result.refinement.geometries[image_index]
    points = result.refinement.points[image_index]
    residuals = result.refinement.residuals[image_index]
    data = np.asarray(image, dtype=np.float64)
    shown = np.where(data >= 0, data, np.nan)
    low, high = np.nanpercentile(shown, [1, 99.7])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    left.imshow(np.log1p(np.clip(shown - low, 0, None)), cmap="gray_r", origin="lower",
                vmax=np.log1p(max(high - low, 1)))
    chi = np.linspace(-np.pi, np.pi, 721)
    used = set(points.ring.tolist())
    for k, tth in enumerate(result.calibrant.two_theta(geometry.wavelength)):
        rows, cols = pixels_at_angles(geometry, np.full_like(chi, tth), chi)
        color = "tab:red" if k in used else "tab:blue"
        left.plot(cols, rows, color=color, lw=0.6, alpha=0.8)
    left.plot(points.cols, points.rows, ".", ms=1.5, color="tab:orange")
    left.set_xlim(-0.5, data.shape[1] - 0.5)
    left.set_ylim(-0.5, data.shape[0] - 0.5)
    left.set_title(f"{result.calibrant.name}: refined rings (red: used, blue: not used)")
    left.set_xlabel("column (pixel)")
    left.set_ylabel("row (pixel)")
    chi_points = np.degrees(angles_at(geometry, points.rows, points.cols)[1])
    for ring in sorted(used):
        sel = points.ring == ring
        right.plot(chi_points[sel], np.degrees(residuals[sel]) * 1e3, ".", ms=3,
                   label=f"ring {ring}")
    right.axhline(0, color="k", lw=0.5)
    right.set_xlabel(r"azimuth $\chi$ (deg)")
    right.set_ylabel(r"residual $2\theta$ (mdeg)")
    right.set_title(f"RMS {result.refinement.rms_mdeg:.3g} mdeg, "
                    f"{'OK' if result.ok else 'POOR: ' + result.problems[0][:60]}")
    if len(used) <= 12:
        right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_output(os.fspath(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
