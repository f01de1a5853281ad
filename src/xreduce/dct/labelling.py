"""3D connected-component labelling of frame stacks, chunk by chunk along frames.

Two entry points:

- :func:`label` returns a dense int32 label volume, like ``scipy.ndimage.label``;
- :func:`iter_label_statistics` / :func:`label_statistics` stream per-component statistics
  (voxel count, sum, maximum and its position, bounding box) with memory bounded by one chunk
  of frames: no dense label volume is ever held.

Both read the input ``chunk_frames`` frames at a time (NumPy arrays, ``h5py.Dataset`` or any
object with ``shape``, ``dtype`` and slicing), label each chunk with the compiled run-based
union-find kernel (:mod:`xreduce.ext.labelling`) and merge labels across chunk borders from the
runs of the two frames that meet there. With ``wrap=True`` (360-degree scans) the last frame is
also a neighbour of the first.

Lit voxels are ``value > threshold``; with ``threshold=None`` the non-zero voxels (or ``True``
voxels of a boolean mask). NaN is never lit.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from xreduce.ext import labelling as _kernel

#: dtype of the per-component statistics tables.
STATISTICS_DTYPE = np.dtype([
    ("voxels", np.int64),      # number of voxels
    ("sum", np.float64),       # sum of the voxel values (of the mask: 1 per voxel)
    ("maximum", np.float64),   # largest value
    ("argmax", np.int64),      # flat index (frame, row, col) of the maximum; ties: lowest
    ("bbox", np.int64, (6,)),  # frame, row, col minimum, then frame, row, col maximum (inclusive)
])

_KERNEL_DTYPES = (np.uint8, np.uint16, np.int32, np.uint32, np.float32, np.float64)


def _check_stack(volume: Any, name: str = "volume_or_mask") -> Any:
    """Return an indexable 3D stack (NumPy array or lazy dataset) or raise."""
    if not (hasattr(volume, "shape") and hasattr(volume, "dtype") and hasattr(volume, "__getitem__")):
        volume = np.asarray(volume)
    if len(volume.shape) != 3:
        raise ValueError(f"{name}: expected a 3D array (frames, rows, cols), got shape {tuple(volume.shape)}")
    dtype = np.dtype(volume.dtype)
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise TypeError(f"{name}: expected a boolean, integer or floating dtype, got {dtype}")
    return volume


def _check_connectivity(connectivity: int) -> int:
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity: expected 6 or 26, got {connectivity!r}")
    return int(connectivity)


def _check_chunk(chunk_frames: int | None, n_frames: int) -> int:
    if chunk_frames is None:
        return max(n_frames, 1)
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
        raise ValueError(f"chunk_frames: expected a positive integer or None, got {chunk_frames!r}")
    return int(chunk_frames)


def _kernel_block(block: np.ndarray, threshold: float | None) -> tuple[np.ndarray, float]:
    """Make a block the kernel accepts: (C-contiguous array of a kernel dtype, threshold)."""
    block = np.asarray(block)
    if block.dtype == np.bool_:
        if threshold is not None:
            raise ValueError("threshold: must be None for a boolean mask")
        return np.ascontiguousarray(block).view(np.uint8), 0.0
    if threshold is None:
        if np.issubdtype(block.dtype, np.unsignedinteger) and block.dtype in _KERNEL_DTYPES:
            return np.ascontiguousarray(block), 0.0
        return np.ascontiguousarray(np.abs(block) > 0).view(np.uint8), 0.0
    if block.dtype not in _KERNEL_DTYPES:
        if np.issubdtype(block.dtype, np.integer) and block.dtype.itemsize <= 2:
            block = block.astype(np.int32)
        elif block.dtype == np.float16:
            block = block.astype(np.float32)
        else:
            block = block.astype(np.float64)
    return np.ascontiguousarray(block), float(threshold)


def _value_block(block: Any) -> np.ndarray:
    """Values for the statistics kernel: a C-contiguous array of a kernel dtype."""
    block = np.asarray(block)
    if block.dtype == np.bool_:
        return np.ascontiguousarray(block).view(np.uint8)
    if block.dtype not in _KERNEL_DTYPES:
        block = block.astype(np.float64)
    return np.ascontiguousarray(block)


def _frame_runs(row_ptr: np.ndarray, c0: np.ndarray, c1: np.ndarray, labels: np.ndarray,
                frame: int, rows: int) -> tuple[np.ndarray, ...]:
    """The runs of one frame of a labelled block, re-based to start at index 0."""
    ptr = row_ptr[frame * rows: (frame + 1) * rows + 1]
    lo, hi = int(ptr[0]), int(ptr[-1])
    return (np.ascontiguousarray(ptr - lo), c0[lo:hi], c1[lo:hi], labels[lo:hi])


def _edges(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...], connectivity: int) -> np.ndarray:
    return _kernel.frame_edges(a[0], a[1], a[2], np.ascontiguousarray(a[3], dtype=np.int64),
                               b[0], b[1], b[2], np.ascontiguousarray(b[3], dtype=np.int64),
                               connectivity)


def _components(n_nodes: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of a graph given by an (n, 2) edge list."""
    if len(edges) == 0:
        return n_nodes, np.arange(n_nodes, dtype=np.int64)
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                       shape=(n_nodes, n_nodes))
    n, comp = connected_components(graph, directed=False)
    return n, comp.astype(np.int64)


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit="chunk")


def label(volume_or_mask: Any, connectivity: int = 26, wrap: bool = False,
          chunk_frames: int | None = None, threshold: float | None = None,
          progress: bool = False) -> tuple[np.ndarray, int]:
    """Label the connected components of a 3D stack.

    Parameters
    ----------
    volume_or_mask : array-like or h5py.Dataset, shape (frames, rows, cols)
        A boolean mask, or values compared with ``threshold``.
    connectivity : {6, 26}
        6: voxels sharing a face; 26: sharing a face, an edge or a corner.
    wrap : bool
        360-degree scan: the last frame is a neighbour of the first.
    chunk_frames : int, optional
        Read and label this many frames at a time (labels are merged across chunk borders).
        Default: the whole stack at once.
    threshold : float, optional
        Voxels with ``value > threshold`` are lit; None: non-zero voxels.
    progress : bool
        Show a progress bar over chunks.

    Returns
    -------
    labels : int32 ndarray, same shape
        0 on background, 1..n on components, numbered in raster order (frame, row, col) of their
        first voxel, as ``scipy.ndimage.label`` does.
    n : int
        Number of components.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((3, 4, 4), bool); mask[0, 0, 0] = mask[2, 1, 1] = True
    >>> label(mask, wrap=True)[1]
    1
    """
    volume = _check_stack(volume_or_mask)
    connectivity = _check_connectivity(connectivity)
    n_frames, rows, cols = (int(s) for s in volume.shape)
    chunk = _check_chunk(chunk_frames, n_frames)
    out = np.zeros((n_frames, rows, cols), dtype=np.int32)
    if out.size == 0:
        return out, 0
    offset = 0
    pairs = []
    first = last = None
    starts = range(0, n_frames, chunk)
    for start in _progress(starts, len(starts), progress, "labelling"):
        stop = min(start + chunk, n_frames)
        block, thr = _kernel_block(volume[start:stop], threshold)
        row_ptr, c0, c1, labels, n = _kernel.label_runs(block, thr, connectivity, out[start:stop], offset)
        labels = labels + (offset + 1)
        head = _frame_runs(row_ptr, c0, c1, labels, 0, rows)
        if last is not None:
            pairs.append(_edges(last, head, connectivity))
        if first is None:
            first = head
        last = _frame_runs(row_ptr, c0, c1, labels, stop - start - 1, rows)
        offset += n
        if offset > np.iinfo(np.int32).max - 1:
            raise ValueError("volume_or_mask: more than 2**31 - 2 components; use label_statistics")
    if wrap and n_frames > 1:
        pairs.append(_edges(last, first, connectivity))
    pairs = [p for p in pairs if len(p)]
    if not pairs:
        return out, offset
    n, comp = _components(offset + 1, np.concatenate(pairs))
    # number the merged components in the order of their smallest provisional label
    first_label = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_label, comp, np.arange(offset + 1))
    rank = np.empty(n, dtype=np.int32)
    rank[np.argsort(first_label)] = np.arange(n, dtype=np.int32)
    lut = rank[comp]  # provisional label 0 (background) is alone and ranks first: 0
    _kernel.relabel(out, np.ascontiguousarray(lut, dtype=np.int32))
    return out, n - 1


def _merge_statistics(stats: np.ndarray, comp: np.ndarray, n: int) -> np.ndarray:
    """Reduce statistics of nodes sharing a component number."""
    out = np.zeros(n, dtype=STATISTICS_DTYPE)
    np.add.at(out["voxels"], comp, stats["voxels"])
    np.add.at(out["sum"], comp, stats["sum"])
    out["maximum"] = -np.inf
    np.maximum.at(out["maximum"], comp, stats["maximum"])
    out["argmax"] = np.iinfo(np.int64).max
    at_max = stats["maximum"] == out["maximum"][comp]
    np.minimum.at(out["argmax"], comp[at_max], stats["argmax"][at_max])
    out["bbox"][:, :3] = np.iinfo(np.int64).max
    out["bbox"][:, 3:] = -1
    np.minimum.at(out["bbox"][:, :3], comp, stats["bbox"][:, :3])
    np.maximum.at(out["bbox"][:, 3:], comp, stats["bbox"][:, 3:])
    return out


def iter_label_statistics(volume_or_mask: Any, connectivity: int = 26, wrap: bool = False,
                          chunk_frames: int | None = None, threshold: float | None = None,
                          values: Any = None, progress: bool = False) -> Iterator[np.ndarray]:
    """Stream per-component statistics chunk by chunk, without a dense label volume.

    Each yielded table (dtype :data:`STATISTICS_DTYPE`) holds the components that cannot grow
    any more after the chunk just read (those not reaching its last frame; with ``wrap``, those
    not touching frame 0 either). Memory is bounded by one chunk plus the components still open.
    With ``wrap``, the bounding box of a component crossing the wrap spans the whole frame range.

    Parameters
    ----------
    volume_or_mask, connectivity, wrap, chunk_frames, threshold, progress
        As in :func:`label`.
    values : array-like, optional
        Same shape; the values summed and maximised (default: ``volume_or_mask`` itself; a
        boolean mask counts 1 per voxel).

    Yields
    ------
    ndarray of STATISTICS_DTYPE

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.zeros((4, 5, 5), np.float32); vol[1:3, 2, 2] = [3.0, 5.0]
    >>> tables = list(iter_label_statistics(vol, threshold=1.0, chunk_frames=2))
    >>> np.concatenate(tables)["maximum"]
    array([5.])
    """
    volume = _check_stack(volume_or_mask)
    connectivity = _check_connectivity(connectivity)
    if values is not None:
        values = _check_stack(values, "values")
        if tuple(values.shape) != tuple(volume.shape):
            raise ValueError(f"values: expected shape {tuple(volume.shape)}, got {tuple(values.shape)}")
    n_frames, rows, cols = (int(s) for s in volume.shape)
    chunk = _check_chunk(chunk_frames, n_frames)
    if n_frames * rows * cols == 0:
        return
    frame_size = rows * cols
    open_stats = np.zeros(0, dtype=STATISTICS_DTYPE)
    last = first = None
    starts = range(0, n_frames, chunk)
    for start in _progress(starts, len(starts), progress, "labelling"):
        stop = min(start + chunk, n_frames)
        raw = np.asarray(volume[start:stop])
        block, thr = _kernel_block(raw, threshold)
        row_ptr, c0, c1, labels, n = _kernel.label_runs(block, thr, connectivity)
        vblock = _value_block(raw if values is None else values[start:stop])
        local = np.zeros(n, dtype=STATISTICS_DTYPE)
        (local["voxels"], local["sum"], local["maximum"], local["argmax"],
         local["bbox"]) = _kernel.run_statistics(vblock, row_ptr, c0, c1, labels, n)
        local["argmax"] += start * frame_size
        local["bbox"][:, [0, 3]] += start
        m = len(open_stats)
        labels = labels + m  # nodes: open components 0..m-1, then this chunk's labels
        head = _frame_runs(row_ptr, c0, c1, labels, 0, rows)
        edges = _edges(last, head, connectivity) if last is not None else np.zeros((0, 2), np.int64)
        n_comp, comp = _components(m + n, edges)
        merged = _merge_statistics(np.concatenate([open_stats, local]), comp, n_comp)
        tail = _frame_runs(row_ptr, c0, c1, labels, stop - start - 1, rows)
        keep = np.zeros(n_comp, dtype=bool)
        if stop < n_frames or wrap:
            keep[comp[tail[3]]] = True
        if wrap:
            keep |= merged["bbox"][:, 0] == 0
        if (~keep).any():
            yield merged[~keep]
        new_id = np.cumsum(keep) - 1
        open_stats = merged[keep]
        last = tail[:3] + (new_id[comp[tail[3]]],)
        if first is None:
            first = head
        if wrap:
            first = first[:3] + (new_id[comp[first[3]]],)
    if len(open_stats) == 0:
        return
    if wrap and n_frames > 1:
        n_comp, comp = _components(len(open_stats), _edges(last, first, connectivity))
        open_stats = _merge_statistics(open_stats, comp, n_comp)
    yield open_stats


def label_statistics(volume_or_mask: Any, connectivity: int = 26, wrap: bool = False,
                     chunk_frames: int | None = None, threshold: float | None = None,
                     values: Any = None, progress: bool = False) -> np.ndarray:
    """All component statistics of :func:`iter_label_statistics`, sorted by ``argmax``.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((2, 3, 3), bool); mask[0, 0, 0] = mask[1, 2, 2] = True
    >>> label_statistics(mask, connectivity=6)["voxels"]
    array([1, 1])
    """
    tables = list(iter_label_statistics(volume_or_mask, connectivity, wrap, chunk_frames,
                                        threshold, values, progress))
    if not tables:
        return np.zeros(0, dtype=STATISTICS_DTYPE)
    table = np.concatenate(tables)
    return table[np.argsort(table["argmax"], kind="stable")]
