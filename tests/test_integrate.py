"""The integration kernels (csr_integrate, histogram) on hand-made inputs, against tests/reference.py.

Tolerances: the kernels accumulate in float64 like the references, but in another order and
the azimuthal model uses a single-pass update against a two-pass reference, so agreement is
to 1e-10 relative (a few hundred ulps over the bins' length), not bit-exact.
"""
import numpy as np
import pytest

import reference
from xreduce.engines import ERROR_MODES, pixel_rule
from xreduce.ext import csr_integrate, histogram

DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
          np.float32, np.float64]


def random_csr(rng, nbins=13, npix=200, with_coef=True):
    rows = [np.sort(rng.choice(npix, rng.integers(0, 30), replace=False)) for _ in range(nbins)]
    rows[3] = rows[3][:0]  # one empty bin
    indptr = np.zeros(nbins + 1, np.int32)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.concatenate(rows).astype(np.int32)
    coef = rng.uniform(0.01, 1, len(indices)).astype(np.float32) if with_coef else None
    return indptr, indices, coef


def run_csr(frames, indptr, indices, coef, norm, dark=None, variance=None, error_model=None,
            dummy=None, delta_dummy=0.0, max_invalid=True):
    nbins = len(indptr) - 1
    static = [np.empty(nbins) for _ in range(3)]
    empty32 = np.zeros(0, np.float32)
    csr_integrate.static_sums(indptr, indices, empty32 if coef is None else coef,
                              coef is not None, norm, *static)
    out = [np.empty((frames.shape[0], nbins)) for _ in range(5)]
    var = np.zeros((1, 0), np.float32) if variance is None else \
        np.ascontiguousarray(variance, np.float32).reshape(-1, frames.shape[1])
    csr_integrate.integrate_frames(
        frames, indptr, indices, empty32 if coef is None else coef, coef is not None, norm,
        *static, empty32 if dark is None else dark.astype(np.float32), dark is not None, var,
        ERROR_MODES[error_model], True, *rule_args(frames.dtype, dummy, delta_dummy, max_invalid),
        *out)
    return dict(zip(("signal", "variance", "norm", "norm2", "count"), out))


def rule_args(dtype, dummy=None, delta_dummy=None, max_invalid=True):
    """check_max, has_dummy, dummy_bounds of the kernels, from the one rule."""
    rule = pixel_rule(dtype, dummy, delta_dummy, max_invalid)
    return rule.max_invalid, rule.has_dummy, rule.bounds


def frames_of(rng, dtype, nframes, npix):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    hi = 50 if info is None else min(50, info.max)
    frames = rng.integers(0, hi, (nframes, npix)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        frames += rng.random((nframes, npix)).astype(dtype)
        frames[0, 5] = np.nan
        frames[1, 7] = np.inf
        frames[0, 9] = -3.5  # a legitimate negative value of a float frame
    else:
        frames[0, 5] = info.max
        if info.min < 0:
            frames[1, 7] = -1
    return frames


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("error_model", [None, "poisson", "variance", "azimuthal"])
def test_csr_kernel_matches_reference(rng, dtype, error_model):
    """Every raw dtype and error model: each frame of a stack equals the dense reference.

    The frames carry invalid values (NaN, inf, negative ints, dtype maximum): they must be
    left out of both the signal and the normalisation. Tolerance 1e-10 relative.
    """
    npix = 200
    indptr, indices, coef = random_csr(rng, npix=npix)
    norm = rng.uniform(0.5, 1.5, npix)
    frames = frames_of(rng, dtype, 3, npix)
    dark = rng.uniform(0, 2, npix).astype(np.float32)
    variance = rng.uniform(1, 5, (3, npix)).astype(np.float32) if error_model == "variance" else None
    got = run_csr(frames, indptr, indices, coef, norm, dark, variance, error_model)
    dense = reference.csr_to_dense(indptr, indices, coef, npix)
    for f in range(3):
        want = reference.integrate_dense_reference(
            frames[f], dense, norm, dark, None if variance is None else variance[f], error_model)
        for name in want:
            np.testing.assert_allclose(got[name][f], want[name], rtol=1e-10, atol=1e-10,
                                       err_msg=f"{name} frame {f}")


@pytest.mark.parametrize("dtype", [np.uint32, np.int32])
@pytest.mark.parametrize("with_coef", [True, False])
@pytest.mark.parametrize("error_model", [None, "poisson"])
def test_csr_kernel_simd_path_identical(rng, dtype, with_coef, error_model):
    """The AVX2 gather path for 32-bit integer frames (used where the CPU has AVX2) gives
    results identical, bit for bit, to the portable loop: same lanes, same order, no FMA.
    The frames hold invalid values (dtype maximum, negatives) and, for uint32, valid values
    >= 2**31 that the AVX2 path hands to the portable loop. Both also match the reference."""
    npix = 400
    indptr, indices, coef = random_csr(rng, nbins=40, npix=npix, with_coef=with_coef)
    norm = rng.uniform(0.5, 1.5, npix)
    frames = frames_of(rng, dtype, 3, npix)
    if dtype == np.uint32:
        frames[2, 11] = 2**31 + 5
    results = {}
    try:
        for enabled in (True, False):
            csr_integrate.simd(enabled)
            results[enabled] = run_csr(frames, indptr, indices, coef, norm,
                                       error_model=error_model)
    finally:
        csr_integrate.simd(True)
    for name in results[False]:
        np.testing.assert_array_equal(results[True][name], results[False][name], err_msg=name)
    dense = reference.csr_to_dense(indptr, indices, coef, npix)
    for f in range(3):
        want = reference.integrate_dense_reference(frames[f], dense, norm, error_model=error_model)
        for name in want:
            np.testing.assert_allclose(results[True][name][f], want[name], rtol=1e-10,
                                       atol=1e-10, err_msg=name)


def test_csr_kernel_compact_and_dummy(rng):
    """No coefficients (compact no-split matrix), dummy with delta_dummy, bins all invalid."""
    npix = 150
    indptr, indices, _ = random_csr(rng, npix=npix, with_coef=False)
    norm = rng.uniform(0.5, 1.5, npix)
    frame = rng.integers(0, 20, (1, npix)).astype(np.int32)
    frame[0, indices[indptr[0]:indptr[1]]] = 7  # first bin: every pixel is "dummy"
    frame[0, :10] = 8
    got = run_csr(frame, indptr, indices, None, norm, error_model="poisson", dummy=7.5,
                  delta_dummy=0.6)
    dense = reference.csr_to_dense(indptr, indices, None, npix)
    want = reference.integrate_dense_reference(frame[0], dense, norm, error_model="poisson",
                                               dummy=7.5, delta_dummy=0.6)
    for name in want:
        np.testing.assert_allclose(got[name][0], want[name], rtol=1e-10, atol=1e-12)
    assert got["norm"][0, 0] == 0.0 and got["count"][0, 0] == 0.0  # exact zeros, no residue


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("azimuth", ["none", "one_bin", "sector", "six_bins"])
@pytest.mark.parametrize("error_model", ["poisson", "azimuthal"])
def test_histogram_kernel_matches_reference(rng, dtype, split, azimuth, error_model):
    """Histogram kernel (no / bbox; 1D, 1D over a sector or the full circle in one azimuthal
    bin, 2D; chi wrap-around) equals the dense bbox reference.

    Pixel boxes straddling +-pi are given with azi_hi > pi and must wrap (both copies adding
    up when they share a bin); pixels partly outside the ranges contribute their inside
    fraction. Tolerance 1e-10 relative.
    """
    npix = 300
    centre = rng.uniform(-1, 11, npix)
    width = rng.uniform(0, 0.7, npix) if split else np.zeros(npix)
    rad_lo, rad_hi = centre - width / 2, centre + width / 2
    chi = rng.uniform(-np.pi, np.pi, npix)
    awidth = rng.uniform(0, 0.5, npix) if split else np.zeros(npix)
    azi_lo = chi
    azi_hi = chi + awidth  # some exceed pi: wrap-around
    skip = np.zeros(npix, np.uint8)
    skip[::17] = 1
    norm = rng.uniform(0.5, 1.5, npix)
    frames = frames_of(rng, dtype, 2, npix)
    edges = np.linspace(0.0, 10.0, 8)
    use_azimuth = azimuth != "none"
    na = 6 if azimuth == "six_bins" else 1
    a0, a1 = (-2.0, 3.0) if azimuth == "sector" else (-np.pi, np.pi)
    azi_edges = np.linspace(a0, a1, na + 1) if use_azimuth else None
    nfields = 8 if error_model == "azimuthal" else 5
    acc = np.zeros((2, 2, 7 * na, nfields))
    histogram.histogram_frames(
        frames, rad_lo, rad_hi if split else rad_lo, azi_lo, azi_hi if split else azi_lo,
        use_azimuth, split, 0.0, 10.0, 7, a0, a1, na, skip, norm, np.zeros(0, np.float32),
        False, np.zeros((1, 0), np.float32), ERROR_MODES[error_model], True,
        *rule_args(frames.dtype), acc)
    histogram.merge_threads(acc, ERROR_MODES[error_model])
    dense = reference.bbox_matrix_reference(
        rad_lo, rad_hi if split else rad_lo, edges, azi_lo if use_azimuth else None,
        (azi_hi if split else azi_lo) if use_azimuth else None, azi_edges)
    dense[:, skip == 1] = 0
    for f in range(2):
        want = reference.integrate_dense_reference(frames[f], dense, norm,
                                                   error_model=error_model)
        total = acc[0, f]
        np.testing.assert_allclose(total[:, 0], want["signal"], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(total[:, 4], want["count"], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(total[:, 3], want["norm2"], rtol=1e-10, atol=1e-10)
        if error_model == "azimuthal":
            np.testing.assert_allclose(total[:, 5], want["norm"], rtol=1e-10, atol=1e-10)
            spread = np.where(total[:, 5] > 0, total[:, 7] / np.where(total[:, 5] > 0, total[:, 5], 1)
                              * total[:, 3], 0)
            np.testing.assert_allclose(spread, want["variance"], rtol=1e-9, atol=1e-10)
        else:
            np.testing.assert_allclose(total[:, 2], want["norm"], rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(total[:, 1], want["variance"], rtol=1e-10, atol=1e-10)


# =====================================================================================
# The integrator on a small tilted detector (100 x 80 pixels of 172 um)
# =====================================================================================
import threading  # noqa: E402

CSR_METHODS = [(s, "csr", "cython") for s in ("no", "bbox", "pseudo", "full")]
HIST_METHODS = [(s, "histogram", "cython") for s in ("no", "bbox")]
ALL_METHODS = CSR_METHODS + HIST_METHODS


@pytest.fixture(scope="module")
def geometry():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    det = Detector(172e-6, 172e-6, (100, 80))
    # The beam hits the detector (every chi is present, the chi = +-180 cut crosses it).
    return Geometry(0.05, 60 * 172e-6, 30 * 172e-6, 0.05, -0.03, 0.02, 1e-10, det)


@pytest.fixture(scope="module")
def ai(geometry):
    from xreduce.integrator import AzimuthalIntegrator

    return AzimuthalIntegrator(geometry)


def smooth_image(geometry, scale=1000.0):
    """A smooth image: a slow function of 2theta and chi (no pixel-scale structure)."""
    tth = np.asarray(geometry.twotheta_array())
    chi = np.asarray(geometry.chi_array())
    return scale * (1.0 + 0.5 * np.cos(tth * 8) + 0.1 * np.sin(chi))


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("two_d", [False, True])
def test_flat_image_gives_one(ai, method, two_d):
    """A flat image without corrections gives 1.0 in every non-empty bin, to 1e-12."""
    flat = np.ones(ai.detector.shape, np.float32)
    if two_d:
        res = ai.integrate2d(flat, 40, 36, unit="2th_deg", method=method, correct_solid_angle=False)
    else:
        res = ai.integrate1d(flat, 50, unit="2th_deg", method=method, correct_solid_angle=False)
    filled = res.count > 0
    assert filled.sum() > 40
    np.testing.assert_allclose(res.intensity[filled], 1.0, rtol=1e-12, atol=0)
    assert np.isnan(res.intensity[~filled]).all()


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m[0] != "no"] + [CSR_METHODS[0]])
@pytest.mark.parametrize("two_d", [False, True])
def test_counts_conserved(ai, method, two_d):
    """Sum of count over bins equals the number of valid pixels (default range: all inside),
    to 1e-9 relative, with a mask and NaN pixels removed."""
    rng = np.random.default_rng(3)
    mask = rng.random(ai.detector.shape) < 0.1
    img = np.ones(ai.detector.shape)
    img[5, 5:20] = np.nan
    valid = (~mask & np.isfinite(img)).sum()
    if two_d:
        res = ai.integrate2d(img, 30, 24, unit="q_nm^-1", method=method, mask=mask)
    else:
        res = ai.integrate1d(img, 30, unit="q_nm^-1", method=method, mask=mask)
    np.testing.assert_allclose(res.count.sum(), valid, rtol=1e-9)


@pytest.mark.parametrize("split", ["no", "bbox"])
@pytest.mark.parametrize("two_d", [False, True])
def test_histogram_equals_csr(ai, geometry, split, two_d):
    """Histogram and CSR with the same split are the same sums: identical for split "no";
    for bbox the matrix stores its coefficients in float32 (the histogram uses them in
    float64), so they agree to 1e-6 relative (float32 rounding, 6e-8, summed over a bin)."""
    img = smooth_image(geometry)
    kw = dict(unit="2th_deg", error_model="poisson", polarization_factor=0.9)
    if two_d:
        a = ai.integrate2d(img, 40, 36, method=(split, "csr", "cython"), **kw)
        b = ai.integrate2d(img, 40, 36, method=(split, "histogram", "cython"), **kw)
    else:
        a = ai.integrate1d(img, 50, method=(split, "csr", "cython"), azimuth_range=(-100, 120), **kw)
        b = ai.integrate1d(img, 50, method=(split, "histogram", "cython"),
                           azimuth_range=(-100, 120), **kw)
    np.testing.assert_allclose(a.radial, b.radial, rtol=1e-12)
    for name in ("count", "sum_signal", "sum_normalization", "sum_variance"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name),
                                   rtol=1e-12 if split == "no" else 1e-6, atol=1e-9, err_msg=name)


def test_methods_agree_on_smooth_data(ai, geometry):
    """Every split scheme gives the same profile of a smooth image, bins with > 10 pixels:
    splitting only redistributes pixels between neighbouring bins, so on data smooth at
    the bin scale they differ little: 5e-3 relative at most, reached in the first bins where
    few pixels, unevenly spread in chi, make split "no" (whole pixels) differ most."""
    img = smooth_image(geometry)
    ref = ai.integrate1d(img, 30, unit="2th_deg", method="full_csr")
    full = ref.count > 30  # the first bins hold few pixels, unevenly spread in chi
    for method in ALL_METHODS:
        res = ai.integrate1d(img, 30, unit="2th_deg", method=method, radial_range=(
            float(ref.radial[0] - (ref.radial[1] - ref.radial[0]) / 2),
            float(ref.radial[-1] + (ref.radial[1] - ref.radial[0]) / 2)))
        np.testing.assert_allclose(res.intensity[full], ref.intensity[full], rtol=5e-3,
                                   err_msg=str(method))


@pytest.mark.parametrize("split", ["no", "bbox", "full"])
@pytest.mark.parametrize("two_d", [False, True])
def test_agrees_with_pyfai(geometry, split, two_d):
    """Same split, unit, ranges and corrections as pyFAI's CSR engine, bin by bin on bins
    holding > 10 pixels.

    - "no" and "full": relative difference < 1e-4 asked, ~1e-7 reached (pyFAI computes
      positions and corrections in float32, we in float64).
    - "bbox": < 1e-3 on intensities and < 2e-2 on sigma. Our box is the pixel's true
      bounding box (min..max of its corners, doc/integration.md, "Methods"); pyFAI's is the centre
      +- the largest corner deviation, slightly wider (its bin counts differ by up to 2 %),
      most visible near the beam centre where pixels span many bins.
      test_bbox_difference_to_pyfai_explained shows this is the whole difference.
    - 2D "full": intensities < 1e-4 but sigma < 3e-2 only: sum c^2 v differs by ~0.5 %
      (median) because pyFAI's 2D full split divides pixels among bins slightly otherwise.
      Both sigmas match the spread of 300 Poisson realisations (ratio 0.998 for either,
      checked by hand); ours is tested so in test_uncertainty.py.

    pyFAI nudges the top of a given radial range up by one float32 epsilon (relative); we
    pass the same nudged range so that the bins are the same.
    """
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyFAIIntegrator
    from xreduce.integrator import AzimuthalIntegrator

    g = geometry
    det = pyFAI.detectors.Detector(g.detector.pixel1, g.detector.pixel2,
                                   max_shape=tuple(g.detector.shape))
    ref_ai = PyFAIIntegrator(dist=g.dist, poni1=g.poni1, poni2=g.poni2, rot1=g.rot1, rot2=g.rot2,
                             rot3=g.rot3, wavelength=g.wavelength, detector=det)
    ai = AzimuthalIntegrator(g)
    img = smooth_image(g).astype(np.float32)
    method = (split, "csr", "cython")
    tol_i, tol_s = (1e-3, 2e-2) if split == "bbox" else (1e-4, 3e-2 if two_d else 1e-4)
    # Every pixel inside the range: pyFAI puts pixels below a radial range into the first
    # bin where we leave them out, so a range cutting through the pixels would differ there.
    top = 25.0 * (1 + float(np.finfo(np.float32).eps))
    kw = dict(unit="2th_deg", method=method, polarization_factor=0.99, error_model="poisson")
    if two_d:
        want = ref_ai.integrate2d(img, 40, 36, correctSolidAngle=True, azimuth_range=(-180, 180),
                                  radial_range=(0.0, 25.0), **kw)
        got = ai.integrate2d(img, 40, 36, correct_solid_angle=True, radial_range=(0.0, top), **kw)
        np.testing.assert_allclose(got.azimuthal, want.azimuthal, atol=1e-4)  # pyFAI: float32
    else:
        want = ref_ai.integrate1d(img, 60, correctSolidAngle=True, radial_range=(0.0, 25.0), **kw)
        got = ai.integrate1d(img, 60, correct_solid_angle=True, radial_range=(0.0, top), **kw)
    np.testing.assert_allclose(got.radial, want.radial, rtol=1e-6, atol=1e-6)
    sel = (np.asarray(want.count) > 10) & (got.count > 10)
    assert sel.sum() > 10
    for name, tol in (("intensity", tol_i), ("sigma", tol_s)):
        ref = np.asarray(getattr(want, name))[sel]
        rel = np.abs(getattr(got, name)[sel] - ref) / ref
        assert rel.max() < tol, (name, rel.max())


def test_bbox_difference_to_pyfai_explained(geometry):
    """Why our "bbox" differs from pyFAI's (1D, 2theta): the box definition, nothing else.

    (a) pyFAI's bbox result equals the dense reference built with pyFAI's box (centre +- the
        largest corner deviation, low end clipped at 0; reference.pyfai_bbox_limits) on bins
        holding > 10 pixels: < 1e-4 relative asked, 5e-8 (intensity) and 3e-7 (count)
        reached, so checked to 1e-6 (pyFAI's positions and coefficients are float32);
    (b) ours equals the same reference built with the true bounding box (min..max of the
        corners): 3e-10 (intensity) and 5e-9 (count) reached, checked to 1e-8 (our
        coefficients are float32, summed in float64),
    while the two tools differ from each other by up to ~1e-3 (test_agrees_with_pyfai).
    """
    pyFAI = pytest.importorskip("pyFAI")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyFAIIntegrator
    from xreduce.integrator import AzimuthalIntegrator

    g = geometry
    det = pyFAI.detectors.Detector(g.detector.pixel1, g.detector.pixel2,
                                   max_shape=tuple(g.detector.shape))
    ref_ai = PyFAIIntegrator(dist=g.dist, poni1=g.poni1, poni2=g.poni2, rot1=g.rot1, rot2=g.rot2,
                             rot3=g.rot3, wavelength=g.wavelength, detector=det)
    img = smooth_image(g).astype(np.float32)
    npt, top = 60, 25.0 * (1 + float(np.finfo(np.float32).eps))
    kw = dict(unit="2th_deg", method=("bbox", "csr", "cython"), polarization_factor=0.99,
              error_model="poisson")
    theirs = ref_ai.integrate1d(img, npt, correctSolidAngle=True, radial_range=(0.0, 25.0), **kw)
    ours = AzimuthalIntegrator(g).integrate1d(img, npt, correct_solid_angle=True,
                                              radial_range=(0.0, top), **kw)
    edges = np.linspace(0.0, top, npt + 1)
    centres = np.asarray(g.center_array("2th_deg")).reshape(-1)
    corners = np.asarray(g.corner_array("2th_deg"))[..., 0].reshape(-1, 4)
    norm = (np.asarray(g.solid_angle_array(), np.float64)
            * np.asarray(g.polarization_array(0.99), np.float64)).reshape(-1)
    boxes = {"pyfai": reference.pyfai_bbox_limits(centres, corners, low_limit=0.0),
             "true": (corners.min(axis=1), corners.max(axis=1))}
    want = {name: reference.integrate_dense_reference(
                img, reference.bbox_matrix_reference(lo, hi, edges), norm,
                error_model="poisson") for name, (lo, hi) in boxes.items()}
    sel = (np.asarray(theirs.count) > 10) & (ours.count > 10)
    assert sel.sum() > 30
    for name, result, tol in (("pyfai", theirs, 1e-6), ("true", ours, 1e-8)):
        w = want[name]
        intensity = w["signal"][sel] / w["norm"][sel]
        np.testing.assert_allclose(np.asarray(result.intensity)[sel], intensity, rtol=tol,
                                   err_msg=name)
        np.testing.assert_allclose(np.asarray(result.count)[sel], w["count"][sel], rtol=tol,
                                   err_msg=name)
    # The two definitions really differ here (else the test above proves nothing).
    assert np.max(np.abs(want["pyfai"]["count"][sel] / want["true"]["count"][sel] - 1)) > 1e-3


def test_stack_equals_frames_and_dtypes(ai, geometry):
    """A stack gives, frame by frame, the single-frame results; uint16, int32, float32 and
    float64 copies of the same counts give identical results (no conversion error)."""
    rng = np.random.default_rng(7)
    stack = rng.poisson(smooth_image(geometry, 100.0), (3,) + ai.detector.shape)
    results = {}
    for dtype in (np.uint16, np.int32, np.float32, np.float64):
        results[dtype] = ai.integrate1d(stack.astype(dtype), 40, error_model="poisson")
    for dtype, res in results.items():
        assert res.intensity.shape == (3, 40)
        np.testing.assert_array_equal(res.intensity, results[np.float64].intensity)
        np.testing.assert_array_equal(res.sigma, results[np.float64].sigma)
    for f in range(3):
        one = ai.integrate1d(stack[f].astype(np.uint16), 40, error_model="poisson")
        np.testing.assert_array_equal(one.intensity, results[np.uint16].intensity[f])
    cake = ai.integrate2d(stack.astype(np.uint32), 20, 12)
    assert cake.intensity.shape == (3, 12, 20)


def test_invalid_pixels_are_masked(ai, geometry):
    """NaN, negative int32 values, dummy and the uint32 maximum are masked, not propagated:
    the result equals that of the same frame with those pixels masked explicitly."""
    img = smooth_image(geometry)
    bad = np.zeros(ai.detector.shape, bool)
    bad[10, 10:30] = bad[50:60, 40] = True
    want = ai.integrate1d(img, 40, mask=bad, error_model="poisson")
    with_nan = img.copy()
    with_nan[bad] = np.nan
    got = ai.integrate1d(with_nan, 40, error_model="poisson")
    assert np.isfinite(got.intensity[got.count > 0]).all()
    np.testing.assert_allclose(got.intensity, want.intensity, rtol=1e-12)
    np.testing.assert_allclose(got.count, want.count, rtol=1e-12)
    ints = np.round(img).astype(np.int32)
    want_i = ai.integrate1d(ints, 40, mask=bad, error_model="poisson")
    ints[bad] = -1
    np.testing.assert_allclose(ai.integrate1d(ints, 40, error_model="poisson").intensity,
                               want_i.intensity, rtol=1e-12)
    ints[bad] = 12345
    np.testing.assert_allclose(ai.integrate1d(ints, 40, dummy=12345).intensity,
                               want_i.intensity, rtol=1e-12)
    u = ints.astype(np.uint32)
    u[bad] = np.iinfo(np.uint32).max  # a Dectris mark: masked when the detector says so
    dectris = ai.with_geometry(detector=geometry.detector.__class__(
        172e-6, 172e-6, geometry.detector.shape, max_value_invalid=True))
    np.testing.assert_allclose(dectris.integrate1d(u, 40).intensity, want_i.intensity,
                               rtol=1e-12)
    assert ai.integrate1d(u, 40).count.sum() == pytest.approx(u.size, rel=1e-9)


def test_corrections(ai, geometry):
    """dark, flat, solid angle, polarization, absorption and normalization_factor combine as
    sum c (raw - dark) / sum c (flat * sa * pol * abs * factor) (doc/integration.md, "Formulas"): an
    image made of exactly that normalisation (plus the dark) integrates to 2.0."""
    rng = np.random.default_rng(1)
    flat = rng.uniform(0.8, 1.2, ai.detector.shape)
    absorption = rng.uniform(0.9, 1.0, ai.detector.shape)
    dark = rng.uniform(0, 5, ai.detector.shape).astype(np.float32)
    norm = (flat * absorption * np.asarray(geometry.solid_angle_array())
            * np.asarray(geometry.polarization_array(0.95)) * 3.0)
    img = 2.0 * norm + dark
    for method in ALL_METHODS:
        res = ai.integrate1d(img, 30, method=method, dark=dark, flat=flat, absorption=absorption,
                             polarization_factor=0.95, normalization_factor=3.0)
        filled = res.count > 0
        np.testing.assert_allclose(res.intensity[filled], 2.0, rtol=1e-6)  # float32 dark


def test_flat_with_zeros_masks_pixels(ai):
    """Pixels with a zero or NaN flat are masked (their normalisation is unusable)."""
    flat = np.ones(ai.detector.shape)
    flat[:, :10] = 0
    flat[0, 20] = np.nan
    res = ai.integrate1d(np.ones(ai.detector.shape), 30, flat=flat, correct_solid_angle=False)
    np.testing.assert_allclose(res.count.sum(), flat.size - 1000 - 1, rtol=1e-9)
    np.testing.assert_allclose(res.intensity[res.count > 0], 1.0, rtol=1e-12)


def test_integrate_radial(ai, geometry):
    """Chi profile: an image equal to 1 + 0.5 sin(chi) (no corrections) gives back
    1 + 0.5 sin(chi) at the bin centres to the bin-averaging error (< 2e-3 with 36 bins)."""
    chi = np.asarray(geometry.chi_array())
    img = 1 + 0.5 * np.sin(chi)
    res = ai.integrate_radial(img, 36, radial_range=(5, 25), radial_unit="2th_deg",
                              method="no_csr", correct_solid_angle=False)
    assert res.unit.name == "chi_deg"
    filled = res.count > 20
    np.testing.assert_allclose(res.intensity[filled], 1 + 0.5 * np.sin(np.deg2rad(res.radial))[filled],
                               atol=2e-2)
    res2 = ai.integrate_radial(np.ones_like(img), 36, radial_range=(5, 25), radial_unit="2th_deg",
                               correct_solid_angle=False)
    np.testing.assert_allclose(res2.intensity[res2.count > 0], 1.0, rtol=1e-12)


def test_empty_range_gives_empty_bins(ai):
    """A radial range holding no pixel gives count 0 and the `empty` value everywhere."""
    res = ai.integrate1d(np.ones(ai.detector.shape), 10, unit="2th_deg", radial_range=(170, 175))
    assert (res.count == 0).all() and np.isnan(res.intensity).all()
    res = ai.integrate1d(np.ones(ai.detector.shape), 10, unit="2th_deg", radial_range=(170, 175),
                         empty=-1.0)
    assert (res.intensity == -1.0).all()


@pytest.mark.parametrize("call, match", [
    (lambda ai, img: ai.integrate1d(img[:, :-1], 10), "data"),
    (lambda ai, img: ai.integrate1d(img, 10, mask=np.zeros((3, 3))), "mask"),
    (lambda ai, img: ai.integrate1d(img, 10, dark=np.zeros((100, 81))), "dark"),
    (lambda ai, img: ai.integrate1d(img, 10, flat=np.zeros((99, 80))), "flat"),
    (lambda ai, img: ai.integrate1d(img, 10, variance=np.zeros(5)), "variance"),
    (lambda ai, img: ai.integrate1d(img, 0), "npt"),
    (lambda ai, img: ai.integrate1d(img, -5), "npt"),
    (lambda ai, img: ai.integrate2d(img, 10, 0), "npt_azim"),
    (lambda ai, img: ai.integrate1d(img, 10, unit="parsec"), "unit"),
    (lambda ai, img: ai.integrate1d(img, 10, unit="chi_deg"), "unit"),
    (lambda ai, img: ai.integrate1d(img, 10, method="magic"), "method"),
    (lambda ai, img: ai.integrate1d(img, 10, method=("full", "histogram", "cython")), "method"),
    (lambda ai, img: ai.integrate1d(img, 10, method=("bbox", "csr", "fortran")), "method"),
    (lambda ai, img: ai.integrate1d(img, 10, radial_range=(5, 5)), "radial_range"),
    (lambda ai, img: ai.integrate1d(img, 10, azimuth_range=(0, 270)), "azimuth_range"),
    (lambda ai, img: ai.integrate1d(img, 10, error_model="gauss"), "error_model"),
    (lambda ai, img: ai.integrate1d(img, 10, polarization_factor=2), "polarization_factor"),
])
def test_bad_input(ai, call, match):
    """Bad arguments raise ValueError naming the argument, before any kernel runs."""
    img = np.ones((100, 80))
    with pytest.raises(ValueError, match=match):
        call(ai, img)


def test_bad_dtype(ai):
    with pytest.raises(TypeError, match="data"):
        ai.integrate1d(np.ones((100, 80), dtype=complex), 10)


def test_method_names():
    from xreduce.integrator import parse_method

    assert parse_method("bbox") == ("bbox", "csr", "cython")
    assert parse_method("full_csr") == ("full", "csr", "cython")
    assert parse_method(("no", "histogram")) == ("no", "histogram", "cython")
    assert parse_method(("BBox", "CSR", "Cython")) == ("bbox", "csr", "cython")
    with pytest.raises(ValueError, match="bbox_csr_cython"):
        parse_method("bogus_csr")


def test_engine_cache(geometry):
    """Engines are reused for identical calls and rebuilt when anything they depend on changes."""
    from xreduce.integrator import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    img = np.ones(geometry.detector.shape)
    ai.integrate1d(img, 20)
    ai.integrate1d(img * 2, 20, error_model="poisson", polarization_factor=0.9)
    assert len(ai.engines) == 1
    mask = np.zeros(geometry.detector.shape, bool)
    mask[0] = True
    ai.integrate1d(img, 20, mask=mask)
    ai.integrate1d(img, 21)
    ai.integrate1d(img, 20, radial_range=(1, 2))
    assert len(ai.engines) == 4
    mask[1] = True  # changed in place: seen as a new mask
    r = ai.integrate1d(img, 20, mask=mask)
    assert len(ai.engines) == 5
    np.testing.assert_allclose(r.count.sum(), img.size - 160, rtol=1e-9)
    ai.reset_engines()
    assert len(ai.engines) == 0
    again = ai.integrate1d(img, 20, mask=mask)
    assert len(ai.engines) == 1
    np.testing.assert_array_equal(again.sum_signal, r.sum_signal)


def test_thread_safety(geometry):
    """4 threads integrating concurrently on one fresh integrator (engine built by the first)
    give results identical to a serial call."""
    from xreduce.integrator import AzimuthalIntegrator

    rng = np.random.default_rng(11)
    frames = [rng.poisson(smooth_image(geometry, 50.0)).astype(np.uint32) for _ in range(4)]
    ai = AzimuthalIntegrator(geometry)
    results = [None] * 4
    start = threading.Barrier(4)

    def work(i):
        start.wait()
        for _ in range(5):
            results[i] = ai.integrate1d(frames[i], 50, method="full_csr", error_model="poisson")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ai.engines) == 1
    serial = AzimuthalIntegrator(geometry)
    for i in range(4):
        want = serial.integrate1d(frames[i], 50, method="full_csr", error_model="poisson")
        np.testing.assert_array_equal(results[i].intensity, want.intensity)
        np.testing.assert_array_equal(results[i].sigma, want.sigma)


def test_byteswapped_noncontiguous_and_float16_inputs(ai, geometry):
    """Byte-swapped, non-contiguous and float16 frames (copied once) integrate like the
    native array."""
    img = np.round(smooth_image(geometry, 10.0))
    want = ai.integrate1d(img, 30, error_model="poisson")
    swapped = img.astype(">f8")
    wide = np.zeros((img.shape[0], img.shape[1] * 2))
    wide[:, ::2] = img
    for frame in (swapped, wide[:, ::2], img.astype(np.float16)):
        got = ai.integrate1d(frame, 30, error_model="poisson")
        np.testing.assert_array_equal(got.intensity, want.intensity)
