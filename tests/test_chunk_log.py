"""The record of finished chunks (xreduce.io.chunk_log): whole records read back, damaged or
cut ones ignored, compaction, permissions."""
import os

import numpy as np
import pytest

from xreduce.io.chunk_log import ChunkLog


def result(start, stop, bins=7):
    rows = np.arange(start, stop, dtype=np.float64)[:, None] * np.ones(bins)
    return {"intensity": rows, "count": rows + 0.5, "radial": np.linspace(0, 1, bins)}


def write(folder, chunks):
    with ChunkLog(folder) as log:
        for chunk in chunks:
            log.append(chunk, result(*chunk))
    return [os.path.join(folder, n) for n in os.listdir(folder) if ChunkLog.is_log_name(n)]


def test_records_read_back_across_runs(tmp_path):
    write(tmp_path, [(0, 3), (3, 6)])
    write(tmp_path, [(6, 9)])  # a resumed run: a second file
    log = ChunkLog(tmp_path)
    assert log.chunks() == {(0, 3), (3, 6), (6, 9)}
    for chunk in log.chunks():
        got = log.read(chunk)
        for name, value in result(*chunk).items():
            np.testing.assert_array_equal(got[name], value)
    assert (9, 12) not in log
    with pytest.raises(KeyError):
        log.read((9, 12))


@pytest.mark.parametrize("cut", [1, 20, 100, -1])
def test_a_cut_tail_is_ignored(tmp_path, cut):
    """A run killed in the middle of an append: the records before the cut are kept."""
    (path,) = write(tmp_path, [(0, 3), (3, 6), (6, 9)])
    data = open(path, "rb").read()
    whole = len(data) // 3  # records of equal size
    with open(path, "wb") as handle:
        handle.write(data[:2 * whole + (cut if cut > 0 else whole + cut)])
    assert ChunkLog(tmp_path).chunks() == {(0, 3), (3, 6)}


def test_a_damaged_record_ends_the_file(tmp_path):
    (path,) = write(tmp_path, [(0, 3), (3, 6), (6, 9)])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the second record
    open(path, "wb").write(bytes(data))
    assert ChunkLog(tmp_path).chunks() == {(0, 3)}
    open(path, "wb").write(b"not a log at all" * 10)
    assert ChunkLog(tmp_path).chunks() == set()


def test_keep_only_rewrites_the_kept_records(tmp_path):
    write(tmp_path, [(0, 3), (3, 6)])
    write(tmp_path, [(6, 9)])
    log = ChunkLog(tmp_path)
    log.keep_only([(0, 3), (6, 9), (9, 12)])  # (9, 12) never recorded: ignored
    assert log.chunks() == {(0, 3), (6, 9)}
    assert len([n for n in os.listdir(tmp_path) if ChunkLog.is_log_name(n)]) == 1
    again = ChunkLog(tmp_path)
    assert again.chunks() == {(0, 3), (6, 9)}
    np.testing.assert_array_equal(again.read((6, 9))["count"], result(6, 9)["count"])
    again.keep_only([])
    assert ChunkLog(tmp_path).chunks() == set() and not os.listdir(tmp_path)


def test_log_files_get_the_permissions_open_gives(tmp_path):
    old = os.umask(0o027)
    try:
        (path,) = write(tmp_path, [(0, 3)])
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640
