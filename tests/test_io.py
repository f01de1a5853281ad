"""Stack URLs (HDF5 with selections, fabio files and series) and atomic writers."""
import os

import h5py
import numpy as np
import pytest

from xreduce.io import (atomic_output, iter_chunks, open_stack, parse_hdf5_url, partial_path,
                        read_stack, write_hdf5)


@pytest.fixture
def h5_stack(tmp_path, rng):
    data = rng.integers(0, 1000, size=(12, 6, 5)).astype(np.uint16)
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as h5:
        h5["/entry/data"] = data
    return str(path), data


def test_parse_url():
    assert parse_hdf5_url("a.h5::/x") == ("a.h5", "/x", ())
    assert parse_hdf5_url("a.h5::/e/d[2:10:2, :, -1]") == (
        "a.h5", "/e/d", (slice(2, 10, 2), slice(None), -1))
    for bad in ["a.h5", "::/x", "a.h5::", "a.h5::/x[1:2:3:4]", "a.h5::/x[a]"]:
        with pytest.raises(ValueError, match="url"):
            parse_hdf5_url(bad)


def test_hdf5_selections(h5_stack):
    path, data = h5_stack
    np.testing.assert_array_equal(read_stack(f"{path}::/entry/data"), data)
    np.testing.assert_array_equal(read_stack(f"{path}::/entry/data[2:9:3]"), data[2:9:3])
    np.testing.assert_array_equal(read_stack(f"{path}::/entry/data[4]"), data[4:5])
    np.testing.assert_array_equal(read_stack(f"{path}::/entry/data[1:5, 2:4, :]"),
                                  data[1:5, 2:4, :])
    with open_stack(f"{path}::/entry/data[1:11]") as stack:
        assert stack.shape == (10, 6, 5) and stack.dtype == np.uint16 and len(stack) == 10
        np.testing.assert_array_equal(stack.read(3, 7), data[4:8])
        np.testing.assert_array_equal(stack.read_frames([9, 0, 0, 5, 6]), data[[10, 1, 1, 6, 7]])
        with pytest.raises(IndexError):
            stack.read(5, 11)


@pytest.mark.parametrize("selection, expected", [
    ("[1:11]", np.s_[1:11]), ("[0:12:3, 1:5, ::2]", np.s_[0:12:3, 1:5, ::2]),
    ("[:, 2, :]", np.s_[:, 2:3, :])])
def test_read_frames_into_a_buffer(h5_stack, selection, expected):
    """``read_frames(..., out=)`` (read directly into the buffer for plain selections)
    gives what ``read`` gives, for runs and for scattered indices."""
    path, data = h5_stack
    with open_stack(f"{path}::/entry/data{selection}") as stack:
        want = data[expected].reshape(stack.shape)
        out = np.full((3,) + stack.shape[1:], 7, np.uint16)
        assert stack.read_frames([1, 2, 3], out=out) is out
        np.testing.assert_array_equal(out, want[1:4])
        stack.read_frames([3, 0, 3], out=out)
        np.testing.assert_array_equal(out, want[[3, 0, 3]])
        with pytest.raises(ValueError, match="out"):
            stack.read_frames([1, 2, 3], out=np.empty((3,) + stack.shape[1:], np.float32))


def test_iter_chunks(h5_stack):
    path, data = h5_stack
    chunks = list(iter_chunks(f"{path}::/entry/data", 5))
    assert [start for start, _ in chunks] == [0, 5, 10]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), data)
    with pytest.raises(ValueError, match="chunk"):
        next(iter_chunks(f"{path}::/entry/data", 0))


def test_hdf5_errors(h5_stack, tmp_path):
    path, _ = h5_stack
    with pytest.raises(FileNotFoundError):
        read_stack(str(tmp_path / "missing.h5") + "::/entry/data")
    with pytest.raises(ValueError, match="no dataset"):
        read_stack(f"{path}::/entry/nothing")
    with pytest.raises(ValueError, match="negative"):
        read_stack(f"{path}::/entry/data[::-1]")
    with pytest.raises(TypeError, match="url"):
        read_stack(3)


def test_fabio_series_and_single_file(tmp_path, rng):
    fabio = pytest.importorskip("fabio")
    frames = rng.integers(0, 100, size=(4, 7, 3)).astype(np.int32)
    for i, frame in enumerate(frames):
        fabio.edfimage.EdfImage(data=frame).write(str(tmp_path / f"frame_{i:04d}.edf"))
    np.testing.assert_array_equal(read_stack(str(tmp_path / "frame_*.edf")), frames)
    files = [tmp_path / f"frame_{i:04d}.edf" for i in (2, 0)]
    np.testing.assert_array_equal(read_stack(files), frames[[2, 0]])
    np.testing.assert_array_equal(read_stack(str(files[0])), frames[2:3])
    with pytest.raises(FileNotFoundError):
        read_stack(str(tmp_path / "nothing_*.edf"))


def test_atomic_output_renames_only_on_success(tmp_path):
    final = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert not final.exists() and not os.path.exists(partial_path(final))
    with pytest.raises(RuntimeError):
        with atomic_output(final, keep_partial=True) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert not final.exists() and os.path.exists(partial_path(final))
    with atomic_output(final) as tmp:
        open(tmp, "w").write("whole")
    assert final.read_text() == "whole" and not os.path.exists(partial_path(final))
    with pytest.raises(FileExistsError):
        with atomic_output(final, overwrite=False):
            pass


def test_write_hdf5(tmp_path):
    path = write_hdf5(tmp_path / "r.h5", {"/entry/data": np.arange(6).reshape(2, 3)},
                      attrs={"/entry": {"note": "hello"}})
    with h5py.File(path) as h5:
        np.testing.assert_array_equal(h5["/entry/data"][()], np.arange(6).reshape(2, 3))
        assert h5["/entry"].attrs["note"] == "hello"
