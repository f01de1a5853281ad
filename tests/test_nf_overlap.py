"""Overlap kernel (xreduce.ext.nf_overlap) against the NumPy reference of MIDAS's rules."""
import numpy as np
import pytest

import reference as ref
from nf_fit_cases import N_FRAMES, geometry, reflections
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.microstructure import random_orientations, voronoi_microstructure
from xreduce.nf.overlap import OverlapModel, midas_vertices
from xreduce.nf.spotsinfo import n_words, pack_lit


@pytest.fixture(scope="module")
def refl():
    return reflections()


def _truth_case(grid, geo, refl, n_grains=4, seed=1):
    micro = voronoi_microstructure(grid, n_grains, seed=seed)
    U = micro.orientation_matrices()
    one_pixel = grid.edge_um <= geo.px_um
    lit = ref.nf_midas_lit_stack(U, midas_vertices(grid), refl.g, geo, N_FRAMES, one_pixel)
    return U, lit


@pytest.mark.parametrize("edge_um, rsample_um", [(4.0, 14.0), (1.0, 4.0)],
                         ids=["triangle", "one_pixel"])
def test_confidence_one_at_the_truth(refl, edge_um, rsample_um):
    """Images lit by the reference's footprints give confidence 1.0 at every voxel's true
    orientation, with tilts and two distances, for both footprint rules."""
    geo = geometry()
    grid = hexagonal_grid(rsample_um, edge_um)
    U, lit = _truth_case(grid, geo, refl)
    assert lit.any(axis=(0, 2, 3)).sum() > 20   # spots in many frames
    model = OverlapModel(geo, refl, pack_lit(lit), N_FRAMES)
    assert model.one_pixel(grid) == (edge_um <= geo.px_um)
    conf = model.confidence(U, grid, np.arange(len(grid)), np.arange(len(grid)))
    np.testing.assert_array_equal(conf, 1.0)
    # a random orientation does not score 1
    other = model.confidence(random_orientations(3, np.random.default_rng(5)), grid)
    assert other.max() < 0.5


def test_kernel_matches_reference_on_random_images(refl):
    """Hits and counted pixels of random (voxel, orientation) pairs against random lit pixels:
    the kernel's confidence equals the reference's (both are ratios of small integers)."""
    rng = np.random.default_rng(7)
    geo = geometry()
    grid = hexagonal_grid(14.0, 4.0)
    lit = rng.random((2, N_FRAMES, 512, 512)) < 0.35
    model = OverlapModel(geo, refl, pack_lit(lit), N_FRAMES)
    U = random_orientations(4, rng)
    po = np.repeat(np.arange(4), 3)
    pv = rng.integers(0, len(grid), len(po))
    got = model.confidence(U, grid, po, pv)
    verts = midas_vertices(grid)
    want = [ref.nf_midas_confidence(U[o], verts[v], refl.g, geo, lit, False)
            for o, v in zip(po, pv)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0.2 < np.mean(got) < 0.5


def test_spot_dropped_or_cut_at_the_detector_edge(refl):
    """Voxels far off the axis push footprints off the detector: the kernel and the reference
    drop / cut the same spots (a voxel entirely off scores 0, not NaN)."""
    rng = np.random.default_rng(3)
    geo = geometry(shape=(300, 300))
    from xreduce.nf.grid import Grid

    grid = Grid(np.array([0.0, 60.0, 200.0, 400.0]), np.array([0.0, -40.0, 90.0, 0.0]),
                np.array([1, -1, 1, -1], np.int8), 4.0)
    geo = geometry(shape=(300, 300))
    lit = rng.random((2, N_FRAMES, 300, 300)) < 0.5
    model = OverlapModel(geo, refl, pack_lit(lit), N_FRAMES)
    U = random_orientations(2, rng)
    got = model.confidence(U, grid).ravel()
    verts = midas_vertices(grid)
    want = [ref.nf_midas_confidence(U[o], verts[v], refl.g, geo, lit, False)
            for o in range(2) for v in range(len(grid))]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_result_does_not_depend_on_thread_count(refl):
    rng = np.random.default_rng(11)
    geo = geometry()
    grid = hexagonal_grid(14.0, 4.0)
    lit = rng.random((2, N_FRAMES, 512, 512)) < 0.3
    model = OverlapModel(geo, refl, pack_lit(lit), N_FRAMES)
    U = random_orientations(5, rng)
    a = model.confidence(U, grid, num_threads=1)
    b = model.confidence(U, grid, num_threads=2)
    np.testing.assert_array_equal(a, b)


def test_bad_input_is_refused(refl):
    geo = geometry()
    with pytest.raises(ValueError, match="words: expected"):
        OverlapModel(geo, refl, np.zeros(10, np.uint32), N_FRAMES)
    with pytest.raises(ValueError, match="1D uint32"):
        OverlapModel(geo, refl, np.zeros(n_words((2, N_FRAMES, 512, 512)), np.uint8),
                     N_FRAMES)
    model = OverlapModel(geo, refl, np.zeros(n_words((2, N_FRAMES, 512, 512)), np.uint32),
                         N_FRAMES)
    with pytest.raises(ValueError, match="orientations"):
        model.confidence(np.eye(4), hexagonal_grid(5.0, 2.0))
    with pytest.raises(ValueError, match="pair_orientation"):
        model.confidence(np.eye(3), hexagonal_grid(5.0, 2.0), [0], None)
