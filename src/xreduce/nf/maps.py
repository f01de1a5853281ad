"""NF orientation maps: NeXus/HDF5 output, inverse-pole-figure colours and PNG plots.

:func:`write_map_hdf5` writes one NeXus file with everything of a ``.mic`` (positions, Euler
angles, confidence, candidates, fit time, phase), the IPF colours, the parameters (the MIDAS
text and one dataset per key) and provenance; its ``@default`` chain leads to the map (an
NXdata of scattered points: ``confidence`` against ``x_um``, ``y_um``), which silx view opens.
:func:`plot_map` draws the map coloured by inverse pole figure, next to the confidence map, as
a PNG.

IPF colours (doc/nf.md, "Orientation maps"): the sample direction (default: sample +Z, the
rotation axis, normal to the map) is turned into the crystal frame (``h = U^T v``), brought by
the Laue group's rotations and the inversion into the standard triangle of the class, and
coloured by its coefficients on the triangle's corners (red, green, blue), scaled so the
largest is 1. Standard triangles: cubic 001-101-111, hexagonal 0001-2-1-10-10-10, tetragonal
001-100-110, orthorhombic 001-100-010. These are the high-symmetry (holohedral) Laue classes;
other classes raise ValueError. orix (the established library) was not used: its wheel
requires numba, diffpy-structure, pycifrw, pooch and dask, far heavier than the few lines here.

Example
-------
>>> import numpy as np, os, tempfile
>>> rgb = ipf_colors(np.zeros((1, 3)), 225)      # identity: sample Z is crystal [001]: red
>>> rgb.round(3).tolist()
[[1.0, 0.0, 0.0]]
>>> path = os.path.join(tempfile.mkdtemp(), "map.h5")
>>> write_map_hdf5(path, [0.0, 2.5], [0.0, 0.0], 2.5, [1, -1], np.zeros((2, 3)),
...                [0.9, 0.8], space_group=225)
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Mapping

import numpy as np

from .crystal import direct_matrix, euler_to_matrix, laue_class, laue_rotations
from .mic import MIC_COLUMNS, _columns

__all__ = ["ipf_colors", "write_map_hdf5", "read_map_hdf5", "plot_map", "IPF_CLASSES"]

_SQ3 = np.sqrt(3.0)

#: Laue classes with an IPF key: the corners (red, green, blue) of the standard triangle, as
#: crystal directions in the lattice's direct basis (hexagonal in 3-index form: [2-1-10] is
#: the a axis, [10-10] the direction of a*), by Laue class name.
IPF_CLASSES = ("cubic high", "hexagonal high", "tetragonal high", "orthorhombic")


def _triangle(space_group: int, lattice_parameter) -> np.ndarray:
    """Corners of the standard triangle as unit Cartesian columns (3, 3): red, green, blue."""
    name, _ = laue_class(space_group)
    if name not in IPF_CLASSES:
        raise ValueError(f"space_group: no IPF colour key for Laue class {name!r} (space group "
                         f"{space_group}); available: {', '.join(IPF_CLASSES)}")
    A = direct_matrix(lattice_parameter)  # columns a, b, c (Cartesian frame of B)
    c_axis = A[:, 2]
    if name == "cubic high":
        corners = [A @ [0, 0, 1], A @ [1, 0, 1], A @ [1, 1, 1]]
    elif name == "hexagonal high":
        a_axis = A[:, 0]
        a_star = np.cross(A[:, 1], A[:, 2])  # the [10-10] direction
        corners = [c_axis, a_axis, a_star]
    elif name == "tetragonal high":
        corners = [c_axis, A[:, 0], A[:, 0] + A[:, 1]]
    else:
        corners = [c_axis, A[:, 0], A[:, 1]]
    M = np.array([np.asarray(c, float) / np.linalg.norm(c) for c in corners]).T
    return M


def _lattice(space_group: int, lattice_parameter):
    """The given lattice, or the standard one of the space group's crystal system."""
    if lattice_parameter is not None:
        return lattice_parameter
    from .crystal import _DEFAULT_LATTICE, space_group as _space_group

    return _DEFAULT_LATTICE[_space_group(space_group).crystal_system_str()]


def ipf_colors(euler_rad, space_group: int, lattice_parameter=None,
               direction=(0.0, 0.0, 1.0)) -> np.ndarray:
    """RGB colours (n, 3) in [0, 1] of orientations by inverse pole figure.

    Parameters
    ----------
    euler_rad : array_like (n, 3)
        Bunge Euler angles (radians), ``U = Rz(phi1) Rx(Phi) Rz(phi2)`` crystal -> sample.
    space_group : int
        Its Laue class picks the key (:data:`IPF_CLASSES`).
    lattice_parameter : sequence of 6 floats, optional
        The lattice (its Cartesian frame is the one of the orientations); a standard one of
        the crystal system by default.
    direction : 3 floats
        The sample direction shown (default sample +Z).

    Returns
    -------
    numpy.ndarray float64 (n, 3)

    Example
    -------
    >>> ipf_colors([[0.0, np.pi / 4, 0.0]], 225).round(3).tolist()  # sample Z along [011]
    [[0.0, 1.0, 0.0]]
    """
    eul = np.asarray(euler_rad, dtype=np.float64)
    if eul.ndim != 2 or eul.shape[1] != 3:
        raise ValueError(f"euler_rad: expected shape (n, 3), got {eul.shape}")
    v = np.asarray(direction, dtype=np.float64)
    if v.shape != (3,) or not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
        raise ValueError(f"direction: expected a non-zero 3-vector, got {direction!r}")
    lattice_parameter = _lattice(space_group, lattice_parameter)
    M = _triangle(space_group, lattice_parameter)
    M_inv = np.linalg.inv(M)
    rots = np.asarray(laue_rotations(space_group, lattice_parameter))
    h = np.einsum("nji,j->ni", euler_to_matrix(eul), v / np.linalg.norm(v))  # U^T v
    # every equivalent direction S^T h and -S^T h; keep the one most inside the triangle
    cand = np.einsum("sji,nj->sni", rots, h)
    cand = np.concatenate([cand, -cand], axis=0)
    weights = cand @ M_inv.T
    best = np.argmax(weights.min(axis=-1), axis=0)
    w = np.clip(weights[best, np.arange(len(h))], 0.0, None)
    return w / np.maximum(w.max(axis=-1, keepdims=True), 1e-300)


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def write_map_hdf5(path: str | os.PathLike, x_um, y_um, edge_um, ud, euler_rad,
                   confidence=1.0, row=0, orientation_id=0, time=0.0, *, phase_nr=1,
                   space_group: int | None = None, lattice_parameter=None, params=None,
                   provenance: Mapping | None = None, direction=(0.0, 0.0, 1.0)) -> None:
    """Write an orientation map as one NeXus/HDF5 file (atomically).

    Layout: ``/entry`` (NXentry) with ``map`` (NXdata, the default: ``confidence`` against
    ``x_um`` and ``y_um``, and ``euler_rad``, ``ipf_rgb``, ``ud``, ``edge_um``, ``row``,
    ``candidates``, ``fit_time_s``, ``phase_nr``), ``mic`` (the 12 MIDAS columns as one
    table, ``@columns``), ``parameters`` (NXcollection: ``parameter_file`` text and one
    dataset per MIDAS key) and ``provenance`` (NXnote: program, version, date, and the
    ``provenance`` items).

    Parameters
    ----------
    path : str or path
    x_um ... time
        As :func:`xreduce.nf.mic.write_mic`; every voxel is stored (also confidence 0).
    phase_nr : int or array_like
    space_group, lattice_parameter
        For the IPF colours (taken from ``params`` when not given; no colours without).
    params : NFParameters, optional
        Stored as text and key by key.
    provenance : mapping, optional
        Extra provenance (str -> str or JSON-able).
    direction : 3 floats
        Sample direction of the IPF colours.

    Example
    -------
    >>> write_map_hdf5("map.h5", x, y, 2.5, ud, eul, conf, params=p)   # doctest: +SKIP
    """
    import h5py

    import xreduce
    from xreduce.io.writers import atomic_output, nexus_entry

    from .params import NFParameters, write_parameters

    x = np.asarray(x_um, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x_um: expected a 1D array, got shape {x.shape}")
    n = len(x)
    table = _columns(n, x, y_um, edge_um, ud, euler_rad, confidence, row, orientation_id, time)
    phase = np.broadcast_to(np.asarray(phase_nr), (n,)).astype(np.int64)
    if params is not None and not isinstance(params, NFParameters):
        raise TypeError(f"params: expected NFParameters, got {type(params).__name__}")
    if space_group is None and params is not None:
        space_group = params.space_group
        lattice_parameter = lattice_parameter or params.lattice_parameter
    rgb = (ipf_colors(table[:, 7:10], space_group, lattice_parameter, direction)
           if space_group is not None else None)
    if provenance is not None and not isinstance(provenance, Mapping):
        raise TypeError(f"provenance: expected a mapping, got {type(provenance).__name__}")
    param_text = None
    if params is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmpdir:
            tmp_params = os.path.join(tmpdir, "params.txt")
            write_parameters(params, tmp_params)
            with open(tmp_params, encoding="utf-8") as f:
                param_text = f.read()
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        entry = nexus_entry(h5, "map")
        entry["title"] = "NF-HEDM orientation map"
        data = entry.create_group("map")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "confidence"
        data.attrs["axes"] = ["x_um", "y_um"]
        cols = {"confidence": (table[:, 10], ""), "x_um": (table[:, 3], "um"),
                "y_um": (table[:, 4], "um"), "edge_um": (table[:, 5], "um"),
                "ud": (table[:, 6].astype(np.int8), ""), "euler_rad": (table[:, 7:10], "rad"),
                "row": (table[:, 0].astype(np.int64), ""),
                "candidates": (table[:, 1].astype(np.int64), ""),
                "fit_time_s": (table[:, 2], "s"), "phase_nr": (phase, "")}
        for name, (values, units) in cols.items():
            ds = data.create_dataset(name, data=values)
            if units:
                ds.attrs["units"] = units
        data["confidence"].attrs["long_name"] = "confidence (fraction of footprint lit)"
        if rgb is not None:
            ds = data.create_dataset("ipf_rgb", data=rgb)
            ds.attrs["direction"] = np.asarray(direction, np.float64)
            ds.attrs["space_group"] = int(space_group)
        mic = entry.create_dataset("mic", data=np.column_stack([table, phase]))
        mic.attrs["columns"] = list(MIC_COLUMNS)
        par = entry.create_group("parameters")
        par.attrs["NX_class"] = "NXcollection"
        if params is not None:
            par["parameter_file"] = param_text
            for key, value in params.to_dict().items():
                if key == "extra":
                    continue
                if isinstance(value, list) and value and isinstance(value[0], str):
                    value = np.array(value, dtype=h5py.string_dtype())
                par[key] = value
        note = entry.create_group("provenance")
        note.attrs["NX_class"] = "NXnote"
        note["program"] = "xreduce"
        note["version"] = getattr(xreduce, "__version__", "unknown")
        note["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        for key, value in (provenance or {}).items():
            note[str(key)] = _text(value)


def read_map_hdf5(path: str | os.PathLike):
    """Read a map written by :func:`write_map_hdf5` back as :class:`~xreduce.nf.mic.MicData`
    (all voxels)."""
    import h5py

    from .mic import _check_rows, _mic_data

    name = os.fspath(path)
    with h5py.File(path, "r") as h5:
        if "entry/mic" not in h5:
            raise ValueError(f"{name}: no /entry/mic table (not an xreduce NF map file)")
        table = np.asarray(h5["entry/mic"][()], dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 12:
        raise ValueError(f"{name}: /entry/mic must have 12 columns, got shape {table.shape}")
    _check_rows(table, lambda i: f"{name}: voxel {i}")
    return _mic_data(table, {})


def _triangles(x, y, edge, ud) -> np.ndarray:
    """Triangle corners (n, 3, 2) of voxels with centroids (x, y), edges and UD (+1 apex up)."""
    h = _SQ3 / 2 * edge
    s = np.where(ud == 0, 1.0, ud)
    verts = np.empty((len(x), 3, 2))
    verts[:, 0] = np.stack([x - edge / 2, y - s * h / 3], -1)
    verts[:, 1] = np.stack([x + edge / 2, y - s * h / 3], -1)
    verts[:, 2] = np.stack([x, y + s * 2 * h / 3], -1)
    return verts


_CORNER_LABELS = {"cubic high": ("001", "101", "111"),
                  "hexagonal high": ("0001", "2-1-10", "10-10"),
                  "tetragonal high": ("001", "100", "110"),
                  "orthorhombic": ("001", "100", "010")}


def _draw_key(ax, space_group: int, lattice_parameter, size: int = 160) -> None:
    """Draw the colour key on ``ax``: the standard triangle in stereographic projection
    (``X, Y = x / (1 + z), y / (1 + z)``), its corners labelled."""
    M = _triangle(space_group, lattice_parameter)
    corners = M.T / (1 + M[2])[:, None]  # projected corners (3, 3): X, Y in columns 0, 1
    lo, hi = corners[:, :2].min(0), corners[:, :2].max(0)
    pad = 0.05 * (hi - lo).max()
    X, Y = np.meshgrid(np.linspace(lo[0] - pad, hi[0] + pad, size),
                       np.linspace(lo[1] - pad, hi[1] + pad, size))
    r2 = X ** 2 + Y ** 2
    dirs = np.stack([2 * X, 2 * Y, 1 - r2], -1) / (1 + r2)[..., None]
    w = dirs @ np.linalg.inv(M).T
    rgba = np.zeros((size, size, 4))
    wc = np.clip(w, 0, None)
    rgba[..., :3] = wc / np.maximum(wc.max(-1, keepdims=True), 1e-300)
    rgba[..., 3] = w.min(-1) >= -1e-9
    ax.imshow(rgba, origin="lower", extent=(lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad))
    for (cx, cy, _), label in zip(corners, _CORNER_LABELS[laue_class(space_group)[0]]):
        ax.annotate(label, (cx, cy), fontsize=7, ha="center", va="center",
                    xytext=(0, -8 if cy <= corners[:, 1].mean() else 8),
                    textcoords="offset points")
    ax.axis("off")


def plot_map(path_png: str | os.PathLike, x_um, y_um, edge_um, ud, euler_rad, confidence,
             space_group: int, lattice_parameter=None, *, direction=(0.0, 0.0, 1.0),
             min_confidence: float = 0.0, title: str | None = None, dpi: int = 150) -> None:
    """Save a PNG of the map coloured by inverse pole figure, next to the confidence map.

    Voxels below ``min_confidence`` are grey in the IPF panel. The IPF panel carries the
    colour key (standard triangle, stereographic). Written through the atomic writer.

    Example
    -------
    >>> plot_map("map.png", x, y, 2.5, ud, eul, conf, 225)          # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from xreduce.io.writers import atomic_output

    x = np.asarray(x_um, dtype=np.float64)
    n = len(x)
    table = _columns(n, x, y_um, edge_um, ud, euler_rad, confidence, 0, 0, 0.0)
    if not (0 <= min_confidence <= 1):
        raise ValueError(f"min_confidence: expected a number in [0, 1], got {min_confidence}")
    rgb = ipf_colors(table[:, 7:10], space_group, lattice_parameter, direction)
    conf = table[:, 10]
    rgb[conf < min_confidence] = 0.6
    verts = _triangles(table[:, 3], table[:, 4], table[:, 5], table[:, 6])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    ax = axes[0]
    ax.add_collection(PolyCollection(verts, facecolors=rgb, edgecolors="none"))
    dstr = "".join(f"{c:g}," for c in direction)[:-1]
    ax.set_title(f"IPF colours, sample direction [{dstr}]")
    _draw_key(ax.inset_axes([0.76, 0.02, 0.22, 0.22]), space_group,
              _lattice(space_group, lattice_parameter))
    ax2 = axes[1]
    coll = PolyCollection(verts, array=conf, cmap="viridis", edgecolors="none")
    coll.set_clim(0, 1)
    ax2.add_collection(coll)
    fig.colorbar(coll, ax=ax2, label="confidence")
    ax2.set_title(f"confidence (median {np.median(conf):.3f})" if n else "confidence")
    for a in axes:
        a.set_aspect("equal")
        if n:
            a.set_xlim(verts[..., 0].min(), verts[..., 0].max())
            a.set_ylim(verts[..., 1].min(), verts[..., 1].max())
        a.set_xlabel("x (um)")
        a.set_ylabel("y (um)")
    if title:
        fig.suptitle(title)
    with atomic_output(path_png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
