"""Reading stacks of frames from HDF5 URLs and fabio-readable files or file series.

A *stack URL* is one of:

- ``"file.h5::/entry/data"``: an HDF5 dataset, frames along its first axis; an optional
  selection in NumPy syntax follows the dataset path: ``"file.h5::/entry/data[0:3600]"``,
  ``"file.h5::/entry/data[::2, 100:900, :]"`` or one frame ``"file.h5::/dark[0]"``;
- a single image file fabio reads (EDF, TIFF, CBF, multi-frame EDF...);
- a glob pattern (``"scan/frame_*.edf"``, sorted by name) or a list of files: one frame each
  (multi-frame files contribute all their frames).

:func:`open_stack` returns a :class:`FrameStack` (shape, dtype, ``read(start, stop)``);
:func:`read_stack` reads all frames, :func:`iter_chunks` streams them.

Example
-------
>>> from xreduce.io import read_stack, iter_chunks
>>> frames = read_stack("scan.h5::/entry/data[0:100]")          # doctest: +SKIP
>>> for start, chunk in iter_chunks("scan.h5::/entry/data", 50):  # doctest: +SKIP
...     print(start, chunk.shape)
"""
from __future__ import annotations

import abc
import glob
import os
import re
from typing import Iterator, Sequence, Union

import numpy as np

__all__ = ["FrameStack", "open_stack", "read_stack", "iter_chunks", "parse_hdf5_url"]

StackUrl = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

_SELECTION = re.compile(r"^(?P<path>[^\[]*)(\[(?P<sel>[^\]]*)\])?$")


def _parse_index(text: str, url: str):
    """Parse one NumPy-style index: '3', ':', '0:10', '::2', '-5:'."""
    text = text.strip()
    if ":" not in text:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"url: bad index {text!r} in {url!r}") from None
    parts = text.split(":")
    if len(parts) > 3:
        raise ValueError(f"url: bad slice {text!r} in {url!r}")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError(f"url: bad slice {text!r} in {url!r}") from None
    return slice(*values)


def parse_hdf5_url(url: str) -> tuple[str, str, tuple]:
    """Split ``"file.h5::/path/data[sel]"`` into (file, dataset path, selection tuple).

    Example
    -------
    >>> parse_hdf5_url("scan.h5::/entry/data[0:10, :, 5]")
    ('scan.h5', '/entry/data', (slice(0, 10, None), slice(None, None, None), 5))
    """
    if "::" not in url:
        raise ValueError(f"url: expected 'file.h5::/dataset[selection]', got {url!r}")
    filename, inner = url.split("::", 1)
    match = _SELECTION.match(inner.strip())
    if not filename or match is None or not match.group("path"):
        raise ValueError(f"url: expected 'file.h5::/dataset[selection]', got {url!r}")
    sel_text = match.group("sel")
    selection = ()
    if sel_text is not None and sel_text.strip():
        selection = tuple(_parse_index(part, url) for part in sel_text.split(","))
    return filename, match.group("path").strip(), selection


class FrameStack(abc.ABC):
    """A read-only stack of frames from an HDF5 dataset or image files.

    Attributes
    ----------
    shape : tuple
        (n_frames, rows, cols) after the selection.
    dtype : numpy.dtype
    url : str
        The URL it was opened from.
    """

    def __len__(self) -> int:
        return self.shape[0]

    @abc.abstractmethod
    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start .. stop - 1`` as a (frames, rows, cols) array."""

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Frames ``start .. stop - 1`` written into ``out`` (C-contiguous, the stack's
        shape and dtype); HDF5 stacks read them there directly."""
        out[...] = self.read(start, stop)
        return out

    def read_frames(self, indices: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """Frames at the given indices (any order, repeats allowed), read in runs; into
        ``out`` (C-contiguous (len(indices), rows, cols), the stack's dtype) if given."""
        indices = np.asarray(indices, dtype=np.int64)
        shape = (len(indices),) + tuple(self.shape[1:])
        if out is not None and (out.shape != shape or out.dtype != self.dtype
                                or not out.flags.c_contiguous):
            raise ValueError(f"out: expected a C-contiguous {self.dtype} array of shape "
                             f"{shape}, got {out.dtype} {out.shape}")
        if out is None:
            out = np.empty(shape, self.dtype)
        if len(indices) == 0:
            return out
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"frame indices outside 0..{len(self) - 1}")
        if np.all(np.diff(indices) == 1):  # one run, the common case: no copy
            return self.read_into(int(indices[0]), int(indices[-1]) + 1, out)
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        unique, inverse = np.unique(sorted_idx, return_inverse=True)
        breaks = np.flatnonzero(np.diff(unique) != 1) + 1
        blocks = []
        for run in np.split(unique, breaks):
            blocks.append(self.read(int(run[0]), int(run[-1]) + 1))
        frames = np.concatenate(blocks, axis=0)
        out[order] = frames[inverse]
        return out

    def close(self) -> None:
        """Release open files (the stack cannot be read afterwards)."""

    def __enter__(self) -> "FrameStack":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_range(stack: FrameStack, start: int, stop: int | None) -> tuple[int, int]:
    n = len(stack)
    stop = n if stop is None else stop
    if not 0 <= start <= stop <= n:
        raise IndexError(f"frames {start}:{stop} outside the stack of {n} frames")
    return start, stop


class _Hdf5Stack(FrameStack):
    def __init__(self, url: str):
        import h5py

        try:
            import hdf5plugin  # noqa: F401  (registers compression filters)
        except ImportError:  # pragma: no cover
            pass
        filename, path, selection = parse_hdf5_url(url)
        if not os.path.exists(filename):
            raise FileNotFoundError(f"url: no file {filename!r} (from {url!r})")
        self.url = url
        self._file = h5py.File(filename, "r")
        if path not in self._file or not isinstance(self._file[path], h5py.Dataset):
            self._file.close()
            raise ValueError(f"url: no dataset {path!r} in {filename!r}")
        self._dataset = self._file[path]
        ds_shape = self._dataset.shape
        if len(selection) > len(ds_shape):
            self._file.close()
            raise ValueError(f"url: {len(selection)} indices for a {len(ds_shape)}D dataset")
        selection = selection + (slice(None),) * (len(ds_shape) - len(selection))
        first = selection[0]
        if isinstance(first, int):
            first = slice(first, first + 1 if first != -1 else None)
        self._frames = range(*first.indices(ds_shape[0]))
        if self._frames.step < 0:
            self._file.close()
            raise ValueError(f"url: negative frame steps are not supported, got {url!r}")
        self._rest = selection[1:]
        rest_shape = tuple(
            len(range(*s.indices(n))) for s, n in zip(self._rest, ds_shape[1:])
            if isinstance(s, slice)
        )
        if len(rest_shape) == 0:
            rest_shape = (1, 1)
        elif len(rest_shape) == 1:
            rest_shape = (1,) + rest_shape
        elif len(rest_shape) > 2:
            self._file.close()
            raise ValueError(f"url: frames must be 2D, the selection of {url!r} gives "
                             f"{rest_shape}")
        self.shape = (len(self._frames),) + rest_shape
        self.dtype = self._dataset.dtype

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        frames = self._frames[start:stop]
        if len(frames) == 0:
            return np.empty((0,) + self.shape[1:], self.dtype)
        first_sel = slice(frames[0], frames[-1] + 1, frames.step)
        data = self._dataset[(first_sel,) + self._rest]
        return np.ascontiguousarray(data).reshape((len(frames),) + self.shape[1:])

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        frames = self._frames[start:stop]
        plain = len(self._rest) == 2 and all(isinstance(s, slice) for s in self._rest)
        if len(frames) == 0 or not plain or out.dtype != self.dtype:
            return super().read_into(start, stop, out)
        first_sel = slice(frames[0], frames[-1] + 1, frames.step)
        self._dataset.read_direct(out, source_sel=(first_sel,) + self._rest)
        return out

    def close(self) -> None:
        self._file.close()


class _FabioStack(FrameStack):
    def __init__(self, files: list[str], url: str):
        import fabio

        self.url = url
        self._files = files
        self._index: list[tuple[int, int]] = []  # (file number, frame in file)
        first = None
        for number, name in enumerate(files):
            with fabio.open(name) as image:
                if first is None:
                    first = image.data
                for frame in range(max(1, image.nframes)):
                    self._index.append((number, frame))
        self.shape = (len(self._index),) + first.shape
        self.dtype = first.dtype

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        import fabio

        start, stop = _check_range(self, start, stop)
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        current, image = None, None
        try:
            for k, (number, frame) in enumerate(self._index[start:stop]):
                if number != current:
                    if image is not None:
                        image.close()
                    image, current = fabio.open(self._files[number]), number
                data = image.data if image.nframes <= 1 else image.getframe(frame).data
                if data.shape != self.shape[1:]:
                    raise ValueError(
                        f"url: frame {start + k} ({self._files[number]}) has shape "
                        f"{data.shape}, expected {self.shape[1:]}"
                    )
                out[k] = data
        finally:
            if image is not None:
                image.close()
        return out


def open_stack(url: StackUrl) -> FrameStack:
    """Open a stack of frames for reading (see the module notes for the URL forms).

    Parameters
    ----------
    url : str, path or list of paths
        ``"file.h5::/entry/data[0:3600]"``, an image file, a glob pattern or a list of files.

    Returns
    -------
    FrameStack
        Use as a context manager, or call ``close()``.

    Example
    -------
    >>> with open_stack("scan.h5::/entry/data[0:3600]") as stack:  # doctest: +SKIP
    ...     first = stack.read(0, 10)
    """
    if isinstance(url, (list, tuple)):
        files = [os.fspath(f) for f in url]
        if not files:
            raise ValueError("url: expected at least one file, got an empty list")
        for name in files:
            if not os.path.exists(name):
                raise FileNotFoundError(f"url: no file {name!r}")
        return _FabioStack(files, url=",".join(files))
    if not isinstance(url, (str, os.PathLike)):
        raise TypeError(f"url: expected a string, a path or a list of files, got {url!r}")
    url = os.fspath(url)
    if "::" in url:
        return _Hdf5Stack(url)
    if any(ch in url for ch in "*?["):
        files = sorted(glob.glob(url))
        if not files:
            raise FileNotFoundError(f"url: no file matches {url!r}")
        return _FabioStack(files, url=url)
    if not os.path.exists(url):
        raise FileNotFoundError(f"url: no file {url!r}")
    return _FabioStack([url], url=url)


def read_stack(url: StackUrl) -> np.ndarray:
    """Read every frame of a stack URL into a (frames, rows, cols) array.

    Example
    -------
    >>> dark = read_stack("dark.h5::/entry/dark[0:20]")  # doctest: +SKIP
    """
    with open_stack(url) as stack:
        return stack.read()


def iter_chunks(url: StackUrl, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, frames)`` for consecutive blocks of ``chunk`` frames.

    Only one block is in memory at a time.

    Example
    -------
    >>> total = sum(frames.sum() for _, frames in iter_chunks("scan.h5::/data", 100))  # doctest: +SKIP
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk: expected an integer >= 1, got {chunk!r}")
    with open_stack(url) as stack:
        for start in range(0, len(stack), int(chunk)):
            yield start, stack.read(start, min(start + int(chunk), len(stack)))

