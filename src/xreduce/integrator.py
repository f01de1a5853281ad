"""AzimuthalIntegrator: 1D and 2D azimuthal integration with uncertainties.

The integrator turns detector frames into profiles (``integrate1d``), cakes (``integrate2d``)
and chi profiles (``integrate_radial``), and offers per-ring outlier rejection
(``sigma_clip``) and median / trimmed-mean filtering (``medfilt1d``). This module holds the
public API and the validation of every argument; the work is done by the engines of
:mod:`xreduce.engines` (method registry, the one invalid-pixel rule, the Cython, histogram
and OpenCL back ends, robust statistics, engine files). Everything that does not change from
frame to frame (matrix, mask, solid angle, polarization, flat, absorption) is computed once
per integrator and kept in an engine cache; each frame then costs one fused pass of a
compiled kernel over the matrix.

Conventions (``doc/integration.md``)
------------------------------------
- ``data`` is one frame ``(rows, cols)`` or a stack ``(n, rows, cols)`` of any integer or
  float dtype, read as it is (a non-contiguous or byte-swapped array is copied once); a
  ``numpy.ma`` array's masked pixels are masked.
- Masked pixels: the detector's mask, the ``mask`` argument (non-zero = masked), pixels whose
  normalisation (flat * solid angle * polarization * absorption) is not finite and positive,
  pixels whose dark or variance is NaN or infinite, and, per frame, invalid values: NaN/inf,
  negative values of signed integer frames, the largest value of integer dtypes when the
  detector's ``max_value_invalid`` is set (Dectris detectors) and ``dummy`` (within
  ``delta_dummy``, compared in the frame's own type). Masked pixels count in neither the
  signal nor the normalisation.
- Bins that receive no valid pixel get ``count == 0`` and ``empty`` (NaN by default) as
  intensity, sigma and std.
- The geometry of an integrator never changes (its engines were built for it): ``ai.dist =
  ...`` raises; ``ai.with_geometry(dist=...)`` makes a new integrator.

Example
-------
>>> from xreduce.geometry import Geometry                          # doctest: +SKIP
>>> ai = AzimuthalIntegrator(Geometry.load("lab6.poni"))            # doctest: +SKIP
>>> res = ai.integrate1d(frame, 1000, unit="2th_deg", error_model="poisson")  # doctest: +SKIP
>>> res.radial, res.intensity, res.sigma                            # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from xreduce.engines import files, robust
from xreduce.engines import opencl as opencl_backend
from xreduce.engines.preprocess import (FrameArgs, Normalisation, Sums, digest,
                                        make_normalisation, pixel_rule)
from xreduce.engines.registry import (DEFAULT_METHOD, IMPLEMENTATIONS, SPLITS,  # noqa: F401
                                      EngineCache, EngineKey, parse_method,
                                      parse_method_target, register_implementation,
                                      valid_methods)
from xreduce.ext import csr_integrate
from xreduce.io.chunks import CompressedFrames, RawChunks
from xreduce.limits import check_allocation
from xreduce.results import Integrate1dResult, Integrate2dResult

_MAX_BINS = 2**31 - 2
"""The kernels index bins and CSR rows with int32."""

_GEOMETRY_NAMES = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "detector",
                   "geometry")


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
    if value > _MAX_BINS:
        raise ValueError(f"{name}: expected at most {_MAX_BINS} bins, got {value}")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None


def _get_unit(unit: Any, kind: str, name: str = "unit") -> Any:
    from xreduce.units import get_unit

    try:
        found = get_unit(unit)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{name}: unknown unit {unit!r} ({err})") from None
    if found.kind != kind:
        raise ValueError(f"{name}: expected a {kind} unit, got {found.name!r} ({found.kind})")
    return found


def _filled(name: str, value: Any, fill: float) -> Any:
    """A ``numpy.ma`` array as a plain float64 array with ``fill`` where it is masked (which
    masks those pixels: NaN in a flat, dark or variance), any other value unchanged."""
    if isinstance(value, np.ma.MaskedArray):
        if value.dtype.kind not in "uifb":
            raise TypeError(f"{name}: expected a numeric array, got dtype {value.dtype}")
        return value.astype(np.float64).filled(fill)
    return value


def _refuse_full_mask(mask: np.ndarray) -> None:
    if mask.all():
        raise ValueError("mask: every pixel is masked (by the mask argument or the data's "
                         "numpy.ma mask), nothing to integrate")


class AzimuthalIntegrator:
    """Azimuthal integration for one geometry (immutable, thread-safe, picklable).

    Parameters
    ----------
    geometry : xreduce.geometry.Geometry
        Detector position and detector; a different geometry needs a new integrator
        (:meth:`with_geometry`).
    pickle_engines : bool
        Whether pickling carries the built engines (matrices) along; by default only the
        geometry travels and engines are rebuilt on first use.
    max_engines : int
        How many engines the cache keeps (least recently used dropped first).
    max_engine_bytes : int, optional
        Memory the cached engines may hold together (oldest dropped first; None: no bound
        beyond ``max_engines``).

    Examples
    --------
    >>> ai = AzimuthalIntegrator(geometry)                             # doctest: +SKIP
    >>> res = ai.integrate1d(frame, 1000, unit="2th_deg", error_model="poisson")  # doctest: +SKIP
    >>> cake = ai.integrate2d(frame, 500, 360, unit="q_nm^-1")         # doctest: +SKIP
    >>> ai2 = ai.with_geometry(wavelength=0.5e-10)                     # doctest: +SKIP
    """

    def __init__(self, geometry: Any, *, pickle_engines: bool = False, max_engines: int = 8,
                 max_engine_bytes: int | None = None):
        self._geometry = geometry
        self.pickle_engines = bool(pickle_engines)
        self._engines = EngineCache(max_engines, max_engine_bytes)
        self._norms: OrderedDict[tuple, Normalisation] = OrderedDict()
        self._masks: OrderedDict[str, np.ndarray] = OrderedDict()
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

    def __setattr__(self, name: str, value: Any) -> None:
        """Only ``pickle_engines`` may be set: the geometry is read-only (engines were built
        for it), and nothing else is silently stored and ignored."""
        if name.startswith("_") or name == "pickle_engines":
            object.__setattr__(self, name, value)
        elif name in _GEOMETRY_NAMES or hasattr(self._geometry, name):
            raise AttributeError(
                f"{name}: the geometry of an integrator is read-only (its engines were built "
                f"for it); make a new integrator with ai = ai.with_geometry({name}=...)")
        else:
            raise AttributeError(f"{name}: AzimuthalIntegrator has no settable attribute "
                                 f"{name!r}")

    def with_geometry(self, **changes: Any) -> "AzimuthalIntegrator":
        """A new integrator for this geometry with some parameters changed (``dist``,
        ``poni1``, ``poni2``, ``rot1``, ``rot2``, ``rot3``, ``wavelength``, ``detector``).

        >>> ai2 = ai.with_geometry(wavelength=0.5e-10, dist=0.2)      # doctest: +SKIP
        """
        return type(self)(self._geometry.with_(**changes), pickle_engines=self.pickle_engines,
                          max_engines=self._engines.max_engines,
                          max_engine_bytes=self._engines.max_bytes)

    @classmethod
    def load(cls, path: str, shape: tuple | None = None) -> "AzimuthalIntegrator":
        """An integrator for the geometry of a PONI file (``shape`` for files without one)."""
        from xreduce.geometry import Geometry

        return cls(Geometry.load(path, shape=shape))

    def __repr__(self) -> str:
        return f"AzimuthalIntegrator({self._geometry!r}, engines={len(self._engines)})"

    def __getstate__(self) -> dict:
        state = {"geometry": self._geometry, "pickle_engines": self.pickle_engines,
                 "max_engines": self._engines.max_engines,
                 "max_engine_bytes": self._engines.max_bytes, "engines": []}
        if self.pickle_engines:
            state["engines"] = self._engines.items()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["geometry"], pickle_engines=state["pickle_engines"],
                      max_engines=state["max_engines"],
                      max_engine_bytes=state.get("max_engine_bytes"))
        for key, engine in state["engines"]:
            self._engines.put(key, engine)

    # ------------------------------------------------------------ validation
    def _frames(self, data: Any, implementation: str | None = None
                ) -> tuple[Any, bool, np.ndarray | None]:
        """``data`` as a C-contiguous native (n, npix) array, whether it was a stack, and the
        pixels a ``numpy.ma`` array masks in every frame (flattened bool, or None)."""
        shape = tuple(self.detector.shape)
        if opencl_backend.is_device_array(data):  # stays on the device (OpenCL engines only)
            return (*opencl_backend.device_frames(data, shape, implementation), None)
        if isinstance(data, RawChunks):  # decoded by the engine, or decompressed first
            if data.frame_shape != shape:
                raise ValueError(f"data: expected compressed frames of shape {shape} (the "
                                 f"detector's), got {data.frame_shape}")
            if data.dtype.kind not in "uif" or len(data) == 0:
                raise TypeError(f"data: expected compressed integer or float frames, got "
                                f"{len(data)} of dtype {data.dtype}")
            return CompressedFrames(data), True, None
        masked = None
        if isinstance(data, np.ma.MaskedArray):
            masked = np.ma.getmaskarray(data)
            data = np.ma.getdata(data)
        arr = np.asarray(data)
        if arr.ndim not in (2, 3) or arr.shape[-2:] != shape:
            raise ValueError(f"data: expected a frame of shape {shape} or a stack (n, *{shape}) "
                             f"matching the detector, got shape {arr.shape}")
        if arr.dtype.kind not in "uif" or arr.dtype.itemsize > 8:
            raise TypeError(f"data: expected an integer or float array, got dtype {arr.dtype}")
        if arr.ndim == 3 and arr.shape[0] == 0:
            raise ValueError(f"data: expected at least one frame, got shape {arr.shape}")
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        arr = np.ascontiguousarray(arr)
        frames = arr.reshape(-1 if arr.ndim == 3 else 1, shape[0] * shape[1])
        if masked is not None:
            masked = masked.reshape(-1, frames.shape[1])
            if (masked != masked[:1]).any():  # a mask per frame: masked values become NaN
                frames = frames.astype(np.float64)
                frames[masked] = np.nan
                masked = None
            else:
                masked = masked[0]
        return frames, arr.ndim == 3, masked

    def _pixel_array(self, name: str, value: Any, dtype: Any) -> np.ndarray | None:
        """A per-pixel argument checked against the detector shape, flattened, as ``dtype``."""
        if value is None:
            return None
        arr = np.asarray(_filled(name, value, np.nan))
        shape = tuple(self.detector.shape)
        if arr.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} (the detector's), got {arr.shape}")
        if arr.dtype.kind not in "uifb":
            raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)

    def _frame_args(self, frames: Any, dark: Any, variance: Any, error_model: str | None,
                    dummy: Any, delta_dummy: Any) -> FrameArgs:
        dark_arr = self._pixel_array("dark", dark, np.float32)
        var_arr = None
        if variance is not None:
            var = np.asarray(_filled("variance", variance, np.nan))
            shape = tuple(self.detector.shape)
            if var.shape != shape and var.shape != (frames.shape[0],) + shape:
                raise ValueError(f"variance: expected shape {shape} or that of the data "
                                 f"{(frames.shape[0],) + shape}, got {var.shape}")
            if var.dtype.kind not in "uif":
                raise TypeError(f"variance: expected a numeric array, got dtype {var.dtype}")
            var_arr = np.ascontiguousarray(var, dtype=np.float32).reshape(-1, frames.shape[1])
        dummy = None if dummy is None else _as_float("dummy", dummy)
        delta = None if delta_dummy is None else _as_float("delta_dummy", delta_dummy)
        rule = pixel_rule(frames.dtype, dummy, delta, self.detector.max_value_invalid)
        return FrameArgs(frames, dark_arr, var_arr, error_model, rule)

    @staticmethod
    def _error_model(error_model: str | None, variance: Any) -> str | None:
        if error_model is not None and not isinstance(error_model, str):
            raise TypeError(f"error_model: expected None or a string, got {error_model!r}")
        model = None if error_model is None else error_model.lower()
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
    def _mask(self, mask: Any, masked: np.ndarray | None = None
              ) -> tuple[np.ndarray | None, str | None]:
        """The user's mask (validated, uint8 0/1, flattened; OR ``masked``, the pixels a
        ``numpy.ma`` frame masks) and its digest; a read-only mask is converted once."""
        if mask is None and masked is None:
            return None, None
        if isinstance(mask, np.ma.MaskedArray):  # its masked entries mask their pixels
            mask = np.ma.getdata(mask).astype(bool) | np.ma.getmaskarray(mask)
        found = None
        if mask is not None:
            key = digest(mask if isinstance(mask, np.ndarray) else np.asarray(mask))
            found = self._masks.get(key)
            if found is None:
                arr = self._pixel_array("mask", mask, None)
                found = (arr != 0).astype(np.uint8)  # owns its memory: read-only for good
                found.setflags(write=False)
                _refuse_full_mask(found)
                with self._lock:
                    self._masks[key] = found
                    while len(self._masks) > 4:
                        self._masks.popitem(last=False)
        if masked is not None:
            found = (masked if found is None else (found != 0) | masked).astype(np.uint8)
            found.setflags(write=False)
            _refuse_full_mask(found)
        return found, digest(found)

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
        """The per-pixel normalisation for a set of corrections (computed once, cached).

        A read-only ``flat`` or ``absorption`` (``flat.setflags(write=False)``) is
        fingerprinted once; a writeable one on every call (it may have changed in place).
        """
        flat = _filled("flat", flat, np.nan)
        absorption = _filled("absorption", absorption, np.nan)
        factor = _as_float("normalization_factor", normalization_factor)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"normalization_factor: expected a finite number > 0, "
                             f"got {normalization_factor!r}")
        if polarization_factor is not None:
            polarization_factor = _as_float("polarization_factor", polarization_factor)
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
                found = make_normalisation(key, self._geometry, bool(correct_solid_angle),
                                           polarization_factor, flat_arr, abs_arr, factor)
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
            corners = np.asarray(self._geometry.corner_array(unit))
            values = corners[..., 0].reshape(-1, corners.shape[-2])
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
        return self._engines.get_or_create(key, lambda: impl.builder()(self, key, mask))

    @property
    def engines(self) -> list[tuple[EngineKey, Any]]:
        """The cached (key, engine) pairs."""
        return self._engines.items()

    def reset_engines(self) -> None:
        """Forget every built engine (frees their matrices); the next call builds again. The
        geometry's cached pixel arrays and the normalisations are kept."""
        self._engines.clear()

    # ------------------------------------------------------------- integrate
    def _prepare(self, data, method, target, unit, npt_rad, npt_azim, radial_range,
                 azimuth_range, mask, dummy, delta_dummy, dark, flat, variance, error_model,
                 polarization_factor, correct_solid_angle, absorption, normalization_factor,
                 npt_name="npt"):
        """Validate everything (sizes against the memory they imply first) and find the
        engine; returns (engine, FrameArgs, Normalisation, stacked, model, method)."""
        (split, algorithm, implementation), target = parse_method_target(method, target)
        frames, stacked, masked = self._frames(data, implementation)
        nbins = npt_rad * (npt_azim or 1)
        if nbins > _MAX_BINS:
            raise ValueError(f"{npt_name}: expected at most {_MAX_BINS} bins in all, got "
                             f"{nbins}")
        nframes = frames.shape[0]
        check_allocation(8 * nbins * (3 + 8 * nframes) + 4 * (nbins + 1), npt_name,
                         f"{nbins} bins x {nframes} frames of float64 sums and results")
        model = self._error_model(error_model, variance)
        user_mask, mask_digest = self._mask(mask, masked)
        args = self._frame_args(frames, dark, variance, model, dummy, delta_dummy)
        norm = self.normalisation(correct_solid_angle, polarization_factor, flat, absorption,
                                  normalization_factor)
        device = opencl_backend.resolve_target(target) \
            if IMPLEMENTATIONS[(algorithm, implementation)].devices else None
        key = EngineKey(algorithm, implementation, split, unit.name, npt_rad, npt_azim,
                        _as_range("radial_range", radial_range),
                        _as_range("azimuth_range", azimuth_range), mask_digest, device)
        if key.azimuth_range is not None and (key.azimuth_range[0] < -180.0
                                              or key.azimuth_range[1] > 180.0):
            raise ValueError(f"azimuth_range: expected degrees within [-180, 180], "
                             f"got {azimuth_range!r}")
        engine = self.engine(key, user_mask)
        if isinstance(args.frames, CompressedFrames) and not getattr(engine, "takes_compressed",
                                                                     False):
            args = dataclasses.replace(args, frames=args.frames.decompress())
        return engine, args, norm, stacked, model, (split, algorithm, implementation)

    def _run(self, *prepare_args, empty: float, **prepare_kwargs):
        engine, args, norm, stacked, model, method_t = self._prepare(*prepare_args,
                                                                     **prepare_kwargs)
        if getattr(engine, "finishes", False):  # results made in the engine's pass
            sums = engine.integrate(args, norm, empty=empty)
        else:
            sums = engine.integrate(args, norm)
        return engine, sums, stacked, model, method_t

    @staticmethod
    def _finish(sums: Sums, model: str | None, empty: float, shape: tuple[int, ...],
                stacked: bool) -> dict[str, np.ndarray | None]:
        """Intensities and uncertainties from the sums, shaped (n, *shape) or shape (made
        here unless the engine made them in its pass, ``sums.finished``)."""
        with_errors = model is not None
        if sums.finished is not None:
            intensity, sigma, std = sums.finished
            if not with_errors:
                sigma = std = None
        else:
            arrays = [np.ascontiguousarray(a, dtype=np.float64)
                      for a in (sums.signal, sums.variance, sums.norm, sums.norm2)]
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
                    normalization_factor: float = 1.0, empty: float = np.nan,
                    target: Any = None) -> Integrate1dResult:
        """Radial profile of a frame or a stack.

        Parameters
        ----------
        data : array (rows, cols) or (n, rows, cols), any integer or float dtype.
            Or the compressed chunks of a stack (``xreduce.io.chunks.read_raw_chunks``):
            the csc method integrates them as it decodes them, others get them decompressed.
        npt : number of radial bins.
        unit : radial unit ("q_nm^-1", "2th_deg", "r_mm", ...).
        method : (split, algorithm, implementation[, target]), e.g. ("bbox", "csr", "cython"),
            ("full", "csr", "cython"), ("no", "histogram", "cython"),
            ("bbox", "csr", "opencl", "gpu:0"), or a string "full_csr", "csr_ocl".
        radial_range : (low, high) in ``unit``; default: all valid pixels.
        azimuth_range : (low, high) in degrees; default: the full circle.
        mask : non-zero for pixels to ignore (on top of the detector's mask).
        dummy, delta_dummy : pixel value (and tolerance) meaning "no data", compared in the
            frame's own type.
        dark : dark current subtracted from the raw frame (read as float32; NaN masks).
        flat : flat field, multiplied into the normalisation. Pass ``mask``, ``flat`` and
            ``absorption`` read-only (``flat.setflags(write=False)``) and they are
            fingerprinted once instead of on every call (70 ms for an Eiger 16M flat).
        variance : per-pixel variance (one frame or one per frame; read as float32).
        error_model : None (no uncertainties), "poisson" (variance = max(raw, 1)) or
            "azimuthal" (spread of the pixels in each bin).
        polarization_factor : polarization fraction in [-1, 1]; None: no correction.
        correct_solid_angle : divide by the relative solid angle of each pixel.
        absorption : per-pixel absorption correction, multiplied into the normalisation.
        normalization_factor : scalar the normalisation is multiplied by (e.g. monitor).
        empty : value given to bins without any valid pixel.
        target : OpenCL device of an "opencl"/"any" method: "gpu", "cpu", "any", "gpu:0",
            "platform,device" (default: ``XREDUCE_OPENCL_DEVICE``, else "any"); host methods
            take None or "cpu".

        Returns
        -------
        Integrate1dResult
            ``intensity`` of shape (npt,) or (n, npt), ``sigma`` (standard error of the mean)
            and ``std`` (spread of pixels) when an error model is set.

        Examples
        --------
        >>> res = ai.integrate1d(frame, 1000, unit="2th_deg", error_model="poisson")  # doctest: +SKIP
        """
        empty = _as_float("empty", empty)
        npt = _as_npt("npt", npt)
        unit = _get_unit(unit, "radial")
        engine, sums, stacked, model, method_t = self._run(
            data, method, target, unit, npt, None, radial_range, azimuth_range, mask, dummy,
            delta_dummy, dark, flat, variance, error_model, polarization_factor,
            correct_solid_angle, absorption, normalization_factor, empty=empty)
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
                    normalization_factor: float = 1.0, empty: float = np.nan,
                    target: Any = None) -> Integrate2dResult:
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
        empty = _as_float("empty", empty)
        npt_rad = _as_npt("npt_rad", npt_rad)
        npt_azim = _as_npt("npt_azim", npt_azim)
        unit = _get_unit(unit, "radial")
        engine, sums, stacked, model, method_t = self._run(
            data, method, target, unit, npt_rad, npt_azim, radial_range, azimuth_range, mask,
            dummy, delta_dummy, dark, flat, variance, error_model, polarization_factor,
            correct_solid_angle, absorption, normalization_factor, npt_name="npt_rad x npt_azim",
            empty=empty)
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
                         empty: float = np.nan, target: Any = None) -> Integrate1dResult:
        """Chi profile: intensity against the azimuthal angle, over a radial range.

        Every pixel (fraction) inside ``radial_range`` (in ``radial_unit``; default: all) is
        regrouped into ``npt`` azimuthal bins; ``radial`` of the result holds the chi bin
        centres in degrees and ``unit`` is "chi_deg". Other parameters as in
        :meth:`integrate1d`.

        Examples
        --------
        >>> prof = ai.integrate_radial(frame, 360, radial_range=(10, 12), radial_unit="q_nm^-1")  # doctest: +SKIP
        """
        empty = _as_float("empty", empty)
        npt = _as_npt("npt", npt)
        runit = _get_unit(radial_unit, "radial", "radial_unit")
        engine, sums, stacked, model, method_t = self._run(
            data, method, target, runit, 1, npt, radial_range, azimuth_range, mask, dummy,
            delta_dummy, dark, flat, variance, error_model, polarization_factor,
            correct_solid_angle, absorption, normalization_factor, empty=empty)
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
    def _ring_engine(self, data, npt, unit, radial_range, azimuth_range, mask, dummy,
                     delta_dummy, dark, flat, polarization_factor, correct_solid_angle,
                     absorption, normalization_factor, method=("no", "csr", "cython"),
                     target=None):
        """Validate the arguments of sigma_clip / medfilt1d; returns (unit, engine, args,
        norm, stacked, method)."""
        npt = _as_npt("npt", npt)
        unit = _get_unit(unit, "radial")
        model = "azimuthal"
        engine, args, norm, stacked, _, method_t = self._prepare(
            data, method, target, unit, npt, None, radial_range, azimuth_range, mask, dummy,
            delta_dummy, dark, flat, None, model, polarization_factor, correct_solid_angle,
            absorption, normalization_factor)
        return unit, engine, args, norm, stacked, method_t

    def _robust_result(self, unit, engine, sums_list, stacked, model, method, options):
        signal, norm, norm2, count, variance = (np.array(x) for x in zip(*sums_list))
        return self._robust_sums_result(unit, engine, Sums(signal, variance, norm, norm2, count),
                                        stacked, model, method, options)

    def _robust_sums_result(self, unit, engine, sums, stacked, model, method, options):
        edges = np.asarray(engine.radial_edges)
        res = self._finish(sums, model, np.nan, (engine.nbins,), stacked)
        return Integrate1dResult(radial=0.5 * (edges[1:] + edges[:-1]), unit=unit,
                                 method=method, error_model=model, geometry=self._geometry,
                                 options=options, **res)

    def sigma_clip(self, data: Any, npt: int, unit: Any = "q_nm^-1", thres: float = 5.0,
                   max_iter: int = 5, radial_range: tuple[float, float] | None = None,
                   azimuth_range: tuple[float, float] | None = None, mask: Any = None,
                   dummy: float | None = None, delta_dummy: float | None = None,
                   dark: Any = None, flat: Any = None, polarization_factor: float | None = None,
                   correct_solid_angle: bool = True, absorption: Any = None,
                   normalization_factor: float = 1.0,
                   method: str | Sequence[str] | None = None,
                   target: Any = None) -> Integrate1dResult:
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

        ``method`` None (NumPy, as above, split "no") or (split, "csr", "opencl"[, target]):
        clipped in the OpenCL kernel with the matrix of ``split`` (``data`` may then be a
        pyopencl array); with split "no" it is the same definition as the default.
        ``(split, "csr", "any")`` uses OpenCL where a device exists, else NumPy (split "no").

        Examples
        --------
        >>> bg = ai.sigma_clip(frame, 500, unit="2th_deg", thres=3)   # doctest: +SKIP
        """
        thres = _as_float("thres", thres)
        if not (math.isfinite(thres) and thres > 0):
            raise ValueError(f"thres: expected a finite number > 0, got {thres!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) \
                or max_iter < 0:
            raise ValueError(f"max_iter: expected an integer >= 0, got {max_iter!r}")
        if method is None:
            method = ("no", "csr", "cython")
        (split, algorithm, implementation), target = parse_method_target(method, target)
        if algorithm != "csr" or (implementation == "cython" and split != "no"):
            raise ValueError(f"method: sigma_clip runs on the CSR matrix, with split 'no' for "
                             f"the NumPy ('cython') implementation, got {method!r}")
        unit, engine, args, norm, stacked, _ = self._ring_engine(
            data, npt, unit, radial_range, azimuth_range, mask, dummy, delta_dummy, dark, flat,
            polarization_factor, correct_solid_angle, absorption, normalization_factor,
            (split, algorithm, implementation), target)
        options = {"thres": thres, "max_iter": int(max_iter)}
        if isinstance(engine, opencl_backend.OpenCLIntegrationEngine):
            sums = engine.integrate(args, norm, max_iter=int(max_iter), thres=thres)
            return self._robust_sums_result(unit, engine, sums, stacked, "azimuthal",
                                            (split, "csr", "opencl"), options)
        if split != "no":
            raise ValueError(f"method: no OpenCL device, and the NumPy sigma_clip needs split "
                             f"'no', got {method!r}")
        if not isinstance(args.frames, np.ndarray):
            raise TypeError("data: a device array is clipped only by an OpenCL method")
        out = robust.sigma_clip(*robust.ring_pixels(engine, args, norm), engine.nbins, thres,
                                int(max_iter))
        return self._robust_result(unit, engine, out, stacked, "azimuthal",
                                   ("no", "sigma_clip", "numpy"), options)

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
        try:
            values = np.asarray(percentile, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"percentile: expected a number or a pair (lo, hi), got "
                             f"{percentile!r}") from None
        if values.shape == ():
            lo = hi = float(values)
        elif values.shape == (2,):
            lo, hi = (float(p) for p in values)
        else:
            raise ValueError(f"percentile: expected a number or a pair (lo, hi), got {percentile!r}")
        if not 0 <= lo <= hi <= 100:
            raise ValueError(f"percentile: expected 0 <= lo <= hi <= 100, got {percentile!r}")
        unit, engine, args, norm, stacked, _ = self._ring_engine(
            data, npt, unit, radial_range, azimuth_range, mask, dummy, delta_dummy, dark, flat,
            polarization_factor, correct_solid_angle, absorption, normalization_factor)
        out = robust.medfilt(*robust.ring_pixels(engine, args, norm), engine.nbins, lo, hi)
        return self._robust_result(unit, engine, out, stacked, None, ("no", "medfilt", "numpy"),
                                   {"percentile": [lo, hi]})

    # ------------------------------------------------------------ save / load
    def save_engine(self, path: str | os.PathLike) -> None:
        """Write the geometry and every cached CSR engine to a NeXus/HDF5 file (atomically).

        :meth:`load_engine` reads it back into an integrator whose first integration needs no
        matrix build and gives results identical to this one's.
        """
        files.write_engines(path, self._geometry, self._engines.items())

    @classmethod
    def load_engine(cls, path: str | os.PathLike, **kwargs: Any) -> "AzimuthalIntegrator":
        """An integrator with the geometry and engines saved by :meth:`save_engine`; the file
        is checked (a crafted or damaged one gives a ValueError naming the item)."""
        geometry, engines = files.read_engines(path)
        ai = cls(geometry, **kwargs)
        for key, engine in engines:
            ai._engines.put(key, engine)
        return ai
