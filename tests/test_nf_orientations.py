"""Seed files and the fundamental-zone grid (xreduce.nf.orientations)."""
import numpy as np
import pytest

from xreduce.nf.crystal import (fundamental_zone, laue_quaternions, matrix_to_quaternion,
                                misorientation_rad)
from xreduce.nf.microstructure import random_orientations
from xreduce.nf.orientations import (fundamental_zone_grid, read_grains_csv, read_seed_file,
                                     write_quaternion_seeds)


def test_quaternion_file_round_trip(tmp_path):
    U = random_orientations(5, np.random.default_rng(0))
    path = tmp_path / "seeds.txt"
    write_quaternion_seeds(path, U)
    assert path.read_text().count(",") == 15
    np.testing.assert_allclose(read_seed_file(path, n_orientations=5), U, atol=1e-10)


def test_matrix_and_grains_csv_files(tmp_path):
    U = random_orientations(3, np.random.default_rng(1))
    (tmp_path / "m.txt").write_text("\n".join(" ".join("%.17g" % v for v in u.ravel()) for u in U))
    np.testing.assert_allclose(read_seed_file(tmp_path / "m.txt"), U, atol=1e-12)
    rows = [f"{i + 1}\t" + "\t".join("%.17g" % v for v in u.ravel()) + "\t1.0\t2.0\t3.0\t4.08\t4.08"
            for i, u in enumerate(U)]
    (tmp_path / "Grains.csv").write_text("%NumGrains 3\n%GrainID O11 ...\n" + "\n".join(rows))
    ids, got, pos = read_grains_csv(tmp_path / "Grains.csv")
    np.testing.assert_allclose(got, U, atol=1e-12)
    assert ids.tolist() == [1, 2, 3] and pos[0].tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(read_seed_file(tmp_path / "Grains.csv"), U, atol=1e-12)


def test_bad_seed_files(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("1,0,0,0\n1,0,0\n")
    with pytest.raises(ValueError, match=r"s.txt:2: expected 4 numbers"):
        read_seed_file(p)
    p.write_text("1,0,0\n")
    with pytest.raises(ValueError, match="columns"):
        read_seed_file(p)
    p.write_text("1,0,0,0\n0,1,0,0\n")
    with pytest.raises(ValueError, match="NrOrientations: the parameters say 3"):
        read_seed_file(p, n_orientations=3)
    p.write_text("2,0,0,0\n")
    with pytest.raises(ValueError, match="unit quaternion"):
        read_seed_file(p)
    p.write_text("")
    with pytest.raises(ValueError, match="no orientations"):
        read_seed_file(p)
    with pytest.raises(FileNotFoundError):
        read_seed_file(tmp_path / "missing.txt")


@pytest.mark.parametrize("space_group, n_sym", [(225, 24), (194, 12)])
def test_fundamental_zone_grid_is_uniform_and_covers(space_group, n_sym):
    """Every grid point lies in the fundamental zone; the count matches the zone's share of
    orientation space at this spacing; random orientations are within ~step of a point."""
    step = 5.0
    U = fundamental_zone_grid(space_group, step)
    q = matrix_to_quaternion(U)
    fz = fundamental_zone(q, space_group)
    np.testing.assert_allclose(np.abs(fz[:, 0]), np.abs(q[:, 0]), atol=1e-12)
    # cell volume (homochoric spacing h = step/2 rad): pi^2 / h^3 points over SO(3)
    h = np.radians(step) / 2
    expected = np.pi ** 2 / h ** 3 / n_sym
    assert 0.9 * expected < len(U) < 1.1 * expected
    rng = np.random.default_rng(2)
    test_q = matrix_to_quaternion(random_orientations(40, rng))
    nearest = [np.degrees(misorientation_rad(np.repeat(t[None], len(q), 0), q,
                                             space_group).min()) for t in test_q]
    assert max(nearest) < step
    assert len(laue_quaternions(space_group)) == n_sym


def test_fundamental_zone_grid_bad_step():
    with pytest.raises(ValueError, match="step_deg"):
        fundamental_zone_grid(225, 0.01)
