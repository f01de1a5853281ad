"""Confidence of (voxel, orientation) pairs against binary NF images, MIDAS's rules.

Front end of the kernel ``xreduce.ext.nf_overlap`` (its only caller). The rules (doc/nf_fit.md,
"Rules", from REFERENCE section 5b): spots of an orientation predicted for a voxel at the origin;
each triangle voxel projected through the tilted first detector; footprint = one pixel when
``EdgeLength <= px``, else the rounded triangle plus pixels within 0.99 px of an edge line;
carried to each distance by scaling its centre; a pixel is a hit only when lit at every
distance; confidence = hits / counted pixels.

Example
-------
>>> import numpy as np
>>> from xreduce.nf.grid import hexagonal_grid
>>> from xreduce.nf.reflections import reflection_list
>>> from xreduce.nf.spots import NFGeometry
>>> from xreduce.nf.spotsinfo import n_words
>>> geo = NFGeometry(lsd_um=(3000.0,), bc_px=((128.0, 10.0),), px_um=1.48,
...                  wavelength_A=0.172979, omega_start_deg=-180.0, omega_step_deg=1.0,
...                  omega_ranges_deg=((-180.0, 180.0),),
...                  box_sizes_um=((-500.0, 500.0, -500.0, 500.0),), detector_shape=(256, 256))
>>> refl = reflection_list(225, (4.08,) * 3 + (90.0,) * 3, 0.172979, 3000.0, 300.0)
>>> words = np.zeros(n_words((1, 360, 256, 256)), np.uint32)  # nothing lit
>>> model = OverlapModel(geo, refl, words, n_frames=360)
>>> model.confidence(np.eye(3)[None], hexagonal_grid(10.0, 5.0))[0, :3]
array([0., 0., 0.])
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xreduce.limits import check_num_threads

from .grid import Grid
from .reflections import ReflectionList
from .spots import NFGeometry, tilt_matrix
from .spotsinfo import n_words

__all__ = ["OverlapModel", "midas_vertices"]


def midas_vertices(grid: Grid) -> np.ndarray:
    """Triangle corners (n, 3, 2) (x, y) um in MIDAS's order: apex first, then the base corner
    at -x, then the one at +x (the order MIDAS builds from grid.txt; the inside test of the
    footprint depends on it)."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected Grid, got {type(grid).__name__}")
    if grid.kind != "triangle":
        raise ValueError("grid: MIDAS's footprint rule needs a triangle grid, got a square one")
    v = grid.vertices_um()
    up = grid.ud > 0
    out = np.empty_like(v)
    out[:, 0] = v[:, 2]                           # apex
    out[:, 1] = np.where(up[:, None], v[:, 0], v[:, 1])  # base corner at -x
    out[:, 2] = np.where(up[:, None], v[:, 1], v[:, 0])  # base corner at +x
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class OverlapModel:
    """Everything the overlap kernel needs: geometry, reflections and the lit-pixel words.

    Parameters
    ----------
    geometry : NFGeometry
        ``detector_shape`` gives (NrPixelsY, NrPixelsZ); Wedge must be 0 (MIDAS's NF fitter
        has none).
    reflections : ReflectionList
    words : uint32 array
        Lit pixels in SpotsInfo.bin's layout, stack (n_distances, n_frames, NrPixelsY,
        NrPixelsZ) (:mod:`xreduce.nf.spotsinfo`).
    n_frames : int
        Frames per distance (NrFilesPerDistance).
    edge_length_um : float, optional
        MIDAS ``EdgeLength``: above ``px`` the footprint is the triangle, else one pixel.
        Default: the grid's triangle edge when the model is used.
    """

    geometry: NFGeometry
    reflections: ReflectionList
    words: np.ndarray
    n_frames: int
    edge_length_um: float | None = None
    _arrays: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.geometry, NFGeometry):
            raise TypeError(f"geometry: expected NFGeometry, got "
                            f"{type(self.geometry).__name__}")
        if not isinstance(self.reflections, ReflectionList):
            raise TypeError(f"reflections: expected ReflectionList, got "
                            f"{type(self.reflections).__name__}")
        if self.geometry.wedge_deg != 0:
            raise ValueError(f"geometry: Wedge {self.geometry.wedge_deg} deg is not supported "
                             f"by the NF fit (MIDAS's fitter has no wedge); expected 0")
        nf = int(self.n_frames)
        if nf < 1:
            raise ValueError(f"n_frames: expected >= 1, got {self.n_frames}")
        ny, nz = self.geometry.detector_shape
        shape = (self.geometry.n_distances, nf, ny, nz)
        words = np.ascontiguousarray(self.words)
        if words.dtype != np.uint32 or words.ndim != 1:
            raise ValueError(f"words: expected a 1D uint32 array (SpotsInfo layout), got "
                             f"{words.dtype} of shape {words.shape}")
        if words.size != n_words(shape):
            raise ValueError(f"words: expected {n_words(shape)} uint32 words for the stack "
                             f"(n_distances, n_frames, NrPixelsY, NrPixelsZ) = {shape}, got "
                             f"{words.size}")
        g = np.ascontiguousarray(self.reflections.g, dtype=np.float64).reshape(-1, 3)
        glen = np.linalg.norm(g, axis=1)
        sin_t = 0.5 * self.geometry.wavelength_A * glen
        a = self._arrays
        geo = self.geometry._arrays
        a["common"] = (geo["lsd"], geo["bc"], float(self.geometry.px_um),
                       np.ascontiguousarray(tilt_matrix(self.geometry.tilts_deg)), int(ny),
                       int(nz), nf, float(self.geometry.wavelength_A), g,
                       np.ascontiguousarray(np.where(sin_t < 1.0, glen * sin_t, -1.0)),
                       geo["ranges"], geo["boxes"], float(self.geometry.omega_start_deg),
                       float(self.geometry.omega_step_deg),
                       float(self.geometry.exclude_pole_deg))
        a["words"] = words

    def one_pixel(self, grid: Grid) -> bool:
        """Whether the footprint is one pixel (EdgeLength <= px)."""
        edge = grid.edge_um if self.edge_length_um is None else self.edge_length_um
        return bool(edge <= self.geometry.px_um)

    def _args(self, grid: Grid):
        c = self._arrays["common"]
        return c + (self.one_pixel(grid), self._arrays["words"])

    def max_pixels_per_spot(self, grid: Grid) -> int:
        """A proven upper bound on the footprint pixels one spot of any voxel of ``grid``
        counts (doc/nf_fit.md, "Early exits"): 1 for the one-pixel footprint, else the area of
        the footprint's bounding box, ``(floor(spread_y) + 2) (floor(spread_z) + 2)``, spread
        the largest pixel distance between two projected corners of a triangle.

        Two corners of a triangle are at most ``e`` (its longest edge) apart; rotated by
        omega and displaced (``(ya + y t, z t)``, ``t = 1 - xa / Lsd0``, ``|y|, |z|`` within
        the BoxSize windows) they differ by at most ``e sqrt(1 + (Ymax / Lsd0)^2)`` in y and
        ``e Zmax / Lsd0`` in z on the first detector; the tilt rule is a smooth map whose
        Jacobian is bounded on that region (sampled densely, with a 2 % margin; the kernel
        also checks every spot it counts against the bound and the call fails if one
        exceeds it).
        """
        if self.one_pixel(grid):
            return 1
        v = midas_vertices(grid)
        e = float(np.max(np.linalg.norm(v[:, [0, 1, 2]] - v[:, [1, 2, 0]], axis=2)))
        vmax = float(np.max(np.linalg.norm(v, axis=2)))
        geo = self.geometry
        boxes = np.abs(np.asarray(geo.box_sizes_um, dtype=np.float64))
        ymax, zmax = float(boxes[:, :2].max()), float(boxes[:, 2:].max())
        lsd0, px = float(geo.lsd_um[0]), float(geo.px_um)
        dy = e * np.sqrt(1.0 + (ymax / lsd0) ** 2)
        dz = e * zmax / lsd0
        # Jacobian of the tilt rule over the displaced points' region
        R = tilt_matrix(geo.tilts_deg)
        p0 = R @ np.array([-lsd0, 0.0, 0.0])

        def tilted(yy, zz):
            p1 = R[:, 1, None] * yy + R[:, 2, None] * zz
            f = p0[0] / (p1[0] - p0[0])
            return p0[1] - (p1[1] - p0[1]) * f, p0[2] - (p1[2] - p0[2]) * f

        ylim = vmax + ymax * (1.0 + vmax / lsd0)
        zlim = zmax * (1.0 + vmax / lsd0)
        yy, zz = (a.ravel() for a in np.meshgrid(np.linspace(-ylim, ylim, 65),
                                                  np.linspace(-zlim, zlim, 65)))
        h = 1e-3
        jy = [(a - b) / (2 * h) for a, b in zip(tilted(yy + h, zz), tilted(yy - h, zz))]
        jz = [(a - b) / (2 * h) for a, b in zip(tilted(yy, zz + h), tilted(yy, zz - h))]
        spread_y = 1.02 * (np.abs(jy[0]).max() * dy + np.abs(jz[0]).max() * dz) / px
        spread_z = 1.02 * (np.abs(jy[1]).max() * dy + np.abs(jz[1]).max() * dz) / px
        return int((np.floor(spread_y) + 2) * (np.floor(spread_z) + 2))

    def _check_bound(self, ext) -> None:
        if ext.take_bound_violation():
            raise RuntimeError("nf_overlap: a spot counted more pixels than the early-exit "
                               "bound (max_pixels_per_spot); please report this geometry")

    def confidence(self, orientations, grid: Grid, pair_orientation=None, pair_voxel=None,
                   num_threads: int = 0, min_confidence: float = 0.0) -> np.ndarray:
        """Confidence of (orientation, voxel) pairs.

        Parameters
        ----------
        orientations : array_like (n, 3, 3)
            Orientation matrices (crystal -> sample).
        grid : Grid
            Triangle voxels.
        pair_orientation, pair_voxel : int arrays, optional
            The pairs to score; default: every orientation against every voxel (n * nvox,
            orientation-major).
        num_threads : int
            0 = all cores.
        min_confidence : float
            > 0: a pair's count stops as soon as its confidence is provably below this value
            (early exits, doc/nf_fit.md) and the pair is reported as NaN; every pair that
            reaches it gets its exact confidence. 0: every confidence exact.

        Returns
        -------
        numpy.ndarray float64, one confidence per pair (shape (n, nvox) when pairs are not
        given).
        """
        from xreduce.ext import nf_overlap as _ext

        U = np.ascontiguousarray(orientations, dtype=np.float64)
        if U.ndim == 2:
            U = U[None]
        if U.ndim != 3 or U.shape[1:] != (3, 3):
            raise ValueError(f"orientations: expected matrices (n, 3, 3), got {U.shape}")
        verts = midas_vertices(grid)
        full = pair_orientation is None and pair_voxel is None
        if full:
            po = np.repeat(np.arange(len(U), dtype=np.int64), len(grid))
            pv = np.tile(np.arange(len(grid), dtype=np.int64), len(U))
        elif pair_orientation is None or pair_voxel is None:
            raise ValueError("pair_orientation, pair_voxel: give both or neither")
        else:
            po = np.ascontiguousarray(pair_orientation, dtype=np.int64)
            pv = np.ascontiguousarray(pair_voxel, dtype=np.int64)
            if po.shape != pv.shape or po.ndim != 1:
                raise ValueError(f"pair_orientation, pair_voxel: expected two 1D arrays of "
                                 f"equal length, got {po.shape} and {pv.shape}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence: expected a fraction in [0, 1], got "
                             f"{min_confidence}")
        bound = self.max_pixels_per_spot(grid) if min_confidence > 0 else 0
        conf, _ = _ext.screen(*self._args(grid), U, verts, po, pv,
                              check_num_threads(num_threads), float(min_confidence), bound)
        self._check_bound(_ext)
        return conf.reshape(len(U), len(grid)) if full else conf

    def refine(self, grid: Grid, cand_indptr, cand_euler_rad, orient_tol_deg: float,
               rotation_vector: bool = False, stop_at_one: bool = True,
               max_evaluations: int = 5000, restarts: int = 0, num_threads: int = 0,
               step_deg: float | None = None, ftol: float = 1e-5, xtol: float = 1e-5,
               xtol_deg: float = 0.0):
        """Refine the candidates of every voxel by bounded Nelder-Mead (see
        :func:`xreduce.nf.fit.fit_orientations`).

        step_deg : initial simplex step (default: half of ``orient_tol_deg``, MIDAS).
        ftol, xtol : the simplex stops once its f values are within ftol (relative) or its
        size within xtol (relative to the point), MIDAS's nlopt tolerances.
        xtol_deg : > 0, also stop once the simplex is smaller than this (degrees).

        Returns
        -------
        euler_rad (ncand, 3), confidence (ncand,), evaluations (ncand,) int32 (0: skipped
        after an earlier candidate of the voxel reached confidence 1).
        """
        from xreduce.ext import nf_overlap as _ext

        from .crystal import euler_to_matrix, matrix_to_euler

        indptr = np.ascontiguousarray(cand_indptr, dtype=np.int64)
        euler = np.ascontiguousarray(cand_euler_rad, dtype=np.float64).reshape(-1, 3)
        if indptr.ndim != 1 or len(indptr) != len(grid) + 1:
            raise ValueError(f"cand_indptr: expected {len(grid) + 1} offsets (one per voxel "
                             f"+ 1), got shape {indptr.shape}")
        if not orient_tol_deg > 0:
            raise ValueError(f"orient_tol_deg: expected > 0, got {orient_tol_deg}")
        params, conf, evals = _ext.refine(
            *self._args(grid), midas_vertices(grid), indptr, euler,
            float(np.radians(orient_tol_deg)), bool(rotation_vector), float(ftol), float(xtol),
            int(max_evaluations), bool(stop_at_one), check_num_threads(num_threads),
            int(restarts), self.max_pixels_per_spot(grid),
            float(np.radians(step_deg)) if step_deg else 0.0, float(np.radians(xtol_deg)))
        self._check_bound(_ext)
        if rotation_vector and len(params):
            from scipy.spatial.transform import Rotation

            U = Rotation.from_rotvec(params).as_matrix() @ euler_to_matrix(euler)
            params = matrix_to_euler(U)
        return params, conf, evals
