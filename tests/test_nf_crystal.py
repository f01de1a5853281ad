"""Crystal: B matrix, gemmi space groups, Laue rotations, orientations, misorientation."""
import numpy as np
import pytest

import reference
from xreduce.nf import crystal as cr

# One space group per Laue class, with a lattice of the right system.
LAUE_EXAMPLES = [
    (2, (4.1, 5.2, 6.3, 81.0, 95.0, 101.0)),
    (14, (5.1, 6.2, 7.3, 90.0, 103.0, 90.0)),
    (62, (5.1, 6.2, 7.3, 90.0, 90.0, 90.0)),
    (88, (5.1, 5.1, 7.3, 90.0, 90.0, 90.0)),
    (139, (3.1, 3.1, 7.3, 90.0, 90.0, 90.0)),
    (148, (5.0, 5.0, 13.7, 90.0, 90.0, 120.0)),
    (167, (4.76, 4.76, 12.99, 90.0, 90.0, 120.0)),
    (176, (9.4, 9.4, 6.9, 90.0, 90.0, 120.0)),
    (194, (2.95, 2.95, 4.68, 90.0, 90.0, 120.0)),
    (205, (5.4, 5.4, 5.4, 90.0, 90.0, 90.0)),
    (225, (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)),
]


def test_b_matrix_matches_reciprocal_basis(rng):
    """B equals the QR-frame reciprocal basis (independent construction), to 1e-12 relative."""
    for _ in range(20):
        lat = np.r_[rng.uniform(2, 9, 3), rng.uniform(70, 110, 3)]
        np.testing.assert_allclose(cr.b_matrix(lat), reference.nf_b_matrix(lat), rtol=1e-12,
                                   atol=1e-14)
    B = cr.b_matrix((4.0, 4.0, 4.0, 90, 90, 90))
    np.testing.assert_allclose(B, np.eye(3) / 4.0, atol=1e-15)
    with pytest.raises(ValueError, match="lattice_parameter"):
        cr.b_matrix((1, 2, 3))


def test_monoclinic_d_spacing_formula(rng):
    a, b, c, beta = 5.1, 6.2, 7.3, 103.0
    B = cr.b_matrix((a, b, c, 90, beta, 90))
    sb, cb = np.sin(np.radians(beta)), np.cos(np.radians(beta))
    for h, k, l in rng.integers(-4, 5, (50, 3)):
        if h == k == l == 0:
            continue
        inv_d2 = (h * h / a**2 + k * k * sb**2 / b**2 + l * l / c**2
                  - 2 * h * l * cb / (a * c)) / sb**2
        assert np.dot(B @ [h, k, l], B @ [h, k, l]) == pytest.approx(inv_d2, rel=1e-12)


def test_euler_convention(rng):
    """U = Rz(phi1) Rx(Phi) Rz(phi2) written out by hand; round trips to 1e-12."""
    def rz(t):
        return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

    def rx(t):
        return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])

    e = np.c_[rng.uniform(0, 2 * np.pi, 30), rng.uniform(0.01, np.pi - 0.01, 30),
              rng.uniform(0, 2 * np.pi, 30)]
    U = cr.euler_to_matrix(e)
    for ei, Ui in zip(e, U):
        np.testing.assert_allclose(Ui, rz(ei[0]) @ rx(ei[1]) @ rz(ei[2]), atol=1e-14)
    np.testing.assert_allclose(cr.matrix_to_euler(U), e, atol=1e-10)
    q = cr.euler_to_quaternion(e)
    assert np.all(q[:, 0] >= 0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-14)
    np.testing.assert_allclose(cr.quaternion_to_matrix(q), U, atol=1e-13)
    np.testing.assert_allclose(cr.quaternion_to_euler(q), e, atol=1e-10)
    # Hamilton product convention: matrix(q1 q2) = matrix(q1) matrix(q2)
    q1, q2 = q[0], q[1]
    w1, v1, w2, v2 = q1[0], q1[1:], q2[0], q2[1:]
    prod = np.r_[w1 * w2 - v1 @ v2, w1 * v2 + w2 * v1 + np.cross(v1, v2)]
    np.testing.assert_allclose(cr.quaternion_to_matrix(prod), U[0] @ U[1], atol=1e-13)


def test_laue_rotations_all_space_groups():
    """Counts for all 230 groups follow the REFERENCE ranges; every set is a group of proper
    rotations (closed under products to 1e-9)."""
    for number in range(1, 231):
        name, count = cr.laue_class(number)
        R = cr.laue_rotations(number)
        assert len(R) == count, (number, name)
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                                   atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
        np.testing.assert_array_equal(R[0], np.eye(3))
        if number in (1, 14, 148, 194, 225):
            flat = R.reshape(len(R), 9)
            for a in R:
                for b in R:
                    assert np.min(np.abs(flat - (a @ b).ravel()).max(axis=1)) < 1e-9


def test_laue_rotations_known_axes():
    hexa = cr.laue_rotations(194, (2.95, 2.95, 4.68, 90, 90, 120))
    c6 = np.array([[0.5, -np.sqrt(3) / 2, 0], [np.sqrt(3) / 2, 0.5, 0], [0, 0, 1]])
    assert np.min(np.abs(hexa - c6).reshape(12, 9).max(axis=1)) < 1e-12  # 6-fold about c = z
    cubic = cr.laue_rotations(225)
    assert np.all(np.isin(np.round(cubic, 12), (-1.0, 0.0, 1.0)))  # signed permutations
    mono = cr.laue_rotations(14, (5.1, 6.2, 7.3, 90, 103, 90))
    np.testing.assert_allclose(mono[1], np.diag([-1.0, 1.0, -1.0]), atol=1e-12)  # 2 along b = y
    with pytest.raises(ValueError, match="not compatible"):
        cr.laue_rotations(225, (4.0, 4.0, 5.0, 90, 90, 90))
    with pytest.raises(ValueError, match="space_group"):
        cr.laue_rotations(231)
    with pytest.raises(TypeError, match="space_group"):
        cr.laue_rotations(22.5)


def test_symmetry_operations_from_gemmi():
    W, t = cr.symmetry_operations(225)
    assert W.shape == (192, 3, 3) and len({tuple(x) for x in np.round(t, 6)}) == 4
    W, t = cr.symmetry_operations(194)
    assert W.shape == (24, 3, 3)
    assert np.all(np.abs(np.linalg.det(W)) == 1)
    # 6_3 screw: the 6-fold rotation comes with a c/2 translation
    six = [k for k in range(24) if np.trace(W[k]) == 2 and np.linalg.det(W[k]) > 0]
    assert any(abs(t[k, 2] - 0.5) < 1e-12 for k in six)


def test_systematic_absences_fcc_bcc(rng):
    hkl = rng.integers(-6, 7, (300, 3))
    h, k, l = hkl.T
    fcc = (h % 2 == k % 2) & (k % 2 == l % 2)
    bcc = (h + k + l) % 2 == 0
    np.testing.assert_array_equal(cr.is_allowed(225, hkl), fcc)
    np.testing.assert_array_equal(cr.is_allowed(229, hkl), bcc)


@pytest.mark.parametrize("number, lattice", LAUE_EXAMPLES)
def test_misorientation_matches_brute_force(number, lattice, rng):
    """Kernel (one-sided, quaternions) equals the two-sided matrix brute force to 1e-7 rad
    (the reference's arccos of a trace loses ~sqrt(eps) near 0)."""
    n = 150
    e1 = rng.uniform(0, 1, (n, 3)) * [2 * np.pi, np.pi, 2 * np.pi]
    e2 = rng.uniform(0, 1, (n, 3)) * [2 * np.pi, np.pi, 2 * np.pi]
    # a few near-identical pairs: small misorientations through a symmetry operator
    sym = cr.laue_rotations(number, lattice)
    U1, U2 = cr.euler_to_matrix(e1), cr.euler_to_matrix(e2)
    U2[:20] = U1[:20] @ sym[rng.integers(0, len(sym), 20)] @ cr.euler_to_matrix(
        rng.normal(0, 0.02, (20, 3)))
    got = cr.misorientation_rad(cr.matrix_to_quaternion(U1), cr.matrix_to_quaternion(U2),
                                cr.laue_quaternions(number, lattice))
    want = reference.nf_misorientation_brute(U1, U2, sym)
    np.testing.assert_allclose(got, want, atol=1e-7)
    # and a two-sided quaternion brute force on a subset (slow pure-Python loops)
    k = 40 if len(sym) <= 12 else 12
    want_q = reference.nf_misorientation_brute_quaternion(
        cr.matrix_to_quaternion(U1[:k]), cr.matrix_to_quaternion(U2[:k]),
        cr.laue_quaternions(number, lattice))
    np.testing.assert_allclose(got[:k], want_q, atol=1e-7)
    # an orientation and its symmetry equivalents are 0 apart
    q = cr.matrix_to_quaternion(U1[:1] @ sym)
    np.testing.assert_allclose(
        cr.misorientation_rad(cr.matrix_to_quaternion(U1[0]), q,
                              cr.laue_quaternions(number, lattice)),
        0, atol=1e-7)


def test_fundamental_zone(rng):
    q = cr.euler_to_quaternion(rng.uniform(0, 1, (200, 3)) * [2 * np.pi, np.pi, 2 * np.pi])
    for number in (225, 194):
        fz = cr.fundamental_zone(q, number)
        np.testing.assert_allclose(cr.misorientation_rad(q, fz, number), 0, atol=1e-7)
        sym = cr.laue_rotations(number)
        Uq = cr.quaternion_to_matrix(q)
        smallest = np.min([np.arccos(np.clip((np.trace(Uq @ S, axis1=1, axis2=2) - 1) / 2, -1, 1))
                           for S in sym], axis=0)
        np.testing.assert_allclose(2 * np.arccos(np.clip(fz[:, 0], -1, 1)), smallest, atol=1e-7)
        np.testing.assert_allclose(cr.fundamental_zone(fz, number), fz, atol=1e-12)
    assert np.max(2 * np.arccos(cr.fundamental_zone(q, 225)[:, 0])) < np.radians(62.81)
