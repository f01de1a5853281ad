"""Writing outputs safely: to a temporary name first, renamed when complete.

A reader never sees a half-written file under the final name: :func:`atomic_output` yields a
temporary path next to the final one (``.<name>.partial``), and renames it with
:func:`os.replace` (atomic on POSIX) when the block ends without error. Long runs that must
resume keep the partial file on error (``keep_partial=True``) and find it again with
:func:`partial_path`.

Example
-------
>>> import numpy as np
>>> from xreduce.io import atomic_output, write_hdf5
>>> with atomic_output("result.npy") as tmp:            # doctest: +SKIP
...     np.save(tmp, np.arange(3))
>>> write_hdf5("result.h5", {"/entry/data": np.zeros((2, 2))}, attrs={"/entry": {"note": "x"}})  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

import numpy as np

__all__ = ["partial_path", "atomic_output", "write_hdf5"]


def partial_path(path: str | os.PathLike, suffix: str = "partial") -> str:
    """The temporary name used while ``path`` is being written: ``dir/.name.partial`` (or
    another ``suffix``, e.g. for a folder of work in progress)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True,
                  keep_partial: bool = False) -> Iterator[str]:
    """Yield a temporary path; rename it to ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or path
        Final file name.
    overwrite : bool
        Replace an existing ``path``; if False, raise FileExistsError before starting.
    keep_partial : bool
        On error, keep the temporary file (for resuming) instead of deleting it.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"path: {path!r} exists (overwrite is off)")
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise FileNotFoundError(f"path: folder {folder!r} does not exist")
    tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        if not keep_partial and os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_hdf5(path: str | os.PathLike, datasets: Mapping[str, np.ndarray],
               attrs: Mapping[str, Mapping[str, object]] | None = None,
               overwrite: bool = True, compression: str | None = None) -> str:
    """Write datasets (``{"/entry/data": array}``) and attributes (``{"/entry": {...}}``)
    to a new HDF5 file, atomically. Returns the final path."""
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
