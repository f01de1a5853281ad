"""Reflection (HKL) lists for NF-HEDM, as MIDAS's ``hkls.csv``.

All reflections ``hkl`` allowed by the space group (gemmi absences) with
``d >= d_min = wavelength / (2 sin(atan(MaxRingRad / Lsd) / 2))``, sorted by decreasing d and
grouped into rings: a new ring starts where d drops by 1e-4 Angstrom or more from the previous
reflection. Both Friedel mates are listed (one spot each). Columns of ``hkls.csv``:
``h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius`` with ``g = B hkl`` (1/Angstrom,
Cartesian crystal frame), angles in degrees, Radius ``Lsd tan(2 theta)`` in micrometres.

Example
-------
>>> refl = reflection_list(225, (4.08, 4.08, 4.08, 90, 90, 90), 0.172979, 6000.0, 2000.0)
>>> refl.hkl[:8].tolist()[0], int(refl.ring_nr[0]), round(float(refl.d_A[0]), 4)
([1, 1, 1], 1, 2.3556)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np

from xreduce.limits import check_allocation

from .crystal import b_matrix, direct_matrix, is_allowed

__all__ = ["ReflectionList", "reflection_list", "reflections_from_parameters", "read_hkls_csv",
           "RING_TOLERANCE_A", "HKLS_CSV_HEADER"]

#: d-spacing change (Angstrom) that starts a new ring (MIDAS).
RING_TOLERANCE_A = 1e-4
#: Header line of MIDAS's hkls.csv.
HKLS_CSV_HEADER = "h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius"


@dataclass(frozen=True)
class ReflectionList:
    """Reflections, one row each (arrays of equal length n).

    Attributes
    ----------
    hkl : int (n, 3)
    d_A : float (n,) d-spacing, Angstrom
    ring_nr : int (n,) ring number, 1 = largest d
    g : float (n, 3) ``B @ hkl`` in 1/Angstrom (crystal frame)
    theta_deg, two_theta_deg : float (n,)
    radius_um : float (n,) ``lsd_um * tan(2 theta)``
    wavelength_A, lsd_um : float, the values used
    """

    hkl: np.ndarray
    d_A: np.ndarray
    ring_nr: np.ndarray
    g: np.ndarray
    theta_deg: np.ndarray
    two_theta_deg: np.ndarray
    radius_um: np.ndarray
    wavelength_A: float
    lsd_um: float

    def __len__(self) -> int:
        return len(self.d_A)

    @property
    def rings(self) -> np.ndarray:
        """Ring numbers present, increasing."""
        return np.unique(self.ring_nr)

    def ring_d_A(self) -> dict[int, float]:
        """d-spacing of each ring (its first, largest, member)."""
        out: dict[int, float] = {}
        for r, d in zip(self.ring_nr.tolist(), self.d_A.tolist()):
            out.setdefault(r, d)
        return out

    def select_rings(self, rings: Iterable[int]) -> "ReflectionList":
        """Keep only reflections of the given ring numbers (MIDAS ``RingsToUse``).

        Raises ValueError naming rings absent from the list.
        """
        wanted = np.unique(np.asarray(list(rings), dtype=np.int64))
        missing = sorted(set(wanted.tolist()) - set(self.rings.tolist()))
        if missing:
            raise ValueError(f"rings: ring number(s) {missing} not in the list "
                             f"(rings 1..{int(self.ring_nr.max())})")
        keep = np.isin(self.ring_nr, wanted)
        return self._take(keep)

    def _take(self, index) -> "ReflectionList":
        return replace(self, hkl=self.hkl[index], d_A=self.d_A[index], ring_nr=self.ring_nr[index],
                       g=self.g[index], theta_deg=self.theta_deg[index],
                       two_theta_deg=self.two_theta_deg[index], radius_um=self.radius_um[index])

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write MIDAS's ``hkls.csv`` (space separated, one header line), atomically (``atomic_output``)."""
        from xreduce.io.writers import atomic_output

        with atomic_output(path) as tmp, open(tmp, "w", encoding="ascii") as f:
            f.write(HKLS_CSV_HEADER + "\n")
            for i in range(len(self)):
                h, k, l = self.hkl[i]
                g1, g2, g3 = self.g[i]
                f.write(f"{h} {k} {l} {self.d_A[i]:.10f} {self.ring_nr[i]} {g1:.10f} {g2:.10f} "
                        f"{g3:.10f} {self.theta_deg[i]:.10f} {self.two_theta_deg[i]:.10f} "
                        f"{self.radius_um[i]:.6f}\n")


def _check_positive(value, name) -> float:
    v = float(value)
    if not v > 0:
        raise ValueError(f"{name}: expected a positive number, got {value}")
    return v


def reflection_list(space_group: int, lattice_parameter, wavelength_A: float, lsd_um: float,
                    max_ring_rad_um: float, rings_to_use: Iterable[int] | None = None
                    ) -> ReflectionList:
    """All allowed reflections on the detector, grouped into rings.

    Parameters
    ----------
    space_group : int
        Space-group number (absences from gemmi).
    lattice_parameter : sequence of 6 floats
        a, b, c (Angstrom), alpha, beta, gamma (degrees).
    wavelength_A : float
    lsd_um : float
        Sample-detector distance, micrometres.
    max_ring_rad_um : float
        Largest ring radius on the detector, micrometres; sets ``d_min``.
    rings_to_use : iterable of int, optional
        Keep only these ring numbers (numbering is done on the full list first).

    Returns
    -------
    ReflectionList

    Example
    -------
    >>> r = reflection_list(229, (2.87, 2.87, 2.87, 90, 90, 90), 0.172979, 6000.0, 1000.0)
    >>> sorted({tuple(sorted(abs(int(x)) for x in h)) for h in r.hkl[r.ring_nr == 1]})
    [(0, 1, 1)]
    """
    wavelength_A = _check_positive(wavelength_A, "wavelength_A")
    lsd_um = _check_positive(lsd_um, "lsd_um")
    max_ring_rad_um = _check_positive(max_ring_rad_um, "max_ring_rad_um")
    B = b_matrix(lattice_parameter)
    d_min = wavelength_A / (2 * np.sin(np.arctan(max_ring_rad_um / lsd_um) / 2))
    # |h| = |a . g| <= |a| / d_min for every reflection with d >= d_min
    lengths = np.linalg.norm(direct_matrix(lattice_parameter), axis=0)
    hmax = [int(np.floor(x / d_min + 1e-9)) for x in lengths]
    n_hkl = (2 * hmax[0] + 1) * (2 * hmax[1] + 1) * (2 * hmax[2] + 1)  # Python int: no overflow
    # about 12 numbers of 8 bytes per candidate hkl on the way (hkl, g, d, masks, sort)
    check_allocation(n_hkl * 96, "wavelength_A (Wavelength), max_ring_rad_um (MaxRingRad)",
                     f"{n_hkl} candidate hkl down to d = {d_min:.3g} A")
    axes = [np.arange(-m, m + 1) for m in hmax]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    g = hkl @ B.T
    d = 1.0 / np.linalg.norm(g, axis=1)
    keep = d >= d_min
    hkl, g, d = hkl[keep], g[keep], d[keep]
    allowed = is_allowed(space_group, hkl)
    hkl, g, d = hkl[allowed], g[allowed], d[allowed]
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], -d))
    hkl, g, d = hkl[order], g[order], d[order]
    new_ring = np.r_[True, (d[:-1] - d[1:]) >= RING_TOLERANCE_A]
    ring_nr = np.cumsum(new_ring)
    theta = np.degrees(np.arcsin(wavelength_A / (2 * d)))
    out = ReflectionList(
        hkl=hkl.astype(np.int64), d_A=d, ring_nr=ring_nr.astype(np.int64), g=g, theta_deg=theta,
        two_theta_deg=2 * theta, radius_um=lsd_um * np.tan(np.radians(2 * theta)),
        wavelength_A=wavelength_A, lsd_um=lsd_um,
    )
    if rings_to_use is not None and len(list(rings_to_use)) > 0:
        out = out.select_rings(rings_to_use)
    return out


def reflections_from_parameters(params) -> ReflectionList:
    """The reflection list of a MIDAS parameter set (``NFParameters``).

    Uses SpaceGroup, LatticeParameter, Wavelength, MaxRingRad, RingsToUse and, as MIDAS's
    GetHKLList does, the last ``Lsd`` line.
    """
    for fld, key in (("space_group", "SpaceGroup"), ("lattice_parameter", "LatticeParameter"),
                     ("wavelength_A", "Wavelength"), ("max_ring_rad_um", "MaxRingRad")):
        if getattr(params, fld) is None:
            raise ValueError(f"params: key {key!r} is needed for the reflection list")
    if not params.lsd_um:
        raise ValueError("params: key 'Lsd' is needed for the reflection list")
    return reflection_list(params.space_group, params.lattice_parameter, params.wavelength_A,
                           params.lsd_um[-1], params.max_ring_rad_um,
                           params.rings_to_use or None)


def read_hkls_csv(path: str | os.PathLike, wavelength_A: float = float("nan"),
                  lsd_um: float = float("nan")) -> ReflectionList:
    """Read an ``hkls.csv`` (ours or MIDAS's) back into a :class:`ReflectionList`.

    Raises ValueError naming the file for a wrong header, a non-numeric or non-finite value,
    fewer than 11 columns, non-integer hkl or ring numbers, or d-spacings that are not > 0.
    """
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().split()
            if header[:5] != ["h", "k", "l", "D-spacing", "RingNr"] or len(header) < 11:
                raise ValueError(f"{name}: does not start with the hkls.csv header "
                                 f"{HKLS_CSV_HEADER!r}")
            check_allocation(os.path.getsize(path) * 8, "path", "hkls.csv rows")
            data = np.loadtxt(f, ndmin=2, dtype=np.float64)
    except UnicodeDecodeError:
        raise ValueError(f"{name}: hkls.csv is not UTF-8 text") from None
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: hkls.csv rows must be numbers ({exc})") from None
    if data.size == 0:
        data = data.reshape(0, 11)
    if data.shape[1] < 11:
        raise ValueError(f"{name}: expected 11 columns, got {data.shape[1]}")
    if not np.isfinite(data[:, :11]).all():
        raise ValueError(f"{name}: hkls.csv holds NaN or infinite values")
    whole = data[:, [0, 1, 2, 4]]
    if (whole != np.rint(whole)).any() or np.abs(whole).max(initial=0) > 2**31 - 1:
        raise ValueError(f"{name}: h, k, l and RingNr must be whole numbers")
    if not (data[:, 3] > 0).all():
        raise ValueError(f"{name}: D-spacing must be > 0")
    return ReflectionList(
        hkl=np.rint(data[:, 0:3]).astype(np.int64), d_A=data[:, 3],
        ring_nr=np.rint(data[:, 4]).astype(np.int64), g=data[:, 5:8], theta_deg=data[:, 8],
        two_theta_deg=data[:, 9], radius_um=data[:, 10], wavelength_A=wavelength_A,
        lsd_um=lsd_um,
    )
