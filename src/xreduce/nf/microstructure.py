"""Microstructures for simulation: voxels of a grid with orientations.

:func:`voronoi_microstructure` builds a random polycrystal of K grains on a grid (each voxel takes
the orientation of its nearest random seed point, found with ``scipy.spatial.cKDTree``), for tests
and for planning experiments; :func:`microstructure_from_mic` reads one from a ``.mic`` file.

Example
-------
>>> from xreduce.nf.grid import hexagonal_grid
>>> m = voronoi_microstructure(hexagonal_grid(50.0, 5.0), 12, seed=1)
>>> len(m), len(set(m.grain_id.tolist()))
(864, 12)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .crystal import euler_to_matrix, matrix_to_euler
from .grid import Grid
from .mic import read_mic, write_mic

__all__ = ["Microstructure", "voronoi_microstructure", "microstructure_from_mic",
           "microstructure_from_grid_points", "random_orientations"]


@dataclass(frozen=True)
class Microstructure:
    """Voxels of ``grid`` with Bunge Euler angles (radians), confidence and grain id (-1: none).
    """

    grid: Grid
    euler_rad: np.ndarray
    confidence: np.ndarray
    grain_id: np.ndarray

    def __post_init__(self):
        n = len(self.grid)
        if self.euler_rad.shape != (n, 3):
            raise ValueError(f"euler_rad: expected shape ({n}, 3), got {self.euler_rad.shape}")
        if self.confidence.shape != (n,) or self.grain_id.shape != (n,):
            raise ValueError("confidence, grain_id: expected one value per voxel")

    def __len__(self) -> int:
        return len(self.grid)

    def orientation_matrices(self) -> np.ndarray:
        """U (n, 3, 3), crystal -> sample."""
        return euler_to_matrix(self.euler_rad)

    def write_mic(self, path: str | os.PathLike) -> None:
        """Write as a MIDAS ``.mic`` file (triangle grids)."""
        g = self.grid
        write_mic(path, g.x_um, g.y_um, g.edge_um, g.ud, self.euler_rad, self.confidence,
                  row=np.maximum(self.grain_id, 0), orientation_id=self.grain_id)


def random_orientations(n: int, rng: np.random.Generator) -> np.ndarray:
    """n orientation matrices uniformly distributed on SO(3)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(int(n), random_state=rng).as_matrix()


def voronoi_microstructure(grid: Grid, n_grains: int, seed=None,
                           orientations=None) -> Microstructure:
    """Random Voronoi polycrystal of ``n_grains`` grains on ``grid``.

    Parameters
    ----------
    grid : Grid
    n_grains : int
        Number of grains K (seed points drawn uniformly in the grid's bounding box; a grain whose
        seed owns no voxel is dropped, so fewer may remain on very coarse grids).
    seed : int or numpy.random.Generator, optional
    orientations : array_like (K, 3, 3), optional
        Grain orientations; uniformly random by default.

    Returns
    -------
    Microstructure
        ``grain_id`` in 0..K-1, confidence 1.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected Grid, got {type(grid).__name__}")
    k = int(n_grains)
    if k < 1:
        raise ValueError(f"n_grains: expected >= 1, got {n_grains}")
    rng = np.random.default_rng(seed)
    lo = np.array([grid.x_um.min(), grid.y_um.min()])
    hi = np.array([grid.x_um.max(), grid.y_um.max()])
    seeds = lo + (hi - lo) * rng.uniform(0, 1, (k, 2))
    _, grain = cKDTree(seeds).query(np.c_[grid.x_um, grid.y_um])
    if orientations is None:
        U = random_orientations(k, rng)
    else:
        U = np.asarray(orientations, dtype=np.float64)
        if U.shape != (k, 3, 3):
            raise ValueError(f"orientations: expected shape ({k}, 3, 3), got {U.shape}")
    euler = matrix_to_euler(U)[grain]
    return Microstructure(grid, euler, np.ones(len(grid)), grain.astype(np.int64))


def microstructure_from_mic(path: str | os.PathLike, min_confidence: float = 0.0) -> Microstructure:
    """Read a ``.mic`` file (voxels with confidence >= ``min_confidence``) as a Microstructure.

    Grain ids are the orientation row numbers of the file.
    """
    mic = read_mic(path)
    keep = mic.confidence >= min_confidence
    edge = float(np.median(mic.edge_um[keep])) if keep.any() else 1.0
    ud = mic.ud[keep]
    grid = Grid(mic.x_um[keep], mic.y_um[keep], ud, edge,
                "triangle" if np.all(ud != 0) else "square")
    return Microstructure(grid, mic.euler_rad[keep], mic.confidence[keep], mic.row[keep])


def microstructure_from_grid_points(params) -> Microstructure:
    r"""The voxels of a parameter file's ``GridPoints`` lines (MIDAS's simulateNF input).

    Each ``GridPoints`` line holds the 12 columns of a text-mic row (doc/nf.md, "Orientation
    maps"): X, Y (um) in columns 3-4, UpDown in 6, Euler angles (radians) in 7-9; as MIDAS,
    the triangles have the edge ``GridSize``.

    Example
    -------
    >>> import io
    >>> from xreduce.nf.params import read_parameters
    >>> p = read_parameters(io.StringIO(
    ...     "GridSize 2.5\nGridPoints 0 0 0 1.0 2.0 2.5 1 0.1 0.2 0.3 1 1\n"), required=())
    >>> microstructure_from_grid_points(p).euler_rad.tolist()
    [[0.1, 0.2, 0.3]]
    """
    rows = np.asarray(params.grid_points, dtype=np.float64).reshape(-1, 12)
    if len(rows) == 0:
        raise ValueError("params: no 'GridPoints' lines")
    if params.grid_size_um is None:
        raise ValueError("params: 'GridPoints' need 'GridSize' (the triangle edge)")
    ud = rows[:, 6]
    if not np.isin(ud, (-1, 1)).all():
        raise ValueError(f"params: GridPoints UpDown (8th value) must be +1 or -1, got "
                         f"{ud[~np.isin(ud, (-1, 1))][0]}")
    grid = Grid(rows[:, 3].copy(), rows[:, 4].copy(), ud.astype(np.int8),
                float(params.grid_size_um), "triangle")
    return Microstructure(grid, rows[:, 7:10].copy(), np.ones(len(rows)),
                          np.arange(len(rows), dtype=np.int64))
