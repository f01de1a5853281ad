"""MIDAS NF-HEDM parameter files: read, validate, write (text and YAML).

A MIDAS parameter file is plain text, one ``Key value [value ...]`` per line, whitespace
separated, ``#`` starting a comment. Some keys repeat (``Lsd``, ``BC`` once per detector distance,
``OmegaRange`` and ``BoxSize`` once per omega window, ``RingsToUse`` once per ring); their order
is kept. :func:`read_parameters` turns such a file into a validated, typed
:class:`NFParameters`; users bring their existing files unchanged.

Units are MIDAS's: lengths in micrometres (``Lsd``, ``px``, ``GridSize``, ``BoxSize``,
``MaxRingRad``, ``Rsample``), angles in degrees, wavelength in Angstrom, lattice parameters in
Angstrom and degrees, beam centre in pixels.

Example
-------
>>> import io, warnings
>>> text = '''Lsd 6000
... BC 1024 20
... nDistances 1
... px 1.48
... Wavelength 0.1722
... SpaceGroup 225
... LatticeParameter 4.08 4.08 4.08 90 90 90
... OmegaStart 180
... OmegaStep -0.25
... OmegaRange -180 180
... BoxSize -1000 1000 -1000 1000
... '''
>>> p = read_parameters(io.StringIO(text), required=GEOMETRY_KEYS)
>>> p.lsd_um, p.bc_px
((6000.0,), ((1024.0, 20.0),))
"""
from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

__all__ = [
    "NFParameters",
    "read_parameters",
    "write_parameters",
    "load_yaml",
    "save_yaml",
    "KEYS",
    "ALIASES",
    "REQUIRED_KEYS",
    "MANUAL_REQUIRED_KEYS",
    "GEOMETRY_KEYS",
]


@dataclass(frozen=True)
class _Key:
    """How one MIDAS key maps onto a field: value type, number of values, repetition."""

    name: str
    field: str
    kind: type  # float, int, str or bool (flag without value)
    count: int  # number of values on the line (0 for a flag)
    repeated: bool = False


def _k(name, fld, kind, count=1, repeated=False):
    return _Key(name, fld, kind, count, repeated)


#: Every key of the MIDAS NF-HEDM parameter reference (seed manual, section 4) plus the
#: geometry keys the MIDAS NF programs read that the manual's table leaves out (``Rsample``,
#: ``EdgeLength``, ``NrPixels``, ``NrPixelsY``, ``NrPixelsZ``).
KEYS: dict[str, _Key] = {
    k.name: k
    for k in [
        # core
        _k("DataDirectory", "data_directory", str),
        _k("ReducedFileName", "reduced_file_name", str),
        _k("StartNr", "start_nr", int),
        _k("EndNr", "end_nr", int),
        _k("nDistances", "n_distances", int),
        _k("Lsd", "lsd_um", float, 1, True),
        _k("BC", "bc_px", float, 2, True),
        _k("px", "px_um", float),
        _k("Wavelength", "wavelength_A", float),
        _k("SpaceGroup", "space_group", int),
        _k("LatticeParameter", "lattice_parameter", float, 6),
        _k("OmegaStart", "omega_start_deg", float),
        _k("OmegaStep", "omega_step_deg", float),
        _k("OmegaRange", "omega_ranges_deg", float, 2, True),
        _k("BoxSize", "box_sizes_um", float, 4, True),
        _k("ExcludePoleAngle", "exclude_pole_angle_deg", float),
        _k("GridSize", "grid_size_um", float),
        _k("MaxRingRad", "max_ring_rad_um", float),
        _k("OrientTol", "orient_tol_deg", float),
        _k("MinFracAccept", "min_frac_accept", float),
        _k("MicFileBinary", "mic_file_binary", str),
        _k("MicFileText", "mic_file_text", str),
        _k("SeedOrientations", "seed_orientations", str),
        _k("tx", "tx_deg", float),
        _k("ty", "ty_deg", float),
        _k("tz", "tz_deg", float),
        # multi-resolution
        _k("GridRefactor", "grid_refactor", float, 3),
        _k("SeedOrientationsAll", "seed_orientations_all", str),
        _k("MinConfidence", "min_confidence", float),
        _k("MaxAngle", "max_angle_deg", float),
        # optional
        _k("OutputDirectory", "output_directory", str),
        _k("RingsToUse", "rings_to_use", int, 1, True),
        _k("SaveNSolutions", "save_n_solutions", int),
        _k("Wedge", "wedge_deg", float),
        _k("Ice9Input", "ice9_input", bool, 0),
        _k("NearestMisorientation", "nearest_misorientation", int),
        _k("TomoImage", "tomo_image", str),
        _k("TomoPixelSize", "tomo_pixel_size_um", float),
        _k("GridMask", "grid_mask_um", float, 4),
        _k("GrainsFile", "grains_file", str),
        _k("GridFileName", "grid_file_name", str),
        _k("GridPoints", "grid_points", float, 12, True),
        # geometry keys read by the MIDAS NF programs
        _k("Rsample", "rsample_um", float),
        _k("EdgeLength", "edge_length_um", float),
        _k("NrPixels", "nr_pixels", int),
        _k("NrPixelsY", "nr_pixels_y", int),
        _k("NrPixelsZ", "nr_pixels_z", int),
        # raw images and image processing (MIDAS's ProcessImagesCombined, doc/nf.md)
        _k("OrigFileName", "orig_file_name", str),
        _k("RawStartNr", "raw_start_nr", int),
        _k("NrFilesPerDistance", "nr_files_per_distance", int),
        _k("WFImages", "wf_images", int),
        _k("extOrig", "ext_orig", str),
        _k("extReduced", "ext_reduced", str),
        _k("BlanketSubtraction", "blanket_subtraction", float),
        _k("MedFiltRadius", "med_filt_radius", int),
        _k("GaussFiltRadius", "gauss_filt_radius", float),
        _k("LoGMaskRadius", "log_mask_radius", int),
        _k("DoLoGFilter", "do_log_filter", int),
        _k("WriteFinImage", "write_fin_image", int),
        _k("PrecomputedSpotsInfo", "precomputed_spots_info", int),
        _k("OnlySpotsInfo", "only_spots_info", int),
        _k("WriteImage", "write_image", int),
        # xreduce: raw frames as HDF5 stacks, one URL (file.h5::/path) per distance
        _k("RawDataURL", "raw_data_urls", str, 1, True),
        # sample position, seeds and phases
        _k("GlobalPositionFirstLayer", "global_position_first_layer_um", float),
        _k("GlobalPosition", "global_position_um", float),
        _k("LayerThickness", "layer_thickness_um", float),
        _k("NrOrientations", "nr_orientations", int),
        _k("NumPhases", "num_phases", int),
        _k("PhaseNr", "phase_nr", int),
        # detector calibration tolerances (read and kept; the calibration is not part of xreduce)
        _k("LsdTol", "lsd_tol_um", float),
        _k("LsdRelativeTol", "lsd_relative_tol_um", float),
        _k("BCTol", "bc_tol_px", float, 2),
        _k("TiltsTol", "tilts_tol_deg", float),
        _k("NumIterations", "num_iterations", int),
    ]
}

#: Other names MIDAS's programs accept for a key (alias -> key).
ALIASES: dict[str, str] = {"LatticeConstant": "LatticeParameter", "RhoD": "MaxRingRad"}

#: Largest absolute value of an integer key (MIDAS reads them as C ``int``).
_INT_LIMIT = 2**31 - 1

#: Keys the seed manual lists as required ("Core Parameters (Required)").
MANUAL_REQUIRED_KEYS: tuple[str, ...] = (
    "DataDirectory", "ReducedFileName", "StartNr", "EndNr", "nDistances", "Lsd", "BC", "px",
    "Wavelength", "SpaceGroup", "LatticeParameter", "OmegaStart", "OmegaStep", "OmegaRange",
    "BoxSize", "ExcludePoleAngle", "GridSize", "MaxRingRad", "OrientTol", "MinFracAccept",
    "MicFileBinary", "MicFileText", "SeedOrientations", "tx", "ty", "tz",
)

#: Keys required by default: the manual's list less the three that MIDAS's own example
#: (``NF_HEDM/Example/ps_au.txt``) leaves out and the programs default (``DataDirectory``: the
#: working folder, ``ReducedFileName``, ``SeedOrientations``: needed only by a seeded fit,
#: which checks it).
REQUIRED_KEYS: tuple[str, ...] = tuple(
    k for k in MANUAL_REQUIRED_KEYS
    if k not in ("DataDirectory", "ReducedFileName", "SeedOrientations")
)

#: The subset the forward model (reflections, spots, images) needs.
GEOMETRY_KEYS: tuple[str, ...] = (
    "nDistances", "Lsd", "BC", "px", "Wavelength", "SpaceGroup", "LatticeParameter",
    "OmegaStart", "OmegaStep", "OmegaRange", "BoxSize",
)

# a comment starts at a '#' that begins the line or follows whitespace ("/data/run#2" is a path)
_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True)
class NFParameters:
    """A validated MIDAS NF-HEDM parameter set (MIDAS units: um, degrees, Angstrom, pixels).

    Repeated keys are tuples in file order: ``lsd_um[i]`` and ``bc_px[i] = (y, z)`` belong to
    distance ``i``; ``omega_ranges_deg[j] = (start, end)`` goes with
    ``box_sizes_um[j] = (ymin, ymax, zmin, zmax)``. Keys absent from the file are ``None``
    (``Wedge``, ``tx``, ``ty``, ``tz``, ``ExcludePoleAngle`` read as 0 through the ``*_or_zero``
    accessors the forward model uses). Unknown keys are kept, as text, in ``extra``.

    Example
    -------
    >>> p = NFParameters(lsd_um=(6000.0,), bc_px=((1024.0, 20.0),), n_distances=1)
    >>> p.n_distances
    1
    """

    data_directory: str | None = None
    reduced_file_name: str | None = None
    start_nr: int | None = None
    end_nr: int | None = None
    n_distances: int | None = None
    lsd_um: tuple[float, ...] = ()
    bc_px: tuple[tuple[float, float], ...] = ()
    px_um: float | None = None
    wavelength_A: float | None = None
    space_group: int | None = None
    lattice_parameter: tuple[float, float, float, float, float, float] | None = None
    omega_start_deg: float | None = None
    omega_step_deg: float | None = None
    omega_ranges_deg: tuple[tuple[float, float], ...] = ()
    box_sizes_um: tuple[tuple[float, float, float, float], ...] = ()
    exclude_pole_angle_deg: float | None = None
    grid_size_um: float | None = None
    max_ring_rad_um: float | None = None
    orient_tol_deg: float | None = None
    min_frac_accept: float | None = None
    mic_file_binary: str | None = None
    mic_file_text: str | None = None
    seed_orientations: str | None = None
    tx_deg: float | None = None
    ty_deg: float | None = None
    tz_deg: float | None = None
    grid_refactor: tuple[float, float, float] | None = None
    seed_orientations_all: str | None = None
    min_confidence: float | None = None
    max_angle_deg: float | None = None
    output_directory: str | None = None
    rings_to_use: tuple[int, ...] = ()
    save_n_solutions: int | None = None
    wedge_deg: float | None = None
    ice9_input: bool = False
    nearest_misorientation: int | None = None
    tomo_image: str | None = None
    tomo_pixel_size_um: float | None = None
    grid_mask_um: tuple[float, float, float, float] | None = None
    grains_file: str | None = None
    grid_file_name: str | None = None
    grid_points: tuple[tuple[float, ...], ...] = ()
    rsample_um: float | None = None
    edge_length_um: float | None = None
    nr_pixels: int | None = None
    nr_pixels_y: int | None = None
    nr_pixels_z: int | None = None
    orig_file_name: str | None = None
    raw_start_nr: int | None = None
    nr_files_per_distance: int | None = None
    wf_images: int | None = None
    ext_orig: str | None = None
    ext_reduced: str | None = None
    blanket_subtraction: float | None = None
    med_filt_radius: int | None = None
    gauss_filt_radius: float | None = None
    log_mask_radius: int | None = None
    do_log_filter: int | None = None
    write_fin_image: int | None = None
    precomputed_spots_info: int | None = None
    only_spots_info: int | None = None
    write_image: int | None = None
    raw_data_urls: tuple[str, ...] = ()
    global_position_first_layer_um: float | None = None
    global_position_um: float | None = None
    layer_thickness_um: float | None = None
    nr_orientations: int | None = None
    num_phases: int | None = None
    phase_nr: int | None = None
    lsd_tol_um: float | None = None
    lsd_relative_tol_um: float | None = None
    bc_tol_px: tuple[float, float] | None = None
    tilts_tol_deg: float | None = None
    num_iterations: int | None = None
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # ---- conveniences used by the forward model -------------------------------------------
    @property
    def tilts_deg(self) -> tuple[float, float, float]:
        """Detector tilts (tx, ty, tz) in degrees, 0 where absent."""
        return (self.tx_deg or 0.0, self.ty_deg or 0.0, self.tz_deg or 0.0)

    @property
    def wedge_or_zero_deg(self) -> float:
        """Wedge angle in degrees, 0 where absent."""
        return self.wedge_deg or 0.0

    @property
    def exclude_pole_or_zero_deg(self) -> float:
        """ExcludePoleAngle in degrees, 0 where absent."""
        return self.exclude_pole_angle_deg or 0.0

    @property
    def detector_shape(self) -> tuple[int, int] | None:
        """(NrPixelsY, NrPixelsZ) from NrPixelsY/Z or NrPixels; None where absent."""
        ny = self.nr_pixels_y or self.nr_pixels
        nz = self.nr_pixels_z or self.nr_pixels
        if ny is None or nz is None:
            return None
        return (ny, nz)

    @property
    def frames_per_distance(self) -> int | None:
        """NrFilesPerDistance, else EndNr - StartNr + 1, else None."""
        return self.nr_files_per_distance or self.n_frames

    @property
    def n_frames(self) -> int | None:
        """EndNr - StartNr + 1, or None where either is absent."""
        if self.start_nr is None or self.end_nr is None:
            return None
        return self.end_nr - self.start_nr + 1

    def replace(self, **changes: Any) -> "NFParameters":
        """A copy with some fields changed (validated again)."""
        new = dataclasses.replace(self, **changes)
        _validate(new, lines={})
        return new

    def to_dict(self) -> dict[str, Any]:
        """Plain dict keyed by MIDAS key names (lists for tuples), absent keys left out."""
        out: dict[str, Any] = {}
        for key in KEYS.values():
            value = getattr(self, key.field)
            if value is None or value == () or (key.kind is bool and not value):
                continue
            out[key.name] = _to_plain(value)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NFParameters":
        """Inverse of :meth:`to_dict` (MIDAS key names), validated."""
        if not isinstance(data, dict):
            raise TypeError(f"data: expected a dict of MIDAS keys, got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "extra":
                kwargs["extra"] = {k: tuple(str(x) for x in v) for k, v in (value or {}).items()}
                continue
            if name not in KEYS:
                raise ValueError(f"data: unknown MIDAS key {name!r}")
            key = KEYS[name]
            kwargs[key.field] = _coerce_value(key, value)
        obj = cls(**kwargs)
        _validate(obj, lines={})
        return obj


def _to_plain(value):
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _coerce_value(key: _Key, value):
    """Convert a YAML/dict value to the field's type."""
    if key.kind is bool:
        return bool(value)
    if key.repeated:
        items = list(value)
        if key.count == 1:
            return tuple(key.kind(v) for v in items)
        return tuple(tuple(key.kind(x) for x in v) for v in items)
    if key.count == 1:
        return key.kind(value)
    return tuple(key.kind(x) for x in value)


def _parse_number(key: _Key, tok: str, lineno: int, source: str):
    """One int or float value: finite, integers in C ``int`` range."""
    try:
        value = float(tok)
    except ValueError:
        value = None
    if value is not None and not (value == value and abs(value) != float("inf")):
        raise ValueError(f"{source}:{lineno}: key {key.name!r} expects a finite number, "
                         f"got {tok!r}")
    if key.kind is float:
        if value is None:
            raise ValueError(f"{source}:{lineno}: key {key.name!r} expects float value(s), "
                             f"got {tok!r}")
        return value
    if value is None or not value.is_integer():
        raise ValueError(f"{source}:{lineno}: key {key.name!r} expects int value(s), "
                         f"got {tok!r}")
    if abs(value) > _INT_LIMIT:
        raise ValueError(f"{source}:{lineno}: key {key.name!r} expects an integer of at most "
                         f"{_INT_LIMIT} in size, got {tok!r}")
    return int(value)


def _parse_tokens(key: _Key, tokens: list[str], lineno: int, source: str):
    """Convert the values on one line; errors name the key and the line."""
    if key.kind is bool:
        return True
    if len(tokens) < key.count:
        raise ValueError(
            f"{source}:{lineno}: key {key.name!r} expects {key.count} value(s), "
            f"got {len(tokens)}: {' '.join(tokens)!r}"
        )
    if key.kind is str:
        values = list(tokens[: key.count])
    else:
        values = [_parse_number(key, tok, lineno, source) for tok in tokens[: key.count]]
    return values[0] if key.count == 1 else tuple(values)


def _read_text(source) -> tuple[str, str]:
    """The text of a file or stream and its name for messages; bytes must be UTF-8."""
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<stream>"))
        try:
            text = source.read()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: parameter file is not UTF-8 text ({exc.reason} at byte "
                             f"{exc.start})") from None
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{name}: parameter file is not UTF-8 text ({exc.reason} at "
                                 f"byte {exc.start})") from None
        return text, name
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source: expected a path or a text stream, got "
                        f"{type(source).__name__}")
    path = Path(source)
    name = str(path)
    if not path.is_file():
        raise ValueError(f"source: parameter file {name!r} does not exist")
    data = path.read_bytes()
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: parameter file is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None


def read_parameters(
    source: str | os.PathLike | TextIO,
    required: Iterable[str] = REQUIRED_KEYS,
) -> NFParameters:
    """Read a MIDAS NF-HEDM parameter file into a validated :class:`NFParameters`.

    Reads files as MIDAS's programs do: ``#`` comments, a trailing ``;`` on a line ignored,
    the aliases of :data:`ALIASES` (``LatticeConstant``, ``RhoD``), repeated keys in order.

    Parameters
    ----------
    source : str, path-like or text stream
        The parameter file (UTF-8 text).
    required : iterable of str
        MIDAS keys that must be present. Default :data:`REQUIRED_KEYS` (what MIDAS's own
        example file has); :data:`MANUAL_REQUIRED_KEYS` is the manual's stricter list; pass
        :data:`GEOMETRY_KEYS` to read a file meant only for simulation.

    Returns
    -------
    NFParameters

    Raises
    ------
    ValueError
        A value that does not parse or is out of range (NaN, infinity, an integer beyond C
        ``int``, a negative pixel size...), a missing required key, a non-repeatable key given
        twice, inconsistent counts (``nDistances`` vs the ``Lsd`` and ``BC`` lines,
        ``OmegaRange`` vs ``BoxSize``), a file that is not UTF-8; the message names the file,
        the line and the key.

    Warns
    -----
    UserWarning
        Listing unknown keys (kept, as text, in ``NFParameters.extra``).

    Example
    -------
    >>> p = read_parameters("ps.txt")                        # doctest: +SKIP
    >>> p.lsd_um, p.omega_ranges_deg                         # doctest: +SKIP
    """
    text, name = _read_text(source)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    extra: dict[str, tuple[str, ...]] = {}
    extra_lines: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip().rstrip(";").strip()
        if not line:
            continue
        tokens = line.split()
        name_tok, rest = tokens[0], tokens[1:]
        key = KEYS.get(ALIASES.get(name_tok, name_tok))
        if key is None:
            extra[name_tok] = tuple(rest)
            extra_lines[name_tok] = lineno
            continue
        value = _parse_tokens(key, rest, lineno, name)
        if key.repeated:
            values.setdefault(key.field, []).append(value)
            lines.setdefault(key.name, lineno)
            lines[key.name + "#last"] = lineno
        else:
            if key.field in values:
                raise ValueError(
                    f"{name}:{lineno}: key {name_tok!r} given twice "
                    f"(first on line {lines[key.name]}); it is not a repeatable key"
                )
            values[key.field] = value
            lines[key.name] = lineno
    required = tuple(required)
    unknown_required = [k for k in required if k not in KEYS]
    if unknown_required:
        raise ValueError(f"required: unknown MIDAS key(s) {unknown_required}")
    missing = [k for k in required if k not in lines]
    if missing:
        raise ValueError(f"{name}: missing required key(s): {', '.join(missing)}")
    if extra:
        warnings.warn(
            f"{name}: unknown key(s) kept in NFParameters.extra: "
            + ", ".join(f"{k} (line {extra_lines[k]})" for k in extra),
            stacklevel=2,
        )
    kwargs = {f: tuple(v) if isinstance(v, list) else v for f, v in values.items()}
    params = NFParameters(**kwargs, extra=extra)
    _validate(params, lines, name)
    return params


#: Range rules of single-valued keys: key -> (lowest, highest, lowest included, highest
#: included); None leaves a side open.
_RANGES: dict[str, tuple] = {
    "px": (0, None, False, True), "Wavelength": (0, None, False, True),
    "GridSize": (0, None, False, True), "MaxRingRad": (0, None, False, True),
    "Rsample": (0, None, False, True), "EdgeLength": (0, None, False, True),
    "TomoPixelSize": (0, None, False, True), "OrientTol": (0, 180, False, True),
    "ExcludePoleAngle": (0, 90, True, False), "MinFracAccept": (0, 1, True, True),
    "MinConfidence": (0, 1, True, True), "MaxAngle": (0, 180, False, True),
    "StartNr": (0, None, True, True), "EndNr": (0, None, True, True),
    "RawStartNr": (0, None, True, True), "nDistances": (1, 64, True, True),
    "NrPixels": (1, 1 << 20, True, True), "NrPixelsY": (1, 1 << 20, True, True),
    "NrPixelsZ": (1, 1 << 20, True, True), "NrFilesPerDistance": (1, None, True, True),
    "WFImages": (0, None, True, True), "BlanketSubtraction": (0, None, True, True),
    "MedFiltRadius": (0, 2, True, True), "GaussFiltRadius": (0, 100, False, True),
    "LoGMaskRadius": (1, 1000, True, True), "DoLoGFilter": (0, 1, True, True),
    "SaveNSolutions": (1, 1000, True, True), "NrOrientations": (1, None, True, True),
    "NumPhases": (1, None, True, True), "PhaseNr": (1, None, True, True),
    "Wedge": (-90, 90, False, False), "tx": (-90, 90, False, False),
    "ty": (-90, 90, False, False), "tz": (-180, 180, True, True),
    "SpaceGroup": (1, 230, True, True), "LayerThickness": (0, None, True, True),
}


def _check_range(key_name: str, value, where: str) -> None:
    lo, hi, lo_in, hi_in = _RANGES[key_name]
    bad = ((lo is not None and (value < lo or (value == lo and not lo_in)))
           or (hi is not None and (value > hi or (value == hi and not hi_in))))
    if bad:
        left = "-inf" if lo is None else f"{lo}"
        right = "inf" if hi is None else f"{hi}"
        interval = f"{'[' if lo_in and lo is not None else '('}{left}, {right}" \
                   f"{']' if hi_in and hi is not None else ')'}"
        raise ValueError(f"{where}{key_name} must be in {interval}, got {value}")


def _validate(p: NFParameters, lines: dict[str, int], source: str = "<parameters>") -> None:
    """Types, ranges and cross-key consistency; messages name the key and, where known, its
    line."""

    def where(key):
        return f"{source}:{lines[key]}: " if key in lines else f"{source}: "

    for key in KEYS.values():  # types (fields set directly or from YAML are checked too)
        value = getattr(p, key.field)
        if value is None or value == () or key.kind is bool:
            continue
        items = value if key.repeated else (value,)
        for item in items:
            for v in (item if key.count > 1 else (item,)):
                if key.kind is str:
                    ok = isinstance(v, str)
                elif key.kind is int:
                    ok = (isinstance(v, int) and not isinstance(v, bool)
                          and abs(v) <= _INT_LIMIT)
                else:
                    ok = isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and math.isfinite(v)
                if not ok:
                    raise ValueError(f"{where(key.name)}{key.name} expects finite "
                                     f"{key.kind.__name__} value(s), got {v!r}")
        if key.name in _RANGES:
            _check_range(key.name, value, where(key.name))
    n_lsd, n_bc = len(p.lsd_um), len(p.bc_px)
    if p.n_distances is not None:
        if n_lsd != p.n_distances:
            raise ValueError(
                f"{where('nDistances')}nDistances is {p.n_distances} but {n_lsd} 'Lsd' line(s) "
                f"were given" + (f" (first on line {lines['Lsd']})" if "Lsd" in lines else "")
            )
        if n_bc != p.n_distances:
            raise ValueError(
                f"{where('nDistances')}nDistances is {p.n_distances} but {n_bc} 'BC' line(s) "
                f"were given" + (f" (first on line {lines['BC']})" if "BC" in lines else "")
            )
    elif n_lsd != n_bc:
        raise ValueError(f"{where('BC')}{n_lsd} 'Lsd' line(s) but {n_bc} 'BC' line(s)")
    if p.raw_data_urls and len(p.raw_data_urls) != n_lsd:
        raise ValueError(f"{where('RawDataURL')}{len(p.raw_data_urls)} 'RawDataURL' line(s) "
                         f"but {n_lsd} distance(s); give one HDF5 URL per distance")
    if len(p.omega_ranges_deg) != len(p.box_sizes_um):
        last = {k: lines.get(k + "#last") for k in ("OmegaRange", "BoxSize")}
        raise ValueError(
            f"{source}: {len(p.omega_ranges_deg)} 'OmegaRange' line(s) (last on line "
            f"{last['OmegaRange']}) but {len(p.box_sizes_um)} 'BoxSize' line(s) (last on line "
            f"{last['BoxSize']}); each OmegaRange needs one BoxSize"
        )
    for i, lsd in enumerate(p.lsd_um):
        if not lsd > 0:
            raise ValueError(f"{where('Lsd')}Lsd must be > 0 um, got {lsd} (distance {i})")
    if p.omega_step_deg is not None and p.omega_step_deg == 0:
        raise ValueError(f"{where('OmegaStep')}OmegaStep must be non-zero")
    if p.start_nr is not None and p.end_nr is not None and p.end_nr < p.start_nr:
        raise ValueError(f"{where('EndNr')}EndNr ({p.end_nr}) must be >= StartNr "
                         f"({p.start_nr})")
    if p.lattice_parameter is not None:
        a, b, c, al, be, ga = p.lattice_parameter
        if min(a, b, c) <= 0 or not all(0 < x < 180 for x in (al, be, ga)):
            raise ValueError(
                f"{where('LatticeParameter')}LatticeParameter expects a b c > 0 (A) and angles "
                f"in (0, 180) degrees, got {p.lattice_parameter}"
            )
    for j, (lo, hi) in enumerate(p.omega_ranges_deg):
        if not hi > lo:
            raise ValueError(f"{where('OmegaRange')}OmegaRange {j} must have end > start, "
                             f"got ({lo}, {hi})")
    for j, (y0, y1, z0, z1) in enumerate(p.box_sizes_um):
        if not (y1 > y0 and z1 > z0):
            raise ValueError(f"{where('BoxSize')}BoxSize {j} must be ymin ymax zmin zmax with "
                             f"max > min, got ({y0}, {y1}, {z0}, {z1})")
    for ring in p.rings_to_use:
        if ring < 1:
            raise ValueError(f"{where('RingsToUse')}RingsToUse must be ring numbers >= 1, "
                             f"got {ring}")
    if p.grid_refactor is not None:
        start, scale, loops = p.grid_refactor
        if not (start > 0 and scale > 0 and loops >= 1 and float(loops).is_integer()
                and loops <= 64):
            raise ValueError(f"{where('GridRefactor')}GridRefactor expects StartingGridSize > 0, "
                             f"ScalingFactor > 0 and a whole NumLoops in 1..64, got "
                             f"{p.grid_refactor}")
    if p.bc_tol_px is not None and min(p.bc_tol_px) < 0:
        raise ValueError(f"{where('BCTol')}BCTol must be >= 0, got {p.bc_tol_px}")


def _format_value(v) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_parameters(params: NFParameters, path: str | os.PathLike) -> None:
    """Write ``params`` as a MIDAS text parameter file (repeated keys on successive lines).

    The file is written to a temporary name and renamed when complete. Unknown keys kept in
    ``params.extra`` are written back unchanged.

    Example
    -------
    >>> write_parameters(p, "ps_copy.txt")                   # doctest: +SKIP
    """
    if not isinstance(params, NFParameters):
        raise TypeError(f"params: expected NFParameters, got {type(params).__name__}")
    buf = io.StringIO()
    for key in KEYS.values():
        value = getattr(params, key.field)
        if value is None or value == ():
            continue
        if key.kind is bool:
            if value:
                buf.write(f"{key.name}\n")
            continue
        items = value if key.repeated else (value,)
        for item in items:
            vals = item if isinstance(item, tuple) else (item,)
            buf.write(key.name + " " + " ".join(_format_value(v) for v in vals) + "\n")
    for name, toks in params.extra.items():
        buf.write(name + (" " + " ".join(toks) if toks else "") + "\n")
    _write_text_file(Path(path), buf.getvalue())


def _write_text_file(path: Path, text: str) -> None:
    from xreduce.io.writers import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def save_yaml(params: NFParameters, path: str | os.PathLike) -> None:
    """Save ``params`` as YAML keyed by the MIDAS key names (temporary name, then rename).

    Example
    -------
    >>> save_yaml(p, "ps.yaml"); load_yaml("ps.yaml") == p    # doctest: +SKIP
    True
    """
    import yaml

    if not isinstance(params, NFParameters):
        raise TypeError(f"params: expected NFParameters, got {type(params).__name__}")
    _write_text_file(Path(path), yaml.safe_dump(params.to_dict(), sort_keys=False))


def load_yaml(path: str | os.PathLike) -> NFParameters:
    """Load parameters saved by :func:`save_yaml` (or written by hand with MIDAS key names)."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    return NFParameters.from_dict(data or {})
