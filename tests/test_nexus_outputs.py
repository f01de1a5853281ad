"""Every HDF5 file xreduce writes opens in silx view: a NeXus @default chain to a valid NXdata.

``silx.io.nxdata.get_default(h5file)`` must return a valid NXdata whose signal is the main
result, with NX_class on every group on the way and NeXus units on the axes. One case per
HDF5 writer (integration results, detector, engines, stack outputs, DCT preprocessing and
difspots, NF maps, pipeline and simulated frames), each on a small input.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

silx_nxdata = pytest.importorskip("silx.io.nxdata")

from xreduce.detectors import Detector, get_detector  # noqa: E402
from xreduce.geometry import Geometry  # noqa: E402
from xreduce.integrator import AzimuthalIntegrator  # noqa: E402


@pytest.fixture(scope="module")
def integrator():
    det = Detector(172e-6, 172e-6, (64, 80), name="Pilatus test")
    return AzimuthalIntegrator(Geometry(0.05, 0.004, 0.005, 0.01, 0.0, 0.0, 1e-10, det))


def _default(path):
    with h5py.File(path, "r") as h5:
        assert h5.attrs["NX_class"] == "NXroot"
        nxdata = silx_nxdata.get_default(h5)
        assert nxdata is not None and nxdata.is_valid, path
        group = h5[nxdata.group.name]
        entry = group.parent
        assert entry.attrs["NX_class"] == "NXentry"
        return (nxdata.signal[()], [a[()] if a is not None else None for a in nxdata.axes],
                [dict(a.attrs) if a is not None else {} for a in nxdata.axes],
                {k: entry[k][()] for k in entry if isinstance(entry[k], h5py.Dataset)})


def test_integrate1d_result(integrator, tmp_path):
    frame = np.random.default_rng(0).poisson(50, (64, 80))
    res = integrator.integrate1d(frame, 40, unit="2th_deg", error_model="poisson")
    path = tmp_path / "profile.h5"
    res.save(str(path))
    signal, axes, attrs, entry = _default(path)
    np.testing.assert_array_equal(signal, res.intensity)
    np.testing.assert_array_equal(axes[-1], res.radial)
    assert attrs[-1]["units"] == "degrees"
    assert entry["definition"] in (b"NXazint1d", "NXazint1d")
    with h5py.File(path, "r") as h5:
        process = h5["entry/integrate"]
        assert process.attrs["NX_class"] == "NXprocess"
        assert b"Distance" in process["poni"][()] or "Distance" in process["poni"][()]
        assert h5["entry/instrument"].attrs["NX_class"] == "NXinstrument"
        assert h5["entry/instrument/monochromator/wavelength"][()] == pytest.approx(1.0)
        np.testing.assert_array_equal(h5["entry/data/intensity_errors"][()], res.sigma)


@pytest.mark.parametrize("unit, nexus_units", [("q_nm^-1", "1/nm"), ("q_A^-1", "1/angstrom"),
                                                ("r_mm", "mm")])
def test_integrate2d_result_units(integrator, tmp_path, unit, nexus_units):
    frame = np.random.default_rng(1).poisson(50, (64, 80)).astype(np.float32)
    res = integrator.integrate2d(frame, 30, 12, unit=unit)
    path = tmp_path / "cake.nxs"
    res.save(str(path))
    signal, axes, attrs, entry = _default(path)
    np.testing.assert_array_equal(signal, res.intensity)
    assert attrs[0]["units"] == "degrees" and attrs[1]["units"] == nexus_units
    np.testing.assert_array_equal(axes[1], res.radial)
    assert entry["definition"] in (b"NXazint2d", "NXazint2d")


def test_stack_result(integrator, tmp_path):
    frames = np.random.default_rng(2).poisson(50, (3, 64, 80)).astype(np.uint32)
    res = integrator.integrate1d(frames, 20, unit="q_A^-1")
    path = tmp_path / "stack.h5"
    res.save(str(path))
    signal, axes, _, _ = _default(path)
    assert signal.shape == (3, 20)
    np.testing.assert_array_equal(axes[0], [0, 1, 2])


def test_detector_file(tmp_path):
    path = tmp_path / "detector.h5"
    det = get_detector("Pilatus 300k")
    det.write_nexus(path)
    signal, _, _, _ = _default(path)
    np.testing.assert_array_equal(signal, det.mask)
    assert Detector.read_nexus(path) == det


def test_pyfai_reads_our_detector_file(tmp_path):
    detectors = pytest.importorskip("pyFAI.detectors")
    path = tmp_path / "detector.h5"
    det = get_detector("Eiger2 CdTe 1M").binned(2)
    det.write_nexus(path)
    theirs = detectors.NexusDetector(str(path))
    assert tuple(theirs.shape) == det.shape
    assert (theirs.pixel1, theirs.pixel2) == (det.pixel1, det.pixel2)
    assert tuple(theirs.binning) == det.binning
    np.testing.assert_array_equal(np.asarray(theirs.mask) != 0, det.mask != 0)


# ------------------------------------------------------------------ every other HDF5 writer
def _nxdata(path):
    """The default NXdata of ``path`` through the @default chain: (group name, signal)."""
    with h5py.File(path, "r") as h5:
        assert h5.attrs["NX_class"] == "NXroot"
        nxdata = silx_nxdata.get_default(h5)
        assert nxdata is not None and nxdata.is_valid, path
        assert h5[nxdata.group.name].parent.attrs["NX_class"] == "NXentry"
        return nxdata.group.name, nxdata.signal[()]


def test_engines_file(integrator, tmp_path):
    ai = AzimuthalIntegrator(integrator.geometry)  # one engine: the one shown
    ai.integrate1d(np.ones((64, 80)), 25, unit="2th_deg")
    path = tmp_path / "engines.h5"
    ai.save_engine(path)
    name, signal = _nxdata(path)
    assert name == "/entry/pixels_per_bin"
    assert signal.shape == (25,) and signal.sum() > 0


@pytest.fixture(scope="module")
def stack_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("stack") / "frames.h5"
    frames = np.random.default_rng(3).poisson(50, (6, 64, 80)).astype(np.uint32)
    with h5py.File(path, "w") as h5:
        h5["data"] = frames
    return f"{path}::/data"


@pytest.mark.parametrize("kind", ["1d", "2d", "sinogram"])
def test_stack_outputs(integrator, stack_source, tmp_path, kind):
    from xreduce.stack import integrate_stack

    path = tmp_path / f"stack_{kind}.h5"
    options = {"1d": {}, "2d": {"npt_azim": 8}, "sinogram": {"scan": (2, 3)}}[kind]
    integrate_stack(stack_source, integrator, 16, path, unit="2th_deg", progress=False,
                    num_threads=1, **options)
    name, signal = _nxdata(path)
    expected = {"1d": ("/entry/integrated", (6, 16)), "2d": ("/entry/integrated", (6, 8, 16)),
                "sinogram": ("/entry/sinogram", (2, 3, 16))}[kind]
    assert (name, signal.shape) == expected


def test_dct_preprocess_output(tmp_path):
    from test_dct_preprocess import make_config

    from xreduce.dct import preprocess

    config = make_config(tmp_path, np.random.default_rng(4))[0]
    result = preprocess(config, progress=False)
    name, signal = _nxdata(result.output)
    assert name == "/entry/preprocessed" and signal.ndim == 3


def test_difspot_file(tmp_path):
    from xreduce.dct.difspot import write_difspots
    from xreduce.dct.segment import segment

    stack = np.zeros((5, 8, 8))
    stack[2, 3, 3] = 9.0
    path = write_difspots(tmp_path / "spots.h5", segment(stack, 1.0, 0.5, 2))
    name, signal = _nxdata(path)
    assert name == "/difspots/overview" and signal.sum() == 9.0


def test_nf_map_file(tmp_path):
    from xreduce.nf.maps import write_map_hdf5

    confidence = np.array([0.2, 0.9, 0.5])
    path = tmp_path / "map.h5"
    write_map_hdf5(path, [0.0, 5.0, 10.0], [0.0, 1.0, 2.0], 5.0, [1, -1, 1], np.zeros((3, 3)),
                   confidence)
    name, signal = _nxdata(path)
    assert name == "/entry/map"
    np.testing.assert_array_equal(signal, confidence)


def test_nf_pipeline_file(tmp_path):
    """pipeline.h5 once its final map is committed (the pipeline's private writers: a file of
    the full pipeline is too slow for this test, tests/test_nf_pipeline.py runs it)."""
    from xreduce.nf.pipeline import _commit_stage, _new_pipeline_file

    path = tmp_path / "pipeline.h5"
    _new_pipeline_file(path, "Lsd 3000\n", "{}")
    final = {"confidence": np.array([0.5, 1.0]), "x_um": np.array([0.0, 4.0]),
             "y_um": np.array([1.0, 2.0]), "euler_rad": np.zeros((2, 3)),
             "grain": np.array([0, 1])}
    _commit_stage(path, "loop_0", {"x_um": final["x_um"]}, {}, final_map=final)
    name, signal = _nxdata(path)
    assert name == "/entry/map"
    np.testing.assert_array_equal(signal, final["confidence"])


def test_nf_simulated_frames(tmp_path):
    from xreduce.nf.spots import NFGeometry
    from xreduce.nf.simulate import write_frames_hdf5

    geometry = NFGeometry(lsd_um=(3000.0,), bc_px=((8.0, 2.0),), px_um=1.48, wavelength_A=0.12,
                          omega_start_deg=-180.0, omega_step_deg=90.0,
                          omega_ranges_deg=((-180.0, 180.0),),
                          box_sizes_um=((-20.0, 20.0, -20.0, 20.0),), detector_shape=(16, 10))
    frames = [(0, f, np.full((10, 16), f, np.uint16)) for f in range(4)]
    path = write_frames_hdf5(tmp_path / "sim.h5", iter(frames), geometry)
    name, signal = _nxdata(path)
    assert name == "/entry/distance_0" and signal.shape == (4, 10, 16)
    with h5py.File(path, "r") as h5:
        assert h5["entry/distance_0/omega_deg"].attrs["units"] == "degrees"
