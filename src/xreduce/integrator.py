"""AzimuthalIntegrator: 1D and 2D azimuthal integration with uncertainties.

The integrator turns detector frames into profiles (``integrate1d``), cakes (``integrate2d``)
and chi profiles (``integrate_radial``), and offers per-ring outlier rejection
(``sigma_clip``) and median / trimmed-mean filtering (``medfilt1d``). Everything that does not
change from frame to frame (matrix, mask, solid angle, polarization, flat, absorption) is
computed once per integrator and kept in an engine cache; each frame then costs one fused
pass of a compiled kernel over the matrix (see :mod:`xreduce.engines`).

Conventions
-----------
- ``data`` is one frame ``(rows, cols)`` or a stack ``(n, rows, cols)`` of any integer or
  float dtype, read as it is (a non-contiguous or byte-swapped array is copied once).
- Masked pixels: the detector's mask, the ``mask`` argument (non-zero = masked), pixels whose
  normalisation (flat * solid angle * polarization * absorption) is not finite and positive,
  and, per frame, invalid values: NaN/inf, negative values of signed integer frames, the
  largest value of integer dtypes (Dectris' marks) and ``dummy`` (within ``delta_dummy``).
  Masked pixels count in neither the signal nor the normalisation.
- Bins that receive no valid pixel get ``count == 0`` and ``empty`` (NaN by default) as
  intensity, sigma and std. A range that holds no pixel gives only such bins.
- ``radial_range`` is in the unit of the radial axis, ``azimuth_range`` in degrees within
  [-180, 180]. The default radial range spans the valid pixels (their centres for split "no",
  their corners otherwise).

Example
-------
>>> from xreduce.geometry import Geometry                          # doctest: +SKIP
>>> ai = AzimuthalIntegrator(Geometry.load("lab6.poni"))            # doctest: +SKIP
>>> res = ai.integrate1d(frame, 1000, unit="2th_deg", error_model="poisson")  # doctest: +SKIP
>>> res.radial, res.intensity, res.sigma                            # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from xreduce.engines import (CsrEngine, EngineCache, EngineKey, FrameArgs, HistogramEngine,
                             Normalisation, Sums, digest)
from xreduce.ext import csr_integrate
from xreduce.results import Integrate1dResult, Integrate2dResult, _atomic_path

SPLITS = ("no", "bbox", "pseudo", "full")
DEFAULT_METHOD = ("bbox", "csr", "cython")


@dataclass(frozen=True)
class Implementation:
    """A registered way to integrate: which splits it supports and how to build its engine.

    ``build(integrator, key, mask)`` returns an engine with ``integrate(FrameArgs,
    Normalisation) -> Sums``, ``radial_edges``, ``azimuthal_edges`` and ``nbins``.
    """

    splits: tuple[str, ...]
    build: Callable[["AzimuthalIntegrator", EngineKey, np.ndarray | None], Any]


IMPLEMENTATIONS: dict[tuple[str, str], Implementation] = {}
"""(algorithm, implementation) -> Implementation; the OpenCL back end registers its own."""


def register_implementation(algorithm: str, implementation: str, splits: Sequence[str],
                            build: Callable) -> None:
    """Make ``(split, algorithm, implementation)`` methods available to every integrator."""
    IMPLEMENTATIONS[(algorithm, implementation)] = Implementation(tuple(splits), build)


def valid_methods() -> list[tuple[str, str, str]]:
    """Every (split, algorithm, implementation) the registered implementations support."""
    return [(s, a, i) for (a, i), impl in IMPLEMENTATIONS.items() for s in impl.splits]


def parse_method(method: str | Sequence[str]) -> tuple[str, str, str]:
    """Normalise a method to ``(split, algorithm, implementation)``.

    Accepts a tuple ``("bbox", "csr", "cython")`` or ``("bbox", "csr")`` or a string
    ``"bbox_csr_cython"``, ``"bbox_csr"``, ``"bbox"`` (algorithm csr, implementation cython
    by default). Unknown methods raise ValueError listing the valid ones.

    >>> parse_method("full_csr")
    ('full', 'csr', 'cython')
    """
    parts = method.lower().split("_") if isinstance(method, str) else \
        [str(p).lower() for p in method]
    if parts and parts[0] == "nosplit":
        parts[0] = "no"
    parts = list(parts) + ["csr", "cython"][len(parts) - 1:] if 1 <= len(parts) <= 3 else parts
    found = tuple(parts[:3]) if len(parts) == 3 else None
    if found is None or found not in valid_methods():
        names = ", ".join("_".join(m) for m in valid_methods())
        raise ValueError(f"method: expected one of {names} (or a tuple of their parts), "
                         f"got {method!r}")
    return found  # type: ignore[return-value]


def _as_range(name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite low < high, got {value!r}")
    return lo, hi


def _as_npt(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer number of bins, got {value!r}")
    return int(value)


def _get_unit(unit: Any, kind: str, name: str = "unit") -> Any:
    from xreduce.units import get_unit

    try:
        found = get_unit(unit)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{name}: unknown unit {unit!r} ({err})") from None
    if found.kind != kind:
        raise ValueError(f"{name}: expected a {kind} unit, got {found.name!r} ({found.kind})")
    return found


class AzimuthalIntegrator:
    """Azimuthal integration for one geometry (immutable, thread-safe, picklable).

    Parameters
    ----------
    geometry : xreduce.geometry.Geometry
        Detector position and detector; a different geometry needs a new integrator.
    pickle_engines : bool
        Whether pickling carries the built engines (matrices) along; by default only the
        geometry travels and engines are rebuilt on first use.
    max_engines : int
        How many engines the cache keeps (least recently used dropped first).

    Examples
    --------
    >>> ai = AzimuthalIntegrator(geometry)                             # doctest: +SKIP
    >>> res = ai.integrate1d(frame, 1000, unit="2th_deg", error_model="poisson")  # doctest: +SKIP
    >>> cake = ai.integrate2d(frame, 500, 360, unit="q_nm^-1")         # doctest: +SKIP
    """

    def __init__(self, geometry: Any, *, pickle_engines: bool = False, max_engines: int = 8):
        self._geometry = geometry
        self.pickle_engines = bool(pickle_engines)
        self._engines = EngineCache(max_engines)
        self._norms: OrderedDict[tuple, Normalisation] = OrderedDict()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- basics
    @property
    def geometry(self) -> Any:
        return self._geometry

    @property
    def detector(self) -> Any:
        return self._geometry.detector

    def __getattr__(self, name: str) -> Any:
        """Geometry parameters and per-pixel arrays, read through (``ai.dist``,
        ``ai.twotheta_array()``), as pyFAI users expect of an integrator."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._geometry, name)

    @classmethod
    def load(cls, path: str, shape: tuple | None = None) -> "AzimuthalIntegrator":
        """An integrator for the geometry of a PONI file (``shape`` for files without one)."""
        from xreduce.geometry import Geometry

        return cls(Geometry.load(path, shape=shape))

    def __repr__(self) -> str:
        return f"AzimuthalIntegrator({self._geometry!r}, engines={len(self._engines)})"

    def __getstate__(self) -> dict:
        state = {"geometry": self._geometry, "pickle_engines": self.pickle_engines,
                 "max_engines": self._engines.max_engines, "engines": []}
        if self.pickle_engines:
            state["engines"] = self._engines.items()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["geometry"], pickle_engines=state["pickle_engines"],
                      max_engines=state["max_engines"])
        for key, engine in state["engines"]:
            self._engines.put(key, engine)

    # ------------------------------------------------------------ validation
    def _frames(self, data: Any, implementation: str | None = None) -> tuple[np.ndarray, bool]:
        """``data`` as a C-contiguous native (n, npix) view, and whether it was a stack."""
        if _opencl_engine.is_device_array(data):  # stays on the device (OpenCL engines only)
            return _opencl_engine.device_frames(data, tuple(self.detector.shape), implementation)
        arr = np.asarray(data)
        shape = tuple(self.detector.shape)
        if arr.ndim not in (2, 3) or arr.shape[-2:] != shape:
            raise ValueError(f"data: expected a frame of shape {shape} or a stack (n, *{shape}) "
                             f"matching the detector, got shape {arr.shape}")
        if arr.dtype.kind not in "uif" or arr.dtype.itemsize > 8:
            raise TypeError(f"data: expected an integer or float array, got dtype {arr.dtype}")
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr = np.ascontiguousarray(arr)
        return arr.reshape(-1 if arr.ndim == 3 else 1, shape[0] * shape[1]), arr.ndim == 3

    def _pixel_array(self, name: str, value: Any, dtype: Any) -> np.ndarray | None:
        """A per-pixel argument checked against the detector shape, flattened, as ``dtype``."""
        if value is None:
            return None
        arr = np.asarray(value)
        shape = tuple(self.detector.shape)
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} (the detector's), got {arr.shape}")
        return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)

    def _frame_args(self, frames: np.ndarray, dark: Any, variance: Any,
                    error_model: str | None, dummy: Any, delta_dummy: Any) -> FrameArgs:
        dark_arr = self._pixel_array("dark", dark, np.float32)
        var_arr = None
        if variance is not None:
            var = np.asarray(variance)
            shape = tuple(self.detector.shape)
            if var.shape != shape and var.shape != (frames.shape[0],) + shape:
                raise ValueError(f"variance: expected shape {shape} or that of the data "
                                 f"{(frames.shape[0],) + shape}, got {var.shape}")
            var_arr = np.ascontiguousarray(var, dtype=np.float32).reshape(-1, frames.shape[1])
        if dummy is not None and not math.isfinite(float(dummy)):
            raise ValueError(f"dummy: expected a finite number, got {dummy!r}")
        delta = 0.0 if delta_dummy is None else float(delta_dummy)
        if not delta >= 0.0:
            raise ValueError(f"delta_dummy: expected a number >= 0, got {delta_dummy!r}")
        return FrameArgs(frames, dark_arr, var_arr, error_model,
                         None if dummy is None else float(dummy), delta)

    @staticmethod
    def _error_model(error_model: str | None, variance: Any) -> str | None:
        model = None if error_model is None else str(error_model).lower()
        if variance is not None:
            if model not in (None, "variance"):
                raise ValueError(f"error_model: a variance array was given, so error_model must "
                                 f"be None or 'variance', got {error_model!r}")
            return "variance"
        if model not in (None, "poisson", "azimuthal"):
            raise ValueError(f"error_model: expected None, 'poisson' or 'azimuthal', "
                             f"got {error_model!r}")
        return model

    # ------------------------------------------------------------ static parts
    def _mask(self, mask: Any) -> tuple[np.ndarray | None, str | None]:
        """The user's mask (validated, uint8 0/1, flattened) and its digest."""
        arr = self._pixel_array("mask", mask, None)
        if arr is None:
            return None, None
        arr = (arr != 0).view(np.uint8)
        return arr, digest(arr)

    def combined_mask(self, mask: np.ndarray | None) -> np.ndarray:
        """Detector mask OR the user's (flattened uint8 0/1) mask, as a (rows, cols) bool array."""
        shape = tuple(self.detector.shape)
        out = np.zeros(shape, dtype=bool)
        if getattr(self.detector, "mask", None) is not None:
            out |= np.asarray(self.detector.mask) != 0
        if mask is not None:
            out |= mask.reshape(shape) != 0
        return out

    def normalisation(self, correct_solid_angle: bool = True,
                      polarization_factor: float | None = None, flat: Any = None,
                      absorption: Any = None, normalization_factor: float = 1.0) -> Normalisation:
        """The per-pixel normalisation for a set of corrections (computed once, cached)."""
        if flat is not None and not isinstance(flat, np.ndarray):
            flat = np.asarray(flat)
        if absorption is not None and not isinstance(absorption, np.ndarray):
            absorption = np.asarray(absorption)
        factor = float(normalization_factor)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"normalization_factor: expected a finite number > 0, "
                             f"got {normalization_factor!r}")
        if polarization_factor is not None:
            polarization_factor = float(polarization_factor)
            if not -1.0 <= polarization_factor <= 1.0:
                raise ValueError(f"polarization_factor: expected a number in [-1, 1] or None, "
                                 f"got {polarization_factor!r}")
        key = (bool(correct_solid_angle), polarization_factor, digest(flat), digest(absorption),
               factor)
        found = self._norms.get(key)
        if found is not None:
            return found
        flat_arr = self._pixel_array("flat", flat, np.float64)
        abs_arr = self._pixel_array("absorption", absorption, np.float64)
        with self._lock:
            found = self._norms.get(key)
            if found is None:
                g = self._geometry
                values = np.full(int(np.prod(self.detector.shape)), factor)
                if correct_solid_angle:
                    values *= np.asarray(g.solid_angle_array(), dtype=np.float64).reshape(-1)
                if polarization_factor is not None:
                    values *= np.asarray(g.polarization_array(polarization_factor),
                                         dtype=np.float64).reshape(-1)
                if flat_arr is not None:
                    values *= flat_arr
                if abs_arr is not None:
                    values *= abs_arr
                invalid = ~(np.isfinite(values) & (values > 0))
                if invalid.any():
                    values[invalid] = 1.0  # never used: those pixels are dropped
                    inv = invalid
                else:
                    inv = None
                values.setflags(write=False)
                found = Normalisation(key, values, inv)
                self._norms[key] = found
                while len(self._norms) > 4:
                    self._norms.popitem(last=False)
        return found

    def default_radial_range(self, unit: Any, split: str, mask: np.ndarray) -> tuple[float, float]:
        """Radial range spanned by the unmasked pixels (their centres for split "no", their
        corners otherwise), the top nudged up by one float32 epsilon so that the largest value
        falls inside the last bin: the same rule as :func:`xreduce.sparse.build_csr`."""
        if split == "no":
            values = np.asarray(self._geometry.center_array(unit)).reshape(-1, 1)
        else:
            values = np.asarray(self._geometry.corner_array(unit))[..., 0].reshape(-1, 4)
        valid = np.isfinite(values).all(axis=1) & ~mask.reshape(-1)
        if not valid.any():
            raise ValueError("mask: every pixel is masked, nothing to integrate")
        lo, hi = float(values[valid].min()), float(values[valid].max())
        eps = float(np.finfo(np.float32).eps)
        hi = hi * (1 + eps) if hi > 0 else (hi / (1 + eps) if hi < 0 else eps)
        return lo, hi

    def engine(self, key: EngineKey, mask: np.ndarray | None = None) -> Any:
        """The engine for ``key`` (built on first use; ``mask`` is the user mask it digests)."""
        impl = IMPLEMENTATIONS[(key.algorithm, key.implementation)]
        return self._engines.get_or_create(key, lambda: impl.build(self, key, mask))

    @property
    def engines(self) -> list[tuple[EngineKey, Any]]:
        """The cached (key, engine) pairs."""
        return self._engines.items()

    def reset_engines(self) -> None:
        """Forget every built engine (frees their matrices); the next call builds again. The
        geometry's cached pixel arrays and the normalisations are kept."""
        self._engines.clear()

    # ------------------------------------------------------------- integrate
    def _run(self, data, method, unit, npt_rad, npt_azim, radial_range, azimuth_range, mask,
             dummy, delta_dummy, dark, flat, variance, error_model, polarization_factor,
             correct_solid_angle, absorption, normalization_factor):
        """Validate everything, find the engine, integrate; return (engine, sums, stacked, ...)."""
        split, algorithm, implementation = parse_method(method)
        frames, stacked = self._frames(data, implementation)
        model = self._error_model(error_model, variance)
        user_mask, mask_digest = self._mask(mask)
        args = self._frame_args(frames, dark, variance, model, dummy, delta_dummy)
        norm = self.normalisation(correct_solid_angle, polarization_factor, flat, absorption,
                                  normalization_factor)
        key = EngineKey(algorithm, implementation, split, unit.name, npt_rad, npt_azim,
                        _as_range("radial_range", radial_range),
                        _as_range("azimuth_range", azimuth_range), mask_digest)
        if key.azimuth_range is not None and (key.azimuth_range[0] < -180.0
                                              or key.azimuth_range[1] > 180.0):
            raise ValueError(f"azimuth_range: expected degrees within [-180, 180], "
                             f"got {azimuth_range!r}")
        engine = self.engine(key, user_mask)
        sums = engine.integrate(args, norm)
        return engine, sums, stacked, model, (split, algorithm, implementation)

    @staticmethod
    def _finish(sums: Sums, model: str | None, empty: float, shape: tuple[int, ...],
                stacked: bool) -> dict[str, np.ndarray | None]:
        """Intensities and uncertainties from the sums, shaped (n, *shape) or shape."""
        arrays = [np.ascontiguousarray(a, dtype=np.float64)
                  for a in (sums.signal, sums.variance, sums.norm, sums.norm2)]
        with_errors = model is not None
        if with_errors:  # one allocation for the three (see CsrEngine.integrate)
            intensity, sigma, std = np.empty((3,) + arrays[0].shape)
        else:
            intensity, sigma, std = np.empty(arrays[0].shape), None, None
        flat = [a.reshape(-1) for a in arrays]
        unused = np.empty(0)
        csr_integrate.finish(*flat, float(empty), with_errors, intensity.reshape(-1),
                             unused if sigma is None else sigma.reshape(-1),
                             unused if std is None else std.reshape(-1))
        out = {"intensity": intensity, "sigma": sigma, "std": std,
               "sum_variance": sums.variance if with_errors else None}
        out.update(sum_signal=sums.signal, sum_normalization=sums.norm,
                   sum_normalization2=sums.norm2, count=sums.count)
        lead = (-1,) if stacked else ()
        return {k: None if v is None else v.reshape(lead + shape) for k, v in out.items()}

    def integrate1d(self, data: Any, npt: int, unit: Any = "q_nm^-1",
                    method: str | Sequence[str] = DEFAULT_METHOD,
                    radial_range: tuple[float, float] | None = None,
                    azimuth_range: tuple[float, float] | None = None, mask: Any = None,
                    dummy: float | None = None, delta_dummy: float | None = None,
                    dark: Any = None, flat: Any = None, variance: Any = None,
                    error_model: str | None = None, polarization_factor: float | None = None,
                    correct_solid_angle: bool = True, absorption: Any = None,
                    normalization_factor: float = 1.0, empty: float = np.nan) -> Integrate1dResult:
        """Radial profile of a frame or a stack.

        Parameters
        ----------
        data : array (rows, cols) or (n, rows, cols), any integer or float dtype.
        npt : number of radial bins.
        unit : radial unit ("q_nm^-1", "2th_deg", "r_mm", ...).
        method : (split, algorithm, implementation), e.g. ("bbox", "csr", "cython"),
            ("full", "csr", "cython"), ("no", "histogram", "cython"), or "full_csr".
        radial_range : (low, high) in ``unit``; default: all valid pixels.
        azimuth_range : (low, high) in degrees; default: the full circle.
        mask : non-zero for pixels to ignore (on top of the detector's mask).
        dummy, delta_dummy : pixel value (and tolerance) meaning "no data".
        dark : dark current subtracted from the raw frame (read as float32).
        flat : flat field, multiplied into the normalisation.
        variance : per-pixel variance (one frame or one per frame; read as float32).
        error_model : None (no uncertainties), "poisson" (variance = max(raw, 1)) or
            "azimuthal" (spread of the pixels in each bin).
        polarization_factor : polarization fraction in [-1, 1]; None: no correction.
        correct_solid_angle : divide by the relative solid angle of each pixel.
        absorption : per-pixel absorption correction, multiplied into the normalisation.
        normalization_factor : scalar the normalisation is multiplied by (e.g. monitor).
        empty : value given to bins without any valid pixel.

        Returns
        -------
        Integrate1dResult
            ``intensity`` of shape (npt,) or (n, npt), ``sigma`` (standard error of the mean)
            and ``std`` (spread of pixels) when an error model is set.

        Examples
        --------
        >>> res = ai.integrate1d(frame, 1000, unit="2th_deg", error_model="poisson")  # doctest: +SKIP
        """
        npt = _as_npt("npt", npt)
        unit = _get_unit(unit, "radial")
        engine, sums, stacked, model, method_t = self._run(
            data, method, unit, npt, None, radial_range, azimuth_range, mask, dummy,
            delta_dummy, dark, flat, variance, error_model, polarization_factor,
            correct_solid_angle, absorption, normalization_factor)
        edges = np.asarray(engine.radial_edges)
        res = self._finish(sums, model, empty, (npt,), stacked)
        return Integrate1dResult(
            radial=0.5 * (edges[1:] + edges[:-1]), unit=unit, method=method_t,
            error_model=model, geometry=self._geometry,
            options=self._options(radial_range, azimuth_range, polarization_factor,
                                  correct_solid_angle, normalization_factor, dummy, delta_dummy,
                                  dark, flat, mask), **res)

    def integrate2d(self, data: Any, npt_rad: int, npt_azim: int = 360, unit: Any = "q_nm^-1",
                    method: str | Sequence[str] = DEFAULT_METHOD,
                    radial_range: tuple[float, float] | None = None,
                    azimuth_range: tuple[float, float] | None = None, mask: Any = None,
                    dummy: float | None = None, delta_dummy: float | None = None,
                    dark: Any = None, flat: Any = None, variance: Any = None,
                    error_model: str | None = None, polarization_factor: float | None = None,
                    correct_solid_angle: bool = True, absorption: Any = None,
                    normalization_factor: float = 1.0, empty: float = np.nan) -> Integrate2dResult:
        """Cake (radial x azimuthal regrouping) of a frame or a stack.

        Same parameters as :meth:`integrate1d`, with ``npt_rad`` radial and ``npt_azim``
        azimuthal bins. Returns an :class:`Integrate2dResult` whose ``intensity`` has shape
        (npt_azim, npt_rad), or (n, npt_azim, npt_rad) for a stack; ``azimuthal`` is in
        degrees.

        Examples
        --------
        >>> cake = ai.integrate2d(frame, 500, 360, unit="2th_deg")   # doctest: +SKIP
        >>> cake.intensity.shape                                      # doctest: +SKIP
        (360, 500)
        """
        npt_rad = _as_npt("npt_rad", npt_rad)
        npt_azim = _as_npt("npt_azim", npt_azim)
        unit = _get_unit(unit, "radial")
        engine, sums, stacked, model, method_t = self._run(
            data, method, unit, npt_rad, npt_azim, radial_range, azimuth_range, mask, dummy,
            delta_dummy, dark, flat, variance, error_model, polarization_factor,
            correct_solid_angle, absorption, normalization_factor)
        redges = np.asarray(engine.radial_edges)
        aedges = np.rad2deg(np.asarray(engine.azimuthal_edges))
        res = self._finish(sums, model, empty, (npt_azim, npt_rad), stacked)
        return Integrate2dResult(
            radial=0.5 * (redges[1:] + redges[:-1]), azimuthal=0.5 * (aedges[1:] + aedges[:-1]),
            unit=unit, method=method_t, error_model=model, geometry=self._geometry,
            options=self._options(radial_range, azimuth_range, polarization_factor,
                                  correct_solid_angle, normalization_factor, dummy, delta_dummy,
                                  dark, flat, mask), **res)

    def integrate_radial(self, data: Any, npt: int, radial_range: tuple[float, float] | None = None,
                         radial_unit: Any = "q_nm^-1",
                         method: str | Sequence[str] = DEFAULT_METHOD,
                         azimuth_range: tuple[float, float] | None = None, mask: Any = None,
                         dummy: float | None = None, delta_dummy: float | None = None,
                         dark: Any = None, flat: Any = None, variance: Any = None,
                         error_model: str | None = None,
                         polarization_factor: float | None = None,
                         correct_solid_angle: bool = True, absorption: Any = None,
                         normalization_factor: float = 1.0,
                         empty: float = np.nan) -> Integrate1dResult:
        """Chi profile: intensity against the azimuthal angle, over a radial range.

        Every pixel (fraction) inside ``radial_range`` (in ``radial_unit``; default: all) is
        regrouped into ``npt`` azimuthal bins; ``radial`` of the result holds the chi bin
        centres in degrees and ``unit`` is "chi_deg". Other parameters as in
        :meth:`integrate1d`.

        Examples
        --------
        >>> prof = ai.integrate_radial(frame, 360, radial_range=(10, 12), radial_unit="q_nm^-1")  # doctest: +SKIP
        """
        npt = _as_npt("npt", npt)
        runit = _get_unit(radial_unit, "radial", "radial_unit")
        engine, sums, stacked, model, method_t = self._run(
            data, method, runit, 1, npt, radial_range, azimuth_range, mask, dummy, delta_dummy,
            dark, flat, variance, error_model, polarization_factor, correct_solid_angle,
            absorption, normalization_factor)
        aedges = np.rad2deg(np.asarray(engine.azimuthal_edges))
        res = self._finish(sums, model, empty, (npt,), stacked)
        return Integrate1dResult(
            radial=0.5 * (aedges[1:] + aedges[:-1]), unit=_get_unit("chi_deg", "azimuthal"),
            method=method_t, error_model=model, geometry=self._geometry,
            options=self._options(radial_range, azimuth_range, polarization_factor,
                                  correct_solid_angle, normalization_factor, dummy, delta_dummy,
                                  dark, flat, mask) | {"radial_unit": runit.name}, **res)

    @staticmethod
    def _options(radial_range, azimuth_range, polarization_factor, correct_solid_angle,
                 normalization_factor, dummy, delta_dummy, dark, flat, mask) -> dict:
        return {"radial_range": None if radial_range is None else list(radial_range),
                "azimuth_range": None if azimuth_range is None else list(azimuth_range),
                "polarization_factor": polarization_factor,
                "correct_solid_angle": bool(correct_solid_angle),
                "normalization_factor": float(normalization_factor), "dummy": dummy,
                "delta_dummy": delta_dummy, "dark": dark is not None, "flat": flat is not None,
                "mask": mask is not None}

    # ------------------------------------------------- per-ring robust statistics
    def _ring_pixels(self, data, npt, unit, radial_range, azimuth_range, mask, dummy,
                     delta_dummy, dark, flat, polarization_factor, correct_solid_angle,
                     absorption, normalization_factor):
        """Pixels per ring (centre assignment): (engine, bin, pixel, signal, norm, valid, stacked)."""
        npt = _as_npt("npt", npt)
        unit = _get_unit(unit, "radial")
        frames, stacked = self._frames(data)
        user_mask, mask_digest = self._mask(mask)
        args = self._frame_args(frames, dark, None, None, dummy, delta_dummy)
        norm = self.normalisation(correct_solid_angle, polarization_factor, flat, absorption,
                                  normalization_factor)
        key = EngineKey("csr", "cython", "no", unit.name, npt, None,
                        _as_range("radial_range", radial_range),
                        _as_range("azimuth_range", azimuth_range), mask_digest)
        engine = self.engine(key, user_mask)
        static = engine.static_sums(norm)
        bins = np.repeat(np.arange(engine.nbins), np.diff(static.indptr))
        pixels = static.indices
        values = args.frames[:, pixels]
        signal = values.astype(np.float64)
        if args.dark is not None:
            signal -= args.dark[pixels]
        valid = np.isfinite(signal)
        if values.dtype.kind in "iu":
            valid &= (values != np.iinfo(values.dtype).max)
            if values.dtype.kind == "i":
                valid &= values >= 0
        if args.dummy is not None:
            valid &= ~(np.abs(values - args.dummy) <= args.delta_dummy)
        return unit, engine, bins, signal, norm.values[pixels], valid, stacked, values

    def _robust_result(self, unit, engine, sums_list, stacked, model, method_name, options):
        signal, norm, norm2, count, variance = (np.array(x) for x in zip(*sums_list))
        sums = Sums(signal, variance, norm, norm2, count)
        edges = np.asarray(engine.radial_edges)
        res = self._finish(sums, model, np.nan, (engine.nbins,), stacked)
        return Integrate1dResult(radial=0.5 * (edges[1:] + edges[:-1]), unit=unit,
                                 method=("no", method_name, "numpy"), error_model=model,
                                 geometry=self._geometry, options=options, **res)

    def sigma_clip(self, data: Any, npt: int, unit: Any = "q_nm^-1", thres: float = 5.0,
                   max_iter: int = 5, radial_range: tuple[float, float] | None = None,
                   azimuth_range: tuple[float, float] | None = None, mask: Any = None,
                   dummy: float | None = None, delta_dummy: float | None = None,
                   dark: Any = None, flat: Any = None, polarization_factor: float | None = None,
                   correct_solid_angle: bool = True, absorption: Any = None,
                   normalization_factor: float = 1.0,
                   method: str | Sequence[str] | None = None) -> Integrate1dResult:
        """Per-ring mean after iterative outlier rejection (background under Bragg peaks).

        Each pixel goes, by its centre, to one ring. In each ring the weighted mean ``m``
        (``sum signal / sum norm``) and spread ``s`` of the corrected values
        ``x = signal / norm`` (weights ``norm``) are computed; pixels with
        ``|x - m| > thres * s`` are rejected, and this repeats until nothing changes or
        ``max_iter`` rejection passes were made (``max_iter=0``: no rejection). The spread is
        measured (the "azimuthal" error model): a Poisson prediction would be dragged far
        from the data by strong peaks in the first pass and reject everything.

        Returns an :class:`Integrate1dResult` of the kept pixels (``count`` = pixels kept,
        ``error_model`` "azimuthal"): ``sigma`` is the standard error of the clipped mean,
        ``std`` the spread of the kept pixels. A stack is clipped frame by frame.

        ``method`` None (NumPy, as above) or (split, "csr", "opencl"): clipped in the OpenCL
        kernel (``data`` may then be a pyopencl array); with split "no" it is the same
        definition as the default (see :func:`xreduce.opencl_engine.sigma_clip`).

        Examples
        --------
        >>> bg = ai.sigma_clip(frame, 500, unit="2th_deg", thres=3)   # doctest: +SKIP
        """
        if not float(thres) > 0:
            raise ValueError(f"thres: expected a number > 0, got {thres!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
                or max_iter < 0:
            raise ValueError(f"max_iter: expected an integer >= 0, got {max_iter!r}")
        if method is not None:
            return _opencl_engine.sigma_clip(self, data, npt, unit, thres, max_iter, method, dict(
                radial_range=radial_range, azimuth_range=azimuth_range, mask=mask, dummy=dummy,
                delta_dummy=delta_dummy, dark=dark, flat=flat,
                polarization_factor=polarization_factor, correct_solid_angle=correct_solid_angle,
                absorption=absorption, normalization_factor=normalization_factor))
        unit, engine, bins, signal, norm, valid, stacked, _ = self._ring_pixels(
            data, npt, unit, radial_range, azimuth_range, mask, dummy, delta_dummy, dark, flat,
            polarization_factor, correct_solid_angle, absorption, normalization_factor)
        nb = engine.nbins
        out = []
        for f in range(signal.shape[0]):
            keep = valid[f].copy()
            s = np.where(keep, signal[f], 0.0)
            x = s / norm
            for iteration in range(max_iter + 1):
                sn = np.bincount(bins, norm * keep, nb)
                sn2 = np.bincount(bins, norm * norm * keep, nb)
                with np.errstate(divide="ignore", invalid="ignore"):
                    mean = np.bincount(bins, s * keep, nb) / sn
                    spread2 = np.bincount(bins, norm * (x - mean[bins]) ** 2 * keep, nb) / sn
                if iteration == max_iter:
                    break
                reject = keep & (np.abs(x - mean[bins]) > thres * np.sqrt(spread2[bins]))
                if not reject.any():
                    break
                keep &= ~reject
            out.append((np.bincount(bins, s * keep, nb), sn, sn2,
                        np.bincount(bins, keep.astype(np.float64), nb),
                        np.nan_to_num(spread2 * sn2)))
        return self._robust_result(unit, engine, out, stacked, "azimuthal", "sigma_clip",
                                   {"thres": float(thres), "max_iter": int(max_iter)})

    def medfilt1d(self, data: Any, npt: int, unit: Any = "q_nm^-1",
                  percentile: float | tuple[float, float] = 50,
                  radial_range: tuple[float, float] | None = None,
                  azimuth_range: tuple[float, float] | None = None, mask: Any = None,
                  dummy: float | None = None, delta_dummy: float | None = None,
                  dark: Any = None, flat: Any = None, polarization_factor: float | None = None,
                  correct_solid_angle: bool = True, absorption: Any = None,
                  normalization_factor: float = 1.0) -> Integrate1dResult:
        """Per-ring median, or trimmed mean between two percentiles, of the corrected pixels.

        Each pixel goes, by its centre, to one ring; within a ring the corrected values
        ``signal / norm`` are sorted and each pixel spans a share of the ring's total weight
        ``sum norm``. ``percentile=p`` gives the value of the pixel whose share contains p %
        (the weighted median for 50); ``percentile=(lo, hi)`` gives the mean
        ``sum signal / sum norm`` of the pixels whose share's centre lies in [lo, hi] % (or the
        pixel at the middle percentile when none does).

        Examples
        --------
        >>> med = ai.medfilt1d(frame, 500, unit="2th_deg", percentile=(10, 90))  # doctest: +SKIP
        """
        if np.ndim(percentile) == 0:
            lo = hi = float(percentile)
        elif np.shape(percentile) == (2,):
            lo, hi = (float(p) for p in percentile)
        else:
            raise ValueError(f"percentile: expected a number or a pair (lo, hi), got {percentile!r}")
        if not 0 <= lo <= hi <= 100:
            raise ValueError(f"percentile: expected 0 <= lo <= hi <= 100, got {percentile!r}")
        unit, engine, bins, signal, norm, valid, stacked, _ = self._ring_pixels(
            data, npt, unit, radial_range, azimuth_range, mask, dummy, delta_dummy, dark, flat,
            polarization_factor, correct_solid_angle, absorption, normalization_factor)
        nb = engine.nbins
        out = []
        for f in range(signal.shape[0]):
            ok = valid[f]
            b, s, n = bins[ok], signal[f][ok], norm[ok]
            x = s / n
            order = np.lexsort((x, b))
            b, s, n, x = b[order], s[order], n[order], x[order]
            total = np.bincount(b, n, nb)
            start = np.concatenate([[0.0], np.cumsum(total)[:-1]])
            upper = (np.cumsum(n) - start[b]) / np.where(total > 0, total, 1)[b]
            lower = upper - n / np.where(total > 0, total, 1)[b]
            centre = 0.5 * (upper + lower)
            keep = (centre >= lo / 100) & (centre <= hi / 100)
            has = np.bincount(b, keep, nb) > 0
            mid = (lo + hi) / 200
            pick = (lower <= mid) & (upper >= mid) & ~has[b]
            pick &= np.concatenate([[True], (b[1:] != b[:-1]) | ~pick[:-1]])  # first in ring
            keep |= pick
            out.append((np.bincount(b, s * keep, nb), np.bincount(b, n * keep, nb),
                        np.bincount(b, n * n * keep, nb),
                        np.bincount(b, keep.astype(np.float64), nb), np.zeros(nb)))
        return self._robust_result(unit, engine, out, stacked, None, "medfilt",
                                   {"percentile": [lo, hi]})

    # ------------------------------------------------------------ save / load
    def save_engine(self, path: str) -> None:
        """Write the geometry and every cached CSR engine to an HDF5 file (atomically).

        :meth:`load_engine` reads it back into an integrator whose first integration needs no
        matrix build and gives results identical to this one's.
        """
        import h5py

        tmp = _atomic_path(path)
        try:
            with h5py.File(tmp, "w") as h5:
                _write_geometry(h5.create_group("geometry"), self._geometry)
                group = h5.create_group("engines")
                n = 0
                for key, engine in self._engines.items():
                    if not isinstance(engine, CsrEngine):
                        continue
                    g = group.create_group(f"engine_{n:03d}")
                    n += 1
                    g.attrs["key"] = json.dumps(key.__dict__)
                    m = engine.matrix
                    for name in ("indptr", "indices", "data", "radial_edges", "azimuthal_edges"):
                        value = getattr(m, name)
                        if value is not None:
                            g.create_dataset(name, data=value)
                    g.attrs["shape"] = list(m.shape)
                    g.attrs["split"] = m.split
                    g.attrs["unit"] = getattr(m.unit, "name", str(m.unit))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load_engine(cls, path: str, **kwargs: Any) -> "AzimuthalIntegrator":
        """An integrator with the geometry and engines saved by :meth:`save_engine`."""
        import h5py
        from xreduce.sparse import CsrMatrix

        with h5py.File(path, "r") as h5:
            ai = cls(_read_geometry(h5["geometry"]), **kwargs)
            for g in h5["engines"].values():
                raw = json.loads(g.attrs["key"])
                for name in ("radial_range", "azimuth_range"):
                    raw[name] = None if raw[name] is None else tuple(raw[name])
                key = EngineKey(**raw)
                arrays = {name: (g[name][()] if name in g else None)
                          for name in ("indptr", "indices", "data", "radial_edges",
                                       "azimuthal_edges")}
                matrix = CsrMatrix(shape=tuple(int(s) for s in g.attrs["shape"]),
                                   split=str(g.attrs["split"]), unit=str(g.attrs["unit"]),
                                   **arrays)
                ai._engines.put(key, CsrEngine(key, matrix))
        return ai


def _write_geometry(group: Any, geometry: Any) -> None:
    """PONI parameters as attributes, the detector as an NXdetector subgroup."""
    for name in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
        value = getattr(geometry, name)
        group.attrs[name] = np.nan if value is None else float(value)
    geometry.detector.write_nexus(group, "detector")


def _read_geometry(group: Any) -> Any:
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    values = [float(group.attrs[n]) for n in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3",
                                              "wavelength")]
    wavelength = None if math.isnan(values[6]) else values[6]
    return Geometry(*values[:6], wavelength, Detector.read_nexus(group["detector"]))


# ------------------------------------------------------------------ implementations
def _build_csr(ai: AzimuthalIntegrator, key: EngineKey, user_mask: np.ndarray | None) -> CsrEngine:
    from xreduce.sparse import build_csr

    mask = None if user_mask is None else user_mask.reshape(ai.detector.shape)
    matrix = build_csr(ai.geometry, key.npt_rad, key.npt_azim, unit=key.unit, split=key.split,
                       radial_range=key.radial_range, azimuth_range=key.azimuth_range,
                       mask=mask)
    return CsrEngine(key, matrix)


def _build_histogram(ai: AzimuthalIntegrator, key: EngineKey,
                     user_mask: np.ndarray | None) -> HistogramEngine:
    mask = ai.combined_mask(user_mask)
    radial_range = key.radial_range or ai.default_radial_range(key.unit, key.split, mask)
    g = ai.geometry
    use_azimuth = key.npt_azim is not None or key.azimuth_range is not None
    na = key.npt_azim or 1
    lo_deg, hi_deg = key.azimuth_range or (-180.0, 180.0)
    azimuthal_edges = np.linspace(np.deg2rad(lo_deg), np.deg2rad(hi_deg), na + 1)
    if key.split == "no":
        rad_lo = np.ascontiguousarray(g.center_array(key.unit), dtype=np.float64).reshape(-1)
        rad_hi = rad_lo
        azi_lo = azi_hi = None
        finite = np.isfinite(rad_lo)
        if use_azimuth:
            chi = np.asarray(g.chi_array(), dtype=np.float64).reshape(-1)
            azi_lo = azi_hi = np.where(chi >= np.pi, chi - 2 * np.pi, chi)  # chi in [-pi, pi)
            finite &= np.isfinite(azi_lo)
    else:
        corners = np.asarray(g.corner_array(key.unit))
        rad = corners[..., 0].reshape(-1, 4)
        rad_lo, rad_hi = rad.min(axis=1), rad.max(axis=1)
        finite = np.isfinite(rad).all(axis=1)
        azi_lo = azi_hi = None
        if use_azimuth:
            chi = corners[..., 1].reshape(-1, 4)
            chi = np.where(chi >= np.pi, chi - 2 * np.pi, chi)
            lo, hi = chi.min(axis=1), chi.max(axis=1)
            wrap = hi - lo > np.pi  # straddles the discontinuity: unwrap past +pi
            if wrap.any():
                unwrapped = np.where(chi[wrap] < 0, chi[wrap] + 2 * np.pi, chi[wrap])
                lo[wrap], hi[wrap] = unwrapped.min(axis=1), unwrapped.max(axis=1)
            azi_lo, azi_hi = lo, hi
            finite &= np.isfinite(chi).all(axis=1)
    skip = mask.reshape(-1) | ~finite
    return HistogramEngine(
        key, np.linspace(radial_range[0], radial_range[1], key.npt_rad + 1),
        azimuthal_edges if key.npt_azim is not None else None,
        (float(azimuthal_edges[0]), float(azimuthal_edges[-1])),
        rad_lo, rad_hi, azi_lo, azi_hi, np.ascontiguousarray(skip, dtype=np.uint8))


register_implementation("csr", "cython", SPLITS, _build_csr)
register_implementation("histogram", "cython", ("no", "bbox"), _build_histogram)

# The OpenCL back end registers ("csr", "opencl") and ("csr", "any"); pyopencl is imported
# only when such an engine is built.
from xreduce import opencl_engine as _opencl_engine  # noqa: E402,F401
