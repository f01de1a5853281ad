"""Seed orientations for the NF fit: MIDAS seed files, far-field Grains.csv, and a uniform
grid of the fundamental zone.

Files read (doc/nf_fit.md, "Seeds"):

- MIDAS quaternion seeds: one ``w,x,y,z`` per line (commas or spaces);
- orientation matrices: nine numbers per line, row-major ``U`` (crystal -> sample);
- far-field ``Grains.csv``: ``%`` header lines, then GrainID followed by the nine entries of the
  orientation matrix (row-major) and the grain position.

:func:`fundamental_zone_grid` makes an unseeded search list: a cubic grid in homochoric space
(volume preserving, so the points are uniform in orientation space), spacing ``step_deg / 2``
(near the identity the homochoric radius is half the rotation angle), reduced to the points
that are their own fundamental-zone representative.

Example
-------
>>> U = fundamental_zone_grid(225, 15.0)
>>> U.shape[1:], bool(100 < len(U) < 400)
((3, 3), True)
"""
from __future__ import annotations

import os

import numpy as np

from .crystal import fundamental_zone, quaternion_to_matrix

__all__ = ["read_seed_file", "read_quaternion_seeds", "read_grains_csv",
           "fundamental_zone_grid", "write_quaternion_seeds"]


def _rows(path, what) -> list[tuple[int, list[str]]]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"seeds: {what} file {path!r} does not exist")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith(("%", "#")):
                continue
            rows.append((lineno, text.replace(",", " ").split()))
    if not rows:
        raise ValueError(f"seeds: {what} file {path!r} holds no orientations")
    return rows


def _numbers(rows, ncols, path, what) -> np.ndarray:
    out = np.empty((len(rows), ncols))
    for i, (lineno, tokens) in enumerate(rows):
        if len(tokens) != ncols:
            raise ValueError(f"{os.fspath(path)}:{lineno}: expected {ncols} numbers per line "
                             f"({what}), got {len(tokens)}")
        try:
            out[i] = [float(t) for t in tokens]
        except ValueError:
            raise ValueError(f"{os.fspath(path)}:{lineno}: non-numeric value in "
                             f"{' '.join(tokens)!r}") from None
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{os.fspath(path)}: non-finite values in the {what}")
    return out


def read_quaternion_seeds(path: str | os.PathLike, n_orientations: int | None = None
                          ) -> np.ndarray:
    """Read a MIDAS seed file (``w,x,y,z`` per line) as orientation matrices (n, 3, 3).

    ``n_orientations`` (MIDAS ``NrOrientations``), when given, must equal the line count.
    """
    rows = _rows(path, "quaternion seed")
    q = _numbers(rows, 4, path, "quaternion w,x,y,z")
    norm = np.linalg.norm(q, axis=1)
    bad = np.nonzero(np.abs(norm - 1) > 1e-3)[0]
    if len(bad):
        lineno = rows[bad[0]][0]
        raise ValueError(f"{os.fspath(path)}:{lineno}: quaternion of norm {norm[bad[0]]:.6g}, "
                         f"expected a unit quaternion w,x,y,z")
    if n_orientations is not None and int(n_orientations) != len(q):
        raise ValueError(f"NrOrientations: the parameters say {n_orientations}, but "
                         f"{os.fspath(path)!r} holds {len(q)} orientations")
    return quaternion_to_matrix(q / norm[:, None])


def read_grains_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a far-field ``Grains.csv``: (grain ids (n,), orientation matrices (n, 3, 3),
    positions (n, 3) um)."""
    rows = _rows(path, "Grains.csv")
    width = len(rows[0][1])
    if width < 13:
        raise ValueError(f"{os.fspath(path)}:{rows[0][0]}: expected a Grains.csv row (GrainID, "
                         f"9 orientation-matrix entries, X Y Z, ...), got {width} columns")
    data = _numbers(rows, width, path, "Grains.csv")
    U = data[:, 1:10].reshape(-1, 3, 3)
    _check_rotations(U, path)
    return data[:, 0].astype(np.int64), U, data[:, 10:13]


def _check_rotations(U, path) -> None:
    err = np.abs(U @ np.swapaxes(U, 1, 2) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(U)
    bad = np.nonzero((err > 1e-3) | (det < 0))[0]
    if len(bad):
        raise ValueError(f"{os.fspath(path)}: orientation {bad[0]} is not a rotation matrix "
                         f"(|U U^T - 1| = {err[bad[0]]:.3g}, det = {det[bad[0]]:.3g})")


def read_seed_file(path: str | os.PathLike, n_orientations: int | None = None) -> np.ndarray:
    """Seed orientations (n, 3, 3) from a quaternion file (4 columns), a matrix file
    (9 columns) or a far-field Grains.csv (``%`` headers, >= 13 columns)."""
    rows = _rows(path, "seed")
    width = len(rows[0][1])
    if width == 4:
        return read_quaternion_seeds(path, n_orientations)
    if width == 9:
        U = _numbers(rows, 9, path, "orientation matrix").reshape(-1, 3, 3)
        _check_rotations(U, path)
    elif width >= 13:
        U = read_grains_csv(path)[1]
    else:
        raise ValueError(f"{os.fspath(path)}:{rows[0][0]}: expected 4 (quaternion w,x,y,z), 9 "
                         f"(orientation matrix) or >= 13 (Grains.csv) columns, got {width}")
    if n_orientations is not None and int(n_orientations) != len(U):
        raise ValueError(f"NrOrientations: the parameters say {n_orientations}, but "
                         f"{os.fspath(path)!r} holds {len(U)} orientations")
    return U


def write_quaternion_seeds(path: str | os.PathLike, matrices) -> None:
    """Write orientation matrices as a MIDAS seed file (``w,x,y,z`` per line), atomically."""
    from xreduce.io.writers import atomic_output

    from .crystal import matrix_to_quaternion

    q = matrix_to_quaternion(np.asarray(matrices, dtype=np.float64)).reshape(-1, 4)
    with atomic_output(path) as tmp:
        np.savetxt(tmp, q, fmt="%.12f", delimiter=",")


def _homochoric_angle_table():
    theta = np.linspace(0.0, np.pi, 20001)
    return (0.75 * (theta - np.sin(theta))) ** (1.0 / 3.0), theta


def fundamental_zone_grid(space_group: int, step_deg: float = 1.5) -> np.ndarray:
    """Orientations (n, 3, 3) spread uniformly over the fundamental zone of ``space_group``,
    about ``step_deg`` apart (a cubic grid in homochoric space, kept where a point is its own
    fundamental-zone representative).

    Example
    -------
    >>> len(fundamental_zone_grid(225, 10.0)) > 100
    True
    """
    step = float(step_deg)
    if not 0.2 <= step <= 30.0:
        raise ValueError(f"step_deg: expected 0.2..30 degrees, got {step_deg}")
    h_step = np.radians(step) / 2.0
    h_max = (0.75 * np.pi) ** (1.0 / 3.0)
    n = int(np.ceil(h_max / h_step))
    from xreduce.limits import check_allocation

    check_allocation((2 * n + 1) ** 2 * 8 * 8, "step_deg", "fundamental-zone grid slab")
    axis = (np.arange(-n, n + 1) + 0.5) * h_step   # offset: no point at the identity's axis
    hh, th = _homochoric_angle_table()
    yy, zz = np.meshgrid(axis, axis, indexing="ij")
    kept = []
    for x in axis:   # one slab at a time bounds memory
        h = np.stack([np.full(yy.size, x), yy.ravel(), zz.ravel()], axis=1)
        r = np.linalg.norm(h, axis=1)
        h, r = h[r < h_max], r[r < h_max]
        if len(h) == 0:
            continue
        theta = np.interp(r, hh, th)
        q = np.column_stack([np.cos(theta / 2), np.sin(theta / 2)[:, None] * h / r[:, None]])
        fz = fundamental_zone(q, int(space_group))
        own = np.abs(fz[:, 0] - np.abs(q[:, 0])) < 1e-12
        kept.append(q[own])
    q = np.concatenate(kept)
    return quaternion_to_matrix(q)
