"""sigma_clip and medfilt1d: per-ring background under Bragg peaks."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def setup():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    g = Geometry(0.05, 60 * 172e-6, 30 * 172e-6, 0.05, -0.03, 0.02, 1e-10,
                 Detector(172e-6, 172e-6, (100, 80)))
    tth = np.asarray(g.twotheta_array())
    background = 1000 * (1 + 0.3 * np.cos(10 * tth))
    rng = np.random.default_rng(99)
    img = rng.poisson(background).astype(np.float64)
    peaks = rng.random(img.shape) < 0.03  # 3 % of the pixels hit by Bragg peaks
    img[peaks] += rng.uniform(5000, 50000, peaks.sum())
    return AzimuthalIntegrator(g), background, img


def test_sigma_clip_recovers_background(setup):
    """With 3 % of pixels in strong peaks, the clipped ring mean equals the background ring
    mean within 1 % (Poisson noise of a ring mean is ~0.3 %), where the plain mean is off
    by far more."""
    ai, background, img = setup
    kw = dict(unit="2th_deg", correct_solid_angle=False)
    truth = ai.integrate1d(background, 30, method="no_csr", **kw)
    plain = ai.integrate1d(img, 30, method="no_csr", **kw)
    clipped = ai.sigma_clip(img, 30, thres=3, max_iter=10, **kw)
    sel = truth.count >= 40
    assert sel.sum() >= 15
    np.testing.assert_allclose(clipped.radial, truth.radial)
    rel = np.abs(clipped.intensity[sel] / truth.intensity[sel] - 1)
    assert rel.max() < 0.01, rel.max()
    assert np.median(np.abs(plain.intensity[sel] / truth.intensity[sel] - 1)) > 0.05
    assert (clipped.count <= truth.count).all() and clipped.count.sum() < 0.99 * truth.count.sum()
    assert (clipped.count[sel] > 0.8 * truth.count[sel]).all()  # but not the background


def test_sigma_clip_without_outliers(setup):
    """Without outliers (almost) nothing is clipped at 5 sigma: the result is the plain
    no-split integration to 1e-3; max_iter=0 clips nothing at all."""
    ai, background, img = setup
    kw = dict(unit="2th_deg", correct_solid_angle=False)
    clean = np.random.default_rng(1).poisson(background).astype(np.float32)
    plain = ai.integrate1d(clean, 30, method="no_csr", **kw)
    clipped = ai.sigma_clip(clean, 30, thres=5, **kw)
    ok = plain.count > 0
    np.testing.assert_allclose(clipped.intensity[ok], plain.intensity[ok], rtol=1e-3)
    assert clipped.count.sum() >= plain.count.sum() - 2
    none = ai.sigma_clip(img, 30, max_iter=0, **kw)
    np.testing.assert_allclose(none.intensity[ok], ai.integrate1d(img, 30, method="no_csr",
                                                                  **kw).intensity[ok], rtol=1e-12)


def test_medfilt1d(setup):
    """The median (and the 20-80 % trimmed mean) per ring recover the background within 1.5 %
    despite the peaks; percentile 0/100 pick the ring's minimum/maximum pixel."""
    ai, background, img = setup
    kw = dict(unit="2th_deg", correct_solid_angle=False)
    truth = ai.integrate1d(background, 30, method="no_csr", **kw)
    sel = truth.count >= 40
    med = ai.medfilt1d(img, 30, percentile=50, **kw)
    assert np.abs(med.intensity[sel] / truth.intensity[sel] - 1).max() < 0.015
    trimmed = ai.medfilt1d(img, 30, percentile=(20, 80), **kw)
    assert np.abs(trimmed.intensity[sel] / truth.intensity[sel] - 1).max() < 0.015
    lo = ai.medfilt1d(img, 30, percentile=0, **kw)
    hi = ai.medfilt1d(img, 30, percentile=100, **kw)
    assert (lo.intensity[sel] < med.intensity[sel]).all()
    assert (hi.intensity[sel] >= med.intensity[sel]).all() and hi.intensity.max() > 5000
    assert (med.count[sel] == 1).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(thres=0), "thres"), (dict(max_iter=-1), "max_iter"),
])
def test_sigma_clip_bad_input(setup, kwargs, match):
    ai, background, img = setup
    with pytest.raises(ValueError, match=match):
        ai.sigma_clip(img, 30, **kwargs)


def test_medfilt_bad_percentile(setup):
    ai, background, img = setup
    with pytest.raises(ValueError, match="percentile"):
        ai.medfilt1d(img, 30, percentile=(60, 10))


@pytest.mark.parametrize("percentile", [50, 10, 90, (10, 90), (25, 75), (0, 100)])
def test_medfilt1d_equals_weighted_percentile_reference(percentile):
    """medfilt1d against a ring-by-ring weighted-percentile loop (tests/reference.py) at
    1e-12, with polarization and a strongly varying flat (weights 0.3..3): ignoring the
    weights, or taking a share's edge instead of its centre, moves the result far beyond
    that (both breaks checked below)."""
    import reference
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    det = Detector(172e-6, 172e-6, (60, 50))
    g = Geometry(0.05, 30 * 172e-6, 20 * 172e-6, 0.02, -0.01, 0.0, 1e-10, det)
    ai = AzimuthalIntegrator(g)
    rng = np.random.default_rng(5)
    frame = rng.poisson(200, det.shape).astype(np.int32)
    flat = rng.uniform(0.3, 3.0, det.shape)
    res = ai.medfilt1d(frame, 25, unit="2th_deg", percentile=percentile, flat=flat,
                       polarization_factor=0.9)
    (key, engine), = ai.engines
    norm = (np.asarray(g.solid_angle_array()) * np.asarray(g.polarization_array(0.9))
            * flat).ravel()
    static = engine.static_sums(ai.normalisation(True, 0.9, flat))
    ring = np.full(frame.size, -1)
    ring[static.indices] = np.repeat(np.arange(engine.nbins), np.diff(static.indptr))
    x = frame.ravel() / norm
    lo, hi = (percentile, percentile) if np.ndim(percentile) == 0 else percentile
    want = reference.weighted_percentile_rings_reference(ring, x, norm, engine.nbins, lo, hi)
    np.testing.assert_allclose(res.intensity, want, rtol=1e-12, equal_nan=True)
    assert np.isfinite(want).sum() > 20
    unweighted = reference.weighted_percentile_rings_reference(ring, x, np.ones_like(norm),
                                                               engine.nbins, lo, hi)
    assert np.nanmax(np.abs(unweighted / want - 1)) > 1e-6  # the weights matter


@pytest.mark.parametrize("max_iter", [0, 1, 5])
def test_cython_sigma_clip_equals_numpy_statement(max_iter):
    """The Cython kernel against the NumPy statement of tests/reference.py, bit for bit
    (same operations in the same order), on rings with outliers, invalid and empty rings,
    for a stack."""
    import reference
    from xreduce.engines import robust

    rng = np.random.default_rng(max_iter)
    nbins, nframes = 30, 3
    counts = rng.integers(0, 60, nbins)
    counts[4] = 0
    bins = np.repeat(np.arange(nbins), counts)
    norm = rng.uniform(0.5, 2.0, bins.size)
    signal = rng.poisson(100, (nframes, bins.size)) * norm
    signal[:, ::17] *= 50  # outliers
    valid = rng.random((nframes, bins.size)) > 0.05
    signal[~valid] = 0.0
    got = robust.sigma_clip(bins, signal, norm, valid, nbins, 2.5, max_iter)
    want = reference.sigma_clip_rings_reference(bins, signal, norm, valid, nbins, 2.5, max_iter)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)
    assert max_iter == 0 or (got[0][3] < np.bincount(bins, valid[0], nbins)).any()
