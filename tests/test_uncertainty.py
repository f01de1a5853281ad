"""Uncertainty propagation: predicted sem against the spread of 300 Poisson realisations.

All 300 realisations go through the integrator as ONE stack call. Pixel splitting correlates
neighbouring bins, but each bin's variance is still sum c^2 v, so the comparison is per bin:
the mean over bins of (empirical std / predicted sem) must be 1 within 5 %. With 300
realisations the relative standard error of one bin's empirical std is 1/sqrt(2*299) = 4 %,
and averaging over >= 30 bins brings it below 1 %, so 5 % catches any real error (a missing
c^2, a wrong normalisation) while never failing by chance.
"""
import numpy as np
import pytest


import reference

NREAL = 300


@pytest.fixture(scope="module")
def geometry():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    return Geometry(0.05, 60 * 172e-6, 30 * 172e-6, 0.05, -0.03, 0.02, 1e-10,
                    Detector(172e-6, 172e-6, (100, 80)))


@pytest.fixture(scope="module")
def expected(geometry):
    """A known image (counts): smooth in 2theta and chi, 50 to 250 counts per pixel."""
    tth = np.asarray(geometry.twotheta_array())
    chi = np.asarray(geometry.chi_array())
    return 150 + 80 * np.cos(12 * tth) + 20 * np.sin(chi)


@pytest.fixture(scope="module")
def stack(expected):
    rng = np.random.default_rng(2024)
    return rng.poisson(expected, (NREAL,) + expected.shape).astype(np.uint32)


@pytest.mark.parametrize("method", [("no", "csr", "cython"), ("bbox", "csr", "cython"),
                                    ("pseudo", "csr", "cython"), ("full", "csr", "cython"),
                                    ("bbox", "histogram", "cython")])
@pytest.mark.parametrize("two_d", [False, True])
def test_poisson_sem_matches_spread(geometry, stack, method, two_d):
    """Empirical std over realisations / mean predicted sem = 1 within 5 % on average, and
    no single bin off by more than 35 % (bins with >= 5 pixels)."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    kw = dict(unit="2th_deg", method=method, error_model="poisson", polarization_factor=0.9)
    res = ai.integrate2d(stack, 16, 12, **kw) if two_d else ai.integrate1d(stack, 40, **kw)
    assert res.intensity.shape[0] == NREAL
    count = res.count[0]
    sel = count >= 5
    assert sel.sum() >= 30
    empirical = res.intensity.std(axis=0, ddof=1)[sel]
    predicted = res.sigma.mean(axis=0)[sel]
    ratio = empirical / predicted
    assert abs(ratio.mean() - 1) < 0.05, ratio.mean()
    assert np.all(np.abs(ratio - 1) < 0.35), np.abs(ratio - 1).max()


def test_azimuthal_model_matches_reference(geometry, stack):
    """The azimuthal model's sums equal the two-pass weighted spread of the corrected pixel
    values in each bin (tests/reference.py), to 1e-9, for a pixel-splitting matrix."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    frame = stack[0]
    res = ai.integrate1d(frame, 30, unit="q_nm^-1", method="full_csr", error_model="azimuthal",
                         polarization_factor=0.9)
    (key, engine), = ai.engines
    m = engine.matrix
    dense = reference.csr_to_dense(m.indptr, m.indices, m.data, frame.size)
    norm = (np.asarray(geometry.solid_angle_array()) *
            np.asarray(geometry.polarization_array(0.9))).ravel()
    want = reference.integrate_dense_reference(frame, dense, norm, error_model="azimuthal")
    np.testing.assert_allclose(res.sum_variance, want["variance"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.sum_normalization, want["norm"], rtol=1e-9)
    np.testing.assert_allclose(res.sum_signal, want["signal"], rtol=1e-9)
    std_pixels = np.sqrt(want["variance"] / want["norm2"])
    np.testing.assert_allclose(res.std, std_pixels, rtol=1e-9)


def test_azimuthal_model_estimates_poisson_noise(geometry):
    """On a flat-expectation Poisson image (uniform lambda = 400, no corrections) the spread
    of the pixels is sqrt(400): the azimuthal std averages 20 within 3 % (bins of >= 50
    pixels: the spread estimate has ~10 % scatter per bin, averaged over ~30 bins), and its
    sem agrees with the Poisson sem within 5 % on average."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    img = np.random.default_rng(5).poisson(400, geometry.detector.shape)
    kw = dict(unit="2th_deg", method="no_csr", correct_solid_angle=False)
    az = ai.integrate1d(img, 40, error_model="azimuthal", **kw)
    po = ai.integrate1d(img, 40, error_model="poisson", **kw)
    sel = az.count >= 50
    assert sel.sum() >= 20
    assert abs(az.std[sel].mean() / 20 - 1) < 0.03
    assert abs((az.sigma[sel] / po.sigma[sel]).mean() - 1) < 0.05


def test_variance_array(geometry, expected):
    """A user variance array is used as given: variance = 4 everywhere gives
    sum_variance = 4 * sum c^2, i.e. 4x the Poisson sums of an image of ones."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    ones = np.ones(geometry.detector.shape)
    a = ai.integrate1d(ones, 30, method="full_csr", variance=np.full(ones.shape, 4.0))
    b = ai.integrate1d(ones, 30, method="full_csr", error_model="poisson")
    assert a.error_model == "variance"
    np.testing.assert_allclose(a.sum_variance, 4 * b.sum_variance, rtol=1e-12)
    np.testing.assert_allclose(a.sigma, 2 * b.sigma, rtol=1e-12)


@pytest.mark.parametrize("split", ["no", "bbox", "pseudo", "full"])
@pytest.mark.parametrize("two_d", [False, True])
def test_azimuthal_model_zero_spread_is_zero_not_nan(geometry, split, two_d):
    """Every corrected pixel value equal (raw = 1000 * solid angle * polarization): the
    azimuthal spread is exactly zero in theory; rounding must never push the weighted sum of
    squares below zero, which made sqrt() return NaN in about one bin in ten."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    frame = 1000.0 * geometry.solid_angle_array() * geometry.polarization_array(0.95)
    kw = dict(unit="2th_deg", method=(split, "csr", "cython"), error_model="azimuthal",
              polarization_factor=0.95)
    res = ai.integrate2d(frame, 40, 36, **kw) if two_d else ai.integrate1d(frame, 50, **kw)
    filled = res.count > 0
    assert filled.sum() >= 40
    assert np.all(res.sum_variance[filled] >= 0)
    assert np.all(np.isfinite(res.std[filled])) and np.all(np.isfinite(res.sigma[filled]))
    np.testing.assert_allclose(res.std[filled], 0, atol=1e-6)
    np.testing.assert_allclose(res.intensity[filled], 1000, rtol=1e-9)
