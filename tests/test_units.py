"""Units: names, scales (checked against the physics, not against the table), errors."""
import math

import pytest

from xreduce.units import AZIMUTHAL_UNITS, RADIAL_UNITS, Unit, get_unit


@pytest.mark.parametrize("name, scale", [
    ("2th_deg", 180 / math.pi), ("2th_rad", 1.0), ("q_nm^-1", 1.0), ("q_A^-1", 0.1),
    ("r_mm", 1000.0), ("r_m", 1.0), ("d*2_A^-2", 0.01), ("chi_deg", 180 / math.pi),
    ("chi_rad", 1.0),
])
def test_scales(name, scale):
    """1 nm^-1 = 0.1 A^-1, 1 nm^-2 = 0.01 A^-2, 1 m = 1000 mm, 1 rad = 180/pi degrees."""
    unit = get_unit(name)
    assert unit.name == name
    assert unit.scale == pytest.approx(scale, rel=1e-15)
    assert unit.label.startswith("$")


def test_kinds():
    assert set(RADIAL_UNITS) == {"2th_deg", "2th_rad", "q_nm^-1", "q_A^-1", "r_mm", "r_m", "d*2_A^-2"}
    assert set(AZIMUTHAL_UNITS) == {"chi_deg", "chi_rad"}
    assert all(get_unit(n).is_radial for n in RADIAL_UNITS)
    assert not any(get_unit(n).is_radial for n in AZIMUTHAL_UNITS)


def test_case_insensitive_and_passthrough():
    assert get_unit("Q_A^-1") is get_unit("q_a^-1")
    assert get_unit(" 2TH_DEG ").name == "2th_deg"
    unit = get_unit("r_mm")
    assert get_unit(unit) is unit
    assert isinstance(unit, Unit)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown unit 'q_pm\^-1'.*q_nm\^-1.*chi_rad"):
        get_unit("q_pm^-1")


def test_wrong_type():
    with pytest.raises(TypeError, match="unit"):
        get_unit(3)


def test_frozen():
    with pytest.raises(AttributeError):
        get_unit("r_mm").scale = 2.0
