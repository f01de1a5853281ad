"""Writing outputs safely: the one atomic writer of xreduce.

A reader never sees a half-written file under the final name. :func:`atomic_output` yields a
temporary path in the target folder and renames it to the final name (:func:`os.replace`,
atomic on POSIX) when the block ends without error. The temporary file is created by
:func:`atomic_output` itself, before the caller writes to it:

- with ``O_CREAT | O_EXCL | O_NOFOLLOW``: a file or a symbolic link planted under that name is
  never opened nor followed (the call fails instead, or picks another name);
- with mode ``0o666`` filtered by the process umask, exactly as ``open()`` creates files
  (0644 under umask 022; :func:`tempfile.mkstemp` would give 0600 whatever the umask);
- under a unique name ``.<name>.<random>.partial<.extension>``, so two writers of one path
  never share a temporary file (the extension stays last, for writers such as ``np.save``
  that add theirs otherwise).

The data is flushed to disk (``fsync``) before the rename, and the folder after it, so a
power cut leaves the old file or the new one. On any error (``KeyboardInterrupt`` included)
the temporary file is deleted.

Long runs that resume keep their partial file on error (``keep_partial=True``): its name is
then the fixed :func:`partial_path` (``.<name>.partial``), found again by the next run. An
existing partial file is reused only if it is a regular file (never a link). See
``doc/robustness.md``.

Example
-------
>>> import numpy as np, os, tempfile
>>> from xreduce.io import atomic_output, write_hdf5
>>> path = os.path.join(tempfile.mkdtemp(), "result.npy")
>>> with atomic_output(path) as tmp:
...     np.save(tmp, np.arange(3))
>>> np.load(path).tolist()
[0, 1, 2]
>>> write_hdf5(path[:-4] + ".h5", {"/entry/data": np.zeros((2, 2))}).endswith(".h5")
True
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import Iterator, Mapping

import numpy as np

__all__ = ["partial_path", "atomic_output", "write_hdf5", "nexus_entry", "create_exclusive",
           "check_regular_file", "fsync_path", "naming_file"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def partial_path(path: str | os.PathLike, suffix: str = "partial") -> str:
    """The fixed name of the work in progress of ``path``: ``dir/.name.partial`` (or another
    ``suffix``, e.g. for a folder of work in progress), kept between runs to resume.

    >>> partial_path("/data/out.h5")
    '/data/.out.h5.partial'
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{suffix}")


def create_exclusive(path: str | os.PathLike, mode: int = 0o666) -> None:
    """Create an empty file at ``path``, failing if anything (a link included) is there.

    The permissions are ``mode`` filtered by the umask, as ``open()`` does.

    Raises
    ------
    FileExistsError
        ``path`` exists, or is a symbolic link (even a dangling one).
    """
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    os.close(fd)


def check_regular_file(path: str | os.PathLike, what: str = "file") -> bool:
    """True if ``path`` is a regular file, False if nothing is there; raise if it is a link
    or anything else (a link is never followed).

    Raises
    ------
    OSError
        ``path`` is a symbolic link, a folder, a device...: the message names it.
    """
    path = os.fspath(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise OSError(errno.ELOOP, f"{what}: {path!r} is a symbolic link; xreduce never follows "
                      "links it did not create: delete it", path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EEXIST, f"{what}: {path!r} exists and is not a regular file", path)
    return True


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's) data to disk, without following a link."""
    flags = os.O_RDONLY | _NOFOLLOW
    if os.path.isdir(path):
        flags |= getattr(os, "O_DIRECTORY", 0)
    fd = os.open(os.fspath(path), flags)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot sync folders: nothing more to do there
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming_file(what: str, path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an OSError (HDF5 errors included) of the block with the file named, so that a
    command line can print one line that says which file failed.

    >>> with naming_file("preprocess.input", "scan.h5"):   # doctest: +SKIP
    ...     read_the_frames()
    OSError: preprocess.input: 'scan.h5': Can't read data (...)
    """
    path = os.fspath(path)
    try:
        yield
    except OSError as exc:
        if path in str(exc):
            raise
        raise OSError(exc.errno, f"{what}: {path!r}: {' '.join(str(exc).split())}") from exc
    except RuntimeError as exc:  # h5py raises some HDF5 errors as RuntimeError
        raise OSError(errno.EIO, f"{what}: {path!r}: {' '.join(str(exc).split())}") from exc


def _unique_temporary(path: str) -> str:
    """Create a new empty file next to ``path`` under a name nobody else uses."""
    folder, name = os.path.split(path)
    extension = os.path.splitext(name)[1]  # kept last: np.save appends .npy otherwise
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.partial{extension}")
        try:
            create_exclusive(tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"path: could not create a temporary file next to {path!r}")


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True,
                  keep_partial: bool = False) -> Iterator[str]:
    """Yield a new temporary file next to ``path``; rename it to ``path`` when the block
    succeeds (see the module notes).

    Parameters
    ----------
    path : str or path
        Final file name. Its folder must exist.
    overwrite : bool
        Replace an existing ``path``; if False, raise FileExistsError before starting (and
        never replace a file that appears meanwhile).
    keep_partial : bool
        Use the fixed name :func:`partial_path` and keep it on error, for a later run to
        resume; a regular file already there is yielded as it is (it is the previous run's
        work), a link there raises OSError.

    Raises
    ------
    FileNotFoundError
        The folder of ``path`` does not exist.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    OSError
        A link or a non-regular file sits at the fixed partial name.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_output(path) as tmp, open(tmp, "w") as handle:
    ...     _ = handle.write("done")
    >>> open(path).read(), oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())
    ('done', True)
    """
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"path: {path!r} exists (overwrite is off)")
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise FileNotFoundError(f"path: folder {folder!r} does not exist")
    if keep_partial:
        tmp = partial_path(path)
        if not check_regular_file(tmp, "partial file"):
            create_exclusive(tmp)
    else:
        tmp = _unique_temporary(path)
    try:
        yield tmp
        check_regular_file(tmp, "temporary file")  # not swapped for a link meanwhile
        fsync_path(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path appeared meanwhile: never replaced
            os.remove(tmp)
    except BaseException:
        if not keep_partial:
            _remove_quietly(tmp)
        raise
    leftover = partial_path(path)
    with contextlib.suppress(OSError):
        if check_regular_file(leftover):   # an older interrupted run's work: now obsolete
            os.remove(leftover)
    with contextlib.suppress(OSError):
        fsync_path(folder or ".")


def _umask() -> int:
    """The process umask (from /proc where it is, else read by setting it back at once)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_hdf5(path: str | os.PathLike, datasets: Mapping[str, np.ndarray],
               attrs: Mapping[str, Mapping[str, object]] | None = None,
               overwrite: bool = True, compression: str | None = None) -> str:
    """Write datasets (``{"/entry/data": array}``) and attributes (``{"/entry": {...}}``)
    to a new HDF5 file, atomically. Returns the final path.

    Examples
    --------
    >>> import numpy as np, os, tempfile, h5py
    >>> path = write_hdf5(os.path.join(tempfile.mkdtemp(), "a.h5"), {"/entry/x": np.arange(3)},
    ...                   attrs={"/entry": {"NX_class": "NXentry"}})
    >>> h5py.File(path)["/entry/x"][()].tolist()
    [0, 1, 2]
    """
    import h5py

    with atomic_output(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            for name, array in datasets.items():
                h5.create_dataset(name, data=np.asarray(array), compression=compression)
            for name, values in (attrs or {}).items():
                node = h5.require_group(name) if name not in h5 else h5[name]
                for key, value in values.items():
                    node.attrs[key] = value
    return os.fspath(path)


def nexus_entry(h5, default: str | None, name: str = "entry"):
    """Start a NeXus file: the root (``NXroot``, ``@creator``, ``@default`` -> ``name``) and
    its ``NXentry`` group ``name``, whose ``@default`` names the NXdata (or group) that silx view
    opens first (None: set later). Returns the entry group."""
    h5.attrs["NX_class"] = "NXroot"
    h5.attrs["creator"] = "xreduce"
    h5.attrs["default"] = name
    entry = h5.create_group(name)
    entry.attrs["NX_class"] = "NXentry"
    if default is not None:
        entry.attrs["default"] = default
    return entry
