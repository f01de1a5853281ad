"""PONI files: versions 1, 2, 2.1 and 3 written by pyFAI load with identical parameters; the
version 2.1 files we write load in pyFAI with identical parameters; bad files give errors that
name the line.

Parameters are compared exactly (``==``): both sides write floats with ``repr``-style round-trip
precision, so nothing may be lost.
"""
import os
import warnings

import numpy as np
import pytest

import xreduce
from xreduce import Detector, Geometry, get_detector
from xreduce.poni import read_poni, write_poni

PARAMS = dict(dist=0.1234567890123, poni1=0.0812345678901, poni2=0.0923456789012,
              rot1=0.0123456789, rot2=-0.0234567891, rot3=0.345678912, wavelength=1.0332e-10)


def _pyfai_write(tmp_path, detector, version, params=PARAMS, parallax=False):
    """A PONI file written by pyFAI itself, in the requested version."""
    pytest.importorskip("pyFAI")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    from pyFAI.io.ponifile import PoniFile

    ai = AzimuthalIntegrator(detector=detector, **params)
    poni = PoniFile(ai)
    poni.API_VERSION = version
    if parallax:
        poni._parallax = True
    path = tmp_path / f"pyfai_v{version}.poni"
    with open(path, "w") as handle:
        poni.write(handle)
    return path


def _same_parameters(geo, params=PARAMS):
    for key, value in params.items():
        assert getattr(geo, key) == value, key


@pytest.mark.parametrize("version", [1, 2, 2.1, 3])
def test_pyfai_files_registered_detector(tmp_path, version):
    detectors = pytest.importorskip("pyFAI.detectors")
    path = _pyfai_write(tmp_path, detectors.detector_factory("Pilatus1M"), version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # nothing unknown in a pyFAI file
        geo = xreduce.load(path)
    _same_parameters(geo)
    assert geo.detector == get_detector("Pilatus 1M")


@pytest.mark.parametrize("version", [2, 2.1, 3])
def test_pyfai_files_generic_detector(tmp_path, version):
    detectors = pytest.importorskip("pyFAI.detectors")
    theirs = detectors.Detector(100e-6, 150e-6, max_shape=(300, 200), orientation=1)
    geo = Geometry.load(_pyfai_write(tmp_path, theirs, version))
    _same_parameters(geo)
    assert geo.detector.shape == (300, 200)
    assert (geo.detector.pixel1, geo.detector.pixel2) == (100e-6, 150e-6)
    assert geo.detector.orientation == (3 if version == 2 else 1)   # 2.0 has no orientation


def test_pyfai_version1_plain_detector_needs_shape(tmp_path):
    detectors = pytest.importorskip("pyFAI.detectors")
    path = _pyfai_write(tmp_path, detectors.Detector(100e-6, 150e-6), 1)
    assert "pixelsize1" in path.read_text().lower()
    with pytest.raises(ValueError, match="no shape; pass shape"):
        xreduce.load(path)
    geo = xreduce.load(path, shape=(30, 20))
    _same_parameters(geo)
    assert (geo.detector.pixel1, geo.detector.pixel2, geo.detector.shape) == (100e-6, 150e-6, (30, 20))


def test_pyfai_orientation_and_cdte(tmp_path):
    detectors = pytest.importorskip("pyFAI.detectors")
    det = detectors.detector_factory("Eiger2CdTe_4M", {"orientation": 2})
    geo = xreduce.load(_pyfai_write(tmp_path, det, 2.1))
    assert geo.detector.name == "Eiger2 CdTe 4M" and geo.detector.orientation == 2


def test_pyfai_version3_parallax_warns(tmp_path):
    detectors = pytest.importorskip("pyFAI.detectors")
    path = _pyfai_write(tmp_path, detectors.detector_factory("Pilatus1M"), 3, parallax=True)
    assert "Parallax: True" in path.read_text()
    with pytest.warns(UserWarning, match="parallax"):
        geo = xreduce.load(path)
    _same_parameters(geo)
    assert geo.extra["Parallax"] == "True"


@pytest.mark.parametrize("detector", [
    get_detector("Pilatus 1M"),
    get_detector("Eiger 4M", orientation=1),
    get_detector("Rayonix MX225"),
    get_detector("Pilatus 1M").binned(2),
    Detector(100e-6, 150e-6, (300, 200), orientation=4),
])
def test_our_files_load_in_pyfai(tmp_path, detector):
    pyFAI = pytest.importorskip("pyFAI")
    geo = Geometry(**PARAMS, detector=detector)
    path = tmp_path / "ours.poni"
    geo.save(path)
    ai = pyFAI.load(str(path))
    for key, value in PARAMS.items():
        assert getattr(ai, key) == value, key
    assert tuple(ai.detector.shape) == detector.shape
    assert ai.detector.pixel1 == pytest.approx(detector.pixel1, rel=1e-12)
    assert ai.detector.pixel2 == pytest.approx(detector.pixel2, rel=1e-12)
    assert int(ai.detector.orientation) == detector.orientation
    # and the same per-pixel 2theta at a few pixels (pyFAI's float32 positions: 1e-6)
    d1, d2 = np.array([0, 10, 25]), np.array([3, 7, 11])
    np.testing.assert_allclose(geo.twotheta_array()[d1, d2], ai.tth(d1, d2), rtol=1e-6)


def test_round_trip_and_extra(tmp_path):
    geo = Geometry(**PARAMS, detector="Eiger 1M", extra={"Calibrant": "LaB6"})
    path = tmp_path / "a.poni"
    geo.save(path)
    with pytest.warns(UserWarning, match=r"unknown PONI keys.*Calibrant \(line \d+\)"):
        back = Geometry.load(path)
    assert back == geo and back.extra == {"Calibrant": "LaB6"}
    assert [p.name for p in tmp_path.iterdir()] == ["a.poni"]       # no temporary left


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "g.poni"
    path.write_text("old content")
    Geometry(**PARAMS, detector="Pilatus 1M").save(path)
    assert read_poni(path).dist == PARAMS["dist"]
    with pytest.raises(TypeError, match="geometry"):
        write_poni("not a geometry", path)
    assert read_poni(path).dist == PARAMS["dist"]       # untouched by the failed write


HAND = """# written by hand
PONI_VERSION: 2.1
detector: pilatus1m
DETECTOR_CONFIG: {"pixel1": 0.000172, "pixel2": 0.000172, "orientation": 3}

  # indented comment
distance: 0.1
PONI1: 0.08
poni2: 0.09
rot1: 0.01
ROT2: 0.02
Rot3: 0
WaveLength: 1e-10
"""


def test_case_insensitive_keys_and_comments(tmp_path):
    path = tmp_path / "hand.poni"
    path.write_text(HAND)
    geo = read_poni(path)
    assert (geo.dist, geo.poni1, geo.poni2, geo.rot1, geo.rot2, geo.rot3, geo.wavelength) == \
        (0.1, 0.08, 0.09, 0.01, 0.02, 0.0, 1e-10)
    assert geo.detector.name == "Pilatus 1M"


def test_version1_spline_kept(tmp_path):
    path = tmp_path / "v1.poni"
    path.write_text("Detector: Detector\nPixelSize1: 5e-05\nPixelSize2: 5e-05\n"
                    "SplineFile: /data/frelon.spline\nDistance: 0.1\nPoni1: 0.05\nPoni2: 0.05\n"
                    "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n")
    with pytest.warns(UserWarning, match="spline"):
        geo = read_poni(path, shape=(2048, 2048))
    assert geo.extra["SplineFile"] == "/data/frelon.spline"
    assert geo.detector.pixel1 == 5e-05
    geo.save(tmp_path / "v21.poni")
    assert '"splineFile": "/data/frelon.spline"' in (tmp_path / "v21.poni").read_text()


@pytest.mark.parametrize("bad, match", [
    (HAND.replace("distance: 0.1", "distance 0.1"), r"line 7: expected 'key: value'"),
    (HAND.replace("distance: 0.1", "distance: 0.1m"), r"line 7: distance: expected a number, got '0.1m'"),
    (HAND.replace('"orientation": 3}', '"orientation": 3'), r"line 4: Detector_config: invalid JSON"),
    (HAND.replace("PONI_VERSION: 2.1", "PONI_VERSION: 7"), r"line 2: poni_version: expected one of"),
    (HAND.replace("Rot3: 0\n", ""), r"missing key 'rot3'"),
    (HAND + "poni1: 0.1\n", r"line 14: key 'poni1' already given on line 8"),
    (HAND.replace("pilatus1m", "pilatus9m"), r"line 3: .*unknown detector 'pilatus9m'"),
    (HAND.replace("distance: 0.1", "distance: -0.1"), r"dist: expected a positive"),
    (HAND.replace(": 1e-10", ": nan"), r"(?i)wavelength: expected a finite"),
])
def test_malformed_files(tmp_path, bad, match):
    path = tmp_path / "bad.poni"
    path.write_text(bad)
    with pytest.raises(ValueError, match=match):
        read_poni(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        xreduce.load(tmp_path / "nothing.poni")


def test_load_returns_integrator_holding_the_geometry(tmp_path):
    path = tmp_path / "x.poni"
    written = Geometry(**PARAMS, detector="Pilatus 1M")
    written.save(os.fspath(path))
    ai = xreduce.load(os.fspath(path))
    assert isinstance(ai, xreduce.AzimuthalIntegrator)
    assert isinstance(ai.geometry, Geometry)
    assert ai.geometry.parameters() == written.parameters()
    assert ai.twotheta_array().shape == (1043, 981)
    assert isinstance(Geometry.load(os.fspath(path)), Geometry)


def test_pyfai_write_twice_to_one_file(tmp_path):
    """pyFAI's ai.write() appends: a file written twice holds two geometries and pyFAI uses
    the last; so do we (with a warning). A key twice within one geometry stays an error."""
    pytest.importorskip("pyFAI")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    from pyFAI.io.ponifile import PoniFile

    path = tmp_path / "twice.poni"
    first = AzimuthalIntegrator(dist=0.1, poni1=0.02, poni2=0.03, wavelength=1e-10,
                                detector="Pilatus1M")
    second = AzimuthalIntegrator(dist=0.25, poni1=0.05, poni2=0.04, rot1=0.01,
                                 wavelength=0.7e-10, detector="Eiger1M")
    first.write(str(path))
    second.write(str(path))
    theirs = PoniFile(str(path))
    with pytest.warns(UserWarning, match="2 geometries appended"):
        ours = Geometry.load(path)
    for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.detector == get_detector("Eiger 1M")
    text = path.read_text().replace("Distance: 0.25", "Distance: 0.25\nDistance: 0.3")
    path.write_text(text)
    with pytest.raises(ValueError, match="key 'Distance' already given"):
        Geometry.load(path)


def test_curved_detector_radius_reaches_pyfai_definition(monkeypatch):
    """A curved pyFAI detector's ``radius`` in Detector_config builds its corners, as pyFAI's
    detector_factory does (a small copy of pyFAI's Aarhus keeps the test fast); radius on a
    flat detector, and other pixel sizes on pixels at explicit positions, are refused."""
    pyfai_detectors = pytest.importorskip("pyFAI.detectors")
    from xreduce import detectors
    from xreduce.poni import detector_from_config

    class SmallAarhus(pyfai_detectors.Aarhus):
        MAX_SHAPE = (6, 40)

    monkeypatch.setattr(detectors, "_pyfai_class", lambda name: SmallAarhus)
    ours = detector_from_config("Aarhus", {"radius": 0.5, "orientation": 3})
    want = Detector.from_pyfai(SmallAarhus(radius=0.5))
    np.testing.assert_array_equal(ours.corners, want.corners)
    default = detector_from_config("Aarhus", {"orientation": 3})
    np.testing.assert_array_equal(default.corners, Detector.from_pyfai(SmallAarhus()).corners)
    # the radius took effect: over 1 mm of arc the sagitta differs by ~0.7 um (0.3 vs 0.5 m)
    assert np.abs(default.corners - ours.corners).max() > 5e-7
    monkeypatch.undo()
    with pytest.raises(ValueError, match="takes only pixel1, pixel2, got radius"):
        detector_from_config("Pilatus 1M", {"radius": 0.3})
    with pytest.raises(ValueError, match="radius: expected a length"):
        detector_from_config("Pilatus 1M", {"radius": -1})
    with pytest.raises(ValueError, match="explicit positions"):
        get_detector("Xpad S540 flat", options={"pixel1": 1e-4, "pixel2": 1e-4})
    assert detector_from_config("Pilatus 1M", {"pixel1": 1e-4, "pixel2": 1e-4}).pixel1 == 1e-4
