"""Double-threshold 3D segmentation of a DCT stack into difspots.

The rules (see ``doc/segmentation.md``):

1. **Seeds.** Voxels ``> seed_threshold`` are labelled into connected components (6 or 26
   connectivity); components with fewer than ``min_seed_voxels`` voxels are dropped.
2. **Maximum.** Each seed's maximum M sits at p; on ties p is the lowest flat index
   ``(frame, row, col)`` in raster order.
3. **Grow threshold.** ``t = tau * M``, clamped to ``grow_limits = (low, high)`` counts when
   given (the ESRF DCT code clamps ``0.1 * M`` to [7, 20]), and never above M so that p is
   always in its blob.
4. **Blob.** The connected component of voxels ``>= t`` containing p, inside the box
   ``p +- bb_max`` (half-sizes per axis, so the box is ``2 * bb_max + 1`` voxels wide, the DCT
   "box of size 2 x bb_max around M"), clipped to the stack. It is found by a bounded flood fill
   from p in a box that starts at ``p +- box_increment`` and whose faces move out by
   ``box_increment`` while the blob touches them, up to ``bb_max``; the result is the same as a
   fill in the full box, only cheaper.
5. **Overlaps.** Blobs are grown independently (in parallel), then visited in order of
   decreasing M, then increasing flat index of p. A blob whose p was already claimed by an
   earlier blob is absorbed (it is the same spot seen from a weaker seed); otherwise it keeps the
   voxels no earlier blob claimed, is rejected when their number is outside
   ``[min_size, max_size]`` (claiming nothing), and else is accepted and claims them. Spots are
   therefore disjoint and the result does not depend on thread scheduling or chunking.
6. Accepted spots are numbered 1..n in raster order of p.

NaN voxels are never lit and never join a blob.

Resuming: with ``checkpoint=<folder>``, the seeds (after the labelling pass over the stack) and
the blobs of each finished window of frames are saved there, each file written under a
temporary name and renamed when complete. Calling :func:`segment` again with the same folder,
parameters and stack skips the work already saved; the result is identical to an uninterrupted
run. A checkpoint of another stack (other shape, dtype, sampled-frame checksum, file size or
time) or other parameters is refused, never mixed (``restart=True`` starts again); a damaged
file in it is computed again; links are never followed (doc/robustness.md). The folder is the
caller's to delete once the result is safely stored.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xreduce.dct.labelling import _check_chunk, _check_connectivity, _check_stack, _value_block
from xreduce.dct.labelling import STATISTICS_DTYPE, label_statistics
from xreduce.ext import segmentation as _kernel
from xreduce.limits import check_num_threads


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Voxels of the difspots found by :func:`segment`.

    Attributes
    ----------
    shape : tuple of 3 ints
        Stack shape (frames, rows, cols).
    dtype : numpy.dtype
        Stack dtype.
    peaks : int64 ndarray (n, 3)
        (frame, row, col) of each spot's seed maximum M.
    peak_values : float64 ndarray (n,)
        M of each spot.
    thresholds : float64 ndarray (n,)
        Grow threshold used for each spot.
    offsets : int64 ndarray (n + 1,)
        Spot ``i`` owns ``voxels[offsets[i]:offsets[i + 1]]``.
    voxels : int64 ndarray
        Flat indices into the stack, ascending within each spot.
    values : float64 ndarray
        Stack values at ``voxels``.
    parameters : dict
        The arguments of :func:`segment`.
    """

    shape: tuple
    dtype: np.dtype
    peaks: np.ndarray
    peak_values: np.ndarray
    thresholds: np.ndarray
    offsets: np.ndarray
    voxels: np.ndarray
    values: np.ndarray
    parameters: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.peaks)

    def spot(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates (k, 3) as (frame, row, col) and values (k,) of spot ``index`` (0-based)."""
        part = slice(self.offsets[index], self.offsets[index + 1])
        coords = np.stack(np.unravel_index(self.voxels[part], self.shape), axis=1)
        return coords, self.values[part]


def _three_positive(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size != 3) or not np.issubdtype(arr.dtype, np.integer) \
            or arr.dtype == np.bool_:
        raise ValueError(f"{name}: expected a positive integer or 3 of them (frame, row, col), got {value!r}")
    arr = np.broadcast_to(arr.astype(np.int64), (3,)).copy()
    if (arr <= 0).any():
        raise ValueError(f"{name}: expected positive integers, got {value!r}")
    return arr


def _check_arguments(seed_threshold, tau, grow_limits, min_seed_voxels, min_size, max_size):
    if not np.isscalar(seed_threshold) or not np.isfinite(float(seed_threshold)):
        raise ValueError(f"seed_threshold: expected a finite number, got {seed_threshold!r}")
    if not np.isscalar(tau) or not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau: expected a number in [0, 1], got {tau!r}")
    if grow_limits is not None:
        if len(grow_limits) != 2 or not float(grow_limits[0]) <= float(grow_limits[1]):
            raise ValueError(f"grow_limits: expected (low, high) with low <= high, got {grow_limits!r}")
    for name, value in (("min_seed_voxels", min_seed_voxels), ("min_size", min_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer))
                                 or max_size < min_size):
        raise ValueError(f"max_size: expected None or an integer >= min_size ({min_size}), got {max_size!r}")


class _Checkpoint:
    """The saved state of one segmentation run in a folder (see the module notes).

    Nothing in the folder is trusted blindly: the folder and its files must be plain (a
    symbolic link is never followed), the run's state (parameters and the identity of the
    stack: shape, dtype, CRC-32 of sampled frames, file size and time) must equal the stored
    one, and an unreadable file is computed again.
    """

    def __init__(self, folder: str | os.PathLike, state: dict, restart: bool = False):
        from xreduce.io.run_identity import identity_differences

        self.folder = os.fspath(folder)
        if os.path.islink(self.folder):
            raise OSError(f"checkpoint: {self.folder!r} is a symbolic link; xreduce never "
                          "follows links it did not create: delete it")
        if restart and os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        path = self._path("state.json")
        stored = self._read_state(path)
        if stored is None:
            self._write(path, lambda f: f.write(json.dumps(state).encode()))
        elif stored != state:
            changed = [key for key in ("parameters", "shape", "dtype", "chunk_frames", "source")
                       if stored.get(key) != state.get(key)]
            changed += identity_differences(stored.get("identity") or {},
                                            state.get("identity") or {})
            raise RunChangedError(
                f"checkpoint: {self.folder!r} holds an unfinished run of another stack or "
                f"other parameters (changed: {', '.join(dict.fromkeys(changed)) or 'format'}); "
                "resuming would mix two runs. Start again with restart=True (--restart), or "
                "delete the folder")

    def _read_state(self, path: str) -> dict | None:
        from xreduce.io.writers import check_regular_file

        if not check_regular_file(path, "checkpoint state"):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
        except (ValueError, UnicodeDecodeError):
            raise RunChangedError(f"checkpoint: {path!r} is damaged; delete the folder "
                                  f"{self.folder!r} or start again with restart=True "
                                  "(--restart)") from None
        return stored if isinstance(stored, dict) else {}

    @staticmethod
    def _write(path: str, write) -> None:
        from xreduce.io.writers import atomic_output

        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            write(f)

    def _path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def _load(self, name: str):
        """The arrays of a saved file, or None when absent or unreadable (computed again)."""
        from xreduce.io.writers import check_regular_file

        path = self._path(name)
        if not check_regular_file(path, "checkpoint file"):
            return None
        try:
            saved = np.load(path, allow_pickle=False)
            if isinstance(saved, np.ndarray):
                return saved
            with saved:
                return {key: saved[key] for key in saved.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
            return None

    def load_seeds(self) -> np.ndarray | None:
        seeds = self._load("seeds.npy")
        if seeds is None or seeds.dtype != STATISTICS_DTYPE or seeds.ndim != 1:
            return None
        return seeds

    def save_seeds(self, seeds: np.ndarray) -> None:
        self._write(self._path("seeds.npy"), lambda f: np.save(f, seeds))

    def load_window(self, start: int) -> tuple | None:
        saved = self._load(f"window_{start:09d}.npz")
        if not isinstance(saved, dict) or set(saved) != {"sizes", "voxels", "values"}:
            return None
        sizes, voxels, values = saved["sizes"], saved["voxels"], saved["values"]
        if (sizes.ndim != 1 or voxels.shape != values.shape or voxels.ndim != 1
                or np.any(sizes < 0) or int(sizes.sum()) != len(voxels)):
            return None
        return sizes, voxels, values

    def save_window(self, start: int, sizes: np.ndarray, voxels: np.ndarray,
                    values: np.ndarray) -> None:
        self._write(self._path(f"window_{start:09d}.npz"),
                    lambda f: np.savez(f, sizes=sizes, voxels=voxels, values=values))


class RunChangedError(ValueError):
    """A checkpoint holds an unfinished run of another stack or other parameters."""


def segment(stack: Any, seed_threshold: float, tau: float, bb_max: int | tuple[int, int, int],
            grow_limits: tuple[float, float] | None = None, min_seed_voxels: int = 1,
            min_size: int = 1, max_size: int | None = None, connectivity: int = 26,
            box_increment: int | tuple[int, int, int] | None = None,
            chunk_frames: int | None = None, num_threads: int = 0,
            progress: bool = False, checkpoint: str | os.PathLike | None = None,
            source: str | None = None, restart: bool = False) -> Segmentation:
    """Segment a stack into difspots with the double threshold.

    Parameters
    ----------
    stack : array-like or h5py.Dataset, shape (frames, rows, cols)
        Background-corrected intensities.
    seed_threshold : float
        Seeds are the connected components of ``stack > seed_threshold``.
    tau : float in [0, 1]
        Grow threshold relative to each seed's maximum M.
    bb_max : int or (frames, rows, cols)
        Maximum half-size of a spot's box around M (the box is ``2 * bb_max + 1`` wide).
    grow_limits : (low, high), optional
        Clamp ``tau * M`` to these absolute values.
    min_seed_voxels : int
        Drop seeds with fewer voxels.
    min_size, max_size : int
        Keep spots with ``min_size <= voxels <= max_size`` (max_size None: no upper bound).
    connectivity : {6, 26}
        For seeds and blobs.
    box_increment : int or 3 ints, optional
        First half-size and growth step of the box; default ``max(1, bb_max // 2)``. It changes
        the speed, never the result.
    chunk_frames : int, optional
        Read the stack this many frames at a time (seeds are labelled chunk by chunk and merged
        across chunk borders; blobs are grown window by window). Default: all at once, which
        for a lazy ``h5py.Dataset`` means reading it whole (twice): give a chunk size there.
    num_threads : int
        OpenMP threads for the growth (0 or None: every core; more than the cores are capped
        to them, doc/limits.md).
    progress : bool
        Progress bars.
    checkpoint : path, optional
        Folder where the run saves its seeds and finished windows, and from which a run of the
        same stack with the same parameters resumes (see the module notes).
    source : str, optional
        A name of the stack (e.g. its file URL ``file.h5::/path``), stored in the checkpoint
        and compared when resuming, with the stack's identity (shape, dtype, CRC-32 of
        sampled frames, and the file's size and modification time), the parameters and
        ``chunk_frames``: a checkpoint of another stack is refused, never mixed.
    restart : bool
        Delete what ``checkpoint`` holds and start again.

    Returns
    -------
    Segmentation

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.zeros((10, 20, 20), np.float32)
    >>> stack[4:7, 8:11, 8:11] = 5.0; stack[5, 9, 9] = 50.0
    >>> result = segment(stack, seed_threshold=20.0, tau=0.1, bb_max=4)
    >>> len(result), result.peaks[0].tolist(), int(result.offsets[1])
    (1, [5, 9, 9], 27)
    """
    stack = _check_stack(stack, "stack")
    if np.dtype(stack.dtype) == np.bool_:
        raise TypeError("stack: expected intensities (integer or floating dtype), got bool")
    if 0 in tuple(stack.shape):
        raise ValueError(f"stack: expected a non-empty stack, got shape {tuple(stack.shape)}")
    _check_arguments(seed_threshold, tau, grow_limits, min_seed_voxels, min_size, max_size)
    bb = _three_positive(bb_max, "bb_max")
    increment = np.maximum(bb // 2, 1) if box_increment is None else _three_positive(box_increment, "box_increment")
    connectivity = _check_connectivity(connectivity)
    shape = tuple(int(s) for s in stack.shape)
    chunk = _check_chunk(chunk_frames, shape[0])
    parameters = dict(seed_threshold=float(seed_threshold), tau=float(tau), bb_max=bb.tolist(),
                      grow_limits=None if grow_limits is None else [float(g) for g in grow_limits],
                      min_seed_voxels=int(min_seed_voxels), min_size=int(min_size),
                      max_size=None if max_size is None else int(max_size),
                      connectivity=connectivity, box_increment=increment.tolist())

    num_threads = check_num_threads(num_threads, "num_threads")
    if not isinstance(restart, bool):
        raise TypeError(f"restart: expected True or False, got {restart!r}")

    saved = None
    if checkpoint is not None:
        from xreduce.io.run_identity import stack_identity

        saved = _Checkpoint(checkpoint, dict(parameters=parameters, shape=list(shape),
                                             dtype=np.dtype(stack.dtype).str,
                                             chunk_frames=int(chunk), source=source,
                                             identity=stack_identity(stack, source)),
                            restart=restart)

    # 1-3: seeds, their maxima and grow thresholds
    seeds = None if saved is None else saved.load_seeds()
    if seeds is None:
        seeds = label_statistics(stack, connectivity, chunk_frames=chunk,
                                 threshold=seed_threshold, progress=progress)
        if saved is not None:
            saved.save_seeds(seeds)
    seeds = seeds[seeds["voxels"] >= min_seed_voxels]
    top = seeds["maximum"]
    peak_flat = seeds["argmax"]
    thresholds = float(tau) * top
    if grow_limits is not None:
        thresholds = np.clip(thresholds, float(grow_limits[0]), float(grow_limits[1]))
    thresholds = np.minimum(thresholds, top)
    peaks = np.stack(np.unravel_index(peak_flat, shape), axis=1).astype(np.int64) if len(seeds) \
        else np.zeros((0, 3), np.int64)

    # 4: grow every blob, window of frames by window of frames
    n = len(seeds)
    sizes = np.zeros(n, np.int64)
    parts_vox, parts_val = [], []
    windows = range(0, shape[0], chunk)
    if progress:
        from tqdm.auto import tqdm
        windows = tqdm(windows, desc="growing", unit="chunk")
    for start in windows:
        stop = min(start + chunk, shape[0])
        mine = np.nonzero((peaks[:, 0] >= start) & (peaks[:, 0] < stop))[0]
        if len(mine) == 0:
            continue
        grown = None if saved is None else saved.load_window(start)
        if grown is not None and len(grown[0]) != len(mine):
            grown = None  # a damaged or foreign file: computed again
        if grown is None:
            lo, hi = max(start - int(bb[0]), 0), min(stop + int(bb[0]), shape[0])
            slab = _value_block(stack[lo:hi])
            offsets, voxels, values, _ = _kernel.grow_blobs(
                slab, lo, shape[0], np.ascontiguousarray(peaks[mine]),
                np.ascontiguousarray(thresholds[mine]), increment, bb, connectivity, num_threads)
            grown = np.diff(offsets), voxels, values
            if saved is not None:
                saved.save_window(start, *grown)
        sizes[mine], voxels, values = grown
        parts_vox.append(voxels)
        parts_val.append(values)
    # seeds are sorted by peak flat index, so the windows hold consecutive seeds, in order
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    voxels = np.concatenate(parts_vox) if parts_vox else np.zeros(0, np.int64)
    values = np.concatenate(parts_val) if parts_val else np.zeros(0, np.float64)

    # 5: overlaps, sizes
    order = np.lexsort((peak_flat, -top)).astype(np.int64)
    keep, status = _kernel.resolve_overlaps(
        order, offsets, voxels, np.ascontiguousarray(peak_flat, dtype=np.int64), int(min_size),
        np.iinfo(np.int64).max if max_size is None else int(max_size))
    accepted = np.nonzero(status == 0)[0]  # seeds are sorted by peak flat index: raster order
    blob_of_voxel = np.repeat(np.arange(n), sizes)
    kept_sizes = np.bincount(blob_of_voxel, weights=keep, minlength=n).astype(np.int64)[accepted]
    selected = keep.astype(bool) & (status == 0)[blob_of_voxel]
    new_offsets = np.zeros(len(accepted) + 1, np.int64)
    np.cumsum(kept_sizes, out=new_offsets[1:])
    return Segmentation(shape=shape, dtype=np.dtype(stack.dtype), peaks=peaks[accepted],
                        peak_values=top[accepted], thresholds=thresholds[accepted],
                        offsets=new_offsets, voxels=voxels[selected], values=values[selected],
                        parameters=parameters)
