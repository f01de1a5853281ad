"""Multi-resolution NF pipeline, its resume after SIGKILL, the xreduce-nf command, bad input."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from nf_fit_cases import N_FRAMES, rotate_by, voronoi_case
from xreduce.nf.microstructure import random_orientations
from xreduce.nf.orientations import write_quaternion_seeds
from xreduce.nf.pipeline import completed_stages, stage_names
from xreduce.nf.spotsinfo import write_spots_info

PARAMS = """\
DataDirectory {folder}
OutputDirectory {folder}
ReducedFileName spots
StartNr 1
EndNr {n_frames}
nDistances 2
Lsd 3000
Lsd 4000
BC 320.3 319.6
BC 321.2 318.9
px 1.48
NrPixels 640
Wavelength 0.12
SpaceGroup 225
LatticeParameter 4.08 4.08 4.08 90 90 90
OmegaStart -180
OmegaStep 0.5
OmegaRange -180 180
BoxSize -350 350 -350 350
ExcludePoleAngle 2
tx 0.2
ty -0.15
tz 0.3
Rsample 20
GridSize 4
EdgeLength 4
MaxRingRad 330
OrientTol 0.5
MinFracAccept 0.5
MinConfidence 0.6
MaxAngle 1
MicFileBinary map.mic.bin
MicFileText map.mic
SeedOrientations seeds.txt
SeedOrientationsAll seeds.txt
GridRefactor 8 2 3
PrecomputedSpotsInfo 1
"""


def _make_case(folder, n_decoys=100):
    model, grid, micro, truth = voronoi_case()
    write_spots_info(folder / "SpotsInfo.bin", model.words)
    rng = np.random.default_rng(0)
    seeds = np.concatenate([rotate_by(truth, rng.uniform(0.02, 0.1, len(truth)), rng),
                            random_orientations(n_decoys, rng)])
    write_quaternion_seeds(folder / "seeds.txt", seeds[rng.permutation(len(seeds))])
    (folder / "params.txt").write_text(PARAMS.format(folder=folder, n_frames=N_FRAMES))
    return micro


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nfcase")
    micro = _make_case(folder)
    return folder, micro


def _run(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "xreduce.nf", *args], capture_output=True,
                          text=True, env=env, **kw)


def _copy_case(src, dst):
    dst.mkdir()
    for name in ("SpotsInfo.bin", "seeds.txt"):
        (dst / name).write_bytes((src / name).read_bytes())
    (dst / "params.txt").write_text(PARAMS.format(folder=dst, n_frames=N_FRAMES))


def _final(folder):
    with h5py.File(folder / "pipeline.h5", "r") as f:
        g = f["stages/loop_2_merge"]
        return {k: g[k][()] for k in ("euler_rad", "confidence", "row", "grain", "x_um")}


def test_three_loops_killed_and_resumed_is_identical(case_files, tmp_path):
    src, micro = case_files
    full_dir, kill_dir = tmp_path / "full", tmp_path / "killed"
    _copy_case(src, full_dir)
    _copy_case(src, kill_dir)
    done = _run([str(full_dir / "params.txt"), "--no-progress"], timeout=600)
    assert done.returncode == 0, done.stderr
    assert "grains:" in done.stdout
    assert completed_stages(full_dir / "pipeline.h5") == stage_names(3)
    # the interrupted run: SIGKILL once loop 1's seeded stage is committed
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "xreduce.nf", str(kill_dir / "params.txt"),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pfile = kill_dir / "pipeline.h5"
    t0 = time.time()
    stages = []
    while time.time() - t0 < 600 and proc.poll() is None:
        if pfile.exists():
            try:
                stages = completed_stages(pfile)
            except (OSError, KeyError):
                stages = []
            if "loop_1_seeded" in stages:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stages = completed_stages(pfile)
    assert "loop_1_seeded" in stages and stages != stage_names(3)
    assert not (kill_dir / "map.mic").exists()
    resumed = _run([str(kill_dir / "params.txt"), "--resume", str(pfile), "--no-progress"],
                   timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done (resumed)" in resumed.stdout
    a, b = _final(full_dir), _final(kill_dir)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    mic_a = np.loadtxt(full_dir / "map.mic", comments="%")
    mic_b = np.loadtxt(kill_dir / "map.mic", comments="%")
    np.testing.assert_array_equal(np.delete(mic_a, 2, axis=1), np.delete(mic_b, 2, axis=1))
    # the result: the fine map has the grains of the microstructure (a 4-voxel grain of the
    # 4 um truth may vanish on the 8 um grid of loop 0 and never be seeded)
    sizes = np.bincount(micro.grain_id)
    found = len(np.unique(a["grain"][a["grain"] >= 0]))
    assert np.count_nonzero(sizes >= 10) <= found <= np.count_nonzero(sizes)
    assert np.median(a["confidence"]) >= 0.9
    # NeXus default chain for silx
    from silx.io.nxdata import get_default

    with h5py.File(full_dir / "pipeline.h5", "r") as f:
        nx = get_default(f)
        assert nx is not None and nx.is_valid
        assert nx.signal.name.endswith("confidence")
    assert (full_dir / "Grains.csv").read_text().startswith("%NumGrains")
    # MIDAS's binary mic (every voxel), the NeXus map and its picture
    from xreduce.nf.mic import read_mic_binary

    binary = read_mic_binary(full_dir / "map.mic.bin")
    assert len(binary) == len(a["confidence"])
    np.testing.assert_allclose(binary.confidence, a["confidence"])
    np.testing.assert_array_equal(binary.x_um[a["confidence"] > 0],
                                  a["x_um"][a["confidence"] > 0])
    with h5py.File(full_dir / "map.mic.h5", "r") as f:
        nx = get_default(f)
        assert nx is not None and nx.is_valid
        np.testing.assert_allclose(f["entry/map/confidence"][()], a["confidence"])
        assert f["entry/map/ipf_rgb"].shape == (len(a["confidence"]), 3)
    assert (full_dir / "map.mic.png").read_bytes()[:4] == b"\x89PNG"
    assert (full_dir / "xreduce-nf.log").stat().st_size > 0


def test_restart_from_a_stage(case_files, tmp_path):
    src, _ = case_files
    folder = tmp_path / "restart"
    _copy_case(src, folder)
    params = str(folder / "params.txt")
    first = _run([params, "--no-progress", "--stop-after", "loop_1_merge", "--nm-restarts", "2"],
                 timeout=600)
    assert first.returncode == 0, first.stderr
    pfile = folder / "pipeline.h5"
    assert completed_stages(pfile) == stage_names(3)[:4]
    again = _run([params, "--no-progress", "--restart-from", "loop_1_merge"], timeout=600)
    assert again.returncode == 0, again.stderr
    assert completed_stages(pfile) == stage_names(3)
    bad = _run([params, "--restart-from", "loop_9_merge"])
    assert bad.returncode == 2 and "restart_from" in bad.stderr


def test_bad_input_errors_before_computing(case_files, tmp_path):
    src, _ = case_files
    folder = tmp_path / "bad"
    _copy_case(src, folder)
    params = folder / "params.txt"
    # SpotsInfo.bin of the wrong size
    (folder / "SpotsInfo.bin").write_bytes(b"\0" * 1000)
    r = _run([str(params)])
    assert r.returncode == 2 and "SpotsInfo.bin has 1000 bytes" in r.stderr
    # empty images
    (folder / "SpotsInfo.bin").write_bytes((src / "SpotsInfo.bin").read_bytes())
    size = (folder / "SpotsInfo.bin").stat().st_size
    (folder / "SpotsInfo.bin").write_bytes(b"\0" * size)
    r = _run([str(params)])
    assert r.returncode == 2 and "no lit pixel" in r.stderr
    (folder / "SpotsInfo.bin").write_bytes((src / "SpotsInfo.bin").read_bytes())
    # seeds with wrong columns
    (folder / "seeds.txt").write_text("1,0,0\n")
    r = _run([str(params)])
    assert r.returncode == 2 and "columns" in r.stderr
    (folder / "seeds.txt").write_text((src / "seeds.txt").read_text())
    # a count that disagrees with NrOrientations
    params.write_text(params.read_text().replace("GridRefactor 8 2 3\n", "")
                      + "NrOrientations 3\n")
    r = _run([str(params)])
    assert r.returncode == 2 and "NrOrientations" in r.stderr
    # a grid outside the beam
    params.write_text(PARAMS.format(folder=folder, n_frames=N_FRAMES)
                      + "GridMask 2000 2100 2000 2100\n")
    r = _run([str(params)])
    assert r.returncode == 2 and "grid" in r.stderr
    assert not (folder / "pipeline.h5").exists()


def test_edge_length_default_warns(case_files, tmp_path):
    src, _ = case_files
    folder = tmp_path / "edge"
    _copy_case(src, folder)
    params = folder / "params.txt"
    params.write_text(params.read_text().replace("EdgeLength 4\n", "")
                      .replace("GridRefactor 8 2 3", "GridRefactor 30 2 1"))
    r = _run([str(params), "--no-progress"], timeout=600)
    assert "EdgeLength" in r.stderr


def test_fast_path_option_is_recorded_for_resume(case_files, tmp_path):
    """``--fast`` fits with FAST_PATH (beyond MIDAS); the pipeline file records it with the
    fit options, so resuming without it is refused instead of mixing two fits."""
    src, _ = case_files
    folder = tmp_path / "fast"
    _copy_case(src, folder)
    params = str(folder / "params.txt")
    first = _run([params, "--no-progress", "--fast", "--stop-after", "loop_0_initial"],
                 timeout=600)
    assert first.returncode == 0, first.stderr
    pfile = folder / "pipeline.h5"
    with h5py.File(pfile, "r") as f:
        options = f["provenance/fit_options"][()].decode()
        assert (f["stages/loop_0_initial/confidence"][()] > 0).mean() > 0.9
    assert "neighbour_passes=2" in options and "seed_group_deg:0.5" in options
    mixed = _run([params, "--no-progress", "--resume", str(pfile)], timeout=600)
    assert mixed.returncode != 0 and "fit options" in mixed.stderr
    from xreduce.nf.params import read_parameters
    from xreduce.nf.pipeline import run_pipeline

    two = read_parameters(folder / "params.txt").replace(save_n_solutions=2)
    with pytest.raises(ValueError, match="fast: needs SaveNSolutions 1"):
        run_pipeline(two, "", fast=True, progress=False)
