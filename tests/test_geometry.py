"""Geometry: per-pixel arrays against an independent NumPy reference and against pyFAI.

Tolerances and why:

* float64 vs the NumPy reference (tests/reference.py, rotation matrices built from textbook
  rotations): ``rtol=1e-10`` plus ``atol=1e-13`` in the quantity's unit for values that cross
  zero (chi, 2theta at the PONI). Both sides compute in float64, so the only differences are
  rounding in a different operation order (~1e-15).
* float32 output: ``rtol=1e-6`` (float32 has a 6e-8 relative step; the kernel computes in float64
  and rounds once at the end), ``atol=1e-6`` for chi near zero.
* pyFAI computes pixel positions in float32 (about 1e-8 relative error for 172 um pixels). To
  compare the float64 trigonometry at 1e-10 we use pixel sizes and PONI offsets that are exact
  binary fractions (2**-13 m, 2**-12 m, multiples of 2**-14 m), so that pyFAI's float32
  positions are exact, and compare ``array_from_unit`` (centres, float64). pyFAI's corner arrays
  and its polarization are float32: compared at ``rtol=1e-6``.
"""
import math
import pickle

import numpy as np
import pytest
import reference

from xreduce import Detector, Geometry, get_detector
from xreduce.geometry import ParameterTypeError, rotation_matrix

SHAPE = (64, 48)
PIXEL = 172e-6
DET = Detector(PIXEL, PIXEL, SHAPE)


def random_params(rng, large=True):
    """PONI parameters with tilts up to 0.5 rad and the PONI anywhere near the detector."""
    tilt = 0.5 if large else 0.05
    return dict(
        dist=float(rng.uniform(0.03, 0.5)),
        poni1=float(rng.uniform(-0.01, 0.02)),
        poni2=float(rng.uniform(-0.01, 0.02)),
        rot1=float(rng.uniform(-tilt, tilt)),
        rot2=float(rng.uniform(-tilt, tilt)),
        rot3=float(rng.uniform(-math.pi, math.pi)),
        wavelength=float(rng.uniform(0.2e-10, 2e-10)),
    )


def ref_args(p, pixel1=PIXEL, pixel2=PIXEL, shape=SHAPE):
    return (p["dist"], p["poni1"], p["poni2"], p["rot1"], p["rot2"], p["rot3"], p["wavelength"],
            pixel1, pixel2, shape)


def test_formula_in_reference_matches_reference_md():
    """The reference's rotation matrices reproduce the t1, t2, t3 formulas of REFERENCE.md."""
    rng = np.random.default_rng(7)
    p = random_params(rng)
    t1, t2, t3 = reference.geometry_lab_vectors(p["dist"], p["poni1"], p["poni2"], p["rot1"],
                                                p["rot2"], p["rot3"], PIXEL, PIXEL, SHAPE)
    c1, c2, c3 = (math.cos(p[k]) for k in ("rot1", "rot2", "rot3"))
    s1, s2, s3 = (math.sin(p[k]) for k in ("rot1", "rot2", "rot3"))
    i, j = np.indices(SHAPE)
    p1 = (i + 0.5) * PIXEL - p["poni1"]
    p2 = (j + 0.5) * PIXEL - p["poni2"]
    L = p["dist"]
    np.testing.assert_allclose(t1, p1 * c2 * c3 + p2 * (c3 * s1 * s2 - c1 * s3) - L * (c1 * c3 * s2 + s1 * s3), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t2, p1 * c2 * s3 + p2 * (c1 * c3 + s1 * s2 * s3) - L * (c1 * s2 * s3 - c3 * s1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t3, p1 * s2 - p2 * c2 * s1 + L * c1 * c2, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_centres_against_reference(seed):
    rng = np.random.default_rng(seed)
    p = random_params(rng, large=seed > 0)
    geo = Geometry(**p, detector=DET)
    ref = reference.geometry_arrays(*ref_args(p))
    close = dict(rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(geo.twotheta_array(), ref["2th"], **close)
    np.testing.assert_allclose(geo.center_array("2th_deg"), np.degrees(ref["2th"]), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(geo.chi_array(), ref["chi"], **close)
    np.testing.assert_allclose(geo.center_array("chi_deg"), np.degrees(ref["chi"]), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(geo.q_array(), ref["q"], **close)
    np.testing.assert_allclose(geo.q_array("q_A^-1"), ref["q"] / 10, **close)
    np.testing.assert_allclose(geo.r_array(), ref["r"] * 1e3, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(geo.center_array("r_m"), ref["r"], **close)
    np.testing.assert_allclose(geo.dstar2_array(), ref["d*2"] / 100, rtol=1e-10, atol=1e-15)
    assert np.all(geo.chi_array() > -math.pi) and np.all(geo.chi_array() <= math.pi)


@pytest.mark.parametrize("seed", range(3))
def test_float32_output(seed):
    rng = np.random.default_rng(100 + seed)
    p = random_params(rng)
    geo = Geometry(**p, detector=DET)
    ref = reference.geometry_arrays(*ref_args(p))
    for unit, expected in (("2th_rad", ref["2th"]), ("q_nm^-1", ref["q"]), ("chi_rad", ref["chi"])):
        out = geo.center_array(unit, dtype=np.float32)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    corners = geo.corner_array("2th_deg", dtype=np.float32)
    assert corners.dtype == np.float32
    ref_c = reference.geometry_corners(*ref_args(p), quantity="2th")
    np.testing.assert_allclose(corners[..., 0], np.degrees(ref_c[..., 0]), rtol=1e-6, atol=1e-6)
    sa = geo.solid_angle_array(dtype=np.float32)
    np.testing.assert_allclose(sa, reference.geometry_solid_angle(p["dist"], p["poni1"], p["poni2"], PIXEL, PIXEL, SHAPE), rtol=1e-6)


@pytest.mark.parametrize("unit, quantity, scale", [
    ("2th_deg", "2th", 180 / math.pi), ("q_nm^-1", "q", 1.0), ("q_A^-1", "q", 0.1),
    ("r_mm", "r", 1e3), ("d*2_A^-2", "d*2", 0.01),
])
def test_corners_against_reference(unit, quantity, scale):
    rng = np.random.default_rng(11)
    p = random_params(rng)
    geo = Geometry(**p, detector=DET)
    corners = geo.corner_array(unit)
    assert corners.shape == SHAPE + (4, 2)
    ref = reference.geometry_corners(*ref_args(p), quantity=quantity)
    np.testing.assert_allclose(corners[..., 0], ref[..., 0] * scale, rtol=1e-10, atol=1e-13 * scale)
    np.testing.assert_allclose(corners[..., 1], ref[..., 1], rtol=1e-10, atol=1e-13)


def test_corners_surround_centres():
    """Each pixel centre's 2theta lies between its corners' minimum and maximum."""
    geo = Geometry(0.1, 0.005, 0.004, 0.2, -0.1, 0.3, 1e-10, DET)
    corners = geo.corner_array("2th_rad")[..., 0]
    centre = geo.twotheta_array()
    assert np.all(corners.min(axis=-1) <= centre) and np.all(centre <= corners.max(axis=-1))


@pytest.mark.parametrize("seed", range(3))
def test_solid_angle_polarization_incidence(seed):
    rng = np.random.default_rng(200 + seed)
    p = random_params(rng)
    geo = Geometry(**p, detector=DET)
    sa = reference.geometry_solid_angle(p["dist"], p["poni1"], p["poni2"], PIXEL, PIXEL, SHAPE)
    np.testing.assert_allclose(geo.solid_angle_array(), sa, rtol=1e-12)
    np.testing.assert_allclose(geo.solid_angle_array(absolute=True), sa * PIXEL ** 2 / p["dist"] ** 2, rtol=1e-12)
    np.testing.assert_allclose(geo.cos_incidence_array(), np.cbrt(sa), rtol=1e-12)
    ref = reference.geometry_arrays(*ref_args(p))
    factor, offset = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))
    pol = reference.geometry_polarization(ref["2th"], ref["chi"], factor, offset)
    np.testing.assert_allclose(geo.polarization_array(factor, offset), pol, rtol=1e-12)


def test_analytic_centred_untilted():
    """PONI at the corner between four pixels, no tilt: 2theta = atan(r / dist) exactly."""
    det = Detector(1e-4, 1e-4, (4, 4))
    geo = Geometry(0.1, 2e-4, 2e-4, 0.0, 0.0, 0.0, 1e-10, det)
    r = math.hypot(0.5e-4, 0.5e-4)
    assert geo.twotheta_array()[1, 1] == pytest.approx(math.atan(r / 0.1), rel=1e-14)
    # chi = atan2(axis 1, axis 2): pixel (2, 1) is up (+axis 1) and left (-axis 2)
    assert geo.chi_array()[2, 1] == pytest.approx(3 * math.pi / 4, rel=1e-14)
    assert geo.solid_angle_array()[0, 0] == pytest.approx((0.1 / math.sqrt(0.01 + 2 * 1.5e-4 ** 2)) ** 3)
    q = geo.q_array()[1, 1]
    assert q == pytest.approx(4 * math.pi / 0.1 * math.sin(math.atan(r / 0.1) / 2), rel=1e-13)  # nm^-1, lambda = 0.1 nm


def test_unpolarized_and_polarized_limits():
    geo = Geometry(0.1, 0.005, 0.004, 0.1, 0.2, 0.0, 1e-10, DET)
    c2 = np.cos(geo.twotheta_array()) ** 2
    np.testing.assert_allclose(geo.polarization_array(0.0), 0.5 * (1 + c2), rtol=1e-14)
    # fully horizontally polarized: along chi = 0 (horizontal plane) P = cos^2(2theta)
    chi = geo.chi_array()
    expected = 0.5 * (1 + c2 - np.cos(2 * chi) * (1 - c2))
    np.testing.assert_allclose(geo.polarization_array(1.0), expected, rtol=1e-14)


def test_arrays_cached_and_readonly():
    geo = Geometry(0.1, 0.005, 0.004, 0.1, 0.2, 0.3, 1e-10, DET)
    a = geo.twotheta_array()
    assert geo.twotheta_array() is a
    assert geo.center_array("2th_rad") is a
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    assert geo.corner_array("q_nm^-1") is geo.corner_array("q_nm^-1")
    assert not geo.corner_array("q_nm^-1").flags.writeable
    assert geo.solid_angle_array() is geo.solid_angle_array()


def test_immutable_with_and_pickle():
    geo = Geometry(0.1, 0.005, 0.004, 0.1, 0.2, 0.3, 1e-10, DET)
    tth = geo.twotheta_array()
    with pytest.raises(AttributeError):
        geo.dist = 0.2
    moved = geo.with_(dist=0.2)
    assert moved.dist == 0.2 and geo.dist == 0.1
    assert moved.rot3 == geo.rot3 and moved.detector is geo.detector
    assert not np.array_equal(moved.twotheta_array(), tth)
    copy = pickle.loads(pickle.dumps(geo))
    assert copy == geo
    np.testing.assert_array_equal(copy.twotheta_array(), tth)
    with pytest.raises(ValueError, match="unknown parameter"):
        geo.with_(distance=0.2)
    with pytest.raises(ValueError, match="dist"):
        geo.with_(dist=-1.0)


@pytest.mark.parametrize("orientation", [1, 2, 4])
def test_orientation_flips(orientation):
    """Orientation 1 flips both axes, 2 the slow axis, 4 the fast axis (EXIF, as pyFAI)."""
    p = dict(dist=0.1, poni1=0.004, poni2=0.003, rot1=0.2, rot2=-0.1, rot3=0.3, wavelength=1e-10)
    native = Geometry(**p, detector=DET).twotheta_array()
    flipped = Geometry(**p, detector=Detector(PIXEL, PIXEL, SHAPE, orientation=orientation))
    axes = {1: (0, 1), 2: (0,), 4: (1,)}[orientation]
    # pixel (i, j) of the flipped image sits where native pixel (rows-1-i, j) (etc.) sits
    np.testing.assert_allclose(flipped.twotheta_array(), np.flip(native, axis=axes), rtol=1e-13)


def test_explicit_corners_match_flat_detector():
    """A detector given by explicit corners of a flat grid gives the flat detector's arrays."""
    rows, cols = SHAPE
    e1 = np.arange(rows + 1) * PIXEL
    e2 = np.arange(cols + 1) * PIXEL
    corners = np.zeros(SHAPE + (4, 3))
    for k, (o1, o2) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
        corners[:, :, k, 0] = e1[o1:rows + o1, None]
        corners[:, :, k, 1] = e2[None, o2:cols + o2]
    explicit = Detector(PIXEL, PIXEL, SHAPE, corners=corners)
    p = dict(dist=0.1, poni1=0.004, poni2=0.003, rot1=0.2, rot2=-0.1, rot3=0.3, wavelength=1e-10)
    a, b = Geometry(**p, detector=explicit), Geometry(**p, detector=DET)
    for unit in ("2th_deg", "q_nm^-1", "chi_rad"):
        np.testing.assert_allclose(a.center_array(unit), b.center_array(unit), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.corner_array("r_mm"), b.corner_array("r_mm"), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.solid_angle_array(), b.solid_angle_array(), rtol=1e-12)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
@pytest.mark.parametrize("unit", ["2th_deg", "q_A^-1", "r_mm", "d*2_A^-2"])
def test_radial_bounds_are_the_corner_extremes(orientation, unit):
    """Geometry.radial_bounds (computed from the corner grid, without the corner array) equals
    the min and max over each pixel's 4 corners of corner_array, bit for bit: both evaluate the
    same row kernel at the same points. Cached and read-only."""
    rng = np.random.default_rng(orientation)
    geo = Geometry(**random_params(rng), detector=Detector(PIXEL, PIXEL, SHAPE,
                                                           orientation=orientation))
    radial = np.array(geo.corner_array(unit)[..., 0])
    bounds = geo.radial_bounds(unit)
    assert bounds.shape == SHAPE + (2,) and bounds.dtype == np.float64
    np.testing.assert_array_equal(bounds[..., 0], radial.min(axis=-1))
    np.testing.assert_array_equal(bounds[..., 1], radial.max(axis=-1))
    assert geo.radial_bounds(unit) is bounds and not bounds.flags.writeable
    with pytest.raises(ValueError, match="radial_bounds needs a radial unit"):
        geo.radial_bounds("chi_deg")


def test_radial_bounds_of_explicit_corners():
    """For a detector given by explicit (non-flat) corners the bounds come from its corner
    array."""
    rows, cols = 6, 5
    i, j = np.meshgrid(np.arange(rows + 1) * 1e-4, np.arange(cols + 1) * 1e-4, indexing="ij")
    corners = np.zeros((rows, cols, 4, 3))
    for k, (o1, o2) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
        corners[:, :, k, 0] = i[o1:rows + o1, o2:cols + o2]
        corners[:, :, k, 1] = j[o1:rows + o1, o2:cols + o2]
        corners[:, :, k, 2] = 1e-3 * i[o1:rows + o1, o2:cols + o2]   # not flat
    geo = Geometry(0.1, 2e-4, 1e-4, 0.3, 0.1, -0.2, 1e-10,
                   Detector(1e-4, 1e-4, (rows, cols), corners=corners))
    radial = np.array(geo.corner_array("2th_deg")[..., 0])
    expected = np.stack([radial.min(axis=-1), radial.max(axis=-1)], axis=-1)
    np.testing.assert_array_equal(geo.radial_bounds("2th_deg"), expected)


def test_explicit_corners_out_of_plane():
    """Moving every corner by h along the normal is the same as a distance dist + h."""
    rows, cols = 5, 4
    det = Detector(1e-4, 1e-4, (rows, cols))
    i, j = np.meshgrid(np.arange(rows + 1) * 1e-4, np.arange(cols + 1) * 1e-4, indexing="ij")
    corners = np.zeros((rows, cols, 4, 3))
    for k, (o1, o2) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
        corners[:, :, k, 0] = i[o1:rows + o1, o2:cols + o2]
        corners[:, :, k, 1] = j[o1:rows + o1, o2:cols + o2]
        corners[:, :, k, 2] = 0.01
    raised = Detector(1e-4, 1e-4, (rows, cols), corners=corners)
    p = dict(poni1=2e-4, poni2=1e-4, rot1=0.3, rot2=0.1, rot3=-0.2, wavelength=1e-10)
    np.testing.assert_allclose(Geometry(dist=0.1, **p, detector=raised).twotheta_array(),
                               Geometry(dist=0.11, **p, detector=det).twotheta_array(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

GOOD = dict(dist=0.1, poni1=0.0, poni2=0.0, rot1=0.0, rot2=0.0, rot3=0.0, wavelength=1e-10)


@pytest.mark.parametrize("name, value, error, match", [
    ("dist", -0.1, ValueError, "dist: expected a positive"),
    ("dist", 0.0, ValueError, "dist: expected a positive"),
    ("dist", float("nan"), ValueError, "dist: expected a finite"),
    ("poni1", float("inf"), ValueError, "poni1: expected a finite"),
    ("rot2", float("nan"), ValueError, "rot2: expected a finite"),
    ("rot1", "0.1", ParameterTypeError, "rot1: expected a real number, got str"),
    ("poni2", None, ParameterTypeError, "poni2: expected a real number"),
    ("rot3", True, ParameterTypeError, "rot3"),
    ("wavelength", -1e-10, ValueError, "wavelength: expected a positive"),
    ("wavelength", 1.0, ValueError, "wavelength: expected metres"),
    ("wavelength", float("nan"), ValueError, "wavelength: expected a finite"),
    ("detector", 42, ParameterTypeError, "detector: expected a Detector"),
])
def test_bad_parameters(name, value, error, match):
    args = dict(GOOD, detector=DET)
    args[name] = value
    with pytest.raises(error, match=match):
        Geometry(**args)


def test_wrong_types_are_value_errors_too():
    with pytest.raises(ValueError, match="dist"):
        Geometry(**dict(GOOD, dist=[0.1]), detector=DET)


def test_bad_array_requests():
    geo = Geometry(**GOOD, detector=DET)
    with pytest.raises(ValueError, match="unit"):
        geo.center_array("q_pm")
    with pytest.raises(ValueError, match="dtype: expected float32 or float64, got int32"):
        geo.twotheta_array(dtype=np.int32)
    with pytest.raises(ValueError, match="corner_array needs a radial unit"):
        geo.corner_array("chi_deg")
    with pytest.raises(ValueError, match="factor"):
        geo.polarization_array(1.5)
    with pytest.raises(ValueError, match="unit: expected q_nm"):
        geo.q_array("2th_deg")
    no_wavelength = Geometry(**dict(GOOD, wavelength=None), detector=DET)
    with pytest.raises(ValueError, match="needs a wavelength"):
        no_wavelength.q_array()
    assert no_wavelength.twotheta_array().shape == SHAPE    # 2theta needs none


def test_detector_by_name():
    geo = Geometry(**GOOD, detector="Pilatus 1M")
    assert geo.detector == get_detector("Pilatus 1M")
    with pytest.raises(KeyError, match="unknown detector"):
        Geometry(**GOOD, detector="Pilatus 1N")


# ---------------------------------------------------------------------------------------------
# pyFAI
# ---------------------------------------------------------------------------------------------

def pyfai_pair(p, shape=SHAPE, pixel1=2.0 ** -13, pixel2=2.0 ** -12, orientation=3):
    detectors = pytest.importorskip("pyFAI.detectors")
    azimuthal = pytest.importorskip("pyFAI.integrator.azimuthal")
    theirs = detectors.Detector(pixel1, pixel2, max_shape=shape, orientation=orientation)
    ai = azimuthal.AzimuthalIntegrator(detector=theirs, **p)
    ours = Geometry(**p, detector=Detector(pixel1, pixel2, shape, orientation=orientation))
    return ours, ai


def exact_params(rng):
    """Random geometry whose PONI offsets are multiples of 2**-14 m (exact in float32)."""
    p = random_params(rng)
    p["poni1"] = int(rng.integers(-100, 300)) * 2.0 ** -14
    p["poni2"] = int(rng.integers(-100, 300)) * 2.0 ** -14
    return p


@pytest.mark.parametrize("seed, orientation", [(0, 3), (1, 3), (2, 3), (3, 1), (4, 2), (5, 4)])
def test_centres_against_pyfai(seed, orientation):
    rng = np.random.default_rng(300 + seed)
    geo, ai = pyfai_pair(exact_params(rng), orientation=orientation)
    for unit in ("2th_rad", "2th_deg", "q_nm^-1", "q_A^-1", "r_mm", "d*2_A^-2", "chi_rad", "chi_deg"):
        theirs = ai.array_from_unit(typ="center", unit=unit)
        assert theirs.dtype == np.float64
        np.testing.assert_allclose(geo.center_array(unit), theirs, rtol=1e-10, atol=1e-12, err_msg=unit)
    np.testing.assert_allclose(geo.solid_angle_array(), ai.solidAngleArray(), rtol=1e-10)
    np.testing.assert_allclose(geo.solid_angle_array(absolute=True), ai.solidAngleArray(absolute=True), rtol=1e-10)
    if orientation == 3:
        i, j = np.indices(SHAPE, dtype=np.float64)
        np.testing.assert_allclose(geo.cos_incidence_array(), ai.cos_incidence(i, j), rtol=1e-10)


@pytest.mark.parametrize("seed", range(2))
def test_corners_against_pyfai(seed):
    """float64 corners vs pyFAI's float64 point functions at the corners (index - 0.5);
    then pyFAI's own corner_array (float32) at 1e-6."""
    rng = np.random.default_rng(400 + seed)
    geo, ai = pyfai_pair(exact_params(rng))
    i, j = np.indices((SHAPE[0] + 1, SHAPE[1] + 1), dtype=np.float64) - 0.5
    tth, chi = ai.tth(i, j), ai.chi(i, j)
    mine = geo.corner_array("2th_rad")
    for k, (o1, o2) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
        sl = (slice(o1, SHAPE[0] + o1), slice(o2, SHAPE[1] + o2))
        np.testing.assert_allclose(mine[:, :, k, 0], tth[sl], rtol=1e-10)
        np.testing.assert_allclose(mine[:, :, k, 1], chi[sl], rtol=1e-10, atol=1e-12)
    for unit in ("2th_deg", "q_nm^-1", "r_mm"):
        theirs = ai.array_from_unit(typ="corner", unit=unit)
        ours = geo.corner_array(unit)
        np.testing.assert_allclose(ours[..., 0], theirs[..., 0], rtol=1e-6, err_msg=unit)
        np.testing.assert_allclose(ours[..., 1], theirs[..., 1], rtol=1e-6, atol=1e-6, err_msg=unit)


def test_polarization_against_pyfai():
    """pyFAI returns its polarization array in float32: compared at 1e-6."""
    rng = np.random.default_rng(500)
    geo, ai = pyfai_pair(exact_params(rng))
    for factor, offset in ((0.99, 0.0), (0.5, 0.7), (-0.3, -1.0)):
        np.testing.assert_allclose(geo.polarization_array(factor, offset),
                                   ai.polarization(factor=factor, axis_offset=offset), rtol=1e-6)


def test_general_pixels_against_pyfai():
    """172 um pixels: pyFAI's float32 pixel positions limit the agreement to ~1e-7."""
    rng = np.random.default_rng(600)
    p = random_params(rng)
    geo, ai = pyfai_pair(p, pixel1=PIXEL, pixel2=PIXEL)
    np.testing.assert_allclose(geo.twotheta_array(), ai.array_from_unit(unit="2th_rad"), rtol=1e-6)
    np.testing.assert_allclose(geo.chi_array(), ai.array_from_unit(unit="chi_rad"), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Fit2D and MIDAS
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_fit2d_round_trip(seed):
    rng = np.random.default_rng(700 + seed)
    f2d = dict(directDist_mm=float(rng.uniform(50, 500)), centerX_px=float(rng.uniform(-50, 100)),
               centerY_px=float(rng.uniform(-50, 100)), tilt_deg=float(rng.uniform(0, 30)),
               tiltPlanRotation_deg=float(rng.uniform(-180, 180)))
    geo = Geometry.from_fit2d(**f2d, pixelX_um=100.0, pixelY_um=150.0, wavelength_A=0.7, shape=SHAPE)
    assert geo.detector.pixel1 == pytest.approx(150e-6) and geo.detector.pixel2 == pytest.approx(100e-6)
    back = geo.to_fit2d()
    assert back["directDist"] == pytest.approx(f2d["directDist_mm"], rel=1e-12)
    assert back["centerX"] == pytest.approx(f2d["centerX_px"], rel=1e-9, abs=1e-9)
    assert back["centerY"] == pytest.approx(f2d["centerY_px"], rel=1e-9, abs=1e-9)
    assert back["tilt"] == pytest.approx(f2d["tilt_deg"], rel=1e-9)
    assert back["tiltPlanRotation"] == pytest.approx(f2d["tiltPlanRotation_deg"], rel=1e-9)
    assert back["wavelength"] == pytest.approx(0.7)
    again = Geometry.from_fit2d(back["directDist"], back["centerX"], back["centerY"], back["tilt"],
                                back["tiltPlanRotation"], detector=geo.detector, wavelength_A=0.7)
    for key, value in geo.parameters().items():
        assert getattr(again, key) == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_fit2d_meaning():
    """The beam (t1 = t2 = 0) hits the detector at the Fit2D centre, at directDist from the sample."""
    geo = Geometry.from_fit2d(200.0, 30.5, 20.25, 12.0, 35.0, 100.0, 100.0, shape=SHAPE)
    a = rotation_matrix(geo.rot1, geo.rot2, geo.rot3)
    p1 = 20.25 * 1e-4 - geo.poni1
    p2 = 30.5 * 1e-4 - geo.poni2
    t = a @ np.array([p1, p2, geo.dist])
    assert abs(t[0]) < 1e-15 and abs(t[1]) < 1e-15
    assert t[2] == pytest.approx(0.2, rel=1e-12)
    assert math.degrees(math.acos(a[2, 2])) == pytest.approx(12.0)       # tilt: normal vs beam


@pytest.mark.parametrize("seed", range(4))
def test_fit2d_against_pyfai(seed):
    fit2d = pytest.importorskip("pyFAI.geometry.fit2d")
    detectors = pytest.importorskip("pyFAI.detectors")
    rng = np.random.default_rng(800 + seed)
    f2d = dict(directDist=float(rng.uniform(50, 500)), centerX=float(rng.uniform(0, 1000)),
               centerY=float(rng.uniform(0, 1000)), tilt=float(rng.uniform(0.1, 30)),
               tiltPlanRotation=float(rng.uniform(-179, 179)), pixelX=172.0, pixelY=172.0)
    theirs = fit2d.convert_from_Fit2d(dict(f2d, detector=detectors.detector_factory("Pilatus1M")))
    ours = Geometry.from_fit2d(f2d["directDist"], f2d["centerX"], f2d["centerY"], f2d["tilt"],
                               f2d["tiltPlanRotation"], detector="Pilatus 1M")
    for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3"):
        assert getattr(ours, key) == pytest.approx(getattr(theirs, key), rel=1e-9, abs=1e-12), key
    back = fit2d.convert_to_Fit2d(theirs)
    mine = ours.to_fit2d()
    for key in ("directDist", "centerX", "centerY", "tilt", "tiltPlanRotation", "pixelX", "pixelY"):
        assert mine[key] == pytest.approx(back[key], rel=1e-9, abs=1e-9), key


def test_fit2d_bad_input():
    facing_away = Geometry(0.1, 0.0, 0.0, 2.0, 0.0, 0.0, 1e-10, DET)
    with pytest.raises(ValueError, match="does not face the beam"):
        facing_away.to_fit2d()
    assert "Fit2D" not in str(facing_away) and "PONI" in str(facing_away)
    with pytest.raises(ValueError, match="directDist_mm"):
        Geometry.from_fit2d(-100, 10, 10, shape=SHAPE, pixelX_um=100, pixelY_um=100)
    with pytest.raises(ValueError, match="tilt_deg"):
        Geometry.from_fit2d(100, 10, 10, 95.0, shape=SHAPE, pixelX_um=100, pixelY_um=100)
    with pytest.raises(ValueError, match="detector"):
        Geometry.from_fit2d(100, 10, 10)
    with pytest.raises(ValueError, match="centerX_px"):
        Geometry.from_fit2d(100, float("nan"), 10, detector="Pilatus 1M")


def midas_lab_position(lsd_um, bc, px_um, tilts_deg, row, col):
    """Lab position (um) of pixel (row, col) on the MIDAS side: beam +X, detector at X = Lsd,
    tilted by Rz(tz) Ry(ty) Rx(tx) about the beam centre; column = Y, row = Z."""
    tx, ty, tz = np.radians(tilts_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
    detector_point = np.array([0.0, (col - bc[0]) * px_um, (row - bc[1]) * px_um])
    return np.array([lsd_um, 0.0, 0.0]) + rz @ ry @ rx @ detector_point


@pytest.mark.parametrize("seed", range(5))
def test_midas_two_theta(seed):
    rng = np.random.default_rng(900 + seed)
    lsd, bc, px = float(rng.uniform(5e4, 1e6)), (float(rng.uniform(0, 48)), float(rng.uniform(0, 64))), 200.0
    tilts = rng.uniform(-5, 5, 3)
    geo = Geometry.from_midas(lsd, bc, px, *tilts, wavelength_A=0.2, shape=SHAPE)
    tth = geo.twotheta_array()
    chi = geo.chi_array()
    for row, col in ((0, 0), (63, 47), (int(rng.integers(64)), int(rng.integers(48)))):
        x, y, z = midas_lab_position(lsd, bc, px, tilts, row, col)
        expected = math.atan2(math.hypot(y, z), x)
        assert tth[row, col] == pytest.approx(expected, rel=1e-10, abs=1e-13)
        # chi = atan2(t1, t2) with axis 1 = Z, axis 2 = Y
        assert chi[row, col] == pytest.approx(math.atan2(z, y), rel=1e-10, abs=1e-12)


def test_midas_untilted():
    geo = Geometry.from_midas(1e6, (10.0, 20.0), 100.0, shape=SHAPE)
    assert (geo.dist, geo.rot1, geo.rot2, geo.rot3) == (pytest.approx(1.0), 0.0, 0.0, 0.0)
    assert geo.poni1 == pytest.approx(20.5e-4) and geo.poni2 == pytest.approx(10.5e-4)
    with pytest.raises(ValueError, match="Lsd_um"):
        Geometry.from_midas(-1.0, (10.0, 20.0), 100.0, shape=SHAPE)
    with pytest.raises(ValueError, match="BC_px"):
        Geometry.from_midas(1e6, (10.0,), 100.0, shape=SHAPE)
    with pytest.raises(ValueError, match="px_um"):
        Geometry.from_midas(1e6, (10.0, 20.0), 0.0, shape=SHAPE)


def test_chi_is_pi_not_minus_pi_on_the_cut():
    """Pixels on the negative axis-2 side with t1 = 0 have chi = +pi (the range is (-pi, pi])."""
    px = 2.0 ** -13                      # binary-exact: row 1 centres are exactly on the axis
    det = Detector(px, px, (3, 8))
    geo = Geometry(0.1, 1.5 * px, 7.5 * px, 0.0, 0.0, 0.0, 1e-10, det)
    chi = geo.chi_array()
    assert np.all(chi[1, :7] == math.pi)
    assert np.all(geo.corner_array("2th_deg")[..., 1] > -math.pi)


def test_simd_and_scalar_paths_identical():
    """The AVX2 row kernel does the scalar kernel's operations in the same order: same bits."""
    from xreduce.ext import geometry_kernels

    p = dict(dist=0.05, poni1=0.004, poni2=0.003, rot1=0.4, rot2=-0.3, rot3=2.5, wavelength=1e-10)
    det = Detector(PIXEL, PIXEL, (37, 45))           # 45 columns: a tail of 1 after 11 x 4
    units = ("2th_deg", "q_nm^-1", "r_mm", "d*2_A^-2", "chi_rad")
    previous = geometry_kernels.set_simd(False)
    try:
        scalar = Geometry(**p, detector=det)
        expected = {u: scalar.center_array(u).copy() for u in units}
        corners = scalar.corner_array("q_A^-1").copy()
    finally:
        geometry_kernels.set_simd(previous)
    vector = Geometry(**p, detector=det)
    for unit in units:
        np.testing.assert_array_equal(vector.center_array(unit), expected[unit], err_msg=unit)
    np.testing.assert_array_equal(vector.corner_array("q_A^-1"), corners)


@pytest.mark.parametrize("simd", [True, False])
def test_kernel_atan2_accuracy(simd):
    """With no rotation the kernel's chi is atan2(d1, d2) of its inputs: compare our branch-free
    atan2 with NumPy's over signs, zeros and magnitudes from 1e-12 to 1e3: within 4 ulp.
    (-0.0 is left out: the affine map to t does not keep the sign of a zero.)"""
    from xreduce.ext import geometry_kernels

    rng = np.random.default_rng(42)
    values = np.concatenate([
        [0.0, 1.0, -1.0, 1e-12, -1e-12],
        rng.uniform(-1, 1, 60),
        np.sign(rng.uniform(-1, 1, 60)) * 10.0 ** rng.uniform(-12, 3, 60),
    ])
    d = np.ascontiguousarray(values)
    chi = np.empty((d.size, d.size))
    tth = np.empty((d.size, d.size))
    previous = geometry_kernels.set_simd(simd)
    try:
        geometry_kernels.grid_centres(0.1, 0.0, 0.0, 0.0, d, d, 0, 1.0, 0.0, chi[:1, :1], chi, False, True)
        geometry_kernels.grid_centres(0.1, 0.0, 0.0, 0.0, d, d, 0, 1.0, 0.0, tth, tth[:1, :1], True, False)
    finally:
        geometry_kernels.set_simd(previous)
    expected = np.arctan2(d[:, None], d[None, :])
    expected[expected == -math.pi] = math.pi             # our range is (-pi, pi]
    ulp = np.abs(chi - expected) / np.spacing(np.abs(expected) + 1e-300)
    assert np.max(ulp[expected != 0]) <= 4
    assert np.all(chi[expected == 0] == 0)
    expected_tth = np.arctan2(np.sqrt(d[:, None] ** 2 + d[None, :] ** 2), 0.1)
    np.testing.assert_allclose(tth, expected_tth, rtol=1e-15, atol=0)


@pytest.mark.parametrize("simd", [True, False])
def test_backscattering_geometry(simd):
    """A detector turned by ~90 degrees sees 2theta from ~40 to ~140 degrees: q and d*^2 use
    the other half-angle branch above 90 degrees; both must match the reference."""
    from xreduce.ext import geometry_kernels

    p = dict(dist=0.01, poni1=0.004, poni2=0.003, rot1=1.5, rot2=0.3, rot3=0.2, wavelength=1e-10)
    previous = geometry_kernels.set_simd(simd)
    try:
        geo = Geometry(**p, detector=DET)
        tth, q, dstar2 = geo.twotheta_array(), geo.q_array(), geo.dstar2_array()
        corners = geo.corner_array("q_nm^-1")
    finally:
        geometry_kernels.set_simd(previous)
    ref = reference.geometry_arrays(*ref_args(p))
    assert ref["2th"].min() < math.pi / 2 < ref["2th"].max()
    np.testing.assert_allclose(tth, ref["2th"], rtol=1e-10)
    np.testing.assert_allclose(q, ref["q"], rtol=1e-10)
    np.testing.assert_allclose(dstar2, ref["d*2"] / 100, rtol=1e-10)
    ref_c = reference.geometry_corners(*ref_args(p), quantity="q")
    np.testing.assert_allclose(corners, ref_c, rtol=1e-10, atol=1e-13)


def test_delta_array_against_pyfai():
    """Largest corner deviation from the centre: pyFAI's delta_array (radial) and deltaChi
    (chi, the short way round), to pyFAI's float32 corner precision."""
    pytest.importorskip("pyFAI")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    from xreduce.geometry import Geometry

    theirs = AzimuthalIntegrator(dist=0.05, poni1=0.01, poni2=0.012, rot1=0.03, rot2=-0.02,
                                 detector="Pilatus100k", wavelength=1e-10)
    ours = Geometry.from_pyfai(theirs)
    np.testing.assert_allclose(ours.delta_array("2th_rad"),
                               theirs.delta_array(unit="2th_rad", scale=False), atol=2e-7)
    np.testing.assert_allclose(ours.delta_array("chi_rad"), theirs.deltaChi(), atol=2e-6)
    assert ours.delta_array("chi_rad").max() > 1.0          # pixels around the beam centre
