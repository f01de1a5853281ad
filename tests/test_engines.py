"""The engines package: method registry, the one invalid-pixel rule, read-only geometry,
size checks, per-key engine cache, fingerprints, and one regression test per finding of
issue 14 (each failed before the change).

Tolerances: results compared between two ways of masking the same pixels are equal to
1e-12 relative (same kernel, same order up to the masked entries).
"""
import pickle
import threading
import time

import numpy as np
import pytest

import reference
from xreduce.engines import (EngineCache, invalid_pixels, parse_method, parse_method_target,
                             pixel_rule)


@pytest.fixture(scope="module")
def geometry():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    det = Detector(172e-6, 172e-6, (60, 50))
    return Geometry(0.05, 30 * 172e-6, 20 * 172e-6, 0.02, -0.01, 0.0, 1e-10, det)


@pytest.fixture
def ai(geometry):
    from xreduce import AzimuthalIntegrator

    return AzimuthalIntegrator(geometry)


def frame_of(geometry, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(10, 100, geometry.detector.shape).astype(dtype)


# ------------------------------------------------------------------ registry
def test_parse_method_forms():
    assert parse_method("full_csr") == ("full", "csr", "cython")
    assert parse_method(("bbox", "csr")) == ("bbox", "csr", "cython")
    assert parse_method("nosplit_csr") == ("no", "csr", "cython")
    assert parse_method("splitpixel") == ("full", "csr", "cython")
    assert parse_method("csr_ocl") == ("bbox", "csr", "opencl")
    assert parse_method_target(("bbox", "csr", "opencl", "gpu:0")) == (
        ("bbox", "csr", "opencl"), "gpu:0")
    assert parse_method_target("bbox_csr_opencl", target=(0, 1)) == (
        ("bbox", "csr", "opencl"), "0,1")
    assert parse_method_target("bbox", target="CPU") == (("bbox", "csr", "cython"), "cpu")


@pytest.mark.parametrize("method, target, match", [
    ("bbox_csr_magic", None, "method"),
    (("bbox", "csr", "cython", "gpu"), None, "target"),
    ("bbox", "gpu", "target"),
    (("bbox", "csr", "opencl", "gpu"), "cpu", "given twice"),
    ("bbox_csr_opencl", "tpu:1", "target"),
    (3, None, "method"),
])
def test_parse_method_errors(method, target, match):
    with pytest.raises((ValueError, TypeError), match=match):
        parse_method_target(method, target)


def test_engine_key_includes_device(ai, geometry, monkeypatch):
    """Finding 8: the OpenCL device is part of the engine key (two devices never share an
    engine), chosen by the method, by target= or by the environment variable."""
    from xreduce.engines import opencl

    built = []

    def fake_build(ai_, key, mask):
        built.append(key.device)
        return ai_.engine(key.__class__(**{**key.__dict__, "implementation": "cython",
                                           "device": None}), mask)

    monkeypatch.setattr(opencl, "build_opencl", fake_build)
    frame = frame_of(geometry)
    ai.integrate1d(frame, 20, method=("bbox", "csr", "opencl", "gpu:1"))
    ai.integrate1d(frame, 20, method="bbox_csr_opencl", target="cpu")
    monkeypatch.setenv("XREDUCE_OPENCL_DEVICE", "0,0")
    ai.integrate1d(frame, 20, method="bbox_csr_opencl")
    ai.integrate1d(frame, 20, method="bbox_csr_opencl", target="gpu:1")  # cached
    assert built == ["gpu:1", "cpu", "0,0"]
    devices = {k.device for k, _ in ai.engines if k.implementation == "opencl"}
    assert devices == {"gpu:1", "cpu", "0,0"}


# ------------------------------------------------------------------ the pixel rule
def test_pixel_rule_bounds_in_the_frame_type():
    r = pixel_rule(np.int32, 7.5, 0.6, False)
    assert r.has_dummy and r.bounds.tolist() == [7, 8]
    r = pixel_rule(np.uint8, -3, 1, False)
    assert not r.has_dummy  # no uint8 within 1 of -3
    r = pixel_rule(np.uint16, 0.1, None, False)
    assert not r.has_dummy
    r = pixel_rule(np.float32, 0.1, None, True)
    assert r.bounds.dtype == np.float32 and r.bounds[0] == np.float32(0.1)
    with pytest.raises(ValueError, match="dummy"):
        pixel_rule(np.float32, np.nan, None, False)
    with pytest.raises(ValueError, match="delta_dummy"):
        pixel_rule(np.float32, 1.0, -1, False)


def test_dummy_compared_in_the_frame_type(ai, geometry):
    """Finding 1: a float64 frame with dummy=0.1 masks exactly the pixels equal to 0.1 in
    float64; a float32 frame the pixels equal to float32(0.1)."""
    frame = frame_of(geometry)
    bad = np.zeros(frame.shape, bool)
    bad[5:9, 3:40] = True
    want = ai.integrate1d(frame, 30, mask=bad)
    f64 = frame.copy()
    f64[bad] = 0.1
    np.testing.assert_allclose(ai.integrate1d(f64, 30, dummy=0.1).intensity, want.intensity,
                               rtol=1e-12)
    near = f64.copy()
    near[bad] = np.nextafter(0.1, 1)  # not the dummy in float64
    assert ai.integrate1d(near, 30, dummy=0.1).count.sum() == pytest.approx(
        ai.integrate1d(near, 30).count.sum(), rel=1e-12)
    f32 = f64.astype(np.float32)
    want32 = ai.integrate1d(frame.astype(np.float32), 30, mask=bad)
    np.testing.assert_allclose(ai.integrate1d(f32, 30, dummy=0.1).intensity, want32.intensity,
                               rtol=1e-12)


def test_max_value_invalid_is_a_detector_property(geometry):
    """Finding 7: 255 in a uint8 frame is data for an 8-bit camera and an invalid mark for a
    Dectris detector (max_value_invalid), on every back end."""
    from xreduce import AzimuthalIntegrator

    frame = np.full(geometry.detector.shape, 100, np.uint8)
    frame[10:20] = 255
    plain = AzimuthalIntegrator(geometry)
    dectris = AzimuthalIntegrator(geometry.with_(detector=geometry.detector.__class__(
        172e-6, 172e-6, geometry.detector.shape, max_value_invalid=True)))
    npix = frame.size
    for method in [("bbox", "csr", "cython"), ("no", "histogram", "cython"),
                   ("bbox", "histogram", "cython")]:
        kept = plain.integrate1d(frame, 20, method=method, correct_solid_angle=False)
        assert kept.count.sum() == pytest.approx(npix, rel=1e-9)
        assert kept.intensity.max() > 100
        dropped = dectris.integrate1d(frame, 20, method=method, correct_solid_angle=False)
        assert dropped.count.sum() == pytest.approx(npix - 500, rel=1e-9)
        np.testing.assert_allclose(dropped.intensity[dropped.count > 0], 100, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int16, np.int32,
                                   np.int64, np.float32, np.float64])
@pytest.mark.parametrize("max_invalid", [False, True])
def test_numpy_rule_equals_reference(rng, dtype, max_invalid):
    """The rule in NumPy (preprocess.invalid_pixels) against the literal statement of
    tests/reference.py, value by value, with dummies on and beside integers."""
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    values = rng.integers(-5, 20, 500).astype(np.float64)
    values = np.concatenate([values, [info.max, 0.1, 7.5, 8, 7]])
    if np.dtype(dtype).kind == "f":
        values = np.concatenate([values, [np.nan, np.inf, -np.inf]])
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    with np.errstate(invalid="ignore"):
        frame = values.astype(dtype)
    for dummy, delta in [(None, None), (7.5, 0.6), (8, None), (0.1, None), (-2, 1)]:
        rule = pixel_rule(dtype, dummy, delta, max_invalid)
        got = invalid_pixels(frame, rule)
        want = ~reference.valid_values_reference(frame, dummy, delta or 0.0, max_invalid)
        np.testing.assert_array_equal(got, want, err_msg=f"{dummy} {delta}")


def test_nan_dark_or_variance_masks_the_pixel(ai, geometry):
    """Finding 11: one NaN in dark or variance masks that pixel (as pyFAI does) instead of
    turning its bins into NaN, on the CSR and histogram engines."""
    frame = frame_of(geometry)
    bad = np.zeros(frame.shape, bool)
    bad[20, 20] = True
    dark = np.full(frame.shape, 1.0, np.float32)
    variance = np.full(frame.shape, 4.0, np.float32)
    for method in [("bbox", "csr", "cython"), ("full", "csr", "cython"),
                   ("bbox", "histogram", "cython")]:
        want = ai.integrate1d(frame, 30, dark=dark, variance=variance, mask=bad, method=method)
        d = dark.copy()
        d[bad] = np.nan
        got = ai.integrate1d(frame, 30, dark=d, variance=variance, method=method)
        assert np.isfinite(got.intensity).all() and np.isfinite(got.sigma).all()
        np.testing.assert_allclose(got.intensity, want.intensity, rtol=1e-12)
        v = variance.copy()
        v[bad] = np.inf
        got = ai.integrate1d(frame, 30, dark=dark, variance=v, method=method)
        np.testing.assert_allclose(got.sigma, want.sigma, rtol=1e-12)


def test_masked_array_mask_is_used(ai, geometry):
    """Finding 11: a numpy.ma frame's mask masks its pixels (shared or per frame), and a
    numpy.ma flat's mask too."""
    frame = frame_of(geometry)
    bad = np.zeros(frame.shape, bool)
    bad[:, :7] = True
    want = ai.integrate1d(frame, 30, mask=bad)
    got = ai.integrate1d(np.ma.masked_array(frame * np.where(bad, 1e6, 1), bad), 30)
    np.testing.assert_allclose(got.intensity, want.intensity, rtol=1e-12)
    stack = np.ma.masked_array(np.stack([frame, frame]), np.stack([bad, ~bad]))
    got = ai.integrate1d(stack, 30)
    np.testing.assert_allclose(got.intensity[0], want.intensity, rtol=1e-12)
    # masks that differ between frames: the masked values become NaN (same default range)
    np.testing.assert_allclose(got.intensity[1],
                               ai.integrate1d(np.where(~bad, np.nan, frame), 30).intensity,
                               rtol=1e-12)
    flat = np.ma.masked_array(np.ones(frame.shape), bad)
    np.testing.assert_allclose(ai.integrate1d(frame, 30, flat=flat).intensity, want.intensity,
                               rtol=1e-12)


# ------------------------------------------------------------------ geometry is read-only
def test_geometry_assignment_raises(ai, geometry):
    """Finding 3: ai.wavelength = ... used to be accepted and ignored."""
    for name, value in [("wavelength", 5e-11), ("dist", 0.2), ("rot1", 0.1), ("poni1", 0.0)]:
        with pytest.raises(AttributeError, match="with_geometry"):
            setattr(ai, name, value)
    with pytest.raises(AttributeError, match="no settable attribute"):
        ai.not_a_parameter = 1
    assert ai.wavelength == geometry.wavelength
    ai2 = ai.with_geometry(wavelength=5e-11, dist=0.06)
    assert ai2.wavelength == 5e-11 and ai2.dist == 0.06 and ai.wavelength == 1e-10
    frame = frame_of(geometry)
    q1 = ai.integrate1d(frame, 20, unit="q_nm^-1").radial
    q2 = ai2.integrate1d(frame, 20, unit="q_nm^-1").radial
    assert not np.allclose(q1, q2)
    ai.pickle_engines = True  # the one settable attribute
    assert pickle.loads(pickle.dumps(ai)).pickle_engines


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("call, argument", [
    (lambda ai, f: ai.integrate1d(f, 10**9), "npt"),
    (lambda ai, f: ai.integrate2d(f, 10**5, 10**5), "npt_rad x npt_azim"),
    (lambda ai, f: ai.integrate1d(f, 2**31), "npt"),
    (lambda ai, f: ai.integrate2d(f, 2**16, 2**16), "npt_rad x npt_azim"),
    (lambda ai, f: ai.sigma_clip(f, 10**9), "npt"),
    (lambda ai, f: ai.medfilt1d(f, 10**10), "npt"),
    (lambda ai, f: ai.integrate_radial(f, 10**9), "npt"),
])
def test_absurd_sizes_refused_before_allocating(ai, geometry, call, argument, monkeypatch):
    """Finding 12: sizes are checked against the memory they imply, naming the argument."""
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(2**30))
    frame = frame_of(geometry)
    with pytest.raises((MemoryError, ValueError), match=argument):
        call(ai, frame)
    assert len(ai.engines) == 0  # refused before any engine was built


def test_histogram_accumulators_are_bounded(ai, geometry, monkeypatch):
    """Finding 6: the histogram engine goes through the frames in blocks, so its per-thread
    accumulators stay within ACCUMULATOR_BYTES; the result equals one frame at a time."""
    from xreduce.engines import histogram

    stack = np.stack([frame_of(geometry, seed=s) for s in range(5)])
    method = ("bbox", "histogram", "cython")
    whole = ai.integrate2d(stack, 20, 12, method=method, error_model="azimuthal")
    monkeypatch.setattr(histogram, "ACCUMULATOR_BYTES", 1)  # one frame per block
    blocks = ai.integrate2d(stack, 20, 12, method=method, error_model="azimuthal")
    for name in ("intensity", "sigma", "count"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))


# ------------------------------------------------------------------ cache and fingerprints
def test_cache_builds_each_key_once_and_never_blocks_other_keys():
    """Finding 4: a slow build of one key does not hold up a call for a cached key."""
    cache = EngineCache(max_engines=4)
    cache.get_or_create("cached", lambda: "fast")
    started, release = threading.Event(), threading.Event()
    builds = []

    def slow():
        builds.append(1)
        started.set()
        release.wait(10)
        return "slow"

    threads = [threading.Thread(target=cache.get_or_create, args=("new", slow))
               for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(10)
    t0 = time.perf_counter()
    assert cache.get_or_create("cached", lambda: "never") == "fast"
    waited = time.perf_counter() - t0
    release.set()
    for t in threads:
        t.join()
    assert waited < 5  # not the 10 s of the slow build
    assert builds == [1] and cache.get_or_create("new", lambda: "never") == "slow"


def test_cache_failed_build_is_not_cached_and_bounded():
    cache = EngineCache(max_engines=2)
    with pytest.raises(ZeroDivisionError):
        cache.get_or_create("k", lambda: 1 / 0)
    assert cache.get_or_create("k", lambda: 5) == 5
    for k in "abc":
        cache.get_or_create(k, lambda: k)
    assert len(cache) == 2
    with pytest.raises(ValueError, match="max_engines"):
        EngineCache(0)


def test_read_only_corrections_fingerprinted_once(ai, geometry, monkeypatch):
    """Finding 5: a read-only flat and mask are fingerprinted once, then recognised by
    identity; a writeable one is fingerprinted each call (it may change in place)."""
    from xreduce.engines import preprocess

    calls = []
    real = preprocess._crc
    monkeypatch.setattr(preprocess, "_crc", lambda a: calls.append(a.shape) or real(a))
    frame = frame_of(geometry)
    flat = np.ones(frame.shape, np.float32)
    mask = np.zeros(frame.shape, np.uint8)
    flat.setflags(write=False)
    mask.setflags(write=False)
    for _ in range(3):
        ai.integrate1d(frame, 20, flat=flat, mask=mask)
    first = len(calls)
    for _ in range(3):
        ai.integrate1d(frame, 20, flat=flat, mask=mask)
    assert len(calls) == first  # nothing fingerprinted again
    writeable = np.ones(frame.shape, np.float32)
    r1 = ai.integrate1d(frame, 20, flat=writeable, correct_solid_angle=False)
    writeable *= 2  # changed in place: seen
    r2 = ai.integrate1d(frame, 20, flat=writeable, correct_solid_angle=False)
    np.testing.assert_allclose(r2.intensity, r1.intensity / 2, rtol=1e-12)
    view = np.ones(frame.shape, np.float32)
    ro_view = view[:]
    ro_view.setflags(write=False)
    assert not preprocess._is_frozen(ro_view)  # its base is writeable


def test_threads_mixed_calls_bitwise_equal_while_building(geometry):
    """8 threads x 12 mixed cached calls on one integrator while another thread builds a new
    engine: every result bitwise equal to the serial call (the timing side is
    benchmarks/bench_threads.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import bench_threads
    from xreduce import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry, max_engines=16)
    rng = np.random.default_rng(3)
    frame = rng.poisson(50, geometry.detector.shape).astype(np.int32)
    flat = rng.uniform(0.9, 1.1, geometry.detector.shape)
    mask = np.zeros(geometry.detector.shape, np.uint8)
    mask[:, :3] = 1
    call = bench_threads._caller(ai, frame, flat, mask)
    serial = [call(k) for k in range(len(bench_threads.CALLS))]
    kinds = list(rng.integers(0, len(bench_threads.CALLS), 8 * 12))
    built = []
    times, mismatches, _ = bench_threads.run_threads(
        call, kinds, 8, serial,
        build=lambda: built.append(ai.integrate2d(frame, 50, 36, method="full_csr")))
    assert mismatches == [] and sum(len(t) for t in times.values()) == len(kinds)
    assert len(built) == 1


def test_crafted_engine_file_is_refused_not_crashing(ai, geometry, tmp_path):
    """Finding 2: an engine file whose indices point past the detector used to segfault on
    the next integrate1d; now load_engine refuses it, naming the dataset."""
    import h5py

    frame = frame_of(geometry)
    want = ai.integrate1d(frame, 20)
    path = tmp_path / "engines.h5"
    ai.save_engine(path)
    with h5py.File(path, "r+") as h5:
        indices = h5["engines/engine_000/indices"]
        indices[5] = frame.size + 1000
    from xreduce import AzimuthalIntegrator

    with pytest.raises(ValueError, match="indices"):
        AzimuthalIntegrator.load_engine(path)
    with h5py.File(path, "r+") as h5:
        h5["engines/engine_000/indices"][5] = 0
    loaded = AzimuthalIntegrator.load_engine(path)
    assert len(loaded.engines) == 1
    import silx.io.nxdata

    with h5py.File(path, "r") as h5:  # a NeXus file silx can show
        assert silx.io.nxdata.get_default(h5) is not None
    np.testing.assert_array_equal(ai.integrate1d(frame, 20).intensity, want.intensity)


def test_kernels_check_shapes_at_entry():
    """O(1) checks at every kernel entry: inconsistent arrays give a ValueError naming the
    argument instead of reading out of bounds."""
    from xreduce.ext import csr_integrate

    indptr = np.array([0, 2, 3], np.int32)
    indices = np.array([0, 1, 2], np.int32)
    coef = np.ones(3, np.float32)
    frames = np.ones((1, 4), np.float32)
    rule = pixel_rule(np.float32, None, None, False)

    def run(**change):
        a = dict(frames=frames, indptr=indptr, indices=indices, coef=coef,
                 norm=np.ones(4), static=np.ones(2), dark=np.zeros(0, np.float32),
                 has_dark=False, variance=np.zeros((1, 0), np.float32), mode=0,
                 bounds=rule.bounds, out=[np.empty((1, 2)) for _ in range(5)],
                 finished=None)
        a.update(change)
        csr_integrate.integrate_frames(
            a["frames"], a["indptr"], a["indices"], a["coef"], True, a["norm"], a["static"],
            a["static"], a["static"], a["dark"], a["has_dark"], a["variance"], a["mode"],
            True, False, False, a["bounds"], *a["out"], finished=a["finished"])

    run()
    for change, name in [(dict(indptr=np.array([0, 2, 9], np.int32)), "indptr"),
                         (dict(coef=np.ones(2, np.float32)), "coef"),
                         (dict(norm=np.ones(3)), "norm"),
                         (dict(static=np.ones(3)), "static_norm"),
                         (dict(dark=np.zeros(2, np.float32), has_dark=True), "dark"),
                         (dict(mode=2), "variance"), (dict(mode=7), "error_mode"),
                         (dict(bounds=np.zeros(1, np.float32)), "dummy_bounds"),
                         (dict(out=[np.empty((2, 2)) for _ in range(5)]), "out"),
                         (dict(finished=np.empty((3, 1, 3))), "finished")]:
        with pytest.raises(ValueError, match=name):
            run(**change)


@pytest.mark.parametrize("model", [None, "poisson", "azimuthal", "variance"])
@pytest.mark.parametrize("npt_azim", [None, 36])
def test_results_made_in_the_kernel_pass_equal_the_separate_finish(ai, geometry, model,
                                                                    npt_azim):
    """The Cython CSR engine makes intensity, sigma and std in its pass over the matrix
    (``Sums.finished``); they equal, bit for bit, ``csr_integrate.finish`` applied to the
    same sums afterwards, empty bins (a radial range beyond the detector) included."""
    from xreduce.engines.cython_csr import CsrEngine
    from xreduce.ext import csr_integrate

    frames = np.stack([frame_of(geometry, np.float32, seed) for seed in range(3)])
    frames[1, 5, 5] = np.nan
    variance = frames + 1.0 if model == "variance" else None
    options = dict(unit="2th_deg", radial_range=(0.0, 60.0), empty=-7.0, dummy=33.0,
                   delta_dummy=2.0, error_model=model, variance=variance,
                   method=("bbox", "csr", "cython"))
    calls = []
    real = CsrEngine.integrate

    def spy(self, args, norm, empty=None):
        sums = real(self, args, norm, empty=empty)
        calls.append(sums)
        return sums

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CsrEngine, "integrate", spy)
        if npt_azim is None:
            res = ai.integrate1d(frames, 40, **options)
        else:
            res = ai.integrate2d(frames, 40, npt_azim, **options)
    (sums,) = calls
    assert sums.finished is not None
    with_errors = model is not None
    expected = np.empty((3,) + sums.signal.shape)
    csr_integrate.finish(*(a.reshape(-1) for a in (sums.signal, sums.variance, sums.norm,
                                                    sums.norm2)), -7.0, with_errors,
                         *(e.reshape(-1) for e in expected))
    assert (sums.norm == 0).any()  # some empty bins
    np.testing.assert_array_equal(res.intensity.reshape(3, -1), expected[0])
    assert np.array_equal(sums.finished[0], expected[0])
    if with_errors:
        assert np.array_equal(sums.finished[1:], expected[1:])
        np.testing.assert_array_equal(res.sigma.reshape(3, -1), expected[1])
    else:
        assert res.sigma is None


def test_histogram_memory_is_bounded(ai, geometry, monkeypatch):
    """Finding 6: 40 frames of a 2D cake through the histogram engine allocate at most the
    results plus one block of accumulators (traced by tracemalloc), not threads x frames."""
    import tracemalloc

    from xreduce.engines import histogram
    from xreduce.ext.openmp_info import max_threads

    monkeypatch.setattr(histogram, "ACCUMULATOR_BYTES", 2**20)
    stack = np.stack([frame_of(geometry, seed=s) for s in range(40)])
    method = ("bbox", "histogram", "cython")
    ai.integrate2d(stack[:1], 60, 36, method=method)  # builds the engine
    tracemalloc.start()
    res = ai.integrate2d(stack, 60, 36, method=method, error_model="azimuthal")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    bins = 60 * 36
    unbounded = max_threads() * 40 * bins * 8 * 8
    results = 40 * bins * 8 * 12  # sums and results of the call, generously
    assert peak < results + 2 * 2**20 + 8 * bins * 8 * max_threads(), (peak, unbounded)
    assert np.isfinite(res.intensity[res.count > 0]).all()
