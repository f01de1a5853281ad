"""Every public writer goes through the one atomic writer (``xreduce.io.writers.atomic_output``).

For each writer, on a small input:

- under umask 022 the file is created 0644 (as ``open()`` does; ``mkstemp`` would give 0600)
  and no temporary file is left next to it;
- a symbolic link at the final name is replaced, never written through (its target keeps its
  bytes);
- symbolic links planted where a temporary or partial file could be (the fixed
  ``.name.partial``, the old ``name.part``, ``.name.tmp-<pid>``, ``name.creating``, and the
  random temporary name the writer draws first) are never written through: the writer steps
  around them (or, for a resumable output whose fixed partial name is a link, refuses with an
  OSError), and their targets keep their bytes.

See doc/robustness.md ("One writer").
"""
from __future__ import annotations

import functools
import io
import json
import os
import secrets
import stat

import h5py
import numpy as np
import pytest

from xreduce.io import writers
from xreduce.io.writers import partial_path

# ------------------------------------------------------------------ small inputs, built once
WL_A = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)


@functools.lru_cache(maxsize=None)
def _integrator():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    det = Detector(172e-6, 172e-6, (32, 40), name="Pilatus test")
    return AzimuthalIntegrator(Geometry(0.05, 0.002, 0.003, 0.01, 0.0, 0.0, 1e-10, det))


def _frame():
    return np.random.default_rng(0).poisson(50, (32, 40)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _nf_parameters():
    from xreduce.nf.params import read_parameters

    return read_parameters(io.StringIO("nDistances 1\nLsd 6000\nBC 1 2\nSpaceGroup 225\n"
                                       "LatticeParameter 4.08 4.08 4.08 90 90 90\n"
                                       "OmegaRange -180 180\nBoxSize -1 1 -1 1\n"), required=())


def _voxels():
    """x_um, y_um, edge_um, ud, euler_rad, confidence of three voxels."""
    return ([0.0, 5.0, 10.0], [0.0, 1.0, 2.0], 5.0, [1, -1, 1],
            np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.0, 0.0, 0.0]]), [0.2, 0.9, 0.5])


def _nf_geometry():
    from xreduce.nf.spots import NFGeometry

    return NFGeometry(lsd_um=(3000.0,), bc_px=((8.0, 2.0),), px_um=1.48, wavelength_A=0.12,
                      omega_start_deg=-180.0, omega_step_deg=90.0,
                      omega_ranges_deg=((-180.0, 180.0),),
                      box_sizes_um=((-20.0, 20.0, -20.0, 20.0),), detector_shape=(16, 10))


def _frames(n=4):
    return [(0, f, np.full((10, 16), f, np.uint16)) for f in range(n)]


def _stack_source(folder, n_frames=3):
    path = os.path.join(folder, "frames_in.h5")
    with h5py.File(path, "w") as h5:
        h5["data"] = np.random.default_rng(1).poisson(50, (n_frames, 32, 40)).astype(np.uint32)
    return f"{path}::/data"


@functools.lru_cache(maxsize=None)
def _calibration():
    """A calibration result on a small synthetic LaB6 image (computed once)."""
    from xreduce.calibration import calibrate
    from xreduce.calibration.synthetic import synthetic_case

    truth, image = synthetic_case(calibrant="LaB6", detector="Pilatus 1M", binning=4, dist=0.3,
                                  beam_fraction=(0.45, 0.5), tilt_deg=2, tilt_direction_deg=60)
    result = calibrate(image, truth.detector, "LaB6", wavelength=truth.wavelength,
                       geometry=truth)
    return image, truth, result


def _calib_cli(path, option, monkeypatch):
    """Run xreduce-calib with the (cached) calibration, writing ``path`` through ``option``."""
    import fabio

    import xreduce.calibration
    from xreduce.cli.calib import main

    image, truth, result = _calibration()
    folder = os.path.dirname(path)
    image_path = os.path.join(folder, "image_in.edf")
    fabio.edfimage.EdfImage(data=image).write(image_path)
    monkeypatch.setattr(xreduce.calibration, "calibrate", lambda *a, **k: result)
    outputs = {"-o": os.path.join(folder, "out_side.poni")}
    outputs[option] = path
    args = [image_path, "--calibrant", "LaB6", "--detector", "Pilatus1M", "--binning", "4",
            "--wavelength", str(truth.wavelength * 1e10)]
    for name, value in outputs.items():
        args += [name, value]
    assert main(args) == 0


# ------------------------------------------------------------------ the writers
def _poni(path, mp):
    from xreduce.poni import write_poni

    write_poni(_integrator().geometry, path)


def _detector_nexus(path, mp):
    from xreduce.detectors import get_detector

    get_detector("Pilatus 100k").write_nexus(path)


def _result(dim):
    ai = _integrator()
    if dim == 1:
        return ai.integrate1d(_frame(), 20, unit="2th_deg", error_model="poisson")
    return ai.integrate2d(_frame(), 12, 8, unit="2th_deg")


def _engines(path, mp):
    ai = _integrator()
    ai.integrate1d(_frame(), 20, unit="2th_deg")
    ai.save_engine(path)


def _spline(path, mp):
    from scipy.interpolate import RectBivariateSpline

    from xreduce.spline import DistortionSpline, write_spline

    x, y = np.arange(41.0), np.arange(33.0)
    gx, gy = np.meshgrid(x, y)
    fx = RectBivariateSpline(x, y, (0.01 * gx).T, s=0.1)
    fy = RectBivariateSpline(x, y, (0.02 * gy).T, s=0.1)
    write_spline(path, DistortionSpline((0.0, 0.0, 40.0, 32.0), 5.0, (75.0, 50.0),
                                        tuple(fx.get_knots()), fx.get_coeffs(),
                                        tuple(fy.get_knots()), fy.get_coeffs()))


def _nf_params(path, mp):
    from xreduce.nf.params import write_parameters

    write_parameters(_nf_parameters(), path)


def _nf_yaml(path, mp):
    from xreduce.nf.params import save_yaml

    save_yaml(_nf_parameters(), path)


def _mic(path, mp):
    from xreduce.nf.mic import write_mic

    write_mic(path, *_voxels())


def _mic_binary(path, mp):
    from xreduce.nf.mic import write_mic_binary

    write_mic_binary(path, *_voxels())


def _grid(path, mp):
    from xreduce.nf.grid import hexagonal_grid, write_grid

    write_grid(hexagonal_grid(20.0, 5.0), path)


def _hkls(path, mp):
    from xreduce.nf.reflections import reflection_list

    reflection_list(225, AU, WL_A, 3000.0, 250.0).write_csv(path)


def _spots_info(path, mp):
    from xreduce.nf.spotsinfo import write_spots_info

    write_spots_info(path, np.arange(16, dtype=np.uint32))


def _seeds(path, mp):
    from xreduce.nf.orientations import write_quaternion_seeds

    write_quaternion_seeds(path, np.eye(3)[None])


def _map_hdf5(path, mp):
    from xreduce.nf.maps import write_map_hdf5

    write_map_hdf5(path, *_voxels(), params=_nf_parameters())


def _map_png(path, mp):
    from xreduce.nf.maps import plot_map

    plot_map(path, *_voxels(), space_group=225, lattice_parameter=AU, dpi=20)


def _frames_hdf5(path, mp):
    from xreduce.nf.simulate import write_frames_hdf5

    write_frames_hdf5(path, iter(_frames()), _nf_geometry())


def _frames_tiff(path, mp):
    from xreduce.nf.simulate import write_frames_tiff

    assert os.path.basename(path) == "sim_000001.tif"
    write_frames_tiff(os.path.dirname(path), "sim", iter(_frames(1)), 4, raw_start_nr=1)


def _difspots(path, mp):
    from xreduce.dct.difspot import write_difspots
    from xreduce.dct.segment import segment

    stack = np.zeros((5, 8, 8))
    stack[2, 3, 3] = 9.0
    write_difspots(path, segment(stack, 1.0, 0.5, 2))


def _dct_preprocess(path, mp):
    from xreduce.dct import preprocess

    folder = os.path.dirname(path)
    raw = np.random.default_rng(2).uniform(100, 200, (12, 10, 12)).astype(np.float32)
    source = os.path.join(folder, "scan_in.h5")
    with h5py.File(source, "w") as h5:
        h5["data"] = raw
    preprocess({"preprocess": {"input": f"{source}::/data", "output": path,
                               "normalization": "none", "moving_median": {"window": 5},
                               "median_filter": {"size": None}, "chunk_frames": 4,
                               "overwrite": True}},
               progress=False)


def _stack_nexus(path, mp):
    from xreduce.stack import integrate_stack

    integrate_stack(_stack_source(os.path.dirname(path)), _integrator(), 16, path,
                    unit="2th_deg", progress=False, num_threads=1)


def _stack_text(path, mp):
    from xreduce.stack import integrate_stack

    assert os.path.basename(path) == "frame_00.dat"
    integrate_stack(_stack_source(os.path.dirname(path), 1), _integrator(), 16,
                    os.path.join(os.path.dirname(path), "frame_%02d.dat"), unit="2th_deg",
                    progress=False, num_threads=1)


def _benchmark_json(path, mp):
    from xreduce.benchmark import write_json

    write_json({"results": [], "settings": {}}, path)


def _demo_poni(path, mp):
    from xreduce.demo_data import write_demo_poni

    write_demo_poni(path)


WRITERS = {
    "poni": ("geometry.poni", _poni),
    "detector_nexus": ("detector.h5", _detector_nexus),
    "result_1d_text": ("profile.dat", lambda p, mp: _result(1).save(p)),
    "result_1d_nexus": ("profile.h5", lambda p, mp: _result(1).save(p)),
    "result_2d_nexus": ("cake.nxs", lambda p, mp: _result(2).save(p)),
    "save_engine": ("engines.h5", _engines),
    "spline": ("distortion.spline", _spline),
    "nf_parameters": ("ps.txt", _nf_params),
    "nf_parameters_yaml": ("ps.yaml", _nf_yaml),
    "nf_mic": ("map.mic", _mic),
    "nf_mic_binary": ("map.mic.bin", _mic_binary),
    "nf_grid": ("grid.txt", _grid),
    "nf_hkls": ("hkls.csv", _hkls),
    "nf_spots_info": ("SpotsInfo.bin", _spots_info),
    "nf_seeds": ("seeds.txt", _seeds),
    "nf_map_hdf5": ("map.h5", _map_hdf5),
    "nf_map_png": ("map.png", _map_png),
    "nf_frames_hdf5": ("sim.h5", _frames_hdf5),
    "nf_frames_tiff": ("sim_000001.tif", _frames_tiff),
    "dct_difspots": ("spots.h5", _difspots),
    "dct_preprocess": ("pre.h5", _dct_preprocess),
    "stack_nexus": ("stack.h5", _stack_nexus),
    "stack_text": ("frame_00.dat", _stack_text),
    "calib_poni": ("calib.poni", lambda p, mp: _calib_cli(p, "-o", mp)),
    "calib_report": ("calib.json", lambda p, mp: _calib_cli(p, "--report", mp)),
    "calib_plot": ("calib.png", lambda p, mp: _calib_cli(p, "--plot", mp)),
    "benchmark_json": ("bench.json", _benchmark_json),
    "demo_poni": ("demo.poni", _demo_poni),
}
# resumable outputs keep a fixed partial name: a link there makes them refuse (OSError)
RESUMABLE = {"dct_preprocess", "stack_nexus"}
# writers whose final file is not drawn through a random temporary name (the stack's NeXus
# file is written while the run goes, under its fixed partial name: a killed run leaves one
# file, rewritten by the next, not one per run)
FIXED_PARTIAL = {"dct_preprocess", "stack_nexus"}

VICTIM_BYTES = b"not yours to overwrite\n"
PLANTED_TOKEN = "0badf00d"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _leftovers(folder):
    return sorted(n for n in os.listdir(folder)
                  if ".partial" in n or n.endswith((".part", ".creating")) or ".tmp" in n)


def _victim(folder, name):
    os.makedirs(os.path.join(folder, "elsewhere"), exist_ok=True)
    victim = os.path.join(folder, "elsewhere", name)
    with open(victim, "wb") as handle:
        handle.write(VICTIM_BYTES)
    return victim


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_umask_022_gives_0644_and_no_leftover(case, tmp_path, umask_022, monkeypatch):
    name, write = WRITERS[case]
    path = os.path.join(tmp_path, name)
    write(path, monkeypatch)
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert mode == 0o644, f"{case}: mode {oct(mode)}"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_link_at_final_name_is_replaced_not_followed(case, tmp_path, monkeypatch):
    name, write = WRITERS[case]
    path = os.path.join(tmp_path, name)
    victim = _victim(tmp_path, "final")
    os.symlink(victim, path)
    write(path, monkeypatch)
    assert not os.path.islink(path) and os.path.isfile(path)
    assert os.path.getsize(path) > 0
    with open(victim, "rb") as handle:
        assert handle.read() == VICTIM_BYTES


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_links_at_temporary_names_are_never_written_through(case, tmp_path, monkeypatch):
    name, write = WRITERS[case]
    path = os.path.join(tmp_path, name)
    extension = os.path.splitext(name)[1]
    planted = [partial_path(path), path + ".part", os.path.join(tmp_path, f".{name}.part"),
               os.path.join(tmp_path, f".{name}.tmp-{os.getpid()}"), path + ".creating",
               partial_path(path) + ".creating",
               os.path.join(tmp_path, f".{name}.{PLANTED_TOKEN}.partial{extension}")]
    victims = [_victim(tmp_path, f"victim_{i}") for i in range(len(planted))]
    for link, victim in zip(planted, victims):
        os.symlink(victim, link)

    # the first random temporary name drawn is the planted one, until a draw meets a file
    real_token = secrets.token_hex
    armed = {"on": True}
    real_create = writers.create_exclusive

    def create(target, *args, **kwargs):
        try:
            return real_create(target, *args, **kwargs)
        except FileExistsError:
            armed["on"] = False
            raise

    monkeypatch.setattr(writers.secrets, "token_hex",
                        lambda n=None: PLANTED_TOKEN if armed["on"] else real_token(n))
    monkeypatch.setattr(writers, "create_exclusive", create)
    try:
        write(path, monkeypatch)
    except OSError as error:
        assert case in RESUMABLE, f"{case}: {error}"
        assert "link" in str(error)
    else:
        assert not os.path.islink(path) and os.path.isfile(path)
        if case not in FIXED_PARTIAL:
            assert not armed["on"], f"{case}: the planted temporary name was never met"
    for victim in victims:
        with open(victim, "rb") as handle:
            assert handle.read() == VICTIM_BYTES, f"{case}: {victim} written through"
    for link in planted:
        assert os.path.islink(link)


def test_no_private_temporary_helpers_left():
    """Only the atomic writer (and the resumable files built on it) name temporary files."""
    import xreduce

    root = os.path.dirname(xreduce.__file__)
    allowed = {os.path.join("io", "writers.py"), os.path.join("io", "run_identity.py")}
    offenders = []
    for folder, _, files in os.walk(root):
        for file in files:
            if not file.endswith(".py"):
                continue
            relative = os.path.relpath(os.path.join(folder, file), root)
            with open(os.path.join(folder, file), encoding="utf-8") as handle:
                text = handle.read()
            if relative not in allowed and ("mkstemp" in text or '".part"' in text
                                            or "_atomic_" in text):
                offenders.append(relative)
    assert offenders == []


def test_benchmark_json_round_trip(tmp_path):
    from xreduce.benchmark import write_json

    path = tmp_path / "bench.json"
    write_json({"results": [1, 2]}, str(path))
    assert json.loads(path.read_text()) == {"results": [1, 2]}
