"""Overlap kernel (xreduce.ext.nf_overlap) against the NumPy reference of MIDAS's rules."""
import numpy as np
import pytest

import reference as ref
from nf_fit_cases import N_FRAMES, geometry, reflections, voronoi_case
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.microstructure import random_orientations
from xreduce.nf.overlap import OverlapModel, midas_vertices
from xreduce.nf.spotsinfo import n_words, unpack_lit


def _random_words(rng, shape, quarters=1):
    """Random SpotsInfo words with each bit lit with probability 1/2 ** (quarters + 1)
    (AND of random words: cheap for big stacks)."""
    words = rng.integers(0, 2 ** 32, n_words(shape), dtype=np.uint32)
    for _ in range(quarters):
        words &= rng.integers(0, 2 ** 32, n_words(shape), dtype=np.uint32)
    return words


@pytest.fixture(scope="module")
def refl():
    return reflections()


@pytest.mark.parametrize("edge_um, rsample_um", [(4.0, 20.0), (1.0, 3.0)],
                         ids=["triangle", "one_pixel"])
def test_confidence_one_at_the_truth(refl, edge_um, rsample_um):
    """Images lit by the reference's footprints give confidence 1.0 at every voxel's true
    orientation, with tilts and two distances, for both footprint rules."""
    geo = geometry()
    model, grid, micro, _ = voronoi_case(rsample_um, edge_um, n_grains=4 if edge_um < 2 else 7)
    U = micro.orientation_matrices()
    words = model.words
    lit_frames = unpack_lit(words, (2, N_FRAMES) + geo.detector_shape).any(axis=(0, 2, 3))
    assert lit_frames.sum() > 100   # spots in many frames
    model = OverlapModel(geo, refl, words, N_FRAMES)
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
    geo = geometry(shape=(512, 512), step_deg=2.0)
    grid = hexagonal_grid(14.0, 4.0)
    words = _random_words(rng, (2, 180, 512, 512), 0)
    lit = unpack_lit(words, (2, 180, 512, 512))
    model = OverlapModel(geo, refl, words, 180)
    U = random_orientations(4, rng)
    po = np.repeat(np.arange(4), 3)
    pv = rng.integers(0, len(grid), len(po))
    got = model.confidence(U, grid, po, pv)
    verts = midas_vertices(grid)
    want = [ref.nf_midas_confidence(U[o], verts[v], refl.g, geo, lit, False)
            for o, v in zip(po, pv)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0.15 < np.mean(got) < 0.35   # about 0.5 ** 2: lit at both distances


def test_spot_dropped_or_cut_at_the_detector_edge(refl):
    """Voxels far off the axis push footprints off the detector: the kernel and the reference
    drop / cut the same spots (a voxel entirely off scores 0, not NaN)."""
    rng = np.random.default_rng(3)
    geo = geometry(shape=(300, 300), step_deg=2.0)
    from xreduce.nf.grid import Grid

    grid = Grid(np.array([0.0, 60.0, 200.0, 400.0]), np.array([0.0, -40.0, 90.0, 0.0]),
                np.array([1, -1, 1, -1], np.int8), 4.0)
    geo = geometry(shape=(300, 300))
    words = _random_words(rng, (2, 180, 300, 300), 0)
    lit = unpack_lit(words, (2, 180, 300, 300))
    model = OverlapModel(geo, refl, words, 180)
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
    model = OverlapModel(geo, refl, _random_words(rng, (2, N_FRAMES, 640, 640)), N_FRAMES)
    U = random_orientations(5, rng)
    a = model.confidence(U, grid, num_threads=1)
    b = model.confidence(U, grid, num_threads=2)
    np.testing.assert_array_equal(a, b)


def test_bad_input_is_refused(refl):
    geo = geometry()
    with pytest.raises(ValueError, match="words: expected"):
        OverlapModel(geo, refl, np.zeros(10, np.uint32), N_FRAMES)
    shape = (2, N_FRAMES) + geo.detector_shape
    with pytest.raises(ValueError, match="1D uint32"):
        OverlapModel(geo, refl, np.zeros(n_words(shape), np.uint8), N_FRAMES)
    model = OverlapModel(geo, refl, np.zeros(n_words(shape), np.uint32), N_FRAMES)
    with pytest.raises(ValueError, match="orientations"):
        model.confidence(np.eye(4), hexagonal_grid(5.0, 2.0))
    with pytest.raises(ValueError, match="pair_orientation"):
        model.confidence(np.eye(3), hexagonal_grid(5.0, 2.0), [0], None)


@pytest.mark.parametrize("tilts, box", [((0.2, -0.15, 0.3), 350.0), ((2.0, -3.0, 4.0), 300.0)])
def test_early_exit_bound_holds(refl, tilts, box):
    """max_pixels_per_spot bounds the footprint of every spot of the reference's rule
    (random orientations, voxels off the axis, small and large tilts): the early exits it
    allows are safe."""
    from dataclasses import replace

    rng = np.random.default_rng(21)
    geo = replace(geometry(tilts=tilts), box_sizes_um=((-box, box, -box, box),))
    grid = hexagonal_grid(40.0, 4.0)
    model = OverlapModel(geo, refl, np.zeros(n_words((2, N_FRAMES) + geo.detector_shape),
                                             np.uint32), N_FRAMES)
    bound = model.max_pixels_per_spot(grid)
    verts = midas_vertices(grid)
    most = 0
    for U in random_orientations(3, rng):
        for v in rng.choice(len(grid), 4, replace=False):
            for spot in ref.nf_midas_spots(U, refl.g, geo, N_FRAMES):
                most = max(most, len(ref.nf_midas_footprint(spot, verts[v], geo, False) or ()))
    assert 0 < most <= bound <= 4 * most
    model1 = OverlapModel(geo, refl, model.words, N_FRAMES, edge_length_um=1.0)
    assert model1.max_pixels_per_spot(grid) == 1


def test_early_exits_change_no_result():
    """Screening with min_confidence: every pair that reaches it has its exact confidence,
    the others are NaN and really below it. Refinement with the bound: the same simplex
    steps as without it (identical parameters, confidences and evaluation counts)."""
    from xreduce.ext import nf_overlap as ext
    from xreduce.nf.crystal import matrix_to_euler
    from nf_fit_cases import rotate_by

    model, grid, micro, truth = voronoi_case()
    rng = np.random.default_rng(8)
    seeds = np.concatenate([rotate_by(truth, rng.uniform(0.05, 0.3, len(truth)), rng),
                            random_orientations(20, rng)])
    exact = model.confidence(seeds, grid)
    fast = model.confidence(seeds, grid, min_confidence=0.4)
    reached = ~np.isnan(fast)
    np.testing.assert_array_equal(fast[reached], exact[reached])
    assert np.all(exact[~reached] < 0.4) and np.all(reached[exact >= 0.4])
    assert (~reached).sum() > exact.size // 2
    v, s = np.nonzero((exact >= 0.4).T)
    indptr = np.searchsorted(v, np.arange(len(grid) + 1))
    euler = matrix_to_euler(seeds[s])
    args = (*model._args(grid), midas_vertices(grid), indptr, euler, np.radians(0.5), False,
            1e-5, 1e-5, 5000, False, 2, 1)
    plain = ext.refine(*args, 0)
    bounded = ext.refine(*args, model.max_pixels_per_spot(grid))
    for a, b in zip(plain, bounded):
        np.testing.assert_array_equal(a, b)
    assert not ext.take_bound_violation()
