"""Geometry: PONI parameters + a detector -> per-pixel 2theta, chi, q, r, solid angle, ...

Conventions (as in pyFAI, see ``doc/geometry.md``): axis 1 = slow detector axis (rows),
axis 2 = fast axis (columns), axis 3 = along the beam. ``dist`` is the sample to detector-plane
distance along the plane normal, ``poni1``/``poni2`` the point of normal incidence measured
from the outer corner of pixel (0, 0), ``rot1``, ``rot2``, ``rot3`` the detector rotations
(rot1 applied first). SI units: metres and radians.

Per-pixel arrays are computed by the Cython + OpenMP kernels of ``xreduce.ext.geometry_kernels``,
cached on the instance and returned read-only.

Example
-------
>>> from xreduce.geometry import Geometry
>>> from xreduce.detectors import Detector
>>> geo = Geometry(0.1, 0.005, 0.004, 0.0, 0.0, 0.0, 1e-10, Detector(172e-6, 172e-6, (64, 48)))
>>> geo.twotheta_array().shape
(64, 48)
>>> geo2 = geo.with_(dist=0.2)  # a new object: Geometry never changes
>>> geo.dist, geo2.dist
(0.1, 0.2)
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .detectors import Detector, get_detector
from .units import Unit, get_unit

__all__ = ["Geometry", "ParameterTypeError", "rotation_matrix", "rotations_from_matrix"]

_QUANTITY_CODE = {"2th": 0, "q": 1, "r": 2, "d*2": 3}


class ParameterTypeError(TypeError, ValueError):
    """A parameter of the wrong type (both a TypeError and a ValueError)."""


def rotation_matrix(rot1: float, rot2: float, rot3: float) -> np.ndarray:
    """The PONI rotation: lab vector ``t = A @ (d1, d2, L)`` of a detector point.

    ``(d1, d2)`` are its in-plane coordinates relative to the PONI and ``L`` the distance; the
    columns of A are the detector axes 1, 2 and the plane normal in the lab frame.
    """
    c1, s1 = math.cos(rot1), math.sin(rot1)
    c2, s2 = math.cos(rot2), math.sin(rot2)
    c3, s3 = math.cos(rot3), math.sin(rot3)
    return np.array([
        [c2 * c3, c3 * s1 * s2 - c1 * s3, -(c1 * c3 * s2 + s1 * s3)],
        [c2 * s3, c1 * c3 + s1 * s2 * s3, -(c1 * s2 * s3 - c3 * s1)],
        [s2, -c2 * s1, c1 * c2],
    ])


def rotations_from_matrix(matrix) -> tuple:
    """(rot1, rot2, rot3) in radians of a rotation matrix in the form of :func:`rotation_matrix`.

    rot2 is taken in [-pi/2, pi/2]; rot1 and rot3 in (-pi, pi].
    """
    a = np.asarray(matrix, dtype=np.float64)
    rot2 = math.asin(max(-1.0, min(1.0, a[2, 0])))
    rot1 = math.atan2(-a[2, 1], a[2, 2])
    rot3 = math.atan2(a[1, 0], a[0, 0])
    return rot1, rot2, rot3


def _axis_rotation(axis: str, angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    return dt


@dataclass(frozen=True, eq=False)
class Geometry:
    """Experiment geometry in the PONI convention (immutable, picklable, thread-safe).

    Parameters
    ----------
    dist : float
        Sample to detector-plane distance along the plane normal, metres (> 0).
    poni1, poni2 : float
        Point of normal incidence from the outer corner of pixel (0, 0), along the slow and
        fast axis, metres.
    rot1, rot2, rot3 : float
        Detector rotations in radians (rot1 about axis 1 applied first, then rot2, then rot3).
    wavelength : float or None
        X-ray wavelength in metres (needed for q and d*^2).
    detector : Detector or str
        The detector (a name is looked up with :func:`xreduce.detectors.get_detector`).
    extra : dict
        PONI keys this library does not interpret, kept so that they can be written back.

    Example
    -------
    >>> from xreduce import get_detector
    >>> geo = Geometry(0.2, 0.08, 0.09, 0.01, 0.02, 0.0, 1e-10, get_detector("Pilatus 1M"))
    >>> round(float(geo.center_array("q_nm^-1")[500, 500]), 4)
    0.8884
    """

    dist: float
    poni1: float
    poni2: float
    rot1: float
    rot2: float
    rot3: float
    wavelength: float | None
    detector: Detector
    extra: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3"):
            object.__setattr__(self, name, _finite_float(name, getattr(self, name)))
        if self.dist <= 0:
            raise ValueError(f"dist: expected a positive distance in metres, got {self.dist!r}")
        if self.wavelength is not None:
            wavelength = _finite_float("wavelength", self.wavelength)
            if wavelength <= 0:
                raise ValueError(f"wavelength: expected a positive wavelength in metres, got {wavelength!r}")
            if wavelength > 1e-6:
                raise ValueError(
                    f"wavelength: expected metres (1 Angstrom = 1e-10), got {wavelength!r}")
            object.__setattr__(self, "wavelength", wavelength)
        detector = self.detector
        if isinstance(detector, str):
            detector = get_detector(detector)
        if not isinstance(detector, Detector):
            raise ParameterTypeError(
                f"detector: expected a Detector or a detector name, got {type(detector).__name__}")
        object.__setattr__(self, "detector", detector)
        if not isinstance(self.extra, dict):
            raise ParameterTypeError(f"extra: expected a dict, got {type(self.extra).__name__}")
        object.__setattr__(self, "extra", dict(self.extra))

    # -- identity, pickling, copies -------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return self.parameters() == other.parameters() and self.detector == other.detector

    def __hash__(self) -> int:
        return hash(tuple(self.parameters().values()) + (hash(self.detector),))

    def __getstate__(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "_cache"}

    def __setstate__(self, state):
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_cache", {})

    def parameters(self) -> dict:
        """The seven PONI parameters as a dict (SI units)."""
        return {name: getattr(self, name)
                for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")}

    def with_(self, **changes) -> "Geometry":
        """A new Geometry with some parameters changed (this one is left as it is).

        Example
        -------
        >>> from xreduce.detectors import Detector
        >>> g = Geometry(0.1, 0, 0, 0, 0, 0, 1e-10, Detector(1e-4, 1e-4, (8, 8)))
        >>> g.with_(rot1=0.1).rot1
        0.1
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self) if f.init}
        if unknown:
            raise ValueError(f"with_: unknown parameter(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    # -- files -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, shape: tuple | None = None) -> "Geometry":
        """Read a PONI file (versions 1, 2, 2.1, 3). See :func:`xreduce.poni.read_poni`.

        ``shape`` (rows, cols) is needed only for files whose detector has no shape (a plain
        detector given by its pixel sizes, as in version 1 files).
        """
        from .poni import read_poni

        return read_poni(path, shape=shape)

    def save(self, path: str | os.PathLike) -> None:
        """Write this geometry as a PONI file, version 2.1 (atomically: temporary name, rename)."""
        from .poni import write_poni

        write_poni(self, path)

    # -- pixel positions ---------------------------------------------------------------------------
    def _flips(self) -> tuple:
        orientation = self.detector.orientation
        return orientation in (1, 2), orientation in (1, 4)

    def _grid(self, corners: bool) -> tuple:
        """In-plane positions relative to the PONI of pixel centres (or edges) on both axes."""
        det = self.detector
        flip1, flip2 = self._flips()
        out = []
        for n, pixel, poni, flip in ((det.shape[0], det.pixel1, self.poni1, flip1),
                                     (det.shape[1], det.pixel2, self.poni2, flip2)):
            index = np.arange(n + 1, dtype=np.float64) if corners else np.arange(n) + 0.5
            if flip:
                index = n - index
            out.append(np.ascontiguousarray(index * pixel - poni))
        return tuple(out)

    def _explicit_points(self, corners: bool) -> tuple:
        """(d1, d2, L) of explicit-corner detectors, flattened: corners or corner means."""
        pos = self.detector.corners
        if not corners:
            pos = pos.mean(axis=2)
        pos = pos.reshape(-1, 3)
        return (np.ascontiguousarray(pos[:, 0] - self.poni1),
                np.ascontiguousarray(pos[:, 1] - self.poni2),
                np.ascontiguousarray(pos[:, 2] + self.dist))

    # -- kernels -----------------------------------------------------------------------------------
    def _radial_code(self, unit: Unit) -> int:
        code = _QUANTITY_CODE[unit.quantity]
        if code in (1, 3) and self.wavelength is None:
            raise ValueError(f"unit: {unit.name} needs a wavelength, and this geometry has none")
        return code

    def _compute_centres(self, unit: Unit, dtype: np.dtype) -> np.ndarray:
        """The value of ``unit`` (radial, or chi in radians) at the pixel centres."""
        from xreduce.ext import geometry_kernels as kernels

        out = np.empty(self.detector.shape, dtype)
        want_chi = unit.quantity == "chi"
        code = 0 if want_chi else self._radial_code(unit)
        scale = 1.0 if want_chi else unit.scale
        radial, chi = (out[:1, :1], out) if want_chi else (out, out[:1, :1])
        if self.detector.is_flat:
            d1, d2 = self._grid(corners=False)
            kernels.grid_centres(self.dist, self.rot1, self.rot2, self.rot3, d1, d2, code, scale,
                                 self.wavelength or 0.0, radial, chi, not want_chi, want_chi)
        else:
            d1, d2, d3 = self._explicit_points(corners=False)
            kernels.scattered_points(self.rot1, self.rot2, self.rot3, d1, d2, d3, code, scale,
                                     self.wavelength or 0.0, radial.reshape(-1),
                                     chi.reshape(-1), not want_chi, want_chi)
        return _readonly(out)

    def center_array(self, unit: str | Unit = "2th_deg", dtype=np.float64) -> np.ndarray:
        """Value of ``unit`` at every pixel centre, already in the unit's scale.

        Parameters
        ----------
        unit : str or Unit
            A radial unit (``2th_deg``, ``q_nm^-1``, ``r_mm``, ...) or ``chi_deg``/``chi_rad``
            (chi in (-pi, pi]).
        dtype : float32 or float64
            Output type (computation is always float64).

        Returns
        -------
        numpy.ndarray
            Shape ``detector.shape``, read-only, cached.
        """
        unit = get_unit(unit)
        dtype = _check_dtype(dtype)
        key = ("center", unit.name, dtype.str)
        if key not in self._cache:
            if unit.name == "chi_deg":
                chi = self.center_array("chi_rad", np.float64) * unit.scale
                self._cache[key] = _readonly(chi.astype(dtype, copy=False))
            else:
                self._cache[key] = self._compute_centres(unit, dtype)
        return self._cache[key]

    def corner_array(self, unit: str | Unit = "2th_deg", dtype=np.float64) -> np.ndarray:
        """Radial value and chi at the 4 corners of every pixel.

        Returns an array of shape (rows, cols, 4, 2): ``[..., 0]`` the radial ``unit`` in its
        scale, ``[..., 1]`` chi in radians in (-pi, pi]. Corner order (0,0), (1,0), (1,1), (0,1)
        in (slow, fast) offsets, going round the pixel. A detector with explicit corners gives
        its own number of corners per pixel in the same way (6 for hexagonal pixels, in the
        detector's order). Read-only and cached.

        Example
        -------
        >>> from xreduce.detectors import Detector
        >>> g = Geometry(0.1, 0, 0, 0, 0, 0, 1e-10, Detector(1e-4, 1e-4, (3, 2)))
        >>> g.corner_array("r_mm")[0, 0, :, 0].round(4).tolist()
        [0.0, 0.1, 0.1414, 0.1]
        """
        unit = get_unit(unit)
        dtype = _check_dtype(dtype)
        if unit.kind != "radial":
            raise ValueError(f"unit: corner_array needs a radial unit, got {unit.name}")
        key = ("corner", unit.name, dtype.str)
        if key not in self._cache:
            from xreduce.ext import geometry_kernels as kernels

            rows, cols = self.detector.shape
            ncorners = 4 if self.detector.is_flat else self.detector.corners.shape[2]
            out = np.empty((rows, cols, ncorners, 2), dtype)
            code, wavelength = self._radial_code(unit), self.wavelength or 0.0
            if self.detector.is_flat:
                e1, e2 = self._grid(corners=True)
                kernels.grid_corners(self.dist, self.rot1, self.rot2, self.rot3, e1, e2, code,
                                     unit.scale, wavelength, out)
            else:
                d1, d2, d3 = self._explicit_points(corners=True)
                flat = out.reshape(-1, 2)
                kernels.scattered_points(self.rot1, self.rot2, self.rot3, d1, d2, d3, code,
                                         unit.scale, wavelength, flat[:, 0], flat[:, 1], True, True)
            self._cache[key] = _readonly(out)
        return self._cache[key]

    def delta_array(self, unit: str | Unit = "2th_deg") -> np.ndarray:
        """Largest deviation of a pixel's corners from its centre, in ``unit`` (pyFAI's
        ``delta_array``; what its bbox splitting adds on either side of the centre).

        For ``chi_deg``/``chi_rad`` the deviation is taken the short way round the circle
        (a pixel across the -pi/pi seam deviates by a little, not by 2 pi). Read-only,
        cached.

        Example
        -------
        >>> from xreduce.detectors import Detector
        >>> g = Geometry(0.1, 0.0, 0.0, 0, 0, 0, 1e-10, Detector(1e-4, 1e-4, (4, 4)))
        >>> round(float(g.delta_array("chi_deg")[0, 0]), 3)    # a corner on the beam
        45.0
        """
        unit = get_unit(unit)
        key = ("delta", unit.name)
        if key not in self._cache:
            if unit.quantity == "chi":
                chi = self.corner_array("2th_rad")[..., 1]
                delta = np.abs(chi - self.chi_array()[..., None])
                np.minimum(delta, 2 * np.pi - delta, out=delta)
                out = delta.max(axis=-1) * unit.scale
            else:
                delta = np.abs(self.corner_array(unit)[..., 0] - self.center_array(unit)[..., None])
                out = delta.max(axis=-1)
            self._cache[key] = _readonly(out)
        return self._cache[key]

    def radial_bounds(self, unit: str | Unit = "2th_deg") -> np.ndarray:
        """Smallest and largest value of a radial ``unit`` over the 4 corners of every pixel.

        What the 1D bounding-box split reads: 16 bytes per pixel instead of the 64 of the corner
        array (which it does not compute for a flat detector).

        Returns
        -------
        numpy.ndarray
            Shape (rows, cols, 2) float64: ``[..., 0]`` the minimum, ``[..., 1]`` the maximum
            (in the unit's scale); NaN for a pixel with a non-finite corner. Read-only, cached.

        Example
        -------
        >>> from xreduce.detectors import Detector
        >>> g = Geometry(0.1, 0, 0, 0, 0, 0, 1e-10, Detector(1e-4, 1e-4, (3, 2)))
        >>> g.radial_bounds("r_mm")[0, 0].round(4).tolist()
        [0.0, 0.1414]
        """
        unit = get_unit(unit)
        if unit.kind != "radial":
            raise ValueError(f"unit: radial_bounds needs a radial unit, got {unit.name}")
        key = ("radial_bounds", unit.name)
        if key not in self._cache:
            from xreduce.ext import csr_builder
            from xreduce.ext import geometry_kernels as kernels

            rows, cols = self.detector.shape
            if self.detector.is_flat:
                out = np.empty((rows, cols, 2), np.float64)
                e1, e2 = self._grid(corners=True)
                kernels.grid_radial_bounds(self.dist, self.rot1, self.rot2, self.rot3, e1, e2,
                                           self._radial_code(unit), unit.scale,
                                           self.wavelength or 0.0, out)
            else:
                corners = self.corner_array(unit)
                corners = corners.reshape((-1,) + corners.shape[-2:])
                out = csr_builder.radial_bounds(corners, None)[0].reshape(rows, cols, 2)
            self._cache[key] = _readonly(out)
        return self._cache[key]

    def twotheta_array(self, dtype=np.float64) -> np.ndarray:
        """Scattering angle 2theta at pixel centres, radians."""
        return self.center_array("2th_rad", dtype)

    def chi_array(self, dtype=np.float64) -> np.ndarray:
        """Azimuthal angle chi = atan2(t1, t2) at pixel centres, radians in (-pi, pi]."""
        return self.center_array("chi_rad", dtype)

    def q_array(self, unit: str | Unit = "q_nm^-1", dtype=np.float64) -> np.ndarray:
        """Scattering vector modulus q = 4 pi sin(theta) / wavelength (``q_nm^-1`` or ``q_A^-1``)."""
        unit = get_unit(unit)
        if unit.quantity != "q":
            raise ValueError(f"unit: expected q_nm^-1 or q_A^-1, got {unit.name}")
        return self.center_array(unit, dtype)

    def r_array(self, dtype=np.float64) -> np.ndarray:
        """Distance from the beam, sqrt(t1^2 + t2^2), in millimetres."""
        return self.center_array("r_mm", dtype)

    def dstar2_array(self, dtype=np.float64) -> np.ndarray:
        """d*^2 = (2 sin(theta) / wavelength)^2 in A^-2."""
        return self.center_array("d*2_A^-2", dtype)

    def _cos_power(self, power: float, scale: float, dtype: np.dtype) -> np.ndarray:
        out = np.empty(self.detector.shape, dtype)
        if self.detector.is_flat:
            from xreduce.ext import geometry_kernels as kernels

            d1, d2 = self._grid(corners=False)
            kernels.grid_cos_incidence(self.dist, d1, d2, power, scale, out)
        else:
            d1, d2, d3 = self._explicit_points(corners=False)
            cos = d3 / np.sqrt(d1 * d1 + d2 * d2 + d3 * d3)
            out[...] = (scale * cos ** power).reshape(out.shape)
        return _readonly(out)

    def solid_angle_array(self, absolute: bool = False, dtype=np.float64) -> np.ndarray:
        """Solid angle of each pixel.

        Relative (``absolute=False``): ``cos(alpha)^3``, 1 at the PONI, alpha being the angle
        between the ray and the detector normal. Absolute: ``pixel1 * pixel2 / dist^2 *
        cos(alpha)^3`` in steradians.
        """
        dtype = _check_dtype(dtype)
        key = ("solid_angle", bool(absolute), dtype.str)
        if key not in self._cache:
            scale = self.detector.pixel1 * self.detector.pixel2 / self.dist ** 2 if absolute else 1.0
            self._cache[key] = self._cos_power(3.0, scale, dtype)
        return self._cache[key]

    def cos_incidence_array(self, dtype=np.float64) -> np.ndarray:
        """cos(alpha), alpha = angle between the ray to the pixel and the detector normal."""
        dtype = _check_dtype(dtype)
        key = ("cos_incidence", dtype.str)
        if key not in self._cache:
            self._cache[key] = self._cos_power(1.0, 1.0, dtype)
        return self._cache[key]

    def polarization_array(self, factor: float, axis_offset: float = 0.0,
                           dtype=np.float64) -> np.ndarray:
        """Polarization factor of each pixel.

        ``P = 0.5 * (1 + cos^2(2theta) - factor * cos(2 (chi + axis_offset)) * (1 - cos^2(2theta)))``

        Parameters
        ----------
        factor : float
            Polarization fraction in [-1, 1]: 0 unpolarized, 0.99 typical horizontal
            synchrotron beam, -1 fully vertical.
        axis_offset : float
            Angle of the polarization plane from the horizontal, radians.
        """
        factor = _finite_float("factor", factor)
        axis_offset = _finite_float("axis_offset", axis_offset)
        if not -1.0 <= factor <= 1.0:
            raise ValueError(f"factor: expected a polarization fraction in [-1, 1], got {factor!r}")
        dtype = _check_dtype(dtype)
        key = ("polarization", factor, axis_offset, dtype.str)
        if key not in self._cache:
            cos2 = np.cos(self.twotheta_array()) ** 2
            pol = 0.5 * (1.0 + cos2 - factor * np.cos(2.0 * (self.chi_array() + axis_offset)) * (1.0 - cos2))
            self._cache[key] = _readonly(pol.astype(dtype, copy=False))
        return self._cache[key]

    # -- other conventions -------------------------------------------------------------------------
    @classmethod
    def from_fit2d(cls, directDist_mm: float, centerX_px: float, centerY_px: float,
                   tilt_deg: float = 0.0, tiltPlanRotation_deg: float = 0.0,
                   pixelX_um: float | None = None, pixelY_um: float | None = None,
                   wavelength_A: float | None = None, detector: Detector | str | None = None,
                   shape: tuple | None = None) -> "Geometry":
        """Geometry from Fit2D's parameters.

        Fit2D describes the detector by the distance along the beam to where the beam hits it
        (``directDist_mm``), that beam centre in pixels (``centerX_px`` along the fast axis,
        ``centerY_px`` along the slow axis, 0 = outer edge of the first pixel), the angle
        between the detector normal and the beam (``tilt_deg``) and the direction in the
        detector plane towards which it is tilted (``tiltPlanRotation_deg``, measured from the
        fast axis towards the slow axis). The detector frame is the untilted one rotated by
        ``tilt`` about the in-plane axis perpendicular to that direction.

        Parameters
        ----------
        pixelX_um, pixelY_um : float, optional
            Pixel size along the fast (X) and slow (Y) axis in micrometres; default: the
            detector's.
        wavelength_A : float, optional
            Wavelength in Angstrom.
        detector : Detector or str, optional
            The detector; without one, ``shape`` and the pixel sizes make a plain Detector.

        Example
        -------
        >>> g = Geometry.from_fit2d(100.0, 500.0, 520.0, 0.0, 0.0, 172.0, 172.0, 1.0, "Pilatus 1M")
        >>> round(g.poni1, 5), round(g.poni2, 5)
        (0.08944, 0.086)
        """
        direct_m = _finite_float("directDist_mm", directDist_mm) * 1e-3
        if direct_m <= 0:
            raise ValueError(f"directDist_mm: expected a positive distance, got {directDist_mm!r}")
        center_x = _finite_float("centerX_px", centerX_px)
        center_y = _finite_float("centerY_px", centerY_px)
        tilt = math.radians(_finite_float("tilt_deg", tilt_deg))
        tpr = math.radians(_finite_float("tiltPlanRotation_deg", tiltPlanRotation_deg))
        if abs(tilt) >= math.pi / 2:
            raise ValueError(f"tilt_deg: expected |tilt| < 90 degrees, got {tilt_deg!r}")
        detector = _detector_with_pixels(detector, shape, pixelY_um, pixelX_um)
        # The tilt rotates the detector about the in-plane axis k = (cos tpr, -sin tpr, 0);
        # its normal then leans towards (sin tpr, cos tpr) in (axis 1, axis 2).
        k = np.array([math.cos(tpr), -math.sin(tpr), 0.0])
        kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
        rotation = np.eye(3) * math.cos(tilt) + math.sin(tilt) * kx + (1 - math.cos(tilt)) * np.outer(k, k)
        rot1, rot2, rot3 = rotations_from_matrix(rotation)
        # The beam hits the plane at directDist * (A^T e3)[:2] from the PONI.
        poni1 = center_y * detector.pixel1 - direct_m * rotation[2, 0]
        poni2 = center_x * detector.pixel2 - direct_m * rotation[2, 1]
        wavelength = None if wavelength_A is None else _finite_float("wavelength_A", wavelength_A) * 1e-10
        return cls(direct_m * math.cos(tilt), poni1, poni2, rot1, rot2, rot3, wavelength, detector)

    def to_fit2d(self) -> dict:
        """Fit2D's description of this geometry.

        Returns a dict with ``directDist`` (mm), ``centerX``, ``centerY`` (pixels), ``tilt``,
        ``tiltPlanRotation`` (degrees), ``pixelX``, ``pixelY`` (micrometres) and
        ``wavelength`` (Angstrom or None). Fit2D has no rotation of the detector about its own
        normal: a geometry whose rot3 differs from the one Fit2D's tilt implies is described by
        the same beam centre, distance and tilt, but pixels rotate about the normal.
        """
        a = rotation_matrix(self.rot1, self.rot2, self.rot3)
        cos_tilt = a[2, 2]
        if cos_tilt <= 0:
            raise ValueError("rot1, rot2: the detector does not face the beam (tilt >= 90 degrees); "
                             "Fit2D cannot describe it")
        direct_m = self.dist / cos_tilt
        tilt = math.degrees(math.acos(max(-1.0, min(1.0, cos_tilt))))
        tpr = math.degrees(math.atan2(a[2, 0], a[2, 1])) if tilt > 0 else 0.0
        return {
            "directDist": direct_m * 1e3,
            "centerX": (self.poni2 + direct_m * a[2, 1]) / self.detector.pixel2,
            "centerY": (self.poni1 + direct_m * a[2, 0]) / self.detector.pixel1,
            "tilt": tilt,
            "tiltPlanRotation": tpr,
            "pixelX": self.detector.pixel2 * 1e6,
            "pixelY": self.detector.pixel1 * 1e6,
            "wavelength": None if self.wavelength is None else self.wavelength * 1e10,
        }

    # -- pyFAI ---------------------------------------------------------------------------------------
    @classmethod
    def from_pyfai(cls, ai) -> "Geometry":
        """The geometry of a pyFAI ``Geometry``/``AzimuthalIntegrator`` (or of
        :class:`xreduce.compat.pyfai.AzimuthalIntegrator`): the seven PONI parameters and the
        detector (:meth:`Detector.from_pyfai`).

        Example
        -------
        >>> from pyFAI.integrator.azimuthal import AzimuthalIntegrator   # doctest: +SKIP
        >>> ai = AzimuthalIntegrator(dist=0.1, detector="Pilatus1M")      # doctest: +SKIP
        >>> Geometry.from_pyfai(ai).detector.name                          # doctest: +SKIP
        'Pilatus 1M'
        """
        if isinstance(getattr(ai, "geometry", None), Geometry):        # the compat class
            return ai.geometry
        for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "detector"):
            if not hasattr(ai, name):
                raise TypeError(f"ai: expected a pyFAI Geometry or AzimuthalIntegrator, got "
                                f"{type(ai).__name__} (no {name})")
        detector = Detector.from_pyfai(ai.detector)
        wavelength = ai.wavelength if ai.wavelength else None
        return cls(float(ai.dist), float(ai.poni1), float(ai.poni2), float(ai.rot1),
                   float(ai.rot2), float(ai.rot3), wavelength, detector)

    def to_pyfai(self):
        """This geometry as a pyFAI ``AzimuthalIntegrator`` (parameters and detector, see
        :meth:`Detector.to_pyfai`; a registry detector is built by its pyFAI name).

        Example
        -------
        >>> g = Geometry(0.1, 0.05, 0.05, 0, 0, 0, 1e-10, "Pilatus 1M")     # doctest: +SKIP
        >>> g.to_pyfai().detector.name                                       # doctest: +SKIP
        'Pilatus 1M'
        """
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator

        return AzimuthalIntegrator(self.dist, self.poni1, self.poni2, self.rot1, self.rot2,
                                   self.rot3, detector=self.detector.to_pyfai(),
                                   wavelength=self.wavelength)

    @classmethod
    def from_midas(cls, Lsd_um: float, BC_px: tuple, px_um: float, tx_deg: float = 0.0,
                   ty_deg: float = 0.0, tz_deg: float = 0.0, wavelength_A: float | None = None,
                   detector: Detector | str | None = None, shape: tuple | None = None) -> "Geometry":
        """Geometry from MIDAS detector parameters (Lsd, BC, px, tx, ty, tz).

        Axis mapping (documented choice): MIDAS lab +X (beam) = axis 3, lab +Y = axis 2 (image
        columns, fast), lab +Z = axis 1 (image rows, slow). The centre of pixel (row i, column
        j) has MIDAS detector coordinates (Y, Z) = (j, i); ``BC_px = (BCy, BCz)`` is in the same
        coordinates. The untilted detector lies in the plane X = Lsd; the tilts
        ``Rt = Rz(tz) Ry(ty) Rx(tx)`` rotate it about the beam centre, so that pixel (i, j) sits
        at ``(Lsd, 0, 0) + Rt @ (0, (j - BCy) px, (i - BCz) px)`` in the lab.

        Parameters
        ----------
        Lsd_um : float
            Sample to detector distance along the beam (to the beam centre), micrometres.
        BC_px : (float, float)
            Beam centre (BCy, BCz) in pixels.
        px_um : float
            Pixel size in micrometres (square pixels).
        tx_deg, ty_deg, tz_deg : float
            Detector tilts in degrees.
        wavelength_A : float, optional
            Wavelength in Angstrom.
        detector : Detector or str, optional
            The detector (orientation 3); without one, ``shape`` makes a plain Detector.

        Example
        -------
        >>> g = Geometry.from_midas(1e6, (512.0, 512.0), 200.0, shape=(1024, 1024))
        >>> round(g.dist, 6), round(g.poni1, 6), round(g.poni2, 6)
        (1.0, 0.1025, 0.1025)
        """
        lsd = _finite_float("Lsd_um", Lsd_um) * 1e-6
        if lsd <= 0:
            raise ValueError(f"Lsd_um: expected a positive distance, got {Lsd_um!r}")
        if not isinstance(BC_px, (tuple, list, np.ndarray)) or len(BC_px) != 2:
            raise ParameterTypeError(f"BC_px: expected a pair (BCy, BCz) of floats, got {BC_px!r}")
        bcy, bcz = (_finite_float("BC_px", v) for v in BC_px)
        px = _finite_float("px_um", px_um)
        if px <= 0:
            raise ValueError(f"px_um: expected a positive pixel size, got {px_um!r}")
        detector = _detector_with_pixels(detector, shape, px, px)
        if detector.orientation != 3:
            raise ValueError(f"detector: from_midas needs orientation 3, got {detector.orientation}")
        tilts = [math.radians(_finite_float(n, v))
                 for n, v in (("tx_deg", tx_deg), ("ty_deg", ty_deg), ("tz_deg", tz_deg))]
        rt = _axis_rotation("z", tilts[2]) @ _axis_rotation("y", tilts[1]) @ _axis_rotation("x", tilts[0])
        # M maps MIDAS lab (X, Y, Z) to (axis 1, axis 2, axis 3) = (Z, Y, X).
        m = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        a = m @ rt @ m.T
        if a[2, 2] <= 0:
            raise ValueError("tx_deg, ty_deg, tz_deg: the tilted detector no longer faces the sample")
        rot1, rot2, rot3 = rotations_from_matrix(a)
        pixel_m = detector.pixel1
        # The PONI is the foot of the normal from the sample; the beam centre is at
        # (0, 0, Lsd), so the PONI lies at -Lsd * (a[2, 0], a[2, 1]) from it in the plane.
        poni1 = (bcz + 0.5) * pixel_m - lsd * a[2, 0]
        poni2 = (bcy + 0.5) * pixel_m - lsd * a[2, 1]
        wavelength = None if wavelength_A is None else _finite_float("wavelength_A", wavelength_A) * 1e-10
        return cls(lsd * a[2, 2], poni1, poni2, rot1, rot2, rot3, wavelength, detector)

    def __str__(self) -> str:
        det = self.detector
        wavelength = "none" if self.wavelength is None else f"{self.wavelength * 1e10:.6g} A"
        lines = [
            f"Detector     {det.name or 'unnamed'}  {det.shape[0]} x {det.shape[1]} px, "
            f"pixel {det.pixel1 * 1e6:g} x {det.pixel2 * 1e6:g} um, orientation {det.orientation}",
            f"Wavelength   {wavelength}",
            f"PONI         dist {self.dist:.6g} m  poni1 {self.poni1:.6g} m  poni2 {self.poni2:.6g} m",
            f"             rot1 {self.rot1:.6g}  rot2 {self.rot2:.6g}  rot3 {self.rot3:.6g} rad",
        ]
        try:
            f2d = self.to_fit2d()
        except ValueError:
            return "\n".join(lines)
        lines.append(f"Fit2D        directDist {f2d['directDist']:.4f} mm  centre x {f2d['centerX']:.3f} "
                     f"y {f2d['centerY']:.3f} px  tilt {f2d['tilt']:.4f} deg  "
                     f"tiltPlanRotation {f2d['tiltPlanRotation']:.4f} deg")
        return "\n".join(lines)


def _finite_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise ParameterTypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


def _detector_with_pixels(detector, shape, pixel1_um, pixel2_um) -> Detector:
    """The detector of a Fit2D/MIDAS description, with its pixel sizes if they are given."""
    if isinstance(detector, str):
        detector = get_detector(detector)
    if detector is None:
        if shape is None or pixel1_um is None or pixel2_um is None:
            raise ValueError("detector: give a detector, or a shape and the pixel sizes")
        return Detector(_finite_float("pixel size", pixel1_um) * 1e-6,
                        _finite_float("pixel size", pixel2_um) * 1e-6, tuple(shape))
    if not isinstance(detector, Detector):
        raise ParameterTypeError(f"detector: expected a Detector or a name, got {type(detector).__name__}")
    if pixel1_um is None and pixel2_um is None:
        return detector
    pixel1 = detector.pixel1 if pixel1_um is None else _finite_float("pixel size", pixel1_um) * 1e-6
    pixel2 = detector.pixel2 if pixel2_um is None else _finite_float("pixel size", pixel2_um) * 1e-6
    if math.isclose(pixel1, detector.pixel1, rel_tol=1e-9) and math.isclose(pixel2, detector.pixel2, rel_tol=1e-9):
        return detector
    return dataclasses.replace(detector, pixel1=pixel1, pixel2=pixel2)
