"""Reference powders for geometry calibration, and synthetic calibration images.

A :class:`Calibrant` is the list of d-spacings (Angstrom, decreasing) of the rings a powder
gives. The built-in ones are computed from the lattice constants and the atoms of the structure
with gemmi's space-group operations (systematic absences) and a structure-factor sum (rings of
zero intensity, such as Si 200, are dropped); the sources of the lattice constants are listed in
``doc/calibration.md`` and in :attr:`Calibrant.source`. pyFAI's ``.D`` files are read as they are
with :meth:`Calibrant.from_file`.

Example
-------
>>> from xreduce.calibrant import get_calibrant
>>> lab6 = get_calibrant("LaB6")
>>> round(float(lab6.d_spacings[0]), 6)
4.156826
>>> two_theta = lab6.two_theta(wavelength=1e-10)   # radians, reachable rings only
>>> round(float(two_theta[0]), 5)
0.24115
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from itertools import product

import numpy as np

__all__ = ["Calibrant", "get_calibrant", "calibrant_names", "fake_calibration_image",
           "energy_to_wavelength"]

#: h c in keV Angstrom (CODATA 2018): wavelength [A] = 12.398419843320026 / energy [keV].
HC_KEV_ANGSTROM = 12.398419843320026


def energy_to_wavelength(energy_kev: float) -> float:
    """X-ray wavelength in metres of a photon energy in keV.

    Example
    -------
    >>> round(energy_to_wavelength(12.398419843320026) * 1e10, 12)
    1.0
    """
    energy = float(energy_kev)
    if not (math.isfinite(energy) and energy > 0):
        raise ValueError(f"energy: expected a positive energy in keV, got {energy_kev!r}")
    return HC_KEV_ANGSTROM / energy * 1e-10


@dataclass(frozen=True, eq=False)
class Calibrant:
    """The rings of a reference powder.

    Parameters
    ----------
    name : str
        Name, e.g. ``"LaB6"``.
    d_spacings : array_like
        d-spacings in Angstrom; stored sorted in decreasing order.
    hkl : list of tuple, optional
        One Miller index per ring (a representative one), same order as ``d_spacings``.
    multiplicity : array_like of int, optional
        Number of reflections merged into each ring.
    intensity : array_like, optional
        Relative ring intensity (multiplicity times |F|^2, largest = 100), used by
        :func:`fake_calibration_image`; None = all equal.
    source : str
        Where the lattice constants (or the d-spacings) come from.
    """

    name: str
    d_spacings: np.ndarray
    hkl: list | None = None
    multiplicity: np.ndarray | None = None
    intensity: np.ndarray | None = None
    source: str = ""
    _two_theta_cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        d = np.asarray(self.d_spacings, dtype=np.float64).ravel()
        if d.size == 0:
            raise ValueError(f"d_spacings: expected at least one d-spacing, got none for {self.name!r}")
        if not np.all(np.isfinite(d)) or np.any(d <= 0):
            raise ValueError(f"d_spacings: expected positive finite values in Angstrom, got {d[:5]}...")
        order = np.argsort(-d, kind="stable")
        object.__setattr__(self, "d_spacings", _readonly(d[order]))
        if self.hkl is not None:
            if len(self.hkl) != d.size:
                raise ValueError(f"hkl: expected {d.size} entries, got {len(self.hkl)}")
            object.__setattr__(self, "hkl", [tuple(self.hkl[i]) for i in order])
        for label in ("multiplicity", "intensity"):
            value = getattr(self, label)
            if value is not None:
                value = np.asarray(value, dtype=np.float64).ravel()
                if value.size != d.size:
                    raise ValueError(f"{label}: expected {d.size} values, got {value.size}")
                object.__setattr__(self, label, _readonly(value[order]))

    def __len__(self) -> int:
        return int(self.d_spacings.size)

    def __repr__(self) -> str:
        return f"Calibrant({self.name!r}, {len(self)} rings, d = {self.d_spacings[0]:.5f} A ...)"

    def two_theta(self, wavelength: float) -> np.ndarray:
        """Scattering angles 2theta (radians) of the rings reachable at ``wavelength`` (metres).

        Ring ``i`` of the result is ring ``i`` of :attr:`d_spacings`; rings with
        ``wavelength > 2 d`` are left out (so the result may be shorter).

        Example
        -------
        >>> c = Calibrant("test", [2.0, 1.0])
        >>> c.two_theta(2e-10).round(6).tolist()
        [1.047198, 3.141593]
        """
        wavelength = float(wavelength)
        if not (math.isfinite(wavelength) and 0 < wavelength < 1e-6):
            raise ValueError(f"wavelength: expected a positive wavelength in metres "
                             f"(1 Angstrom = 1e-10), got {wavelength!r}")
        key = wavelength
        if key not in self._two_theta_cache:
            ratio = wavelength * 1e10 / (2.0 * self.d_spacings)
            ratio = ratio[ratio <= 1.0]
            self._two_theta_cache[key] = _readonly(2.0 * np.arcsin(ratio))
        return self._two_theta_cache[key]

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_lattice(cls, name: str, cell: tuple, space_group: str, atoms: list | None = None,
                     d_min: float = 0.5, source: str = "") -> "Calibrant":
        """d-spacings of a crystal from its cell, space group and (optionally) atoms.

        Parameters
        ----------
        name : str
        cell : tuple
            (a, b, c, alpha, beta, gamma) in Angstrom and degrees.
        space_group : str
            Hermann-Mauguin symbol gemmi knows (``"P m -3 m"``, ``"F d -3 m:1"``, ``"R -3 c:H"``).
        atoms : list of (element, (x, y, z)), optional
            The asymmetric unit. When given, rings whose structure factor vanishes are dropped and
            intensities (multiplicity times |F|^2 at the given d) are computed; otherwise only
            the space group's systematic absences are removed.
        d_min : float
            Smallest d-spacing kept, Angstrom.
        source : str
            Reference of the lattice constants.

        Example
        -------
        >>> si = Calibrant.from_lattice("Si", (5.431144,) * 3 + (90,) * 3, "F d -3 m:1",
        ...                             [("Si", (0, 0, 0))], d_min=1.0)
        >>> [hkl for hkl in si.hkl][:3]
        [(1, 1, 1), (2, 2, 0), (3, 1, 1)]
        """
        import gemmi

        d_min = float(d_min)
        if not d_min > 0:
            raise ValueError(f"d_min: expected a positive d-spacing in Angstrom, got {d_min!r}")
        unit_cell = gemmi.UnitCell(*[float(x) for x in cell])
        group = gemmi.find_spacegroup_by_name(space_group)
        if group is None:
            raise ValueError(f"space_group: gemmi does not know {space_group!r}")
        operations = group.operations()
        hmax = [int(math.ceil(length / d_min)) + 1 for length in (unit_cell.a, unit_cell.b, unit_cell.c)]
        positions = _unit_cell_positions(operations, atoms) if atoms else None
        rings: dict = {}
        for hkl in product(range(-hmax[0], hmax[0] + 1), range(-hmax[1], hmax[1] + 1),
                           range(-hmax[2], hmax[2] + 1)):
            if hkl == (0, 0, 0) or operations.is_systematically_absent(hkl):
                continue
            d = unit_cell.calculate_d(list(hkl))
            if d < d_min:
                continue
            weight = 1.0
            if positions is not None:
                weight = _structure_factor_squared(positions, hkl, d)
            key = round(d, 7)
            entry = rings.setdefault(key, [d, hkl, 0, 0.0])
            entry[2] += 1
            entry[3] += weight
            if hkl > entry[1]:
                entry[1] = hkl
        entries = sorted(rings.values(), key=lambda e: -e[0])
        if positions is not None:
            largest = max(e[3] for e in entries)
            entries = [e for e in entries if e[3] > 1e-6 * largest]
        intensity = np.array([e[3] for e in entries])
        return cls(name, [e[0] for e in entries], [tuple(int(x) for x in e[1]) for e in entries],
                   [e[2] for e in entries], 100 * intensity / intensity.max() if atoms else None,
                   source)

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None) -> "Calibrant":
        """Read a d-spacing file in pyFAI's ``.D`` format.

        One d-spacing (Angstrom) per line, first column; ``#`` starts a comment; the header
        lines ``# Calibrant: ...`` and ``# Ref: ...`` give the name and the source.

        Example
        -------
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.D"
        >>> _ = path.write_text("# Calibrant: test\\n 3.0 # (1 0 0)\\n1.5\\n")
        >>> Calibrant.from_file(path).d_spacings.tolist()
        [3.0, 1.5]
        """
        path = os.fspath(path)
        d_spacings, hkl, source, title = [], [], "", None
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                text, _, comment = line.partition("#")
                stripped = line.strip()
                if stripped.startswith("#"):
                    header = stripped.lstrip("#").strip()
                    if header.lower().startswith("calibrant:"):
                        title = header.split(":", 1)[1].strip()
                    elif header.lower().startswith("ref:"):
                        source = header.split(":", 1)[1].strip()
                    continue
                if not text.strip():
                    continue
                try:
                    d_spacings.append(float(text.split()[0]))
                except ValueError:
                    raise ValueError(f"{path}: line {number}: expected a d-spacing in Angstrom, "
                                     f"got {text.strip()!r}") from None
                hkl.append(_parse_hkl(comment))
        if not d_spacings:
            raise ValueError(f"{path}: expected d-spacings (one per line), found none")
        if any(h is None for h in hkl):
            hkl = None
        label = name or os.path.splitext(os.path.basename(path))[0]
        return cls(label, d_spacings, hkl, source=source or (title or ""))


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _parse_hkl(comment: str):
    text = comment.strip()
    if text.startswith("(") and ")" in text:
        try:
            return tuple(int(x) for x in text[1:text.index(")")].split())
        except ValueError:
            return None
    return None


def _unit_cell_positions(operations, atoms) -> list:
    """(element, fractional positions (n, 3)) of every atom of the unit cell."""
    import gemmi

    out = []
    for element, xyz in atoms:
        seen = []
        for op in operations:
            p = np.mod(np.asarray(op.apply_to_xyz([float(v) for v in xyz])), 1.0)
            if not any(np.all(np.abs(((p - q) + 0.5) % 1.0 - 0.5) < 1e-6) for q in seen):
                seen.append(p)
        out.append((gemmi.Element(element), np.array(seen)))
    return out


def _structure_factor_squared(positions, hkl, d) -> float:
    """|F(hkl)|^2 with IT92 atomic form factors (no thermal motion)."""
    stol2 = 1.0 / (4.0 * d * d)
    total = 0j
    h = np.asarray(hkl, dtype=np.float64)
    for element, xyz in positions:
        total += element.it92.calculate_sf(stol2) * np.exp(2j * np.pi * (xyz @ h)).sum()
    return float(abs(total) ** 2)


# -- built-in calibrants ----------------------------------------------------------------------------
# (cell, space group, atoms, source). Lattice constants: see doc/calibration.md.
_CUBIC = (90.0, 90.0, 90.0)
_HEXAGONAL = (90.0, 90.0, 120.0)
_DEFINITIONS = {
    "LaB6": ((4.156826,) * 3 + _CUBIC, "P m -3 m", [("La", (0, 0, 0)), ("B", (0.1996, 0.5, 0.5))],
             "NIST SRM 660c certificate: a = 4.156826 A at 22.5 C"),
    "CeO2": ((5.411651,) * 3 + _CUBIC, "F m -3 m", [("Ce", (0, 0, 0)), ("O", (0.25, 0.25, 0.25))],
             "NIST SRM 674b certificate: a = 5.411651 A at 22.5 C"),
    "Si": ((5.431144,) * 3 + _CUBIC, "F d -3 m:1", [("Si", (0, 0, 0))],
           "NIST SRM 640f certificate: a = 5.431144 A at 22.5 C"),
    "Al2O3": ((4.759355, 4.759355, 12.99231) + _HEXAGONAL, "R -3 c:H",
              [("Al", (0, 0, 0.35216)), ("O", (0.30624, 0, 0.25))],
              "NIST SRM 676a certificate (2015): a = 4.759355 A, c = 12.99231 A"),
    "Cr2O3": ((4.9590, 4.9590, 13.5959) + _HEXAGONAL, "R -3 c:H",
              [("Cr", (0, 0, 0.3475)), ("O", (0.3058, 0, 0.25))],
              "NIST SRM 674b (Cr2O3 phase): a = 4.9590 A, c = 13.5959 A"),
    "NaCl": ((5.6401,) * 3 + _CUBIC, "F m -3 m", [("Na", (0, 0, 0)), ("Cl", (0.5, 0.5, 0.5))],
             "Walker et al., American Mineralogist 89 (2004) 204: a = 5.6401 A"),
    "Au": ((4.0782,) * 3 + _CUBIC, "F m -3 m", [("Au", (0, 0, 0))],
           "Maeland & Flanagan, Can. J. Phys. 42 (1964) 2364: a = 4.0782 A"),
    "Ni": ((3.5239,) * 3 + _CUBIC, "F m -3 m", [("Ni", (0, 0, 0))],
           "Taylor, J. Inst. Metals 77 (1950) 585: a = 3.5239 A"),
    "quartz": ((4.9160, 4.9160, 5.4054) + _HEXAGONAL, "P 32 2 1", None,
               "Levien, Prewitt & Weidner, American Mineralogist 65 (1980) 920: a = 4.9160 A, "
               "c = 5.4054 A (space-group absences only)"),
}
#: Silver behenate: a lamellar soap, only the 00l orders of its long spacing.
_AGBH_D001 = 58.380
_AGBH_SOURCE = "Blanton et al., Powder Diffraction 10 (1995) 91; Huang et al., J. Appl. Cryst. 26 (1993) 180: d001 = 58.380 A"
_CACHE: dict = {}


def calibrant_names() -> list:
    """Names of the built-in calibrants.

    Example
    -------
    >>> "LaB6" in calibrant_names()
    True
    """
    return sorted(list(_DEFINITIONS) + ["AgBh"], key=str.lower)


def get_calibrant(name: str | os.PathLike, d_min: float = 0.5) -> Calibrant:
    """A built-in calibrant by name (case-insensitive), or a pyFAI ``.D`` file by path.

    Parameters
    ----------
    name : str or path
        ``"LaB6"``, ``"CeO2"``, ``"Si"``, ``"Al2O3"``, ``"Cr2O3"``, ``"AgBh"``, ``"NaCl"``,
        ``"Au"``, ``"Ni"``, ``"quartz"``; or the path of a ``.D`` file.
    d_min : float
        Smallest d-spacing of the computed list, Angstrom (built-in calibrants).

    Example
    -------
    >>> get_calibrant("ceo2").name
    'CeO2'
    """
    if isinstance(name, Calibrant):
        return name
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"calibrant: expected a name or a .D file path, got {type(name).__name__}")
    text = os.fspath(name)
    if os.path.isfile(text):
        return Calibrant.from_file(text)
    lookup = {key.lower(): key for key in calibrant_names()}
    key = lookup.get(text.lower())
    if key is None:
        raise ValueError(f"calibrant: expected one of {calibrant_names()} or a .D file, got {text!r}")
    cache_key = (key, float(d_min))
    if cache_key not in _CACHE:
        if key == "AgBh":
            orders = np.arange(1, int(_AGBH_D001 / d_min) + 1)
            _CACHE[cache_key] = Calibrant("AgBh", _AGBH_D001 / orders,
                                          [(0, 0, int(n)) for n in orders], source=_AGBH_SOURCE)
        else:
            cell, group, atoms, source = _DEFINITIONS[key]
            _CACHE[cache_key] = Calibrant.from_lattice(key, cell, group, atoms, d_min, source)
    return _CACHE[cache_key]


# -- synthetic images --------------------------------------------------------------------------------
def fake_calibration_image(geometry, calibrant: Calibrant | str, fwhm_deg: float = 0.05,
                           background: float = 10.0, noise: bool = True, *,
                           peak_height: float = 1000.0, spotty: float = 0.0,
                           spots_per_ring: int = 60, beamstop_radius_px: float = 0.0,
                           seed: int | None = 0) -> np.ndarray:
    """A synthetic calibrant image: Gaussian rings over a flat background.

    Parameters
    ----------
    geometry : xreduce.geometry.Geometry
        The (true) geometry; its wavelength must be set.
    calibrant : Calibrant or str
    fwhm_deg : float
        Full width at half maximum of the rings, degrees 2theta.
    background : float
        Flat background level (counts).
    noise : bool
        Poisson noise (the image is then int32 counts, with masked pixels set to -1); without
        noise a float32 image (masked pixels -1).
    peak_height : float
        Height of the strongest ring (counts); rings are scaled by the calibrant's intensities.
    spotty : float
        0 = smooth rings; 1 = textured powder: each ring is made of ``spots_per_ring`` random
        bright arcs (a few degrees wide) and nothing in between; values in between mix both.
    spots_per_ring : int
    beamstop_radius_px : float
        Radius (pixels) of a beam-stop shadow around the direct beam, with its holder arm
        running to the right edge (0 = none).
    seed : int or None
        Random seed of noise and spots.

    Returns
    -------
    numpy.ndarray
        Shape ``geometry.detector.shape``.

    Example
    -------
    >>> from xreduce import get_detector
    >>> from xreduce.geometry import Geometry
    >>> geo = Geometry(0.1, 0.04, 0.04, 0, 0, 0, 1e-10, get_detector("Pilatus 1M").binned(4))
    >>> image = fake_calibration_image(geo, "LaB6", fwhm_deg=0.1)
    >>> image.shape, image.dtype.name
    ((260, 245), 'int32')
    """
    calibrant = get_calibrant(calibrant)
    if geometry.wavelength is None:
        raise ValueError("geometry: a wavelength is needed to place the rings, this one has none")
    fwhm = float(fwhm_deg)
    if not (math.isfinite(fwhm) and fwhm > 0):
        raise ValueError(f"fwhm_deg: expected a positive width in degrees, got {fwhm_deg!r}")
    if not 0.0 <= float(spotty) <= 1.0:
        raise ValueError(f"spotty: expected a number in [0, 1], got {spotty!r}")
    rng = np.random.default_rng(seed)
    tth = geometry.twotheta_array()
    chi = geometry.chi_array()
    sigma = math.radians(fwhm) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    rings = calibrant.two_theta(geometry.wavelength)
    heights = (calibrant.intensity[:rings.size] / 100.0 if calibrant.intensity is not None
               else np.ones(rings.size))
    heights = np.clip(heights, 0.05, None) * float(peak_height)
    image = np.full(tth.shape, float(background))
    low, high = np.nanmin(tth) - 6 * sigma, np.nanmax(tth) + 6 * sigma
    for ring, height in zip(rings, heights):
        if not low <= ring <= high:
            continue
        near = np.abs(tth - ring) < 6 * sigma
        profile = height * np.exp(-0.5 * ((tth[near] - ring) / sigma) ** 2)
        if spotty > 0:
            profile *= (1.0 - spotty) + spotty * _spots(chi[near], rng, spots_per_ring)
        image[near] += profile
    if beamstop_radius_px > 0:
        image *= _beamstop(geometry, float(beamstop_radius_px))
    if noise:
        image = rng.poisson(image).astype(np.int32)
    else:
        image = image.astype(np.float32)
    if geometry.detector.mask is not None:
        image[geometry.detector.mask != 0] = -1
    return image


def _spots(chi: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Random bright arcs along the ring: a sum of narrow von Mises bumps (peak 1)."""
    centres = rng.uniform(-np.pi, np.pi, count)
    widths = np.radians(rng.uniform(0.5, 3.0, count))
    out = np.zeros_like(chi)
    for centre, width in zip(centres, widths):
        out += np.exp((np.cos(chi - centre) - 1.0) / width ** 2)
    return np.minimum(out, 1.0)


def _beamstop(geometry, radius_px: float) -> np.ndarray:
    """Transmission (0.02 in the shadow, 1 elsewhere) of a round beam stop and its arm."""
    rows, cols = geometry.detector.shape
    centre = _beam_centre_px(geometry)
    r, c = np.ogrid[:rows, :cols]
    shadow = (r - centre[0]) ** 2 + (c - centre[1]) ** 2 < radius_px ** 2
    shadow = shadow | ((np.abs(r - centre[0]) < radius_px / 3) & (c > centre[1]))
    return np.where(shadow, 0.02, 1.0)


def _beam_centre_px(geometry) -> tuple:
    """(row, col) in pixel coordinates where the direct beam meets the detector plane."""
    from .calibration.points import beam_centre_px

    return beam_centre_px(geometry)
