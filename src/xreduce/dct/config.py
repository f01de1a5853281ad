"""YAML configuration of the DCT pipeline: one file, one section per step.

A configuration file holds sections named after the steps (``preprocess:``, ``segment:``...).
Each section is described by a frozen dataclass registered with :func:`register_section`;
:func:`load_section` reads a file, YAML text or mapping and returns the validated dataclass,
with defaults filled in. Unknown keys, missing required keys and bad values raise ValueError
naming the key (``preprocess.moving_median.window``) and, for unknown keys, listing the valid
ones. :func:`dump_section` writes the complete section (defaults included) back as YAML, the
form stored as provenance in outputs.

Example
-------
>>> from xreduce.dct.config import load_section, dump_section
>>> cfg = load_section("preprocess: {input: 'scan.h5::/data', output: out.h5}", "preprocess")
>>> cfg.moving_median.window
31
>>> print(dump_section(cfg).splitlines()[0])
preprocess:
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping
from typing import Any, Optional, Union

import yaml

__all__ = [
    "ConfigError",
    "register_section",
    "load_config",
    "load_section",
    "section_from_mapping",
    "section_to_mapping",
    "dump_section",
    "check_choice",
    "check_int",
    "check_number",
    "MovingMedianConfig",
    "MedianFilterConfig",
    "PreprocessConfig",
]


class ConfigError(ValueError):
    """A configuration file or section is invalid (a ValueError)."""


_SECTIONS: dict[str, type] = {}


def register_section(name: str):
    """Class decorator: make a frozen dataclass the schema of section ``name``."""

    def decorate(cls):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"section {name!r}: expected a dataclass, got {cls!r}")
        _SECTIONS[name] = cls
        return cls

    return decorate


def subsection(cls, **kwargs):
    """A dataclass field holding a nested section (a mapping in YAML)."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls}, **kwargs)


# ---- value checks used by the sections' __post_init__ (they name the key) ----------------


def check_choice(where: str, value, choices) -> Any:
    if value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_int(where: str, value, minimum: int | None = None, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(where: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def check_str(where: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


# ---- generic loading ----------------------------------------------------------------------


#: Largest configuration file read (bytes): a configuration is a page of text.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of mappings and lists accepted in a configuration.
MAX_NESTING = 16


def _check_plain(data, where: str = "config") -> None:
    """Refuse recursive aliases (``&a [*a]``) and absurd nesting: the rest of the code walks
    the values and would recurse forever."""
    finished: set = set()

    def walk(value, depth: int, path: tuple) -> None:
        if not isinstance(value, (Mapping, list, tuple)) or id(value) in finished:
            return
        if id(value) in path:
            raise ConfigError(f"{where}: a YAML alias refers to itself (recursive value)")
        if depth > MAX_NESTING:
            raise ConfigError(f"{where}: values nested deeper than {MAX_NESTING} levels")
        children = value.values() if isinstance(value, Mapping) else value
        for child in children:
            walk(child, depth + 1, path + (id(value),))
        finished.add(id(value))

    walk(data, 0, ())


def _read_text(path: str) -> str:
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: a configuration file of {size} bytes? expected at most "
                          f"{MAX_CONFIG_BYTES} (is this the right file?)")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def load_config(source: Union[str, os.PathLike, Mapping]) -> dict:
    """Read a configuration: a YAML file path, YAML text, or an already-parsed mapping.

    Top-level keys must be registered section names. YAML is read with ``safe_load`` (no
    Python objects); recursive aliases, nesting deeper than :data:`MAX_NESTING` and files
    larger than :data:`MAX_CONFIG_BYTES` are refused.
    """
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        text = os.fspath(source)
        if "\n" not in text and (text.endswith((".yml", ".yaml")) or os.path.exists(text)):
            text = _read_text(text)
        try:  # the safe loader (no Python objects), in C where libyaml is there
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: not valid YAML ({' '.join(str(exc).split())})"
                              ) from None
        except RecursionError:
            raise ConfigError(f"config: values nested deeper than {MAX_NESTING} levels"
                              ) from None
        if data is None:
            data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: expected a mapping of sections, got {type(data).__name__}")
    _check_plain(data)
    unknown = sorted(map(str, set(data) - set(_SECTIONS)))
    if unknown:
        raise ConfigError(
            f"config: unknown section(s) {', '.join(unknown)}; valid sections are: "
            f"{', '.join(sorted(_SECTIONS))}"
        )
    return dict(data)


def section_from_mapping(cls, mapping: Optional[Mapping], where: str):
    """Build dataclass ``cls`` from a mapping, checking keys; values are checked by the
    dataclass's ``__post_init__``."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(mapping) - set(fields)))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: "
            f"{', '.join(sorted(fields))}"
        )
    missing = [
        name for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        and name not in mapping
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    kwargs = {}
    for name, value in mapping.items():
        sub = fields[name].metadata.get("section")
        kwargs[name] = section_from_mapping(sub, value, f"{where}.{name}") if sub else value
    return cls(**kwargs)


def load_section(source: Union[str, os.PathLike, Mapping], name: str):
    """Load and validate section ``name`` of a configuration (file, YAML text or mapping)."""
    if name not in _SECTIONS:
        raise ConfigError(f"section: unknown section {name!r}; known: {', '.join(sorted(_SECTIONS))}")
    is_file = (not isinstance(source, Mapping) and "\n" not in os.fspath(source)
               and os.path.isfile(os.fspath(source)))
    try:
        data = load_config(source)
        if name not in data:
            raise ConfigError(f"config: no {name!r} section")
        return section_from_mapping(_SECTIONS[name], data[name], name)
    except ConfigError as exc:
        if is_file and os.fspath(source) not in str(exc):   # name the file too
            raise ConfigError(f"{os.fspath(source)}: {exc}") from None
        raise


def section_to_mapping(section) -> dict:
    """The dataclass as plain nested dicts/lists (tuples become lists)."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(section)


def dump_section(section) -> str:
    """YAML text of a complete section (every key, defaults included), under its name."""
    names = [n for n, cls in _SECTIONS.items() if isinstance(section, cls)]
    if not names:
        raise TypeError(f"section: {type(section).__name__} is not a registered section")
    return yaml.safe_dump({names[0]: section_to_mapping(section)}, sort_keys=False)


# ---- the preprocess section ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MovingMedianConfig:
    """Background: per-pixel moving median along the rotation (frames).

    ``window: null`` turns background subtraction off.
    """

    window: Optional[int] = 31
    mode: str = "nearest"
    step: int = 1
    interpolation: str = "nearest"

    def __post_init__(self):
        w = "preprocess.moving_median"
        check_int(f"{w}.window", self.window, 1, allow_none=True)
        check_choice(f"{w}.mode", self.mode, ("nearest", "reflect", "mirror", "wrap", "shrink"))
        check_int(f"{w}.step", self.step, 1)
        check_choice(f"{w}.interpolation", self.interpolation, ("nearest", "linear"))


@dataclasses.dataclass(frozen=True)
class MedianFilterConfig:
    """Per-frame 2D median filter. ``size: null`` (or 1) turns it off."""

    size: Union[int, list, None] = 3
    mode: str = "reflect"

    def __post_init__(self):
        w = "preprocess.median_filter"
        size = self.size
        if isinstance(size, (list, tuple)):
            if len(size) != 2:
                raise ConfigError(f"{w}.size: expected an int or [rows, cols], got {size!r}")
            for s in size:
                check_int(f"{w}.size", s, 1)
            object.__setattr__(self, "size", [int(s) for s in size])
        else:
            check_int(f"{w}.size", size, 1, allow_none=True)
        check_choice(f"{w}.mode", self.mode, ("reflect", "nearest", "mirror", "wrap", "constant"))

    @property
    def active(self) -> bool:
        return self.size is not None and self.size not in (1, [1, 1])


@register_section("preprocess")
@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of ``xreduce-dct preprocess`` (see doc/dct.md for every key).

    Required: ``input`` (stack URL) and ``output`` (HDF5 file). Steps, in order: dark and
    ``offset`` subtraction, margin normalisation (``normalization: margin`` with
    ``margin_bbox: [[row0, col0], [row1, col1]]``, half-open), moving-median background
    subtraction, 2D median filter.
    """

    input: str
    output: str
    dark: Optional[str] = None
    dark_reduction: str = "mean"
    offset: float = 0.0
    normalization: str = "none"
    margin_bbox: Optional[list] = None
    moving_median: MovingMedianConfig = subsection(MovingMedianConfig)
    median_filter: MedianFilterConfig = subsection(MedianFilterConfig)
    save_background: bool = False
    chunk_frames: int = 100
    backend: str = "cython"
    num_threads: Optional[int] = None
    compression: Optional[str] = None
    overwrite: bool = False
    workers: Optional[int] = None
    scheduler: Optional[str] = None

    def __post_init__(self):
        check_str("preprocess.input", self.input)
        check_str("preprocess.output", self.output)
        check_str("preprocess.dark", self.dark, allow_none=True)
        check_choice("preprocess.dark_reduction", self.dark_reduction, ("mean", "median"))
        object.__setattr__(self, "offset", check_number("preprocess.offset", self.offset))
        check_choice("preprocess.normalization", self.normalization, ("none", "margin"))
        if self.normalization == "margin" or self.margin_bbox is not None:
            box = self.margin_bbox
            ok = (isinstance(box, (list, tuple)) and len(box) == 2
                  and all(isinstance(c, (list, tuple)) and len(c) == 2 for c in box))
            if not ok:
                raise ConfigError(
                    "preprocess.margin_bbox: expected [[row0, col0], [row1, col1]] "
                    f"(needed by normalization: margin), got {box!r}"
                )
            (r0, c0), (r1, c1) = box
            for v in (r0, c0, r1, c1):
                check_int("preprocess.margin_bbox", v, 0)
            if r1 <= r0 or c1 <= c0:
                raise ConfigError(f"preprocess.margin_bbox: empty box {box!r}")
            object.__setattr__(self, "margin_bbox", [[int(r0), int(c0)], [int(r1), int(c1)]])
        if not isinstance(self.save_background, bool):
            raise ConfigError(f"preprocess.save_background: expected true/false, got "
                              f"{self.save_background!r}")
        if not isinstance(self.overwrite, bool):
            raise ConfigError(f"preprocess.overwrite: expected true/false, got {self.overwrite!r}")
        check_int("preprocess.chunk_frames", self.chunk_frames, 1)
        check_choice("preprocess.backend", self.backend, ("cython", "opencl"))
        check_int("preprocess.num_threads", self.num_threads, 0, allow_none=True)
        check_choice("preprocess.compression", self.compression, (None, "gzip", "lzf"))
        check_int("preprocess.workers", self.workers, 0, allow_none=True)
        check_str("preprocess.scheduler", self.scheduler, allow_none=True)
        if self.workers is not None and self.scheduler is not None:
            raise ConfigError("preprocess.workers: give either workers (a local dask cluster) "
                              "or scheduler (an existing one), not both")
