"""Orientation fitting end to end on images made by the NumPy reference of MIDAS's rules."""
import numpy as np
import pytest

from nf_fit_cases import rotate_by, voronoi_case
from xreduce.nf.crystal import euler_to_quaternion, matrix_to_quaternion, misorientation_rad
from xreduce.nf.fit import FAST_PATH, fit_orientations, local_rotation_grid, seed_groups
from xreduce.nf.grains import cluster_grains
from xreduce.nf.microstructure import random_orientations


N_GRAINS = 7


@pytest.fixture(scope="module")
def case():
    """~220 triangle voxels of 6 Voronoi grains, two tilted distances, 720 frames."""
    return voronoi_case()


def _errors_deg(result, micro):
    q_fit = euler_to_quaternion(np.nan_to_num(result.euler_rad))
    q_true = matrix_to_quaternion(micro.orientation_matrices())
    err = np.degrees(misorientation_rad(q_fit, q_true, 225))
    err[~result.found] = np.inf
    return err


def _far_field_seeds(truth):
    """The true orientations rotated by 0.02-0.1 deg plus 300 random decoys, shuffled."""
    rng = np.random.default_rng(0)
    seeds = np.concatenate([rotate_by(truth, rng.uniform(0.02, 0.1, len(truth)), rng),
                            random_orientations(300, rng)])
    return seeds[rng.permutation(len(seeds))]


def test_seeded_fit_far_field_quality(case):
    """Seeds 0.02-0.1 deg from the truth plus 300 random decoys, MinFracAccept 0.5: the
    issue's accuracy gate (>= 98 % within 0.25 deg, >= 85 % within 0.1 deg, median confidence
    >= 0.95) and clustering finds the true number of grains."""
    model, grid, micro, truth = case
    seeds = _far_field_seeds(truth)
    res = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.5,
                           progress=False)
    err = _errors_deg(res, micro)
    assert np.mean(err <= 0.25) >= 0.98
    assert np.mean(err <= 0.1) >= 0.85
    assert np.median(res.confidence) >= 0.95
    grains = cluster_grains(res.euler_rad, res.confidence, grid.x_um, grid.y_um, grid.edge_um,
                            225, min_confidence=0.5, max_angle_deg=1.0)
    assert len(grains) == len(np.unique(micro.grain_id))


def test_restarts_climb_past_flat_patches(case):
    """Option beyond MIDAS: restarting the simplex from its best point brings boundary voxels
    that the single MIDAS simplex leaves on a neighbour grain's orientation back to their own
    (every voxel within 0.1 deg here), never lowering a confidence."""
    model, grid, micro, truth = case
    seeds = _far_field_seeds(truth)
    midas = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.5,
                             progress=False)
    res = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.5,
                           restarts=3, progress=False)
    assert np.all(res.confidence >= midas.confidence)
    assert np.mean(_errors_deg(res, micro) <= 0.1) == 1.0
    with pytest.raises(ValueError, match="restarts"):
        fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.5,
                         restarts=-1, progress=False)


def test_fit_is_deterministic_across_thread_counts(case):
    model, grid, micro, truth = case
    rng = np.random.default_rng(1)
    seeds = np.concatenate([rotate_by(truth, rng.uniform(0.1, 0.3, len(truth)), rng),
                            random_orientations(20, rng)])
    a = fit_orientations(model, grid, seeds, min_frac_accept=0.3, orient_tol_deg=0.5,
                         progress=False, num_threads=1, chunk_voxels=50)
    b = fit_orientations(model, grid, seeds, min_frac_accept=0.3, orient_tol_deg=0.5,
                         progress=False, num_threads=2)
    np.testing.assert_array_equal(a.euler_rad, b.euler_rad)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.row, b.row)


def test_seeds_two_degrees_off_local_search(case):
    """Beyond MIDAS: seeds 1-2 deg from the truth score ~0 and the MIDAS path finds almost
    nothing; the local rotation-grid search around each seed brings >= 95 % of voxels within
    0.25 deg."""
    model, grid, micro, truth = case
    rng = np.random.default_rng(2)
    seeds = rotate_by(truth, rng.uniform(1.0, 2.0, len(truth)), rng)
    midas = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=2.0,
                             progress=False)
    assert np.mean(_errors_deg(midas, micro) <= 0.25) < 0.5
    res = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=2.0,
                           search_step_deg=0.5, progress=False)
    assert np.mean(_errors_deg(res, micro) <= 0.25) >= 0.95


def test_save_n_solutions_distinct(case):
    model, grid, micro, truth = case
    rng = np.random.default_rng(3)
    seeds = np.concatenate([rotate_by(truth, np.full(len(truth), 0.05), rng),
                            rotate_by(truth, np.full(len(truth), 0.08), rng)])
    res = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.3,
                           save_n_solutions=2, min_miso_n_saves_deg=1.0, space_group=225,
                           progress=False)
    # near-identical candidates are one solution: the second slot stays empty for most voxels
    assert np.all(res.solutions_confidence[:, 0] == res.confidence)
    second = res.solutions_confidence[:, 1] > 0
    if second.any():
        q0 = matrix_to_quaternion(__import__("xreduce.nf.crystal", fromlist=["x"]).
                                  euler_to_matrix(res.solutions_euler_rad[second, 0]))
        q1 = matrix_to_quaternion(__import__("xreduce.nf.crystal", fromlist=["x"]).
                                  euler_to_matrix(res.solutions_euler_rad[second, 1]))
        assert np.all(np.degrees(misorientation_rad(q0, q1, 225)) > 1.0)


def test_local_rotation_grid():
    g = local_rotation_grid(2.0, 0.5)
    assert np.all(np.degrees(np.linalg.norm(g, axis=1)) <= 2.0 + 1e-9)
    assert np.all(g[0] == 0)
    with pytest.raises(ValueError, match="step_deg"):
        local_rotation_grid(1.0, 0.0)


def test_fit_bad_input(case):
    model, grid, micro, truth = case
    with pytest.raises(ValueError, match="seeds"):
        fit_orientations(model, grid, np.zeros((0, 3, 3)), min_frac_accept=0.5,
                         orient_tol_deg=1.0)
    with pytest.raises(ValueError, match="min_frac_accept"):
        fit_orientations(model, grid, truth, min_frac_accept=1.5, orient_tol_deg=1.0)
    with pytest.raises(ValueError, match="space_group"):
        fit_orientations(model, grid, truth, min_frac_accept=0.5, orient_tol_deg=1.0,
                         save_n_solutions=2)
    with pytest.raises(ValueError, match="parametrization"):
        fit_orientations(model, grid, truth, min_frac_accept=0.5, orient_tol_deg=1.0,
                         parametrization="quaternion")


def test_screened_order_and_simplex_step(case):
    """Options beyond MIDAS: best-screened candidates first (ties to the better screened) and
    a smaller initial simplex step keep the accuracy gate on the CI case with fewer
    evaluations; bad values are refused."""
    model, grid, micro, truth = case
    seeds = _far_field_seeds(truth)
    res = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.5,
                           candidate_order="screened", simplex_step_deg=0.1, progress=False)
    err = _errors_deg(res, micro)
    assert np.mean(err <= 0.1) >= 0.98
    assert np.median(res.confidence) >= 0.95
    for kw, word in (({"candidate_order": "best"}, "candidate_order"),
                     ({"simplex_step_deg": 0.0}, "simplex_step_deg"),
                     ({"simplex_step_deg": 0.6}, "simplex_step_deg")):
        with pytest.raises(ValueError, match=word):
            fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=0.5,
                             progress=False, **kw)


def test_neighbour_passes(case):
    """Beyond MIDAS: trying the neighbours' fitted orientations brings back the boundary voxels
    whose own grain's seed scored below MinFracAccept (every voxel within 0.1 deg here, where
    MIDAS's rules leave 1.4 % on a neighbouring grain), never lowers a confidence, and does
    not depend on the thread count."""
    model, grid, micro, truth = case
    seeds = _far_field_seeds(truth)
    kw = dict(min_frac_accept=0.5, orient_tol_deg=0.5, progress=False)
    midas = fit_orientations(model, grid, seeds, **kw)
    res = fit_orientations(model, grid, seeds, neighbour_passes=2, num_threads=2, **kw)
    one = fit_orientations(model, grid, seeds, neighbour_passes=2, num_threads=1, **kw)
    assert np.mean(_errors_deg(midas, micro) <= 0.1) < 1.0
    assert np.mean(_errors_deg(res, micro) <= 0.1) == 1.0
    assert np.all(res.confidence >= midas.confidence)
    np.testing.assert_array_equal(res.euler_rad, one.euler_rad)
    np.testing.assert_array_equal(res.solutions_confidence[:, 0], res.confidence)
    with pytest.raises(ValueError, match="neighbour_passes"):
        fit_orientations(model, grid, seeds, neighbour_passes=-1, **kw)
    with pytest.raises(ValueError, match="neighbour_passes"):
        fit_orientations(model, grid, seeds, neighbour_passes=1, save_n_solutions=2,
                         space_group=225, **kw)


def _grouped_seeds(truth, copies=3):
    """Far-field seeds as a list of several scans gives them: every grain ``copies`` times,
    each copy 0.02-0.1 deg from the truth, plus 300 random decoys, shuffled."""
    rng = np.random.default_rng(2)
    reps = np.repeat(truth, copies, axis=0)
    seeds = np.concatenate([rotate_by(reps, rng.uniform(0.02, 0.1, len(reps)), rng),
                            random_orientations(300, rng)])
    return seeds[rng.permutation(len(seeds))]


def test_seed_groups():
    """Greedy in file order: the first ungrouped seed takes every ungrouped seed within the
    angle (rotation angle, no crystal symmetry); bad input is refused."""
    from scipy.spatial.transform import Rotation

    rv = np.radians([[0, 0, 0], [0.3, 0, 0], [5, 0, 0], [0.6, 0, 0], [5.2, 0, 0],
                     [0, 90, 0]])
    U = Rotation.from_rotvec(rv).as_matrix()
    assert seed_groups(U, 0.5).tolist() == [0, 0, 2, 3, 2, 5]
    assert seed_groups(U, 0.7).tolist() == [0, 0, 2, 0, 2, 5]
    assert seed_groups(U, 1e-6).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="angle_deg"):
        seed_groups(U, 0.0)
    with pytest.raises(ValueError, match="seeds"):
        seed_groups(np.zeros((2, 3)), 1.0)


def test_seed_group_screening_rule(case):
    """With seed groups, the candidates are exactly those of the rule (doc/nf_fit.md, "Seed
    groups"), checked against every exact confidence: at each voxel, a group's first seed
    when it passes MinFracAccept; when it scores in [NEXT_SEED_FRACTION x MinFracAccept,
    MinFracAccept), the
    group's first next seed (file order) that passes; else none. Their screened confidences
    are exact."""
    from xreduce.nf import fit as nf_fit

    model, grid, micro, truth = case
    seeds = _grouped_seeds(truth)
    minfrac = 0.6
    group = seed_groups(seeds, 0.5)
    exact = model.confidence(seeds, grid)                   # every pair, no early exits
    plan = type("Plan", (), dict(model=model, seed_group=group, minfrac=minfrac,
                                 U=np.ascontiguousarray(seeds)))
    scores = nf_fit._screen_groups(plan, grid, 0)
    expected = np.zeros(exact.shape, bool)
    for g in np.unique(group):
        members = np.nonzero(group == g)[0]
        for v in range(len(grid)):
            first = exact[members[0], v]
            if first >= minfrac:
                expected[members[0], v] = True
            elif first >= nf_fit.NEXT_SEED_FRACTION * minfrac:
                passing = members[1:][exact[members[1:], v] >= minfrac]
                if len(passing):
                    expected[passing[0], v] = True
    got = scores >= minfrac
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(scores[got], exact[got])
    # the rule is not trivial here: next seeds were needed at some voxels
    assert (expected & (group != np.arange(len(group)))[:, None]).any()


def test_seed_groups_and_simplex_xtol_fast_path(case):
    """The fast path beyond MIDAS (one seed refined per group, a 0.1 deg initial step, a
    0.015 deg simplex-size stop, 2 neighbour passes with a 0.05 margin: FAST_PATH) on seeds
    holding every grain three times:
    at least as accurate as MIDAS's rules within 0.1 and 0.25 deg, the issue's gate met,
    at most one candidate refined per group and voxel, fewer evaluations, independent of
    the thread count; bad values refused."""
    from xreduce.nf.overlap import OverlapModel

    model, grid, micro, truth = case
    seeds = _grouped_seeds(truth)
    kw = dict(min_frac_accept=0.5, orient_tol_deg=0.5, progress=False)
    fast = FAST_PATH
    evals = []
    original = OverlapModel.refine

    def counting(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        evals.append(out[2])
        return out

    OverlapModel.refine = counting
    try:
        midas = fit_orientations(model, grid, seeds, **kw)
        n_midas = sum(int(e.sum()) for e in evals)
        evals.clear()
        res = fit_orientations(model, grid, seeds, num_threads=2, **fast, **kw)
        n_fast = sum(int(e.sum()) for e in evals)
        main_fit_candidates = len(evals[0])
    finally:
        OverlapModel.refine = original
    one = fit_orientations(model, grid, seeds, num_threads=1, chunk_voxels=70, **fast, **kw)
    e_midas, e_fast = _errors_deg(midas, micro), _errors_deg(res, micro)
    for limit in (0.1, 0.25):
        assert np.mean(e_fast <= limit) >= np.mean(e_midas <= limit)
    assert np.mean(e_fast <= 0.25) >= 0.98 and np.mean(e_fast <= 0.1) >= 0.85
    assert np.median(res.confidence) >= 0.95
    assert main_fit_candidates <= len(grid) * len(np.unique(seed_groups(seeds, 0.5)))
    assert main_fit_candidates < midas.n_candidates.sum() / 2
    assert n_fast < 0.75 * n_midas   # MIDAS stops at confidence 1 here: not 3x fewer
    np.testing.assert_array_equal(res.euler_rad, one.euler_rad)
    np.testing.assert_array_equal(res.confidence, one.confidence)
    np.testing.assert_array_equal(res.row, one.row)
    # one seed per grain (nothing to group): still at least as accurate as MIDAS's rules
    # (measured: 99.5 % within 0.1 deg vs 98.6 %; a 0.05 deg step would give 98.1 %)
    seeds = _far_field_seeds(truth)
    midas = fit_orientations(model, grid, seeds, **kw)
    res = fit_orientations(model, grid, seeds, **FAST_PATH, **kw)
    e_midas, e_fast = _errors_deg(midas, micro), _errors_deg(res, micro)
    for limit in (0.1, 0.25):
        assert np.mean(e_fast <= limit) >= np.mean(e_midas <= limit)
    for bad, word in (({"seed_group_deg": 0.0}, "seed_group_deg"),
                      ({"simplex_xtol_deg": 0.0}, "simplex_xtol_deg"),
                      ({"simplex_xtol_deg": 0.5}, "simplex_xtol_deg"),
                      ({"neighbour_margin": -0.1}, "neighbour_margin")):
        with pytest.raises(ValueError, match=word):
            fit_orientations(model, grid, seeds, **bad, **kw)
