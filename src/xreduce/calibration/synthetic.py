"""Synthetic calibration cases: a true geometry placed by its beam centre, and its image.

Used by the tests and ``benchmarks/bench_calib.py`` to check :func:`xreduce.calibration.calibrate`
against known truth.
"""
from __future__ import annotations

import math

import numpy as np

from ..calibrant import fake_calibration_image, get_calibrant
from ..detectors import get_detector
from ..geometry import Geometry, rotation_matrix
from .points import pixel_to_plane

__all__ = ["geometry_with_beam_at", "synthetic_case"]


def geometry_with_beam_at(detector, dist: float, beam_rc: tuple, rot1: float, rot2: float,
                          rot3: float = 0.0, wavelength: float = 1e-10) -> Geometry:
    """The geometry whose direct beam hits pixel coordinates ``beam_rc`` (row, col).

    Example
    -------
    >>> from xreduce.calibration import beam_centre_px
    >>> det = get_detector("Pilatus 1M").binned(4)
    >>> g = geometry_with_beam_at(det, 0.2, (100.0, 50.0), 0.05, -0.03)
    >>> [round(x, 6) for x in beam_centre_px(g)]
    [100.0, 50.0]
    """
    direction = rotation_matrix(rot1, rot2, rot3).T @ np.array([0.0, 0.0, 1.0])
    b1, b2 = pixel_to_plane(detector, beam_rc[0], beam_rc[1])
    poni1 = float(b1) - dist * direction[0] / direction[2]
    poni2 = float(b2) - dist * direction[1] / direction[2]
    return Geometry(dist, poni1, poni2, rot1, rot2, rot3, wavelength, detector)


def synthetic_case(calibrant: str, detector: str, binning: int, dist: float, beam_fraction: tuple,
                   tilt_deg: float, tilt_direction_deg: float, energy_kev: float = 17.0,
                   spotty: float = 0.0, beamstop_radius_px: float = 0.0, fwhm_deg: float | None = None,
                   seed: int = 0) -> tuple:
    """(true geometry, image) of a calibrant on a (binned) named detector.

    ``beam_fraction`` places the beam at that fraction of the detector's (rows, cols); the tilt
    of ``tilt_deg`` is split between rot1 and rot2 along ``tilt_direction_deg``. The ring width
    defaults to 1.5 pixels seen from the sample.
    """
    from ..calibrant import energy_to_wavelength

    det = get_detector(detector)
    if binning > 1:
        det = det.binned(binning)
    tilt = math.radians(tilt_deg)
    rot1 = tilt * math.cos(math.radians(tilt_direction_deg))
    rot2 = tilt * math.sin(math.radians(tilt_direction_deg))
    beam = (beam_fraction[0] * det.shape[0], beam_fraction[1] * det.shape[1])
    truth = geometry_with_beam_at(det, dist, beam, rot1, rot2, 0.0, energy_to_wavelength(energy_kev))
    if fwhm_deg is None:
        fwhm_deg = math.degrees(1.5 * det.pixel1 / dist)
    image = fake_calibration_image(truth, get_calibrant(calibrant), fwhm_deg=fwhm_deg,
                                   background=20.0, peak_height=800.0, spotty=spotty,
                                   beamstop_radius_px=beamstop_radius_px, seed=seed)
    return truth, image
