"""The one preprocessing rule: which pixels are invalid, and the per-pixel normalisation.

Every back end (Cython CSR, histogram, OpenCL) and the NumPy reference apply the rule stated
in ``doc/integration.md`` ("What is masked"); this module holds its host side, written once:

- :func:`pixel_rule` turns ``dummy``/``delta_dummy`` and the detector's
  ``max_value_invalid`` into a :class:`PixelRule` whose bounds are values of the frame's own
  dtype, so that every kernel compares the dummy in that type (a float64 frame with
  ``dummy=0.1`` masks the same pixels on every back end);
- :func:`invalid_pixels` is the rule in NumPy (the reference the kernels are tested against,
  and the implementation of the NumPy robust statistics);
- :func:`make_normalisation` computes ``flat * solid angle * polarization * absorption *
  factor`` and flags the pixels where it is not finite and positive;
- :func:`digest` fingerprints the arrays engines and normalisations are looked up by; a
  read-only array is fingerprinted once and then recognised by identity (``flat.setflags(
  write=False)`` makes a call with an Eiger 16M flat cost what the kernel costs).

Example
-------
>>> import numpy as np
>>> rule = pixel_rule(np.dtype(np.uint16), dummy=0, delta_dummy=1.5, max_value_invalid=True)
>>> rule.bounds            # the integers within 1.5 of 0, in the frame's type
array([0, 1], dtype=uint16)
>>> invalid_pixels(np.array([[0, 1, 2, 65535]], np.uint16), rule)
array([[ True,  True, False,  True]])
"""
from __future__ import annotations

import math
import threading
import weakref
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

ERROR_MODES = {None: 0, "poisson": 1, "variance": 2, "azimuthal": 3}
"""Error model name -> kernel code."""

_EMPTY_F32 = np.zeros(0, dtype=np.float32)
_EMPTY_VAR = np.zeros((1, 0), dtype=np.float32)


@dataclass(frozen=True)
class PixelRule:
    """The invalid-value rule for frames of one dtype (see ``doc/integration.md``).

    ``bounds`` holds two values of ``dtype``: for float frames ``(dummy, delta_dummy)`` and a
    value ``v`` is the dummy when ``|v - dummy| <= delta_dummy`` computed in the frame's type;
    for integer frames ``(low, high)``, the integers within ``delta_dummy`` of ``dummy``, and
    ``v`` is the dummy when ``low <= v <= high``. ``has_dummy`` is False when no dummy was
    given or no value of the type can match it. ``max_invalid``: the dtype's largest value
    is invalid (integer frames of detectors whose ``max_value_invalid`` is set).
    """

    dtype: np.dtype
    max_invalid: bool
    has_dummy: bool
    bounds: np.ndarray
    dummy: float | None = None
    delta_dummy: float = 0.0

    def for_dtype(self, dtype: Any) -> "PixelRule":
        """The same rule for frames converted to ``dtype`` (e.g. float16 read as float32)."""
        if np.dtype(dtype) == self.dtype:
            return self
        return pixel_rule(dtype, self.dummy, self.delta_dummy, self.max_invalid)


def pixel_rule(dtype: Any, dummy: float | None, delta_dummy: float | None,
               max_value_invalid: bool) -> PixelRule:
    """The :class:`PixelRule` of frames of ``dtype``.

    Parameters
    ----------
    dtype : numpy dtype of the frames as the kernel reads them.
    dummy, delta_dummy : the value meaning "no data" and its tolerance (None: no dummy; 0).
    max_value_invalid : the detector's flag (True for Dectris detectors).

    >>> pixel_rule(np.dtype(np.float32), 0.1, None, False).bounds
    array([0.1, 0. ], dtype=float32)
    """
    dtype = np.dtype(dtype)
    delta = 0.0 if delta_dummy is None else float(delta_dummy)
    zero = np.zeros(2, dtype=dtype)
    if dummy is None:
        return PixelRule(dtype, bool(max_value_invalid), False, zero)
    dummy = float(dummy)
    if not math.isfinite(dummy):
        raise ValueError(f"dummy: expected a finite number, got {dummy!r}")
    if not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta_dummy: expected a finite number >= 0, got {delta_dummy!r}")
    given = (dummy, delta)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            bounds = np.array([dummy, delta], dtype=dtype)
        has = bool(np.isfinite(bounds).all())
        return PixelRule(dtype, bool(max_value_invalid), has, bounds if has else zero, *given)
    if dtype.kind not in "iu":
        raise TypeError(f"data: expected an integer or float dtype, got {dtype}")
    info = np.iinfo(dtype)
    low = max(math.ceil(Fraction(dummy) - Fraction(delta)), info.min)
    high = min(math.floor(Fraction(dummy) + Fraction(delta)), info.max)
    if low > high:  # no integer of the type matches: nothing to mask
        return PixelRule(dtype, bool(max_value_invalid), False, zero, *given)
    return PixelRule(dtype, bool(max_value_invalid), True, np.array([low, high], dtype=dtype),
                     *given)


def invalid_pixels(frames: np.ndarray, rule: PixelRule, dark: np.ndarray | None = None,
                   variance: np.ndarray | None = None) -> np.ndarray:
    """The rule in NumPy: True where a raw value (or its dark / variance) makes a pixel invalid.

    ``frames`` has ``rule.dtype``; ``dark`` and ``variance`` (float32, broadcast against the
    frames) mask the pixels where they are NaN or infinite. The same decisions, bit for bit,
    as the Cython (``raw_values.pxi``) and OpenCL (``pixel_is_valid``) kernels.
    """
    frames = np.asarray(frames)
    if frames.dtype != rule.dtype:
        raise TypeError(f"frames: expected dtype {rule.dtype} (the rule's), got {frames.dtype}")
    if frames.dtype.kind == "f":
        bad = ~np.isfinite(frames)
        if rule.has_dummy:
            with np.errstate(invalid="ignore", over="ignore"):
                d = frames - rule.bounds[0]  # in the frame's type
                bad |= (d >= -rule.bounds[1]) & (d <= rule.bounds[1])
    else:
        bad = frames < 0 if frames.dtype.kind == "i" else np.zeros(frames.shape, bool)
        if rule.max_invalid:
            bad |= frames == np.iinfo(frames.dtype).max
        if rule.has_dummy:
            bad |= (frames >= rule.bounds[0]) & (frames <= rule.bounds[1])
    if dark is not None:
        bad |= ~np.isfinite(dark)
    if variance is not None:
        bad |= ~np.isfinite(variance)
    return bad


@dataclass(frozen=True)
class Normalisation:
    """Per-pixel normalisation ``flat * solid angle * polarization * absorption * factor``.

    ``values`` is float64 of length npix; ``invalid`` (bool, or None when there are none)
    flags pixels whose normalisation is not finite and positive (they are masked); ``key``
    identifies the set of corrections.
    """

    key: tuple
    values: np.ndarray
    invalid: np.ndarray | None


def make_normalisation(key: tuple, geometry: Any, correct_solid_angle: bool,
                       polarization_factor: float | None, flat: np.ndarray | None,
                       absorption: np.ndarray | None, factor: float) -> Normalisation:
    """Compute the normalisation of a set of corrections (``flat``, ``absorption``: float64,
    flattened, NaN where a ``numpy.ma`` array was masked: such pixels are masked)."""
    npix = int(np.prod(geometry.detector.shape))
    values = np.full(npix, factor)
    if correct_solid_angle:
        values *= np.asarray(geometry.solid_angle_array(), dtype=np.float64).reshape(-1)
    if polarization_factor is not None:
        values *= np.asarray(geometry.polarization_array(polarization_factor),
                             dtype=np.float64).reshape(-1)
    if flat is not None:
        values *= flat
    if absorption is not None:
        values *= absorption
    invalid = ~(np.isfinite(values) & (values > 0))
    if invalid.any():
        values[invalid] = 1.0  # never used: those pixels are dropped
    else:
        invalid = None
    values.setflags(write=False)
    return Normalisation(key, values, invalid)


@dataclass(frozen=True)
class Sums:
    """Per-bin sums for a stack of frames, each (nframes, nbins) float64; ``finished``, when
    the engine made them in the same pass, the intensity, sigma and std (3, nframes, nbins)
    of ``xreduce.ext.csr_integrate.finish`` (None otherwise)."""

    signal: np.ndarray
    variance: np.ndarray
    norm: np.ndarray
    norm2: np.ndarray
    count: np.ndarray
    finished: np.ndarray | None = None


@dataclass(frozen=True)
class FrameArgs:
    """The validated per-call arrays of an integration (frames flattened to (n, npix)).

    ``rule`` is the invalid-value rule for the frames' dtype; ``dark`` (npix,) and
    ``variance`` (1 or n, npix) are float32.
    """

    frames: Any
    dark: np.ndarray | None
    variance: np.ndarray | None
    error_model: str | None
    rule: PixelRule

    def kernel_args(self) -> tuple:
        """The trailing arguments of the Cython kernels: dark, has_dark, variance, error mode,
        check_values, check_max, has_dummy, dummy_bounds."""
        dark = _EMPTY_F32 if self.dark is None else self.dark
        variance = _EMPTY_VAR if self.variance is None else self.variance
        return (dark, self.dark is not None, variance, ERROR_MODES[self.error_model], True,
                self.rule.max_invalid, self.rule.has_dummy, self.rule.bounds)


# ------------------------------------------------------------------------- fingerprints
_frozen_lock = threading.Lock()
_frozen: dict[int, tuple[Any, str]] = {}


def _is_frozen(array: np.ndarray) -> bool:
    """Whether nobody can change the array's content through numpy: it and every array it is
    a view of are read-only, down to memory numpy owns or an immutable ``bytes``."""
    while isinstance(array, np.ndarray):
        if array.flags.writeable:
            return False
        array = array.base
    return array is None or isinstance(array, bytes)


def _crc(array: np.ndarray) -> str:
    buf = np.ascontiguousarray(array)
    return f"{buf.dtype.str}{buf.shape}:{zlib.crc32(memoryview(buf).cast('B')):08x}"


def digest(array: Any) -> str | None:
    """Fingerprint of an array's content, dtype and shape (CRC-32), or None.

    CRC-32 costs about 1 ms per 1 MB (15 ms for an Eiger 16M uint8 mask, 70 ms for a float32
    flat), so a read-only array (see :func:`_is_frozen`) is fingerprinted once and recognised
    by identity afterwards; a writeable one is fingerprinted on every call, so that an array
    changed in place between calls is seen as a new one.

    >>> flat = np.ones((2, 3), np.float32)
    >>> flat.setflags(write=False)
    >>> digest(flat) == digest(flat.copy())
    True
    """
    if array is None:
        return None
    if not isinstance(array, np.ndarray) or not _is_frozen(array):
        return _crc(np.asarray(array))
    ident = id(array)
    with _frozen_lock:
        found = _frozen.get(ident)
    if found is not None and found[0]() is array:
        return found[1]
    value = _crc(array)

    def forget(_ref, ident=ident):
        with _frozen_lock:
            entry = _frozen.get(ident)
            if entry is not None and entry[0] is _ref:
                del _frozen[ident]

    with _frozen_lock:
        _frozen[ident] = (weakref.ref(array, forget), value)
    return value
