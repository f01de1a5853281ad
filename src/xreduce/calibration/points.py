"""Scattering angles at arbitrary (sub-pixel) detector positions, and back.

Pixel coordinates: ``(row, col)`` in pixel-index units, the centre of pixel ``(i, j)`` at
``(i, j)`` (so its outer corner is at ``(-0.5, -0.5)``), in the image as stored. The same
conventions as :class:`xreduce.geometry.Geometry` (``doc/geometry.md``): the detector
orientation flips the image axes, and a point ``(d1, d2)`` of the detector plane relative to the
PONI goes to the lab vector ``t = A (d1, d2, dist)`` with ``A = rotation_matrix(rot1, rot2,
rot3)``; ``2theta = atan2(sqrt(t1^2 + t2^2), t3)``, ``chi = atan2(t1, t2)``.

Only flat detectors (no explicit pixel corners) are handled here.
"""
from __future__ import annotations

import numpy as np

from ..geometry import rotation_matrix

__all__ = ["pixel_to_plane", "plane_to_pixel", "angles_at", "pixels_at_angles"]


def _check_flat(detector) -> None:
    if not detector.is_flat:
        raise ValueError("detector: calibration handles flat detectors only; this one has "
                         "explicit pixel corners (a spline-distorted or curved detector)")


def pixel_to_plane(detector, rows, cols) -> tuple:
    """Detector-plane coordinates (metres from the outer corner of pixel (0, 0), in the
    detector's native axes) of pixel coordinates ``(rows, cols)``."""
    _check_flat(detector)
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    orientation = detector.orientation
    n1, n2 = detector.shape
    i1 = n1 - (rows + 0.5) if orientation in (1, 2) else rows + 0.5
    i2 = n2 - (cols + 0.5) if orientation in (1, 4) else cols + 0.5
    return i1 * detector.pixel1, i2 * detector.pixel2


def plane_to_pixel(detector, p1, p2) -> tuple:
    """Inverse of :func:`pixel_to_plane`."""
    _check_flat(detector)
    orientation = detector.orientation
    n1, n2 = detector.shape
    i1 = np.asarray(p1, dtype=np.float64) / detector.pixel1
    i2 = np.asarray(p2, dtype=np.float64) / detector.pixel2
    rows = (n1 - i1 if orientation in (1, 2) else i1) - 0.5
    cols = (n2 - i2 if orientation in (1, 4) else i2) - 0.5
    return rows, cols


def angles_from_parameters(dist, poni1, poni2, rot1, rot2, rot3, p1, p2) -> tuple:
    """(2theta, chi) in radians of detector-plane points ``(p1, p2)`` for PONI parameters."""
    matrix = rotation_matrix(rot1, rot2, rot3)
    d1 = p1 - poni1
    d2 = p2 - poni2
    t1 = matrix[0, 0] * d1 + matrix[0, 1] * d2 + matrix[0, 2] * dist
    t2 = matrix[1, 0] * d1 + matrix[1, 1] * d2 + matrix[1, 2] * dist
    t3 = matrix[2, 0] * d1 + matrix[2, 1] * d2 + matrix[2, 2] * dist
    return np.arctan2(np.hypot(t1, t2), t3), np.arctan2(t1, t2)


def angles_at(geometry, rows, cols) -> tuple:
    """(2theta, chi) in radians at pixel coordinates ``(rows, cols)`` (any shape, sub-pixel).

    Example
    -------
    >>> from xreduce.detectors import Detector
    >>> from xreduce.geometry import Geometry
    >>> geo = Geometry(0.1, 0.001, 0.002, 0.01, 0.02, 0.0, 1e-10, Detector(1e-4, 1e-4, (20, 30)))
    >>> tth, chi = angles_at(geo, [3.0], [4.0])
    >>> bool(abs(tth[0] - geo.twotheta_array()[3, 4]) < 1e-12)
    True
    """
    p1, p2 = pixel_to_plane(geometry.detector, rows, cols)
    return angles_from_parameters(geometry.dist, geometry.poni1, geometry.poni2, geometry.rot1,
                                  geometry.rot2, geometry.rot3, p1, p2)


def pixels_at_angles(geometry, two_theta, chi) -> tuple:
    """Pixel coordinates ``(rows, cols)`` where the ray at (2theta, chi) meets the detector.

    NaN where the ray runs parallel to or away from the detector plane.
    """
    two_theta = np.asarray(two_theta, dtype=np.float64)
    chi = np.asarray(chi, dtype=np.float64)
    sin2t = np.sin(two_theta)
    ray = np.stack([sin2t * np.sin(chi), sin2t * np.cos(chi), np.cos(two_theta)])
    matrix = rotation_matrix(geometry.rot1, geometry.rot2, geometry.rot3)
    local = np.tensordot(matrix.T, ray, axes=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(local[2] > 1e-12, geometry.dist / local[2], np.nan)
    p1 = local[0] * scale + geometry.poni1
    p2 = local[1] * scale + geometry.poni2
    return plane_to_pixel(geometry.detector, p1, p2)


def beam_centre_px(geometry) -> tuple:
    """(row, col) of the direct beam on the detector plane, pixel coordinates."""
    rows, cols = pixels_at_angles(geometry, 0.0, 0.0)
    return float(rows), float(cols)
