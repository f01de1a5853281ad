"""Binary NF images as MIDAS stores them: ``SpotsInfo.bin``, one bit per pixel, LSB first.

Bit ``k = ((distance * n_frames + frame) * NrPixelsY + y) * NrPixelsZ + z`` of the stack is
``word[k // 32] >> (k % 32) & 1`` in little-endian uint32 words (doc/nf.md, "SpotsInfo.bin").
Because the words are little-endian and the bits LSB first, the same stream read as bytes has
bit ``k`` at ``byte[k // 8] >> (k % 8) & 1``: NumPy's ``packbits(..., bitorder="little")``.

Example
-------
>>> import numpy as np
>>> lit = np.zeros((2, 3, 4, 5), bool); lit[1, 2, 3, 4] = True
>>> words = pack_lit(lit)
>>> int(np.flatnonzero(unpack_lit(words, lit.shape).ravel())[0]) == lit.size - 1
True
"""
from __future__ import annotations

import os

import numpy as np

from xreduce.limits import check_allocation

__all__ = ["n_words", "pack_lit", "unpack_lit", "lit_bit", "set_lit", "read_spots_info",
           "write_spots_info"]


def _check_shape(shape) -> tuple[int, int, int, int]:
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape: expected (n_distances, n_frames, NrPixelsY, NrPixelsZ), "
                        f"got {shape!r}") from None
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"shape: expected four positive integers (n_distances, n_frames, "
                         f"NrPixelsY, NrPixelsZ), got {shape!r}")
    return dims


def n_words(shape) -> int:
    """Number of uint32 words holding a stack of this shape."""
    dims = _check_shape(shape)
    return -(-int(np.prod(dims, dtype=object)) // 32)


def pack_lit(lit: np.ndarray) -> np.ndarray:
    """Pack a boolean stack ``(n_distances, n_frames, NrPixelsY, NrPixelsZ)`` into uint32 words."""
    lit = np.asarray(lit)
    _check_shape(lit.shape)
    packed = np.packbits(lit.astype(bool, copy=False).ravel(), bitorder="little")
    words = np.zeros(n_words(lit.shape), dtype="<u4")
    words.view(np.uint8)[: packed.size] = packed
    return words


def unpack_lit(words: np.ndarray, shape) -> np.ndarray:
    """The boolean stack of ``shape`` held in ``words`` (inverse of :func:`pack_lit`)."""
    dims = _check_shape(shape)
    words = np.ascontiguousarray(words, dtype="<u4")
    if words.ndim != 1 or words.size != n_words(dims):
        raise ValueError(f"words: expected {n_words(dims)} uint32 words for shape {dims}, "
                         f"got {words.size}")
    total = int(np.prod(dims))
    bits = np.unpackbits(words.view(np.uint8), count=total, bitorder="little")
    return bits.astype(bool).reshape(dims)


def lit_bit(words: np.ndarray, shape, distance: int, frame: int, y: int, z: int) -> bool:
    """Whether pixel (y, z) of ``frame`` at ``distance`` is lit (one bit, no unpacking)."""
    nd, nf, ny, nz = _check_shape(shape)
    k = ((int(distance) * nf + int(frame)) * ny + int(y)) * nz + int(z)
    return bool((int(words[k // 32]) >> (k % 32)) & 1)


def set_lit(words: np.ndarray, shape, distance, frame, y, z) -> None:
    """Set the bits of pixels ``(distance, frame, y, z)`` (arrays, repeats allowed) in
    ``words`` in place; every index must lie inside ``shape``."""
    nd, nf, ny, nz = _check_shape(shape)
    if words.dtype != np.dtype("<u4") or words.ndim != 1 or words.size != n_words(shape):
        raise ValueError(f"words: expected {n_words(shape)} little-endian uint32 words, got "
                         f"{words.dtype} {words.shape}")
    idx = [np.asarray(a, dtype=np.int64).ravel() for a in (distance, frame, y, z)]
    for name, a, n in zip(("distance", "frame", "y", "z"), idx, (nd, nf, ny, nz)):
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"{name}: indices must lie in 0..{n - 1}")
    k = np.unique(((idx[0] * nf + idx[1]) * ny + idx[2]) * nz + idx[3])
    np.bitwise_or.at(words, k >> 5, np.left_shift(1, k & 31).astype(np.uint32))


def read_spots_info(path: str | os.PathLike, shape) -> np.ndarray:
    """Read ``SpotsInfo.bin`` for a stack of ``shape``; its size must match exactly."""
    dims = _check_shape(shape)
    expected = n_words(dims) * 4
    check_allocation(expected, "shape", "SpotsInfo.bin words")
    size = os.path.getsize(path)
    if size != expected:
        raise ValueError(f"{os.fspath(path)}: SpotsInfo.bin has {size} bytes, but the parameters "
                         f"(n_distances, n_frames, NrPixelsY, NrPixelsZ) = {dims} need {expected}")
    return np.fromfile(path, dtype="<u4")


def write_spots_info(path: str | os.PathLike, words: np.ndarray) -> None:
    """Write uint32 words as ``SpotsInfo.bin`` (atomically)."""
    from xreduce.io.writers import atomic_output

    words = np.ascontiguousarray(words, dtype="<u4")
    if words.ndim != 1:
        raise ValueError(f"words: expected a 1D array of uint32 words, got shape {words.shape}")
    with atomic_output(path) as tmp:
        words.tofile(tmp)
