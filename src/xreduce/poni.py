"""PONI files: read versions 1, 2, 2.1 and 3 (as pyFAI writes them), write version 2.1.

A PONI file has one ``key: value`` per line; keys are case-insensitive and lines starting with
``#`` are comments. Version 1 gives the pixel sizes as ``PixelSize1``/``PixelSize2`` (and maybe a
``SplineFile``); version 2 a JSON ``Detector_config``; 2.1 adds the detector ``orientation`` to
it; 3 adds ``Parallax`` and a ``sensor`` entry in the detector configuration.

Keys this library does not interpret are kept in ``geometry.extra`` (and written back) and
reported with :func:`warnings.warn`; so are parallax correction, which xreduce does not apply,
and a spline file that cannot be found. A spline file that is found (as named, or next to the
PONI file) gives the detector its distorted pixel corners (:mod:`xreduce.spline`).

Example
-------
>>> import os, tempfile
>>> from xreduce.geometry import Geometry
>>> geo = Geometry(0.1, 0.08, 0.09, 0.01, 0.02, 0.0, 1e-10, "Pilatus 1M")
>>> path = os.path.join(tempfile.mkdtemp(), "demo.poni")
>>> write_poni(geo, path)
>>> read_poni(path) == geo
True
"""
from __future__ import annotations

import json
import math
import os
import warnings

from .detectors import Detector, get_detector

__all__ = ["read_poni", "write_poni", "parse_poni", "detector_from_config", "detector_config"]

_GEOMETRY_KEYS = {"distance": "dist", "poni1": "poni1", "poni2": "poni2", "rot1": "rot1",
                  "rot2": "rot2", "rot3": "rot3", "wavelength": "wavelength"}
_KNOWN = set(_GEOMETRY_KEYS) | {"poni_version", "detector", "detector_config", "pixelsize1",
                                "pixelsize2", "splinefile", "parallax"}
_VERSIONS = (1.0, 2.0, 2.1, 3.0)
_GENERIC_NAMES = {"detector", "none", ""}
_MAX_PONI_BYTES = 1 << 20      # a PONI file is a few hundred bytes; refuse to read a huge one


def parse_poni(text: str, source: str = "<string>") -> dict:
    """Split PONI text into ``{lower-case key: (line number, original key, value)}``.

    pyFAI's ``ai.write()`` appends to an existing file: a ``poni_version`` line after the
    first starts a new geometry whose keys replace the earlier ones, as pyFAI reads it (with
    a warning); within one geometry a key given twice is an error.

    Raises
    ------
    ValueError
        A line that is not ``key: value`` or a key given twice in one geometry (the message
        names the line).
    """
    entries: dict = {}
    block: set = set()
    blocks = 1
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{source}, line {number}: expected 'key: value', got {raw!r}")
        lower = key.lower()
        if lower == "poni_version" and lower in block:
            block, blocks = set(), blocks + 1
        if lower in block:
            raise ValueError(f"{source}, line {number}: key {key!r} already given on line "
                             f"{entries[lower][0]}")
        block.add(lower)
        entries[lower] = (number, key, value.strip())
    if blocks > 1:
        warnings.warn(f"{source}: {blocks} geometries appended one after the other (pyFAI's "
                      f"ai.write() appends); the keys of the last one are used, as pyFAI does",
                      stacklevel=2)
    return entries


def read_poni(path: str | os.PathLike, shape: tuple | None = None):
    """Read a PONI file into a :class:`~xreduce.geometry.Geometry`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.poni`` file.
    shape : tuple of int, optional
        Image shape (rows, cols) for files whose detector has none (a plain detector described
        only by its pixel sizes, e.g. version 1 files).

    Raises
    ------
    ValueError
        Malformed line or value (with its line number), missing key, unsupported version.
    """
    from .geometry import Geometry

    path = os.fspath(path)
    with open(path, "rb") as handle:
        raw = handle.read(_MAX_PONI_BYTES + 1)
    if len(raw) > _MAX_PONI_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_PONI_BYTES} bytes, not a PONI file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {error.start}); "
                         f"not a PONI file?") from None
    entries = parse_poni(text, path)

    def number(key, required=True):
        if key not in entries:
            if required:
                raise ValueError(f"{path}: missing key {key!r}")
            return None
        line, original, value = entries[key]
        if value.lower() == "none" and not required:
            return None
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"{path}, line {line}: {original}: expected a number, got {value!r}") from None
        if not math.isfinite(result):
            raise ValueError(f"{path}, line {line}: {original}: expected a finite number, "
                             f"got {value!r}")
        return result

    version = number("poni_version", required=False) or 1.0
    if version not in _VERSIONS:
        raise ValueError(f"{path}, line {entries['poni_version'][0]}: poni_version: expected one "
                         f"of 1, 2, 2.1, 3, got {entries['poni_version'][2]!r}")
    extra = {}
    config = {}
    if "detector_config" in entries:
        line, _, value = entries["detector_config"]
        try:
            config = json.loads(value) if value.lower() != "none" else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {line}: Detector_config: invalid JSON ({error.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}, line {line}: Detector_config: JSON nested too deeply") from None
        if not isinstance(config, dict):
            raise ValueError(f"{path}, line {line}: Detector_config: expected a JSON object")
        config = {k.lower(): v for k, v in config.items()}
    for key in ("pixelsize1", "pixelsize2"):
        if key in entries:
            config["pixel" + key[-1]] = number(key)
    spline = entries.get("splinefile", (0, "", "none"))[2]
    spline = config.pop("splinefile", None) or (None if spline.lower() == "none" else spline)
    if spline is not None and not isinstance(spline, str):
        raise TypeError(f"{path}: splineFile: expected a file name, got {spline!r}")
    spline_file = None
    if spline:
        extra["SplineFile"] = spline
        spline_file = _find_spline(spline, path)
        if spline_file is None:
            warnings.warn(f"{path}: spline file {spline!r} not found (looked in the current "
                          "folder and the PONI file's); kept but not applied", stacklevel=2)
    if "sensor" in config:
        extra["sensor"] = config.pop("sensor")
    if "parallax" in entries:
        parallax = entries["parallax"][2]
        extra["Parallax"] = parallax
        if parallax.lower() not in ("false", "0", "none"):
            warnings.warn(f"{path}: parallax correction requested but not applied by xreduce",
                          stacklevel=2)
    unknown = []
    for key, (line, original, value) in entries.items():
        if key not in _KNOWN:
            extra[original] = value
            unknown.append(f"{original} (line {line})")
    if unknown:
        warnings.warn(f"{path}: unknown PONI keys kept in geometry.extra: {', '.join(unknown)}",
                      stacklevel=2)
    name = entries.get("detector", (0, "", "Detector"))[2]
    if spline_file is not None:
        detector = _spline_detector(name, config, shape, spline_file)
    else:
        detector = _detector(name, config, shape, path, entries)
    params = {attr: number(key, required=key != "wavelength") for key, attr in _GEOMETRY_KEYS.items()}
    try:
        return Geometry(**params, detector=detector, extra=extra)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def _detector(name: str, config: dict, shape, path: str, entries: dict) -> Detector:
    where = f"{path}, line {entries['detector'][0]}" if "detector" in entries else path
    if "detector_config" in entries:
        where_config = f"{path}, line {entries['detector_config'][0]}: Detector_config"
    else:
        where_config = where
    return detector_from_config(name, config, shape, where_config, where)


_CONFIG_KEYS = {"pixel1", "pixel2", "max_shape", "binning", "orientation", "filename",
                "splinefile", "radius"}


def _config_size(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: {key}: expected a pixel size in metres (number), "
                        f"got {value!r}")
    if not (value > 0 and value < 1.0):
        raise ValueError(f"{where}: {key}: expected a pixel size in metres in (0, 1), "
                         f"got {value!r}")
    return float(value)


def _config_length(where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (math.isfinite(value) and 0 < value <= 100):
        raise ValueError(f"{where}: {key}: expected a length in metres in (0, 100], "
                         f"got {value!r}")
    return float(value)


def _config_pair(where: str, key: str, value) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{where}: {key}: expected a pair of integers, got {value!r}")
    if min(value) <= 0:
        raise ValueError(f"{where}: {key}: expected two positive integers, got {value!r}")
    return int(value[0]), int(value[1])


def _config_orientation(where: str, value) -> int:
    if value is None:
        return 3
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1, 2, 3, 4):
        raise ValueError(f"{where}: orientation: expected an integer 0-4 (0 = the "
                         f"detector's own, 3), got {value!r}")
    return value or 3


def _checked_shape(where: str, max_shape: tuple, binning: tuple) -> tuple:
    """(rows, cols) after binning, refused when its mask would not fit in memory."""
    from .limits import check_allocation

    rows, cols = max_shape[0] // binning[0], max_shape[1] // binning[1]
    if rows == 0 or cols == 0:
        raise ValueError(f"{where}: binning: {list(binning)} is larger than max_shape "
                         f"{list(max_shape)}")
    # the mask (uint8) and the float64 per-pixel arrays every integration builds
    check_allocation(max_shape[0] * max_shape[1] * 9, f"{where}: max_shape",
                     f"mask and per-pixel arrays of a {max_shape[0]} x {max_shape[1]} detector")
    return rows, cols


def detector_from_config(name: str, config: dict, shape=None, where: str = "config",
                         where_name: str | None = None) -> Detector:
    """The detector a PONI file's ``Detector`` name and ``Detector_config`` describe.

    Every value is type- and range-checked before anything is allocated (the shape with
    :func:`xreduce.limits.check_allocation`); errors name ``where`` (file, line) and the key.

    Parameters
    ----------
    name : str
        ``Detector`` entry: a registry name, "Detector" (plain) or "NexusDetector".
    config : dict
        ``Detector_config`` (keys case-insensitive): pixel1, pixel2 (m), max_shape,
        binning, orientation (0-4), filename (NexusDetector).
    shape : tuple, optional
        (rows, cols) for a plain detector whose config has no max_shape.
    where, where_name : str
        Where the config and the name come from, for messages (file and line).

    Example
    -------
    >>> detector_from_config("Pilatus 1M", {"orientation": 3}).shape
    (1043, 981)
    """
    where_name = where_name or where
    if not isinstance(name, str):
        raise TypeError(f"{where_name}: detector: expected a name (str), got {name!r}")
    if not isinstance(config, dict):
        raise TypeError(f"{where}: expected a JSON object, got {config!r}")
    config = {str(k).lower(): v for k, v in config.items()}
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        warnings.warn(f"{where}: keys not used by xreduce: {', '.join(unknown)}", stacklevel=3)
    orientation = _config_orientation(where, config.get("orientation"))
    binning = None
    if config.get("binning") is not None:
        binning = _config_pair(where, "binning", config["binning"])
    pixels = {key: _config_size(where, key, config[key]) for key in ("pixel1", "pixel2")
              if config.get(key) is not None}
    max_shape = None
    if config.get("max_shape") is not None:
        max_shape = _config_pair(where, "max_shape", config["max_shape"])
    if name.lower() in _GENERIC_NAMES or name == "NexusDetector":
        if name == "NexusDetector" or config.get("filename"):
            filename = config.get("filename")
            if not isinstance(filename, str) or not filename:
                raise ValueError(f"{where}: filename: NexusDetector needs the detector "
                                 f"file's name, got {filename!r}")
            try:
                return Detector.read_nexus(filename)
            except (OSError, KeyError, TypeError, ValueError) as error:
                raise type(error)(f"{where}: filename: {error}") from None
        if len(pixels) != 2:
            raise ValueError(f"{where_name}: the detector has no pixel sizes (pixel1, pixel2)")
        if max_shape is None and shape is not None:
            max_shape = _config_pair("shape", "shape", list(shape))
            max_shape = (max_shape[0] * (binning or (1, 1))[0],
                         max_shape[1] * (binning or (1, 1))[1])
        if max_shape is None:
            raise ValueError(f"{where_name}: the detector has no shape; pass shape=(rows, "
                             f"cols) or give max_shape")
        binning = binning or (1, 1)
        rows, cols = _checked_shape(where, max_shape, binning)
        if shape is not None and tuple(shape) != (rows, cols):
            raise ValueError(f"{where}: shape: the file gives {(rows, cols)}, got {tuple(shape)}")
        return Detector(pixels["pixel1"], pixels["pixel2"], (rows, cols),
                        binning=binning, orientation=orientation)
    # pixel sizes and a curved detector's radius go to the detector's constructor (a
    # pyFAI-defined detector's corners depend on them), as pyFAI's detector_factory does
    options = dict(pixels)
    if config.get("radius") is not None:
        options["radius"] = _config_length(where, "radius", config["radius"])
    try:
        detector = get_detector(name, binning=binning, orientation=orientation,
                                options=options)
    except KeyError as error:
        raise ValueError(f"{where_name}: {error.args[0]}") from None
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if max_shape is not None:
        full = (detector.shape[0] * detector.binning[0], detector.shape[1] * detector.binning[1])
        if max_shape != full:
            raise ValueError(f"{where}: max_shape: {name} has {list(full)} pixels, the file "
                             f"says {list(max_shape)}")
    return detector


def detector_config(detector: Detector) -> tuple[str, dict]:
    """The ``Detector`` name and ``Detector_config`` dict that describe ``detector`` in a PONI
    file (what :func:`detector_from_config` reads back).

    Example
    -------
    >>> from xreduce.detectors import get_detector
    >>> detector_config(get_detector("Eiger 1M"))[0]
    'Eiger 1M'
    """
    try:
        registered = detector.name is not None and \
            get_detector(detector.name).name == detector.name
    except KeyError:
        registered = False
    config = {"pixel1": detector.pixel1, "pixel2": detector.pixel2}
    if registered:
        name = detector.name
    else:
        config["max_shape"] = [detector.shape[0] * detector.binning[0],
                               detector.shape[1] * detector.binning[1]]
        name = "Detector"
    if detector.binning != (1, 1):
        config["binning"] = list(detector.binning)
    config["orientation"] = detector.orientation
    return name, config


def _find_spline(spline: str, poni_path: str) -> str | None:
    """The spline file named in a PONI file: as given, else next to the PONI file."""
    for candidate in (spline, os.path.join(os.path.dirname(os.fspath(poni_path)), spline)):
        if os.path.isfile(candidate):
            return candidate
    return None


def _spline_detector(name: str, config: dict, shape, spline_file: str) -> Detector:
    """The detector of a PONI file with a spline file: pixel sizes and corners from the spline,
    the shape from ``shape``, the configuration or the spline, the mask from the named
    detector when its shape matches."""
    from .spline import read_spline, spline_detector

    if tuple(config.get("binning") or (1, 1)) != (1, 1):
        raise ValueError(f"{spline_file}: a binned detector with a spline file is not supported")
    if int(config.get("orientation") or 3) != 3:
        raise ValueError(f"{spline_file}: a spline file with a detector orientation other "
                         "than 3 is not supported")
    spline = read_spline(spline_file)
    if shape is None and config.get("max_shape"):
        shape = tuple(int(n) for n in config["max_shape"])
    shape = spline.shape if shape is None else tuple(shape)
    mask, label = None, None
    if name.lower() not in _GENERIC_NAMES:
        try:
            named = get_detector(name)
        except KeyError:
            named = None
        if named is not None:
            label = named.name
            mask = named.mask if named.shape == shape else None
    return spline_detector(spline, shape, mask=mask, name=label)


def poni_text(geometry) -> str:
    """The version 2.1 PONI text of a geometry (what :func:`write_poni` writes)."""
    from . import __version__

    name, config = detector_config(geometry.detector)
    spline = next((v for k, v in geometry.extra.items() if k.lower() == "splinefile"), None)
    if spline:
        config["splineFile"] = spline
    lines = [
        "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis",
        f"# Written by xreduce {__version__}",
        "poni_version: 2.1",
        f"Detector: {name}",
        f"Detector_config: {json.dumps(config)}",
        f"Distance: {geometry.dist!r}",
        f"Poni1: {geometry.poni1!r}",
        f"Poni2: {geometry.poni2!r}",
        f"Rot1: {geometry.rot1!r}",
        f"Rot2: {geometry.rot2!r}",
        f"Rot3: {geometry.rot3!r}",
    ]
    if geometry.wavelength is not None:
        lines.append(f"Wavelength: {geometry.wavelength!r}")
    for key, value in geometry.extra.items():
        if key.lower() in ("sensor", "parallax"):
            continue             # version 3 entries: not part of a 2.1 file
        if key.lower() == "splinefile":
            continue             # written in Detector_config
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def write_poni(geometry, path: str | os.PathLike) -> None:
    """Write ``geometry`` as a version 2.1 PONI file, atomically (``atomic_output``).

    Example
    -------
    >>> import os, tempfile
    >>> from xreduce.geometry import Geometry
    >>> g = Geometry(0.1, 0, 0, 0, 0, 0, 1e-10, "Eiger 4M")
    >>> write_poni(g, os.path.join(tempfile.mkdtemp(), "g.poni"))
    """
    from .geometry import Geometry

    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry: expected a Geometry, got {type(geometry).__name__}")
    from .io.writers import atomic_output

    text = poni_text(geometry)
    with atomic_output(os.fspath(path)) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(text)
