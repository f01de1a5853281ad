"""The bitshuffle-LZ4 kernel (xreduce.ext.bitshuffle_lz4) against a NumPy reference of the
bit shuffle (tests/reference.py) and against HDF5 + hdf5plugin's own decompression: every
element size, rows that are not multiples of the 16 groups the SSE2 path takes at once, byte
planes zero in some places only, LZ4 sequences of every kind, and damaged chunks."""
import h5py
import hdf5plugin
import numpy as np
import pytest

from reference import (bitshuffle_block_reference, bitshuffle_lz4_chunk_reference,
                       lz4_decode_reference)
from xreduce.ext import bitshuffle_lz4
from xreduce.io.chunks import aligned_empty


def _decompress(raw, nbytes, size, threads=1, stream=False, misalign=0):
    """Into an output starting ``misalign`` bytes past a 64-byte boundary (non-temporal
    stores, with ``stream``, only where it is 0)."""
    out = aligned_empty(nbytes + misalign, np.uint8)[misalign:]
    out[:] = 0xA5  # not zero: every byte must be written
    status = bitshuffle_lz4.decompress_chunk(np.asarray(raw, np.uint8), out, size, threads,
                                             stream)
    return status, out


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.int64,
                                   np.float64])
@pytest.mark.parametrize("n, block", [(2048, 2048), (8 * 53, 8 * 53), (4096 + 37, 1024),
                                      (7, 8), (8, 8), (16 * 8 + 3, 64), (8 * 48, 8 * 48),
                                      (8 * 117, 8 * 117)])
def test_unshuffle_equals_reference(rng, dtype, n, block):
    """Literal-only LZ4 blocks isolate the un-shuffle: random bits in every byte plane, and
    planes that are zero in some spans only (the skipped case); rows of 117 groups take the
    AVX-512 (64 groups), AVX2 (32), SSE2 (16) and one-group steps, rows of 53 all but the
    first; each instruction set the CPU has gives the same bytes, with non-temporal stores
    (aligned output) or without (the default, or an output off a 64-byte boundary)."""
    size = np.dtype(dtype).itemsize
    raw = rng.integers(0, 256, n * size, dtype=np.uint8)
    planes = raw.reshape(n, size).copy()
    planes[: n // 3, 1:] = 0  # high bytes zero in the first third only
    planes[n // 2:, 0] = 0  # the low byte zero in the second half
    try:
        for level in ("avx512", "avx2", "sse2"):  # each where the CPU has it
            bitshuffle_lz4.simd(level)
            for values in (raw.view(dtype), planes.reshape(-1).view(dtype)):
                chunk = bitshuffle_lz4_chunk_reference(values, block)
                for threads, stream, misalign in [(1, False, 0), (2, False, 0), (1, True, 0),
                                                  (2, True, 0), (1, True, 8)]:
                    status, out = _decompress(chunk, n * size, size, threads, stream, misalign)
                    assert status == 0
                    np.testing.assert_array_equal(out, values.view(np.uint8))
    finally:
        bitshuffle_lz4.simd("avx512")


def test_simd_levels():
    """The un-shuffle's instruction set is the best the CPU has, capped where asked; an
    unknown name is refused."""
    try:
        best = bitshuffle_lz4.simd("avx512")
        order = ["sse2", "avx2", "avx512"]
        for level in order:
            assert bitshuffle_lz4.simd(level) == order[min(order.index(level),
                                                            order.index(best))]
        with pytest.raises(ValueError, match="level"):
            bitshuffle_lz4.simd("avx1024")
    finally:
        bitshuffle_lz4.simd("avx512")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint32, np.float64])
def test_equals_hdf5_on_patterns(tmp_path, rng, dtype):
    """HDF5's compressor makes every kind of LZ4 sequence from these frames: long zero runs
    (offset 1), short periods (offsets 2 to 15, overlapping matches), long literals and
    matches (length bytes of 255); our kernel gives HDF5's bytes."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    n = 64 * 97
    top = 1000 if info is None else min(int(info.max), 100000)
    pieces = [np.zeros(3000), rng.integers(0, top, 2500),
              np.tile(rng.integers(0, top, 3), 700), np.tile(rng.integers(0, top, 7), 300),
              np.tile(rng.integers(0, top, 13), 150), rng.poisson(2.0, 4000)]
    values = np.concatenate(pieces)[:n].astype(dtype)
    frames = np.resize(values, (4, 64, 97))
    frames[1] = frames[1, ::-1]
    frames[2] //= 2 if info is not None else 1
    path = tmp_path / "patterns.h5"
    with h5py.File(path, "w") as h5:
        for nelems in (0, 256):
            h5.create_dataset(f"d{nelems}", data=frames, chunks=(2, 64, 97),
                              **hdf5plugin.Bitshuffle(nelems=nelems, cname="lz4"))
    with h5py.File(path) as h5:
        for name in h5:
            ds = h5[name]
            for c in range(2):
                raw = np.frombuffer(ds.id.read_direct_chunk((2 * c, 0, 0))[1], np.uint8)
                status, out = _decompress(raw, frames[:2].nbytes, frames.itemsize, 2)
                assert status == 0
                np.testing.assert_array_equal(out.view(dtype).reshape(2, 64, 97),
                                              ds[2 * c:2 * c + 2])


def test_lz4_length_bytes():
    """Literal counts below 15, of 15 + 0..254 and past 15 + 255 (continuation bytes of 255)
    decode: one block of n bytes is n literals."""
    for n in (8, 16, 264, 272, 280, 536, 800):
        elements = (np.arange(n) * 37 % 251).astype(np.uint8)
        status, out = _decompress(bitshuffle_lz4_chunk_reference(elements, n), n, 1)
        assert status == 0 and np.array_equal(out, elements)


def _sequence(literals, offset, length):
    """One LZ4 sequence: the literals, then a match of ``length`` (>= 4) bytes ``offset``
    back."""
    extra = length - 4
    token = (min(len(literals), 15) << 4) | min(extra, 15)
    out = bytes([token])
    if len(literals) >= 15:
        rest = len(literals) - 15
        out += b"\xff" * (rest // 255) + bytes([rest % 255])
    out += bytes(literals) + bytes([offset & 255, offset >> 8])
    if extra >= 15:
        rest = extra - 15
        out += b"\xff" * (rest // 255) + bytes([rest % 255])
    return out


def test_lz4_matches_of_every_period(rng):
    """Matches of offsets 1 to 40 (overlapping their own output below their length) and
    lengths 4 to 300, with and without room after them in the block, decode as the byte by
    byte reference does."""
    seqs = [_sequence(rng.integers(0, 256, 40, dtype=np.uint8), 1, 4)]
    for offset in range(1, 41):
        for length in (4, 5, 7, 8, 9, 15, 16, 17, 19, 31, 33, 64, 300):
            seqs.append(_sequence(rng.integers(0, 256, int(rng.integers(0, 3)), dtype=np.uint8),
                                  offset, length))
    body = b"".join(seqs)
    size = len(lz4_decode_reference(body + b"\x00"))  # a last, empty literal run
    pad = (-size) % 8 + 8  # the block ends on a short literal run after the last match
    block = body + bytes([pad << 4]) + bytes(range(pad))
    decoded = lz4_decode_reference(block)
    n = len(decoded)
    assert n % 8 == 0
    chunk = np.frombuffer(n.to_bytes(8, "big") + n.to_bytes(4, "big")
                          + len(block).to_bytes(4, "big") + block, np.uint8)
    status, out = _decompress(chunk, n, 1)
    assert status == 0
    assert bitshuffle_block_reference(out).tobytes() == decoded  # undo our un-shuffle
    ends = [(len(lz4_decode_reference(b"".join(seqs[:k]) + b"\x00")), k) for k in (1, 50, 300)]
    for end, k in ends:  # blocks that end right after a match: no room past it
        part = b"".join(seqs[:k])
        tail = (-end) % 8
        cut = part + bytes([tail << 4]) + bytes(tail)
        want = lz4_decode_reference(cut)
        m = len(want)
        chunk = np.frombuffer(m.to_bytes(8, "big") + m.to_bytes(4, "big")
                              + len(cut).to_bytes(4, "big") + cut, np.uint8)
        status, out = _decompress(chunk, m, 1)
        assert status == 0 and bitshuffle_block_reference(out).tobytes() == want


def test_lz4_long_periodic_match_at_the_block_end(rng):
    """A block whose last match is long and of a short period (the zero bit planes of counts
    come so: period 2, ~7 kB), with fewer than 8 bytes after it: one byte repeated (written
    with memset) or a pattern (copied by doubling), as the reference decodes it."""
    for offset in (2, 3, 7, 8, 15):
        for length in (33, 64, 300, 7000):
            for period in (bytes(offset), bytes([0x5A]) * offset,
                           bytes(rng.integers(0, 256, offset, dtype=np.uint8))):
                for tail in range(8):
                    if (offset + length + tail) % 8:
                        continue
                    block = _sequence(np.frombuffer(period, np.uint8), offset, length) + \
                        bytes([tail << 4]) + bytes(range(tail))
                    want = lz4_decode_reference(block)
                    n = len(want)
                    chunk = np.frombuffer(n.to_bytes(8, "big") + n.to_bytes(4, "big")
                                          + len(block).to_bytes(4, "big") + block, np.uint8)
                    status, out = _decompress(chunk, n, 1)
                    assert status == 0
                    assert bitshuffle_block_reference(out).tobytes() == want


def test_damaged_chunks_give_codes_not_crashes(tmp_path, rng):
    """Truncated, overrunning and randomly damaged chunks: a negative code or some output,
    never a read or write outside the buffers (the kernel checks every step)."""
    frames = rng.poisson(3, (1, 40, 60)).astype(np.int32)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("d", data=frames, chunks=(1, 40, 60),
                          **hdf5plugin.Bitshuffle(nelems=256, cname="lz4"))
    with h5py.File(path) as h5:
        raw = np.frombuffer(h5["d"].id.read_direct_chunk((0, 0, 0))[1], np.uint8).copy()
    nbytes = frames.nbytes
    assert _decompress(raw, nbytes, 4)[0] == 0
    assert _decompress(raw[:-3], nbytes, 4)[0] < 0  # truncated
    assert _decompress(raw[:11], nbytes, 4)[0] < 0  # not even a header
    assert _decompress(raw, nbytes + 4, 4)[0] < 0  # the header's size disagrees
    bad_offset = bytearray(raw)
    bad_offset[16:] = b"\x0f\xff\xff" * ((len(raw) - 16) // 3) + b"\x00" * ((len(raw) - 16) % 3)
    assert _decompress(np.frombuffer(bytes(bad_offset), np.uint8), nbytes, 4)[0] < 0
    for _ in range(200):
        damaged = raw.copy()
        where = rng.integers(12, raw.size, 4)
        damaged[where] = rng.integers(0, 256, 4)
        status, out = _decompress(damaged, nbytes, 4, 2)
        assert status <= 0


def test_block_index_saves_the_scan_and_is_never_trusted_blindly(tmp_path, rng):
    """``block_index`` of a chunk (found at read time) gives the same bytes as the kernel's
    own scan; an index that does not fit the chunk (another chunk's, shifted, cut) is
    ignored, and a damaged chunk has no index."""
    frames = rng.poisson(3, (2, 40, 61)).astype(np.int32)  # 5 raw tail values a frame
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("d", data=frames, chunks=(1, 40, 61),
                          **hdf5plugin.Bitshuffle(nelems=256, cname="lz4"))
    with h5py.File(path) as h5:
        raws = [np.frombuffer(h5["d"].id.read_direct_chunk((i, 0, 0))[1], np.uint8).copy()
                for i in range(2)]
    nbytes = frames[0].nbytes
    index = bitshuffle_lz4.block_index(raws[0], nbytes, 4)
    block, starts, sizes = index
    assert block == 256 and len(starts) == -(-40 * 61 // 256) and starts[0] == 16
    other = bitshuffle_lz4.block_index(raws[1], nbytes, 4)
    shifted = (block, starts + 1, sizes)
    cut = (block, starts[:-1], sizes[:-1])
    moved = (block, starts.copy(), sizes.copy())  # same total: one boundary moved by 8 bytes
    moved[2][0] += 8
    moved[1][1:] += 8
    moved[2][-1] -= 8
    for given in (index, other, shifted, cut, moved, None):
        out = np.zeros(nbytes, np.uint8)
        status = bitshuffle_lz4.decompress_chunks([raws[0]], [out], 4, 1, indexes=[given])
        assert status == [0]
        np.testing.assert_array_equal(out.view(np.int32).reshape(40, 61), frames[0])
    damaged = raws[0].copy()
    damaged[16 + sizes[0]:20 + sizes[0]] = 0xFF  # the second block's size overruns
    assert bitshuffle_lz4.block_index(damaged, nbytes, 4) is None
    assert bitshuffle_lz4.block_index(raws[0], nbytes + 4, 4) is None  # header disagrees
    with pytest.raises(ValueError, match="indexes: expected one per chunk"):
        bitshuffle_lz4.decompress_chunks([raws[0]], [np.zeros(nbytes, np.uint8)], 4,
                                         indexes=[])
