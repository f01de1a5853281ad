"""median_filter2d against scipy.ndimage.median_filter and a per-pixel NumPy reference.

Tolerance: none. The filter selects an input value (rank (rows*cols)//2 of each window), so
results are compared bitwise on every SIMD path and on OpenCL.
"""
import numpy as np
import pytest

from opencl_helpers import require_opencl_context
from reference import median_filter2d_reference
from xreduce.ext import moving_median as mm_ext
from xreduce.median import FILTER_MODES, median_filter2d

ndimage = pytest.importorskip("scipy.ndimage")

SIZES = [1, 2, 3, 4, 5, (3, 5), (1, 7), (6, 2)]


def random_frames(rng, shape=(2, 23, 37), dtype=np.float32, ties=False):
    if ties:
        data = rng.integers(0, 3, size=shape)
    elif np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -10**6), min(info.max, 10**6), size=shape)
    else:
        data = rng.normal(size=shape) * 100
    return data.astype(dtype)


def scipy_stack(stack, size, mode, cval=0.0):
    size = (size, size) if np.isscalar(size) else size
    return np.stack([ndimage.median_filter(f, size=size, mode=mode, cval=cval) for f in stack])


def assert_bitwise(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected, strict=True)


@pytest.mark.parametrize("mode", FILTER_MODES)
@pytest.mark.parametrize("size", SIZES)
def test_equals_scipy(rng, mode, size):
    stack = random_frames(rng)
    assert_bitwise(median_filter2d(stack, size, mode=mode, cval=7.5),
                   scipy_stack(stack, size, mode, cval=7.5))


@pytest.mark.parametrize("dtype", [np.float64, np.uint16, np.int32, np.uint8, np.int16,
                                   np.uint32, np.int64])
@pytest.mark.parametrize("size", [3, 5, (2, 3)])
def test_dtypes_with_ties(rng, dtype, size):
    stack = random_frames(rng, dtype=dtype, ties=dtype == np.uint16)
    assert_bitwise(median_filter2d(stack, size, mode="nearest"), scipy_stack(stack, size, "nearest"))


@pytest.mark.parametrize("isa", mm_ext.supported_isas())
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16])
def test_every_simd_path(rng, isa, dtype):
    stack = random_frames(rng, shape=(3, 40, 71), dtype=dtype)  # 40 rows: several bands
    for size in (3, 5, (4, 1)):
        assert_bitwise(median_filter2d(stack, size, mode="wrap", isa=isa, num_threads=2),
                       scipy_stack(stack, size, "wrap"))


def test_nan_propagates(rng):
    """A window holding a NaN gives NaN (numpy.median's rule); others are unaffected."""
    frame = random_frames(rng, shape=(17, 19))
    frame[3, 4] = frame[16, 0] = frame[9, 18] = np.nan
    for size in (3, 5, (2, 4)):
        for mode in ("reflect", "constant"):
            expected = median_filter2d_reference(frame, (size, size) if np.isscalar(size)
                                                 else size, mode=mode)
            assert_bitwise(median_filter2d(frame, size, mode=mode), expected)


def test_single_frame_tiny_frames_and_out(rng):
    for shape in [(1, 1), (1, 9), (9, 1), (2, 2)]:
        frame = random_frames(rng, shape=shape)
        for size in (3, 5):
            assert_bitwise(median_filter2d(frame, size), ndimage.median_filter(frame, size))
    frame = random_frames(rng, shape=(8, 8))
    out = np.empty_like(frame)
    assert median_filter2d(frame, 3, out=out) is out
    assert_bitwise(out, ndimage.median_filter(frame, 3))


def test_removes_isolated_hot_pixels():
    frame = np.full((9, 9), 5.0, np.float32)
    frame[4, 4] = 1e6
    frame[0, 8] = -1e6
    assert_bitwise(median_filter2d(frame, 3), np.full((9, 9), 5.0, np.float32))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(size=0), ValueError, "size"),
    (dict(size=(3, 3, 3)), TypeError, "size"),
    (dict(size=2.0), TypeError, "size"),
    (dict(mode="edge"), ValueError, "mode"),
    (dict(backend="cuda"), ValueError, "backend"),
    (dict(cval="x"), TypeError, "cval"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        median_filter2d(np.zeros((4, 4), np.float32), **kwargs)


def test_bad_shapes_and_dtypes():
    with pytest.raises(ValueError, match="frame_or_stack"):
        median_filter2d(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="frame_or_stack"):
        median_filter2d(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="cval"):
        median_filter2d(np.zeros((4, 4), np.uint16), mode="constant", cval=0.5)


# ---------------------------------------------------------------------------- OpenCL (PoCL)

@pytest.mark.parametrize("mode", FILTER_MODES)
@pytest.mark.parametrize("size", [1, 3, 4, 5, (2, 7)])
def test_opencl_equals_scipy(rng, mode, size):
    require_opencl_context()
    stack = random_frames(rng)
    assert_bitwise(median_filter2d(stack, size, mode=mode, cval=-3.0, backend="opencl"),
                   scipy_stack(stack, size, mode, cval=-3.0))


@pytest.mark.parametrize("dtype", [np.float64, np.uint16, np.int32])
def test_opencl_dtypes_and_nans(rng, dtype):
    require_opencl_context()
    stack = random_frames(rng, dtype=dtype, ties=True)
    if dtype == np.float64:
        stack[0, 5, 5] = np.nan
    for size in (3, 5):
        assert_bitwise(median_filter2d(stack, size, backend="opencl"), median_filter2d(stack, size))


def test_out_written_directly_and_in_place(rng):
    """A C-contiguous ``out`` is filled by the kernel itself; ``out`` being the input (in
    place) still gives the out-of-place result (the kernel reads neighbours)."""
    stack = rng.normal(size=(3, 17, 19)).astype(np.float32)
    expected = median_filter2d(stack, 3)
    out = np.full_like(stack, np.nan)
    assert median_filter2d(stack, 3, out=out) is out
    np.testing.assert_array_equal(out, expected)
    in_place = stack.copy()
    assert median_filter2d(in_place, 3, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror", "wrap", "constant"])
def test_selection_path_equals_kernel(rng, dtype, mode, monkeypatch):
    """Windows above SELECTION_ABOVE values are filtered by selection (cost ~ size**2 per
    pixel, not size**4): bitwise the kernel's result, NaN windows and edge maps included,
    on frames smaller and larger than the window."""
    from xreduce import median as module

    for shape, size in (((2, 5, 7), (23, 21)), ((1, 1, 1), (30, 17)), ((1, 23, 19), (1, 45))):
        stack = (rng.random(shape) * 100).astype(dtype)
        if dtype == np.float32:
            stack[0, 0, 0] = np.nan
        by_selection = median_filter2d(stack, size, mode=mode, cval=3)
        monkeypatch.setattr(module, "SELECTION_ABOVE", 10**9)      # force the kernel
        by_kernel = median_filter2d(stack, size, mode=mode, cval=3)
        monkeypatch.undo()
        np.testing.assert_array_equal(by_selection, by_kernel)


def test_huge_sizes_refused_before_work(monkeypatch):
    """A size whose padded frame exceeds the allocation limit is refused, naming ``size``;
    a size-200 window on a 1x1 frame is a few thousand operations (selection), not 10**9."""
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", str(2**31))
    with pytest.raises(MemoryError, match="size"):
        median_filter2d(np.zeros((1, 4, 4), np.float32), 10**5)
    assert median_filter2d(np.ones((1, 1, 1), np.float32), 200).tolist() == [[[1.0]]]
