"""Reading stacks of frames from HDF5 URLs and fabio-readable files or file series.

A *stack URL* is one of (the full list, with examples, is in ``doc/stack.md``):

- ``"file.h5::/entry/data"``: an HDF5 dataset, frames along its first axis; an optional
  selection in NumPy syntax follows the dataset path: ``"file.h5::/entry/data[0:3600]"``,
  ``"file.h5::/entry/data[::2, 100:900, :]"`` or one frame ``"file.h5::/dark[0]"``;
- a silx ``DataUrl`` (parsed by silx): ``"silx:///path/file.h5?path=/entry/data&slice=0:100"``,
  ``"silx:file.h5::/entry/data[0:100]"``, ``"file.h5?/entry/data"`` or
  ``"fabio:///path/frames.edf?slice=2"``;
- an HDF5 file alone: an Eiger/LIMA master file (``master.h5``: its ``/entry/data/data_NNNNNN``
  links to the data files are followed, in order), else the NeXus ``@default`` signal, else the
  only dataset of 3 dimensions or more;
- a single image file fabio reads (EDF, TIFF, CBF, multi-frame EDF...);
- a glob pattern (``"scan/frame_*.edf"``, sorted by name), a printf pattern
  (``"scan/frame_%04d.cbf"``) or a list of files: one frame each (multi-frame files contribute
  all their frames); a list mixing HDF5 URLs and files concatenates them.

Frames of shape ``(n, 1, rows, cols)`` (4D detector data) are read as ``(n, rows, cols)``.
Compressed HDF5 (bitshuffle-LZ4, Blosc, Zstd...) is read through hdf5plugin. A
:class:`FrameStack` pickles as its URL and is reopened where it is unpickled (a dask worker):
no h5py object is ever pickled.

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

from .chunks import (ChunkBuffers, RawChunks, direct_read_plan, read_frames_direct,
                     read_raw_chunks)

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

    chunk_frames: int = 1  # frames per HDF5 chunk (reads aligned to it are cheapest)
    direct_chunks: bool = False  # bitshuffle-LZ4 chunks read raw (read_raw) and decoded by us
    source: StackUrl = ""  # what open_stack was given: reopened from it when unpickled

    def __len__(self) -> int:
        return self.shape[0]

    def __reduce__(self):
        return open_stack, (self.source,)

    @property
    def files(self) -> list[str]:
        """Absolute paths of every file the frames are read from."""
        return []

    def frames_of_files(self, paths: Sequence[str]) -> np.ndarray | None:
        """Indices of the frames read from any of these files (absolute paths), or None
        where the stack cannot tell (an HDF5 dataset: every frame may depend on the file)."""
        return None

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


def _hdf5_error(url: str, exc: Exception) -> ValueError:
    return ValueError(f"url: cannot read {url!r} as HDF5 ({exc})")


class _Hdf5Stack(FrameStack):
    """Frames of one HDF5 dataset (a selection of its first axis and of the frame axes)."""

    def __init__(self, filename: str, path: str, selection: tuple, url: str):
        import h5py

        try:
            import hdf5plugin  # noqa: F401  (registers compression filters)
        except ImportError:  # pragma: no cover
            pass
        if not os.path.exists(filename):
            raise FileNotFoundError(f"url: no file {filename!r} (from {url!r})")
        self.url = url
        self.filename = filename
        try:
            self._file = h5py.File(filename, "r")
        except OSError as exc:
            raise _hdf5_error(url, exc) from None
        try:
            self._open_dataset(path, selection, url)
        except BaseException:
            self._file.close()
            raise

    def _open_dataset(self, path: str, selection: tuple, url: str) -> None:
        import h5py

        try:
            node = self._file.get(path)
        except (OSError, KeyError, ValueError) as exc:  # broken external link, bad name
            raise ValueError(f"url: cannot open {path!r} inside {self.filename!r} ({exc})") \
                from None
        if not isinstance(node, h5py.Dataset):
            raise ValueError(f"url: no dataset {path!r} inside {self.filename!r} "
                             f"(from {url!r})")
        self._dataset = node
        ds_shape = node.shape
        if len(selection) > len(ds_shape):
            raise ValueError(f"url: {len(selection)} indices for a {len(ds_shape)}D dataset "
                             f"{path!r} in {self.filename!r}")
        selection = selection + (slice(None),) * (len(ds_shape) - len(selection))
        if len(ds_shape) == 4 and ds_shape[1] == 1 and selection[1] == slice(None):
            selection = (selection[0], 0) + selection[2:]  # (n, 1, rows, cols) detector data
        if len(ds_shape) < 2:
            raise ValueError(f"url: dataset {path!r} in {self.filename!r} has shape "
                             f"{ds_shape}; expected frames (n, rows, cols)")
        first = selection[0]
        n_total = ds_shape[0]
        if isinstance(first, int):
            if not -n_total <= first < n_total:
                raise ValueError(f"url: frame {first} selected but {path!r} in "
                                 f"{self.filename!r} has {n_total} frames")
            first = first % n_total
            first = slice(first, first + 1)
        if first.stop is not None and first.stop > n_total:
            raise ValueError(f"url: frames up to {first.stop} selected but {path!r} in "
                             f"{self.filename!r} has {n_total} frames")
        self._frames = range(*first.indices(n_total))
        if self._frames.step < 0:
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
            raise ValueError(f"url: frames must be 2D, the selection of {url!r} gives "
                             f"{rest_shape}")
        self.shape = (len(self._frames),) + rest_shape
        self.dtype = node.dtype
        chunks = node.chunks
        self.chunk_frames = int(chunks[0]) if chunks and self._frames.step == 1 else 1
        full = all(isinstance(s, slice) and s.indices(n) == (0, n, 1)
                   for s, n in zip(self._rest, ds_shape[1:]))
        # bitshuffle-LZ4 frames read by our GIL-free kernel (xreduce.io.chunks)
        self.direct_chunks = (full and len(self._rest) == 2 and self._frames.step == 1
                              and direct_read_plan(node))
        self._raw_buffers = ChunkBuffers()  # compressed chunks read into reused memory

    @property
    def files(self) -> list[str]:
        """Every file the frames come from (the data files of external links and VDS)."""
        names = {os.path.abspath(self.filename)}
        if self._dataset.is_virtual:
            folder = os.path.dirname(os.path.abspath(self.filename))
            for source in self._dataset.virtual_sources():
                if source.file_name not in (".", ""):
                    names.add(os.path.join(folder, source.file_name))
        ext = self._dataset.file.filename
        names.add(os.path.abspath(ext))
        return sorted(names)

    def _read(self, selection: tuple, out: np.ndarray | None = None) -> np.ndarray:
        if self.direct_chunks:
            first = selection[0]
            return read_frames_direct(self._dataset, first.start, first.stop, out,
                                      buffers=self._raw_buffers)
        try:
            if out is not None:
                self._dataset.read_direct(out, source_sel=selection)
                return out
            return self._dataset[selection]
        except (OSError, RuntimeError) as exc:  # a corrupt chunk, a failed filter
            raise ValueError(f"url: cannot read frames of {self.url!r} ({exc})") from None

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        frames = self._frames[start:stop]
        if len(frames) == 0:
            return np.empty((0,) + self.shape[1:], self.dtype)
        first_sel = slice(frames[0], frames[-1] + 1, frames.step)
        data = self._read((first_sel,) + self._rest)
        return np.ascontiguousarray(data).reshape((len(frames),) + self.shape[1:])

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        frames = self._frames[start:stop]
        plain = len(self._rest) == 2 and all(isinstance(s, slice) for s in self._rest)
        if len(frames) == 0 or not plain or out.dtype != self.dtype:
            return super().read_into(start, stop, out)
        first_sel = slice(frames[0], frames[-1] + 1, frames.step)
        return self._read((first_sel,) + self._rest, out)

    def read_raw(self, start: int, stop: int) -> RawChunks:
        """Frames ``start .. stop - 1`` as their compressed chunks (only where
        ``direct_chunks``): read now, decompressed later with
        :meth:`RawChunks.decompress_into`, by the thread that has the cores for it."""
        if not self.direct_chunks:
            raise ValueError(f"url: {self.url!r} is not read by direct chunk reads")
        start, stop = _check_range(self, start, stop)
        return read_raw_chunks(self._dataset, self._frames[start] if stop > start else 0,
                               self._frames[stop - 1] + 1 if stop > start else 0,
                               self._raw_buffers)

    def close(self) -> None:
        self._file.close()


class _ConcatStack(FrameStack):
    """Several stacks of one frame shape, one after the other (Eiger data files, URL lists)."""

    def __init__(self, parts: list[FrameStack], url: str):
        self.url = url
        self._parts = parts
        shapes = {p.shape[1:] for p in parts}
        if len(shapes) != 1:
            for p in parts:
                p.close()
            raise ValueError(f"url: the parts of {url!r} have different frame shapes "
                             f"{sorted(shapes)}")
        self._offsets = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self._offsets[-1]),) + parts[0].shape[1:]
        self.dtype = np.result_type(*[p.dtype for p in parts])
        self.chunk_frames = getattr(parts[0], "chunk_frames", 1)

    @property
    def files(self) -> list[str]:
        return sorted({f for p in self._parts for f in p.files})

    def frames_of_files(self, paths: Sequence[str]) -> np.ndarray | None:
        found = []
        for k, part in enumerate(self._parts):
            if not set(part.files) & {os.path.abspath(p) for p in paths}:
                continue
            frames = part.frames_of_files(paths)
            if frames is None:
                return None
            found.append(frames + int(self._offsets[k]))
        return np.concatenate(found) if found else np.empty(0, np.int64)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        return self.read_into(start, stop, out)

    def read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        for k, part in enumerate(self._parts):
            lo = max(start, int(self._offsets[k]))
            hi = min(stop, int(self._offsets[k + 1]))
            if lo < hi:
                base = int(self._offsets[k])
                part.read_into(lo - base, hi - base, out[lo - start:hi - start])
        return out

    def close(self) -> None:
        for part in self._parts:
            part.close()


def _open_image(name: str):
    """fabio.open, with a ValueError naming the file when fabio cannot read it."""
    import fabio

    try:
        return fabio.open(name)
    except FileNotFoundError:
        raise FileNotFoundError(f"url: no file {name!r}") from None
    except Exception as exc:  # fabio raises many kinds on a corrupt or unknown file
        raise ValueError(f"url: fabio cannot read {name!r} ({type(exc).__name__}: {exc})") \
            from None


class _FabioStack(FrameStack):
    """Frames of image files fabio reads, in the order given (multi-frame files expanded)."""

    def __init__(self, files: list[str], url: str):
        self.url = url
        self._files = files
        self._index: list[tuple[int, int]] = []  # (file number, frame in file)
        first = None
        for number, name in enumerate(files):
            with _open_image(name) as image:
                if first is None:
                    first = image.data
                for frame in range(max(1, image.nframes)):
                    self._index.append((number, frame))
        self.shape = (len(self._index),) + first.shape
        self.dtype = first.dtype

    @property
    def files(self) -> list[str]:
        return [os.path.abspath(f) for f in self._files]

    def frames_of_files(self, paths: Sequence[str]) -> np.ndarray | None:
        wanted = {os.path.abspath(p) for p in paths}
        numbers = {k for k, name in enumerate(self._files) if os.path.abspath(name) in wanted}
        return np.array([i for i, (number, _) in enumerate(self._index) if number in numbers],
                        dtype=np.int64)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        current, image = None, None
        try:
            for k, (number, frame) in enumerate(self._index[start:stop]):
                if number != current:
                    if image is not None:
                        image.close()
                    image, current = _open_image(self._files[number]), number
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


_SCHEMES = ("silx:", "fabio:")
_PRINTF = re.compile(r"%(0?)(\d*)d")


def _split_url(url: str) -> tuple[str, str | None, tuple]:
    """(file, path inside or None, selection) of a ``::`` or silx DataUrl string; silx's
    parser splits the URL, our own reads a ``[...]`` selection after the path."""
    from silx.io.url import DataUrl

    parsed = DataUrl(url)
    if not parsed.is_valid() or not parsed.file_path():
        raise ValueError(f"url: expected 'file.h5::/dataset[selection]' or a silx DataUrl "
                         f"('silx:///file.h5?path=/dataset&slice=0:10'), got {url!r}")
    path = parsed.data_path()
    selection: tuple = ()
    if path is not None and "[" in path:
        _, path, selection = parse_hdf5_url(f"{parsed.file_path()}::{path}")
    if parsed.data_slice() is not None:
        if selection:
            raise ValueError(f"url: a selection both in the path and in 'slice=', got {url!r}")
        selection = tuple(parsed.data_slice())
    if url.startswith("::") or (path is not None and not path.strip()):
        raise ValueError(f"url: expected 'file.h5::/dataset[selection]', got {url!r}")
    return parsed.file_path(), path, selection


def _is_hdf5(filename: str) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(filename))
    except OSError:
        return False


def _default_dataset(filename: str, url: str) -> FrameStack:
    """The frames of an HDF5 file named alone: Eiger/LIMA master links, the NeXus default
    signal, or the only dataset of 3 or more dimensions."""
    import h5py

    try:
        h5 = h5py.File(filename, "r")
    except OSError as exc:
        raise _hdf5_error(url, exc) from None
    with h5:
        group = h5.get("/entry/data")
        links = sorted(k for k in (group.keys() if isinstance(group, h5py.Group) else [])
                       if re.fullmatch(r"data_\d+", k))
        if links:  # Eiger master: the data live in linked files, in link order
            paths = [f"/entry/data/{k}" for k in links]
        else:
            paths = []
            node = h5
            for _ in range(4):  # NXroot -> NXentry -> NXdata -> signal
                default = node.attrs.get("default") if isinstance(node, h5py.Group) else None
                if isinstance(default, bytes):
                    default = default.decode()
                if default is None or default not in node:
                    break
                node = node[default]
            if isinstance(node, h5py.Group) and "signal" in node.attrs:
                signal = node.attrs["signal"]
                signal = signal.decode() if isinstance(signal, bytes) else str(signal)
                if signal in node:
                    paths = [node[signal].name]
            if not paths:
                found: list[str] = []
                h5.visititems(lambda name, obj: found.append("/" + name)
                              if isinstance(obj, h5py.Dataset) and obj.ndim >= 3 else None)
                if len(found) != 1:
                    raise ValueError(
                        f"url: {filename!r} has {len(found)} datasets of 3 or more dimensions "
                        f"({found[:5]}) and no NeXus default; name one as "
                        f"'{filename}::/path/to/data'")
                paths = found
    parts = [_Hdf5Stack(filename, p, (), f"{filename}::{p}") for p in paths]
    return parts[0] if len(parts) == 1 else _ConcatStack(parts, url)


def _expand_pattern(url: str) -> list[str]:
    """Files of a glob (``frame_*.cbf``, sorted by name) or printf (``frame_%04d.cbf``, sorted
    by number) pattern."""
    if not _PRINTF.search(url):
        return sorted(glob.glob(url))
    number = re.compile(_PRINTF.sub(lambda m: r"(\d+)", re.escape(url), count=1))
    files = [f for f in glob.glob(_PRINTF.sub("*", url, count=1)) if number.fullmatch(f)]
    return sorted(files, key=lambda f: int(number.fullmatch(f).group(1)))


def _is_plain_file(url: str) -> bool:
    return ("::" not in url and not url.startswith(_SCHEMES) and "?" not in url
            and not _is_hdf5(url))


def open_stack(url: StackUrl) -> FrameStack:
    """Open a stack of frames for reading (see the module notes for the URL forms).

    Parameters
    ----------
    url : str, path or list
        ``"file.h5::/entry/data[0:3600]"``, a silx DataUrl, an HDF5 or Eiger master file, an
        image file, a glob or printf pattern, or a list of any of these (concatenated).

    Returns
    -------
    FrameStack
        Use as a context manager, or call ``close()``.

    Raises
    ------
    FileNotFoundError
        A file (or every file of a pattern) is missing; the message names it.
    ValueError
        The path inside the file, the selection or the file's content is not what a stack
        needs; the message names what was not found.

    Example
    -------
    >>> with open_stack("scan.h5::/entry/data[0:3600]") as stack:  # doctest: +SKIP
    ...     first = stack.read(0, 10)
    """
    stack = _open(url)
    stack.source = url if isinstance(url, str) else (
        [os.fspath(u) for u in url] if isinstance(url, (list, tuple)) else os.fspath(url))
    return stack


def _open(url: StackUrl) -> FrameStack:
    if isinstance(url, (list, tuple)):
        names = [os.fspath(f) for f in url]
        if not names:
            raise ValueError("url: expected at least one file, got an empty list")
        if len(names) == 1:
            return _open(names[0])
        for name in names:
            if _is_plain_file(name) and not os.path.exists(name):
                if not any(ch in name for ch in "*?[%"):
                    raise FileNotFoundError(f"url: no file {name!r}")
        if all(_is_plain_file(n) and os.path.exists(n) for n in names):
            return _FabioStack(names, url=",".join(names))
        parts: list[FrameStack] = []
        try:
            for name in names:
                parts.append(_open(name))
        except BaseException:
            for part in parts:
                part.close()
            raise
        return _ConcatStack(parts, url=",".join(names))
    if not isinstance(url, (str, os.PathLike)):
        raise TypeError(f"url: expected a string, a path or a list of files, got {url!r}")
    url = os.fspath(url)
    if "::" in url or url.startswith(_SCHEMES) or ("?" in url and not os.path.exists(url)):
        filename, path, selection = _split_url(url)
        if url.startswith("fabio:"):
            if path:
                raise ValueError(f"url: a fabio URL has no path inside the file, got {url!r}")
            stack = _open(filename)
            if selection:
                frames = range(len(stack))[selection[0]]
                if isinstance(frames, int):
                    frames = [frames]
                return _SelectedStack(stack, list(frames), url)
            return stack
        if not os.path.exists(filename):
            raise FileNotFoundError(f"url: no file {filename!r} (from {url!r})")
        if path is None:
            if selection:
                raise ValueError(f"url: a selection needs a path inside the file, got {url!r}")
            return _default_dataset(filename, url)
        return _Hdf5Stack(filename, path, selection, url)
    if any(ch in url for ch in "*?[") or _PRINTF.search(url):
        files = _expand_pattern(url)
        if not files:
            raise FileNotFoundError(f"url: no file matches {url!r}")
        return _FabioStack(files, url=url)
    if not os.path.exists(url):
        raise FileNotFoundError(f"url: no file {url!r}")
    if _is_hdf5(url):
        return _default_dataset(url, url)
    return _FabioStack([url], url=url)


class _SelectedStack(FrameStack):
    """Some frames of another stack (the ``slice=`` of a fabio URL)."""

    def __init__(self, stack: FrameStack, frames: list[int], url: str):
        self.url = url
        self._stack = stack
        self._frames = frames
        self.shape = (len(frames),) + stack.shape[1:]
        self.dtype = stack.dtype

    @property
    def files(self) -> list[str]:
        return self._stack.files

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        start, stop = _check_range(self, start, stop)
        return self._stack.read_frames(self._frames[start:stop])

    def close(self) -> None:
        self._stack.close()


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

