"""Results: text and NeXus files, plots, pickling, engines saved to HDF5 and reloaded."""
import os
import pickle

import numpy as np
import pytest


@pytest.fixture(scope="module")
def geometry():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    return Geometry(0.05, 60 * 172e-6, 30 * 172e-6, 0.05, -0.03, 0.02, 1e-10,
                    Detector(172e-6, 172e-6, (100, 80)))


@pytest.fixture(scope="module")
def frame(geometry):
    return np.random.default_rng(0).poisson(100, geometry.detector.shape).astype(np.uint16)


def test_result_fields(geometry, frame):
    from xreduce.integrator import AzimuthalIntegrator

    res = AzimuthalIntegrator(geometry).integrate1d(frame, 25, unit="2th_deg",
                                                    error_model="poisson")
    assert res.radial.shape == res.intensity.shape == res.sigma.shape == (25,)
    assert res.unit.name == "2th_deg" and res.method == ("bbox", "csr", "cython")
    assert res.error_model == "poisson" and res.geometry is geometry
    ok = res.count > 0
    np.testing.assert_allclose(res.intensity[ok], (res.sum_signal / res.sum_normalization)[ok])
    np.testing.assert_allclose(res.sigma[ok],
                               (np.sqrt(res.sum_variance) / res.sum_normalization)[ok])
    np.testing.assert_allclose(res.std[ok],
                               np.sqrt(res.sum_variance / res.sum_normalization2)[ok])
    assert AzimuthalIntegrator(geometry).integrate1d(frame, 25).sigma is None


def test_save_text_1d_and_2d(tmp_path, geometry, frame):
    """.dat: numpy.loadtxt reads the columns back; the header holds geometry and options."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    res = ai.integrate1d(frame, 25, unit="q_nm^-1", error_model="poisson",
                         polarization_factor=0.95)
    path = tmp_path / "x.dat"
    res.save(str(path))
    table = np.loadtxt(path)
    assert table.shape == (25, 3)
    np.testing.assert_allclose(table[:, 0], res.radial, rtol=1e-15)
    ok = res.count > 0
    np.testing.assert_allclose(table[ok, 1], res.intensity[ok], rtol=1e-15)
    text = path.read_text()
    assert "dist: 0.05" in text and "polarization_factor: 0.95" in text and "q_nm^-1" in text
    assert os.listdir(tmp_path) == ["x.dat"]  # no temporary file left behind
    cake = ai.integrate2d(frame, 20, 10)
    cake.save(str(tmp_path / "c.dat"))
    table = np.loadtxt(tmp_path / "c.dat")
    assert table.shape == (10, 21)
    np.testing.assert_allclose(table[:, 0], cake.azimuthal, rtol=1e-15)


def test_save_nexus(tmp_path, geometry, frame):
    """.h5: NXentry/NXdata with signal, errors and axes carrying units (silx-viewable)."""
    import h5py
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    res = ai.integrate1d(frame, 25, unit="2th_deg", error_model="poisson")
    res.save(str(tmp_path / "x.h5"))
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        data = h5["entry/data"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "intensity"
        assert list(data.attrs["axes"]) == ["2th"]
        assert data["2th"].attrs["units"] == "degrees"          # NeXus spelling
        assert h5["entry/integrate"].attrs["NX_class"] == "NXprocess"
        np.testing.assert_array_equal(data["intensity"][()], res.intensity)
        np.testing.assert_array_equal(data["intensity_errors"][()], res.sigma)
    cake = ai.integrate2d(np.stack([frame, frame]), 20, 10)
    cake.save(str(tmp_path / "c.nxs"))
    with h5py.File(tmp_path / "c.nxs", "r") as h5:
        data = h5["entry/data"]
        assert list(data.attrs["axes"]) == ["frame", "chi", "q"]
        assert data["intensity"].shape == (2, 10, 20)
    assert sorted(os.listdir(tmp_path)) == ["c.nxs", "x.h5"]


def test_plot(geometry, frame):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    ax = ai.integrate1d(frame, 25, error_model="poisson").plot()
    assert len(ax.lines) >= 1
    ax = ai.integrate2d(frame, 20, 10).plot()
    assert len(ax.images) == 1


def test_pickle_integrator(geometry, frame):
    """Pickling carries the geometry (engines rebuilt) or, when asked, the engines too;
    either way the copy integrates identically."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    want = ai.integrate1d(frame, 25, method="full_csr", error_model="poisson")
    light = pickle.loads(pickle.dumps(ai))
    assert len(light.engines) == 0
    np.testing.assert_array_equal(light.integrate1d(frame, 25, method="full_csr",
                                                    error_model="poisson").intensity,
                                  want.intensity)
    ai.pickle_engines = True
    heavy = pickle.loads(pickle.dumps(ai))
    assert len(heavy.engines) == 1
    got = heavy.integrate1d(frame, 25, method="full_csr", error_model="poisson")
    np.testing.assert_array_equal(got.intensity, want.intensity)
    np.testing.assert_array_equal(got.sigma, want.sigma)


def test_save_and_load_engine(tmp_path, geometry, frame):
    """An engine saved to HDF5 reloads into an integrator that needs no build and gives
    identical results (1D and 2D, with a mask)."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    mask = np.zeros(geometry.detector.shape, bool)
    mask[40:45] = True
    a = ai.integrate1d(frame, 25, method="full_csr", mask=mask, error_model="poisson")
    b = ai.integrate2d(frame, 20, 12, method="bbox_csr")
    ai.save_engine(str(tmp_path / "engine.h5"))
    assert os.listdir(tmp_path) == ["engine.h5"]
    loaded = AzimuthalIntegrator.load_engine(str(tmp_path / "engine.h5"))
    assert len(loaded.engines) == 2
    assert loaded.geometry.dist == geometry.dist
    import xreduce.sparse

    calls = []
    original = xreduce.sparse.build_csr
    xreduce.sparse.build_csr = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        a2 = loaded.integrate1d(frame, 25, method="full_csr", mask=mask, error_model="poisson")
        b2 = loaded.integrate2d(frame, 20, 12, method="bbox_csr")
    finally:
        xreduce.sparse.build_csr = original
    assert calls == []
    np.testing.assert_array_equal(a2.intensity, a.intensity)
    np.testing.assert_array_equal(a2.sigma, a.sigma)
    np.testing.assert_array_equal(b2.intensity, b.intensity)
