"""Engine files: the geometry and the CSR engines of an integrator in one NeXus/HDF5 file.

:func:`write_engines` stores the geometry (PONI parameters, the detector as an NXdetector)
and each CSR engine's matrix with its key; :func:`read_engines` reads them back and checks
everything before any kernel can see it (a crafted file gives a ValueError naming the item,
never a crash): attribute types, the key's fields, dataset dtypes and sizes (against
:func:`xreduce.limits.check_allocation` before reading), and the matrix itself
(:func:`xreduce.engines.cython_csr.validate_csr`). The layout is described in
``doc/integration.md`` ("Engines: cache, threads, files, pickling").

Example
-------
>>> ai.save_engine(tmp_path / "engines.h5")                        # doctest: +SKIP
>>> ai2 = AzimuthalIntegrator.load_engine(tmp_path / "engines.h5")  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from xreduce.engines.cython_csr import CsrEngine
from xreduce.engines.registry import SPLITS, EngineKey
from xreduce.io.writers import atomic_output, nexus_entry
from xreduce.limits import check_allocation

_ARRAYS = {"indptr": "iu", "indices": "iu", "data": "f", "radial_edges": "f",
           "azimuthal_edges": "f"}
_PONI = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength")


def write_engines(path: str | os.PathLike, geometry: Any, engines: list) -> None:
    """Write ``geometry`` and the CSR engines of ``engines`` ((key, engine) pairs) atomically."""
    import h5py

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        entry = nexus_entry(h5, None)
        group = h5.create_group("geometry")
        group.attrs["NX_class"] = "NXcollection"
        for name in _PONI:
            value = getattr(geometry, name)
            group.attrs[name] = np.nan if value is None else float(value)
        geometry.detector.write_nexus(group, "detector")
        stored = h5.create_group("engines")
        stored.attrs["NX_class"] = "NXcollection"
        csr = [(k, e) for k, e in engines if isinstance(e, CsrEngine)]
        for n, (key, engine) in enumerate(csr):
            g = stored.create_group(f"engine_{n:03d}")
            g.attrs["NX_class"] = "NXcollection"
            g.attrs["key"] = json.dumps(key.__dict__)
            m = engine.matrix
            for name in _ARRAYS:
                value = getattr(m, name)
                if value is not None:
                    g.create_dataset(name, data=value)
            g.attrs["shape"] = list(m.shape)
            g.attrs["split"] = m.split
            g.attrs["unit"] = getattr(m.unit, "name", str(m.unit))
        # the NXdata silx shows: pixels per bin of the first engine (an empty file: none)
        rows = np.diff(csr[0][1].matrix.indptr) if csr else np.zeros(0, np.int32)
        data = entry.create_group("pixels_per_bin")
        data.attrs.update({"NX_class": "NXdata", "signal": "entries", "axes": "bin"})
        data.create_dataset("entries", data=rows).attrs["units"] = "1"
        data.create_dataset("bin", data=np.arange(rows.size)).attrs["units"] = "1"
        entry.attrs["default"] = "pixels_per_bin"


def read_engines(path: str | os.PathLike) -> tuple[Any, list[tuple[EngineKey, CsrEngine]]]:
    """The geometry and the (key, engine) pairs of an engine file, checked (ValueError)."""
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"path: {path!r} is not a readable HDF5 file ({err})") from None
    with h5:
        geometry = _read_geometry(_group(h5, "geometry"))
        engines = []
        for name, g in _group(h5, "engines").items():
            if not isinstance(g, h5py.Group):
                raise ValueError(f"engines/{name}: expected a group")
            try:
                engines.append(_read_engine(g, geometry))
            except (KeyError, TypeError, OverflowError, json.JSONDecodeError) as err:
                raise ValueError(f"engines/{name}: {err}") from None
    return geometry, engines


def _group(h5: Any, name: str) -> Any:
    import h5py

    found = h5.get(name)
    if not isinstance(found, h5py.Group):
        raise ValueError(f"{name}: expected a group in the engine file, got "
                         f"{type(found).__name__}")
    return found


def _read_geometry(group: Any) -> Any:
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    values = []
    for name in _PONI:
        try:
            values.append(float(group.attrs[name]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"geometry/{name}: expected a number attribute") from None
    wavelength = None if math.isnan(values[6]) else values[6]
    if "detector" not in group:
        raise ValueError("geometry/detector: missing")
    try:
        detector = Detector.read_nexus(group["detector"])
        return Geometry(*values[:6], wavelength, detector)
    except (KeyError, TypeError) as err:
        raise ValueError(f"geometry: {err}") from None


def _read_key(g: Any) -> EngineKey:
    """The engine key stored as JSON, every field checked."""
    where = f"{g.name}/key"
    raw = json.loads(str(g.attrs["key"]))
    fields = {f.name for f in dataclasses.fields(EngineKey)}
    if not isinstance(raw, dict) or not set(raw) <= fields or \
            not set(raw) >= fields - {"device"}:
        raise ValueError(f"{where}: expected a JSON object with the fields {sorted(fields)}, "
                         f"got {raw!r}")
    for name in ("algorithm", "implementation", "split", "unit"):
        if not isinstance(raw[name], str):
            raise ValueError(f"{where}: {name} must be a string, got {raw[name]!r}")
    for name in ("mask_digest", "device"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ValueError(f"{where}: {name} must be a string or null, got {raw[name]!r}")
    for name in ("npt_rad", "npt_azim"):
        value = raw[name]
        if value is None and name == "npt_azim":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
            raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
    for name in ("radial_range", "azimuth_range"):
        value = raw[name]
        if value is None:
            continue
        if not (isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in value) and value[0] < value[1]):
            raise ValueError(f"{where}: {name} must be null or [low, high], got {value!r}")
        raw[name] = (float(value[0]), float(value[1]))
    key = EngineKey(**raw)
    if key.algorithm != "csr" or key.split not in SPLITS:
        raise ValueError(f"{where}: expected a CSR engine with a split of {SPLITS}, got "
                         f"{key.algorithm!r}, {key.split!r}")
    return key


def _read_engine(g: Any, geometry: Any) -> tuple[EngineKey, CsrEngine]:
    from xreduce.sparse import CsrMatrix

    key = _read_key(g)
    arrays = {}
    for name, kinds in _ARRAYS.items():
        if name not in g:
            arrays[name] = None
            continue
        dataset = g[name]
        if dataset.ndim != 1 or dataset.dtype.kind not in kinds:
            raise ValueError(f"{g.name}/{name}: expected a 1D array of kind {kinds!r}, got "
                             f"shape {dataset.shape} of dtype {dataset.dtype}")
        check_allocation(dataset.size * dataset.dtype.itemsize, f"{g.name}/{name}")
        arrays[name] = dataset[()]
    if arrays["indptr"] is None or arrays["indices"] is None or arrays["radial_edges"] is None:
        raise ValueError(f"{g.name}: expected indptr, indices and radial_edges datasets")
    shape = tuple(int(s) for s in np.asarray(g.attrs["shape"]).reshape(-1))
    npix = int(np.prod(geometry.detector.shape))
    if len(shape) != 2 or shape[1] != npix:
        raise ValueError(f"{g.name}/shape: expected (nbins, {npix}) for the detector, got "
                         f"{shape}")
    matrix = CsrMatrix(shape=shape, split=str(g.attrs["split"]), unit=str(g.attrs["unit"]),
                       **arrays)
    return key, CsrEngine(key, matrix)
