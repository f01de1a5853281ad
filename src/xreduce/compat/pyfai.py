"""pyFAI's integrator API on xreduce: change the import, keep the script.

A pyFAI script written as in pyFAI's tutorials runs with ``import pyFAI`` replaced by
``import xreduce.compat.pyfai as pyFAI`` (or ``from xreduce.compat.pyfai import
AzimuthalIntegrator, load``): pyFAI's keywords (``correctSolidAngle``, ``filename=``,
``polarization_factor``, ``dummy``), its method names and tuples (``"csr"``, ``"splitpixel"``,
``("full", "csr", "cython")``, ``"csr_ocl"``), the ``_ng`` names, ``separate``, the
geometry arrays, Fit2D and ``get_config``/``set_config``, and results that unpack like
pyFAI's (``q, I = res``; ``q, I, sigma = res`` with errors; ``I, tth, chi = res2d``).

pyFAI's defaults hold here, so that numbers compare bin for bin (doc/pyfai.md):

- ``"bbox"`` means pyFAI's box (centre +- the largest corner deviation), xreduce's split
  ``"bbox_pyfai"``; the core integrator's ``"bbox"`` is the true box of the corners.
- a 2D azimuthal range, when not given, spans the chi of the valid pixels (as pyFAI),
  not the full circle.
- the default radial unit is ``q_nm^-1`` and the default method ``("bbox", "csr", "cython")``.

Every computation runs on :class:`xreduce.integrator.AzimuthalIntegrator` through its public
API; pyFAI itself is needed only by the converters that take pyFAI objects.

Example
-------
>>> import numpy as np
>>> from xreduce.compat.pyfai import AzimuthalIntegrator
>>> ai = AzimuthalIntegrator(dist=0.1, poni1=0.01, poni2=0.01, detector="Pilatus 100k",
...                          wavelength=1e-10)
>>> q, I = ai.integrate1d(np.ones(ai.detector.shape), 100, unit="q_nm^-1")
>>> print(ai.integrate1d(np.ones(ai.detector.shape), 100, unit="2th_deg").unit)
2th_deg
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np

from xreduce import integrator as _core
from xreduce.detectors import Detector, get_detector
from xreduce.engines import digest
from xreduce.geometry import Geometry
from xreduce.sparse import PYFAI_BBOX, pyfai_bbox_corners
from xreduce.units import get_unit

__all__ = ["AzimuthalIntegrator", "load", "detector_factory", "Integrate1dResult",
           "Integrate2dResult", "SeparateResult", "parse_pyfai_method"]

DEFAULT_METHOD = ("bbox", "csr", "cython")
_DEFAULT_UNIT = "q_nm^-1"

# pyFAI's names for the three parts of a method (doc/pyfai.md, "Methods").
_SPLITS = {"no": "no", "nosplit": "no", "bbox": PYFAI_BBOX, "splitbbox": PYFAI_BBOX,
           "pseudo": "pseudo", "full": "full", "splitpixel": "full"}
_ALGORITHMS = {"histogram": "histogram", "lut": "csr", "csr": "csr", "csc": "csr"}
_IMPLEMENTATIONS = {"python": "cython", "numpy": "cython", "cython": "cython",
                    "opencl": "opencl", "ocl": "opencl"}
# Single words pyFAI accepts as a whole method.
_WORDS = {"numpy": ("no", "histogram", "cython"), "cython": ("no", "histogram", "cython"),
          "bbox": ("bbox", "histogram", "cython"), "splitbbox": ("bbox", "histogram", "cython"),
          "splitpixel": ("full", "histogram", "cython"), "lut": ("bbox", "lut", "cython"),
          "csr": ("bbox", "csr", "cython"), "csc": ("bbox", "csc", "cython"),
          "nosplit_csr": ("no", "csr", "cython"), "full_csr": ("full", "csr", "cython"),
          "lut_ocl": ("bbox", "lut", "opencl"), "csr_ocl": ("bbox", "csr", "opencl"),
          "ocl_csr": ("bbox", "csr", "opencl"), "ocl_lut": ("bbox", "lut", "opencl"),
          "full_ocl_csr": ("full", "csr", "opencl"), "splitpixelfull": ("full", "histogram",
                                                                         "cython")}


def _register_pyfai_box() -> None:
    """Let the CSR implementations build pyFAI's box (split "bbox_pyfai")."""
    for key, impl in list(_core.IMPLEMENTATIONS.items()):
        if key[0] == "csr" and "bbox" in impl.splits and PYFAI_BBOX not in impl.splits \
                and key[1] == "cython":
            _core.register_implementation(key[0], key[1], impl.splits + (PYFAI_BBOX,),
                                          impl.build)


_register_pyfai_box()


def parse_pyfai_method(method: Any) -> tuple[str, str, str]:
    """A pyFAI method (string, tuple or IntegrationMethod) as an xreduce ``(split, algorithm,
    implementation)``.

    pyFAI's LUT and CSC algorithms give the same numbers as CSR and run as CSR here; a split
    the histogram implementation lacks (pseudo, full, pyFAI's box) runs as CSR too.

    >>> parse_pyfai_method("splitpixel")
    ('full', 'csr', 'cython')
    >>> parse_pyfai_method(("bbox", "csr", "cython"))
    ('bbox_pyfai', 'csr', 'cython')
    """
    if method is None:
        method = DEFAULT_METHOD
    if hasattr(method, "split_lower"):                        # pyFAI's IntegrationMethod
        method = (method.split_lower, method.algo_lower, method.impl_lower)
    if isinstance(method, str):
        word = method.lower().strip()
        if word in _WORDS:
            parts: Sequence[str] = _WORDS[word]
        else:
            parts = word.split("_")
    else:
        try:
            parts = [str(p).lower() for p in method]
        except TypeError:
            raise TypeError(f"method: expected a pyFAI method name or tuple, got "
                            f"{type(method).__name__}") from None
    parts = list(parts) + list(DEFAULT_METHOD[len(parts):])
    if len(parts) != 3 or parts[0] not in _SPLITS or parts[1] not in _ALGORITHMS \
            or parts[2] not in _IMPLEMENTATIONS:
        raise ValueError(f"method: expected a pyFAI method such as 'csr', 'splitpixel', "
                         f"'bbox', 'csr_ocl' or a tuple (split, algorithm, implementation) "
                         f"with split in {sorted(_SPLITS)}, algorithm in "
                         f"{sorted(_ALGORITHMS)}, implementation in {sorted(_IMPLEMENTATIONS)};"
                         f" got {method!r}")
    split, algorithm, implementation = (_SPLITS[parts[0]], _ALGORITHMS[parts[1]],
                                        _IMPLEMENTATIONS[parts[2]])
    if algorithm == "histogram" and (split not in ("no", "bbox") or implementation != "cython"):
        algorithm = "csr"
    if implementation == "opencl" and split == PYFAI_BBOX:
        split = "bbox"          # the OpenCL engine builds the true box (doc/pyfai.md)
    return split, algorithm, implementation


def _empty(dummy: float | None) -> float:
    """pyFAI's value for bins without pixels: ``dummy`` if given, else 0."""
    return 0.0 if dummy is None else float(dummy)


def _error_model(value: Any) -> str | None:
    """pyFAI's error models (a name or its ErrorModel enum) as xreduce's."""
    if value is None:
        return None
    name = getattr(value, "name", value)
    name = str(name).lower()
    if name in ("no", "none", ""):
        return None
    if name in ("poisson", "azimuthal", "variance"):
        return name
    raise ValueError(f"error_model: expected None, 'poisson' or 'azimuthal', got {value!r}")


def detector_factory(name: Any, config: dict | None = None) -> Detector:
    """A detector by pyFAI's name (``"Pilatus1M"``, ``"Eiger2_CdTe_4M"``, ...), as pyFAI's
    ``detector_factory``; ``config`` may give ``binning`` and ``orientation``.

    >>> detector_factory("Pilatus1M").shape
    (1043, 981)
    """
    if isinstance(name, Detector):
        return name
    if hasattr(name, "pixel1") and hasattr(name, "max_shape"):   # a pyFAI detector
        return Detector.from_pyfai(name)
    config = dict(config or {})
    binning = config.pop("binning", None)
    orientation = int(config.pop("orientation", 3) or 3)
    if config:
        pixel1, pixel2 = config.pop("pixel1", None), config.pop("pixel2", None)
        shape = config.pop("max_shape", None)
        if config or pixel1 is None or pixel2 is None or shape is None:
            raise ValueError(f"config: expected binning, orientation, or pixel1, pixel2 and "
                             f"max_shape for a plain detector, got keys {sorted(config)}")
        return Detector(float(pixel1), float(pixel2), tuple(shape),
                        orientation=orientation).binned(*(binning or (1, 1)))
    return get_detector(str(name), binning=None if binning is None else tuple(binning),
                        orientation=orientation)


# =====================================================================================
# Results
# =====================================================================================

class _ResultMixin:
    """What pyFAI's results offer besides the arrays: the unit, method and geometry."""

    _result: Any
    method_called: str

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_result":
            raise AttributeError(name)
        return getattr(self._result, name)

    @property
    def result(self) -> Any:
        """The underlying :mod:`xreduce.results` object (save, plot, per-bin sums)."""
        return self._result

    @property
    def count(self) -> np.ndarray:
        """Number of pixels (fractions) in each bin (tuple's ``count`` method is shadowed,
        as in pyFAI)."""
        return self._result.count

    @property
    def sem(self) -> np.ndarray | None:
        """Standard error of the mean (pyFAI's ``sem``; what ``sigma`` holds)."""
        return self._result.sigma

    @property
    def sum(self) -> np.ndarray:
        """pyFAI's ``sum``: the summed signal of each bin."""
        return self._result.sum_signal

    @property
    def poni(self) -> dict:
        """The geometry, as :meth:`AzimuthalIntegrator.get_config` gives it."""
        return _config(self._result.geometry)

    @property
    def has_mask_applied(self) -> bool:
        return bool(self._result.options.get("mask"))

    @property
    def has_dark_correction(self) -> bool:
        return bool(self._result.options.get("dark"))

    @property
    def has_flat_correction(self) -> bool:
        return bool(self._result.options.get("flat"))

    @property
    def has_solidangle_correction(self) -> bool:
        return bool(self._result.options.get("correct_solid_angle"))

    @property
    def polarization_factor(self) -> float | None:
        return self._result.options.get("polarization_factor")

    @property
    def normalization_factor(self) -> float:
        return self._result.options.get("normalization_factor", 1.0)

    @property
    def dummy(self) -> float | None:
        return self._result.options.get("dummy")


class Integrate1dResult(_ResultMixin, tuple):
    """pyFAI's 1D result: a tuple ``(radial, intensity)`` or ``(radial, intensity, sigma)``
    with the attributes of :class:`xreduce.results.Integrate1dResult` and pyFAI's extras."""

    def __new__(cls, result: Any, method_called: str, metadata: Any = None):
        items = (result.radial, result.intensity)
        if result.sigma is not None:
            items += (result.sigma,)
        self = tuple.__new__(cls, items)
        self._result = result
        self.method_called = method_called
        self.metadata = metadata
        return self

    def __repr__(self) -> str:
        return (f"Integrate1dResult(npt={len(self._result.radial)}, unit={self.unit}, "
                f"method={self.method}, method_called={self.method_called!r})")


class Integrate2dResult(_ResultMixin, tuple):
    """pyFAI's 2D result: ``(intensity, radial, azimuthal)`` or ``(intensity, radial,
    azimuthal, sigma)``; ``intensity`` has shape (npt_azim, npt_rad)."""

    def __new__(cls, result: Any, method_called: str, metadata: Any = None):
        items = (result.intensity, result.radial, result.azimuthal)
        if result.sigma is not None:
            items += (result.sigma,)
        self = tuple.__new__(cls, items)
        self._result = result
        self.method_called = method_called
        self.metadata = metadata
        return self

    @property
    def radial_unit(self) -> Any:
        return self._result.unit

    @property
    def azimuthal_unit(self) -> Any:
        return get_unit(self._result.azimuthal_unit)

    @property
    def unit(self) -> "_UnitPair":
        """(radial, azimuthal) units; prints ``(2th_deg, chi_deg)`` as pyFAI's does."""
        return _UnitPair((self.radial_unit, self.azimuthal_unit))

    def __repr__(self) -> str:
        return (f"Integrate2dResult(shape={self._result.intensity.shape}, unit={self.unit}, "
                f"method={self.method}, method_called={self.method_called!r})")


class _UnitPair(tuple):
    """A (radial, azimuthal) pair of units printed the way pyFAI prints its 2D unit."""

    def __str__(self) -> str:
        return "(" + ", ".join(str(u) for u in self) + ")"

    __repr__ = __str__


class SeparateResult(tuple):
    """pyFAI's ``separate`` result: a tuple ``(bragg, amorphous)`` with ``.bragg``,
    ``.amorphous`` and the 1D background profile ``.radial``, ``.intensity``."""

    def __new__(cls, bragg: np.ndarray, amorphous: np.ndarray, profile: Integrate1dResult):
        self = tuple.__new__(cls, (bragg, amorphous))
        self.bragg, self.amorphous = bragg, amorphous
        self.radial, self.intensity = profile.radial, profile.intensity
        self.unit = profile.unit
        self.method_called = "separate"
        return self


# =====================================================================================
# Integrator
# =====================================================================================

def _config(geometry: Geometry) -> dict:
    """pyFAI's ``get_config`` dict of a geometry (PONI version 2.1 layout)."""
    from xreduce.poni import detector_config

    name, config = detector_config(geometry.detector)
    return {"poni_version": 2.1, "detector": name, "detector_config": config,
            "dist": geometry.dist, "poni1": geometry.poni1, "poni2": geometry.poni2,
            "rot1": geometry.rot1, "rot2": geometry.rot2, "rot3": geometry.rot3,
            "wavelength": geometry.wavelength}


class AzimuthalIntegrator:
    """pyFAI's ``AzimuthalIntegrator`` on xreduce's engines.

    Parameters (pyFAI's): ``dist``, ``poni1``, ``poni2`` (m), ``rot1``-``rot3`` (rad),
    ``pixel1``/``pixel2`` (m, for a plain detector whose shape the first frame gives),
    ``splinefile`` (Fit2D spline), ``detector`` (name, xreduce or pyFAI Detector),
    ``wavelength`` (m), ``orientation`` (0 = the detector's own, else 1-4).

    Geometry setters (``ai.dist = 0.2``, ``ai.wavelength = ...``, ``setFit2D``,
    ``set_config``) build a new geometry and a new core integrator (``ai.core``): cached
    matrices belong to one geometry.

    Example
    -------
    >>> import numpy as np
    >>> ai = AzimuthalIntegrator(dist=0.1, detector="Pilatus 100k", wavelength=1e-10)
    >>> res = ai.integrate1d_ng(np.ones((195, 487)), 50, unit="2th_deg",
    ...                         error_model="poisson")
    >>> tth, I, sigma = res
    >>> res.method_called
    'integrate1d_ng'
    """

    def __init__(self, dist: float = 1, poni1: float = 0, poni2: float = 0, rot1: float = 0,
                 rot2: float = 0, rot3: float = 0, pixel1: float | None = None,
                 pixel2: float | None = None, splinefile: str | None = None,
                 detector: Any = None, wavelength: float | None = None,
                 orientation: int = 0, splineFile: str | None = None):
        self._params = {"dist": dist, "poni1": poni1, "poni2": poni2, "rot1": rot1,
                        "rot2": rot2, "rot3": rot3, "wavelength": wavelength}
        self._detector = self._make_detector(detector, pixel1, pixel2,
                                             splinefile or splineFile, orientation)
        self._core: _core.AzimuthalIntegrator | None = None
        self._core_user_mask: _core.AzimuthalIntegrator | None = None
        self._geometry: Geometry | None = None
        self._ranges: dict = {}        # pyFAI's default ranges, per (kind, split, unit, mask)

    @staticmethod
    def _make_detector(detector, pixel1, pixel2, splinefile, orientation):
        if splinefile:
            from xreduce.spline import spline_detector

            found = spline_detector(splinefile)
        elif detector is not None:
            found = detector_factory(detector)
        elif pixel1 is not None or pixel2 is not None:
            if pixel1 is None or pixel2 is None:
                raise ValueError(f"pixel1, pixel2: give both pixel sizes, got {pixel1!r}, "
                                 f"{pixel2!r}")
            return (float(pixel1), float(pixel2))        # shape from the first frame
        else:
            return None
        if orientation:
            found = Detector(found.pixel1, found.pixel2, found.shape, found.mask, found.name,
                             found.binning, found.corners, int(orientation),
                             found.max_value_invalid)
        return found

    # ----------------------------------------------------------- geometry access
    @property
    def geometry(self) -> Geometry:
        """The xreduce :class:`~xreduce.geometry.Geometry` (built from the parameters)."""
        if self._geometry is None:
            if not isinstance(self._detector, Detector):
                raise ValueError("detector: this integrator has no detector with a shape yet; "
                                 "give detector= or integrate a frame first")
            self._geometry = Geometry(**self._params, detector=self._detector)
        return self._geometry

    @property
    def core(self) -> _core.AzimuthalIntegrator:
        """The xreduce integrator doing the work (one per geometry)."""
        if self._core is None:
            self._core = _core.AzimuthalIntegrator(self.geometry)
        return self._core

    def _core_for(self, mask: Any) -> _core.AzimuthalIntegrator:
        """The integrator for a call: as in pyFAI, a user ``mask`` replaces the detector's
        mask instead of adding to it (doc/pyfai.md, "Masks")."""
        if mask is None:
            return self.core
        if self._core_user_mask is None:
            g = self.geometry
            self._core_user_mask = _core.AzimuthalIntegrator(
                g.with_(detector=g.detector.with_mask(None)))
        return self._core_user_mask

    def _set(self, **changes: Any) -> None:
        self._params.update(changes)
        self._geometry = self._core = self._core_user_mask = None
        self._ranges.clear()
        self.geometry  # validate now: a bad value raises at the assignment

    def _for_shape(self, shape: tuple) -> None:
        """Build a plain detector from pixel sizes once a frame gives its shape."""
        if isinstance(self._detector, tuple):
            self._detector = Detector(self._detector[0], self._detector[1], tuple(shape))
        elif self._detector is None:
            raise ValueError("detector: this integrator has no detector; give detector= or "
                             "pixel1= and pixel2=")

    @property
    def detector(self) -> Detector:
        return self.geometry.detector

    @detector.setter
    def detector(self, value: Any) -> None:
        self._detector = detector_factory(value)
        self._geometry = self._core = self._core_user_mask = None
        self._ranges.clear()

    def _param_property(name: str):  # noqa: N805 - builds properties below
        def get(self):
            return self._params[name]

        def set_(self, value):
            self._set(**{name: value})
        return property(get, set_, doc=f"PONI parameter {name} (SI units).")

    dist = _param_property("dist")
    poni1 = _param_property("poni1")
    poni2 = _param_property("poni2")
    rot1 = _param_property("rot1")
    rot2 = _param_property("rot2")
    rot3 = _param_property("rot3")
    wavelength = _param_property("wavelength")
    del _param_property

    @property
    def energy(self) -> float | None:
        """Photon energy in keV (from the wavelength)."""
        wl = self._params["wavelength"]
        return None if wl is None else 12.398419843320026 / (wl * 1e10)

    @energy.setter
    def energy(self, kev: float) -> None:
        self._set(wavelength=12.398419843320026 / float(kev) * 1e-10)

    @property
    def pixel1(self) -> float:
        return self.detector.pixel1

    @property
    def pixel2(self) -> float:
        return self.detector.pixel2

    def get_config(self) -> dict:
        """pyFAI's configuration dict (poni_version 2.1, detector, detector_config, the seven
        parameters)."""
        return _config(self.geometry)

    def set_config(self, config: dict) -> "AzimuthalIntegrator":
        """Set geometry and detector from a pyFAI configuration dict (as ``get_config``)."""
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict, got {type(config).__name__}")
        from xreduce.poni import detector_from_config

        name = config.get("detector", "Detector")
        det_config = config.get("detector_config") or {}
        self._detector = detector_from_config(name, det_config, None, "config")
        params = {k: config[k] for k in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                         "wavelength") if k in config}
        self._set(**params)
        return self

    def getPyFAI(self) -> dict:  # noqa: N802 - pyFAI's name
        """The PONI parameters and detector as pyFAI's ``getPyFAI`` dict."""
        out = dict(self._params)
        out.update(detector=self.detector, pixel1=self.pixel1, pixel2=self.pixel2,
                   splineFile=None)
        return out

    def getFit2D(self) -> dict:  # noqa: N802 - pyFAI's name
        """Fit2D's parameters (directDist mm, centerX/centerY px, tilt and
        tiltPlanRotation degrees, pixelX/pixelY um, wavelength A, detector, splinefile)."""
        out = self.geometry.to_fit2d()
        out.update(detector=self.detector, splinefile=None)
        return out

    def setFit2D(self, directDist: float, centerX: float, centerY: float,  # noqa: N802,N803
                 tilt: float = 0.0, tiltPlanRotation: float = 0.0,  # noqa: N803
                 pixelX: float | None = None, pixelY: float | None = None,  # noqa: N803
                 splinefile: str | None = None, detector: Any = None,
                 wavelength: float | None = None) -> "AzimuthalIntegrator":
        """Set the geometry from Fit2D's parameters (as ``getFit2D`` gives them)."""
        if splinefile:
            raise ValueError("splinefile: give the spline file to the constructor "
                             "(AzimuthalIntegrator(splinefile=...)), not to setFit2D")
        det = self.detector if detector is None else detector_factory(detector)
        g = Geometry.from_fit2d(directDist, centerX, centerY, tilt, tiltPlanRotation,
                                pixelX, pixelY, wavelength, det)
        self._detector = g.detector
        self._set(**g.parameters())
        return self

    def save(self, filename: str) -> None:
        """Write the geometry as a PONI file."""
        self.geometry.save(filename)

    write = save

    def __repr__(self) -> str:
        return f"AzimuthalIntegrator(compat pyFAI) {self.geometry}"

    # -------------------------------------------------------------- arrays
    def _check_shape(self, shape: Any) -> None:
        if shape is not None and tuple(shape) != tuple(self.detector.shape):
            raise ValueError(f"shape: expected the detector shape {self.detector.shape} or "
                             f"None, got {tuple(shape)}")

    def center_array(self, shape: Any = None, unit: Any = "2th_deg", scale: bool = True) \
            -> np.ndarray:
        """Value of ``unit`` at each pixel centre (``scale=False``: pyFAI's internal unit)."""
        self._check_shape(shape)
        unit = get_unit(unit)
        arr = np.asarray(self.geometry.center_array(unit))
        return arr if scale else arr / unit.scale      # pyFAI's internal = xreduce's SI form

    def corner_array(self, shape: Any = None, unit: Any = "2th_deg", use_cython: bool = True,
                     scale: bool = True) -> np.ndarray:
        """(rows, cols, k, 2): ``unit`` and chi (radians) at the k corners of each pixel."""
        self._check_shape(shape)
        unit = get_unit(unit)
        arr = np.array(self.geometry.corner_array(unit))
        if not scale:
            arr[..., 0] /= unit.scale
        return arr

    def array_from_unit(self, shape: Any = None, typ: str = "center", unit: Any = "2th_deg",
                        scale: bool = True) -> np.ndarray:
        """pyFAI's ``array_from_unit``: ``typ`` "center", "corner" or "delta"."""
        if typ == "center":
            return self.center_array(shape, unit, scale=scale)
        if typ == "corner":
            return self.corner_array(shape, unit, scale=scale)
        if typ == "delta":
            self._check_shape(shape)
            unit = get_unit(unit)
            delta = np.asarray(self.geometry.delta_array(unit))
            return delta if scale else delta / unit.scale
        raise ValueError(f"typ: expected 'center', 'corner' or 'delta', got {typ!r}")

    def twoThetaArray(self, shape: Any = None) -> np.ndarray:  # noqa: N802
        """2theta at pixel centres, radians."""
        self._check_shape(shape)
        return self.geometry.twotheta_array()

    def chiArray(self, shape: Any = None) -> np.ndarray:  # noqa: N802
        """chi at pixel centres, radians in (-pi, pi]."""
        self._check_shape(shape)
        return self.geometry.chi_array()

    def qArray(self, shape: Any = None) -> np.ndarray:  # noqa: N802
        """q at pixel centres, nm^-1."""
        self._check_shape(shape)
        return self.geometry.q_array("q_nm^-1")

    def rArray(self, shape: Any = None) -> np.ndarray:  # noqa: N802
        """Distance from the beam at pixel centres, metres."""
        self._check_shape(shape)
        return self.geometry.center_array("r_m")

    def solidAngleArray(self, shape: Any = None, order: int = 3,  # noqa: N802
                        absolute: bool = False) -> np.ndarray:
        """Relative solid angle cos(alpha)^3 (absolute: steradians)."""
        self._check_shape(shape)
        if order != 3:
            raise ValueError(f"order: only the exact solid angle (order=3) is computed, "
                             f"got {order!r}")
        return self.geometry.solid_angle_array(absolute=absolute)

    def polarization(self, shape: Any = None, factor: float | None = None,
                     axis_offset: float = 0.0, with_checksum: bool = False,
                     path: str = "numexpr") -> np.ndarray:
        """Polarization factor of each pixel (``factor`` None: all ones, as pyFAI)."""
        self._check_shape(shape)
        if factor is None:
            arr = np.ones(self.detector.shape)
        else:
            arr = np.asarray(self.geometry.polarization_array(factor, axis_offset))
        if with_checksum:
            return arr, hash(arr.tobytes())
        return arr

    # ---------------------------------------------------------- integration
    def _common(self, data, method, mask, correctSolidAngle, polarization_factor,  # noqa: N803
                dark, flat, dummy, delta_dummy, normalization_factor, variance=None,
                error_model=None, absorption=None):
        arr = np.asarray(data)
        if arr.ndim != 2:
            raise ValueError(f"data: expected one frame (2D array), got shape {arr.shape}")
        self._for_shape(arr.shape)
        return {"method": parse_pyfai_method(method), "mask": mask, "dark": dark,
                "flat": flat, "dummy": dummy, "delta_dummy": delta_dummy,
                "polarization_factor": polarization_factor,
                "correct_solid_angle": bool(correctSolidAngle),
                "absorption": absorption, "normalization_factor": normalization_factor,
                "variance": variance, "error_model": _error_model(error_model)}

    def _invalid(self, mask: Any) -> np.ndarray:
        """Pixels left out of a call: the user's mask if given, else the detector's (pyFAI)."""
        return np.asarray(self.detector.mask if mask is None else mask) != 0

    def _chi_boxes(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Each pixel's chi extent (radians) as pyFAI draws it for ``split``: the centre for
        "no", centre +- largest deviation for its bbox, else the corners' min and max (not
        unwrapped: a pixel across the discontinuity spans the whole circle)."""
        g = self.geometry
        if split == "no":
            chi = np.asarray(g.chi_array())
            return chi, chi
        if split == PYFAI_BBOX:
            chi, delta = np.asarray(g.chi_array()), np.asarray(g.delta_array("chi_rad"))
            return chi - delta, chi + delta
        chi = np.asarray(g.corner_array("2th_rad"))[..., 1]
        return chi.min(axis=-1), chi.max(axis=-1)

    def _radial_extent(self, unit: Any, split: str, invalid: np.ndarray) -> tuple[float, float]:
        """The default radial range of pyFAI for ``split`` over the valid pixels, with the top
        nudged up by one float32 epsilon as both tools do (cached per mask content)."""
        key = ("radial", split, get_unit(unit).name, digest(invalid))
        if key not in self._ranges:
            self._ranges[key] = self._compute_radial_extent(unit, split, invalid)
        return self._ranges[key]

    def _compute_radial_extent(self, unit: Any, split: str, invalid: np.ndarray) \
            -> tuple[float, float]:
        g = self.geometry
        if split == "no":
            lo = hi = np.asarray(g.center_array(unit))
        elif split == PYFAI_BBOX:
            box = pyfai_bbox_corners(g, unit)[..., 0]
            lo, hi = box[..., 0], box[..., 1]
        else:
            radial = np.asarray(g.corner_array(unit))[..., 0]
            lo, hi = radial.min(axis=-1), radial.max(axis=-1)
        ok = ~invalid & np.isfinite(lo) & np.isfinite(hi)
        if not ok.any():
            raise ValueError("mask: every pixel is masked, nothing to integrate")
        top = float(hi[ok].max())
        return float(lo[ok].min()), top * (1 + float(np.finfo(np.float32).eps)) if top > 0 \
            else top + float(np.finfo(np.float32).eps)

    def _azimuth_range(self, split: str, mask: Any) -> tuple[float, float]:
        """pyFAI's default 2D azimuthal range: the chi extent of the valid pixels, degrees
        (cached per mask content)."""
        invalid = self._invalid(mask)
        key = ("azimuth", split, None, digest(invalid))
        if key not in self._ranges:
            self._ranges[key] = self._compute_azimuth_range(split, invalid)
        return self._ranges[key]

    def _compute_azimuth_range(self, split: str, invalid: np.ndarray) -> tuple[float, float]:
        lo, hi = self._chi_boxes(split)
        lo, hi = lo[~invalid], hi[~invalid]
        if lo.size == 0:
            raise ValueError("mask: every pixel is masked, nothing to integrate")
        a0 = max(math.degrees(float(lo.min())), -180.0)
        top = math.degrees(float(hi.max()))
        eps = 1 + float(np.finfo(np.float32).eps)
        a1 = min(top * eps if top > 0 else top / eps, 180.0)
        return a0, a1

    def integrate1d(self, data: Any, npt: int, *, filename: str | None = None,
                    correctSolidAngle: bool = True, variance: Any = None,  # noqa: N803
                    error_model: Any = None, radial_range: Any = None,
                    azimuth_range: Any = None, mask: Any = None, dummy: float | None = None,
                    delta_dummy: float | None = None, polarization_factor: float | None = None,
                    dark: Any = None, flat: Any = None, absorption: Any = None,
                    method: Any = DEFAULT_METHOD, unit: Any = _DEFAULT_UNIT,
                    safe: bool = True, normalization_factor: float = 1.0,
                    metadata: Any = None) -> Integrate1dResult:
        """pyFAI's ``integrate1d_ng``: radial profile of one frame (``filename``: also saved).

        ``safe`` is accepted for pyFAI scripts; xreduce always validates (no unsafe mode).
        """
        args = self._common(data, method, mask, correctSolidAngle, polarization_factor, dark,
                            flat, dummy, delta_dummy, normalization_factor, variance,
                            error_model, absorption)
        core = self._core_for(mask)
        if radial_range is None and args["method"][1] == "histogram":
            # pyFAI's histograms span every pixel, masked ones too (doc/pyfai.md)
            radial_range = self._radial_extent(unit, args["method"][0],
                                               np.zeros(self.detector.shape, bool))
        if azimuth_range is not None and args["method"][0] != "no":
            # pyFAI's 1D sector: whole pixels whose chi box (centre +- largest corner
            # deviation) touches it, whatever the split (doc/pyfai.md, "Sectors")
            invalid = self._invalid(mask)
            if radial_range is None:
                radial_range = self._radial_extent(unit, args["method"][0], invalid)
            lo, hi = self._chi_boxes(PYFAI_BBOX)
            a0, a1 = (math.radians(float(a)) for a in azimuth_range)
            args["mask"] = invalid | (hi < a0) | (lo > a1)
            core, azimuth_range = self._core_for(args["mask"]), None
        res = core.integrate1d(data, npt, unit=unit, radial_range=radial_range,
                               azimuth_range=azimuth_range, empty=_empty(dummy), **args)
        if filename:
            res.save(os.fspath(filename))
        return Integrate1dResult(res, "integrate1d_ng", metadata)

    integrate1d_ng = integrate1d

    def integrate2d(self, data: Any, npt_rad: int, npt_azim: int = 360, *,
                    filename: str | None = None, correctSolidAngle: bool = True,  # noqa: N803
                    variance: Any = None, error_model: Any = None, radial_range: Any = None,
                    azimuth_range: Any = None, mask: Any = None, dummy: float | None = None,
                    delta_dummy: float | None = None, polarization_factor: float | None = None,
                    dark: Any = None, flat: Any = None, method: Any = DEFAULT_METHOD,
                    unit: Any = _DEFAULT_UNIT, safe: bool = True,
                    normalization_factor: float = 1.0, metadata: Any = None,
                    absorption: Any = None) -> Integrate2dResult:
        """pyFAI's ``integrate2d_ng``: a cake (npt_azim, npt_rad); the azimuthal range
        defaults to the chi extent of the valid pixels, as in pyFAI."""
        args = self._common(data, method, mask, correctSolidAngle, polarization_factor, dark,
                            flat, dummy, delta_dummy, normalization_factor, variance,
                            error_model, absorption)
        if args["method"][1] == "histogram":
            # pyFAI's histograms span every pixel, masked ones too (doc/pyfai.md)
            everything = np.zeros(self.detector.shape, bool)
            if radial_range is None:
                radial_range = self._radial_extent(unit, args["method"][0], everything)
            if azimuth_range is None:
                azimuth_range = self._azimuth_range(args["method"][0], everything)
        if azimuth_range is None:
            azimuth_range = self._azimuth_range(args["method"][0], mask)
        elif radial_range is None:      # pyFAI's radial bins span every valid pixel
            radial_range = self._radial_extent(unit, args["method"][0], self._invalid(mask))
        res = self._core_for(mask).integrate2d(data, npt_rad, npt_azim, unit=unit,
                                    radial_range=radial_range, azimuth_range=azimuth_range,
                                    empty=_empty(dummy), **args)
        if filename:
            res.save(os.fspath(filename))
        return Integrate2dResult(res, "integrate2d_ng", metadata)

    integrate2d_ng = integrate2d

    def integrate_radial(self, data: Any, npt: int, npt_rad: int = 100,
                         correctSolidAngle: bool = True,  # noqa: N803
                         radial_range: Any = None, azimuth_range: Any = None, mask: Any = None,
                         dummy: float | None = None, delta_dummy: float | None = None,
                         polarization_factor: float | None = None, dark: Any = None,
                         flat: Any = None, method: Any = ("bbox", "csr", "cython"),
                         unit: Any = "chi_deg", radial_unit: Any = _DEFAULT_UNIT,
                         normalization_factor: float = 1.0) -> Integrate1dResult:
        """Chi profile over ``radial_range`` (in ``radial_unit``); ``unit`` must be chi_deg.

        pyFAI averages a cake over its radial bins; xreduce sums the pixels of the range
        directly (``npt_rad`` has no effect on that sum and must stay positive).
        """
        if get_unit(unit).name != "chi_deg":
            raise ValueError(f"unit: only 'chi_deg' is supported for integrate_radial, "
                             f"got {unit!r}")
        if int(npt_rad) <= 0:
            raise ValueError(f"npt_rad: expected a positive integer, got {npt_rad!r}")
        args = self._common(data, method, mask, correctSolidAngle, polarization_factor, dark,
                            flat, dummy, delta_dummy, normalization_factor)
        args.pop("variance"), args.pop("error_model")
        if azimuth_range is None:        # chi bins over the data, as pyFAI's cake
            azimuth_range = self._azimuth_range(args["method"][0], mask)
        core = self._core_for(mask)
        res = core.integrate_radial(data, npt, radial_range=radial_range,
                                    radial_unit=radial_unit, azimuth_range=azimuth_range,
                                    **args)
        return Integrate1dResult(res, "integrate_radial")

    def sigma_clip_ng(self, data: Any, npt: int = 1024, *,
                      correctSolidAngle: bool = True,  # noqa: N803
                      polarization_factor: float | None = None, variance: Any = None,
                      error_model: Any = None, radial_range: Any = None,
                      azimuth_range: Any = None, dark: Any = None, flat: Any = None,
                      absorption: Any = None, method: Any = ("no", "csr", "cython"),
                      unit: Any = _DEFAULT_UNIT, thres: float = 5.0, max_iter: int = 5,
                      dummy: float | None = None, delta_dummy: float | None = None,
                      mask: Any = None, normalization_factor: float = 1.0,
                      metadata: Any = None, safe: bool = True) -> Integrate1dResult:
        """Mean of each ring after iterative rejection of outliers beyond ``thres`` sigma.

        xreduce's clipping (:meth:`xreduce.integrator.AzimuthalIntegrator.sigma_clip`) always
        measures the spread in the ring (pyFAI's "azimuthal" model); ``variance`` and a
        Poisson ``error_model`` are refused rather than ignored. Pixels go to rings by their
        centre; the split of ``method`` draws the radial bins (as pyFAI's) and, with an
        OpenCL implementation, selects the OpenCL kernel.
        """
        if variance is not None or _error_model(error_model) not in (None, "azimuthal"):
            raise ValueError(f"error_model: sigma clipping measures the spread in each ring "
                             f"(azimuthal); got error_model={error_model!r} "
                             f"variance={'given' if variance is not None else None}")
        split, algorithm, implementation = parse_pyfai_method(method)
        args = self._common(data, method, mask, correctSolidAngle, polarization_factor, dark,
                            flat, dummy, delta_dummy, normalization_factor)
        for key in ("method", "variance", "error_model"):
            args.pop(key)
        cl = None if implementation != "opencl" else (split, algorithm, implementation)
        if radial_range is None:         # pyFAI's bins for the method's split
            radial_range = self._radial_extent(unit, split, self._invalid(mask))
        core = self._core_for(mask)
        res = core.sigma_clip(data, npt, unit=unit, thres=thres, max_iter=max_iter,
                              radial_range=radial_range, azimuth_range=azimuth_range,
                              method=cl, **args)
        return Integrate1dResult(res, "sigma_clip_ng", metadata)

    sigma_clip = sigma_clip_ng

    def medfilt1d_ng(self, data: Any, npt: int = 1024, *,
                     correctSolidAngle: bool = True,  # noqa: N803
                     polarization_factor: float | None = None, variance: Any = None,
                     error_model: Any = None, radial_range: Any = None,
                     azimuth_range: Any = None, dark: Any = None, flat: Any = None,
                     absorption: Any = None, method: Any = ("full", "csr", "cython"),
                     unit: Any = _DEFAULT_UNIT, percentile: Any = 50,
                     dummy: float | None = None, delta_dummy: float | None = None,
                     mask: Any = None, normalization_factor: float = 1.0,
                     metadata: Any = None, safe: bool = True) -> Integrate1dResult:
        """Median (or trimmed mean between two percentiles) of each ring.

        Pixels are assigned to rings by their centre whatever ``method`` says (pyFAI spreads
        split pixels' weights); errors are not computed (``variance``/``error_model`` raise).
        """
        if variance is not None or _error_model(error_model) is not None:
            raise ValueError("error_model: medfilt1d_ng computes no uncertainties here; "
                             f"got error_model={error_model!r}")
        args = self._common(data, method, mask, correctSolidAngle, polarization_factor, dark,
                            flat, dummy, delta_dummy, normalization_factor)
        split = args["method"][0]
        for key in ("method", "variance", "error_model"):
            args.pop(key)
        if radial_range is None:         # pyFAI's bins for the method's split
            radial_range = self._radial_extent(unit, split, self._invalid(mask))
        core = self._core_for(mask)
        res = core.medfilt1d(data, npt, unit=unit, percentile=percentile,
                             radial_range=radial_range, azimuth_range=azimuth_range, **args)
        return Integrate1dResult(res, "medfilt1d_ng", metadata)

    medfilt1d = medfilt1d_ng

    def separate(self, data: Any, npt: int = 1024, *, unit: Any = "2th_deg",
                 method: Any = ("full", "csr", "cython"),
                 polarization_factor: float | None = None, percentile: Any = 50,
                 mask: Any = None, restore_mask: bool = True) -> SeparateResult:
        """Split a frame into Bragg peaks and the amorphous (isotropic) background.

        The background of each ring is the median (``percentile``) of its pixels
        (:meth:`medfilt1d_ng`), interpolated back onto every pixel at its radial position;
        ``bragg = data - amorphous``. With ``restore_mask`` masked pixels keep their values
        in ``bragg`` and get 0 in ``amorphous``.
        """
        frame = np.asarray(data, dtype=np.float64)
        profile = self.medfilt1d_ng(frame, npt, unit=unit, method=method, mask=mask,
                                    polarization_factor=polarization_factor,
                                    percentile=percentile)
        radial = np.asarray(self.geometry.center_array(unit))
        ok = np.isfinite(profile.intensity)
        norm = np.asarray(self.geometry.solid_angle_array())
        if polarization_factor is not None:
            norm = norm * np.asarray(self.geometry.polarization_array(polarization_factor))
        amorphous = np.interp(radial, profile.radial[ok], profile.intensity[ok]) * norm
        bragg = frame - amorphous
        if restore_mask:
            invalid = self._invalid(mask)
            bragg[invalid] = frame[invalid]
            amorphous[invalid] = 0.0
        return SeparateResult(bragg, amorphous, profile)

    def reset(self) -> None:
        """Forget cached matrices (pyFAI's ``reset``)."""
        for core in (self._core, self._core_user_mask):
            if core is not None:
                core.reset_engines()


def load(filename: Any) -> AzimuthalIntegrator:
    """An integrator from a PONI file, or from a config dict as ``get_config`` gives it.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "g.poni")
    >>> AzimuthalIntegrator(dist=0.2, detector="Eiger 1M", wavelength=1e-10).save(path)
    >>> load(path).dist
    0.2
    """
    if isinstance(filename, dict):
        return AzimuthalIntegrator().set_config(filename)
    g = Geometry.load(os.fspath(filename))
    ai = AzimuthalIntegrator(detector=g.detector)
    ai._set(**g.parameters())
    return ai
