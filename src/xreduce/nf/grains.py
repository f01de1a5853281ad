"""Grains of an NF orientation map (MIDAS's Mic2GrainsList) and their ``Grains.csv``.

Greedy clustering with crystal symmetry (doc/nf_fit.md, "Grains"): voxels with confidence
``>= MinConfidence`` are sorted by confidence (descending, stable); the best voxel not yet in a
grain starts a grain and takes every unassigned voxel within ``MaxAngle`` of it. Each grain gets
its size, centroid, mean orientation (quaternion average after moving every member next to the
grain's first voxel with symmetry) and mean confidence; its mean orientation seeds the next
pass of a multi-resolution run.

Example
-------
>>> import numpy as np
>>> euler = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3001], [1.0, 1.0, 1.0]])
>>> g = cluster_grains(euler, np.ones(3), np.zeros(3), np.zeros(3), 1.0, 225,
...                    min_confidence=0.5, max_angle_deg=1.0)
>>> g.labels.tolist(), len(g)
([0, 0, 1], 2)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .crystal import (euler_to_quaternion, laue_quaternions,
                      misorientation_rad, quaternion_to_matrix)

__all__ = ["Grains", "cluster_grains", "write_grains_csv", "GRAINS_CSV_COLUMNS"]

#: Columns of our Grains.csv: MIDAS far-field's first 13 (id, orientation matrix, position),
#: then the NF grain statistics.
GRAINS_CSV_COLUMNS = ("GrainID", "O11", "O12", "O13", "O21", "O22", "O23", "O31", "O32", "O33",
                      "X", "Y", "Z", "NrVoxels", "Area_um2", "EqRadius_um", "MeanConfidence")


@dataclass(frozen=True)
class Grains:
    """Clustered grains.

    Attributes
    ----------
    labels : (nvox,) int64 grain of each voxel (-1: below MinConfidence)
    orientation : (ngrains, 3, 3) mean orientation matrices
    centroid_um : (ngrains, 2) mean (x, y) of the member voxels
    n_voxels : (ngrains,) int64
    area_um2 : (ngrains,) float, number of voxels times the triangle area
    mean_confidence : (ngrains,)
    """

    labels: np.ndarray
    orientation: np.ndarray
    centroid_um: np.ndarray
    n_voxels: np.ndarray
    area_um2: np.ndarray
    mean_confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.n_voxels)


def cluster_grains(euler_rad, confidence, x_um, y_um, edge_um: float, space_group: int, *,
                   min_confidence: float, max_angle_deg: float = 1.0,
                   num_threads: int = 0) -> Grains:
    """Greedy symmetry-aware clustering of voxel orientations into grains (Mic2GrainsList).

    Parameters
    ----------
    euler_rad : (n, 3) Bunge Euler angles (NaN rows are never in a grain)
    confidence, x_um, y_um : (n,)
    edge_um : float
        Triangle edge (for the grain area).
    space_group : int
    min_confidence : float
        MIDAS ``MinConfidence``.
    max_angle_deg : float
        MIDAS ``MaxAngle``: misorientation to the grain's first voxel (default 1 degree).
    """
    e = np.asarray(euler_rad, dtype=np.float64).reshape(-1, 3)
    n = len(e)
    conf = np.broadcast_to(np.asarray(confidence, dtype=np.float64), (n,))
    x = np.broadcast_to(np.asarray(x_um, dtype=np.float64), (n,))
    y = np.broadcast_to(np.asarray(y_um, dtype=np.float64), (n,))
    if not max_angle_deg > 0:
        raise ValueError(f"max_angle_deg: expected > 0, got {max_angle_deg}")
    if not 0 <= float(min_confidence) <= 1:
        raise ValueError(f"min_confidence: expected a fraction in [0, 1], got {min_confidence}")
    usable = (conf >= min_confidence) & np.all(np.isfinite(e), axis=1)
    labels = np.full(n, -1, dtype=np.int64)
    order = np.nonzero(usable)[0]
    order = order[np.argsort(-conf[order], kind="stable")]
    q = np.zeros((n, 4))
    q[usable] = euler_to_quaternion(e[usable])
    sym = laue_quaternions(int(space_group))
    limit = np.radians(max_angle_deg)
    free = order.copy()
    means, cents, counts, mconf = [], [], [], []
    while len(free):
        head = free[0]
        ang = misorientation_rad(np.repeat(q[head][None], len(free), 0), q[free], space_group,
                                 num_threads)
        members = free[ang <= limit]
        members = members if head in members else np.r_[head, members]
        labels[members] = len(means)
        means.append(_mean_orientation(q[head], q[members], sym))
        cents.append((x[members].mean(), y[members].mean()))
        counts.append(len(members))
        mconf.append(conf[members].mean())
        free = free[labels[free] < 0]
    area = np.sqrt(3.0) / 4.0 * float(edge_um) ** 2
    counts_arr = np.asarray(counts, dtype=np.int64)
    return Grains(labels,
                  quaternion_to_matrix(np.array(means)) if means else np.zeros((0, 3, 3)),
                  np.array(cents).reshape(-1, 2), counts_arr, counts_arr * area,
                  np.asarray(mconf, dtype=np.float64))


def _mean_orientation(ref, members, sym) -> np.ndarray:
    """Mean quaternion of members, each first replaced by its symmetric equivalent q S closest
    to ref (and sign-aligned with it)."""
    # q S for every S: (m, k, 4)
    w1, x1, y1, z1 = (members[:, None, i] for i in range(4))
    w2, x2, y2, z2 = (sym[None, :, i] for i in range(4))
    qs = np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                   w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                   w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                   w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], axis=-1)
    dots = qs @ ref
    best = np.argmax(np.abs(dots), axis=1)
    pick = qs[np.arange(len(members)), best]
    pick *= np.sign(dots[np.arange(len(members)), best])[:, None]
    mean = pick.sum(axis=0)
    return mean / np.linalg.norm(mean)


def write_grains_csv(path: str | os.PathLike, grains: Grains) -> None:
    """Write grains in a far-field ``Grains.csv`` layout (atomically): ``%`` headers, then
    :data:`GRAINS_CSV_COLUMNS` tab-separated (orientation matrix row-major, Z = 0)."""
    from xreduce.io.writers import atomic_output

    ng = len(grains)
    U = grains.orientation.reshape(ng, 9)
    radius = np.sqrt(grains.area_um2 / np.pi)
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(f"%NumGrains {ng}\n%" + "\t".join(GRAINS_CSV_COLUMNS) + "\n")
            for i in range(ng):
                vals = [f"{i + 1}"] + [f"{v:.9f}" for v in U[i]] + [
                    f"{grains.centroid_um[i, 0]:.6f}", f"{grains.centroid_um[i, 1]:.6f}",
                    "0.000000", f"{grains.n_voxels[i]}", f"{grains.area_um2[i]:.6f}",
                    f"{radius[i]:.6f}", f"{grains.mean_confidence[i]:.6f}"]
                f.write("\t".join(vals) + "\n")
