"""Frame sources: every URL form users type (silx DataUrl, our short form, patterns), Eiger
master files, VDS, 4D data, compressed HDF5, and errors naming what was not found."""
import os
import pickle

import h5py
import numpy as np
import pytest

from xreduce.io import open_stack, read_stack

hdf5plugin = pytest.importorskip("hdf5plugin")


@pytest.fixture
def frames(rng):
    return rng.poisson(20, size=(12, 8, 6)).astype(np.uint32)


@pytest.fixture
def scan(tmp_path, frames):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("/entry/data/data", data=frames, chunks=(4, 8, 6),
                          **hdf5plugin.Bitshuffle(cname="lz4"))
    return str(path)


@pytest.mark.parametrize("form, selection", [
    ("{p}::/entry/data/data", np.s_[:]),
    ("{p}::/entry/data/data[2:7]", np.s_[2:7]),
    ("silx://{p}?path=/entry/data/data&slice=2:7", np.s_[2:7]),
    ("silx:{p}::/entry/data/data[1:9:2]", np.s_[1:9:2]),
    ("silx://{p}?path=/entry/data/data&slice=3", np.s_[3:4]),
    ("{p}?/entry/data/data", np.s_[:]),
    ("silx://{p}?/entry/data/data", np.s_[:]),
    ("silx://{p}?path=/entry/data/data&slice=1:4,2", np.s_[1:4, 2:3]),
    ("{p}", np.s_[:]),  # the file alone: its only 3D dataset
])
def test_url_forms(scan, frames, form, selection):
    url = form.format(p=scan)
    np.testing.assert_array_equal(read_stack(url), frames[selection])


@pytest.mark.parametrize("compression", ["bitshuffle_lz4", "blosc", "zstd"])
def test_compressed_hdf5(tmp_path, frames, compression):
    filters = {"bitshuffle_lz4": hdf5plugin.Bitshuffle(cname="lz4"),
               "blosc": hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE),
               "zstd": hdf5plugin.Zstd()}[compression]
    path = str(tmp_path / "c.h5")
    with h5py.File(path, "w") as h5:
        h5.create_dataset("d", data=frames, chunks=(3, 8, 6), **filters)
    with open_stack(f"{path}::/d") as stack:
        assert stack.chunk_frames == 3
        np.testing.assert_array_equal(stack.read(), frames)


def test_eiger_master_finds_linked_data_files(tmp_path, frames):
    """An Eiger/LIMA master file alone: the frames of its data_NNNNNN links, in order."""
    for k, part in enumerate((frames[:5], frames[5:])):
        with h5py.File(tmp_path / f"scan_data_{k + 1:06d}.h5", "w") as h5:
            h5.create_dataset("entry/data/data", data=part, **hdf5plugin.Bitshuffle())
    master = tmp_path / "scan_master.h5"
    with h5py.File(master, "w") as h5:
        group = h5.create_group("entry/data")
        for k in range(2):
            group[f"data_{k + 1:06d}"] = h5py.ExternalLink(f"scan_data_{k + 1:06d}.h5",
                                                           "/entry/data/data")
    with open_stack(str(master)) as stack:
        assert stack.shape == frames.shape
        np.testing.assert_array_equal(stack.read(3, 9), frames[3:9])
        assert len(stack.files) == 3  # the master and both data files
        again = pickle.loads(pickle.dumps(stack))  # reopened from its URL, no h5py object
        np.testing.assert_array_equal(again.read(), frames)
        again.close()


def test_vds_and_4d_and_nexus_default(tmp_path, frames):
    for k in range(2):
        with h5py.File(tmp_path / f"part{k}.h5", "w") as h5:
            h5["d"] = frames[6 * k:6 * k + 6]
    layout = h5py.VirtualLayout(shape=frames.shape, dtype=frames.dtype)
    for k in range(2):
        layout[6 * k:6 * k + 6] = h5py.VirtualSource(str(tmp_path / f"part{k}.h5"), "d",
                                                     shape=(6, 8, 6))
    path = str(tmp_path / "vds.h5")
    with h5py.File(path, "w") as h5:
        h5.create_virtual_dataset("vds", layout)
        h5["four_d"] = frames[:, None]
        h5.attrs["default"] = "entry"
        entry = h5.create_group("entry")
        entry.attrs["default"] = "data"
        nxdata = entry.create_group("data")
        nxdata.attrs["signal"] = "frames"
        nxdata["frames"] = frames[::-1]
    np.testing.assert_array_equal(read_stack(f"{path}::/vds[4:8]"), frames[4:8])
    with open_stack(f"{path}::/vds") as stack:
        assert len(stack.files) == 3
    np.testing.assert_array_equal(read_stack(f"{path}::/four_d[1:3]"), frames[1:3])
    np.testing.assert_array_equal(read_stack(path), frames[::-1])  # the NeXus default signal


def test_cbf_series_patterns_and_fabio_url(tmp_path, frames):
    fabio = pytest.importorskip("fabio")
    for i, frame in enumerate(frames[:5]):
        fabio.cbfimage.CbfImage(data=frame.astype(np.int32)).write(
            str(tmp_path / f"f_{i + 8:04d}.cbf"))
    expected = frames[:5].astype(np.int32)
    np.testing.assert_array_equal(read_stack(str(tmp_path / "f_%04d.cbf")), expected)
    np.testing.assert_array_equal(read_stack(str(tmp_path / "f_*.cbf")), expected)
    np.testing.assert_array_equal(read_stack(f"fabio://{tmp_path}/f_0009.cbf"), expected[1:2])
    both = read_stack([str(tmp_path / "f_0008.cbf"), f"{tmp_path}/f_0010.cbf"])
    np.testing.assert_array_equal(both, expected[[0, 2]])


def test_mixed_list_concatenates(scan, frames, tmp_path):
    np.testing.assert_array_equal(
        read_stack([f"{scan}::/entry/data/data[0:2]", f"{scan}::/entry/data/data[5:7]"]),
        frames[[0, 1, 5, 6]])


def test_errors_name_what_was_not_found(scan, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_stack(str(tmp_path / "missing.h5") + "::/entry/data")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_stack(f"silx://{tmp_path}/missing.h5?path=/entry/data")
    with pytest.raises(ValueError, match="'/entry/nothing' inside"):
        read_stack(f"{scan}::/entry/nothing")
    with pytest.raises(ValueError, match="has 12 frames"):
        read_stack(f"{scan}::/entry/data/data[0:20]")
    with pytest.raises(ValueError, match="has 12 frames"):
        read_stack(f"silx://{scan}?path=/entry/data/data&slice=12")
    with pytest.raises(FileNotFoundError, match="nothing_"):
        read_stack(str(tmp_path / "nothing_%04d.cbf"))
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
    with pytest.raises(ValueError, match="corrupt.h5"):
        read_stack(f"{corrupt}::/entry/data")
    not_image = tmp_path / "notes.edf"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="notes.edf"):
        read_stack(str(not_image))


def test_damaged_chunk_gives_value_error(tmp_path, frames):
    """A compressed chunk whose bytes were damaged: ValueError naming the URL, no crash."""
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("d", data=frames, chunks=(4, 8, 6), **hdf5plugin.Bitshuffle())
        offset = ds.id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 12)
        handle.write(b"\xff" * 40)
    with open_stack(f"{path}::/d") as stack:
        np.testing.assert_array_equal(stack.read(0, 4), frames[:4])
        with pytest.raises(ValueError, match="damaged.h5"):
            stack.read(4, 8)


@pytest.mark.parametrize("dtype, shape, chunks, block", [
    (np.uint32, (25, 64, 60), (4, 64, 60), 0), (np.uint16, (7, 33, 17), (3, 33, 17), 0),
    (np.int32, (5, 50, 50), (2, 50, 50), 64), (np.uint8, (3, 9, 7), (1, 9, 7), 0),
    (np.float64, (4, 20, 21), (2, 20, 21), 16), (np.int16, (6, 128, 96), (6, 128, 96), 2048)])
def test_direct_chunk_reads_equal_hdf5(tmp_path, rng, dtype, shape, chunks, block):
    """Our bitshuffle-LZ4 kernel gives HDF5's bytes: partial blocks, raw tails (element
    counts not multiples of 8), block sizes, frame ranges inside chunks."""
    from xreduce.io.chunks import direct_read_plan, read_frames_direct

    frames = (rng.poisson(3, shape) * rng.integers(0, 2, shape) ** 3).astype(dtype)
    frames.reshape(-1)[::97] = np.iinfo(dtype).max if dtype != np.float64 else 1e300
    path = tmp_path / "b.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("d", data=frames, chunks=chunks,
                          **hdf5plugin.Bitshuffle(nelems=block, cname="lz4"))
        h5.create_dataset("plain", data=frames, chunks=chunks)
    with h5py.File(path) as h5:
        assert direct_read_plan(h5["d"]) and not direct_read_plan(h5["plain"])
        for start, stop in [(0, shape[0]), (1, shape[0] - 1), (2, 3)]:
            for threads in (1, 2):
                got = read_frames_direct(h5["d"], start, stop, num_threads=threads)
                assert np.array_equal(got, frames[start:stop])
    with open_stack(f"{path}::/d") as stack:
        assert stack.direct_chunks
        np.testing.assert_array_equal(stack.read(), frames)
    with open_stack(f"{path}::/d[:, 1:, :]") as stack:  # a crop: HDF5's own path
        assert not stack.direct_chunks
        np.testing.assert_array_equal(stack.read(), frames[:, 1:])


def test_chunk_buffers_are_reused_and_given_back(tmp_path, rng):
    """Raw chunks read into a ChunkBuffers pool: the same bytes decoded as without it, the
    buffers reused from one read to the next and handed back after decompression (also when
    a chunk is damaged); released chunks cannot be decompressed again."""
    from xreduce.io.chunks import ChunkBuffers, read_frames_direct, read_raw_chunks

    frames = rng.poisson(3, (6, 40, 30)).astype(np.int32)
    path = tmp_path / "pool.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("d", data=frames, chunks=(2, 40, 30), **hdf5plugin.Bitshuffle())
        damaged_at = ds.id.get_chunk_info(2).byte_offset
    pool = ChunkBuffers(keep_bytes=4 << 16)  # 4 buffers (64 kB each at least)
    with h5py.File(path) as h5:
        raw = read_raw_chunks(h5["d"], 0, 4, pool)
        first = {piece[2].__array_interface__["data"][0] for piece in raw.pieces}
        np.testing.assert_array_equal(raw.decompress_into(), frames[:4])
        assert len(pool._free) == 2 and not raw.pieces
        with pytest.raises(RuntimeError, match="released"):
            raw.decompress_into()
        again = read_raw_chunks(h5["d"], 0, 4, pool)
        assert {p[2].__array_interface__["data"][0] for p in again.pieces} == first
        np.testing.assert_array_equal(again.decompress_into(), frames[:4])
        np.testing.assert_array_equal(read_frames_direct(h5["d"], 1, 6, buffers=pool),
                                      frames[1:6])
    with open(path, "r+b") as handle:
        handle.seek(damaged_at + 12)
        handle.write(b"\xff" * 40)
    with h5py.File(path) as h5:
        with pytest.raises(ValueError, match="damaged"):
            read_frames_direct(h5["d"], 0, 6, buffers=pool)
    assert len(pool._free) == 3  # every buffer back, whatever happened


def test_direct_chunk_skipped_filter(tmp_path, rng):
    """A chunk stored with its filter skipped (filter_mask bit 0) is read as raw bytes."""
    from xreduce.io.chunks import read_frames_direct

    frames = rng.integers(0, 50, (4, 8, 8)).astype(np.uint16)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("d", shape=frames.shape, dtype=frames.dtype, chunks=(2, 8, 8),
                               **hdf5plugin.Bitshuffle())
        ds[:2] = frames[:2]
        ds.id.write_direct_chunk((2, 0, 0), frames[2:].tobytes(), filter_mask=1)
    with h5py.File(path) as h5:
        np.testing.assert_array_equal(read_frames_direct(h5["d"], 0, 4), frames)
