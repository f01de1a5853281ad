"""What a resumable run must know before it resumes: the identity of its inputs, and that no
other run writes the same output.

- :func:`file_identity` / :func:`stack_identity`: the identity of an input, as a small JSON-able
  dict: path, size and modification time of the file, and a CRC-32 of a sample of its frames
  (the first, the last and up to 14 between, read through the stack reader so that an HDF5
  dataset regenerated in place with other values is recognised). A resumed run compares the
  identity recorded when it started with that of its inputs now; :func:`identity_differences`
  says what changed, in words.
- :class:`RunLock`: a lock file next to the output, created with ``O_EXCL`` (it works where
  ``flock`` does not, on parallel file systems). It holds the host, the process id and that
  process's start time; a lock left by a process that no longer runs on this host is stale
  and taken over (a killed run must not block its own rerun); any other lock refuses the
  second run with a message naming the lock file.

See ``doc/robustness.md``.

Example
-------
>>> import numpy as np, os, tempfile
>>> from xreduce.io.run_identity import RunLock, stack_identity, identity_differences
>>> folder = tempfile.mkdtemp()
>>> a = stack_identity(np.zeros((5, 4, 4)))
>>> b = stack_identity(np.ones((5, 4, 4)))
>>> identity_differences(a, b)
['checksum of sampled frames']
>>> with RunLock(os.path.join(folder, "out.h5")):
...     pass
"""
from __future__ import annotations

import errno
import json
import os
import socket
import zlib
from typing import Any

import numpy as np

from xreduce.io.writers import check_regular_file, create_exclusive

__all__ = ["file_identity", "stack_identity", "identity_differences", "RunLock",
           "RunLockedError", "lock_path"]

#: Frames sampled for the checksum of a stack (first and last included).
SAMPLED_FRAMES = 16


class RunLockedError(OSError):
    """Another run holds the lock of an output (an OSError)."""


def file_identity(path: str | os.PathLike) -> dict:
    """Path, size and modification time (ns) of a file (``{}`` for no path)."""
    path = os.fspath(path)
    info = os.stat(path)
    return {"path": os.path.abspath(path), "size": int(info.st_size),
            "mtime_ns": int(info.st_mtime_ns)}


def _sample(n_frames: int) -> np.ndarray:
    if n_frames <= SAMPLED_FRAMES:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, SAMPLED_FRAMES).round().astype(np.int64))


def stack_identity(stack: Any, url: str | None = None) -> dict:
    """Identity of a stack of frames: shape, dtype, CRC-32 of sampled frames, and the file's
    path, size and modification time when ``url`` (``file.h5::/path`` or a file) is given.

    ``stack`` is a NumPy array, an ``h5py.Dataset``, an :class:`xreduce.io.FrameStack` or
    anything with ``shape``, ``dtype`` and frame slicing ``stack[a:b]``.
    """
    shape = tuple(int(s) for s in stack.shape)
    crc = 0
    for k in _sample(shape[0] if shape else 0):
        if hasattr(stack, "read_frames"):
            frame = stack.read_frames(np.array([k]))
        else:
            frame = stack[int(k): int(k) + 1]
        crc = zlib.crc32(np.ascontiguousarray(frame).tobytes(), crc)
    identity: dict = {"shape": list(shape), "dtype": np.dtype(stack.dtype).str,
                      "sample_crc32": int(crc)}
    if url:
        filename = str(url).split("::", 1)[0]
        if os.path.isfile(filename):
            identity["file"] = file_identity(filename)
    return identity


_WORDS = {"shape": "shape (frames, rows, cols)", "dtype": "dtype",
          "sample_crc32": "checksum of sampled frames", "file": "file size or modification time"}


def identity_differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two identities, in words (empty: the same input)."""
    keys = list(_WORDS) + sorted((set(recorded) | set(current)) - set(_WORDS))
    return [_WORDS.get(key, key) for key in keys if recorded.get(key) != current.get(key)]


def lock_path(output: str | os.PathLike) -> str:
    """The lock file of a run writing ``output``: ``dir/.name.lock``."""
    from xreduce.io.writers import partial_path

    return partial_path(output, suffix="lock")


def _process_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot, /proc), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    """Whether the process that wrote a lock still runs (unknown hosts: assumed alive)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _process_start(pid)
    return start is None or owner.get("start") in (None, start)


class RunLock:
    """Exclusive right to write one output, held as a lock file (see the module notes).

    Use as a context manager; the lock file is removed on exit.

    Raises
    ------
    RunLockedError
        Another live run (or a run on another host) holds the lock.
    """

    def __init__(self, output: str | os.PathLike, what: str = "output"):
        self.path = lock_path(output)
        self.output, self.what = os.fspath(output), what
        self.held = False

    def _read(self) -> dict | None:
        try:
            check_regular_file(self.path, "lock file")
            with open(self.path, encoding="utf-8") as handle:
                owner = json.load(handle)
            return owner if isinstance(owner, dict) else {}
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return {}  # written half by a killed process: no owner

    def _create(self) -> None:
        create_exclusive(self.path, 0o644)
        pid = os.getpid()
        owner = {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}
        with open(self.path, "w", encoding="utf-8") as handle:
            json.dump(owner, handle)

    def acquire(self) -> "RunLock":
        for _ in range(3):
            try:
                self._create()
                self.held = True
                return self
            except FileExistsError:
                pass
            owner = self._read()
            if owner is None:
                continue                  # released meanwhile: try again
            if owner and _alive(owner):
                raise RunLockedError(
                    errno.EBUSY,
                    f"{self.what}: another run is writing {self.output!r} (lock {self.path!r} "
                    f"held by process {owner.get('pid')} on {owner.get('host')}); wait for it, "
                    "or delete the lock file if that run is dead", self.path)
            self._break(owner)
        raise RunLockedError(errno.EBUSY, f"{self.what}: could not take the lock "
                             f"{self.path!r}; delete it if no run is writing {self.output!r}",
                             self.path)

    def _break(self, stale: dict) -> None:
        """Remove a stale lock, unless another run replaced it meanwhile."""
        aside = f"{self.path}.{os.getpid()}.stale"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside, encoding="utf-8") as handle:
                moved = json.load(handle)
        except (ValueError, OSError, UnicodeDecodeError):
            moved = {}
        if moved != stale:                # a live run's new lock: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        os.remove(aside)

    def release(self) -> None:
        if self.held:
            self.held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
