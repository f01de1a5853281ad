"""Direct chunk reads of bitshuffle-LZ4 HDF5 frames: raw chunks read with
``read_direct_chunk`` and decompressed by our kernel (``xreduce.ext.bitshuffle_lz4``) with the
GIL released and the blocks of a chunk on several OpenMP threads, so that reading overlaps
integration (see ``doc/stack.md``, "Direct chunk reads").

HDF5's own path decompresses one chunk at a time holding h5py's lock; this one gives the same
bytes (tested against it) and is used by :class:`xreduce.io.FrameStack` whenever it applies:
a dataset whose only filter is bitshuffle with LZ4, chunks of whole frames, frames read in
steps of 1 without a crop.

Example
-------
>>> import h5py                                                       # doctest: +SKIP
>>> from xreduce.io.chunks import direct_read_plan, read_frames_direct  # doctest: +SKIP
>>> ds = h5py.File("scan.h5")["/entry/data/data"]                     # doctest: +SKIP
>>> if direct_read_plan(ds):                                          # doctest: +SKIP
...     frames = read_frames_direct(ds, 0, 10)
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BITSHUFFLE_FILTER", "direct_read_plan", "read_frames_direct"]

#: HDF5 filter id of bitshuffle; its 5th option is 2 for LZ4.
BITSHUFFLE_FILTER = 32008
_LZ4 = 2


def direct_read_plan(dataset: Any) -> bool:
    """Whether ``dataset`` (an h5py Dataset) can be read by :func:`read_frames_direct`:
    3D, chunked by whole frames, bitshuffle-LZ4 as its only filter, a plain integer or
    float dtype of 1, 2, 4 or 8 bytes."""
    if dataset.ndim != 3 or dataset.chunks is None or dataset.is_virtual:
        return False
    if tuple(dataset.chunks[1:]) != tuple(dataset.shape[1:]):
        return False
    if dataset.dtype.kind not in "uif" or dataset.dtype.itemsize not in (1, 2, 4, 8):
        return False
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return False
    code, _, options, _ = plist.get_filter(0)
    return code == BITSHUFFLE_FILTER and len(options) >= 5 and options[4] == _LZ4


def read_frames_direct(dataset: Any, start: int, stop: int, out: np.ndarray | None = None,
                       num_threads: int = 0) -> np.ndarray:
    """Frames ``start .. stop - 1`` of a dataset accepted by :func:`direct_read_plan`.

    Parameters
    ----------
    dataset : h5py.Dataset
    start, stop : int
        Frame range, within the dataset.
    out : array, optional
        C-contiguous (stop - start, rows, cols) of the dataset's dtype, filled in place.
    num_threads : int
        OpenMP threads decompressing the blocks of a chunk (0: the OpenMP default).

    Raises
    ------
    ValueError
        A chunk that does not decompress (its frames are named).
    """
    from xreduce.ext import bitshuffle_lz4

    shape = (stop - start,) + tuple(dataset.shape[1:])
    if out is None:
        out = np.empty(shape, dataset.dtype)
    elif out.shape != shape or out.dtype != dataset.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out: expected a C-contiguous {dataset.dtype} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    per_chunk = int(dataset.chunks[0])
    frame_bytes = int(np.prod(shape[1:])) * dataset.dtype.itemsize
    chunk_bytes = per_chunk * frame_bytes
    scratch = None
    raw_buffer = np.empty(0, np.uint8)  # reused: fresh pages per chunk cost page faults
    first_chunk = start // per_chunk * per_chunk
    for chunk_start in range(first_chunk, stop, per_chunk):
        lo, hi = max(start, chunk_start), min(stop, chunk_start + per_chunk)
        stored = dataset.id.get_chunk_info_by_coord((chunk_start, 0, 0)).size
        if raw_buffer.size < stored:
            raw_buffer = np.empty(stored, np.uint8)
        filter_mask, _ = dataset.id.read_direct_chunk((chunk_start, 0, 0),
                                                      out=raw_buffer[:stored])
        buffer = raw_buffer[:stored]
        whole = lo == chunk_start and hi == chunk_start + per_chunk
        target = out[lo - start:hi - start].reshape(-1).view(np.uint8) if whole else None
        if target is None:
            if scratch is None:
                scratch = np.empty(chunk_bytes, np.uint8)
            target = scratch
        if filter_mask & 1:  # the filter was skipped for this chunk: raw bytes
            if buffer.size != chunk_bytes:
                raise ValueError(f"url: chunk of frames {chunk_start}.. in "
                                 f"{dataset.file.filename!r} has {buffer.size} bytes, "
                                 f"expected {chunk_bytes}")
            target[:] = buffer
        else:
            status = bitshuffle_lz4.decompress_chunk(buffer, target, dataset.dtype.itemsize,
                                                     num_threads)
            if status != 0:
                raise ValueError(f"url: the bitshuffle-LZ4 chunk of frames {chunk_start}-"
                                 f"{chunk_start + per_chunk - 1} of {dataset.name!r} in "
                                 f"{dataset.file.filename!r} is damaged (code {status})")
        if not whole:
            frames = target.view(dataset.dtype).reshape((per_chunk,) + shape[1:])
            out[lo - start:hi - start] = frames[lo - chunk_start:hi - chunk_start]
    return out
