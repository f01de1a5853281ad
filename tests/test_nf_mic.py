"""MIDAS .mic files: the 12-column tab-separated text mic and MicFileBinary."""
import numpy as np
import pytest

from xreduce.nf.mic import MIC_COLUMNS, read_mic, read_mic_binary, write_mic, write_mic_binary


def _voxels(rng, n=7):
    return dict(x_um=rng.uniform(-50, 50, n), y_um=rng.uniform(-50, 50, n), edge_um=2.5,
                ud=rng.choice([-1, 1], n), euler_rad=rng.uniform(0, 3, (n, 3)),
                confidence=np.r_[rng.uniform(0.1, 1, n - 2), 0.0, 1.0],
                row=rng.integers(0, 1000, n), orientation_id=rng.integers(1, 9, n),
                time=rng.uniform(0, 1, n))


def test_text_mic_is_midas_layout(tmp_path, rng):
    v = _voxels(rng)
    write_mic(tmp_path / "m.mic", **v, phase_nr=2, global_position=3.5)
    lines = (tmp_path / "m.mic").read_text().splitlines()
    assert lines[:3] == ["%TriEdgeSize 2.500000", "%NumPhases 1", "%GlobalPosition 3.500000"]
    assert lines[3] == "%" + "\t".join(MIC_COLUMNS) and len(MIC_COLUMNS) == 12
    body = lines[4:]
    assert len(body) == 6  # the voxel of confidence 0 is not written
    cells = body[0].split("\t")
    assert len(cells) == 12 and cells[-1] == "2" and cells[0] == f"{v['row'][0]:f}"
    assert all(len(c.split(".")[1]) == 6 for c in cells[:11])  # "%f"
    mic = read_mic(tmp_path / "m.mic")
    keep = v["confidence"] != 0
    np.testing.assert_allclose(mic.euler_rad, v["euler_rad"][keep], atol=1e-6)
    np.testing.assert_array_equal(mic.row, v["row"][keep])
    np.testing.assert_array_equal(mic.orientation_id, v["orientation_id"][keep])
    np.testing.assert_array_equal(mic.ud, v["ud"][keep])
    assert (mic.phase_nr == 2).all() and mic.headers["GlobalPosition"] == "3.500000"


def test_reads_midas_and_old_files(tmp_path):
    midas = ("%TriEdgeSize 0.000000\n%NumPhases 1\n%GlobalPosition 0.000000\n%"
             + "\t".join(MIC_COLUMNS) + "\n"
             "0.000000\t2.000000\t0.010017\t-7.500000\t-44.022958\t1.000000\t-1.000000\t"
             "4.858361\t0.768611\t2.150678\t0.197917\t1\n")
    (tmp_path / "midas.mic").write_text(midas)
    mic = read_mic(tmp_path / "midas.mic")
    assert len(mic) == 1 and mic.orientation_id[0] == 2 and mic.ud[0] == -1
    assert mic.confidence[0] == pytest.approx(0.197917)
    old = ("%TriEdgeSize 5.000000\n%NumPhases 1\n%GlobalPosition 0.000000\n"
           "%OrientationRowNr OrientationID RunTime X Y TriEdgeSize UpDown Eul1 Eul2 Eul3 "
           "Confidence\n3 1 0.000000 1.000000 2.000000 5.000000 1 0.1 0.2 0.3 0.900000\n")
    (tmp_path / "old.mic").write_text(old)
    mic = read_mic(tmp_path / "old.mic")
    assert mic.row.tolist() == [3] and mic.phase_nr.tolist() == [1]
    (tmp_path / "mixed.mic").write_text(midas + "1 1 0 1 2 5 1 0.1 0.2 0.3 0.9\n")
    with pytest.raises(ValueError, match=r"mixed.mic:6: 11 columns, but earlier lines have 12"):
        read_mic(tmp_path / "mixed.mic")
    (tmp_path / "short.mic").write_text("%TriEdgeSize 1\n1 2 3\n")
    with pytest.raises(ValueError, match="short.mic:2: expected 11 or 12 columns"):
        read_mic(tmp_path / "short.mic")
    (tmp_path / "bytes.mic").write_bytes(midas.encode() + b"\xff\n")
    with pytest.raises(ValueError, match="bytes.mic: .mic file is not UTF-8"):
        read_mic(tmp_path / "bytes.mic")


def test_binary_mic_round_trip(tmp_path, rng):
    v = _voxels(rng)
    write_mic_binary(tmp_path / "m.bin", **v)
    raw = np.fromfile(tmp_path / "m.bin", dtype="<f8")
    assert raw.size == 11 * 7  # every voxel, 88 bytes each, also confidence 0
    table = raw.reshape(7, 11)
    np.testing.assert_array_equal(table[:, 0], v["row"])
    np.testing.assert_array_equal(table[:, 7:10], v["euler_rad"])
    np.testing.assert_array_equal(table[:, 10], v["confidence"])
    mic = read_mic_binary(tmp_path / "m.bin")
    np.testing.assert_array_equal(mic.x_um, v["x_um"])
    np.testing.assert_array_equal(mic.time, v["time"])
    (tmp_path / "cut.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"cut.bin: .* not a multiple of 88"):
        read_mic_binary(tmp_path / "cut.bin")
    table[2, 6] = 300.0
    table.tofile(tmp_path / "ud.bin")
    with pytest.raises(ValueError, match=r"ud.bin: voxel 2: column UpDown is 300.0"):
        read_mic_binary(tmp_path / "ud.bin")


def test_write_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError, match="euler_rad"):
        write_mic(tmp_path / "c.mic", [0.0], [0.0], 1.0, [1], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="voxel 0: column Confidence is 2.0"):
        write_mic(tmp_path / "c.mic", [0.0], [0.0], 1.0, [1], [[0.0, 0.0, 0.0]], 2.0)
    with pytest.raises(ValueError, match="y_um: expected a scalar or 2 values"):
        write_mic_binary(tmp_path / "c.bin", [0.0, 1.0], [0.0, 1.0, 2.0], 1.0, 1,
                         np.zeros((2, 3)))
    assert not (tmp_path / "c.mic").exists() and not (tmp_path / "c.bin").exists()
