"""The partial HDF5 file of a DCT preprocess run: created crash-safe, checked on reopen,
salvaged when damaged.

Layout (NeXus; the final file is this one, renamed)::

    /                      @NX_class NXroot, @default "entry"
    /entry                 @NX_class NXentry, @default "preprocessed"
        preprocessed/      @NX_class NXdata, @signal "data"
            data           float32 (frames, rows, cols), one HDF5 chunk per frame
        background/        (optional) the same
        process/           @NX_class NXprocess; config, input identity (JSON), program...
            chunk_done     uint8 (chunks,): 1 once a chunk of frames is written
            chunk_crc32    uint32 (chunks,): CRC-32 of the chunk's frames (then background)

Crash safety: without compression, every dataset is allocated when the file is created
(``H5D_ALLOC_TIME_EARLY``, no fill), so writing a chunk changes data bytes at fixed places and
never the file's metadata: a ``kill -9`` at any moment leaves a readable file. With
compression the chunk index changes with every chunk, and a kill can damage it.

On reopen (:func:`open_for_resume`) the file is checked before anything is trusted: it must
be a regular file (never a link), every object a plain (hard) link (an external or soft link is
never followed), the datasets of the expected shapes and dtypes, the chunks of every finished
chunk inside the file, and their CRC-32 equal to the one recorded when they were written. If
anything is wrong, the chunks that verify are copied into a new partial file and the others
are computed again (*salvage*); a file HDF5 cannot open is refused with a message saying what
to delete. See ``doc/robustness.md``.
"""
from __future__ import annotations

import errno
import json
import os
import zlib
from typing import Optional

import numpy as np

from xreduce.io.writers import check_regular_file, nexus_entry

__all__ = ["PartialFileError", "create_partial", "open_for_resume", "frames_crc32",
           "reserve_space", "mark_completed"]


class PartialFileError(ValueError):
    """The partial output of an interrupted run cannot be resumed (a ValueError)."""


def frames_crc32(*arrays: Optional[np.ndarray]) -> int:
    """CRC-32 of the bytes of the given arrays (None skipped), in order."""
    crc = 0
    for array in arrays:
        if array is not None:
            crc = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"), crc)
    return crc


def _frames_dataset(group, shape: tuple, compression: Optional[str]):
    """A float32 dataset of frames, one chunk per frame; allocated now when uncompressed."""
    import h5py

    chunks = (1,) + tuple(shape[1:])
    if compression is not None:
        return group.create_dataset("data", shape=shape, dtype=np.float32, chunks=chunks,
                                    compression=compression)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    space = h5py.h5s.create_simple(tuple(shape))
    dsid = h5py.h5d.create(group.id, b"data", h5py.h5t.NATIVE_FLOAT, space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def _fallocate(fd: int, nbytes: int, path: str, what: str = "preprocess.output") -> None:
    """Reserve ``nbytes`` of disk for an open file; a full disk (or a file size limit)
    raises OSError naming the file; file systems that cannot reserve are left as they are."""
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except AttributeError:
        return
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return
        raise OSError(exc.errno, f"{what}: {path!r}: cannot reserve the "
                      f"{nbytes / 1e9:.3g} GB the output needs ({exc.strerror})") from None


def reserve_space(path: str, nbytes: int, what: str = "preprocess.output") -> None:
    """Check that ``nbytes`` can be written next to ``path`` by reserving them in a scratch
    file (deleted at once), before HDF5 writes anything: HDF5 handles a full disk badly
    (h5py can crash when a file it writes cannot grow)."""
    from xreduce.io.writers import create_exclusive

    scratch = f"{path}.reserve"
    if check_regular_file(scratch, "scratch file"):
        os.remove(scratch)
    create_exclusive(scratch, 0o600)
    try:
        fd = os.open(scratch, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            _fallocate(fd, nbytes, path, what)
        finally:
            os.close(fd)
    finally:
        os.remove(scratch)


def create_partial(path: str, n_frames: int, frame_shape: tuple, groups: list[str],
                   n_chunks: int, compression: Optional[str], process_attrs: dict):
    """Create the partial file (under ``<path>.creating`` with ``h5py`` mode ``x``, which
    fails on anything there, a link included, then renamed). Uncompressed, its disk space is reserved first (a full disk is an OSError
    before HDF5 writes anything) and kept (later writes cannot fail for space). Returns the
    open h5py.File."""
    import h5py

    data_bytes = len(groups) * 4 * int(n_frames) * int(np.prod(frame_shape, dtype=np.int64))
    if compression is None:
        reserve_space(path, data_bytes + 2**20 + 64 * n_chunks)
    # built under another name and renamed once complete: a kill during the creation never
    # leaves a half-made file under the partial name
    building = f"{path}.creating"
    if check_regular_file(building, "file being created"):
        os.remove(building)
    h5 = h5py.File(building, "x")
    try:
        entry = nexus_entry(h5, groups[0])
        shape = (int(n_frames),) + tuple(int(s) for s in frame_shape)
        for name in groups:
            group = entry.create_group(name)
            group.attrs["NX_class"] = "NXdata"
            group.attrs["signal"] = "data"
            data = _frames_dataset(group, shape, compression)
            data.attrs["interpretation"] = "image"
            data.attrs["units"] = "counts"
        process = entry.create_group("process")
        process.attrs["NX_class"] = "NXprocess"
        for key, value in process_attrs.items():
            process.attrs[key] = value
        # set in place when the run completes (same size: the file's layout never changes)
        process.attrs["completed"] = np.bytes_(" " * COMPLETED_BYTES)
        # written whole now: contiguous, allocated, at fixed places from here on
        process.create_dataset("chunk_done", data=np.zeros(n_chunks, np.uint8))
        process.create_dataset("chunk_crc32", data=np.zeros(n_chunks, np.uint32))
    finally:
        h5.close()
    if compression is None:  # every block of the (sparse) allocated datasets on disk now
        fd = os.open(building, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            _fallocate(fd, os.fstat(fd).st_size, path)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.rename(building, path)
    return h5py.File(path, "r+")


#: Bytes of the fixed-size ``completed`` attribute (an ISO 8601 UTC time).
COMPLETED_BYTES = 32


def mark_completed(h5, when: str) -> None:
    """Write the completion time into the fixed-size attribute, in place."""
    h5["/entry/process"].attrs.modify("completed",
                                      np.bytes_(when[:COMPLETED_BYTES].ljust(COMPLETED_BYTES)))


def _structure_problems(h5, expected: dict) -> list[str]:
    """Links that are not plain, and expected datasets missing or of another shape/dtype."""
    import h5py

    problems = []

    def visit(name, link):
        if not isinstance(link, h5py.HardLink):
            problems.append(f"{name!r} is a {type(link).__name__} (never followed)")

    h5.visititems_links(visit)
    for name, (shape, dtype) in expected.items():
        link = h5.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            problems.append(f"{name!r} is missing or not a plain dataset")
            continue
        node = h5.get(name)
        if not isinstance(node, h5py.Dataset) or node.shape != tuple(shape) \
                or node.dtype != np.dtype(dtype):
            problems.append(f"{name!r} is not a {np.dtype(dtype)} dataset of shape {shape}")
    return problems


def _contiguous_ok(dataset, file_size: int) -> bool:
    offset = dataset.id.get_offset()
    return offset is not None and offset + dataset.id.get_storage_size() <= file_size


def _chunks_inside(dataset, first: int, stop: int, file_size: int) -> bool:
    for frame in range(first, stop):
        info = dataset.id.get_chunk_info_by_coord((frame,) + (0,) * (dataset.ndim - 1))
        if info.byte_offset is None or info.byte_offset + info.size > file_size:
            return False
    return True


def _verified_chunks(h5, path: str, data_names: list[str], chunk_frames: int,
                     n_frames: int, n_chunks: int, structure_ok: bool) -> np.ndarray:
    """Boolean (chunks,): finished chunks whose frames are inside the file and match their
    recorded CRC-32."""
    good = np.zeros(n_chunks, bool)
    if not structure_ok:
        return good
    size = os.path.getsize(path)
    process = h5["/entry/process"]
    try:
        if not (_contiguous_ok(process["chunk_done"], size)
                and _contiguous_ok(process["chunk_crc32"], size)):
            return good
        done, crcs = process["chunk_done"][()], process["chunk_crc32"][()]
    except (OSError, ValueError, KeyError):
        return good
    datasets = [h5[name] for name in data_names]
    for index in np.flatnonzero(done == 1):
        first, stop = index * chunk_frames, min(n_frames, (index + 1) * chunk_frames)
        try:
            if not all(_chunks_inside(d, first, stop, size) for d in datasets):
                continue
            crc = frames_crc32(*(d[first:stop] for d in datasets))
        except (OSError, ValueError, KeyError, RuntimeError):
            continue
        good[index] = crc == int(crcs[index])
    return good


def open_for_resume(path: str, expected: dict, data_names: list[str], chunk_frames: int,
                    n_frames: int, n_chunks: int, check_run, salvage_layout):
    """Reopen a partial file to resume, checked (see the module notes).

    Parameters
    ----------
    expected : dict
        HDF5 path -> (shape, dtype) of every dataset the file must hold.
    data_names : list of str
        The frame datasets, in the order their bytes enter the chunk CRC-32.
    check_run : callable
        ``check_run(process_attrs)`` raises if the file holds another run (configuration,
        inputs); called before any data is trusted.
    salvage_layout : callable
        ``salvage_layout(path)`` creates an empty partial file at ``path`` (mode ``x``)
        and returns it open, for the salvage.

    Returns
    -------
    (h5py.File opened r+, int)
        The file and the number of finished chunks that failed verification and will be
        computed again (0 when the file was intact, -1 when its bookkeeping was unreadable
        and every chunk is computed again).

    Raises
    ------
    PartialFileError
        HDF5 cannot open the file: the message says to delete it (or to restart).
    OSError
        ``path`` is a link or not a regular file.
    """
    import h5py

    check_regular_file(path, "partial file")
    remedy = (f"delete {path!r} (its finished chunks are lost) or run again with --restart "
              "(restart=True)")
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise PartialFileError(f"partial file: {path!r} is damaged beyond repair "
                               f"(HDF5: {exc}); {remedy}") from None
    try:
        process = h5.get("/entry/process", getlink=True)
        if not isinstance(process, h5py.HardLink) or not isinstance(
                h5.get("/entry/process"), h5py.Group):
            raise PartialFileError(f"partial file: {path!r} has no /entry/process group: it "
                                   f"was not written by xreduce-dct preprocess; {remedy}")
        check_run(dict(h5["/entry/process"].attrs))
        problems = _structure_problems(h5, expected)
        good = _verified_chunks(h5, path, data_names, chunk_frames, n_frames, n_chunks,
                                not problems)
        try:
            done = h5["/entry/process/chunk_done"][()] if not problems else None
        except (OSError, ValueError, KeyError):
            done = None
        intact = not problems and done is not None and np.array_equal(done == 1, good)
        if intact:
            h5.close()
            return h5py.File(path, "r+"), 0
        redo = int(np.count_nonzero(done == 1) - good.sum()) if done is not None else -1
        salvage = f"{path}.salvage"
        if check_regular_file(salvage, "salvage file"):
            os.remove(salvage)        # a salvage interrupted before: start it again
        new = salvage_layout(salvage)
        try:
            sources = [h5[name] for name in data_names] if not problems else []
            for index in np.flatnonzero(good):
                first, stop = index * chunk_frames, min(n_frames, (index + 1) * chunk_frames)
                frames = [d[first:stop] for d in sources]
                for name, block in zip(data_names, frames):
                    new[name][first:stop] = block
                new["/entry/process/chunk_crc32"][index] = frames_crc32(*frames)
                new["/entry/process/chunk_done"][index] = 1
            new["/entry/process"].attrs["salvaged"] = json.dumps(
                {"problems": problems, "chunks_kept": int(good.sum()), "chunks_redone": redo})
        finally:
            new.close()
    finally:
        if h5.id.valid:
            h5.close()
    os.replace(salvage, path)
    return h5py.File(path, "r+"), redo
