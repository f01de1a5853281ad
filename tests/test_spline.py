"""Fit2D distortion splines (xreduce.spline): file round trip, pixel corners, PONI files, and
the established tool's reading of the same file.

The splines are made here: a smooth displacement field (a few pixels) fitted with scipy's
RectBivariateSpline and written in the Fit2D format. Tolerances: our own round trip is exact
to the 8 significant digits the format keeps (1e-6 relative on the evaluated displacement);
against pyFAI, which holds the spline in float32, pixel positions agree to ~1e-7 relative
(asserted 1e-6).
"""
import numpy as np
import pytest
from scipy.interpolate import RectBivariateSpline

from xreduce.geometry import Geometry
from xreduce.poni import read_poni
from xreduce.spline import DistortionSpline, read_spline, spline_detector, write_spline

ROWS, COLS = 48, 60
PONI = dict(dist=0.05, poni1=0.002, poni2=0.0025, rot1=0.1, rot2=-0.05, rot3=0.2,
            wavelength=1e-10)


def displacement_field(x, y):
    """dx, dy in pixels at (x, y) pixel coordinates: a smooth field of a few pixels."""
    return (1.5 * np.sin(x / 30) * np.cos(y / 40) + 0.01 * x,
            -0.8 * np.cos(x / 25) + 0.5 * np.sin(y / 20))


@pytest.fixture(scope="module")
def spline():
    x, y = np.arange(COLS + 1.0), np.arange(ROWS + 1.0)
    dx, dy = displacement_field(*np.meshgrid(x, y))
    fit_x = RectBivariateSpline(x, y, dx.T, s=0.1)
    fit_y = RectBivariateSpline(x, y, dy.T, s=0.1)
    return DistortionSpline((0.0, 0.0, float(COLS), float(ROWS)), 5.0, (75.0, 50.0),
                            tuple(fit_x.get_knots()), fit_x.get_coeffs(),
                            tuple(fit_y.get_knots()), fit_y.get_coeffs())


@pytest.fixture
def spline_file(tmp_path, spline):
    path = tmp_path / "test.spline"
    write_spline(path, spline)
    return path


def test_round_trip_and_displacement(spline, spline_file):
    """The written file reads back to the same splines (8 significant digits), which
    reproduce the displacement field they were fitted to."""
    back = read_spline(spline_file)
    assert back.valid_region == (0.0, 0.0, COLS, ROWS) and back.shape == (ROWS, COLS)
    assert back.pixel_size_um == (75.0, 50.0) and back.grid_spacing == 5.0
    x, y = np.linspace(0, COLS, 13), np.linspace(0, ROWS, 11)
    for ours, theirs in zip(back.displacement(x, y), spline.displacement(x, y)):
        assert ours.shape == (11, 13)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    expected = displacement_field(*np.meshgrid(x, y))
    for ours, field in zip(back.displacement(x, y), expected):
        np.testing.assert_allclose(ours, field, atol=0.02)   # the fit's smoothing


def test_detector_corners(spline):
    """Corner (i, j) sits at pixel1 * (i + dy), pixel2 * (j + dx) with (dx, dy) at (x=j, y=i);
    corner order (0,0), (1,0), (1,1), (0,1); pixel sizes from the file."""
    det = spline_detector(spline)
    assert det.shape == (ROWS, COLS) and (det.pixel1, det.pixel2) == (50e-6, 75e-6)
    dx, dy = spline.displacement(np.arange(COLS + 1.0), np.arange(ROWS + 1.0))
    for k, (o1, o2) in enumerate(((0, 0), (1, 0), (1, 1), (0, 1))):
        i, j = 7 + o1, 11 + o2
        np.testing.assert_allclose(det.corners[7, 11, k],
                                   [50e-6 * (i + dy[i, j]), 75e-6 * (j + dx[i, j]), 0.0],
                                   rtol=1e-12)
    assert spline_detector(spline, shape=(10, 20)).shape == (10, 20)


def test_poni_with_spline_file(tmp_path, spline_file):
    """A PONI file naming a spline file next to it gives the distorted detector (no warning);
    saved and read again, it is the same; a missing file is kept with a warning."""
    text = ("Detector: Detector\nPixelSize1: 5e-05\nPixelSize2: 7.5e-05\n"
            f"SplineFile: {spline_file.name}\nDistance: 0.1\nPoni1: 0.002\nPoni2: 0.003\n"
            "Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: 1e-10\n")
    (tmp_path / "v1.poni").write_text(text)
    geo = read_poni(tmp_path / "v1.poni")
    assert geo.detector.corners is not None and geo.detector.shape == (ROWS, COLS)
    np.testing.assert_array_equal(geo.detector.corners, spline_detector(spline_file).corners)
    geo.save(tmp_path / "v21.poni")
    again = read_poni(tmp_path / "v21.poni")
    np.testing.assert_array_equal(again.center_array("2th_deg"), geo.center_array("2th_deg"))
    (tmp_path / "missing.poni").write_text(text.replace(spline_file.name, "nowhere.spline"))
    with pytest.warns(UserWarning, match="not found"):
        geo = read_poni(tmp_path / "missing.poni", shape=(ROWS, COLS))
    assert geo.detector.corners is None


@pytest.mark.parametrize("damage, match", [
    (lambda t: t.replace("VALID REGION", "VALID AREA"), "no 'VALID REGION' section"),
    (lambda t: t.replace("X-DISTORTION\n", "X-DISTORTION\n    x"), "X-DISTORTION"),
    (lambda t: t.replace("5.0000000E+00", "5.00000abE+00", 1), r"line \d+: expected numbers"),
])
def test_malformed_files(tmp_path, spline_file, damage, match):
    bad = tmp_path / "bad.spline"
    bad.write_text(damage(spline_file.read_text()))
    with pytest.raises(ValueError, match=match):
        read_spline(bad)


def test_same_pixels_as_pyfai(spline_file):
    """pyFAI reading the same file places the pixel corners, and gives the 2theta of corners
    and centres, as xreduce does, to 1e-6 relative (pyFAI: float32 spline and corners)."""
    pyfai_detectors = pytest.importorskip("pyFAI.detectors")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    theirs = pyfai_detectors.Detector(splinefile=str(spline_file))
    ours = spline_detector(spline_file)
    assert theirs.shape == ours.shape
    corners = theirs.get_pixel_corners()                  # (z, slow, fast) in metres
    np.testing.assert_allclose(corners[..., 1], ours.corners[..., 0], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(corners[..., 2], ours.corners[..., 1], rtol=1e-6, atol=1e-10)
    ai = AzimuthalIntegrator(detector=theirs, **PONI)
    geo = Geometry(**PONI, detector=ours)
    np.testing.assert_allclose(ai.array_from_unit(typ="corner", unit="2th_rad", scale=False)
                               [..., 0], geo.corner_array("2th_rad")[..., 0], rtol=1e-6)
    np.testing.assert_allclose(ai.center_array(unit="2th_rad", scale=False),
                               geo.center_array("2th_rad"), rtol=1e-6)


def test_integration_with_a_spline_agrees_with_pyfai(spline_file):
    """A distorted detector integrates like pyFAI's reading of the same spline file (full
    splitting, 1D): relative difference below 1e-4 on bins holding more than 10 pixels. The
    first and last bins are left out: they hold the pixels that straddle the range limits,
    which pyFAI weights differently from the area rule (by 1.5 % there on an undistorted
    detector too; tests/test_sparse.py checks our coefficients against the area reference)."""
    pyfai_detectors = pytest.importorskip("pyFAI.detectors")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyFAIIntegrator

    from xreduce.integrator import AzimuthalIntegrator

    theirs = PyFAIIntegrator(detector=pyfai_detectors.Detector(splinefile=str(spline_file)),
                             **PONI)
    ours = AzimuthalIntegrator(Geometry(**PONI, detector=spline_detector(spline_file)))
    tth = ours.geometry.center_array("2th_deg")
    image = 100 + 50 * np.cos(tth * 2.0)
    kw = dict(unit="2th_deg", radial_range=(3.5, 8.0), correctSolidAngle=False)
    r_theirs = theirs.integrate1d(image, 40, method=("full", "csr", "cython"), **kw)
    r_ours = ours.integrate1d(image, 40, method=("full", "csr", "cython"), unit="2th_deg",
                              radial_range=(3.5, 8.0), correct_solid_angle=False)
    np.testing.assert_allclose(r_ours.radial, r_theirs.radial, rtol=1e-6)
    full = np.asarray(r_theirs.count) > 10
    full[[0, -1]] = False
    assert full.sum() > 20
    np.testing.assert_allclose(r_ours.intensity[full], np.asarray(r_theirs.intensity)[full],
                               rtol=1e-4)
