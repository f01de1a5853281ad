"""Crystals for NF-HEDM: lattice B matrix, space groups (gemmi), Laue symmetry, orientations.

Conventions (MIDAS, see REFERENCE.md section 5):

- ``B`` maps Miller indices to Cartesian reciprocal-lattice vectors in the crystal frame,
  without 2 pi: ``g = B @ hkl`` in 1/Angstrom, ``d = 1 / |g|``. Rows
  ``[a*, b* cos(gamma*), c* cos(beta*)]``, ``[0, b* sin(gamma*), -c* sin(beta*) cos(alpha)]``,
  ``[0, 0, c* sin(beta*) sin(alpha)]``.
- An orientation ``U`` maps crystal vectors to sample vectors. From Bunge Euler angles
  (radians) ``U = Rz(phi1) Rx(Phi) Rz(phi2)``. Quaternions are ``(w, x, y, z)`` (w first) and
  represent the same active rotation.
- Crystal symmetry acts on the right: ``U S`` is the same orientation as ``U`` for each proper
  rotation ``S`` of the Laue group, expressed in the Cartesian frame of ``B``.

Space-group operations and systematic absences come from gemmi; nothing is tabulated here.

Example
-------
>>> import numpy as np
>>> B = b_matrix((4.08, 4.08, 4.08, 90, 90, 90))
>>> round(float(1 / np.linalg.norm(B @ [1, 1, 1])), 4)
2.3556
>>> laue_rotations(225).shape
(24, 3, 3)
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "b_matrix", "direct_matrix", "space_group", "symmetry_operations", "is_allowed",
    "laue_class", "laue_rotations", "laue_quaternions", "euler_to_matrix", "matrix_to_euler", "matrix_to_quaternion",
    "quaternion_to_matrix", "euler_to_quaternion", "quaternion_to_euler",
    "misorientation_rad", "fundamental_zone", "LAUE_CLASSES",
]

#: The 11 Laue classes: (name, first and last space-group number, proper rotations).
LAUE_CLASSES: tuple[tuple[str, int, int, int], ...] = (
    ("triclinic", 1, 2, 1),
    ("monoclinic", 3, 15, 2),
    ("orthorhombic", 16, 74, 4),
    ("tetragonal low", 75, 88, 4),
    ("tetragonal high", 89, 142, 8),
    ("trigonal low", 143, 148, 3),
    ("trigonal high", 149, 167, 6),
    ("hexagonal low", 168, 176, 6),
    ("hexagonal high", 177, 194, 12),
    ("cubic low", 195, 206, 12),
    ("cubic high", 207, 230, 24),
)

# A lattice compatible with each crystal system, used when the caller gives none.
_DEFAULT_LATTICE = {
    "triclinic": (1.0, 1.0, 1.0, 90.0, 90.0, 90.0),
    "monoclinic": (1.0, 1.2, 1.4, 90.0, 100.0, 90.0),
    "orthorhombic": (1.0, 1.2, 1.4, 90.0, 90.0, 90.0),
    "tetragonal": (1.0, 1.0, 1.4, 90.0, 90.0, 90.0),
    "trigonal": (1.0, 1.0, 1.4, 90.0, 90.0, 120.0),
    "hexagonal": (1.0, 1.0, 1.4, 90.0, 90.0, 120.0),
    "cubic": (1.0, 1.0, 1.0, 90.0, 90.0, 90.0),
}


def _check_lattice(lattice_parameter) -> np.ndarray:
    lat = np.asarray(lattice_parameter, dtype=np.float64)
    if lat.shape != (6,):
        raise ValueError(
            f"lattice_parameter: expected 6 values (a b c in A, alpha beta gamma in degrees), "
            f"got shape {lat.shape}"
        )
    if np.any(lat[:3] <= 0) or np.any(lat[3:] <= 0) or np.any(lat[3:] >= 180):
        raise ValueError(f"lattice_parameter: expected a, b, c > 0 and angles in (0, 180), "
                         f"got {lat.tolist()}")
    return lat


def b_matrix(lattice_parameter) -> np.ndarray:
    """Reciprocal-lattice matrix B (1/Angstrom, no 2 pi) of ``(a, b, c, alpha, beta, gamma)``.

    Parameters
    ----------
    lattice_parameter : sequence of 6 floats
        a, b, c in Angstrom; alpha, beta, gamma in degrees.

    Returns
    -------
    numpy.ndarray, shape (3, 3)
        Upper-triangular ``B`` with ``g = B @ hkl`` in the Cartesian crystal frame.

    Example
    -------
    >>> b_matrix((2.0, 2.0, 2.0, 90, 90, 90)).diagonal()
    array([0.5, 0.5, 0.5])
    """
    a, b, c, al, be, ga = _check_lattice(lattice_parameter)
    ca, cb, cg = np.cos(np.radians([al, be, ga]))
    sa, sb, sg = np.sin(np.radians([al, be, ga]))
    volume = a * b * c * np.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)
    a_s, b_s, c_s = b * c * sa / volume, c * a * sb / volume, a * b * sg / volume
    cos_bs = (ca * cg - cb) / (sa * sg)
    cos_gs = (ca * cb - cg) / (sa * sb)
    sin_bs, sin_gs = np.sqrt(1 - cos_bs**2), np.sqrt(1 - cos_gs**2)
    return np.array([
        [a_s, b_s * cos_gs, c_s * cos_bs],
        [0.0, b_s * sin_gs, -c_s * sin_bs * ca],
        [0.0, 0.0, c_s * sin_bs * sa],
    ])


def direct_matrix(lattice_parameter) -> np.ndarray:
    """Direct-lattice matrix A (columns a, b, c in Angstrom, Cartesian frame of B): ``A = B^-T``."""
    return np.linalg.inv(b_matrix(lattice_parameter)).T


def _check_space_group(number) -> int:
    if isinstance(number, bool) or not isinstance(number, (int, np.integer)):
        raise TypeError(f"space_group: expected an int in 1..230, got {type(number).__name__}")
    if not 1 <= int(number) <= 230:
        raise ValueError(f"space_group: expected an int in 1..230, got {number}")
    return int(number)


def space_group(number: int):
    """The gemmi space group of that number (its default setting, hexagonal axes for R).

    Example
    -------
    >>> space_group(225).hm
    'F m -3 m'
    """
    import gemmi

    return gemmi.find_spacegroup_by_number(_check_space_group(number))


def symmetry_operations(number: int) -> tuple[np.ndarray, np.ndarray]:
    """All operations (x -> W x + t, fractional coordinates) of space group ``number``,
    centring translations included, from gemmi.

    Returns
    -------
    rotations : int (n, 3, 3)
    translations : float (n, 3), in [0, 1)

    Example
    -------
    >>> W, t = symmetry_operations(225)
    >>> W.shape, t.shape
    ((192, 3, 3), (192, 3))
    """
    import gemmi

    ops = list(space_group(number).operations())
    W = np.array([op.rot for op in ops], dtype=np.int64) // gemmi.Op.DEN
    t = (np.array([op.tran for op in ops], dtype=np.float64) / gemmi.Op.DEN) % 1.0
    return W, t


def is_allowed(number: int, hkl) -> np.ndarray:
    """True where a reflection is not systematically absent in space group ``number``.

    Parameters
    ----------
    number : int
        Space-group number.
    hkl : array_like of int, shape (..., 3)

    Returns
    -------
    numpy.ndarray of bool, shape (...)

    Example
    -------
    >>> is_allowed(225, [[1, 1, 1], [1, 0, 0]]).tolist()
    [True, False]
    """
    ops = space_group(number).operations()
    hkl = np.asarray(hkl)
    if hkl.shape[-1:] != (3,) or not np.issubdtype(hkl.dtype, np.integer):
        raise ValueError(f"hkl: expected integer array of shape (..., 3), got {hkl.dtype} "
                         f"{hkl.shape}")
    flat = hkl.reshape(-1, 3).tolist()
    out = np.array([not ops.is_systematically_absent(h) for h in flat], dtype=bool)
    return out.reshape(hkl.shape[:-1])


def laue_class(number: int) -> tuple[str, int]:
    """(name, number of proper rotations) of the Laue class of space group ``number``.

    Example
    -------
    >>> laue_class(194)
    ('hexagonal high', 12)
    """
    n = _check_space_group(number)
    for name, lo, hi, count in LAUE_CLASSES:
        if lo <= n <= hi:
            return name, count
    raise AssertionError("unreachable")  # pragma: no cover


@lru_cache(maxsize=256)
def _laue_rotations_cached(number: int, lattice: tuple | None) -> np.ndarray:
    import gemmi

    sg = space_group(number)
    if lattice is None:
        lattice = _DEFAULT_LATTICE[sg.crystal_system_str()]
    A = direct_matrix(lattice)
    A_inv = np.linalg.inv(A)
    rots = []
    seen = set()
    for op in sg.operations().sym_ops:
        W = np.array(op.rot, dtype=np.float64) / gemmi.Op.DEN
        if np.linalg.det(W) < 0:  # the Laue group holds -1: keep -W, a proper rotation
            W = -W
        key = tuple(np.rint(W).astype(int).ravel())
        if key in seen:
            continue
        seen.add(key)
        R = A @ W @ A_inv
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
            raise ValueError(
                f"lattice_parameter: {lattice} is not compatible with the symmetry of space group "
                f"{number} ({sg.hm}): operation {op.triplet()} is not a rotation in its frame"
            )
        u, _, vt = np.linalg.svd(R)  # remove round-off: nearest orthogonal matrix
        R = u @ vt
        # crystallographic rotations have entries 0, +-1/2, +-sqrt(3)/2, +-1 in these frames
        # (monoclinic and triclinic cells give 0 and +-1): snap those exactly
        for exact in (0.0, 0.5, np.sqrt(3) / 2, 1.0):
            close = np.abs(np.abs(R) - exact) < 1e-10
            R[close] = np.sign(R[close]) * exact
        rots.append(R)
    # identity first, then a stable order
    rots.sort(key=lambda m: (-np.trace(m), tuple(np.round(m.ravel(), 9))))
    out = np.array(rots)
    out.flags.writeable = False
    return out


def laue_rotations(number: int, lattice_parameter=None) -> np.ndarray:
    """Proper rotations of the Laue group of space group ``number`` (Cartesian frame of B).

    Derived from gemmi's space-group operations: each point operation ``W`` (fractional
    coordinates) is made proper (``-W`` for improper ones, the Laue group containing the
    inversion) and converted to Cartesian ``A W A^-1`` with ``A`` the direct-lattice matrix.

    Parameters
    ----------
    number : int
        Space-group number, 1..230.
    lattice_parameter : sequence of 6 floats, optional
        The lattice whose Cartesian frame is used; a lattice of the right crystal system by
        default (the result is the same for every compatible lattice except for triclinic,
        where it is the identity anyway).

    Returns
    -------
    numpy.ndarray, shape (n, 3, 3), read-only
        ``n`` = 1, 2, 4, 4, 8, 3, 6, 6, 12, 12, 24 for the 11 Laue classes; identity first.

    Example
    -------
    >>> laue_rotations(194).shape
    (12, 3, 3)
    """
    lat = None if lattice_parameter is None else tuple(_check_lattice(lattice_parameter).tolist())
    return _laue_rotations_cached(_check_space_group(number), lat)


def laue_quaternions(number: int, lattice_parameter=None) -> np.ndarray:
    """The rotations of :func:`laue_rotations` as unit quaternions (w, x, y, z), w >= 0."""
    return matrix_to_quaternion(laue_rotations(number, lattice_parameter))


# ---- orientation conversions ---------------------------------------------------------------

def _as_array(x, last, name) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[-len(last):] != last:
        raise ValueError(f"{name}: expected shape (..., {', '.join(map(str, last))}), "
                         f"got {arr.shape}")
    return arr


def euler_to_matrix(euler_rad) -> np.ndarray:
    """Bunge ZXZ Euler angles (radians, shape (..., 3)) -> U = Rz(phi1) Rx(Phi) Rz(phi2).

    Example
    -------
    >>> euler_to_matrix([0.0, 0.0, 0.0]).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    e = _as_array(euler_rad, (3,), "euler_rad")
    m = Rotation.from_euler("ZXZ", e.reshape(-1, 3)).as_matrix()
    return m.reshape(e.shape[:-1] + (3, 3))


def matrix_to_euler(matrix) -> np.ndarray:
    """U (..., 3, 3) -> Bunge Euler angles (radians), phi1, phi2 in [0, 2 pi), Phi in [0, pi]."""
    m = _as_array(matrix, (3, 3), "matrix")
    import warnings

    with warnings.catch_warnings():  # gimbal lock (Phi = 0 or pi) is fine: phi2 is set to 0
        warnings.simplefilter("ignore", UserWarning)
        e = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_euler("ZXZ")
    e[:, 0] %= 2 * np.pi
    e[:, 2] %= 2 * np.pi
    return e.reshape(m.shape[:-2] + (3,))


def matrix_to_quaternion(matrix) -> np.ndarray:
    """U (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z) with w >= 0."""
    m = _as_array(matrix, (3, 3), "matrix")
    q = np.ascontiguousarray(Rotation.from_matrix(m.reshape(-1, 3, 3)).as_quat()[:, [3, 0, 1, 2]])
    q[q[:, 0] < 0] *= -1
    return q.reshape(m.shape[:-2] + (4,))


def quaternion_to_matrix(quaternion) -> np.ndarray:
    """Quaternions (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3)."""
    q = _as_array(quaternion, (4,), "quaternion")
    m = Rotation.from_quat(q.reshape(-1, 4)[:, [1, 2, 3, 0]]).as_matrix()
    return m.reshape(q.shape[:-1] + (3, 3))


def euler_to_quaternion(euler_rad) -> np.ndarray:
    """Bunge Euler angles (radians) -> quaternions (w, x, y, z), w >= 0."""
    return matrix_to_quaternion(euler_to_matrix(euler_rad))


def quaternion_to_euler(quaternion) -> np.ndarray:
    """Quaternions (w, x, y, z) -> Bunge Euler angles (radians)."""
    return matrix_to_euler(quaternion_to_matrix(quaternion))


def _symmetry_quaternions(symmetry) -> np.ndarray:
    if isinstance(symmetry, (int, np.integer)) and not isinstance(symmetry, bool):
        return np.ascontiguousarray(laue_quaternions(int(symmetry)))
    s = _as_array(symmetry, (4,), "symmetry")
    if s.ndim != 2:
        raise ValueError(f"symmetry: expected a space-group number or quaternions (n, 4), "
                         f"got shape {s.shape}")
    return np.ascontiguousarray(s)


def _unit_quaternions(q, name) -> np.ndarray:
    q = _as_array(q, (4,), name)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError(f"{name}: zero quaternion")
    return q / norm


def misorientation_rad(q1, q2, symmetry, num_threads: int = 0) -> np.ndarray:
    """Misorientation angles (radians) between orientations, with crystal symmetry.

    ``min over S of 2 acos(|w(q1^-1 q2 S)|)``, S the Laue-group proper rotations. Computed by
    the OpenMP kernel ``xreduce.ext.misorientation`` (millions of pairs per second).

    Parameters
    ----------
    q1, q2 : array_like, shape (n, 4) or (4,)
        Orientations as quaternions (w, x, y, z), normalised by the kernel (a zero quaternion
        gives NaN); broadcast against each other.
    symmetry : int or array_like (m, 4)
        Space-group number, or the symmetry quaternions themselves.
    num_threads : int
        OpenMP threads, 0 for the default.

    Returns
    -------
    numpy.ndarray, shape (n,)

    Example
    -------
    >>> q = euler_to_quaternion([[0.1, 0.2, 0.3]])
    >>> float(misorientation_rad(q, q, 225)[0])
    0.0
    """
    from xreduce.ext import misorientation as _ext

    a = np.atleast_2d(_as_array(q1, (4,), "q1"))
    b = np.atleast_2d(_as_array(q2, (4,), "q2"))
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"q1, q2: expected shape (n, 4) or (4,), got {a.shape} and {b.shape}")
    if len(a) != len(b):
        a, b = np.broadcast_arrays(a, b)
    sym = _symmetry_quaternions(symmetry)
    return _ext.misorientation_angles(np.ascontiguousarray(a), np.ascontiguousarray(b), sym,
                                      int(num_threads))


def fundamental_zone(quaternion, symmetry, num_threads: int = 0) -> np.ndarray:
    """Reduce orientations to the fundamental zone: the equivalent ``q S`` of smallest angle.

    Parameters
    ----------
    quaternion : array_like, shape (n, 4)
        (w, x, y, z) orientations.
    symmetry : int or array_like (m, 4)
        Space-group number or symmetry quaternions.

    Returns
    -------
    numpy.ndarray, shape (n, 4)
        Equivalent quaternions with the largest |w| among ``q S``, sign chosen so w >= 0.

    Example
    -------
    >>> q = fundamental_zone(euler_to_quaternion([[3.0, 1.0, 2.0]]), 225)
    >>> bool(2 * np.degrees(np.arccos(q[0, 0])) <= 62.8)
    True
    """
    from xreduce.ext import misorientation as _ext

    q = np.atleast_2d(_unit_quaternions(quaternion, "quaternion"))
    sym = _symmetry_quaternions(symmetry)
    return _ext.reduce_to_fundamental_zone(np.ascontiguousarray(q), sym, int(num_threads))
