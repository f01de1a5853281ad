"""3D connected-component labelling against scipy.ndimage.label and the references.

Labels are integers: comparisons are exact. Our numbering (raster order of first voxel) is the
one scipy uses, so besides "same partition up to renaming" labels are compared one to one.
"""
import numpy as np
import pytest
from scipy import ndimage

import reference
from xreduce.dct.labelling import STATISTICS_DTYPE, label, label_statistics

DENSITY = {6: 0.3, 26: 0.08}  # near each percolation threshold: many components, long ones


def same_partition(a, b):
    """True when two label volumes have the same background and the same components."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return pairs.shape[1] == len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("chunk_frames", [None, 1, 3, 7])
def test_label_equals_scipy(rng, connectivity, chunk_frames):
    """Random masks, whole and chunked (borders every 1, 3, 7 frames): exact scipy labels."""
    mask = rng.random((16, 24, 20)) < DENSITY[connectivity]
    expected, n_expected = ndimage.label(mask, reference.structure_reference(connectivity))
    labels, n = label(mask, connectivity, chunk_frames=chunk_frames)
    assert n == n_expected
    assert same_partition(labels, expected)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int32


@pytest.mark.parametrize("connectivity", [6, 26])
@pytest.mark.parametrize("chunk_frames", [None, 2, 5])
def test_label_wrap(rng, connectivity, chunk_frames):
    """360-degree wrap: equals scipy on the stack with frame 0 appended, copies merged."""
    mask = rng.random((11, 18, 18)) < DENSITY[connectivity]
    expected, n_expected = reference.label_wrapped_reference(mask, connectivity)
    labels, n = label(mask, connectivity, wrap=True, chunk_frames=chunk_frames)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)
    # the wrap really merged something: fewer components than without it
    assert n < label(mask, connectivity)[1]


def test_wrap_single_frame_and_spanning_component():
    """A component crossing the wrap joins its two ends; a 1-frame stack wraps onto itself."""
    mask = np.zeros((6, 5, 5), bool)
    mask[0, 2, 2] = mask[5, 2, 2] = True
    assert label(mask, 6)[1] == 2
    labels, n = label(mask, 6, wrap=True, chunk_frames=2)
    assert n == 1 and labels[0, 2, 2] == labels[5, 2, 2] == 1
    mask[5, 2, 2], mask[5, 3, 3] = False, True  # diagonal across the wrap: 26 only
    assert label(mask, 6, wrap=True)[1] == 2
    assert label(mask, 26, wrap=True)[1] == 1
    assert label(mask[:1], 26, wrap=True)[1] == 1


def test_threshold_and_dtypes(rng):
    """Values > threshold are lit, whatever the dtype; threshold=None lights non-zero voxels."""
    values = rng.normal(size=(8, 16, 16)).astype(np.float32)
    expected, n_expected = ndimage.label(values > 0.8, reference.structure_reference(26))
    for dtype in (np.float32, np.float64):
        labels, n = label(values.astype(dtype), threshold=0.8, chunk_frames=3)
        assert n == n_expected
        np.testing.assert_array_equal(labels, expected)
    counts = (values * 10).astype(np.int16)
    expected, _ = ndimage.label(counts > 7, reference.structure_reference(6))
    np.testing.assert_array_equal(label(counts, 6, threshold=7)[0], expected)
    np.testing.assert_array_equal(label(counts.astype(np.uint16) * (counts > 0), 6)[0],
                                  ndimage.label(counts > 0, reference.structure_reference(6))[0])
    expected, _ = ndimage.label(counts != 0, reference.structure_reference(6))
    np.testing.assert_array_equal(label(counts, 6)[0], expected)


def test_float32_threshold_is_exact():
    """float32 data are compared as in double precision, even where the threshold is not a float32."""
    v = np.float32(0.1)  # 0.10000000149... > 0.1
    volume = np.full((2, 3, 4), v, np.float32)
    volume[:, :, 1] = np.nextafter(v, np.float32(0))  # 0.0999999940... < 0.1
    assert label(volume, 6, threshold=0.1)[1] == 2  # columns 0 and 2-3
    assert label(volume, 6, threshold=float(v))[1] == 0
    assert label(volume, 6, threshold=-np.inf)[1] == 1
    assert label(volume, 6, threshold=1e39)[1] == 0
    assert label(volume, 6, threshold=np.nan)[1] == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("threshold", [-3.0, -0.5, 0.0, 7.0, 7.5, 254.9, 70000.0])
def test_small_unsigned_thresholds(rng, dtype, threshold):
    """uint8/uint16 data compare with an integer threshold equivalent to the float one."""
    values = rng.integers(0, 12, size=(4, 9, 9)).astype(dtype)
    values[0, 0, :3] = 255
    expected, n_expected = ndimage.label(values > threshold, reference.structure_reference(6))
    labels, n = label(values, 6, threshold=threshold)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)


def test_nan_is_never_lit(rng):
    """NaN voxels are background, also between lit voxels of a row."""
    values = rng.normal(size=(6, 12, 40))
    values[rng.random(values.shape) < 0.2] = np.nan
    expected, n_expected = ndimage.label(values > 0.5, reference.structure_reference(6))
    labels, n = label(values, 6, threshold=0.5, chunk_frames=2)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)
    stats = label_statistics(values, 6, threshold=0.5)
    assert len(stats) == n and np.isfinite(stats["sum"]).all()


def test_h5py_dataset_input(rng, tmp_path):
    """A lazy h5py dataset is read chunk by chunk and gives the in-memory result."""
    h5py = pytest.importorskip("h5py")
    mask = rng.random((10, 12, 12)) < 0.1
    with h5py.File(tmp_path / "m.h5", "w") as h5:
        h5["mask"] = mask
        labels, n = label(h5["mask"], chunk_frames=3)
        stats = label_statistics(h5["mask"], chunk_frames=4)
    expected, n_expected = label(mask)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)
    assert len(stats) == n_expected


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("chunk_frames", [None, 1, 4])
def test_statistics_equal_reference(rng, wrap, chunk_frames):
    """Streamed statistics (no dense labels) equal per-label loops on the dense labels.

    Values are small integers so maxima tie often: the argmax must be the lowest flat index.
    Sums are of integers in float64: exact.
    """
    values = rng.integers(0, 6, size=(13, 15, 17)).astype(np.float32)
    labels, n = (reference.label_wrapped_reference(values > 3, 26) if wrap
                 else ndimage.label(values > 3, reference.structure_reference(26)))
    stats = label_statistics(values, 26, wrap=wrap, chunk_frames=chunk_frames, threshold=3)
    assert stats.dtype == STATISTICS_DTYPE
    expected = reference.label_statistics_reference(values, labels, n)
    expected.sort(key=lambda row: row[3])
    assert len(stats) == n
    for got, (count, total, vmax, argmax, bbox) in zip(stats, expected):
        assert got["voxels"] == count and got["sum"] == total and got["maximum"] == vmax
        assert got["argmax"] == argmax
        if not wrap:  # a wrapped component's box is not contiguous; only the plain one is
            np.testing.assert_array_equal(got["bbox"], bbox)


def test_statistics_stream_finished_components_early():
    """A component is yielded with the first chunk it cannot grow beyond, not at the end."""
    from xreduce.dct.labelling import iter_label_statistics
    mask = np.zeros((10, 6, 6), bool)
    mask[0:2, 1, 1] = True    # done after chunk 0 (frames 0-2)
    mask[2:5, 3, 3] = True    # crosses the border 2|3: done after chunk 1
    mask[8:10, 4, 4] = True   # reaches the last frame
    tables = list(iter_label_statistics(mask, chunk_frames=3))
    assert [t["voxels"].tolist() for t in tables] == [[2], [3], [2]]
    # with wrap, the components touching frame 0 wait for the end (they may cross the wrap)
    tables = list(iter_label_statistics(mask, chunk_frames=3, wrap=True))
    assert [sorted(t["voxels"].tolist()) for t in tables] == [[3], [2, 2]]


def test_statistics_separate_values(rng):
    """Statistics of ``values`` over the components of a mask; a mask alone counts voxels."""
    mask = rng.random((6, 10, 10)) < 0.1
    values = rng.random(mask.shape)
    stats = label_statistics(mask, values=values, chunk_frames=2)
    labels, n = ndimage.label(mask, reference.structure_reference(26))
    np.testing.assert_allclose(np.sort(stats["sum"]),
                               np.sort(ndimage.sum(values, labels, range(1, n + 1))), rtol=1e-12)
    assert np.array_equal(label_statistics(mask)["sum"], label_statistics(mask)["voxels"])


def test_empty_and_blank():
    """No frames, or nothing lit: zero components, no crash."""
    labels, n = label(np.zeros((0, 5, 5), bool))
    assert n == 0 and labels.shape == (0, 5, 5)
    labels, n = label(np.zeros((4, 5, 5)), chunk_frames=2, wrap=True)
    assert n == 0 and not labels.any()
    assert len(label_statistics(np.zeros((4, 5, 5)), chunk_frames=2, wrap=True)) == 0
    assert len(label_statistics(np.zeros((0, 5, 5)))) == 0


def test_bad_input():
    """Bad arguments raise errors naming the argument."""
    with pytest.raises(ValueError, match="volume_or_mask"):
        label(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="connectivity"):
        label(np.zeros((2, 4, 4)), connectivity=8)
    with pytest.raises(ValueError, match="chunk_frames"):
        label(np.zeros((2, 4, 4)), chunk_frames=0)
    with pytest.raises(ValueError, match="threshold"):
        label(np.zeros((2, 4, 4), bool), threshold=0.5)
    with pytest.raises(TypeError, match="volume_or_mask"):
        label(np.zeros((2, 4, 4), complex))
    with pytest.raises(ValueError, match="values"):
        label_statistics(np.zeros((2, 4, 4)), values=np.zeros((2, 4, 5)))
