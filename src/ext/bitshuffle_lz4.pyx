# cython: language_level=3
"""Decompression of bitshuffle-LZ4 HDF5 chunks (filter 32008 with LZ4), GIL released, the
blocks of all the chunks of a call spread over OpenMP threads in one parallel region. The LZ4
decoder and the bit un-shuffle (SSE2; AVX2 or AVX-512 at run time) are in
bitshuffle_lz4_impl.h; how they are made fast: doc/stack.md, "Direct chunk reads".

The chunk format (doc/stack.md, "Direct chunk reads"): a 12-byte header (uncompressed size,
uint64 big-endian; block size in bytes, uint32 big-endian), then per block a uint32 big-endian
compressed size and an LZ4 block of the bit-shuffled elements; the elements after the last
multiple of 8 are stored raw at the end. Bit-shuffled layout of a block of ``n`` elements of
``s`` bytes: ``s * 8`` rows of ``n / 8`` bytes, row ``8 j + k`` holding bit ``k`` of byte ``j``
of every element, element ``8 g + m`` at bit ``m`` of byte ``g``.
"""
from cython.parallel cimport prange, parallel
from libc.stdint cimport int8_t, uint8_t, uint32_t, uint64_t, int64_t, uintptr_t
cimport openmp
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

import numpy as np


include "big_endian.pxi"


cdef extern from "bitshuffle_lz4_impl.h" nogil:
    int64_t xr_lz4_block(const uint8_t* src, int64_t n_src, uint8_t* dst, int64_t n_dst)
    void xr_bitunshuffle(const uint8_t* src, uint8_t* dst, int64_t n, int64_t size, int stream)
    void xr_prefetch_write(uint8_t* p, int64_t n)
    void xr_prefetch_ahead(const uint8_t* p)
    int xr_simd_allowed
    int xr_simd()

_SIMD_LEVELS = {"sse2": 1, "avx2": 2, "avx512": 3}


def simd(level: str | None = None) -> str:
    """The instruction set of the un-shuffle: ``"avx512"`` (AVX-512 with VBMI and GFNI),
    ``"avx2"`` or ``"sse2"`` (x86-64's baseline; the portable code elsewhere), the best the
    CPU has. ``level`` caps it (the tests compare them: every level gives the same bytes).

    >>> from xreduce.ext import bitshuffle_lz4
    >>> bitshuffle_lz4.simd() in ("avx512", "avx2", "sse2")
    True
    """
    global xr_simd_allowed
    if level is not None:
        if level not in _SIMD_LEVELS:
            raise ValueError(f"level: expected one of {sorted(_SIMD_LEVELS)}, got {level!r}")
        xr_simd_allowed = _SIMD_LEVELS[level]
    current = xr_simd()
    return next(name for name, value in _SIMD_LEVELS.items() if value == current)


cdef int64_t _count_blocks(const uint8_t[::1] raw, int64_t n_out, int elem_size,
                           int64_t* block) noexcept:
    """Check a chunk's header: its number of LZ4 blocks (``block[0]`` elements each, the
    last one maybe fewer), or -1 for a header that does not fit the output."""
    if raw.shape[0] < 12 or elem_size < 1:
        return -1
    cdef int64_t total = <int64_t>_be64(&raw[0])
    cdef int64_t block_bytes = _be32(&raw[8])
    if total != n_out or total % elem_size != 0:
        return -1
    cdef int64_t n_elem = total // elem_size
    block[0] = block_bytes // elem_size
    if block[0] <= 0 or block[0] % 8 != 0 or block[0] * elem_size != block_bytes:
        return -1
    cdef int64_t leftover = n_elem % block[0]
    return n_elem // block[0] + (1 if leftover - leftover % 8 > 0 else 0)


cdef int64_t _walk_blocks(const uint8_t* raw, int64_t n_raw, int64_t n_elem, int elem_size,
                          int64_t n_blocks, int64_t* start, int64_t* size) noexcept nogil:
    """Where each of a chunk's blocks starts and how many compressed bytes it holds (a
    sequential scan of the block sizes); the bytes stored raw at the end, or -1 for a block
    that does not fit. Each step depends on the size read before: the scan is fast only on
    a chunk still in the cache, i.e. right after it was read (:func:`block_index`)."""
    cdef int64_t pos = 12, b, n
    for b in range(n_blocks):
        if pos + 4 > n_raw:
            return -1
        xr_prefetch_ahead(raw + pos)
        n = _be32(raw + pos)
        if n > n_raw - pos - 4:
            return -1
        start[b] = pos + 4
        size[b] = n
        pos += 4 + n
    cdef int64_t tail = (n_elem % 8) * elem_size
    if pos + tail != n_raw:
        return -1
    return tail


cdef void _place_blocks(const uint8_t* raw, uint8_t* out, int64_t n_out, int elem_size,
                        int64_t block, int64_t n_blocks, uintptr_t* src, uintptr_t* dst,
                        int64_t* count) noexcept nogil:
    """Blocks whose LZ4 data start at offsets ``src`` of ``raw``: their addresses, where each
    goes in ``out`` and how many elements it holds."""
    cdef int64_t n_elem = n_out // elem_size, b
    for b in range(n_blocks):
        src[b] = <uintptr_t>raw + src[b]
        dst[b] = <uintptr_t>(out + b * block * elem_size)
        count[b] = block if (b + 1) * block <= n_elem else (n_elem - b * block) // 8 * 8


cdef int64_t _plan_blocks(const uint8_t* raw, int64_t n_raw, uint8_t* out, int64_t n_out,
                          int elem_size, int64_t block, int64_t n_blocks, uintptr_t* src,
                          uintptr_t* dst, int64_t* csize, int64_t* count) noexcept nogil:
    """:func:`_walk_blocks`, then :func:`_place_blocks`; the tail bytes or -1."""
    # the offsets go to src first (int64_t and uintptr_t are the signed and unsigned long of
    # 64-bit platforms: C lets them alias), then become addresses
    cdef int64_t tail = _walk_blocks(raw, n_raw, n_out // elem_size, elem_size, n_blocks,
                                     <int64_t*>src, csize)
    if tail >= 0:
        _place_blocks(raw, out, n_out, elem_size, block, n_blocks, src, dst, count)
    return tail


cdef bint _index_fits(index, const uint8_t[::1] raw, int64_t n_blocks, int64_t block,
                      int64_t tail):
    """Whether a :func:`block_index` is this chunk's: blocks back to back from the header to
    the raw tail, each of the size stored before it, i.e. what the scan would find (so a
    stale or crafted index is never trusted). The stored sizes are read at addresses the
    index gives, independent loads the core overlaps, not the scan's chain of dependent
    reads (~4x faster on a cold Pilatus 2M chunk)."""
    if index is None:
        return False
    b, starts_, sizes_ = index
    if b != block or len(starts_) != n_blocks or len(sizes_) != n_blocks:
        return False
    cdef const int64_t[::1] starts = np.ascontiguousarray(starts_, np.int64)
    cdef const int64_t[::1] sizes = np.ascontiguousarray(sizes_, np.int64)
    cdef int64_t n_raw = raw.shape[0], pos = 12, k
    for k in range(n_blocks):
        if starts[k] != pos + 4 or sizes[k] < 0 or sizes[k] > n_raw - starts[k] \
                or _be32(&raw[pos]) != sizes[k]:
            return False
        pos = starts[k] + sizes[k]
    return pos + tail == n_raw


def block_index(const uint8_t[::1] raw, int64_t n_out, int elem_size):
    """The LZ4 blocks of a bitshuffle-LZ4 chunk that decompresses to ``n_out`` bytes of
    ``elem_size``-byte elements: ``(block, starts, sizes)``, the elements a block and, per
    block, where its LZ4 data start in ``raw`` and how many bytes they hold (int64 arrays);
    None for a chunk whose header or blocks do not fit (damaged). Done right after the read,
    while the chunk is in the cache (doc/stack.md, "Speed"), it saves the kernels that decode
    the blocks in parallel a scan of memory that costs ~30x more once the chunk is cold.

    >>> block_index(np.zeros(8, np.uint8), 0, 4) is None  # no header
    True
    """
    cdef int64_t block
    cdef int64_t n_blocks = _count_blocks(raw, n_out, elem_size, &block)
    if n_blocks < 0:
        return None
    starts = np.empty(n_blocks, np.int64)
    sizes = np.empty(n_blocks, np.int64)
    cdef int64_t[::1] st = starts
    cdef int64_t[::1] sz = sizes
    if _walk_blocks(&raw[0], raw.shape[0], n_out // elem_size, elem_size, n_blocks,
                    &st[0] if n_blocks else NULL, &sz[0] if n_blocks else NULL) < 0:
        return None
    return block, starts, sizes


#: Output bytes of a call from which the AVX-512 un-shuffle writes with non-temporal stores:
#: larger than a core's share of the last-level cache, the frames leave the cache before
#: they are read anyway, and writing them without reading each line first took a Pilatus 2M
#: frame from 1.31-1.38 to 1.01 ms at C level, ~10 % through Python (doc/stack.md, "Direct
#: chunk reads").
STREAM_BYTES = 16 << 20


def decompress_chunks(raws, outs, int elem_size, int num_threads=0, stream=None,
                      indexes=None) -> list:
    """Decompress bitshuffle-LZ4 chunks ``raws[i]`` (uint8 arrays) into ``outs[i]`` (uint8
    arrays of their exact sizes), the blocks of all of them spread over ``num_threads``
    OpenMP threads (0: the OpenMP default) in one parallel region. ``stream``: write the
    outputs with non-temporal stores (AVX-512 path, 64-byte aligned outputs; None: when they
    hold ``STREAM_BYTES`` or more). Same bytes either way (tested). ``indexes``: per chunk
    its :func:`block_index` (or None), found while it was cached; used where it fits the
    chunk, which saves the scan of a cold chunk's block sizes.

    Returns a status per chunk: 0, or a negative code: -1 a header or block that does not
    fit, -3 an LZ4 block that does not decode to its size, -4 out of memory.
    """
    if len(raws) != len(outs):
        raise ValueError(f"outs: expected one output per chunk ({len(raws)}), got {len(outs)}")
    cdef Py_ssize_t n_chunks = len(raws), i
    cdef const uint8_t[::1] raw
    cdef uint8_t[::1] out
    views = [(raws[i], outs[i]) for i in range(n_chunks)]  # alive (addresses valid) until the end
    status = [0] * n_chunks
    blocks = np.zeros(n_chunks, np.int64)
    counts_of = np.zeros(n_chunks + 1, np.int64)
    cdef int64_t[::1] block = blocks
    cdef int64_t[::1] first = counts_of
    cdef int64_t n, max_block = 8
    for i in range(n_chunks):  # headers: how many blocks in all
        raw, out = views[i]
        n = _count_blocks(raw, out.shape[0], elem_size, &block[i])
        if n < 0:
            status[i] = -1
            n = 0
        else:
            max_block = max(max_block, block[i])
        first[i + 1] = first[i] + n
    cdef Py_ssize_t n_blocks = first[n_chunks], b
    arrays = [np.empty(max(n_blocks, 1), t) for t in (np.uintp, np.uintp, np.int64, np.int64)]
    cdef uintptr_t[::1] srcs = arrays[0]
    cdef uintptr_t[::1] dsts = arrays[1]
    cdef int64_t[::1] csize_of = arrays[2]
    cdef int64_t[::1] count_of = arrays[3]
    tails = np.full(n_chunks, -1, np.int64)
    cdef int64_t[::1] tail = tails
    if indexes is not None and len(indexes) != n_chunks:
        raise ValueError(f"indexes: expected one per chunk ({n_chunks}), got {len(indexes)}")
    for i in range(n_chunks):  # where every block starts and goes
        if status[i] != 0:
            continue
        raw, out = views[i]
        b = first[i]
        n = first[i + 1] - b
        if indexes is not None and _index_fits(indexes[i], raws[i], n, block[i],
                                               (out.shape[0] // elem_size % 8) * elem_size):
            arrays[0][b:b + n] = indexes[i][1]
            arrays[2][b:b + n] = indexes[i][2]
            tail[i] = (out.shape[0] // elem_size % 8) * elem_size
            _place_blocks(&raw[0], &out[0] if out.shape[0] else NULL, out.shape[0],
                          elem_size, block[i], n, &srcs[b], &dsts[b], &count_of[b])
            continue
        tail[i] = _plan_blocks(&raw[0], raw.shape[0], &out[0] if out.shape[0] else NULL,
                               out.shape[0], elem_size, block[i], n,
                               &srcs[b], &dsts[b], &csize_of[b], &count_of[b])
        if tail[i] < 0:
            status[i] = -1
            count_of[b:first[i + 1]] = -1  # skipped below
    failed = np.zeros(max(n_blocks, 1), dtype=np.int8)
    cdef int8_t[::1] bad = failed
    cdef int64_t got, nbytes
    cdef uint8_t* scratch
    if stream is None:
        stream = sum(int(out.shape[0]) for raw, out in views) >= STREAM_BYTES
    cdef int nt = 1 if stream and xr_simd() >= 3 else 0
    cdef int threads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    if n_blocks < 2 * threads:
        threads = 1
    if n_blocks:
        with nogil, parallel(num_threads=threads):
            scratch = <uint8_t*>malloc(<size_t>(max_block * elem_size))  # one block, hot in L1/L2
            # dynamic: a thread that stalls holds 8 blocks, not its share of them all
            for b in prange(n_blocks, schedule="dynamic", chunksize=8):
                if count_of[b] < 0:
                    continue
                if scratch == NULL:
                    bad[b] = 3
                    continue
                nbytes = count_of[b] * elem_size
                if not nt:  # the output lines fetched while LZ4 decodes
                    xr_prefetch_write(<uint8_t*>dsts[b], nbytes)
                got = xr_lz4_block(<const uint8_t*>srcs[b], csize_of[b], scratch, nbytes)
                if got != nbytes:
                    bad[b] = 2
                else:
                    xr_bitunshuffle(scratch, <uint8_t*>dsts[b], count_of[b], elem_size, nt)
            free(scratch)
        if failed.any():
            owner = np.searchsorted(counts_of, np.arange(n_blocks), side="right") - 1
            for b in np.flatnonzero(failed[:n_blocks]):
                i = owner[b]
                status[i] = min(status[i], -1 - int(failed[b]))
    for i in range(n_chunks):  # the last elements, stored raw
        raw, out = views[i]
        if status[i] == 0 and tail[i] > 0:
            memcpy(&out[out.shape[0] - tail[i]], &raw[raw.shape[0] - tail[i]], <size_t>tail[i])
    return status


def decompress_chunk(const uint8_t[::1] raw, uint8_t[::1] out, int elem_size,
                     int num_threads=0, stream=None) -> int:
    """Decompress one bitshuffle-LZ4 chunk ``raw`` into ``out`` (its exact size in bytes):
    :func:`decompress_chunks` of one chunk. Returns 0 or a negative code (see there)."""
    return decompress_chunks([raw], [out], elem_size, num_threads, stream)[0]
