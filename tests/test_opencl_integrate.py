"""OpenCL CSR engine against the NumPy reference (tests/reference_opencl.py), on PoCL in CI.

Tolerance: 1e-5 relative to the largest |value| of each sum. The kernel accumulates in
double-word float32 (about 48 bits), so the sums themselves are exact to ~1e-13; what is left
is the float32 rounding of each product c * (raw - dark) (~6e-8 relative, no cancellation
amplification for positive data), hence 1e-5 is a loose, honest bound. With
precision="float64" the bound is 1e-12.
"""
import itertools
import os

import numpy as np
import pytest

import reference_opencl as ref

if os.environ.get("XREDUCE_REQUIRE_OPENCL"):
    import pyopencl as cl
else:
    cl = pytest.importorskip("pyopencl")

from xreduce.opencl import OpenCLUnavailableError  # noqa: E402
from xreduce.engines.opencl import OpenCLCsrEngine  # noqa: E402

KEYS = ("signal", "variance", "normalization", "normalization2", "count")


def _platform_exists():
    try:
        return any(p.get_devices() for p in cl.get_platforms())
    except cl.Error:
        return False


@pytest.fixture(scope="module")
def opencl_context():
    """A context on the first OpenCL device; skip only when none exists and CI does not ask."""
    if not _platform_exists():
        if os.environ.get("XREDUCE_REQUIRE_OPENCL"):
            pytest.fail("XREDUCE_REQUIRE_OPENCL is set but no OpenCL platform was found")
        pytest.skip("no OpenCL platform")
    return cl.Context([cl.get_platforms()[0].get_devices()[0]])


class Csr:
    def __init__(self, indptr, indices, data, npix):
        self.indptr, self.indices, self.data = indptr, indices, data
        self.shape = (len(indptr) - 1, npix)


def assert_sums_close(got, expected, rtol=1e-5):
    for key in KEYS:
        want = np.asarray(expected[key])
        scale = max(np.abs(want).max(), 1e-30)
        np.testing.assert_allclose(getattr(got, key), want, rtol=0, atol=rtol * scale,
                                   err_msg=key)
    np.testing.assert_array_equal(got.valid, expected["valid"])


@pytest.fixture(scope="module")
def problem():
    """A 100 x 80 detector, 300 bins, split coefficients, flat-like normalisation and dark."""
    rng = np.random.default_rng(4)
    npix = 100 * 80
    indptr, indices, data = ref.random_csr(rng, 300, npix, max_per_row=60)
    norm = rng.uniform(0.5, 1.5, npix).astype(np.float32)
    dark = rng.uniform(0, 3, npix).astype(np.float32)
    return rng, npix, indptr, indices, data, norm, dark


@pytest.mark.parametrize("error_model", ["none", "poisson", "variance", "azimuthal"])
@pytest.mark.parametrize("wg", [1, 16])
def test_error_models_match_reference(opencl_context, problem, error_model, wg):
    rng, npix, indptr, indices, data, norm, dark = problem
    frame = rng.poisson(200, size=(100, 80)).astype(np.uint16)
    frame.ravel()[rng.choice(npix, 50, replace=False)] = 65535      # the type's maximum
    frame.ravel()[rng.choice(npix, 50, replace=False)] = 7          # dummy pixels
    variance = rng.uniform(1, 50, npix).astype(np.float32) if error_model == "variance" else None
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix), normalization=norm,
                             device=opencl_context, workgroup_size=wg,
                             precision="float32")
    got = engine.integrate(frame, error_model=error_model, variance=variance, dark=dark,
                           dummy=7)
    want = ref.csr_sums(indptr, indices, data, frame, norm, dark, variance, error_model,
                        dummy=7)
    assert_sums_close(got, want)
    assert (got.valid < np.diff(indptr)).any(), "the dummy pixels must have been left out"


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
                                   np.uint64, np.int64, np.float32, np.float64, np.float16,
                                   ">u2"])
def test_raw_dtypes(opencl_context, problem, dtype):
    """Every frame dtype is read as is; signed ints mark bad pixels negative, floats NaN, every
    integer type its maximum."""
    rng, npix, indptr, indices, data, norm, _ = problem
    dtype = np.dtype(dtype)
    top = 100 if dtype.itemsize == 1 else 1000
    frame = rng.integers(0, top, npix).astype(dtype)
    bad = rng.choice(npix, 40, replace=False)
    if dtype.kind == "i":
        frame[bad] = -1
    elif dtype.kind == "f":
        frame[bad] = np.nan
    if dtype.kind in "iu":
        frame[bad[:5]] = np.iinfo(dtype).max
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix), normalization=norm,
                             device=opencl_context, precision="float32")
    got = engine.integrate(frame, error_model="poisson", max_value_invalid=True)
    want = ref.csr_sums(indptr, indices, data, frame.astype(frame.dtype.newbyteorder("=")), norm,
                        max_value_invalid=True)
    assert_sums_close(got, want)
    assert got.valid.sum() < len(indices)


def test_compact_matrix_without_coefficients(opencl_context, problem):
    """The no-split matrix has data=None: every coefficient is 1."""
    rng, npix, *_ = problem
    indptr, indices, _ = ref.random_csr(rng, 50, npix, split=False)
    frame = rng.integers(0, 5000, npix).astype(np.uint32)
    engine = OpenCLCsrEngine(Csr(indptr, indices, None, npix),
                             device=opencl_context, precision="float32")
    got = engine.integrate(frame, error_model="poisson")
    assert_sums_close(got, ref.csr_sums(indptr, indices, None, frame))
    np.testing.assert_array_equal(got.count, np.diff(indptr))


def test_compensated_float32_beats_plain_float32(opencl_context):
    """One bin of 200 000 pixels of value 1 + 1e-4 plus one of 1e4: the double-word sum is
    exact to 1e-12 where naive float32 summation would be off by ~1e-4 relative."""
    npix = 200_001
    indptr = np.array([0, npix], np.int32)
    indices = np.arange(npix, dtype=np.int32)
    frame = np.full(npix, 1 + 1e-4, np.float32)
    frame[0] = 1e4
    engine = OpenCLCsrEngine(Csr(indptr, indices, None, npix),
                             device=opencl_context, precision="float32")
    got = engine.integrate(frame, error_model="none")
    exact = np.float64(frame).sum()
    assert abs(got.signal[0] - exact) / exact < 1e-12
    assert abs(np.float32(0) + np.cumsum(frame, dtype=np.float32)[-1] - exact) / exact > 1e-7
    assert got.normalization[0] == npix and got.count[0] == npix


def test_float64_precision(opencl_context, problem):
    rng, npix, indptr, indices, data, norm, dark = problem
    device = opencl_context.devices[0]
    frame = rng.normal(100, 30, npix)
    if "cl_khr_fp64" not in device.extensions:
        with pytest.raises(ValueError, match="cl_khr_fp64"):
            OpenCLCsrEngine(Csr(indptr, indices, data, npix), device=opencl_context,
                            precision="float64")
        return
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix), normalization=norm,
                             device=opencl_context, precision="float64")
    got = engine.integrate(frame, error_model="azimuthal", dark=dark)
    want = ref.csr_sums(indptr, indices, data, frame, norm, dark, error_model="azimuthal")
    assert_sums_close(got, want, rtol=1e-7)  # float32 coefficients/norms are exact in both


@pytest.mark.parametrize("error_model", ["poisson", "azimuthal"])
def test_sigma_clip_matches_reference(opencl_context, problem, error_model):
    rng, npix, indptr, indices, data, norm, dark = problem
    frame = rng.poisson(300, npix).astype(np.int32)
    frame[rng.choice(npix, 200, replace=False)] = 30000      # outliers (Bragg peaks, zingers)
    frame[rng.choice(npix, 20, replace=False)] = -2           # bad pixels
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix), normalization=norm,
                             device=opencl_context, workgroup_size=8,
                             precision="float32")
    got = engine.sigma_clip(frame, thres=3.0, max_iter=5, error_model=error_model, dark=dark)
    want = ref.csr_sums(indptr, indices, data, frame, norm, dark, error_model=error_model,
                        clip_thres=3.0, max_iter=5)
    assert_sums_close(got, want)
    if error_model != "azimuthal":
        return
    # physics: with a flat normalisation, clipping on the azimuthal spread removes the outliers
    # and brings the bins back to the Poisson level (Poisson clipping around a mean pulled up by
    # the outliers drops the good pixels instead: the reason azimuthal is the usual choice)
    flat = OpenCLCsrEngine(Csr(indptr, indices, data, npix),
                           device=opencl_context, precision="float32")
    clipped = flat.sigma_clip(frame, thres=3.0, max_iter=5, error_model=error_model)
    plain = flat.integrate(frame, error_model=error_model)
    assert (clipped.valid < plain.valid).sum() > 10, "outliers must have been clipped"
    full = plain.valid > 20
    # (a bin holding several outliers can mask them: a known limit of sigma clipping)
    assert np.mean(np.abs(clipped.intensity[full] - 300) < 45) > 0.9
    assert np.mean(np.abs(plain.intensity[full] - 300) < 45) < 0.6


def test_stack_numpy_and_device_resident(opencl_context, problem):
    """Streaming a numpy stack and reading a pyopencl array in place give the per-frame sums."""
    import pyopencl.array as cla
    rng, npix, indptr, indices, data, norm, dark = problem
    stack = rng.poisson(50, size=(5, 100, 80)).astype(np.uint32)
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix), normalization=norm,
                             device=opencl_context, precision="float32")
    streamed = engine.integrate_stack(stack, error_model="azimuthal", dark=dark)
    queue = cl.CommandQueue(opencl_context)
    resident = engine.integrate_stack(cla.to_device(queue, stack), error_model="azimuthal",
                                      dark=dark)
    for i in range(len(stack)):
        single = engine.integrate(stack[i], error_model="azimuthal", dark=dark)
        for key in KEYS + ("valid",):
            np.testing.assert_array_equal(getattr(streamed, key)[i], getattr(single, key))
            np.testing.assert_array_equal(getattr(resident, key)[i], getattr(single, key))
    assert streamed.signal.shape == (5, 300)


def test_empty_rows_and_all_invalid_bins_are_zero(opencl_context):
    indptr = np.array([0, 0, 2, 4], np.int32)
    indices = np.array([0, 1, 2, 3], np.int32)
    frame = np.array([5, 6, -1, -1], np.int16)
    engine = OpenCLCsrEngine(Csr(indptr, indices, None, 4), normalization=[0.3, 0.7, 0.9, 1.1],
                             device=opencl_context, precision="float32")
    got = engine.integrate(frame)
    np.testing.assert_array_equal(got.valid, [0, 2, 0])
    np.testing.assert_array_equal(
        got.normalization, [0, np.float64(np.float32(0.3)) + np.float64(np.float32(0.7)), 0])
    assert np.isnan(got.intensity[0]) and np.isnan(got.intensity[2])


# ------------------------------------------------------------------------- bad input
def test_bad_dtypes_raise_type_error(opencl_context, problem):
    rng, npix, indptr, indices, data, *_ = problem
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix),
                             device=opencl_context, precision="float32")
    for dtype in (np.complex64, bool):
        with pytest.raises(TypeError, match="frame: expected an integer or float image"):
            engine.integrate(np.zeros(npix, dtype))
        with pytest.raises(TypeError, match="stack"):
            engine.integrate_stack(np.zeros((2, npix), dtype))


def test_bad_shapes_and_options(opencl_context, problem):
    rng, npix, indptr, indices, data, *_ = problem
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix),
                             device=opencl_context, precision="float32")
    with pytest.raises(ValueError, match=f"frame: expected {npix} pixels"):
        engine.integrate(np.zeros(npix + 1, np.uint16))
    with pytest.raises(ValueError, match="error_model"):
        engine.integrate(np.zeros(npix, np.uint16), error_model="gaussian")
    with pytest.raises(ValueError, match="variance"):
        engine.integrate(np.zeros(npix, np.uint16), error_model="variance")
    with pytest.raises(ValueError, match="precision"):
        OpenCLCsrEngine(Csr(indptr, indices, data, npix), device=opencl_context, precision="half")
    with pytest.raises(ValueError, match="indices"):
        OpenCLCsrEngine(Csr(indptr, indices, data, 10), device=opencl_context, precision="float32")


def test_frame_larger_than_device_memory(opencl_context, problem, monkeypatch):
    """A frame beyond the device's memory raises MemoryError naming the sizes, before upload."""
    rng, npix, indptr, indices, data, *_ = problem
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix),
                             device=opencl_context, precision="float32")

    class TinyDevice:
        name = "tiny"
        extensions = engine.device.extensions
        global_mem_size = 1000
        max_mem_alloc_size = 1000
    monkeypatch.setattr(engine, "device", TinyDevice())
    with pytest.raises(MemoryError, match="frame.*MiB.*tiny"):
        engine.integrate(np.zeros(npix, np.uint16))


def test_absent_device_is_a_clear_error(opencl_context, problem):
    rng, npix, indptr, indices, data, *_ = problem
    with pytest.raises(OpenCLUnavailableError, match="no OpenCL platform 99.*PoCL"):
        OpenCLCsrEngine(Csr(indptr, indices, data, npix), device=(99, 0))
    with pytest.raises(ValueError, match="device"):
        OpenCLCsrEngine(Csr(indptr, indices, data, npix), device="tpu")


# ------------------------------------------------------------- against the Cython engine
@pytest.fixture(scope="module")
def flat_detector():
    """Pixel corners and centres (2theta in degrees, chi in radians) of a 100 x 80 flat
    detector, 172 um pixels, 0.1 m away, beam off-centre; frames, dark, normalisation."""
    rows, cols, pixel, dist = 100, 80, 172e-6, 0.1
    r_edge = (np.arange(rows + 1) - 30.3) * pixel
    c_edge = (np.arange(cols + 1) - 20.7) * pixel

    def positions(y, x):
        return np.stack([np.degrees(np.arctan2(np.hypot(y, x), dist)), np.arctan2(y, x)], -1)

    y, x = np.meshgrid(r_edge, c_edge, indexing="ij")
    edges = positions(y, x)
    corners = np.stack([edges[:-1, :-1], edges[1:, :-1], edges[1:, 1:], edges[:-1, 1:]], axis=2)
    yc, xc = np.meshgrid(0.5 * (r_edge[1:] + r_edge[:-1]), 0.5 * (c_edge[1:] + c_edge[:-1]),
                         indexing="ij")
    rng = np.random.default_rng(7)
    npix = rows * cols
    frames = rng.poisson(1000, size=(3, npix)).astype(np.uint32)
    frames[:, rng.choice(npix, 30, replace=False)] = np.iinfo(np.uint32).max
    frames[:, rng.choice(npix, 30, replace=False)] = 5        # dummy
    norm = rng.uniform(0.6, 1.2, npix)
    norm[rng.choice(npix, 10, replace=False)] = 0.0          # unusable: dropped from the matrix
    return dict(corners=corners, centers=positions(yc, xc), frames=frames, npix=npix,
                dark=rng.uniform(0, 20, npix).astype(np.float32),
                variance=rng.uniform(500, 1500, (3, npix)).astype(np.float32), norm=norm)


CROSS_CASES = [(split, npt_azim, model, precision)
               for split in ("no", "bbox", "pseudo", "full") for npt_azim in (None, 36)
               for model in (None, "poisson", "variance", "azimuthal")
               for precision in ("float32", "float64")
               if precision == "float32" or split == "bbox"]


@pytest.mark.parametrize("split,npt_azim,error_model,precision", CROSS_CASES)
def test_same_sums_as_cython_engine(opencl_context, flat_detector, split, npt_azim, error_model,
                                    precision):
    """Every split, 1D and 2D, every error model in compensated float32 (float64 for bbox): the
    OpenCL engine's sums equal the Cython engine's (float64 accumulation) bin by bin within
    1e-6 relative in float32 mode (each product rounded to float32: 6e-8, summed without
    cancellation) and 1e-12 in float64 (summation order only), with an absolute floor of 1e-3
    of that bound times the largest value, for bins that cancel out."""
    if precision == "float64" and "cl_khr_fp64" not in opencl_context.devices[0].extensions:
        pytest.skip("the device has no float64")
    from xreduce.engines import CsrEngine, EngineKey, FrameArgs, Normalisation, pixel_rule
    from xreduce.engines.opencl import OpenCLIntegrationEngine
    from xreduce.sparse import build_csr_from_arrays

    d = flat_detector
    npt = 50 if npt_azim is None else 40
    matrix = build_csr_from_arrays(d["corners"] if split != "no" else None, d["centers"], npt,
                                   npt_azim, split=split, unit="2th_deg")
    key = EngineKey("csr", "opencl", split, "2th_deg", npt, npt_azim, None, None, None)
    cpu = CsrEngine(key, matrix)
    gpu = OpenCLIntegrationEngine(cpu, device=opencl_context, precision=precision)
    norm = Normalisation(("test", split), d["norm"], ~(d["norm"] > 0))
    rule = pixel_rule(d["frames"].dtype, 5.0, 0.0, True)
    args = FrameArgs(d["frames"], d["dark"], d["variance"] if error_model == "variance" else None,
                     error_model, rule)
    want = cpu.integrate(args, norm)
    got = gpu.integrate(args, norm)
    assert gpu.device_engines[-1].precision == precision  # the precision asked is the one run
    for name in ("signal", "variance", "norm", "norm2", "count"):
        rtol = 1e-12 if precision == "float64" else 1e-6
        expected = getattr(want, name)
        np.testing.assert_allclose(getattr(got, name), expected, rtol=rtol,
                                   atol=rtol * 1e-3 * np.abs(expected).max(), err_msg=name)
    assert (want.norm > 0).mean() > 0.4  # a real comparison: most bins hold pixels


def test_default_precision(opencl_context, problem):
    """precision=None: float64 on a CPU device with cl_khr_fp64 (PoCL), compensated float32
    on GPUs."""
    rng, npix, indptr, indices, data, *_ = problem
    engine = OpenCLCsrEngine(Csr(indptr, indices, data, npix), device=opencl_context)
    device = opencl_context.devices[0]
    cpu_fp64 = bool(device.type & cl.device_type.CPU) and "cl_khr_fp64" in device.extensions
    assert engine.precision == ("float64" if cpu_fp64 else "float32")


# ------------------------------------------------------ through AzimuthalIntegrator methods
@pytest.fixture(scope="module")
def small_integrator():
    """An integrator for a 100 x 80 detector (172 um pixels, 2 masked rows), beam off-centre."""
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    mask = np.zeros((100, 80), np.uint8)
    mask[40:42] = 1
    det = Detector(172e-6, 172e-6, (100, 80), mask=mask, name="test")
    geometry = Geometry(dist=0.05, poni1=0.006, poni2=0.004, rot1=0.02, rot2=-0.01, rot3=0.0,
                        wavelength=1e-10, detector=det)
    return AzimuthalIntegrator(geometry)


@pytest.mark.parametrize("split", ["no", "bbox", "full"])
@pytest.mark.parametrize("two_d", [False, True], ids=["1d", "2d"])
def test_integrator_opencl_method_equals_cython(opencl_context, small_integrator, split, two_d):
    """integrate1d/2d with (split, "csr", "opencl") give Cython's intensity, sigma and sums
    within 1e-5 relative, with corrections (solid angle, polarisation) and a masked area."""
    rng = np.random.default_rng(3)
    frame = rng.poisson(500, (100, 80)).astype(np.int32)
    frame[5, 5] = -1
    ai = small_integrator

    def run(impl):
        if two_d:
            return ai.integrate2d(frame, 40, 36, unit="2th_deg", method=(split, "csr", impl),
                                  error_model="azimuthal", polarization_factor=0.9)
        return ai.integrate1d(frame, 60, unit="q_nm^-1", method=(split, "csr", impl),
                              error_model="poisson", polarization_factor=0.9)
    want, got = run("cython"), run("opencl")
    assert got.method == (split, "csr", "opencl")
    filled = np.asarray(want.sum_normalization) > 0
    assert filled.mean() > 0.4
    for name in ("intensity", "sigma", "std", "sum_signal", "sum_normalization", "count"):
        w, g = np.asarray(getattr(want, name))[filled], np.asarray(getattr(got, name))[filled]
        assert np.isfinite(g).all(), name
        # the Cython engine's single-pass spread can round to a tiny negative value in a bin
        # of one pixel and give NaN there (reported); compare where it is finite
        finite = np.isfinite(w)
        assert finite.mean() > 0.99
        np.testing.assert_allclose(g[finite], w[finite], rtol=1e-5,
                                   atol=1e-9 * np.abs(w[finite]).max(), err_msg=name)


def test_integrator_without_opencl_device(opencl_context, small_integrator, monkeypatch):
    """No driver or device (simulated: the glue raises as it does then): "opencl" raises
    OpenCLUnavailableError naming PoCL; "any" falls back to the Cython engine, same result."""
    from xreduce.engines import CsrEngine
    from xreduce.integrator import AzimuthalIntegrator

    frame = np.random.default_rng(1).poisson(100, (100, 80)).astype(np.uint16)
    ai = AzimuthalIntegrator(small_integrator.geometry)
    monkeypatch.setattr("xreduce.engines.opencl.get_context", _no_device)
    with pytest.raises(OpenCLUnavailableError, match="PoCL"):
        ai.integrate1d(frame, 50, method=("bbox", "csr", "opencl"))
    fallback = ai.integrate1d(frame, 50, method=("bbox", "csr", "any"))
    reference = ai.integrate1d(frame, 50, method=("bbox", "csr", "cython"))
    np.testing.assert_array_equal(fallback.intensity, reference.intensity)
    assert any(key.implementation == "any" and isinstance(engine, CsrEngine)
               for key, engine in ai.engines)


def _no_device(device=None):
    raise OpenCLUnavailableError("no OpenCL platform found")


# ------------------------------------------------ device-resident stacks through the integrator
@pytest.mark.parametrize("two_d", [False, True], ids=["1d", "2d"])
def test_integrator_device_resident_stack(opencl_context, small_integrator, two_d, monkeypatch):
    """A pyopencl array (a stack, or one frame of it) given to integrate1d/2d with method
    (split, "csr", "opencl") is integrated in place on its own context: the kernel reads the
    device buffer (no host copy: the engine receives the device array itself) and the result
    equals that of the host stack within 1e-5 relative (same kernel, same sums: the only
    difference is the order of nothing, so in practice it is exact)."""
    import pyopencl.array as cla

    from xreduce.engines import opencl as opencl_engine

    rng = np.random.default_rng(11)
    stack = rng.poisson(300, (3, 100, 80)).astype(np.uint16)
    stack[1, 7, 9] = 65535
    queue = cl.CommandQueue(opencl_context)
    d_stack = cla.to_device(queue, stack)
    ai = small_integrator
    method = ("bbox", "csr", "opencl")

    def run(data):
        if two_d:
            return ai.integrate2d(data, 30, 24, unit="2th_deg", method=method,
                                  error_model="azimuthal")
        return ai.integrate1d(data, 50, unit="q_nm^-1", method=method, error_model="poisson")

    seen = []
    real = opencl_engine.OpenCLCsrEngine.integrate_stack

    def spy(self, stack_arg, *args, **kwargs):
        seen.append(type(stack_arg))
        return real(self, stack_arg, *args, **kwargs)

    host = run(stack)
    monkeypatch.setattr(opencl_engine.OpenCLCsrEngine, "integrate_stack", spy)
    device = run(d_stack)
    one = run(d_stack[2])
    assert seen == [cla.Array, cla.Array]
    assert device.intensity.shape == host.intensity.shape
    assert one.intensity.shape == host.intensity.shape[1:]
    for name in ("intensity", "sigma", "sum_signal", "sum_normalization", "count"):
        want = np.asarray(getattr(host, name))
        scale = np.nanmax(np.abs(want))
        np.testing.assert_allclose(getattr(device, name), want, rtol=0, atol=1e-5 * scale,
                                   err_msg=name)
        np.testing.assert_allclose(getattr(one, name), want[2], rtol=0, atol=1e-5 * scale,
                                   err_msg=name)


def test_device_array_to_a_host_method_is_a_type_error(opencl_context, small_integrator):
    """The Cython/NumPy methods never copy a device array behind the user's back: a clear
    TypeError names the OpenCL method and .get()."""
    import pyopencl.array as cla

    queue = cl.CommandQueue(opencl_context)
    d_frame = cla.to_device(queue, np.ones((100, 80), np.float32))
    ai = small_integrator
    with pytest.raises(TypeError, match=r"data: .*'opencl'.*\.get\(\)"):
        ai.integrate1d(d_frame, 20, method=("bbox", "csr", "cython"))
    with pytest.raises(TypeError, match="opencl"):
        ai.integrate2d(d_frame, 20, 8, method=("no", "histogram", "cython"))
    with pytest.raises(TypeError, match="opencl"):
        ai.sigma_clip(d_frame, 20)
    with pytest.raises(ValueError, match="data: expected a frame of shape"):
        ai.integrate1d(cla.to_device(queue, np.ones((10, 80), np.float32)), 20,
                       method=("bbox", "csr", "opencl"))


# ---------------------------------------------------- sigma clipping through the integrator
@pytest.fixture(scope="module")
def peaky_frame():
    """Poisson background (mean 200) with 60 injected peaks of 5000 counts and one NaN."""
    rng = np.random.default_rng(21)
    frame = rng.poisson(200, (100, 80)).astype(np.float32)
    peaks = rng.choice(100 * 80, 60, replace=False)
    frame.ravel()[peaks] += 5000
    frame[3, 4] = np.nan
    return frame


def test_integrator_sigma_clip_opencl_equals_numpy(opencl_context, small_integrator, peaky_frame):
    """sigma_clip with method ("no", "csr", "opencl") is the NumPy default's definition (rings
    by pixel centre, weights = normalisation, azimuthal spread, same rejection rule and
    stopping): the same pixels are kept (count equal exactly) and intensity, sigma, std and
    sums agree within 1e-5 relative (float rounding of the means only). The injected peaks
    are rejected: the clipped mean is close to the background, the plain mean is not."""
    ai = small_integrator
    kwargs = dict(unit="2th_deg", thres=3.0, max_iter=5, polarization_factor=0.9)
    want = ai.sigma_clip(peaky_frame, 40, **kwargs)
    got = ai.sigma_clip(peaky_frame, 40, method=("no", "csr", "opencl"), **kwargs)
    same = ai.sigma_clip(peaky_frame, 40, method=("no", "csr", "cython"), **kwargs)
    assert got.method == ("no", "csr", "opencl")
    assert got.error_model == "azimuthal"
    np.testing.assert_array_equal(same.intensity, want.intensity)
    np.testing.assert_array_equal(got.count, want.count)
    plain = ai.integrate1d(peaky_frame, 40, method=("no", "csr", "cython"), unit="2th_deg",
                           polarization_factor=0.9)
    assert want.count.sum() < plain.count.sum() - 55  # the peaks (at least) were rejected
    for name in ("intensity", "sigma", "std", "sum_signal", "sum_normalization",
                 "sum_normalization2"):
        w, g = np.asarray(getattr(want, name)), np.asarray(getattr(got, name))
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=name)
        ok = ~np.isnan(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=1e-5, atol=1e-9 * np.abs(w[ok]).max(),
                                   err_msg=name)


def test_integrator_sigma_clip_opencl_stack_on_device(opencl_context, small_integrator,
                                                      peaky_frame):
    """A device-resident stack is clipped frame by frame on the device, each frame as the
    NumPy default (count exact, intensity within 1e-5 relative)."""
    import pyopencl.array as cla

    ai = small_integrator
    stack = np.stack([peaky_frame, np.roll(peaky_frame, 7, axis=1)])
    queue = cl.CommandQueue(opencl_context)
    got = ai.sigma_clip(cla.to_device(queue, stack), 30, unit="q_nm^-1", thres=4.0,
                        method=("no", "csr", "opencl"))
    assert got.intensity.shape == (2, 30)
    for i in range(2):
        want = ai.sigma_clip(stack[i], 30, unit="q_nm^-1", thres=4.0)
        np.testing.assert_array_equal(got.count[i], want.count)
        ok = ~np.isnan(want.intensity)
        np.testing.assert_allclose(got.intensity[i][ok], want.intensity[ok], rtol=1e-5)


def test_integrator_sigma_clip_bad_method(small_integrator, peaky_frame):
    """The NumPy sigma_clip exists for split "no" only; other algorithms are refused."""
    with pytest.raises(ValueError, match="method"):
        small_integrator.sigma_clip(peaky_frame, 20, method=("bbox", "csr", "cython"))
    with pytest.raises(ValueError, match="method"):
        small_integrator.sigma_clip(peaky_frame, 20, method=("no", "histogram", "cython"))


# ------------------------------------------------------------- one matrix for both back ends
def test_opencl_engine_reuses_the_cython_matrix(opencl_context, small_integrator, monkeypatch):
    """Creating an OpenCL engine builds the matrix once, through the integrator's cache: the
    Cython engine of the same key is reused (reentrant cache lock), so "opencl", "cython" and
    "any" for one key cost one build_csr call and share one matrix object."""
    import xreduce.sparse
    from xreduce.integrator import AzimuthalIntegrator

    calls = []
    real = xreduce.sparse.build_csr

    def counting(*args, **kwargs):
        calls.append(kwargs.get("split"))
        return real(*args, **kwargs)

    monkeypatch.setattr(xreduce.sparse, "build_csr", counting)
    ai = AzimuthalIntegrator(small_integrator.geometry)
    frame = np.random.default_rng(5).poisson(100, (100, 80)).astype(np.uint16)
    ocl = ai.integrate1d(frame, 70, method=("bbox", "csr", "opencl"))
    assert calls == ["bbox"]
    cy = ai.integrate1d(frame, 70, method=("bbox", "csr", "cython"))
    ai.integrate1d(frame, 70, method=("bbox", "csr", "any"))
    assert calls == ["bbox"]
    matrices = {key.implementation: engine.matrix for key, engine in ai.engines}
    assert set(matrices) == {"opencl", "cython", "any"}
    assert matrices["opencl"] is matrices["cython"] is matrices["any"]
    np.testing.assert_allclose(ocl.intensity, cy.intensity, rtol=1e-5)


# --------------------------------------------- one rule: Cython and OpenCL agree for every dtype
ALL_DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
              np.float32, np.float64]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_cython_and_opencl_agree_for_every_dtype(opencl_context, small_integrator, dtype,
                                                 precision, monkeypatch):
    """The one invalid-pixel rule on both back ends (finding 1): every dtype with its invalid
    values, a dummy with delta_dummy (and a dummy 0.1 that only float frames can hold), a
    mask, a dark, a flat, and every error model. Sums bin for bin within
    1e-6 relative in float32 mode, 1e-12 in float64."""
    if precision == "float64" and "cl_khr_fp64" not in opencl_context.devices[0].extensions:
        pytest.skip("the device has no float64")
    from xreduce.engines import opencl

    monkeypatch.setattr(opencl.OpenCLIntegrationEngine.__init__, "__defaults__",
                        (None, precision))
    monkeypatch.setattr(opencl, "_get_context", lambda device: opencl_context)
    ai = small_integrator.with_geometry(detector=small_integrator.detector.__class__(
        172e-6, 172e-6, (100, 80), max_value_invalid=True))
    rng = np.random.default_rng(ALL_DTYPES.index(dtype))
    kind = np.dtype(dtype).kind
    frame = rng.integers(0, 100, (100, 80)).astype(dtype)
    frame[rng.random(frame.shape) < 0.02] = 7   # dummy within delta
    if kind == "f":
        frame[rng.random(frame.shape) < 0.02] = dtype(0.1)
        frame[3, 3:9] = np.nan
        frame[4, 3] = np.inf
        dummies = [(0.1, None), (7.2, 0.25)]
    else:
        frame[3, 3:9] = np.iinfo(dtype).max
        if kind == "i":
            frame[4, 3:6] = -2
        dummies = [(7.2, 0.25), (0.1, None)]
    mask = np.zeros((100, 80), bool)
    mask[60:62] = True
    dark = rng.uniform(0, 2, (100, 80)).astype(np.float32)
    flat = rng.uniform(0.8, 1.2, (100, 80))
    variance = rng.uniform(1, 100, (100, 80)).astype(np.float32)
    rtol = 1e-12 if precision == "float64" else 1e-6
    for (dummy, delta), model in itertools.product(dummies, (None, "poisson", "variance",
                                                             "azimuthal")):
        kw = dict(unit="2th_deg", dummy=dummy, delta_dummy=delta, mask=mask, dark=dark,
                  flat=flat, error_model=model, polarization_factor=0.95,
                  variance=variance if model == "variance" else None)
        want = ai.integrate1d(frame, 40, method=("bbox", "csr", "cython"), **kw)
        got = ai.integrate1d(frame, 40, method=("bbox", "csr", "opencl"), **kw)
        for name in ("sum_signal", "sum_normalization", "sum_normalization2", "count",
                     "sum_variance"):
            w, g = getattr(want, name), getattr(got, name)
            if w is None:
                assert model is None and g is None, name
                continue
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * 1e-3 * np.abs(w).max(),
                                       err_msg=f"{name} dummy={dummy} error_model={model}")
        assert want.count.sum() < frame.size - 160  # the invalid pixels were seen
    engines = [e for k, e in ai.engines if k.implementation == "opencl"]
    assert [e.precision for e in engines[0].device_engines] == [precision]
