"""Radial and azimuthal units: names users type, their scale from SI and their plot labels.

Internally every radial quantity is kept in one SI form per family (2theta in radians,
q in nm^-1, r in metres, d*^2 in nm^-2); a :class:`Unit` says how to scale it for display.

Example
-------
>>> from xreduce.units import get_unit
>>> u = get_unit("Q_A^-1")
>>> u.name, u.quantity, u.scale
('q_A^-1', 'q', 0.1)
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    """A radial or azimuthal unit.

    Attributes
    ----------
    name : str
        Canonical name, e.g. ``"q_nm^-1"``.
    kind : str
        ``"radial"`` or ``"azimuthal"``.
    label : str
        Label for plots (matplotlib mathtext).
    scale : float
        Factor from the internal quantity to this unit: ``value_in_unit = internal * scale``.
        Internal quantities: 2theta and chi in radians, q in nm^-1, r in metres, d*^2 in nm^-2.
    quantity : str
        The physical quantity: ``"2th"``, ``"q"``, ``"r"``, ``"d*2"`` or ``"chi"``.
    """

    name: str
    kind: str
    label: str
    scale: float
    quantity: str

    def __str__(self) -> str:
        """The name, as pyFAI prints its units (``print(res.unit)`` gives ``2th_deg``)."""
        return self.name

    @property
    def is_radial(self) -> bool:
        """True for a radial unit (2theta, q, r, d*^2)."""
        return self.kind == "radial"


_UNITS = (
    Unit("2th_deg", "radial", r"$2\theta$ ($^{o}$)", 180.0 / math.pi, "2th"),
    Unit("2th_rad", "radial", r"$2\theta$ (rad)", 1.0, "2th"),
    Unit("q_nm^-1", "radial", r"$q$ (nm$^{-1}$)", 1.0, "q"),
    Unit("q_A^-1", "radial", r"$q$ ($\AA^{-1}$)", 0.1, "q"),
    Unit("r_mm", "radial", r"$r$ (mm)", 1000.0, "r"),
    Unit("r_m", "radial", r"$r$ (m)", 1.0, "r"),
    Unit("d*2_A^-2", "radial", r"$d^{*2}$ ($\AA^{-2}$)", 0.01, "d*2"),
    Unit("chi_deg", "azimuthal", r"$\chi$ ($^{o}$)", 180.0 / math.pi, "chi"),
    Unit("chi_rad", "azimuthal", r"$\chi$ (rad)", 1.0, "chi"),
)
_BY_NAME = {u.name.lower(): u for u in _UNITS}

RADIAL_UNITS = tuple(u.name for u in _UNITS if u.kind == "radial")
AZIMUTHAL_UNITS = tuple(u.name for u in _UNITS if u.kind == "azimuthal")


def get_unit(name: str | Unit) -> Unit:
    """Return the :class:`Unit` called ``name`` (case-insensitive); a Unit passes through.

    Parameters
    ----------
    name : str or Unit
        One of ``2th_deg, 2th_rad, q_nm^-1, q_A^-1, r_mm, r_m, d*2_A^-2, chi_deg, chi_rad``.

    Returns
    -------
    Unit

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid names).
    TypeError
        ``name`` is neither a string nor a Unit.

    Example
    -------
    >>> get_unit("2TH_DEG").scale  # doctest: +ELLIPSIS
    57.29577951...
    """
    if isinstance(name, Unit):
        return name
    if not isinstance(name, str):
        raise TypeError(f"unit: expected a unit name (str) or Unit, got {type(name).__name__}")
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        valid = ", ".join(u.name for u in _UNITS)
        raise ValueError(f"unit: unknown unit {name!r}; valid units are {valid}") from None
