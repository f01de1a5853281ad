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
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from xreduce.ext.csr_builder import MAX_CORNERS_PER_PIXEL

__all__ = ["Detector", "get_detector", "detector_names", "module_gap_mask",
           "hexagonal_pixel_corners"]

_ORIENTATIONS = (1, 2, 3, 4)
# Axis order of pixel corners: ours (slow, fast, normal), pyFAI's (z = normal, y = slow,
# x = fast) in its detector files' ``pixel_corners`` and in ``get_pixel_corners``.
_ZYX_FROM_OURS = [2, 0, 1]
_OURS_FROM_ZYX = [1, 2, 0]
_CORNERS_DOC = "(rows, cols, k corners, (z: normal, y: slow, x: fast)), pyFAI's order"
# Corners a pixel polygon may have (4: square pixels, 6: hexagonal ones): as many as the
# pixel-splitting kernel takes.
MAX_CORNERS = MAX_CORNERS_PER_PIXEL


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
    corners : array_like of shape (rows, cols, k, 3), optional
        Explicit pixel-corner positions for distorted, non-flat or non-square pixels, in metres
        from the detector origin: ``[..., 0]`` along axis 1 (slow), ``[..., 1]`` along axis 2
        (fast), ``[..., 2]`` along axis 3 (towards the sample is negative, i.e. a positive value
        moves the point away from the sample). ``k`` corners going round each pixel: 4 for
        square pixels, in the order (0,0), (1,0), (1,1), (0,1) in (slow, fast) offsets; 6 for
        hexagonal pixels (Pixirad); 3 to 8 are accepted. A pixel's centre is the mean of its
        corners (doc/detectors.md). When given, ``orientation`` is not applied to them.
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
            if corners.shape[:2] != shape or corners.ndim != 4 or corners.shape[3] != 3 \
                    or not 3 <= corners.shape[2] <= MAX_CORNERS:
                raise ValueError(f"corners: expected shape {shape + ('k', 3)} with 3 <= k <= "
                                 f"{MAX_CORNERS} corners per pixel, got {corners.shape}")
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

    @property
    def max_shape(self) -> tuple:
        """(rows, cols) of the physical pixels before binning (pyFAI's ``max_shape``)."""
        return self.shape[0] * self.binning[0], self.shape[1] * self.binning[1]

    # -- pyFAI ---------------------------------------------------------------------------------
    @classmethod
    def from_pyfai(cls, detector) -> "Detector":
        """The xreduce detector of a pyFAI detector: pixel sizes, shape, binning, orientation,
        mask (pyFAI's ``mask``; none = nothing masked) and, for non-flat or irregular
        detectors, the explicit pixel corners.

        Example
        -------
        >>> import pyFAI.detectors                                  # doctest: +SKIP
        >>> Detector.from_pyfai(pyFAI.detectors.Pilatus1M()).name   # doctest: +SKIP
        'Pilatus 1M'
        """
        for attribute in ("pixel1", "pixel2", "shape", "mask"):
            if not hasattr(detector, attribute):
                raise TypeError(f"detector: expected a pyFAI Detector, got "
                                f"{type(detector).__name__}")
        if detector.shape is None:
            raise ValueError(f"detector: the pyFAI detector {detector.name!r} has no shape")
        shape = tuple(int(n) for n in detector.shape)
        mask = detector.mask
        corners = None
        regular = getattr(detector, "uniform_pixel", True) and getattr(detector, "IS_FLAT", True)
        if not regular or getattr(detector, "_splinefile", None):
            zyx = detector.get_pixel_corners()           # (rows, cols, k, (z, y, x))
            corners = np.empty(zyx.shape, np.float64)     # one copy: curved ones are GBs
            for ours, theirs in enumerate(_OURS_FROM_ZYX):
                corners[..., ours] = zyx[..., theirs]
        orientation = int(getattr(detector, "orientation", 3) or 3)
        name = detector.name if detector.name not in ("Detector", "", None) else None
        if name is not None:
            model = _REGISTRY.get(_normalise(name))
            name = model.name if model is not None else name
        return cls(float(detector.pixel1), float(detector.pixel2), shape,
                   None if mask is None else np.asarray(mask), name,
                   tuple(int(b) for b in getattr(detector, "binning", (1, 1))), corners,
                   orientation)

    def to_pyfai(self):
        """This detector as a pyFAI detector: pixel sizes, shape (as ``max_shape`` with the
        binning), orientation and mask. A detector with explicit corners becomes pyFAI's
        detector of the same name when that one has the same corners (to pyFAI's float32
        precision); other detectors with explicit corners are refused.

        Example
        -------
        >>> get_detector("Pilatus 1M").to_pyfai().shape            # doctest: +SKIP
        (1043, 981)
        """
        import pyFAI.detectors as pyfai_detectors

        det = None
        cls = _pyfai_class(self.name) if self.name else None
        if cls is not None:                        # pyFAI's own class, when it is the same
            try:
                det = cls(orientation=self.orientation)
            except TypeError:
                det = cls() if self.orientation == 3 else None
            if det is not None and tuple(det.max_shape or ()) == self.max_shape:
                det.set_binning(self.binning)
            if det is None or (det.pixel1, det.pixel2, tuple(det.shape)) != \
                    (self.pixel1, self.pixel2, self.shape) or not _same_corners(self, det):
                det = None
        if self.corners is not None and det is None:
            raise ValueError("detector: a detector with explicit pixel corners has no pyFAI "
                             "equivalent here; write it with write_nexus instead")
        if det is None:
            unbinned = (self.pixel1 / self.binning[0], self.pixel2 / self.binning[1])
            det = pyfai_detectors.Detector(pixel1=unbinned[0], pixel2=unbinned[1],
                                           max_shape=self.max_shape,
                                           orientation=self.orientation)
            if self.binning != (1, 1):
                det.set_binning(self.binning)
        theirs = det.mask
        if theirs is None or not np.array_equal(np.asarray(theirs) != 0, self.mask != 0):
            det.mask = np.array(self.mask, dtype=np.int8)
        return det

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
            from .io.writers import atomic_output, nexus_entry

            with atomic_output(os.fspath(target)) as tmp, h5py.File(tmp, "w") as h5:
                entry = nexus_entry(h5, "mask")
                entry["start_time"] = _now_iso()
                instrument = entry.create_group("instrument")
                instrument.attrs["NX_class"] = "NXinstrument"
                self.write_nexus(instrument, name)
                # what a viewer opens: the mask, as an image (NXdata linked to the dataset)
                nxdata = entry.create_group("mask")
                nxdata.attrs["NX_class"] = "NXdata"
                nxdata.attrs["signal"] = "pixel_mask"
                nxdata["pixel_mask"] = h5py.SoftLink(f"/entry/instrument/{name}/pixel_mask")
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
        # pyFAI's names for the same facts, so that pyFAI's NexusDetector reads the file
        group["mask"] = group["pixel_mask"]                      # hard link, no copy
        group["pixel_size"] = np.array([self.pixel1, self.pixel2])
        group["pixel_size"].attrs["units"] = "m"
        group["shape"] = np.array(self.shape, dtype=np.int64)
        group["max_shape"] = np.array(self.max_shape, dtype=np.int64)
        group["binning"] = np.array(self.binning, dtype=np.int32)
        group["orientation"] = np.int32(self.orientation)
        group["max_value_invalid"] = np.int8(self.max_value_invalid)
        group["max_value_invalid"].attrs["doc"] = "1 = the largest value of an integer frame type marks an invalid pixel"
        if self.corners is not None:
            # pyFAI's dataset, in pyFAI's axis order (z, y, x) so that its NexusDetector reads
            # it (doc/detectors.md)
            group.create_dataset("pixel_corners", data=self.corners[..., _ZYX_FROM_OURS],
                                 compression="gzip")
            group["pixel_corners"].attrs["units"] = "m"
            group["pixel_corners"].attrs["interpretation"] = "vertex"
            group["pixel_corners"].attrs["doc"] = _CORNERS_DOC

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
            try:
                h5 = h5py.File(source, "r")
            except OSError as error:
                raise OSError(f"source: cannot open {os.fspath(source)!r} as HDF5 "
                              f"({error})") from None
            with h5:
                return cls.read_nexus(h5, path)
        if not isinstance(source, h5py.Group):
            raise TypeError(f"source: expected an h5py.Group or a file path, got {type(source).__name__}")
        filename = source.file.filename
        try:
            group = source[path] if path is not None else _find_nxdetector(source)
        except KeyError:
            raise KeyError(f"{filename}: path: no group {path!r}") from None
        if group is None or not isinstance(group, h5py.Group):
            raise ValueError(f"{filename}: no NXdetector group found in {source.name}")
        reader = _NexusReader(group, filename)
        return reader.detector(cls)


class _NexusReader:
    """Reads an NXdetector group defensively: every dataset's kind, shape and size checked
    (:func:`xreduce.limits.check_allocation`) before it is read; errors name file and key."""

    _UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6}

    def __init__(self, group, filename: str):
        self.group, self.filename = group, filename

    def where(self, key: str) -> str:
        return f"{self.filename}: {self.group.name}/{key}"

    def read(self, key: str, kinds: str, ndim: tuple, itemsize: int = 8):
        import h5py

        from .limits import check_allocation

        item = self.group.get(key)
        if not isinstance(item, h5py.Dataset):
            raise ValueError(f"{self.where(key)}: expected a dataset, got {type(item).__name__}")
        if item.dtype.kind not in kinds:
            raise TypeError(f"{self.where(key)}: expected a numeric dataset of kind {kinds!r}, "
                            f"got dtype {item.dtype}")
        shape = item.shape or ()
        if len(shape) not in ndim:
            raise ValueError(f"{self.where(key)}: expected {' or '.join(map(str, ndim))} "
                             f"dimensions, got shape {shape}")
        check_allocation(int(np.prod(shape, dtype=object)) * max(itemsize, item.dtype.itemsize),
                         self.where(key), f"dataset of shape {shape}")
        return np.asarray(item[()])

    def text(self, key: str) -> str:
        import h5py

        item = self.group.get(key)
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "SOU" \
                or item.size > 1:
            raise TypeError(f"{self.where(key)}: expected one string, got "
                            f"{getattr(item, 'dtype', type(item).__name__)} "
                            f"{getattr(item, 'shape', '')}")
        value = item[()]
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(-1)[0]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{self.where(key)}: not UTF-8 text") from None
        if not isinstance(value, str):
            raise TypeError(f"{self.where(key)}: expected a string, got {value!r}")
        return value

    def metres(self, key: str) -> np.ndarray:
        values = self.read(key, "fiu", (0, 1)).astype(np.float64).ravel()
        unit = self.group[key].attrs.get("units", self.group[key].attrs.get("unit", "m"))
        unit = unit.decode("utf-8", "replace") if isinstance(unit, bytes) else str(unit)
        if unit not in self._UNITS:
            raise ValueError(f"{self.where(key)}: unsupported units {unit!r} (expected one of "
                             f"{', '.join(self._UNITS)})")
        if values.size == 0:
            raise ValueError(f"{self.where(key)}: empty")
        return values * self._UNITS[unit]

    def integers(self, key: str, count: int) -> tuple:
        values = self.read(key, "iu", (0, 1)).ravel()
        if values.size != count:
            raise ValueError(f"{self.where(key)}: expected {count} integer(s), got "
                             f"{values.tolist()}")
        return tuple(int(v) for v in values)

    def detector(self, cls) -> "Detector":
        g = self.group
        if "y_pixel_size" in g and "x_pixel_size" in g:                 # NeXus
            pixel1, pixel2 = float(self.metres("y_pixel_size")[0]), float(self.metres("x_pixel_size")[0])
        elif "pixel_size" in g:                                          # pyFAI's detector files
            sizes = self.metres("pixel_size")
            if sizes.size < 2:
                raise ValueError(f"{self.where('pixel_size')}: expected 2 values, got {sizes.size}")
            pixel1, pixel2 = float(sizes[0]), float(sizes[1])
        else:
            raise ValueError(f"{self.filename}: NXdetector {g.name} has no "
                             f"x_pixel_size/y_pixel_size")
        mask_key = "pixel_mask" if "pixel_mask" in g else ("mask" if "mask" in g else None)
        mask = self.read(mask_key, "biuf", (2,), 1) if mask_key else None
        corners = self.read("pixel_corners", "f", (4,)) if "pixel_corners" in g else None
        if corners is not None and corners.shape[-1:] == (3,):
            doc = g["pixel_corners"].attrs.get("doc", "")
            doc = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else str(doc)
            if "(slow, fast, normal)" not in doc:     # pyFAI's (z, y, x); files of xreduce
                corners = corners[..., _OURS_FROM_ZYX]  # before 2026-12 are (slow, fast, z)
        if mask is not None:
            shape = mask.shape
        elif corners is not None:
            shape = corners.shape[:2]
        elif "shape" in g:
            shape = self.integers("shape", 2)
            from .limits import check_allocation

            if min(shape) <= 0:
                raise ValueError(f"{self.where('shape')}: expected positive sizes, got {shape}")
            check_allocation(shape[0] * shape[1], self.where("shape"),
                             f"mask of a {shape[0]} x {shape[1]} detector")
        else:
            raise ValueError(f"{self.filename}: NXdetector {g.name} has no pixel_mask, "
                             f"pixel_corners or shape")
        if "local_name" in g:
            name = self.text("local_name")
        else:                                   # pyFAI names the group after the detector
            model = _REGISTRY.get(_normalise(g.name.rsplit("/", 1)[-1]))
            name = model.name if model is not None else None
        binning = self.integers("binning", 2) if "binning" in g else (1, 1)
        orientation = self.integers("orientation", 1)[0] if "orientation" in g else 3
        max_value_invalid = (bool(self.integers("max_value_invalid", 1)[0])
                             if "max_value_invalid" in g else None)
        try:
            return cls(pixel1, pixel2, shape, mask, name, binning, corners, orientation,
                       max_value_invalid)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.filename}: NXdetector {g.name}: {error}") from None


def _same_corners(ours: Detector, theirs) -> bool:
    """True when the pyFAI detector ``theirs`` has the pixels of ``ours``: both regular, or the
    same explicit corners to pyFAI's float32 precision."""
    regular = getattr(theirs, "uniform_pixel", True) and getattr(theirs, "IS_FLAT", True)
    if ours.corners is None or regular:
        return ours.corners is None and regular
    zyx = np.asarray(theirs.get_pixel_corners())
    if zyx.shape != ours.corners.shape:
        return False
    return all(np.allclose(ours.corners[..., axis], zyx[..., their_axis], rtol=2e-7, atol=1e-12)
               for axis, their_axis in enumerate(_OURS_FROM_ZYX))


def _now_iso() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat()


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


def hexagonal_pixel_corners(shape, pitch_m: float) -> np.ndarray:
    """Corners of a detector of regular hexagonal pixels (Pixirad), for ``Detector(corners=)``.

    Pixels are hexagons with two sides along the fast axis, ``pitch_m`` apart along a row;
    rows are ``pitch_m * sqrt(3) / 2`` apart and odd rows are shifted by half a pitch along the
    fast axis (the Pixirad layout, as pyFAI defines it; doc/detectors.md). The first pixel's
    box starts at the origin.

    Parameters
    ----------
    shape : tuple of int
        (rows, cols).
    pitch_m : float
        Distance between neighbouring pixel centres, in metres.

    Returns
    -------
    numpy.ndarray
        Shape (rows, cols, 6, 3) float64: (slow, fast, 0) of the 6 corners going round each
        pixel, starting at its low-slow tip.

    Example
    -------
    >>> corners = hexagonal_pixel_corners((2, 3), 60e-6)
    >>> det = Detector(60e-6 * 3 ** 0.5 / 2, 60e-6, (2, 3), corners=corners, name="Pixirad")
    >>> det.corners.shape
    (2, 3, 6, 3)
    >>> round(float(corners[1, 0, :, 1].mean() - corners[0, 0, :, 1].mean()) / 60e-6, 9)
    0.5
    """
    rows, cols = _int_pair("shape", shape)
    if rows <= 0 or cols <= 0:
        raise ValueError(f"shape: expected two positive integers (rows, cols), got {shape!r}")
    if not (isinstance(pitch_m, (int, float, np.floating)) and np.isfinite(pitch_m)
            and pitch_m > 0):
        raise ValueError(f"pitch_m: expected a finite positive length in metres, got {pitch_m!r}")
    radius = pitch_m / np.sqrt(3.0)                   # centre to corner
    # Corner offsets from the centre (slow, fast), going round: tip, right side, tip, left side.
    d_slow = radius * np.array([-1.0, -0.5, 0.5, 1.0, 0.5, -0.5])
    d_fast = 0.5 * pitch_m * np.array([0.0, 1.0, 1.0, 0.0, -1.0, -1.0])
    row = np.arange(rows)[:, None]
    centre_slow = radius + row * (1.5 * radius) + np.zeros((1, cols))
    centre_fast = (np.arange(cols)[None, :] + 0.5 + 0.5 * (row % 2)) * pitch_m
    corners = np.zeros((rows, cols, 6, 3))
    corners[..., 0] = centre_slow[..., None] + d_slow
    corners[..., 1] = centre_fast[..., None] + d_fast
    return corners


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
    build_corners: Callable[[tuple], np.ndarray] | None = None   # pixels off a regular grid


def _modules(module, gap, mid=0):
    return lambda shape: module_gap_mask(shape, module, gap, mid)


def _edges_of_modules(module):
    """Mask of the first and last row and column of each ``module`` (Xpad's double pixels)."""
    def build(shape):
        rows = np.arange(shape[0]) % module[0]
        cols = np.arange(shape[1]) % module[1]
        edge_rows = (rows == 0) | (rows == module[0] - 1)
        edge_cols = (cols == 0) | (cols == module[1] - 1)
        return (edge_rows[:, None] | edge_cols[None, :]).astype(np.uint8)
    return build


def _xpad_flat_corners(module, pixel_m, border_relative, module_gap_m):
    """Corners of a flat Xpad (S540): along the fast axis the two pixels on either side of a
    module join are ``border_relative`` times wider; along the slow axis modules are
    ``module_gap_m`` apart (doc/detectors.md; pyFAI's Xpad_flat layout)."""
    def build(shape):
        rows, cols = shape
        widths = np.full(cols, pixel_m)
        joins = np.arange(module[1], cols, module[1])
        widths[joins - 1] = widths[joins] = border_relative * pixel_m
        edges2 = np.concatenate([[0.0], np.cumsum(widths)])
        low1 = np.arange(rows) * pixel_m + (np.arange(rows) // module[0]) * module_gap_m
        corners = np.zeros((rows, cols, 4, 3))
        for k, (d1, d2) in enumerate(((0, 0), (1, 0), (1, 1), (0, 1))):
            corners[..., k, 0] = (low1 + d1 * pixel_m)[:, None]
            corners[..., k, 1] = edges2[d2:cols + d2][None, :]
        return corners
    return build


def _models() -> list:
    # Module sizes and gaps (rows, cols) in pixels; CdTe sensors also lose the columns in the
    # middle of each module (doc/pyfai.md, "Detectors"; masks checked against pyFAI's).
    pilatus = _modules((195, 487), (17, 7))
    pilatus_cdte = _modules((195, 487), (17, 7), mid=3)
    pilatus4 = _modules((255, 513), (20, 7))
    pilatus4_cdte = _modules((255, 513), (20, 7), mid=1)
    eiger = _modules((514, 1030), (37, 10))
    eiger2 = _modules((512, 1028), (38, 12))
    eiger2_cdte = _modules((512, 1028), (38, 12), mid=2)
    jungfrau = _modules((514, 1030), (36, 8))
    lambda_ = _modules((256, 256), (4, 4))
    models = [
        _Model("Pilatus 100k", 172e-6, (195, 487), pilatus),
        _Model("Pilatus 200k", 172e-6, (407, 487), pilatus),
        _Model("Pilatus 300k", 172e-6, (619, 487), pilatus),
        _Model("Pilatus 300kw", 172e-6, (195, 1475), pilatus),
        _Model("Pilatus 900k", 172e-6, (619, 1475), pilatus),
        _Model("Pilatus 1M", 172e-6, (1043, 981), pilatus),
        _Model("Pilatus 2M", 172e-6, (1679, 1475), pilatus),
        _Model("Pilatus 6M", 172e-6, (2527, 2463), pilatus),
        _Model("Pilatus CdTe 300k", 172e-6, (619, 487), pilatus_cdte,
               ("Pilatus300k CdTe", "Pilatus 300k CdTe")),
        _Model("Pilatus CdTe 300kw", 172e-6, (195, 1475), pilatus_cdte,
               ("Pilatus300kw CdTe", "Pilatus 300kw CdTe")),
        _Model("Pilatus CdTe 900kw", 172e-6, (195, 4439), pilatus_cdte,
               ("Pilatus900kw CdTe", "Pilatus 900kw CdTe")),
        _Model("Pilatus CdTe 1M", 172e-6, (1043, 981), pilatus_cdte,
               ("Pilatus1M CdTe", "Pilatus 1M CdTe")),
        _Model("Pilatus CdTe 2M", 172e-6, (1679, 1475), pilatus_cdte,
               ("Pilatus2M CdTe", "Pilatus 2M CdTe")),
        _Model("Pilatus4 260k", 150e-6, (530, 513), pilatus4),
        _Model("Pilatus4 260kw", 150e-6, (255, 1033), pilatus4),
        _Model("Pilatus4 1M", 150e-6, (1080, 1033), pilatus4),
        _Model("Pilatus4 2M", 150e-6, (1630, 1553), pilatus4),
        _Model("Pilatus4 4M", 150e-6, (2180, 2073), pilatus4),
        _Model("Pilatus4 CdTe 260k", 150e-6, (530, 513), pilatus4_cdte, ("Pilatus4 260k CdTe",)),
        _Model("Pilatus4 CdTe 260kw", 150e-6, (255, 1033), pilatus4_cdte,
               ("Pilatus4 260kw CdTe",)),
        _Model("Pilatus4 CdTe 1M", 150e-6, (1080, 1033), pilatus4_cdte, ("Pilatus4 1M CdTe",)),
        _Model("Pilatus4 CdTe 2M", 150e-6, (1630, 1553), pilatus4_cdte, ("Pilatus4 2M CdTe",)),
        _Model("Pilatus4 CdTe 4M", 150e-6, (2180, 2073), pilatus4_cdte, ("Pilatus4 4M CdTe",)),
        _Model("Eiger 500k", 75e-6, (514, 1030), eiger),
        _Model("Eiger 1M", 75e-6, (1065, 1030), eiger),
        _Model("Eiger 4M", 75e-6, (2167, 2070), eiger),
        _Model("Eiger 9M", 75e-6, (3269, 3110), eiger),
        _Model("Eiger 16M", 75e-6, (4371, 4150), eiger),
        _Model("Eiger2 250k", 75e-6, (512, 512), eiger2),
        _Model("Eiger2 500k", 75e-6, (512, 1028), eiger2),
        _Model("Eiger2 1M", 75e-6, (1062, 1028), eiger2),
        _Model("Eiger2 1M-W", 75e-6, (512, 2068), eiger2, ("Eiger2 1MW",)),
        _Model("Eiger2 2M-W", 75e-6, (512, 4148), eiger2, ("Eiger2 2MW",)),
        _Model("Eiger2 4M", 75e-6, (2162, 2068), eiger2),
        _Model("Eiger2 9M", 75e-6, (3262, 3108), eiger2),
        _Model("Eiger2 16M", 75e-6, (4362, 4148), eiger2),
        _Model("Eiger2 CdTe 500k", 75e-6, (512, 1028), eiger2_cdte),
        _Model("Eiger2 CdTe 1M", 75e-6, (1062, 1028), eiger2_cdte),
        _Model("Eiger2 CdTe 1M-W", 75e-6, (512, 2068), eiger2_cdte, ("Eiger2 CdTe 1MW",)),
        _Model("Eiger2 CdTe 2M-W", 75e-6, (512, 4148), eiger2_cdte, ("Eiger2 CdTe 2MW",)),
        _Model("Eiger2 CdTe 4M", 75e-6, (2162, 2068), eiger2_cdte),
        _Model("Eiger2 CdTe 9M", 75e-6, (3262, 3108), eiger2_cdte),
        _Model("Eiger2 CdTe 16M", 75e-6, (4362, 4148), eiger2_cdte),
        _Model("Jungfrau 4M", 75e-6, (2164, 2068), jungfrau),
        _Model("Perkin Elmer", 200e-6, (2048, 2048), None, ("Perkin", "PerkinElmer",
                                                              "Perkin detector")),
        _Model("Pixium 4700", 154e-6, (1910, 2480), None, ("Pixium",), (2, 2)),
        _Model("FReLoN", 50e-6, (2048, 2048), None),
        _Model("Mar345", 100e-6, (3450, 3450), circular_mask, ("MAR 345", "Mar3450")),
        # Rayonix: 225 mm / 6144 and 340 mm / 7680 pixels, read 2x2 binned; the binned sizes
        # are rounded to 73.242 um and 88.5417 um as in pyFAI, so that PONI files agree.
        _Model("Rayonix MX225", 73.242e-6 / 2, (6144, 6144), None, ("MX225",), (2, 2)),
        _Model("Rayonix MX340HS", 88.5417e-6 / 2, (7680, 7680), None, ("MX340HS",), (2, 2)),
        _Model("Rayonix MX170", 44.2708e-6, (3840, 3840), None, ("MX170", "Rayonix MX170-HS")),
        _Model("Rayonix MX225HS", 78.125e-6 / 2, (5760, 5760), None, ("MX225HS",), (2, 2)),
        _Model("Rayonix MX300HS", 78.125e-6 / 2, (7680, 7680), None, ("MX300HS",), (2, 2)),
        _Model("Lambda 60k", 55e-6, (256, 256), lambda_),
        _Model("Lambda 250k", 55e-6, (516, 516), lambda_),
        _Model("Lambda 750k", 55e-6, (516, 1556), lambda_),
        _Model("Lambda 2M", 55e-6, (1556, 1556), lambda_),
        _Model("Maxipix", 55e-6, (256, 256), lambda_, ("Maxipix 1x1",)),
        _Model("Maxipix 2x2", 55e-6, (516, 516), lambda_),
        _Model("Maxipix 5x1", 55e-6, (256, 1296), lambda_),
        _Model("Xpad S540 flat", 130e-6, (960, 560), _edges_of_modules((120, 80)),
               ("Xpad flat", "D5"),
               build_corners=_xpad_flat_corners((120, 80), 130e-6, 2.5, 3.57e-3)),
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


def get_detector(name: str, binning: tuple | None = None, orientation: int = 3,
                 options: dict | None = None) -> Detector:
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
    options : dict, optional
        Constructor options as a PONI file's ``Detector_config`` gives them: pixel1, pixel2
        (m) for any detector whose pixels lie on a regular grid, and for a detector built from
        pyFAI's registry whatever its pyFAI class takes (e.g. ``{"radius": 0.3}`` for a curved
        one), as pyFAI's ``detector_factory`` passes them.

    Raises
    ------
    KeyError
        Unknown name; the message lists the closest known names.
    TypeError
        ``name`` is not a string.
    ValueError
        An option the detector's definition does not take.

    Example
    -------
    >>> get_detector("eiger2_cdte_4m").name
    'Eiger2 CdTe 4M'
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a detector name (str), got {type(name).__name__}")
    model = _REGISTRY.get(_normalise(name))
    if model is None:
        found = _from_pyfai_registry(name, binning, orientation, options or {})
        if found is not None:
            return found
        key = _normalise(name)
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.5)
        suggestions = sorted({_REGISTRY[c].name for c in close})
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        raise KeyError(f"name: unknown detector {name!r}{hint} (known: {', '.join(detector_names())})")
    return _with_pixel_sizes(_own_detector(model, binning, orientation), options or {})


def _own_detector(model, binning, orientation: int) -> Detector:
    """The detector of one of xreduce's own definitions."""
    b1, b2 = model.binning if binning is None else _int_pair("binning", binning)
    if model.build_corners is not None:
        if (b1, b2) != (1, 1):
            raise ValueError(f"binning: {model.name} has pixels off a regular grid (explicit "
                             f"corners) and cannot be binned, got {(b1, b2)}")
        return Detector(model.pixel_m, model.pixel_m, model.shape,
                        model.build_mask(model.shape), model.name, (1, 1),
                        model.build_corners(model.shape), orientation)
    if model.build_mask is None and b1 > 0 and b2 > 0:      # nothing to bin but the pixels
        shape = (model.shape[0] // b1, model.shape[1] // b2)
        return Detector(model.pixel_m * b1, model.pixel_m * b2, shape, None, model.name,
                        (b1, b2), None, orientation)
    full = Detector(model.pixel_m, model.pixel_m, model.shape, model.build_mask(model.shape),
                    model.name, (1, 1), None, orientation)
    return full if (b1, b2) == (1, 1) else full.binned(b1, b2)


def _with_pixel_sizes(detector: Detector, options: dict) -> Detector:
    """``detector`` with the pixel sizes of ``options`` (pixel1, pixel2 in m; the only options
    xreduce's own definitions take); pixels at explicit positions cannot change size."""
    refused = sorted(set(options) - {"pixel1", "pixel2"})
    if refused:
        raise ValueError(f"options: {detector.name} is defined by xreduce and takes only "
                         f"pixel1, pixel2, got {', '.join(refused)}")
    pixel1 = options.get("pixel1", detector.pixel1)
    pixel2 = options.get("pixel2", detector.pixel2)
    if (pixel1, pixel2) == (detector.pixel1, detector.pixel2):
        return detector
    if detector.corners is not None:
        raise ValueError(f"pixel1, pixel2: {detector.name} has pixels of {detector.pixel1:g} x "
                         f"{detector.pixel2:g} m at explicit positions, which other sizes "
                         f"cannot move; got {pixel1:g} x {pixel2:g} m")
    return Detector(pixel1, pixel2, detector.shape, detector.mask, detector.name,
                    detector.binning, None, detector.orientation, detector.max_value_invalid)


def _pyfai_class(name: str):
    """pyFAI's detector class for a name (ours or pyFAI's spelling), or None (also when
    pyFAI is not installed)."""
    try:
        import pyFAI.detectors as pyfai_detectors
    except ImportError:
        return None
    classes = {_normalise(k): cls for k, cls in pyfai_detectors.ALL_DETECTORS.items()}
    model = _REGISTRY.get(_normalise(name))
    for candidate in ((name,) + ((model.name,) + model.aliases if model else ())):
        key = _normalise(candidate)
        if key in classes and key != "detector":
            return classes[key]
        key = _normalise(re.sub(r"(?i)\s*cdte\s*", "", candidate) + "cdte")  # "Pilatus CdTe 1M"
        if "cdte" in candidate.lower() and key in classes:
            return classes[key]
    return None


def _from_pyfai_registry(name: str, binning, orientation: int,
                         options: dict) -> Detector | None:
    """A detector of pyFAI's registry that ours lacks, built from pyFAI's definition with
    its constructor ``options`` (None when pyFAI is not installed or does not know the name
    either). Options equal to the class's defaults are not passed."""
    cls = _pyfai_class(name)
    if cls is None:
        return None
    accepted = inspect.signature(cls.__init__).parameters
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    if "orientation" in accepted or any_keyword:
        options = {"orientation": orientation, **options}
    elif orientation != 3:            # a class without orientation: only the native one
        raise ValueError(f"orientation: pyFAI's {cls.__name__} has no orientation, "
                         f"got {orientation!r}")
    default = cls(**{k: v for k, v in options.items() if k == "orientation"})
    options = {k: v for k, v in options.items()
               if k == "orientation" or getattr(default, k, None) != v}
    refused = [] if any_keyword else sorted(set(options) - set(accepted))
    if refused:
        raise ValueError(f"options: pyFAI's {cls.__name__} takes no {', '.join(refused)}")
    det = cls(**options) if len(options) > ("orientation" in options) else default
    if binning is not None:
        det.set_binning(_int_pair("binning", binning))
    return Detector.from_pyfai(det)
