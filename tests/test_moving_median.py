"""moving_median against explicit windows (numpy.median), on every SIMD path and on OpenCL.

Tolerance: none. Odd windows pick an input value, so results must be bitwise equal; even
windows average two middle values as (a + b) * 0.5 in the element type, exactly what
numpy.median computes, so they are compared bitwise too. Step interpolation is compared with
a float64 reference and cast to the result dtype, also exactly.
"""
import numpy as np
import pytest

from opencl_helpers import require_opencl_context
from reference import moving_median_reference, step_interpolation_reference
from xreduce.ext import moving_median as ext
from xreduce.median import MOVING_MODES, moving_median

WINDOWS = [1, 2, 3, 4, 31, 100, 101]


def random_stack(rng, shape=(60, 5, 7), dtype=np.float32, nans=False, ties=False):
    if ties:
        data = rng.integers(0, 4, size=shape)
    elif np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -10**6), min(info.max, 10**6), size=shape)
    else:
        data = rng.normal(size=shape) * 100
    data = data.astype(dtype)
    if nans:
        data.reshape(-1)[rng.choice(data.size, size=data.size // 40, replace=False)] = np.nan
    return data


def assert_bitwise(got, expected):
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected, strict=True)


def expected_for(stack, window, axis=0, mode="nearest", even="mean"):
    ref = moving_median_reference(stack, window, axis=axis, mode=mode, even=even)
    dtype = stack.dtype
    if stack.dtype.kind in "iu" and even == "mean" and (window % 2 == 0 or
                                                        (mode == "shrink" and window > 1)):
        dtype = np.float64
    return ref.astype(dtype)


@pytest.mark.parametrize("mode", MOVING_MODES)
@pytest.mark.parametrize("window", WINDOWS)
def test_float32_every_mode_and_window_with_nans(rng, mode, window):
    stack = random_stack(rng, nans=True)
    assert_bitwise(moving_median(stack, window, mode=mode), expected_for(stack, window, mode=mode))


@pytest.mark.parametrize("dtype", [np.float64, np.uint16, np.int32, np.int8, np.uint32, np.int64])
@pytest.mark.parametrize("window", [1, 4, 31, 101])
@pytest.mark.parametrize("mode", ["reflect", "shrink"])
def test_dtypes(rng, dtype, window, mode):
    stack = random_stack(rng, dtype=dtype, nans=np.dtype(dtype).kind == "f")
    assert_bitwise(moving_median(stack, window, mode=mode), expected_for(stack, window, mode=mode))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("window", [2, 5])
def test_axes(rng, axis, window):
    stack = random_stack(rng, shape=(9, 10, 11), nans=True)
    assert_bitwise(moving_median(stack, window, axis=axis, mode="wrap"),
                   expected_for(stack, window, axis=axis, mode="wrap"))


@pytest.mark.parametrize("window", [3, 4, 30])
@pytest.mark.parametrize("even", ["lower", "upper"])
def test_ties_and_even_rules(rng, window, even):
    stack = random_stack(rng, ties=True, dtype=np.int32)
    assert_bitwise(moving_median(stack, window, mode="mirror", even=even),
                   expected_for(stack, window, mode="mirror", even=even))
    floats = random_stack(rng, ties=True, dtype=np.float32)
    assert_bitwise(moving_median(floats, window, mode="shrink", even=even),
                   expected_for(floats, window, mode="shrink", even=even))


def test_upper_even_equals_scipy(rng):
    ndimage = pytest.importorskip("scipy.ndimage")
    stack = random_stack(rng)
    for window in (4, 7):
        expected = ndimage.median_filter(stack, size=(window, 1, 1), mode="reflect")
        assert_bitwise(moving_median(stack, window, mode="reflect", even="upper"), expected)


@pytest.mark.parametrize("isa", ext.supported_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_every_simd_path(rng, isa, dtype):
    """Each compiled path (SSE2 baseline, AVX2, AVX-512 where present) on a pixel count that
    leaves a partial tile, so both the full-tile and the tail code run."""
    stack = random_stack(rng, shape=(40, 7, 19), dtype=dtype, nans=dtype != np.int32)
    for window in (1, 6, 31):
        assert_bitwise(moving_median(stack, window, mode="reflect", isa=isa, num_threads=2),
                       expected_for(stack, window, mode="reflect"))


@pytest.mark.parametrize("isa", ext.supported_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subtraction_in_the_median_pass(rng, isa, dtype):
    """With ``subtract_from`` the kernel gives frame - median, bitwise what NumPy's
    subtraction of the medians gives (NaNs, even windows, a partial tile, every SIMD path);
    bad frame indices and integer stacks are refused."""
    from xreduce.median import _frame_map, _ranks, _sample_frames

    stack = random_stack(rng, shape=(40, 7, 19), dtype=dtype, nans=True).reshape(40, -1)
    for window in (1, 6, 31):
        vmap = _frame_map(40, window, "reflect")
        samples = _sample_frames(40, 1)
        lo, hi = _ranks(vmap, samples, window, "mean")
        medians = ext.moving_median_frames(stack, window, vmap, samples, lo, hi,
                                           np.empty_like(stack), isa=isa)
        sub = rng.permutation(40).astype(np.int32)
        got = ext.moving_median_frames(stack, window, vmap, samples, lo, hi,
                                       np.empty_like(stack), isa=isa, subtract_from=sub)
        assert_bitwise(got, stack[sub] - medians)
    with pytest.raises(ValueError, match="subtract_from"):
        ext.moving_median_frames(stack, 3, vmap, samples, lo, hi, np.empty_like(stack),
                                 subtract_from=np.full(40, 40, np.int32))
    ints = np.zeros(stack.shape, np.int32)
    with pytest.raises(TypeError, match="float stack"):
        ext.moving_median_frames(ints, 3, vmap, samples, lo, hi, np.empty_like(ints),
                                 subtract_from=sub)


@pytest.mark.parametrize("step", [2, 7, 40, 100])
@pytest.mark.parametrize("interpolation", ["nearest", "linear"])
def test_step_interpolation(rng, step, interpolation):
    stack = random_stack(rng, shape=(60, 3, 4))
    full = moving_median_reference(stack, 9, mode="nearest")
    expected = step_interpolation_reference(full, step, interpolation).astype(np.float32)
    got = moving_median(stack, 9, step=step, interpolation=interpolation)
    assert_bitwise(got, expected)


def test_step_on_integers_linear_is_float64(rng):
    stack = random_stack(rng, shape=(30, 2, 2), dtype=np.uint16)
    got = moving_median(stack, 5, step=4, interpolation="linear")
    expected = step_interpolation_reference(moving_median_reference(stack, 5), 4, "linear")
    assert_bitwise(got, expected)
    assert moving_median(stack, 5, step=4).dtype == np.uint16


def test_window_longer_than_stack_and_single_frame(rng):
    stack = random_stack(rng, shape=(5, 3, 3))
    for mode in MOVING_MODES:
        assert_bitwise(moving_median(stack, 13, mode=mode), expected_for(stack, 13, mode=mode))
    one = stack[:1]
    assert_bitwise(moving_median(one, 4, mode="mirror"), expected_for(one, 4, mode="mirror"))


def test_out_argument_and_threads(rng):
    stack = random_stack(rng, shape=(20, 30, 3))
    out = np.empty_like(stack)
    assert moving_median(stack, 5, out=out, num_threads=1) is out
    assert_bitwise(out, moving_median(stack, 5, num_threads=2))
    with pytest.raises(ValueError, match="out"):
        moving_median(stack, 5, out=np.empty(stack.shape, np.float64))


def test_analytic_ramp():
    """The median of a monotone ramp's window is its centre value (nearest edges clamp)."""
    ramp = np.arange(20, dtype=np.float64)[:, None] * np.ones((1, 3))
    got = moving_median(ramp, 5, mode="nearest")
    np.testing.assert_array_equal(got[:, 0], np.clip(np.arange(20), 0, 19))
    np.testing.assert_array_equal(moving_median(ramp, 4, mode="shrink")[:, 1][2:-2],
                                  np.arange(2, 18) - 0.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(window=0), ValueError, "window"),
    (dict(window=2.5), TypeError, "window"),
    (dict(window=3, mode="edge"), ValueError, "mode"),
    (dict(window=3, axis=3), ValueError, "axis"),
    (dict(window=3, step=0), ValueError, "step"),
    (dict(window=3, even="middle"), ValueError, "even"),
    (dict(window=3, interpolation="cubic"), ValueError, "interpolation"),
    (dict(window=3, backend="cuda"), ValueError, "backend"),
    (dict(window=3, num_threads=-1), ValueError, "num_threads"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        moving_median(np.zeros((4, 2), np.float32), **kwargs)


def test_bad_dtypes():
    with pytest.raises(TypeError, match="stack"):
        moving_median(np.zeros((4, 2), np.complex64), 3)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        moving_median(np.full((4, 2), 2**60, np.int64), 3)


# ---------------------------------------------------------------------------- OpenCL (PoCL)

@pytest.mark.parametrize("mode", MOVING_MODES)
@pytest.mark.parametrize("window", [1, 2, 31, 100, 101])
def test_opencl_equals_reference(rng, mode, window):
    require_opencl_context()
    stack = random_stack(rng, nans=True)
    assert_bitwise(moving_median(stack, window, mode=mode, backend="opencl"),
                   expected_for(stack, window, mode=mode))


@pytest.mark.parametrize("dtype", [np.float64, np.uint16, np.int32])
def test_opencl_dtypes_axes_steps(rng, dtype):
    require_opencl_context()
    stack = random_stack(rng, shape=(30, 6, 5), dtype=dtype, ties=dtype == np.int32)
    for window, axis, step in [(4, 0, 1), (7, 2, 1), (5, 0, 3)]:
        assert_bitwise(
            moving_median(stack, window, axis=axis, step=step, mode="shrink", backend="opencl"),
            moving_median(stack, window, axis=axis, step=step, mode="shrink"),
        )


def test_random_shapes_windows_and_modes_property():
    """Hypothesis: any small stack, window (also longer than the stack), mode and even rule."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(n=st.integers(1, 12), npix=st.integers(1, 70), window=st.integers(1, 15),
           mode=st.sampled_from(MOVING_MODES), even=st.sampled_from(["mean", "lower", "upper"]),
           seed=st.integers(0, 2**32 - 1))
    def check(n, npix, window, mode, even, seed):
        data = np.random.default_rng(seed).integers(0, 5, size=(n, npix)).astype(np.float64)
        data[data == 4] = np.nan
        assert_bitwise(moving_median(data, window, mode=mode, even=even),
                       expected_for(data, window, mode=mode, even=even))

    check()


def test_absurd_windows(monkeypatch):
    """A window far longer than the stack is refused before any allocation (the message
    names ``window``), except with mode 'shrink' where it is clipped to 2 * frames - 1 with
    an identical result; huge thread counts are capped to the cores."""
    stack = np.random.default_rng(3).random((30, 4, 5)).astype(np.float32)
    for window in (10**6, 10**9):
        with pytest.raises(ValueError, match="window: a window of"):
            moving_median(stack, window)
    np.testing.assert_array_equal(moving_median(stack, 10**9, mode="shrink"),
                                  moving_median(stack, 59, mode="shrink"))
    np.testing.assert_array_equal(moving_median(stack, 59, mode="shrink"),
                                  np.median(stack, axis=0, keepdims=True).repeat(30, 0))
    with pytest.warns(RuntimeWarning, match="cores"):
        out = moving_median(stack, 5, num_threads=10**9)
    np.testing.assert_array_equal(out, moving_median(stack, 5, num_threads=1))
