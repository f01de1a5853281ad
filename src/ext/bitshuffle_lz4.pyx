# cython: language_level=3
"""Decompression of bitshuffle-LZ4 HDF5 chunks (filter 32008 with LZ4), GIL released, the
blocks of a chunk spread over OpenMP threads.

The chunk format (doc/stack.md, "Direct chunk reads"): a 12-byte header (uncompressed size,
uint64 big-endian; block size in bytes, uint32 big-endian), then per block a uint32 big-endian
compressed size and an LZ4 block of the bit-shuffled elements; the elements after the last
multiple of 8 are stored raw at the end. Bit-shuffled layout of a block of ``n`` elements of
``s`` bytes: ``s * 8`` rows of ``n / 8`` bytes, row ``8 j + k`` holding bit ``k`` of byte ``j``
of every element, element ``8 g + m`` at bit ``m`` of byte ``g``.
"""
from cython.parallel cimport prange, parallel
from libc.stdint cimport int8_t, uint8_t, uint32_t, uint64_t, int64_t
cimport openmp
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

import numpy as np


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef extern from "bitshuffle_lz4_impl.h" nogil:
    int64_t xr_lz4_block(const uint8_t* src, int64_t n_src, uint8_t* dst, int64_t n_dst)
    void xr_bitunshuffle(const uint8_t* src, uint8_t* dst, int64_t n, int64_t size)


def decompress_chunk(const uint8_t[::1] raw, uint8_t[::1] out, int elem_size,
                     int num_threads=0) -> int:
    """Decompress one bitshuffle-LZ4 chunk ``raw`` into ``out`` (its exact size in bytes).

    Returns 0, or a negative code: -1 a header or block that does not fit, -3 an LZ4 block
    that does not decode to its size, -4 out of memory.
    """
    cdef int64_t n_raw = raw.shape[0], n_out = out.shape[0]
    if n_raw < 12 or elem_size < 1:
        return -1
    cdef int64_t total = <int64_t>_be64(&raw[0])
    cdef int64_t block_bytes = _be32(&raw[8])
    if total != n_out or total % elem_size != 0:
        return -1
    cdef int64_t n_elem = total // elem_size
    cdef int64_t block = block_bytes // elem_size
    if block <= 0 or block % 8 != 0 or block * elem_size != block_bytes:
        return -1
    cdef int64_t leftover = n_elem % block
    cdef int64_t last = leftover - leftover % 8
    cdef int64_t n_blocks = n_elem // block + (1 if last > 0 else 0)
    starts = np.empty(n_blocks, dtype=np.int64)
    sizes = np.empty(n_blocks, dtype=np.int64)
    failed = np.zeros(max(n_blocks, 1), dtype=np.int8)
    cdef int64_t[::1] start = starts
    cdef int64_t[::1] csize = sizes
    cdef int8_t[::1] bad = failed
    cdef int64_t pos = 12, b
    for b in range(n_blocks):  # where each compressed block starts (a sequential scan)
        if pos + 4 > n_raw:
            return -1
        csize[b] = _be32(&raw[pos])
        start[b] = pos + 4
        pos += 4 + csize[b]
        if pos > n_raw:
            return -1
    cdef int64_t tail = (n_elem % 8) * elem_size
    if pos + tail != n_raw:
        return -1
    cdef int64_t nb, got
    cdef uint8_t* scratch
    cdef const uint8_t* src = &raw[0]
    cdef uint8_t* dst = &out[0] if n_out > 0 else NULL
    cdef int threads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    if n_blocks < 2 * threads:
        threads = 1
    with nogil, parallel(num_threads=threads):
        scratch = <uint8_t*>malloc(<size_t>block_bytes)  # one LZ4 block, hot in L1/L2
        for b in prange(n_blocks, schedule="dynamic", chunksize=8):  # a stalled thread holds 8 blocks, not half
            if scratch == NULL:
                bad[b] = 3
                continue
            nb = block if b * block + block <= n_elem else last
            got = xr_lz4_block(src + start[b], csize[b], scratch, nb * elem_size)
            if got != nb * elem_size:
                bad[b] = 2
            else:
                xr_bitunshuffle(scratch, dst + b * block * elem_size, nb, elem_size)
        free(scratch)
    if n_blocks and failed.max() > 0:
        return -1 - int(failed.max())
    if tail > 0:
        memcpy(dst + n_out - tail, src + n_raw - tail, <size_t>tail)
    return 0
