"""Direct chunk reads of bitshuffle-LZ4 HDF5 frames: raw chunks read with
``read_direct_chunk`` (:func:`read_raw_chunks`, the I/O) and decompressed by our kernel
(``xreduce.ext.bitshuffle_lz4``) with the GIL released and the blocks of all the chunks on
OpenMP threads (:meth:`RawChunks.decompress_into`), possibly later and on another thread (see
``doc/stack.md``, "Direct chunk reads").

HDF5's own path decompresses one chunk at a time holding h5py's lock; this one gives the same
bytes (tested against it) and is used by :class:`xreduce.io.FrameStack` whenever it applies:
a dataset whose only filter is bitshuffle with LZ4, chunks of whole frames, frames read in
steps of 1 without a crop.

Example
-------
>>> import h5py                                                       # doctest: +SKIP
>>> from xreduce.io.chunks import (direct_read_plan, read_frames_direct,  # doctest: +SKIP
...                                 read_raw_chunks)
>>> ds = h5py.File("scan.h5")["/entry/data/data"]                     # doctest: +SKIP
>>> if direct_read_plan(ds):                                          # doctest: +SKIP
...     frames = read_frames_direct(ds, 0, 10)
...     raw = read_raw_chunks(ds, 10, 20)  # read now (I/O), decompressed later, anywhere
...     more = raw.decompress_into(num_threads=2)
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from xreduce.limits import check_allocation

__all__ = ["BITSHUFFLE_FILTER", "ChunkBuffers", "CompressedFrames", "RawChunks", "aligned_empty",
           "direct_read_plan", "read_frames_direct", "read_raw_chunks"]

#: HDF5 filter id of bitshuffle; its 5th option is 2 for LZ4.
BITSHUFFLE_FILTER = 32008
_LZ4 = 2


def aligned_empty(shape: int | tuple, dtype: Any, align: int = 64) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on an ``align``-byte boundary:
    frames decompressed there are written with non-temporal stores (64 bytes at a time,
    aligned), which NumPy's own allocations (16-byte aligned) do not allow.

    >>> aligned_empty((2, 3), np.int32).ctypes.data % 64
    0
    """
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    memory = np.empty(nbytes + align, np.uint8)
    start = -memory.ctypes.data % align
    return memory[start:start + nbytes].view(dtype).reshape(shape)


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


_BUFFER_STEP = 1 << 16


class ChunkBuffers:
    """Byte buffers that raw chunks are read into, reused from one read to the next (safe
    across threads). A fresh buffer for every chunk costs page faults and the kernel's
    zeroing of new pages: ~18 % of the decompression's profile on Pilatus 2M frames
    (doc/stack.md, "Direct chunk reads").

    Parameters
    ----------
    keep_bytes : int
        Bytes of buffers kept for reuse at most (those given back beyond are dropped): the
        chunks a run has in flight (~4 chunks of ~32 MiB, doc/stack.md, "Speed").
    """

    def __init__(self, keep_bytes: int = 160 << 20):
        self.keep_bytes = int(keep_bytes)
        self._free: list[np.ndarray] = []
        self._kept = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes`` bytes (a kept one when one is large enough)."""
        with self._lock:
            for k, buffer in enumerate(self._free):
                if buffer.size >= nbytes:
                    self._kept -= buffer.size
                    return self._free.pop(k)
        # rounded up so that a slightly larger chunk to come still fits in it
        return np.empty(-(-max(nbytes, 1) // _BUFFER_STEP) * _BUFFER_STEP, np.uint8)

    def give(self, buffer: np.ndarray) -> None:
        """Hand ``buffer`` back for reuse."""
        with self._lock:
            if self._kept + buffer.size <= self.keep_bytes:
                self._free.append(buffer)
                self._kept += buffer.size


class RawChunks:
    """Frames ``start .. stop - 1`` of a dataset accepted by :func:`direct_read_plan`, as
    their compressed chunks were stored (from :func:`read_raw_chunks`): reading them is the
    cheap part, done where the I/O waits; :meth:`decompress_into` then uses every core it is
    given, where the frames are needed. Read into ``buffers`` (a :class:`ChunkBuffers`),
    they are handed back there once decompressed."""

    def __init__(self, dataset: Any, start: int, stop: int,
                 buffers: ChunkBuffers | None = None):
        self.start, self.stop = start, stop
        self.dtype = dataset.dtype
        self.frame_shape = tuple(dataset.shape[1:])
        self.per_chunk = int(dataset.chunks[0])
        self.name = f"{dataset.name!r} in {dataset.file.filename!r}"
        self.pieces: list[tuple[int, int, np.ndarray]] = []  # (first frame, filter mask, bytes)
        #: per piece, its LZ4 blocks (``bitshuffle_lz4.block_index``), found while the bytes
        #: are in the cache; None for a piece stored unfiltered or damaged
        self.blocks: list[tuple[int, np.ndarray, np.ndarray] | None] = []
        self._buffers = buffers
        self._taken: list[np.ndarray] = []
        first_chunk = start // self.per_chunk * self.per_chunk
        itemsize = self.dtype.itemsize
        chunk_bytes = self.per_chunk * int(np.prod(self.frame_shape)) * itemsize
        from xreduce.ext import bitshuffle_lz4

        try:
            for chunk_start in range(first_chunk, stop, self.per_chunk):
                stored = dataset.id.get_chunk_info_by_coord((chunk_start, 0, 0)).size
                check_allocation(stored, "url", f"the stored chunk of frames {chunk_start}.. "
                                 f"of {self.name}")
                if buffers is None:
                    filter_mask, raw = dataset.id.read_direct_chunk((chunk_start, 0, 0))
                    data = np.frombuffer(raw, np.uint8)
                else:
                    self._taken.append(buffers.take(stored))
                    filter_mask, raw = dataset.id.read_direct_chunk((chunk_start, 0, 0),
                                                                    out=self._taken[-1])
                    data = self._taken[-1][:len(raw)]
                self.pieces.append((chunk_start, filter_mask, data))
                self.blocks.append(None if filter_mask & 1 else
                                   bitshuffle_lz4.block_index(data, chunk_bytes, itemsize))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Hand the buffers back to the :class:`ChunkBuffers` they came from (done by
        :meth:`decompress_into`); the chunks cannot be decompressed after."""
        if self._buffers is not None:
            for buffer in self._taken:
                self._buffers.give(buffer)
            self._taken = []
            self.pieces = []
            self.blocks = []
            self._buffers = None

    def __len__(self) -> int:
        return self.stop - self.start

    def decompress_into(self, out: np.ndarray | None = None, num_threads: int = 0
                        ) -> np.ndarray:
        """The frames, decompressed into ``out`` (C-contiguous (frames, rows, cols) of the
        dataset's dtype; allocated when None) with ``num_threads`` OpenMP threads over the
        blocks of each chunk (0: the OpenMP default). A damaged chunk: ValueError naming its
        frames and the file."""
        try:
            return self._decompress_into(out, num_threads)
        finally:
            self.release()

    def _decompress_into(self, out: np.ndarray | None, num_threads: int) -> np.ndarray:
        from xreduce.ext import bitshuffle_lz4

        if not self.pieces and self.stop > self.start:
            raise RuntimeError("decompress_into: these chunks were released to their buffers")
        start, stop, per_chunk = self.start, self.stop, self.per_chunk
        shape = (stop - start,) + self.frame_shape
        if out is None:
            out = aligned_empty(shape, self.dtype)
        elif out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous {self.dtype} array of shape "
                             f"{shape}, got {out.dtype} {out.shape}")
        chunk_bytes = per_chunk * int(np.prod(self.frame_shape)) * self.dtype.itemsize
        targets, partial = [], []
        for chunk_start, filter_mask, buffer in self.pieces:
            lo, hi = max(start, chunk_start), min(stop, chunk_start + per_chunk)
            partial.append(lo != chunk_start or hi != chunk_start + per_chunk)
            if partial[-1]:  # decompressed aside, its frames copied out below
                targets.append(aligned_empty(chunk_bytes, np.uint8))
            else:  # straight into out
                targets.append(out[lo - start:hi - start].reshape(-1).view(np.uint8))
        compressed = [k for k, piece in enumerate(self.pieces) if not piece[1] & 1]
        status = bitshuffle_lz4.decompress_chunks(  # one parallel region for all chunks
            [self.pieces[k][2] for k in compressed], [targets[k] for k in compressed],
            self.dtype.itemsize, num_threads, indexes=[self.blocks[k] for k in compressed])
        for k, code in zip(compressed, status):
            if code != 0:
                chunk_start = self.pieces[k][0]
                raise ValueError(f"url: the bitshuffle-LZ4 chunk of frames {chunk_start}-"
                                 f"{chunk_start + per_chunk - 1} of {self.name} is damaged "
                                 f"(code {code})")
        for (chunk_start, filter_mask, buffer), target, cut in zip(self.pieces, targets,
                                                                    partial):
            if filter_mask & 1:  # the filter was skipped for this chunk: raw bytes
                if buffer.size != chunk_bytes:
                    raise ValueError(f"url: chunk of frames {chunk_start}.. of {self.name} has "
                                     f"{buffer.size} bytes, expected {chunk_bytes}")
                target[:] = buffer
            lo, hi = max(start, chunk_start), min(stop, chunk_start + per_chunk)
            if cut:
                frames = target.view(self.dtype).reshape((per_chunk,) + self.frame_shape)
                out[lo - start:hi - start] = frames[lo - chunk_start:hi - chunk_start]
        return out


class CompressedFrames:
    """The frames of a :class:`RawChunks` as an integrator holds them: ``shape`` (frames,
    pixels) and the native ``dtype``; an engine that takes them (the csc method) decodes them
    in its own pass, the others get :meth:`decompress`."""

    def __init__(self, raw: RawChunks):
        self.raw = raw
        self.shape = (len(raw), int(np.prod(raw.frame_shape)))
        self.dtype = raw.dtype.newbyteorder("=")

    def decompress(self) -> np.ndarray:
        """The frames as a C-contiguous native (frames, pixels) array."""
        frames = self.raw.decompress_into().reshape(self.shape)
        return frames if frames.dtype.isnative else frames.astype(self.dtype)


def read_raw_chunks(dataset: Any, start: int, stop: int,
                    buffers: ChunkBuffers | None = None) -> RawChunks:
    """The compressed chunks holding frames ``start .. stop - 1`` of a dataset accepted by
    :func:`direct_read_plan`, read as stored (see :class:`RawChunks`), into ``buffers``
    where given."""
    return RawChunks(dataset, start, stop, buffers)


def read_frames_direct(dataset: Any, start: int, stop: int, out: np.ndarray | None = None,
                       num_threads: int = 0, buffers: ChunkBuffers | None = None
                       ) -> np.ndarray:
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
    buffers : ChunkBuffers, optional
        Where the compressed chunks are read (reused across calls).

    Raises
    ------
    ValueError
        A chunk that does not decompress (its frames are named).
    """
    shape = (stop - start,) + tuple(dataset.shape[1:])
    if out is not None and (out.shape != shape or out.dtype != dataset.dtype
                            or not out.flags.c_contiguous):
        raise ValueError(f"out: expected a C-contiguous {dataset.dtype} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    return read_raw_chunks(dataset, start, stop, buffers).decompress_into(out, num_threads)
