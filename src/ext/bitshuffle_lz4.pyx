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
from libc.stdint cimport int8_t, uint8_t, uint32_t, uint64_t, int64_t, uintptr_t
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


cdef int64_t _plan_chunk(const uint8_t[::1] raw, int64_t n_out, int elem_size, int64_t* block,
                         list offsets) except -2:
    """Check a chunk's header and find its blocks: appends (start, compressed size, elements)
    per block to ``offsets``; the bytes stored raw at the end (0 or more), or -1 for a header
    or block that does not fit."""
    cdef int64_t n_raw = raw.shape[0]
    if n_raw < 12 or elem_size < 1:
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
    cdef int64_t last = leftover - leftover % 8
    cdef int64_t n_blocks = n_elem // block[0] + (1 if last > 0 else 0)
    cdef int64_t pos = 12, b, csize
    for b in range(n_blocks):  # where each compressed block starts (a sequential scan)
        if pos + 4 > n_raw:
            return -1
        csize = _be32(&raw[pos])
        if pos + 4 + csize > n_raw:
            return -1
        offsets.append((pos + 4, csize, block[0] if (b + 1) * block[0] <= n_elem else last))
        pos += 4 + csize
    cdef int64_t tail = (n_elem % 8) * elem_size
    if pos + tail != n_raw:
        return -1
    return tail


def decompress_chunks(raws, outs, int elem_size, int num_threads=0) -> list:
    """Decompress bitshuffle-LZ4 chunks ``raws[i]`` (uint8 arrays) into ``outs[i]`` (uint8
    arrays of their exact sizes), the blocks of all of them spread over ``num_threads``
    OpenMP threads (0: the OpenMP default) in one parallel region.

    Returns a status per chunk: 0, or a negative code: -1 a header or block that does not
    fit, -3 an LZ4 block that does not decode to its size, -4 out of memory.
    """
    if len(raws) != len(outs):
        raise ValueError(f"outs: expected one output per chunk ({len(raws)}), got {len(outs)}")
    cdef Py_ssize_t n_chunks = len(raws), i
    cdef const uint8_t[::1] raw
    cdef uint8_t[::1] out
    cdef int64_t block = 0, tail, k, max_block = 8
    status = [0] * n_chunks
    tails = []
    views = []  # keeps every buffer alive (and its address valid) during the parallel loop
    src_addr, dst_addr, csizes, counts, owner = [], [], [], [], []
    for i in range(n_chunks):
        raw = raws[i]
        out = outs[i]
        views.append((raw, out))
        offsets = []
        tail = _plan_chunk(raw, out.shape[0], elem_size, &block, offsets)
        if tail < 0:
            status[i] = -1
            continue
        max_block = max(max_block, block)
        for k in range(len(offsets)):
            start, csize, count = offsets[k]
            src_addr.append(<uintptr_t>&raw[0] + <uintptr_t>start)
            dst_addr.append(<uintptr_t>&out[0] + <uintptr_t>(k * block * elem_size))
            csizes.append(csize)
            counts.append(count)
            owner.append(i)
        tails.append((i, tail))
    cdef uintptr_t[::1] srcs = np.array(src_addr, dtype=np.uintp)
    cdef uintptr_t[::1] dsts = np.array(dst_addr, dtype=np.uintp)
    cdef int64_t[::1] csize_of = np.array(csizes, dtype=np.int64)
    cdef int64_t[::1] count_of = np.array(counts, dtype=np.int64)
    failed = np.zeros(max(len(counts), 1), dtype=np.int8)
    cdef int8_t[::1] bad = failed
    cdef Py_ssize_t n_blocks = len(counts), b
    cdef int64_t got, nbytes
    cdef uint8_t* scratch
    cdef int threads = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    if n_blocks < 2 * threads:
        threads = 1
    if n_blocks:
        with nogil, parallel(num_threads=threads):
            scratch = <uint8_t*>malloc(<size_t>(max_block * elem_size))  # one block, hot in L1/L2
            # dynamic: a thread that stalls holds 8 blocks, not its share of them all
            for b in prange(n_blocks, schedule="dynamic", chunksize=8):
                if scratch == NULL:
                    bad[b] = 3
                    continue
                nbytes = count_of[b] * elem_size
                got = xr_lz4_block(<const uint8_t*>srcs[b], csize_of[b], scratch, nbytes)
                if got != nbytes:
                    bad[b] = 2
                else:
                    xr_bitunshuffle(scratch, <uint8_t*>dsts[b], count_of[b], elem_size)
            free(scratch)
    for b in np.flatnonzero(failed[:n_blocks]):
        i = owner[b]
        status[i] = min(status[i], -1 - int(failed[b]))
    for i, tail in tails:  # the last elements, stored raw
        raw = raws[i]
        out = outs[i]
        if status[i] == 0 and tail > 0:
            memcpy(&out[out.shape[0] - tail], &raw[raw.shape[0] - tail], <size_t>tail)
    return status


def decompress_chunk(const uint8_t[::1] raw, uint8_t[::1] out, int elem_size,
                     int num_threads=0) -> int:
    """Decompress one bitshuffle-LZ4 chunk ``raw`` into ``out`` (its exact size in bytes):
    :func:`decompress_chunks` of one chunk. Returns 0 or a negative code (see there)."""
    return decompress_chunks([raw], [out], elem_size, num_threads)[0]
