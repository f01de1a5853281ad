# Shared by bitshuffle_lz4.pyx and csc_integrate.pyx (included, not compiled alone): the
# big-endian integers of bitshuffle-LZ4 chunk headers (doc/stack.md, "Direct chunk reads").
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | p[i]
    return v


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
