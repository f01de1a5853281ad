"""Difspots: properties of segmented spots, and their HDF5 file.

A :class:`~xreduce.dct.segment.Segmentation` holds each spot's voxels and values; this module
turns them into the DCT difspot table and per-spot arrays, and writes / reads them.

Conventions: indices are 0-based (frame, row, col); X is the column, Y the row, Image the frame.
``Data`` holds the stack values on the spot's voxels and 0 elsewhere in its bounding box,
``Mask`` is 1 on the voxels, ``Projection`` is ``Data`` summed over frames, so
``Projection.sum() == Data.sum() == Integral``.

File layout (one NeXus HDF5 file, viewable in ``silx view``; ``@default`` leads from the root
to the overview image)::

    /                               NXroot, @default "difspots"
    /difspots                       NXentry, @default "overview"; attrs: stack_shape,
                                    stack_dtype, n_spots, parameters (JSON)
        overview/projection         NXdata: every spot summed over frames (rows, cols)
        table/<Column>              one dataset per column, attrs: units, description
        spots/<id 6 digits>/Data     (frames, rows, cols) in the stack dtype, gzip + shuffle
                           /Mask     uint8, same shape
                           /Projection (rows, cols) float64
        voxels, values, offsets     all spots' flat voxel indices and values (spot i owns
                                    offsets[i]:offsets[i+1]), to rebuild the Segmentation
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xreduce.dct.segment import Segmentation

#: Column name -> (dtype, shape, units, description) of the difspot table.
COLUMNS = {
    "id": (np.int64, (), "", "spot number, 1..n in raster order of the seed maximum"),
    "StartImage": (np.int64, (), "frame", "first frame of the spot (0-based)"),
    "EndImage": (np.int64, (), "frame", "last frame of the spot (0-based, inclusive)"),
    "MaxImage": (np.int64, (), "frame", "frame of the brightest voxel"),
    "Area": (np.int64, (), "voxel", "number of voxels"),
    "BoundingBox": (np.int64, (6,), "voxel",
                    "origin (frame, row, col) then size (frames, rows, cols)"),
    "CentroidX": (np.float64, (), "pixel", "intensity-weighted mean column"),
    "CentroidY": (np.float64, (), "pixel", "intensity-weighted mean row"),
    "CentroidImage": (np.float64, (), "frame", "intensity-weighted mean frame"),
    "Integral": (np.float64, (), "counts", "sum of the voxel values"),
    "MaxIntensity": (np.float64, (), "counts", "largest voxel value"),
    "MaxIndex": (np.int64, (3,), "voxel",
                 "(frame, row, col) of the largest value; ties: the first in raster order"),
    "Threshold": (np.float64, (), "counts", "grow threshold of the double threshold"),
}
TABLE_DTYPE = np.dtype([(name, dtype, shape) for name, (dtype, shape, _, _) in COLUMNS.items()])


@dataclass(frozen=True)
class Difspot:
    """One diffraction spot: a row of the table plus its arrays.

    ``bounding_box`` is (frame, row, col, frames, rows, cols); ``centroid`` is (X, Y, Image);
    ``max_index`` is (frame, row, col). ``data``/``mask``/``projection`` are None when read
    without arrays.
    """

    id: int
    start_image: int
    end_image: int
    max_image: int
    area: int
    bounding_box: tuple
    centroid: tuple
    integral: float
    max_intensity: float
    max_index: tuple
    threshold: float
    data: np.ndarray | None = None
    mask: np.ndarray | None = None
    projection: np.ndarray | None = None

    @classmethod
    def from_row(cls, row: np.void, data=None, mask=None, projection=None) -> "Difspot":
        return cls(int(row["id"]), int(row["StartImage"]), int(row["EndImage"]),
                   int(row["MaxImage"]), int(row["Area"]), tuple(int(v) for v in row["BoundingBox"]),
                   (float(row["CentroidX"]), float(row["CentroidY"]), float(row["CentroidImage"])),
                   float(row["Integral"]), float(row["MaxIntensity"]),
                   tuple(int(v) for v in row["MaxIndex"]), float(row["Threshold"]),
                   data, mask, projection)


def properties(segmentation: Segmentation) -> np.ndarray:
    """The difspot table (dtype :data:`TABLE_DTYPE`), one row per spot, computed at once.

    Centroids are weighted by the voxel values; a spot whose values sum to zero or less (only
    possible with ``tau = 0`` on negative data) gets the unweighted centroid.

    Examples
    --------
    >>> import numpy as np
    >>> from xreduce.dct.segment import segment
    >>> stack = np.zeros((5, 8, 8)); stack[2, 3, 3:5] = [4.0, 2.0]
    >>> table = properties(segment(stack, 1.0, 0.1, 2))
    >>> float(table["CentroidX"][0]), float(table["Integral"][0])
    (3.3333333333333335, 6.0)
    """
    seg = segmentation
    n = len(seg)
    table = np.zeros(n, dtype=TABLE_DTYPE)
    if n == 0:
        return table
    sizes = np.diff(seg.offsets)
    starts = seg.offsets[:-1]
    spot = np.repeat(np.arange(n), sizes)
    coords = np.unravel_index(seg.voxels, seg.shape)
    lows = [np.minimum.reduceat(axis, starts) for axis in coords]
    highs = [np.maximum.reduceat(axis, starts) for axis in coords]
    integral = np.bincount(spot, weights=seg.values, minlength=n)
    weighted = integral > 0
    centroid = []
    for axis in coords:
        mean = np.bincount(spot, weights=axis, minlength=n) / sizes
        moment = np.bincount(spot, weights=axis * seg.values, minlength=n)
        centroid.append(np.where(weighted, moment / np.where(weighted, integral, 1.0), mean))
    vmax = np.maximum.reduceat(seg.values, starts)
    at_max = np.flatnonzero(seg.values == vmax[spot])
    _, first = np.unique(spot[at_max], return_index=True)  # voxels ascend: first = lowest index
    max_flat = seg.voxels[at_max[first]]
    table["id"] = np.arange(1, n + 1)
    table["StartImage"], table["EndImage"] = lows[0], highs[0]
    table["MaxIndex"] = np.stack(np.unravel_index(max_flat, seg.shape), axis=1)
    table["MaxImage"] = table["MaxIndex"][:, 0]
    table["Area"] = sizes
    table["BoundingBox"] = np.stack(lows + [h - lo + 1 for h, lo in zip(highs, lows)], axis=1)
    table["CentroidImage"], table["CentroidY"], table["CentroidX"] = centroid
    table["Integral"] = integral
    table["MaxIntensity"] = vmax
    table["Threshold"] = seg.thresholds
    return table


def spot_arrays(segmentation: Segmentation, index: int,
                bounding_box: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data, Mask and Projection of spot ``index`` (0-based), cropped to its bounding box."""
    seg = segmentation
    coords, values = seg.spot(index)
    if bounding_box is None:
        origin = coords.min(axis=0)
        size = coords.max(axis=0) - origin + 1
    else:
        origin, size = np.asarray(bounding_box[:3]), np.asarray(bounding_box[3:])
    local = tuple((coords - origin).T)
    data = np.zeros(tuple(size), dtype=seg.dtype)
    data[local] = values.astype(seg.dtype)
    mask = np.zeros(tuple(size), dtype=np.uint8)
    mask[local] = 1
    projection = data.sum(axis=0, dtype=np.float64)
    return data, mask, projection


def difspots(segmentation: Segmentation, arrays: bool = True) -> list[Difspot]:
    """Every spot of a segmentation as a :class:`Difspot`.

    Examples
    --------
    >>> import numpy as np
    >>> from xreduce.dct.segment import segment
    >>> stack = np.zeros((5, 8, 8)); stack[1:3, 3, 3] = [4.0, 2.0]
    >>> spot = difspots(segment(stack, 1.0, 0.1, 2))[0]
    >>> spot.bounding_box, spot.projection.tolist()
    ((1, 3, 3, 2, 1, 1), [[6.0]])
    """
    table = properties(segmentation)
    out = []
    for i, row in enumerate(table):
        parts = spot_arrays(segmentation, i, row["BoundingBox"]) if arrays else (None, None, None)
        out.append(Difspot.from_row(row, *parts))
    return out


def _compressed(group: Any, name: str, data: np.ndarray, compression: str | None) -> None:
    """A dataset, compressed (with shuffle) unless empty: HDF5 cannot chunk empty datasets."""
    if compression is None or data.size == 0:
        group.create_dataset(name, data=data)
    else:
        group.create_dataset(name, data=data, compression=compression, shuffle=True)


def _write_overview(entry: Any, seg: Segmentation) -> None:
    """NXdata ``overview``: every spot's values summed over frames into one detector image
    (what ``silx view`` shows first)."""
    rows, cols = int(seg.shape[1]), int(seg.shape[2])
    pixel = seg.voxels % (rows * cols)
    image = np.bincount(pixel, weights=seg.values, minlength=rows * cols).reshape(rows, cols)
    group = entry.create_group("overview")
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = "projection"
    data = group.create_dataset("projection", data=image)
    data.attrs["interpretation"] = "image"
    data.attrs["units"] = "counts"
    data.attrs["long_name"] = "sum over frames of every difspot's values"


def write_difspots(path: str | os.PathLike, segmentation: Segmentation,
                   compression: str | None = "gzip", overwrite: bool = True,
                   progress: bool = False) -> Path:
    """Write the table, per-spot arrays and voxel lists to one HDF5 file.

    The file is written under a temporary name in the same folder and renamed when complete
    (:func:`xreduce.io.atomic_output`): an interrupted write never leaves a partial file at
    ``path``.

    Parameters
    ----------
    compression : {"gzip", "lzf", None}
        Filter of the per-spot arrays and voxel lists (with shuffle).
    overwrite : bool
        Replace an existing file; False raises FileExistsError before any work.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from xreduce.dct.segment import segment
    >>> stack = np.zeros((5, 8, 8)); stack[2, 3, 3] = 9.0
    >>> path = write_difspots(os.path.join(tempfile.mkdtemp(), "d.h5"), segment(stack, 1.0, 0.5, 2))
    >>> read_difspots(path)["Integral"].tolist()
    [9.0]
    """
    import h5py

    from xreduce.io import atomic_output
    from xreduce.io.writers import nexus_entry
    if compression not in (None, "gzip", "lzf"):
        raise ValueError(f"compression: expected None, 'gzip' or 'lzf', got {compression!r}")
    from xreduce.dct.partial_file import reserve_space

    seg = segmentation
    table = properties(seg)
    size = table["BoundingBox"][:, 3:].astype(np.int64)
    boxes = int(size.prod(axis=1).sum())                    # Data and Mask
    projections = int((size[:, 1] * size[:, 2]).sum())     # Projection, float64
    overview = int(seg.shape[1]) * int(seg.shape[2])
    with atomic_output(path, overwrite=overwrite) as tmp:
        # an upper bound of the file (uncompressed): a full disk is an error before HDF5 writes
        reserve_space(os.fspath(path), boxes * (np.dtype(seg.dtype).itemsize + 1)
                      + 8 * (projections + overview) + 16 * len(seg.voxels) + table.nbytes
                      + 1024 * len(seg) + 2**20, "segment.output")
        with h5py.File(tmp, "w") as h5:
            root = nexus_entry(h5, "overview", name="difspots")
            _write_overview(root, seg)
            root.attrs["stack_shape"] = np.asarray(seg.shape, np.int64)
            root.attrs["stack_dtype"] = np.dtype(seg.dtype).str
            root.attrs["n_spots"] = len(seg)
            root.attrs["parameters"] = json.dumps(seg.parameters)
            group = root.create_group("table")
            group.attrs["NX_class"] = "NXcollection"
            for name, (_, _, units, description) in COLUMNS.items():
                dset = group.create_dataset(name, data=table[name])
                dset.attrs["units"] = units
                dset.attrs["description"] = description
            for name in ("voxels", "values", "offsets"):
                _compressed(root, name, getattr(seg, name), compression)
            root.create_dataset("peaks", data=seg.peaks)
            root.create_dataset("peak_values", data=seg.peak_values)
            spots = root.create_group("spots")
            spots.attrs["NX_class"] = "NXcollection"
            indices = range(len(seg))
            if progress:
                from tqdm.auto import tqdm
                indices = tqdm(indices, desc="writing difspots", unit="spot")
            for i in indices:
                data, mask, projection = spot_arrays(seg, i, table["BoundingBox"][i])
                spot = spots.create_group(f"{i + 1:06d}")
                for name, arr in (("Data", data), ("Mask", mask), ("Projection", projection)):
                    _compressed(spot, name, arr, compression)
    return Path(path)


def read_difspots(path: str | os.PathLike, as_objects: bool = False,
                  arrays: bool = True) -> np.ndarray | list[Difspot]:
    """Read a difspot file.

    Parameters
    ----------
    as_objects : bool
        False: the table as a structured NumPy array (dtype :data:`TABLE_DTYPE`).
        True: a list of :class:`Difspot`.
    arrays : bool
        With ``as_objects``, also read Data, Mask and Projection.
    """
    import h5py
    with h5py.File(path, "r") as h5:
        group = h5["difspots/table"]
        n = int(h5["difspots"].attrs["n_spots"])
        table = np.zeros(n, dtype=TABLE_DTYPE)
        for name in COLUMNS:
            table[name] = group[name][()]
        if not as_objects:
            return table
        spots = h5["difspots/spots"]
        out = []
        for row in table:
            parts = (None, None, None)
            if arrays:
                spot = spots[f"{int(row['id']):06d}"]
                parts = (spot["Data"][()], spot["Mask"][()], spot["Projection"][()])
            out.append(Difspot.from_row(row, *parts))
        return out


def read_segmentation(path: str | os.PathLike) -> Segmentation:
    """Rebuild the :class:`Segmentation` stored in a difspot file."""
    import h5py
    with h5py.File(path, "r") as h5:
        root = h5["difspots"]
        return Segmentation(
            shape=tuple(int(s) for s in root.attrs["stack_shape"]),
            dtype=np.dtype(root.attrs["stack_dtype"]), peaks=root["peaks"][()],
            peak_values=root["peak_values"][()], thresholds=root["table/Threshold"][()],
            offsets=root["offsets"][()], voxels=root["voxels"][()], values=root["values"][()],
            parameters=json.loads(root.attrs["parameters"]))
