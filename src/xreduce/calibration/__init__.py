"""Geometry calibration from calibrant images (``doc/calibration.md``).

>>> from xreduce.calibration import calibrate  # doctest: +SKIP
>>> result = calibrate(image, "Pilatus 1M", "LaB6", energy_kev=17.0)  # doctest: +SKIP
>>> result.geometry.save("refined.poni"); result.ok  # doctest: +SKIP

Modules: ``points`` (2theta and chi at sub-pixel positions, and back), ``peaks`` (ring
candidates without a geometry, control points with one), ``assign`` (ring numbers from radius
ratios, starting geometry), ``refine`` (least squares with uncertainties), ``workflow``
(:func:`calibrate`, :func:`calibrate_jointly`), ``report`` (profile validation, figure).
"""
from .assign import RingAssignment, assign_rings, starting_geometry
from .peaks import ControlPoints, RingCandidates, extract_control_points, find_ring_candidates, valid_pixels
from .points import angles_at, beam_centre_px, pixels_at_angles
from .refine import PARAMETERS, Refinement, refine_geometry
from .report import plot_calibration, validate_profile
from .workflow import CalibrationResult, Thresholds, calibrate, calibrate_jointly

__all__ = ["PARAMETERS", "CalibrationResult", "ControlPoints", "Refinement", "RingAssignment",
           "RingCandidates", "Thresholds", "angles_at", "assign_rings", "beam_centre_px",
           "calibrate", "calibrate_jointly", "extract_control_points", "find_ring_candidates",
           "pixels_at_angles", "plot_calibration", "refine_geometry", "starting_geometry",
           "validate_profile", "valid_pixels"]
