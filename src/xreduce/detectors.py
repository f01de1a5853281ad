"""Detectors: pixel size, shape, mask of module gaps, and a registry of the detectors users name.

A :class:`Detector` is immutable. ``pixel1``/``shape[0]`` refer to the slow axis (image rows,
"y"), ``pixel2``/``shape[1]`` to the fast axis (columns, "x"); lengths are in metres. The mask
is ``uint8`` with 1 = masked (module gaps, inactive area).

Example
-------
>>> from xreduce.detectors import get_detector
>>> det = get_detector("Pilatus 1M")
>>> det.shape, det.pixel1, int(det.mask.sum())
((1043, 981), 0.000172, 73533)
>>> det.binned(2, 2).shape
(521, 490)
"""
from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Detector", "get_detector", "detector_names", "module_gap_mask"]

_ORIENTATIONS = (1, 2, 3, 4)


# Dectris detectors mark dead and overflowing pixels with the largest value of the frame type.
_DECTRIS_NAME = re.compile(r"\s*(pilatus|eiger|mythen)", re.IGNORECASE)


def _as_readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Detector:
    """A pixel detector (immutable).

    Parameters
    ----------
    pixel1, pixel2 : float
        Pixel size along the slow (rows) and fast (columns) axis, in metres (after binning).
    shape : tuple of int
        (rows, cols) of the images this detector gives (after binning).
    mask : array_like of shape ``shape``, optional
        Non-zero = masked. Stored as a read-only ``uint8`` array, 1 = masked. None = no mask.
    name : str, optional
        Name, e.g. ``"Pilatus 1M"``.
    binning : tuple of int
        Binning already applied to the pixels (informative; see :meth:`binned`).
    corners : array_like of shape (rows, cols, 4, 3), optional
        Explicit pixel-corner positions for distorted or non-flat detectors, in metres from the
        detector origin: ``[..., 0]`` along axis 1 (slow), ``[..., 1]`` along axis 2 (fast),
        ``[..., 2]`` along axis 3 (towards the sample is negative, i.e. a positive value moves
        the point away from the sample). Corner order: (0,0), (1,0), (1,1), (0,1) in (slow, fast)
        offsets. When given, ``orientation`` is not applied to them.
    orientation : int
        EXIF orientation 1-4 of the image (3 = native, origin at the bottom-left seen from the
        sample). 1 flips both axes, 2 flips the slow axis, 4 flips the fast axis.
    max_value_invalid : bool, optional
        True when the largest value of an integer frame type marks an invalid pixel (the Dectris
        convention: 2**32-1 in uint32 for dead or overflowing pixels). None (default) derives it
        from the name: True for the Dectris families (Pilatus, Eiger, Mythen), False otherwise,
        so that a saturated 255 of an 8-bit camera stays a valid count (doc/integration.md).

    Example
    -------
    >>> det = Detector(172e-6, 172e-6, (64, 48))
    >>> int(det.mask.sum())
    0
    """

    pixel1: float
    pixel2: float
    shape: tuple
    mask: np.ndarray | None = None
    name: str | None = None
    binning: tuple = (1, 1)
    corners: np.ndarray | None = None
    orientation: int = 3
    max_value_invalid: bool | None = None

    def __post_init__(self):
        for label in ("pixel1", "pixel2"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{label}: expected a pixel size in metres (float), got {type(value).__name__}")
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{label}: expected a finite positive pixel size in metres, got {value!r}")
            object.__setattr__(self, label, float(value))
        shape = _int_pair("shape", self.shape)
        if min(shape) <= 0:
            raise ValueError(f"shape: expected two positive integers (rows, cols), got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        binning = _int_pair("binning", self.binning)
        if min(binning) <= 0:
            raise ValueError(f"binning: expected two positive integers, got {self.binning!r}")
        object.__setattr__(self, "binning", binning)
        if self.orientation not in _ORIENTATIONS or isinstance(self.orientation, bool):
            raise ValueError(f"orientation: expected one of 1, 2, 3, 4, got {self.orientation!r}")
        object.__setattr__(self, "orientation", int(self.orientation))
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name: expected a str or None, got {type(self.name).__name__}")
        if self.max_value_invalid is None:
            derived = bool(self.name and _DECTRIS_NAME.match(self.name))
            object.__setattr__(self, "max_value_invalid", derived)
        elif not isinstance(self.max_value_invalid, (bool, np.bool_)):
            raise TypeError(f"max_value_invalid: expected True, False or None, got "
                            f"{self.max_value_invalid!r}")
        object.__setattr__(self, "max_value_invalid", bool(self.max_value_invalid))
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.shape != shape:
                raise ValueError(f"mask: expected shape {shape}, got {mask.shape}")
            object.__setattr__(self, "mask", _as_readonly((mask != 0).astype(np.uint8)))
        else:
            object.__setattr__(self, "mask", _as_readonly(np.zeros(shape, np.uint8)))
        if self.corners is not None:
            corners = np.asarray(self.corners, dtype=np.float64)
            if corners.shape != shape + (4, 3):
                raise ValueError(f"corners: expected shape {shape + (4, 3)}, got {corners.shape}")
            if not np.isfinite(corners).all():
                raise ValueError("corners: expected finite positions, got NaN or infinity")
            object.__setattr__(self, "corners", _as_readonly(np.ascontiguousarray(corners)))

    # -- comparison and pickling ------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, Detector):
            return NotImplemented
        return (
            (self.pixel1, self.pixel2, self.shape, self.name, self.binning, self.orientation,
             self.max_value_invalid)
            == (other.pixel1, other.pixel2, other.shape, other.name, other.binning, other.orientation,
                other.max_value_invalid)
            and np.array_equal(self.mask, other.mask)
            and (self.corners is None) == (other.corners is None)
            and (self.corners is None or np.array_equal(self.corners, other.corners))
        )

    def __hash__(self) -> int:
        return hash((self.pixel1, self.pixel2, self.shape, self.name, self.binning, self.orientation))

    def __repr__(self) -> str:
        return (
            f"Detector(name={self.name!r}, shape={self.shape}, pixel1={self.pixel1:g}, "
            f"pixel2={self.pixel2:g}, binning={self.binning}, orientation={self.orientation}, "
            f"masked={int(self.mask.sum())}{', corners' if self.corners is not None else ''})"
        )

    def __setstate__(self, state):
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                value = _as_readonly(value.copy())
            object.__setattr__(self, key, value)

    # -- derived detectors ------------------------------------------------------------------
    @property
    def is_flat(self) -> bool:
        """True when pixel positions follow from pixel1/pixel2 (no explicit corners)."""
        return self.corners is None

    def binned(self, bin1: int, bin2: int | None = None) -> "Detector":
        """Return this detector with ``bin1 x bin2`` pixels merged (pixel sizes multiplied).

        The shape becomes ``shape // (bin1, bin2)`` (incomplete edge pixels are dropped), a binned
        pixel is masked when any of its pixels is. Not available with explicit corners.

        Example
        -------
        >>> Detector(1e-4, 1e-4, (10, 9)).binned(2).shape
        (5, 4)
        """
        bin2 = bin1 if bin2 is None else bin2
        b1, b2 = _int_pair("binning", (bin1, bin2))
        if b1 <= 0 or b2 <= 0:
            raise ValueError(f"binning: expected positive integers, got {(bin1, bin2)!r}")
        if self.corners is not None:
            raise ValueError("binning: a detector with explicit pixel corners cannot be binned")
        rows, cols = self.shape[0] // b1, self.shape[1] // b2
        if rows == 0 or cols == 0:
            raise ValueError(f"binning: {(b1, b2)} is larger than the shape {self.shape}")
        mask = self.mask[: rows * b1, : cols * b2].reshape(rows, b1, cols, b2).max(axis=(1, 3))
        return Detector(
            self.pixel1 * b1, self.pixel2 * b2, (rows, cols), mask, self.name,
            (self.binning[0] * b1, self.binning[1] * b2), None, self.orientation,
            self.max_value_invalid,
        )

    def with_mask(self, mask) -> "Detector":
        """Return a copy with another mask (array of shape ``shape``, non-zero = masked)."""
        return Detector(self.pixel1, self.pixel2, self.shape, mask, self.name, self.binning,
                        self.corners, self.orientation, self.max_value_invalid)

    # -- NeXus ---------------------------------------------------------------------------------
    def write_nexus(self, target, name: str = "detector") -> None:
        """Write this detector as a NeXus ``NXdetector`` group.

        Parameters
        ----------
        target : h5py.Group or str or os.PathLike
            An open HDF5 group (the ``NXdetector`` group ``name`` is created in it), or the path
            of a new HDF5 file, written to a temporary name and renamed when complete, holding
            ``/entry/instrument/<name>``.
        name : str
            Name of the NXdetector group.

        Example
        -------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "det.h5")
        >>> get_detector("Eiger 1M").write_nexus(path)
        >>> Detector.read_nexus(path).name
        'Eiger 1M'
        """
        import h5py

        if isinstance(target, (str, os.PathLike)):
            path = os.fspath(target)
            folder = os.path.dirname(os.path.abspath(path))
            handle, tmp = tempfile.mkstemp(suffix=".h5.part", dir=folder)
            os.close(handle)
            try:
                with h5py.File(tmp, "w") as h5:
                    h5.attrs["default"] = "entry"
                    entry = h5.create_group("entry")
                    entry.attrs["NX_class"] = "NXentry"
                    instrument = entry.create_group("instrument")
                    instrument.attrs["NX_class"] = "NXinstrument"
                    self.write_nexus(instrument, name)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            return
        if not isinstance(target, h5py.Group):
            raise TypeError(f"target: expected an h5py.Group or a file path, got {type(target).__name__}")
        group = target.create_group(name)
        group.attrs["NX_class"] = "NXdetector"
        if self.name:
            group["local_name"] = self.name
        for label, value in (("y_pixel_size", self.pixel1), ("x_pixel_size", self.pixel2)):
            group[label] = value
            group[label].attrs["units"] = "m"
        group.create_dataset("pixel_mask", data=self.mask, compression="gzip", shuffle=True)
        group["pixel_mask"].attrs["doc"] = "1 = masked (module gap or invalid pixel)"
        group["binning"] = np.array(self.binning, dtype=np.int32)
        group["orientation"] = np.int32(self.orientation)
        group["max_value_invalid"] = np.int8(self.max_value_invalid)
        group["max_value_invalid"].attrs["doc"] = "1 = the largest value of an integer frame type marks an invalid pixel"
        if self.corners is not None:
            group.create_dataset("pixel_corners", data=self.corners, compression="gzip")
            group["pixel_corners"].attrs["units"] = "m"
            group["pixel_corners"].attrs["doc"] = "(rows, cols, 4 corners, (slow, fast, normal))"

    @classmethod
    def read_nexus(cls, source, path: str | None = None) -> "Detector":
        """Read a detector written by :meth:`write_nexus` (or any NXdetector with pixel sizes).

        Parameters
        ----------
        source : h5py.Group or str or os.PathLike
            The NXdetector group itself, or an HDF5 file / group that contains one.
        path : str, optional
            Path of the NXdetector group inside ``source``; by default the first NXdetector found.
        """
        import h5py

        if isinstance(source, (str, os.PathLike)):
            with h5py.File(source, "r") as h5:
                return cls.read_nexus(h5, path)
        if not isinstance(source, h5py.Group):
            raise TypeError(f"source: expected an h5py.Group or a file path, got {type(source).__name__}")
        group = source[path] if path is not None else _find_nxdetector(source)
        if group is None:
            raise ValueError(f"source: no NXdetector group found in {source.file.filename}:{source.name}")

        def _metres(label):
            values = np.asarray(group[label][()], dtype=np.float64).ravel()
            unit = group[label].attrs.get("units", group[label].attrs.get("unit", "m"))
            unit = unit.decode() if isinstance(unit, bytes) else str(unit)
            factors = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6}
            if unit not in factors:
                raise ValueError(f"source: {group.name}/{label} has unsupported units {unit!r}")
            return values * factors[unit]

        if "y_pixel_size" in group and "x_pixel_size" in group:        # NeXus
            pixel1, pixel2 = float(_metres("y_pixel_size")[0]), float(_metres("x_pixel_size")[0])
        elif "pixel_size" in group:                                     # pyFAI's detector files
            pixel1, pixel2 = (float(v) for v in _metres("pixel_size")[:2])
        else:
            raise ValueError(f"source: NXdetector {group.name} has no x_pixel_size/y_pixel_size")
        mask_label = "pixel_mask" if "pixel_mask" in group else "mask"
        mask = np.asarray(group[mask_label][()]) if mask_label in group else None
        corners = np.asarray(group["pixel_corners"][()]) if "pixel_corners" in group else None
        if mask is not None:
            shape = mask.shape
        elif corners is not None:
            shape = corners.shape[:2]
        elif "shape" in group:
            shape = tuple(int(n) for n in group["shape"][()])
        else:
            raise ValueError(f"source: NXdetector {group.name} has no pixel_mask, pixel_corners or shape")
        name = None
        if "local_name" in group:
            name = group["local_name"][()]
            name = name.decode() if isinstance(name, bytes) else str(name)
        else:                                   # pyFAI names the group after the detector
            model = _REGISTRY.get(_normalise(group.name.rsplit("/", 1)[-1]))
            name = model.name if model is not None else None
        binning = tuple(int(b) for b in group["binning"][()]) if "binning" in group else (1, 1)
        orientation = int(group["orientation"][()]) if "orientation" in group else 3
        max_value_invalid = (bool(group["max_value_invalid"][()]) if "max_value_invalid" in group
                             else None)
        return cls(pixel1, pixel2, shape, mask, name, binning, corners, orientation,
                   max_value_invalid)


def _find_nxdetector(group):
    import h5py

    found = []

    def visit(_, obj):
        if isinstance(obj, h5py.Group):
            nx_class = obj.attrs.get("NX_class", "")
            nx_class = nx_class.decode() if isinstance(nx_class, bytes) else nx_class
            if nx_class == "NXdetector":
                found.append(obj)
                return True
        return None

    if group.attrs.get("NX_class", "") in ("NXdetector", b"NXdetector"):
        return group
    group.visititems(visit)
    return found[0] if found else None


def _int_pair(label: str, value) -> tuple:
    try:
        pair = tuple(value)
    except TypeError:
        raise TypeError(f"{label}: expected a pair of integers, got {value!r}") from None
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{label}: expected a pair of integers, got {value!r}")
    return int(pair[0]), int(pair[1])


# =====================================================================================
# Masks
# =====================================================================================

def module_gap_mask(shape, module, gap, mid_module_columns: int = 0) -> np.ndarray:
    """Mask (uint8, 1 = masked) of the gaps of a detector tiled with identical modules.

    Modules of ``module`` = (rows, cols) pixels are placed every ``module + gap`` pixels from the
    origin; every pixel outside a module is masked. ``mid_module_columns`` > 0 also masks that
    many columns centred in each module (the CdTe sensors of Eiger2 have a 2-pixel column there).

    Example
    -------
    >>> int(module_gap_mask((1043, 981), (195, 487), (17, 7)).sum())
    73533
    """
    rows = np.arange(shape[0]) % (module[0] + gap[0]) < module[0]
    cols_in_module = np.arange(shape[1]) % (module[1] + gap[1])
    cols = cols_in_module < module[1]
    if mid_module_columns:
        first = module[1] // 2 - mid_module_columns // 2
        cols &= ~((cols_in_module >= first) & (cols_in_module < first + mid_module_columns))
    return (~(rows[:, None] & cols[None, :])).astype(np.uint8)


def circular_mask(shape) -> np.ndarray:
    """Mask (uint8, 1 = masked) of the pixels whose centre lies outside the inscribed circle.

    The circle is centred at ``(rows // 2, cols // 2)`` with radius ``rows // 2`` (Mar345).
    """
    c1, c2 = shape[0] // 2, shape[1] // 2
    i = np.arange(shape[0])[:, None] + 0.5 - c1
    j = np.arange(shape[1])[None, :] + 0.5 - c2
    return (i * i + j * j > c1 * c1).astype(np.uint8)


# =====================================================================================
# Registry
# =====================================================================================

@dataclass(frozen=True)
class _Model:
    name: str
    pixel_m: float
    shape: tuple
    build_mask: Callable[[tuple], np.ndarray] | None = None
    aliases: tuple = field(default=())
    binning: tuple = (1, 1)          # default binning: ``pixel_m`` and ``shape`` are unbinned


def _modules(module, gap, mid=0):
    return lambda shape: module_gap_mask(shape, module, gap, mid)


def _models() -> list:
    pilatus = _modules((195, 487), (17, 7))
    pilatus4 = _modules((255, 513), (20, 7))
    eiger = _modules((514, 1030), (37, 10))
    eiger2 = _modules((512, 1028), (38, 12))
    eiger2_cdte = _modules((512, 1028), (38, 12), mid=2)
    jungfrau = _modules((514, 1030), (36, 8))
    lambda_ = _modules((256, 256), (4, 4))
    models = [
        _Model("Pilatus 1M", 172e-6, (1043, 981), pilatus),
        _Model("Pilatus 2M", 172e-6, (1679, 1475), pilatus),
        _Model("Pilatus 6M", 172e-6, (2527, 2463), pilatus),
        _Model("Pilatus4 4M", 150e-6, (2180, 2073), pilatus4),
        _Model("Eiger 1M", 75e-6, (1065, 1030), eiger),
        _Model("Eiger 4M", 75e-6, (2167, 2070), eiger),
        _Model("Eiger 9M", 75e-6, (3269, 3110), eiger),
        _Model("Eiger 16M", 75e-6, (4371, 4150), eiger),
        _Model("Eiger2 4M", 75e-6, (2162, 2068), eiger2),
        _Model("Eiger2 9M", 75e-6, (3262, 3108), eiger2),
        _Model("Eiger2 16M", 75e-6, (4362, 4148), eiger2),
        _Model("Eiger2 CdTe 4M", 75e-6, (2162, 2068), eiger2_cdte),
        _Model("Eiger2 CdTe 9M", 75e-6, (3262, 3108), eiger2_cdte),
        _Model("Eiger2 CdTe 16M", 75e-6, (4362, 4148), eiger2_cdte),
        _Model("Jungfrau 4M", 75e-6, (2164, 2068), jungfrau),
        _Model("Perkin Elmer", 200e-6, (2048, 2048), None, ("Perkin", "PerkinElmer")),
        _Model("FReLoN", 50e-6, (2048, 2048), None),
        _Model("Mar345", 100e-6, (3450, 3450), circular_mask, ("MAR 345", "Mar3450")),
        # Rayonix: 225 mm / 6144 and 340 mm / 7680 pixels, read 2x2 binned; the binned sizes
        # are rounded to 73.242 um and 88.5417 um as in pyFAI, so that PONI files agree.
        _Model("Rayonix MX225", 73.242e-6 / 2, (6144, 6144), None, ("MX225",), (2, 2)),
        _Model("Rayonix MX340HS", 88.5417e-6 / 2, (7680, 7680), None, ("MX340HS",), (2, 2)),
        _Model("Lambda 2M", 55e-6, (1556, 1556), lambda_),
    ]
    return models


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name).lower()


_REGISTRY = {}
for _model in _models():
    for _alias in (_model.name,) + _model.aliases:
        _REGISTRY[_normalise(_alias)] = _model


def detector_names() -> list:
    """Names of the detectors in the registry (canonical spelling).

    Example
    -------
    >>> "Eiger 4M" in detector_names()
    True
    """
    return sorted({model.name for model in _REGISTRY.values()})


def get_detector(name: str, binning: tuple | None = None, orientation: int = 3) -> Detector:
    """Return the named detector with its module-gap mask.

    Parameters
    ----------
    name : str
        Detector name; case, spaces, ``_``, ``-`` and ``.`` are ignored ("Pilatus 1M",
        "pilatus1m", "Eiger2_CdTe_4M").
    binning : tuple of int, optional
        Binning to apply to the physical pixels; default: the detector's usual read-out binning
        (2x2 for the Rayonix MX225 / MX340HS, 1x1 for the others).
    orientation : int
        EXIF orientation 1-4 (3 = native).

    Raises
    ------
    KeyError
        Unknown name; the message lists the closest known names.
    TypeError
        ``name`` is not a string.

    Example
    -------
    >>> get_detector("eiger2_cdte_4m").name
    'Eiger2 CdTe 4M'
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a detector name (str), got {type(name).__name__}")
    model = _REGISTRY.get(_normalise(name))
    if model is None:
        key = _normalise(name)
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        suggestions = sorted({_REGISTRY[c].name for c in close})
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        raise KeyError(f"name: unknown detector {name!r}{hint} (known: {', '.join(detector_names())})")
    b1, b2 = model.binning if binning is None else _int_pair("binning", binning)
    if model.build_mask is None and b1 > 0 and b2 > 0:      # nothing to bin but the pixels
        shape = (model.shape[0] // b1, model.shape[1] // b2)
        return Detector(model.pixel_m * b1, model.pixel_m * b2, shape, None, model.name,
                        (b1, b2), None, orientation)
    full = Detector(model.pixel_m, model.pixel_m, model.shape, model.build_mask(model.shape),
                    model.name, (1, 1), None, orientation)
    return full if (b1, b2) == (1, 1) else full.binned(b1, b2)
