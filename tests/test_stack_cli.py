"""xreduce-integrate / xreduce integrate: options, config files, exit codes."""
import json

import h5py
import numpy as np
import pytest

from xreduce.cli.integrate import main
from xreduce.cli.main import main as xreduce_main
from xreduce.io.chunk_log import ChunkLog

from test_stack import NPT, SHAPE, make_ai

hdf5plugin = pytest.importorskip("hdf5plugin")
fabio = pytest.importorskip("fabio")


@pytest.fixture
def setup(tmp_path):
    from xreduce.poni import write_poni

    rng = np.random.default_rng(3)
    frames = rng.poisson(30, size=(40,) + SHAPE).astype(np.uint32)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5.create_dataset("d", data=frames, chunks=(8,) + SHAPE, **hdf5plugin.Bitshuffle())
    write_poni(make_ai().geometry, tmp_path / "g.poni")
    mask = np.zeros(SHAPE, np.int8)
    mask[:5] = 1
    fabio.edfimage.EdfImage(data=mask).write(str(tmp_path / "mask.edf"))
    dark = np.full(SHAPE, 2.0, np.float32)
    fabio.edfimage.EdfImage(data=dark).write(str(tmp_path / "dark.edf"))
    return tmp_path, frames


def test_cli_matches_the_api(setup):
    folder, frames = setup
    out = folder / "o.h5"
    code = main([f"{folder}/s.h5::/d", "--poni", str(folder / "g.poni"), "--npt", str(NPT),
                 "--unit", "2th_deg", "--method", "full,csr,cython", "--mask",
                 str(folder / "mask.edf"), "--dark", str(folder / "dark.edf"),
                 "--error-model", "poisson", "--polarization-factor", "0.95", "-o", str(out),
                 "--compression", "gzip", "--no-progress"])
    assert code == 0
    ref = make_ai().integrate1d(frames, NPT, unit="2th_deg", method=("full", "csr", "cython"),
                                mask=np.arange(SHAPE[0])[:, None].repeat(SHAPE[1], 1) < 5,
                                dark=np.full(SHAPE, 2.0, np.float32), error_model="poisson",
                                polarization_factor=0.95)
    with h5py.File(out) as h5:
        assert np.array_equal(h5["/entry/integrated/intensity"][()], ref.intensity,
                              equal_nan=True)
        assert h5["/entry/integrated/2theta"].attrs["units"] == "degrees"
        assert h5["/entry/integrated/intensity"].compression == "gzip"


def test_config_file_and_subcommand(setup):
    yaml = pytest.importorskip("yaml")
    folder, frames = setup
    config = folder / "c.yaml"
    config.write_text(yaml.safe_dump({"poni": str(folder / "g.poni"), "npt": NPT,
                                      "error-model": "poisson", "no_progress": True,
                                      "output": str(folder / "fromconfig.h5")}))
    assert xreduce_main(["integrate", f"{folder}/s.h5::/d", "--config", str(config)]) == 0
    ref = make_ai().integrate1d(frames, NPT, error_model="poisson", method="bbox_csc")
    with h5py.File(folder / "fromconfig.h5") as h5:
        assert np.array_equal(h5["/entry/integrated/intensity"][()], ref.intensity,
                              equal_nan=True)
    bad = folder / "bad.json"
    bad.write_text(json.dumps({"npoints": 3}))
    assert main([f"{folder}/s.h5::/d", "--config", str(bad)]) == 2


def test_text_output_per_frame(setup):
    folder, frames = setup
    (folder / "txt").mkdir()
    assert main([f"{folder}/s.h5::/d[0:3]", "--poni", str(folder / "g.poni"), "--npt",
                 str(NPT), "-o", str(folder / "txt" / "f_%03d.dat"), "--no-progress"]) == 0
    table = np.loadtxt(folder / "txt" / "f_002.dat")
    ref = make_ai().integrate1d(frames[2], NPT, method="bbox_csc")  # the stack's default
    np.testing.assert_allclose(table[:, 1], ref.intensity, rtol=1e-15)  # text keeps all digits


def test_exit_codes(setup, capsys):
    folder, _ = setup
    base = ["--poni", str(folder / "g.poni"), "--npt", str(NPT), "--no-progress"]
    assert main([str(folder / "none.h5::/d")] + base + ["-o", str(folder / "x.h5")]) == 2
    assert "none.h5" in capsys.readouterr().err
    assert main([f"{folder}/s.h5::/d"] + base) == 2  # no output
    assert main([f"{folder}/s.h5::/d", "--dry-run", "-o", str(folder / "x.h5")] + base) == 0
    printed = capsys.readouterr().out
    assert "40 frames" in printed and "method: bbox,csc,cython where it applies" in printed
    assert main([f"{folder}/s.h5::/d", "--scan", "3", "3", "-o", str(folder / "x.h5")]
                + base) == 2
    # a failed chunk: exit 1, the frames named
    for i in range(4):
        shape = SHAPE if i != 1 else (10, 10)  # frame 1: not among the sampled
        fabio.edfimage.EdfImage(data=np.ones(shape, np.int32)).write(
            str(folder / f"e_{i}.edf"))
    assert main([str(folder / "e_*.edf"), "--chunk-frames", "1", "-o", str(folder / "e.h5")]
                + base) == 1
    assert "frames 1-1" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_ctrl_c_stops_cleanly_and_leaves_a_resumable_state(tmp_path):
    """SIGINT mid-run: exit code 130, no traceback, and --resume finishes the job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from xreduce.poni import write_poni

    rng = np.random.default_rng(5)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5.create_dataset("d", data=rng.poisson(30, size=(150,) + SHAPE).astype(np.uint32),
                          chunks=(1,) + SHAPE, **hdf5plugin.Bitshuffle())
    write_poni(make_ai().geometry, tmp_path / "g.poni")
    parts = tmp_path / ".o.h5.parts"
    args = [sys.executable, "-m", "xreduce.cli.integrate", f"{tmp_path}/s.h5::/d", "--poni",
            str(tmp_path / "g.poni"), "--npt", str(NPT), "--chunk-frames", "1", "-o",
            str(tmp_path / "o.h5"), "--no-progress"]
    for _ in range(3):  # the signal must land mid-run; retry if the run was too quick
        proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if parts.is_dir() and len(ChunkLog(parts).chunks()) >= 5:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.002)
        _, err = proc.communicate(timeout=60)
        if proc.returncode == 130:
            break
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert not (tmp_path / "o.h5").exists()
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "o.h5") as h5:
        assert h5["/entry/integrated/intensity"].shape == (150, NPT)
