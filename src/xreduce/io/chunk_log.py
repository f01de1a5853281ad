"""The record of a long run's finished chunks: their results appended to log files in the run's
folder, read back by a resumed run (see ``doc/stack.md``, "Resume").

One log file per run (``results_<random>.log``, created exclusively with the permissions
``open()`` gives), written by one thread. Each record is a chunk's results::

    b"XRCK" | first frame, stop frame (int64) | body length (uint64) | body | SHA-256

with the body an ``.npz`` of the result arrays and the SHA-256 over everything before it. A
record is whole or it is not there: a run killed in the middle of an append (or a power cut
after the last sync) leaves a tail that fails its length or checksum, and the records before
it are read as they are. The files are synced to disk at most every ``sync_seconds`` while
the run goes, and when it ends; a chunk whose record was lost is integrated again.

This replaces one small file per chunk: a million Pilatus frames made 250 000 fragment files,
each created, synced and renamed, ~1.2 ms of CPU a chunk on the run's cores against ~0.2 ms
for an append here (doc/stack.md, "Speed").

Example
-------
>>> import tempfile, numpy as np
>>> folder = tempfile.mkdtemp()
>>> with ChunkLog(folder) as log:
...     log.append((0, 2), {"intensity": np.ones((2, 3))})
>>> again = ChunkLog(folder)
>>> sorted(again.chunks()), again.read((0, 2))["intensity"].shape
([(0, 2)], (2, 3))
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
import struct
import time
from typing import Iterable

import numpy as np

from xreduce.io.writers import atomic_output, fsync_path

__all__ = ["ChunkLog"]

_MAGIC = b"XRCK"
_HEAD = struct.Struct("<4sqqQ")  # magic, first frame, stop frame, body length
_DIGEST = 32
_PREFIX, _SUFFIX = "results_", ".log"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _record(chunk: tuple[int, int], result: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **result)
    head = _HEAD.pack(_MAGIC, int(chunk[0]), int(chunk[1]), buffer.tell())
    digest = hashlib.sha256(head)
    digest.update(buffer.getbuffer())
    return head + buffer.getvalue() + digest.digest()


class ChunkLog:
    """The finished chunks of a run kept in ``folder`` (which must exist): those of earlier
    runs found on opening, those appended since.

    Parameters
    ----------
    folder : path
        The run's folder.
    sync_seconds : float
        Longest time between two syncs of this run's log to disk while it is written.
    """

    def __init__(self, folder: str | os.PathLike, sync_seconds: float = 1.0):
        self.folder = os.fspath(folder)
        self.sync_seconds = float(sync_seconds)
        self._index: dict[tuple[int, int], tuple[str, int, int]] = {}  # -> path, offset, size
        self._file = None
        self._path: str | None = None
        self._synced = 0.0
        for name in sorted(os.listdir(self.folder)):
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
                self._scan(os.path.join(self.folder, name))

    # ------------------------------------------------------------------ reading
    def _scan(self, path: str) -> None:
        """Index the whole records of one log file; stop at the first one that is not."""
        try:
            handle = open(path, "rb")
        except OSError:
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            offset = 0
            while offset + _HEAD.size + _DIGEST <= size:
                head = handle.read(_HEAD.size)
                magic, start, stop, length = _HEAD.unpack(head)
                end = offset + _HEAD.size + length + _DIGEST
                if magic != _MAGIC or end > size or not 0 <= start < stop:
                    return
                body = handle.read(length)
                digest = hashlib.sha256(head)
                digest.update(body)
                if handle.read(_DIGEST) != digest.digest():
                    return
                self._index[(start, stop)] = (path, offset + _HEAD.size, length)
                offset = end

    def chunks(self) -> set[tuple[int, int]]:
        """The ``(first frame, stop frame)`` of every finished chunk."""
        return set(self._index)

    def __contains__(self, chunk: object) -> bool:
        return chunk in self._index

    def read(self, chunk: tuple[int, int]) -> dict:
        """The results of a finished chunk (a dict of arrays).

        Raises
        ------
        KeyError
            No record of ``chunk``.
        ValueError
            Its record no longer reads back (the file changed since it was indexed).
        """
        path, offset, length = self._index[chunk]
        with open(path, "rb") as handle:
            handle.seek(offset)
            body = handle.read(length)
        try:
            with np.load(io.BytesIO(body), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"the record of frames {chunk[0]}-{chunk[1] - 1} in {path!r} "
                             f"does not read back ({exc}); run again with resume=True") from None

    # ------------------------------------------------------------------ writing
    def append(self, chunk: tuple[int, int], result: dict) -> None:
        """Record the results of ``chunk`` (a dict of arrays) in this run's log file, created
        at the first append."""
        record = _record(chunk, result)
        if self._file is None:
            self._open()
        offset = self._file.tell()
        self._file.write(record)
        self._file.flush()
        self._index[(int(chunk[0]), int(chunk[1]))] = (self._path, offset + _HEAD.size,
                                                       len(record) - _HEAD.size - _DIGEST)
        if time.monotonic() - self._synced >= self.sync_seconds:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def _open(self) -> None:
        for _ in range(100):
            path = os.path.join(self.folder, f"{_PREFIX}{secrets.token_hex(8)}{_SUFFIX}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
            except FileExistsError:
                continue
            self._file, self._path = os.fdopen(fd, "wb"), path
            self._synced = time.monotonic()
            fsync_path(self.folder)  # the new name survives a power cut
            return
        raise FileExistsError(f"could not create a new log file in {self.folder!r}")

    def close(self) -> None:
        """Sync and close this run's log file."""
        if self._file is not None:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()
                self._file = None

    def __enter__(self) -> "ChunkLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ keeping
    def keep_only(self, chunks: Iterable[tuple[int, int]]) -> None:
        """Forget every record but those of ``chunks``: the kept ones are rewritten into one
        new log file (atomically), then the old files are removed."""
        keep = sorted(set(chunks) & set(self._index))
        old = {path for path, _, _ in self._index.values()}
        old.update(os.path.join(self.folder, n) for n in os.listdir(self.folder)
                   if n.startswith(_PREFIX) and n.endswith(_SUFFIX))
        self.close()
        index = {}
        if keep:
            path = os.path.join(self.folder, f"{_PREFIX}{secrets.token_hex(8)}{_SUFFIX}")
            with atomic_output(path) as tmp, open(tmp, "wb") as handle:
                for chunk in keep:
                    record = _record(chunk, self.read(chunk))
                    index[chunk] = (path, handle.tell() + _HEAD.size,
                                    len(record) - _HEAD.size - _DIGEST)
                    handle.write(record)
            old.discard(path)
        for path in old:
            os.remove(path)
        self._index = index

    @staticmethod
    def is_log_name(name: str) -> bool:
        """Whether a file name in the folder is one of the log files."""
        return name.startswith(_PREFIX) and name.endswith(_SUFFIX)
