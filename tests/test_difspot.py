"""Difspot properties and the HDF5 file.

Tolerances: centroids of noise-free Gaussian spots (sigma >= 1.2 voxel, cut at 0.1% of the peak,
i.e. at 3.7 sigma, inside a box of >= 4.3 sigma) to 0.05 pixel: the sampled Gaussian's mean is
its centre to ~1e-8 and the nearly symmetric level-set cut moves it by much less than 0.05;
integrals equal direct float64 sums of the masked stack to 1e-6 relative (they are the same sums
in another order: ~1e-15) and the analytic Gaussian volume to 1% (the mass outside the 0.1% level
set is ~0.3% in 3D).
"""
import numpy as np
import pytest

from xreduce.dct.difspot import (COLUMNS, TABLE_DTYPE, Difspot, difspots, properties,
                                 read_difspots, read_segmentation, write_difspots)
from xreduce.dct.segment import segment

h5py = pytest.importorskip("h5py")

SPOTS = [  # centre (frame, row, col), sigma, amplitude
    ((8.3, 12.6, 14.2), (1.5, 2.0, 1.8), 900.0),
    ((20.7, 40.1, 18.9), (2.2, 1.6, 2.5), 400.0),
    ((31.45, 20.3, 47.8), (1.2, 2.5, 2.0), 1500.0),
    ((14.0, 50.5, 50.25), (3.0, 1.4, 1.3), 250.0),
]


@pytest.fixture
def gaussian_stack():
    shape = (40, 64, 64)
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    stack = np.zeros(shape)
    for centre, sigma, amplitude in SPOTS:
        stack += amplitude * np.exp(-0.5 * sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma)))
    return stack


@pytest.fixture
def segmentation(gaussian_stack):
    return segment(gaussian_stack, seed_threshold=50.0, tau=0.001, bb_max=(13, 13, 13))


def test_gaussian_centroids_and_integrals(gaussian_stack, segmentation):
    """Known Gaussian spots: centroid to 0.05 px, integral = masked sum to 1e-6, ~ analytic."""
    table = properties(segmentation)
    assert len(table) == len(SPOTS)
    order = np.argsort([np.ravel_multi_index(np.round(c).astype(int), gaussian_stack.shape)
                        for c, _, _ in SPOTS])
    for row, k in zip(table, order):
        centre, sigma, amplitude = SPOTS[k]
        found = (row["CentroidImage"], row["CentroidY"], row["CentroidX"])
        np.testing.assert_allclose(found, centre, atol=0.05)
        mask = np.zeros(gaussian_stack.shape, bool)
        mask[np.unravel_index(segmentation.voxels[segmentation.offsets[row["id"] - 1]:
                                                  segmentation.offsets[row["id"]]], mask.shape)] = True
        np.testing.assert_allclose(row["Integral"], gaussian_stack[mask].sum(), rtol=1e-6)
        analytic = amplitude * (2 * np.pi) ** 1.5 * np.prod(sigma)
        np.testing.assert_allclose(row["Integral"], analytic, rtol=0.01)
        assert row["Area"] == mask.sum()
        assert row["MaxIntensity"] == gaussian_stack[mask].max()
        assert tuple(row["MaxIndex"]) == tuple(np.round(centre).astype(int))
        assert row["MaxImage"] == row["MaxIndex"][0]
        frames = np.nonzero(mask.any(axis=(1, 2)))[0]
        assert (row["StartImage"], row["EndImage"]) == (frames[0], frames[-1])


def test_arrays_consistent(gaussian_stack, segmentation):
    """Data is the stack on the mask and 0 elsewhere; Projection sums equal Data sums."""
    spots = difspots(segmentation)
    for spot in spots:
        f, r, c, nf, nr, nc = spot.bounding_box
        assert spot.data.shape == spot.mask.shape == (nf, nr, nc)
        assert spot.projection.shape == (nr, nc)
        box = gaussian_stack[f:f + nf, r:r + nr, c:c + nc]
        np.testing.assert_array_equal(spot.data, np.where(spot.mask == 1, box, 0))
        assert spot.mask.sum() == spot.area
        np.testing.assert_allclose(spot.projection.sum(), spot.data.sum(), rtol=1e-12)
        np.testing.assert_allclose(spot.projection, spot.data.sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(spot.data.sum(), spot.integral, rtol=1e-12)
        # the box is tight: every face holds a voxel of the mask
        assert spot.mask[0].any() and spot.mask[-1].any()
        assert spot.mask[:, 0].any() and spot.mask[:, -1].any()
        assert spot.mask[:, :, 0].any() and spot.mask[:, :, -1].any()


def test_hdf5_round_trip(tmp_path, segmentation):
    """Write then read: same table, same arrays, units/descriptions present, no temporary left."""
    path = write_difspots(tmp_path / "spots.h5", segmentation)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spots.h5"]
    table = read_difspots(path)
    assert table.dtype == TABLE_DTYPE
    expected = properties(segmentation)
    for name in COLUMNS:
        np.testing.assert_array_equal(table[name], expected[name])
    objects = read_difspots(path, as_objects=True)
    for got, want in zip(objects, difspots(segmentation)):
        assert isinstance(got, Difspot)
        assert got.id == want.id and got.bounding_box == want.bounding_box
        np.testing.assert_array_equal(got.data, want.data)
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_array_equal(got.projection, want.projection)
    assert read_difspots(path, as_objects=True, arrays=False)[0].data is None
    with h5py.File(path) as h5:
        for name, (_, _, units, description) in COLUMNS.items():
            assert h5["difspots/table"][name].attrs["units"] == units
            assert h5["difspots/table"][name].attrs["description"] == description
        assert h5["difspots/spots/000001/Data"].compression == "gzip"
    again = read_segmentation(path)
    np.testing.assert_array_equal(again.voxels, segmentation.voxels)
    np.testing.assert_array_equal(again.offsets, segmentation.offsets)
    assert again.parameters == segmentation.parameters and again.shape == segmentation.shape


def test_write_is_atomic(tmp_path, segmentation, monkeypatch):
    """A write that fails half way leaves the old file untouched and no temporary behind."""
    path = write_difspots(tmp_path / "spots.h5", segmentation)
    before = path.read_bytes()
    import xreduce.dct.difspot as module

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "spot_arrays", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_difspots(path, segmentation)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spots.h5"]
    with pytest.raises(FileNotFoundError, match="path"):
        write_difspots(tmp_path / "missing" / "spots.h5", segmentation)
    with pytest.raises(FileExistsError, match="path"):
        write_difspots(path, segmentation, overwrite=False)
    with pytest.raises(ValueError, match="compression"):
        write_difspots(path, segmentation, compression="zstd")


def test_empty_segmentation(tmp_path):
    """No spot: empty table, a valid file, empty reads."""
    result = segment(np.zeros((4, 8, 8), np.float32), 1.0, 0.5, 2)
    assert len(properties(result)) == 0 and difspots(result) == []
    path = write_difspots(tmp_path / "none.h5", result)
    assert len(read_difspots(path)) == 0 and read_difspots(path, as_objects=True) == []
    assert len(read_segmentation(path)) == 0


def test_integer_stack_keeps_dtype(tmp_path):
    """A uint16 stack gives uint16 Data; ties for the maximum pick the first voxel."""
    stack = np.zeros((6, 10, 10), np.uint16)
    stack[2:4, 4:6, 4:6] = 30
    result = segment(stack, 10, 0.5, 3)
    table = properties(result)
    assert tuple(table["MaxIndex"][0]) == (2, 4, 4)
    np.testing.assert_allclose((table["CentroidImage"][0], table["CentroidY"][0], table["CentroidX"][0]),
                               (2.5, 4.5, 4.5))
    spot = read_difspots(write_difspots(tmp_path / "u.h5", result), as_objects=True)[0]
    assert spot.data.dtype == np.uint16 and spot.integral == 240.0
