"""Grain clustering (Mic2GrainsList) and Grains.csv."""
import numpy as np
import pytest

from xreduce.nf.crystal import (laue_rotations, matrix_to_euler,
                                matrix_to_quaternion, misorientation_rad)
from xreduce.nf.grains import cluster_grains, write_grains_csv
from xreduce.nf.microstructure import random_orientations
from xreduce.nf.orientations import read_grains_csv


def _noisy_grains(rng, n_grains=5, per_grain=40, spread_deg=0.2):
    from scipy.spatial.transform import Rotation

    U = random_orientations(n_grains, rng)
    sym = laue_rotations(225)
    members, labels = [], []
    for k in range(n_grains):
        dR = Rotation.from_rotvec(rng.normal(scale=np.radians(spread_deg) / 2,
                                             size=(per_grain, 3))).as_matrix()
        # each voxel reported as a random symmetric equivalent (as a fit may return it)
        S = sym[rng.integers(0, len(sym), per_grain)]
        members.append(dR @ U[k] @ S)
        labels += [k] * per_grain
    return U, np.concatenate(members), np.array(labels)


def test_clusters_with_symmetry_and_mean_orientation(tmp_path):
    rng = np.random.default_rng(0)
    U, members, labels = _noisy_grains(rng)
    conf = rng.uniform(0.6, 1.0, len(labels))
    conf[::17] = 0.1   # below MinConfidence: no grain
    x = rng.uniform(-50, 50, len(labels))
    g = cluster_grains(matrix_to_euler(members), conf, x, np.zeros(len(labels)), 2.5, 225,
                       min_confidence=0.5, max_angle_deg=2.0)
    assert len(g) == 5
    assert np.all(g.labels[conf < 0.5] == -1)
    kept = conf >= 0.5
    # one grain per true grain, same partition
    for k in range(5):
        assert len(np.unique(g.labels[kept & (labels == k)])) == 1
    # mean orientation within 0.1 deg of the true one (symmetry-aware)
    q_mean = matrix_to_quaternion(g.orientation)
    q_true = matrix_to_quaternion(U)
    err = np.degrees([misorientation_rad(q_mean[i], q_true, 225).min() for i in range(5)])
    assert err.max() < 0.1
    assert g.n_voxels.sum() == kept.sum()
    np.testing.assert_allclose(g.area_um2, g.n_voxels * np.sqrt(3) / 4 * 2.5 ** 2)
    # the greedy order: the most confident voxel heads grain 0
    assert g.labels[np.argmax(conf)] == 0
    write_grains_csv(tmp_path / "Grains.csv", g)
    ids, Ug, pos = read_grains_csv(tmp_path / "Grains.csv")
    assert ids.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(Ug, g.orientation, atol=1e-8)
    np.testing.assert_allclose(pos[:, :2], g.centroid_um, atol=1e-5)


def test_cluster_bad_input():
    e = np.zeros((2, 3))
    with pytest.raises(ValueError, match="max_angle_deg"):
        cluster_grains(e, 1.0, 0.0, 0.0, 1.0, 225, min_confidence=0.5, max_angle_deg=0)
    with pytest.raises(ValueError, match="min_confidence"):
        cluster_grains(e, 1.0, 0.0, 0.0, 1.0, 225, min_confidence=2.0)
    g = cluster_grains(np.full((2, 3), np.nan), 1.0, 0.0, 0.0, 1.0, 225, min_confidence=0.5)
    assert len(g) == 0 and np.all(g.labels == -1)
