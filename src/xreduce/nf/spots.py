"""NF-HEDM spot prediction and footprints (front end of the kernel ``xreduce.ext.nf_spots``).

Geometry (MIDAS, REFERENCE.md section 5): beam along lab +X, rotation omega about lab +Z,
detectors in the planes X = Lsd. For ``G = U g`` rotated by omega, the diffraction condition is
``-Gx cos w + Gy sin w = |G| sin(theta)`` (two omegas at most per reflection); eta is measured
from +Z, negative towards +Y; the spot of a voxel at the origin lies at
``y = -R sin(eta), z = R cos(eta)``, ``R = Lsd tan(2 theta)``. A voxel at sample (a, b) is seen
through the ray from ``Rz(w) (a, b, 0)`` along the diffracted beam.

Extensions, each 0 by default: ``Wedge`` tilts the rotation stage about lab +Y with MIDAS's
sign (``lab = Ry(-Wedge) Rz(w) sample``, Ry right-handed: the sign MIDAS's NF and FF codes
use when they correct omega for the wedge); detector tilts ``Rt = Rz(tz) Ry(ty) Rx(tx)`` act
as in MIDAS: the ray is rotated by ``Rt`` about the beam centre ``(Lsd, 0, 0)`` and met with
the plane ``X = Lsd``; pixel ``Y = y / px + BCy``, ``Z = z / px + BCz`` (pixel centres at integer values).
Frame number ``floor((w - OmegaStart) / OmegaStep)``.

Example
-------
>>> from xreduce.nf.reflections import reflection_list
>>> from xreduce.nf.crystal import euler_to_matrix
>>> geo = NFGeometry(lsd_um=(6000.0,), bc_px=((1024.0, 1024.0),), px_um=1.48,
...                  wavelength_A=0.172979, omega_start_deg=-180.0, omega_step_deg=0.25,
...                  omega_ranges_deg=((-180.0, 180.0),),
...                  box_sizes_um=((-3000.0, 3000.0, -3000.0, 3000.0),))
>>> refl = reflection_list(225, (4.08,) * 3 + (90.0,) * 3, 0.172979, 6000.0, 2000.0)
>>> spots = predict_spots(euler_to_matrix([[0.1, 0.2, 0.3]]), refl, geo)
>>> bool(len(spots) > 0)
True
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .reflections import ReflectionList

__all__ = ["NFGeometry", "Spots", "predict_spots", "spot_pixels", "spot_footprints",
           "tilt_matrix"]


def tilt_matrix(tilts_deg) -> np.ndarray:
    """``Rt = Rz(tz) Ry(ty) Rx(tx)`` for tilts (tx, ty, tz) in degrees."""
    tx, ty, tz = np.radians(np.asarray(tilts_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class NFGeometry:
    """Experiment geometry of an NF-HEDM scan (MIDAS units: um, degrees, Angstrom, pixels).

    ``detector_shape`` is (NrPixelsY, NrPixelsZ); ``n_frames`` the number of omega frames
    (None: as many as the omega ranges need).
    """

    lsd_um: tuple[float, ...]
    bc_px: tuple[tuple[float, float], ...]
    px_um: float
    wavelength_A: float
    omega_start_deg: float
    omega_step_deg: float
    omega_ranges_deg: tuple[tuple[float, float], ...]
    box_sizes_um: tuple[tuple[float, float, float, float], ...]
    tilts_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    wedge_deg: float = 0.0
    exclude_pole_deg: float = 0.0
    detector_shape: tuple[int, int] = (2048, 2048)
    n_frames: int | None = None
    _arrays: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if len(self.lsd_um) < 1 or len(self.lsd_um) != len(self.bc_px):
            raise ValueError(f"lsd_um, bc_px: expected one beam centre per distance, got "
                             f"{len(self.lsd_um)} distances and {len(self.bc_px)} centres")
        if len(self.omega_ranges_deg) < 1 or len(self.omega_ranges_deg) != len(self.box_sizes_um):
            raise ValueError(f"omega_ranges_deg, box_sizes_um: expected one BoxSize per "
                             f"OmegaRange (at least one), got {len(self.omega_ranges_deg)} and "
                             f"{len(self.box_sizes_um)}")
        for name in ("px_um", "wavelength_A"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        if self.omega_step_deg == 0:
            raise ValueError("omega_step_deg: expected non-zero")
        a = self._arrays
        a["lsd"] = np.ascontiguousarray(self.lsd_um, dtype=np.float64)
        a["bc"] = np.ascontiguousarray(self.bc_px, dtype=np.float64).reshape(-1, 2)
        a["ranges"] = np.ascontiguousarray(self.omega_ranges_deg, dtype=np.float64).reshape(-1, 2)
        a["boxes"] = np.ascontiguousarray(self.box_sizes_um, dtype=np.float64).reshape(-1, 4)
        a["Rt"] = np.ascontiguousarray(tilt_matrix(self.tilts_deg))

    @property
    def n_distances(self) -> int:
        return len(self.lsd_um)

    @classmethod
    def from_parameters(cls, params) -> "NFGeometry":
        """The geometry of a MIDAS parameter set (``NFParameters``)."""
        need = {"px_um": "px", "wavelength_A": "Wavelength", "omega_start_deg": "OmegaStart",
                "omega_step_deg": "OmegaStep"}
        for fld, key in need.items():
            if getattr(params, fld) is None:
                raise ValueError(f"params: key {key!r} is needed for the geometry")
        shape = params.detector_shape or (2048, 2048)
        return cls(lsd_um=tuple(params.lsd_um), bc_px=tuple(params.bc_px), px_um=params.px_um,
                   wavelength_A=params.wavelength_A, omega_start_deg=params.omega_start_deg,
                   omega_step_deg=params.omega_step_deg,
                   omega_ranges_deg=tuple(params.omega_ranges_deg),
                   box_sizes_um=tuple(params.box_sizes_um), tilts_deg=params.tilts_deg,
                   wedge_deg=params.wedge_or_zero_deg,
                   exclude_pole_deg=params.exclude_pole_or_zero_deg, detector_shape=shape,
                   n_frames=params.n_frames)

    def frame_of(self, omega_deg) -> np.ndarray:
        """Frame number ``floor((omega - OmegaStart) / OmegaStep)`` (int64)."""
        w = np.asarray(omega_deg, dtype=np.float64)
        return np.floor((w - self.omega_start_deg) / self.omega_step_deg).astype(np.int64)


@dataclass(frozen=True)
class Spots:
    """Predicted spots, one row each.

    Attributes
    ----------
    orientation : int32 (n,) index of the orientation
    reflection : int32 (n,) row of ``reflections``
    omega_deg : float64 (n,)
    frame : int32 (n,)
    dir_y, dir_z : float64 (n,) diffracted beam direction as ky/kx, kz/kx
    reflections : ReflectionList the rows refer to
    lsd_um : float64 (D,) detector distances

    Derived (computed on access): ``eta_deg``, ``ring_nr``, ``hkl``, and ``y_um``, ``z_um``
    (n, D), the spot of a voxel at the origin on each untilted distance.
    """

    orientation: np.ndarray
    reflection: np.ndarray
    omega_deg: np.ndarray
    frame: np.ndarray
    dir_y: np.ndarray
    dir_z: np.ndarray
    reflections: ReflectionList
    lsd_um: np.ndarray

    _ROW_FIELDS = ("orientation", "reflection", "omega_deg", "frame", "dir_y", "dir_z")

    def __len__(self) -> int:
        return len(self.omega_deg)

    @property
    def eta_deg(self) -> np.ndarray:
        """Azimuth from +Z, negative towards +Y (degrees)."""
        return np.degrees(np.arctan2(-self.dir_y, self.dir_z))

    @property
    def ring_nr(self) -> np.ndarray:
        return self.reflections.ring_nr[self.reflection]

    @property
    def hkl(self) -> np.ndarray:
        return self.reflections.hkl[self.reflection]

    @property
    def y_um(self) -> np.ndarray:
        return self.dir_y[:, None] * self.lsd_um[None, :]

    @property
    def z_um(self) -> np.ndarray:
        return self.dir_z[:, None] * self.lsd_um[None, :]

    def take(self, index) -> "Spots":
        """The spots selected by ``index`` (indices or boolean mask)."""
        rows = {f: getattr(self, f)[index] for f in self._ROW_FIELDS}
        return Spots(**rows, reflections=self.reflections, lsd_um=self.lsd_um)


def _as_orientations(orientations) -> np.ndarray:
    U = np.asarray(orientations, dtype=np.float64)
    if U.ndim == 2:
        U = U[None]
    if U.ndim != 3 or U.shape[1:] != (3, 3):
        raise ValueError(f"orientations: expected matrices of shape (n, 3, 3), got {U.shape}")
    return np.ascontiguousarray(U)


def predict_spots(orientations, reflections: ReflectionList, geometry: NFGeometry,
                  num_threads: int = 0) -> Spots:
    """Every diffraction spot of every orientation (OpenMP over orientations).

    Parameters
    ----------
    orientations : array_like (n, 3, 3)
        Orientation matrices U (crystal -> sample), e.g. from
        :func:`xreduce.nf.crystal.euler_to_matrix`.
    reflections : ReflectionList
    geometry : NFGeometry
    num_threads : int
        0 for the OpenMP default.

    Returns
    -------
    Spots
        Spots in the OmegaRange windows whose BoxSize (tested on the first distance) holds
        them, outside ExcludePoleAngle; ordered by orientation.
    """
    from xreduce.ext import nf_spots as _ext

    if not isinstance(reflections, ReflectionList):
        raise TypeError(f"reflections: expected ReflectionList, got {type(reflections).__name__}")
    if not isinstance(geometry, NFGeometry):
        raise TypeError(f"geometry: expected NFGeometry, got {type(geometry).__name__}")
    U = _as_orientations(orientations)
    a = geometry._arrays
    orient, refl, omega, dy, dz, frame = _ext.predict_spots(
        U, np.ascontiguousarray(reflections.g, dtype=np.float64), geometry.wavelength_A,
        float(a["lsd"][0]), a["ranges"], a["boxes"], geometry.exclude_pole_deg,
        geometry.wedge_deg, geometry.omega_start_deg, geometry.omega_step_deg, int(num_threads))
    return Spots(orientation=orient, reflection=refl, omega_deg=omega, frame=frame,
                 dir_y=dy, dir_z=dz, reflections=reflections, lsd_um=a["lsd"])


def spot_pixels(spots: Spots, geometry: NFGeometry, a_um=0.0, b_um=0.0,
                num_threads: int = 0) -> np.ndarray:
    """Pixel coordinates (n, D, 2) = (Y, Z) of the spots of a point at sample (a, b) um
    (scalars or arrays of length n), with tilts, on every distance."""
    from xreduce.ext import nf_spots as _ext

    n = len(spots)
    a = np.ascontiguousarray(np.broadcast_to(np.asarray(a_um, dtype=np.float64), (n,)))
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(b_um, dtype=np.float64), (n,)))
    arr = geometry._arrays
    return _ext.project_points(a, b, spots.omega_deg, spots.dir_y, spots.dir_z, arr["lsd"],
                               arr["bc"], geometry.px_um, arr["Rt"], geometry.wedge_deg,
                               int(num_threads))


def spot_footprints(spots: Spots, voxel, vertices_um, geometry: NFGeometry,
                    conservative: bool = False, num_threads: int = 0):
    """Detector pixels covered by each spot of a voxel, on each distance.

    Parameters
    ----------
    spots : Spots
    voxel : int array (n,)
        For each spot, the row of ``vertices_um`` of the voxel that diffracts it.
    vertices_um : float (nvox, nv, 2)
        Voxel polygons (x, y) in the sample frame, e.g. ``Grid.vertices_um()``.
    geometry : NFGeometry
    conservative : bool
        False: pixels whose centre lies in the projected polygon (at least the pixel of its
        centroid). True: every pixel the polygon touches.

    Returns
    -------
    indptr : int64 (n * D + 1,)
    pix_y, pix_z : int32
        Pixels of spot j on distance d: ``pix_y[indptr[j*D + d]:indptr[j*D + d + 1]]``.
    """
    from xreduce.ext import nf_spots as _ext

    verts = np.ascontiguousarray(vertices_um, dtype=np.float64)
    if verts.ndim == 2:
        verts = verts[None]
    vox = np.ascontiguousarray(np.broadcast_to(np.asarray(voxel, dtype=np.int32), (len(spots),)))
    if len(vox) and (vox.min() < 0 or vox.max() >= len(verts)):
        raise ValueError(f"voxel: indices must be in 0..{len(verts) - 1}")
    arr = geometry._arrays
    ny, nz = geometry.detector_shape
    return _ext.footprints(vox, verts, spots.omega_deg, spots.dir_y, spots.dir_z, arr["lsd"],
                           arr["bc"], geometry.px_um, arr["Rt"], geometry.wedge_deg, int(ny),
                           int(nz), bool(conservative), int(num_threads))
