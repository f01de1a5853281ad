"""NF-HEDM orientation fitting: screen seed orientations per voxel, refine the survivors.

MIDAS's FitOrientationOMP by default (doc/nf_fit.md): every seed is scored at every voxel
(:class:`~xreduce.nf.overlap.OverlapModel`, orientation-major); seeds with confidence
``>= MinFracAccept`` survive, in file order; each is refined by a bounded Nelder-Mead in a box
of +-OrientTol degrees on the Bunge Euler angles; the best wins (a later candidate wins ties),
and a voxel stops after a candidate reaches confidence 1 - 1e-4 when one solution is kept.

Beyond MIDAS (options, never the default): ``parametrization="rotation_vector"`` refines a
rotation vector applied to the seed, a box with no singularity at Phi = 0 or 180 deg;
``search_step_deg`` adds a local grid of rotations around every seed (a ball of radius
OrientTol) so that seeds 1-2 degrees from the truth still find it; ``candidate_order``,
``simplex_step_deg``, ``simplex_xtol_deg``, ``seed_group_deg`` (one seed refined per group
of near-identical seeds), ``neighbour_passes`` (a voxel tries its neighbours' fitted
orientations) and ``neighbour_margin`` are described in doc/nf_fit.md; together they are the
"fast path" measured there.

Screening and refinement stop a count early once its outcome is decided (doc/nf_fit.md,
"Early exits"): the results are those of the full counts.

Every voxel is fitted by one OpenMP iteration with its own scratch: results do not depend on
the number of threads.

Example
-------
>>> import numpy as np
>>> from xreduce.nf.grid import hexagonal_grid
>>> from xreduce.nf.overlap import OverlapModel
>>> from xreduce.nf.reflections import reflection_list
>>> from xreduce.nf.spots import NFGeometry
>>> from xreduce.nf.spotsinfo import n_words
>>> geo = NFGeometry(lsd_um=(3000.0,), bc_px=((128.0, 10.0),), px_um=1.48,
...                  wavelength_A=0.172979, omega_start_deg=-180.0, omega_step_deg=1.0,
...                  omega_ranges_deg=((-180.0, 180.0),),
...                  box_sizes_um=((-500.0, 500.0, -500.0, 500.0),), detector_shape=(256, 256))
>>> refl = reflection_list(225, (4.08,) * 3 + (90.0,) * 3, 0.172979, 3000.0, 300.0)
>>> model = OverlapModel(geo, refl, np.zeros(n_words((1, 360, 256, 256)), np.uint32), 360)
>>> res = fit_orientations(model, hexagonal_grid(10.0, 5.0), np.eye(3)[None],
...                        min_frac_accept=0.5, orient_tol_deg=1.0, progress=False)
>>> int(res.found.sum())  # nothing lit: no voxel fitted
0
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np

from .crystal import euler_to_matrix, matrix_to_euler, matrix_to_quaternion, misorientation_rad
from .grid import Grid
from .overlap import OverlapModel

__all__ = ["FAST_PATH", "FitResult", "fit_orientations", "local_rotation_grid", "seed_groups"]

#: Options beyond MIDAS that together fit about 3.5 times faster than MIDAS's rules on the
#: bench, at least as accurately within 0.1 and 0.25 deg (doc/nf_fit.md, "Third round: the
#: fast path"): ``fit_orientations(..., **FAST_PATH)``, ``run_pipeline(..., fast=True)``,
#: ``xreduce-nf --fast``.
#: With seed groups, a group's next seeds are screened at a voxel where its first seed scores
#: at least this fraction of MinFracAccept but below it (doc/nf_fit.md, "Seed groups").
NEXT_SEED_FRACTION = 0.75

FAST_PATH = {"seed_group_deg": 0.5, "simplex_step_deg": 0.1, "simplex_xtol_deg": 0.015,
             "neighbour_passes": 2, "neighbour_margin": 0.05}


@dataclass(frozen=True)
class FitResult:
    """Fitted orientations, one row per voxel of the grid (``found`` False: no candidate).

    Attributes
    ----------
    euler_rad : (nvox, 3) best Bunge Euler angles (NaN where not found)
    confidence : (nvox,) best confidence (0 where not found)
    row : (nvox,) int64, seed row of the winner (-1 where not found)
    n_candidates : (nvox,) int64, seeds that passed MinFracAccept (with ``seed_group_deg``: at
        most one per group, the one refined)
    time_s : (nvox,) refinement wall time of the voxel's chunk, shared equally
    solutions_euler_rad : (nvox, N, 3) the N best distinct solutions (NaN padded)
    solutions_confidence : (nvox, N)
    """

    euler_rad: np.ndarray
    confidence: np.ndarray
    row: np.ndarray
    n_candidates: np.ndarray
    time_s: np.ndarray
    solutions_euler_rad: np.ndarray
    solutions_confidence: np.ndarray

    @property
    def found(self) -> np.ndarray:
        return self.row >= 0


def local_rotation_grid(radius_deg: float, step_deg: float) -> np.ndarray:
    """Rotation vectors (k, 3) in radians on a cubic grid of spacing ``step_deg`` inside a
    ball of ``radius_deg``, the null rotation first.

    Example
    -------
    >>> local_rotation_grid(1.0, 0.5).shape
    (33, 3)
    """
    if not radius_deg > 0 or not step_deg > 0:
        raise ValueError(f"radius_deg, step_deg: expected > 0, got {radius_deg}, {step_deg}")
    n = int(np.floor(radius_deg / step_deg + 1e-9))
    ax = np.arange(-n, n + 1) * step_deg
    g = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    g = g[np.linalg.norm(g, axis=1) <= radius_deg + 1e-9]
    g = g[np.argsort(np.linalg.norm(g, axis=1), kind="stable")]
    return np.radians(g)


def seed_groups(seeds, angle_deg: float) -> np.ndarray:
    """Group index (the row of the group's first seed) of every seed: greedy in file order,
    the first seed not yet grouped takes every ungrouped seed within ``angle_deg`` (rotation
    angle, no crystal symmetry).

    Example
    -------
    >>> from scipy.spatial.transform import Rotation
    >>> U = Rotation.from_rotvec([[0, 0, 0], [0, 0, 0.01], [0.5, 0, 0]]).as_matrix()
    >>> seed_groups(U, 1.0).tolist()
    [0, 0, 2]
    """
    U = np.ascontiguousarray(seeds, dtype=np.float64)
    if U.ndim != 3 or U.shape[1:] != (3, 3):
        raise ValueError(f"seeds: expected orientation matrices (n, 3, 3), got {U.shape}")
    if not angle_deg > 0:
        raise ValueError(f"angle_deg: expected > 0, got {angle_deg}")
    cos_limit = np.cos(np.radians(angle_deg))
    group = np.full(len(U), -1, dtype=np.int64)
    flat = U.reshape(len(U), 9)
    for i in range(len(U)):
        if group[i] >= 0:
            continue
        free = np.nonzero(group < 0)[0]
        group[free[_within(flat[free], flat[i], cos_limit)]] = i
    return group


def _within(flat: np.ndarray, one: np.ndarray, cos_limit: float) -> np.ndarray:
    """Whether each rotation of ``flat`` (n, 9 matrix entries) lies within the angle whose
    cosine is ``cos_limit`` of ``one`` (9,): cos(angle) = (trace(A^T B) - 1) / 2, with 1e-12
    of slack for rounding. The one grouping rule of ``seed_groups`` and ``_group_best``."""
    return (flat @ one - 1.0) / 2.0 >= cos_limit - 1e-12


def _check_fraction(value, name) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1], got {value}")
    return v


def fit_orientations(model: OverlapModel, grid: Grid, seeds, *, min_frac_accept: float,
                     orient_tol_deg: float, save_n_solutions: int = 1,
                     min_miso_n_saves_deg: float = 1.0, space_group: int | None = None,
                     parametrization: str = "euler", search_step_deg: float | None = None,
                     search_keep: int = 4, restarts: int = 0,
                     candidate_order: str = "file", simplex_step_deg: float | None = None,
                     simplex_xtol_deg: float | None = None,
                     seed_group_deg: float | None = None, neighbour_passes: int = 0,
                     neighbour_margin: float | None = None,
                     chunk_voxels: int | None = None,
                     progress: bool = True,
                     progress_desc: str = "NF fit", num_threads: int = 0,
                     executor=None) -> FitResult:
    """Fit an orientation to every voxel of ``grid``.

    Parameters
    ----------
    model : OverlapModel
        Geometry, reflections and lit pixels.
    grid : Grid
        Triangle voxels to fit.
    seeds : array_like (n, 3, 3)
        Seed orientation matrices, in file order (:mod:`xreduce.nf.orientations` reads them).
    min_frac_accept : float
        MIDAS ``MinFracAccept``: seeds scoring below it at a voxel are not refined.
    orient_tol_deg : float
        MIDAS ``OrientTol``: half-width of the refinement box (degrees).
    save_n_solutions : int
        MIDAS ``SaveNSolutions``: keep the N best solutions more than ``min_miso_n_saves_deg``
        apart (with crystal symmetry, needs ``space_group``).
    parametrization : {"euler", "rotation_vector"}
        "euler" (MIDAS): box on (phi1, Phi, phi2). "rotation_vector": box on a small rotation
        applied to the seed (no gimbal singularity).
    search_step_deg : float, optional
        Beyond MIDAS: also screen a local grid of rotations (this spacing, within a ball of
        OrientTol) around every seed; the ``search_keep`` best of each voxel (any non-zero
        confidence: a grid point may sit half a step from the truth) are refined with the
        rotation-vector box of half-width ``search_step_deg``. Off (None) by default.
    restarts : int
        Beyond MIDAS (0 = MIDAS): restart the simplex from its best point up to this many
        times while the confidence improves (a simplex on the piecewise-constant confidence
        often stops on a flat patch below the peak).
    candidate_order : {"file", "screened"}
        "file" (MIDAS): a voxel's candidates are refined in seed-file order and a later one
        wins ties. Beyond MIDAS, "screened": refined by decreasing screened confidence (ties:
        file order) and, of equal refined confidences, the one that screened higher wins;
        with one solution kept, a voxel stops at the first candidate reaching confidence 1,
        so the best-screened one is refined first (doc/nf_fit.md, "Candidate order").
    simplex_step_deg : float, optional
        Beyond MIDAS: initial simplex step of the refinement (degrees; default, MIDAS:
        half of ``orient_tol_deg``). A step near the seeds' error needs fewer evaluations
        (doc/nf_fit.md, "Refinement": measured speed and accuracy).
    simplex_xtol_deg : float, optional
        Beyond MIDAS: also stop a simplex once it is smaller than this on every parameter
        (degrees; MIDAS: only its relative tolerances, about 0.003 deg on Euler angles).
        0.015 deg needs about 25 % fewer evaluations (doc/nf_fit.md, "Refinement").
    seed_group_deg : float, optional
        Beyond MIDAS (None = MIDAS: every candidate refined): seeds within this rotation
        angle of each other (no crystal symmetry) form one group (greedy, file order: the
        first seed not yet grouped takes every ungrouped seed within the angle); at a voxel
        only the first seed of each group (file order) that passes is refined. Far-field
        seed lists often hold one grain several times (several scans or layers): its copies
        refine to the same peak, and refining one is about as good as the best of all
        (doc/nf_fit.md, "Seed groups": measured speed and accuracy). A group's first seed is
        screened at every voxel; where it scores at least ``NEXT_SEED_FRACTION`` (0.75) of
        ``min_frac_accept`` but below it, the group's next seeds in file order until one
        passes.
        With ``neighbour_passes``, the neighbours' orientations tried at a voxel are grouped
        alike. Only seeds are grouped, never the local-search grid points.
    neighbour_passes : int
        Beyond MIDAS (0 = MIDAS): after the fit, up to this many passes in which every voxel
        also tries the fitted orientations of the voxels within one grid step that differ
        from its own by more than 0.5 deg (or all of them where it found none): each is
        screened at the voxel, refined like a seed when it passes ``min_frac_accept``, and
        replaces the voxel's orientation when its confidence is strictly higher. A voxel's
        neighbours' refined orientations are much closer to the truth than far-field seeds,
        so a boundary voxel whose own grain's seed scored below MinFracAccept (and that took a
        neighbouring grain's orientation) gets its own back (doc/nf_fit.md, "Neighbour
        passes"). Needs ``save_n_solutions`` 1.
    neighbour_margin : float, optional
        Beyond MIDAS (None: every neighbour orientation that passes is refined): in the
        neighbour passes, refine a neighbour's orientation only when its screened confidence
        at the voxel is above the voxel's current confidence minus this margin (to win, the
        refinement would have to gain more; measured gains are at most 0.032, doc/nf_fit.md,
        "Refinement").
    chunk_voxels : int, optional
        Voxels per screening call (progress granularity). Default: as many as keep about
        4 million (seed, voxel) pairs per call; more voxels per call share each seed's
        detector regions in cache.
    progress : bool
        tqdm progress bar with ETA.
    num_threads : int
        0 = all cores (with an executor: each task's share of its worker's cores). Results
        do not depend on it.
    executor : None, concurrent.futures.Executor or dask.distributed.Client, optional
        Where the voxel blocks (``chunk_voxels`` each) are fitted
        (:func:`xreduce.executors.run_chunks`); the results are the same (doc/stack.md,
        "Other jobs on the same executors"). None: this process.

    Returns
    -------
    FitResult
    """
    if not isinstance(model, OverlapModel):
        raise TypeError(f"model: expected OverlapModel, got {type(model).__name__}")
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected Grid, got {type(grid).__name__}")
    U = np.ascontiguousarray(seeds, dtype=np.float64)
    if U.ndim != 3 or U.shape[1:] != (3, 3) or len(U) == 0:
        raise ValueError(f"seeds: expected orientation matrices (n >= 1, 3, 3), got {U.shape}")
    minfrac = _check_fraction(min_frac_accept, "min_frac_accept")
    if not orient_tol_deg > 0:
        raise ValueError(f"orient_tol_deg: expected > 0, got {orient_tol_deg}")
    if parametrization not in ("euler", "rotation_vector"):
        raise ValueError(f"parametrization: expected 'euler' or 'rotation_vector', got "
                         f"{parametrization!r}")
    nsave = int(save_n_solutions)
    if nsave < 1:
        raise ValueError(f"save_n_solutions: expected >= 1, got {save_n_solutions}")
    if nsave > 1 and space_group is None:
        raise ValueError("space_group: needed with save_n_solutions > 1 (distinct solutions "
                         "are compared with crystal symmetry)")
    if search_step_deg is not None and not search_step_deg > 0:
        raise ValueError(f"search_step_deg: expected > 0 or None, got {search_step_deg}")
    if int(restarts) < 0:
        raise ValueError(f"restarts: expected >= 0, got {restarts}")
    if int(neighbour_passes) < 0:
        raise ValueError(f"neighbour_passes: expected >= 0, got {neighbour_passes}")
    if neighbour_margin is not None and not 0 <= neighbour_margin <= 1:
        raise ValueError(f"neighbour_margin: expected None or in [0, 1], got "
                         f"{neighbour_margin}")
    if int(neighbour_passes) and int(save_n_solutions) != 1:
        raise ValueError("neighbour_passes: needs save_n_solutions 1")
    if candidate_order not in ("file", "screened"):
        raise ValueError(f"candidate_order: expected 'file' or 'screened', got "
                         f"{candidate_order!r}")
    if simplex_step_deg is not None and not 0 < simplex_step_deg <= orient_tol_deg:
        raise ValueError(f"simplex_step_deg: expected None or in (0, orient_tol_deg = "
                         f"{orient_tol_deg}], got {simplex_step_deg}")
    if simplex_xtol_deg is not None and not 0 < simplex_xtol_deg < orient_tol_deg:
        raise ValueError(f"simplex_xtol_deg: expected None or in (0, orient_tol_deg = "
                         f"{orient_tol_deg}), got {simplex_xtol_deg}")
    if seed_group_deg is not None and not seed_group_deg > 0:
        raise ValueError(f"seed_group_deg: expected > 0 or None, got {seed_group_deg}")
    if chunk_voxels is None:
        n_orient = len(U) * (1 if search_step_deg is None else
                             len(local_rotation_grid(orient_tol_deg, search_step_deg)))
        chunk_voxels = max(16, min(len(grid), 4_000_000 // max(n_orient, 1)))
    if int(chunk_voxels) < 1:
        raise ValueError(f"chunk_voxels: expected >= 1, got {chunk_voxels}")
    seed_euler = matrix_to_euler(U)
    seed_group = None if seed_group_deg is None else seed_groups(U, seed_group_deg)
    local = local_U = local_euler = local_row = None
    if search_step_deg is not None:
        from scipy.spatial.transform import Rotation

        local = local_rotation_grid(orient_tol_deg, search_step_deg)
        dR = Rotation.from_rotvec(local).as_matrix()
        local_U = np.ascontiguousarray((dR[None] @ U[:, None]).reshape(-1, 3, 3))
        local_euler = matrix_to_euler(local_U)
        local_row = np.repeat(np.arange(len(U)), len(local))

    plan = _FitPlan(model=model, grid=grid, U=U, seed_euler=seed_euler, local=local,
                    local_U=local_U, local_euler=local_euler, local_row=local_row,
                    minfrac=minfrac,
                    orient_tol_deg=float(orient_tol_deg), nsave=nsave,
                    min_miso_n_saves_deg=min_miso_n_saves_deg, space_group=space_group,
                    rotvec=parametrization == "rotation_vector",
                    search_step_deg=search_step_deg, search_keep=int(search_keep),
                    restarts=restarts, screened_order=candidate_order == "screened",
                    simplex_step_deg=simplex_step_deg, simplex_xtol_deg=simplex_xtol_deg,
                    seed_group=seed_group,
                    seed_group_deg=seed_group_deg, neighbour_margin=neighbour_margin,
                    chunk_voxels=int(chunk_voxels))
    nvox = len(grid)
    euler = np.full((nvox, 3), np.nan)
    conf = np.zeros(nvox)
    row = np.full(nvox, -1, dtype=np.int64)
    ncand = np.zeros(nvox, dtype=np.int64)
    tsec = np.zeros(nvox)
    sol_e = np.full((nvox, nsave, 3), np.nan)
    sol_c = np.zeros((nvox, nsave))
    chunks = list(range(0, nvox, int(chunk_voxels)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=nvox, desc=progress_desc, unit="voxel", smoothing=0.1)
    if executor is None:
        blocks = ((c0, _fit_block(plan, c0, num_threads)) for c0 in chunks)
    else:
        from xreduce.executors import run_chunks

        threads = int(num_threads or 0)
        blocks = run_chunks(_FitJob(f"xreduce-nf-fit-{uuid.uuid4().hex}", plan, threads),
                            chunks, executor, num_threads=threads or None)
    try:
        for c0, block in blocks:  # in any order with an executor
            if isinstance(block, BaseException):
                raise block
            idx = np.arange(c0, min(c0 + int(chunk_voxels), nvox))
            found = block["row"] >= 0
            euler[idx[found]], conf[idx[found]] = block["euler"][found], block["conf"][found]
            row[idx], ncand[idx], tsec[idx] = block["row"], block["ncand"], block["tsec"]
            sol_e[idx[found]], sol_c[idx[found]] = block["sol_e"][found], block["sol_c"][found]
            if bar is not None:
                bar.update(len(idx))
    finally:
        if executor is not None:
            blocks.close()  # cancels the tasks not started
        if bar is not None:
            bar.close()
    if int(neighbour_passes):
        _neighbour_passes(plan, euler, conf, row, int(neighbour_passes), num_threads)
        sol_e[:, 0], sol_c[:, 0] = euler, conf
    return FitResult(euler, conf, row, ncand, tsec, sol_e, sol_c)


def _rotation_angle_deg(A, B) -> np.ndarray:
    """Angle (degrees) of the rotation between matrices A[i] and B[i] (no crystal symmetry:
    voxels fitted from the same seed are compared)."""
    tr = np.einsum("nij,nij->n", A, B)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def _neighbour_passes(plan: "_FitPlan", euler, conf, row, passes: int, num_threads: int) -> None:
    """Neighbour passes (see ``fit_orientations``), updating euler, conf, row in place."""
    from scipy.spatial import cKDTree

    grid, model = plan.grid, plan.model
    pairs = cKDTree(np.c_[grid.x_um, grid.y_um]).query_pairs(1.01 * grid.edge_um,
                                                            output_type="ndarray")
    directed = np.concatenate([pairs, pairs[:, ::-1]])   # (voxel, neighbour)
    directed = directed[np.lexsort((directed[:, 1], directed[:, 0]))]
    changed = np.ones(len(grid), dtype=bool)
    for _ in range(passes):
        found, row0 = row >= 0, row.copy()
        Um = euler_to_matrix(np.where(found[:, None], euler, 0.0))
        v, u = directed[found[directed[:, 1]]].T
        # a pair whose voxel and neighbour kept their orientations in the last pass would
        # give what it gave then (no change): only the others are tried (same results)
        own = ~(changed[v] | changed[u]) | (found[v] & (_rotation_angle_deg(Um[v], Um[u])
                                                           <= 0.5))
        v, u = v[~own], u[~own]
        if len(v) == 0:
            return
        sc = model.confidence(Um[u], grid, np.arange(len(u)), v, num_threads=num_threads,
                              min_confidence=plan.minfrac)
        ok = sc >= plan.minfrac
        if plan.neighbour_margin is not None:   # it would have to gain more than the margin
            ok &= sc > conf[v] - plan.neighbour_margin
        v, u, sc = v[ok], u[ok], sc[ok]
        if plan.seed_group_deg is not None:
            keep = _group_best(v, sc, Um[u], plan.seed_group_deg)
            v, u = v[keep], u[keep]
        if len(v) == 0:
            return
        indptr = np.searchsorted(v, np.arange(len(grid) + 1))
        e, c, _ = model.refine(grid, indptr, euler[u], plan.orient_tol_deg,
                               rotation_vector=plan.rotvec, stop_at_one=False,
                               restarts=plan.restarts, num_threads=num_threads,
                               step_deg=plan.simplex_step_deg,
                               xtol_deg=plan.simplex_xtol_deg or 0.0)
        changed[:] = False
        for j in np.unique(v):
            a, b = indptr[j], indptr[j + 1]
            k = a + int(np.argmax(c[a:b]))   # the first best (neighbour order)
            if c[k] > conf[j]:
                euler[j], conf[j], row[j] = e[k], c[k], row0[u[k]]
                changed[j] = True
        if not changed.any():
            return


def _group_best(voxel, score, U, angle_deg: float) -> np.ndarray:
    """Of the orientations U tried at each voxel (``voxel`` sorted), the indices (sorted)
    of the best-scored one of each group within ``angle_deg`` (greedy by decreasing
    score, ties: given order), as ``seed_groups`` does for seeds."""
    order = np.lexsort((np.arange(len(voxel)), -score, voxel))
    cos_limit = np.cos(np.radians(angle_deg))
    flat = U.reshape(len(U), 9)
    keep = []
    bounds = np.searchsorted(voxel[order], np.unique(voxel), side="left").tolist() + [len(order)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        kept: list[int] = []
        for i in order[a:b]:
            if not _within(flat[kept], flat[i], cos_limit).any():
                kept.append(int(i))
        keep.extend(kept)
    return np.sort(np.asarray(keep, dtype=np.int64))


@dataclass(frozen=True)
class _FitPlan:
    """What fitting a block of voxels needs (checked by :func:`fit_orientations`)."""

    model: OverlapModel
    grid: Grid
    U: np.ndarray
    seed_euler: np.ndarray
    local: np.ndarray | None
    local_U: np.ndarray | None
    local_euler: np.ndarray | None
    local_row: np.ndarray | None
    minfrac: float
    orient_tol_deg: float
    nsave: int
    min_miso_n_saves_deg: float
    space_group: int | None
    rotvec: bool
    search_step_deg: float | None
    search_keep: int
    restarts: int
    screened_order: bool
    simplex_step_deg: float | None
    simplex_xtol_deg: float | None
    seed_group: np.ndarray | None
    seed_group_deg: float | None
    neighbour_margin: float | None
    chunk_voxels: int


class _FitJob:
    """Voxel blocks as a :class:`xreduce.executors.ChunkJob` (a chunk: the block's first
    voxel); a task returns the block's results, the caller assembles them."""

    def __init__(self, key: str, plan: _FitPlan, threads: int):
        self.key, self.plan, self.threads = key, plan, threads  # 0: the task's OpenMP share

    def setup(self) -> None:
        return None

    def load(self, state: None, c0: int) -> int:
        return c0

    def compute(self, state: None, c0: int) -> dict:
        from xreduce.ext import openmp_info

        return _fit_block(self.plan, c0, self.threads or openmp_info.max_threads())


def _fit_block(plan: _FitPlan, c0: int, num_threads: int) -> dict:
    """Fit voxels c0..c0+chunk_voxels-1: arrays ``euler, conf, row, ncand, tsec, sol_e,
    sol_c`` for them (NaN / 0 / -1 where no candidate was refined)."""
    model, local = plan.model, plan.local
    nsave = plan.nsave
    t0 = time.perf_counter()
    idx = np.arange(c0, min(c0 + plan.chunk_voxels, len(plan.grid)))
    sub = plan.grid.select(idx)
    euler = np.full((len(idx), 3), np.nan)
    conf = np.zeros(len(idx))
    row = np.full(len(idx), -1, dtype=np.int64)
    sol_e = np.full((len(idx), nsave, 3), np.nan)
    sol_c = np.zeros((len(idx), nsave))
    # early exits: a pair's count stops once it provably scores below MinFracAccept (NaN)
    if plan.seed_group is None:
        scores = model.confidence(plan.U, sub, num_threads=num_threads,
                                  min_confidence=plan.minfrac)  # (nseed, nsub)
    else:   # at most one seed of each group passes at a voxel
        scores = _screen_groups(plan, sub, num_threads)
    ok = scores >= plan.minfrac
    seed_of, vox_of = np.nonzero(ok.T)[1], np.nonzero(ok.T)[0]   # voxel-major, file order
    ncand = ok.sum(axis=0).astype(np.int64)
    cand_e = [plan.seed_euler[seed_of]]
    cand_r = [seed_of]
    cand_v = [vox_of]
    cand_s = [scores[seed_of, vox_of]]
    tol = np.full(len(seed_of), plan.orient_tol_deg)
    cand_t = [tol]
    if local is not None:
        ls = model.confidence(plan.local_U, sub, num_threads=num_threads)  # (nloc, nsub)
        order = np.argsort(-ls, axis=0, kind="stable")[:plan.search_keep]      # (k, nsub)
        best = np.take_along_axis(ls, order, axis=0)
        # a grid point is at most step * sqrt(3) / 2 from the truth, where the confidence
        # can be well below MinFracAccept: keep the best few that score at all
        kv, kk = np.nonzero((best > 0).T)
        cand_e.append(plan.local_euler[order[kk, kv]])
        cand_r.append(plan.local_row[order[kk, kv]])
        cand_v.append(kv)
        cand_s.append(best[kk, kv])
        cand_t.append(np.full(len(kv), float(plan.search_step_deg)))
        ncand += np.count_nonzero(best > 0, axis=0)
    ce, cr, cv, ct, cs = (np.concatenate(a) for a in (cand_e, cand_r, cand_v, cand_t, cand_s))
    if plan.screened_order:
        order = np.lexsort((np.arange(len(cv)), -cs, cv))
    else:
        order = np.lexsort((np.arange(len(cv)), cv))
    ce, cr, cv, ct = ce[order], cr[order], cv[order], ct[order]
    indptr = np.searchsorted(cv, np.arange(len(idx) + 1))
    # the MIDAS candidates and the local-search ones have different boxes: refine each set
    pe = np.empty_like(ce)
    pc = np.zeros(len(ce))
    pn = np.zeros(len(ce), dtype=np.int32)
    for tol_value in np.unique(ct):
        sel = ct == tol_value
        ip = np.searchsorted(cv[sel], np.arange(len(idx) + 1))
        use_rv = plan.rotvec or (local is not None and tol_value == plan.search_step_deg
                                 and tol_value != plan.orient_tol_deg)
        e, c, n = model.refine(sub, ip, ce[sel], tol_value, rotation_vector=use_rv,
                               stop_at_one=(nsave == 1 and local is None),
                               restarts=plan.restarts, num_threads=num_threads,
                               step_deg=(None if plan.simplex_step_deg is None else
                                         min(plan.simplex_step_deg, tol_value)),
                               xtol_deg=min(plan.simplex_xtol_deg or 0.0, tol_value / 2))
        pe[sel], pc[sel], pn[sel] = e, c, n
    for j in range(len(idx)):
        a, b = indptr[j], indptr[j + 1]
        done = np.nonzero(pn[a:b] > 0)[0] + a
        if len(done) == 0:
            continue
        if plan.screened_order:   # best confidence, the better screened wins ties
            best_i = done[np.argmax(pc[done])]
        else:                     # best confidence, a later candidate wins ties (MIDAS)
            best_i = done[len(done) - 1 - np.argmax(pc[done][::-1])]
        euler[j], conf[j], row[j] = pe[best_i], pc[best_i], cr[best_i]
        if nsave > 1:
            picked = _distinct_best(pe[done], pc[done], nsave, plan.min_miso_n_saves_deg,
                                    plan.space_group)
            sol_e[j, :len(picked)] = pe[done][picked]
            sol_c[j, :len(picked)] = pc[done][picked]
        else:
            sol_e[j, 0], sol_c[j, 0] = euler[j], conf[j]
    tsec = np.full(len(idx), (time.perf_counter() - t0) / len(idx))
    return {"euler": euler, "conf": conf, "row": row, "ncand": ncand, "tsec": tsec,
            "sol_e": sol_e, "sol_c": sol_c}


def _screen_groups(plan: _FitPlan, sub: Grid, num_threads: int) -> np.ndarray:
    """Screening with seed groups (doc/nf_fit.md, "Seed groups"): each group's first seed at
    every voxel; where it scores at least NEXT_SEED_FRACTION of MinFracAccept but below it,
    the group's next seeds in file order until one passes. NaN: not screened (or below
    MinFracAccept)."""
    model, group = plan.model, plan.seed_group
    scores = np.full((len(group), len(sub)), np.nan)
    members = [np.nonzero(group == g)[0] for g in np.unique(group)]   # file order
    firsts = np.array([m[0] for m in members])
    first_scores = np.empty((len(members), len(sub)))
    alone = np.array([len(m) == 1 for m in members])
    for sel, lower in ((alone, plan.minfrac), (~alone, NEXT_SEED_FRACTION * plan.minfrac)):
        if sel.any():   # a seed alone in its group: no next seed, exits at MinFracAccept
            first_scores[sel] = model.confidence(plan.U[firsts[sel]], sub,
                                                 num_threads=num_threads,
                                                 min_confidence=lower)
    passed = first_scores >= plan.minfrac                           # (ngroups, nsub)
    scores[firsts] = np.where(passed, first_scores, np.nan)
    pending = (first_scores >= NEXT_SEED_FRACTION * plan.minfrac) & ~passed
    for rank in range(1, max(len(m) for m in members)):
        gi, pv = np.nonzero(pending & np.array([len(m) > rank for m in members])[:, None])
        if len(gi) == 0:
            break
        seed = np.array([members[g][rank] for g in gi], dtype=np.int64)
        sc = model.confidence(plan.U, sub, seed, pv, num_threads=num_threads,
                              min_confidence=plan.minfrac)
        scores[seed, pv] = sc
        pending[gi[sc >= plan.minfrac], pv[sc >= plan.minfrac]] = False
    return scores


def _distinct_best(euler, conf, n, min_miso_deg, space_group) -> list[int]:
    """Indices of up to n solutions by decreasing confidence, each more than min_miso_deg from
    every one kept before (with crystal symmetry)."""
    order = np.argsort(-conf, kind="stable")
    q = matrix_to_quaternion(euler_to_matrix(euler))
    kept: list[int] = []
    for i in order:
        if kept:
            ang = misorientation_rad(np.repeat(q[i][None], len(kept), 0), q[kept], space_group)
            if np.degrees(ang.min()) <= min_miso_deg:
                continue
        kept.append(int(i))
        if len(kept) == n:
            break
    return kept
