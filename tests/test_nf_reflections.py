"""Reflection lists: known first rings of FCC, BCC, HCP and monoclinic lattices, ring grouping."""
import io

import numpy as np
import pytest

from xreduce.nf.params import GEOMETRY_KEYS, read_parameters
from xreduce.nf.reflections import read_hkls_csv, reflection_list, reflections_from_parameters

WL = 0.172979  # Angstrom (about 71.7 keV)


def _rings(refl):
    """[(d of ring, multiplicity)] in ring order."""
    out = []
    for r in refl.rings:
        sel = refl.ring_nr == r
        out.append((refl.d_A[sel][0], int(sel.sum())))
    return out


def _d_cubic(a, h, k, l):
    return a / np.sqrt(h * h + k * k + l * l)


def test_fcc_first_rings():
    """Fm-3m: 111(8), 200(6), 220(12), 311(24), 222(8), 400(6), 331(24), 420(24)."""
    a = 4.08
    refl = reflection_list(225, (a, a, a, 90, 90, 90), WL, 6000.0, 2500.0)
    want = [((1, 1, 1), 8), ((2, 0, 0), 6), ((2, 2, 0), 12), ((3, 1, 1), 24), ((2, 2, 2), 8),
            ((4, 0, 0), 6), ((3, 3, 1), 24), ((4, 2, 0), 24)]
    got = _rings(refl)[:len(want)]
    for (hkl, mult), (d, m) in zip(want, got):
        assert d == pytest.approx(_d_cubic(a, *hkl), rel=1e-12)
        assert m == mult, hkl
    assert np.all(np.diff(refl.d_A) <= 0)
    np.testing.assert_allclose(np.sin(np.radians(refl.theta_deg)), WL / (2 * refl.d_A), rtol=1e-12)
    np.testing.assert_allclose(refl.radius_um, 6000.0 * np.tan(np.radians(refl.two_theta_deg)),
                               rtol=1e-12)
    assert refl.radius_um.max() <= 2500.0
    np.testing.assert_allclose(1 / np.linalg.norm(refl.g, axis=1), refl.d_A, rtol=1e-12)


def test_bcc_first_rings():
    """Im-3m: 110(12), 200(6), 211(24), 220(12), 310(24), 222(8), 321(48)."""
    a = 2.87
    refl = reflection_list(229, (a, a, a, 90, 90, 90), WL, 6000.0, 3000.0)
    want = [((1, 1, 0), 12), ((2, 0, 0), 6), ((2, 1, 1), 24), ((2, 2, 0), 12), ((3, 1, 0), 24),
            ((2, 2, 2), 8), ((3, 2, 1), 48)]
    for (hkl, mult), (d, m) in zip(want, _rings(refl)):
        assert d == pytest.approx(_d_cubic(a, *hkl), rel=1e-12)
        assert m == mult, hkl


def test_hcp_first_rings():
    """P6_3/mmc (Ti): 100(6), 002(2), 101(12), 102(12), 110(6), 103(12), 200(6), 112(12),
    201(12); 001 and 111 are absent (l odd for 00l and hhl)."""
    a, c = 2.95, 4.68
    refl = reflection_list(194, (a, a, c, 90, 90, 120), WL, 6000.0, 2500.0)

    def d_hex(h, k, l):
        return 1 / np.sqrt(4 / 3 * (h * h + h * k + k * k) / a**2 + l * l / c**2)

    want = [((1, 0, 0), 6), ((0, 0, 2), 2), ((1, 0, 1), 12), ((1, 0, 2), 12), ((1, 1, 0), 6),
            ((1, 0, 3), 12), ((2, 0, 0), 6), ((1, 1, 2), 12), ((2, 0, 1), 12)]
    for (hkl, mult), (d, m) in zip(want, _rings(refl)):
        assert d == pytest.approx(d_hex(*hkl), rel=1e-12)
        assert m == mult, hkl
    listed = {tuple(h) for h in refl.hkl.tolist()}
    assert (0, 0, 1) not in listed and (1, 1, 1) not in listed and (0, 0, 2) in listed


def test_monoclinic_p21c():
    """P2_1/c (14, unique axis b): 0k0 needs k even, h0l needs l even; general hkl all present."""
    lat = (5.1, 6.2, 7.3, 90, 103, 90)
    refl = reflection_list(14, lat, WL, 6000.0, 1500.0)
    listed = {tuple(h) for h in refl.hkl.tolist()}
    for absent in [(0, 1, 0), (0, 3, 0), (1, 0, 1), (2, 0, 1), (0, 0, 1)]:
        assert absent not in listed
    for present in [(0, 2, 0), (1, 0, 0), (1, 0, 2), (1, 1, 1), (0, 1, 1), (1, 1, 0), (-1, 0, 2)]:
        assert present in listed
    # d(102) != d(-102) in monoclinic: they are different rings
    d = dict(zip(map(tuple, refl.hkl.tolist()), refl.d_A))
    assert abs(d[(1, 0, 2)] - d[(-1, 0, 2)]) > 1e-3


def test_ring_grouping_tolerance():
    """Reflections closer than 1e-4 A share a ring; 2e-4 A apart they do not."""
    merged = reflection_list(123, (4.0, 4.0, 4.00005, 90, 90, 90), WL, 6000.0, 500.0)
    assert merged.ring_nr[0] == merged.ring_nr[5] == 1  # 100 family and 001 together: 6 members
    assert np.sum(merged.ring_nr == 1) == 6
    split = reflection_list(123, (4.0, 4.0, 4.0002, 90, 90, 90), WL, 6000.0, 500.0)
    assert np.sum(split.ring_nr == 1) == 2 and np.sum(split.ring_nr == 2) == 4


def test_rings_to_use_and_csv_round_trip(tmp_path):
    refl = reflection_list(225, (4.08, 4.08, 4.08, 90, 90, 90), WL, 6000.0, 2000.0)
    sub = refl.select_rings([2, 4])
    assert set(sub.ring_nr.tolist()) == {2, 4} and len(sub) == 6 + 24
    with pytest.raises(ValueError, match=r"ring number\(s\) \[99\]"):
        refl.select_rings([99])
    refl.write_csv(tmp_path / "hkls.csv")
    assert (tmp_path / "hkls.csv").read_text().splitlines()[0] == \
        "h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius"
    back = read_hkls_csv(tmp_path / "hkls.csv")
    np.testing.assert_array_equal(back.hkl, refl.hkl)
    np.testing.assert_array_equal(back.ring_nr, refl.ring_nr)
    np.testing.assert_allclose(back.g, refl.g, atol=1e-9)
    np.testing.assert_allclose(back.radius_um, refl.radius_um, atol=1e-5)
    with pytest.raises(ValueError, match="wavelength_A"):
        reflection_list(225, (4.08, 4.08, 4.08, 90, 90, 90), -1.0, 6000.0, 2000.0)


def test_from_parameters():
    text = "\n".join([
        "nDistances 2", "Lsd 5000", "Lsd 7000", "BC 1024 20", "BC 1024 20", "px 1.48",
        "Wavelength 0.172979", "SpaceGroup 225", "LatticeParameter 4.08 4.08 4.08 90 90 90",
        "OmegaStart 180", "OmegaStep -0.25", "OmegaRange -180 180",
        "BoxSize -1000 1000 -1000 1000", "MaxRingRad 2000", "RingsToUse 1", "RingsToUse 3",
    ])
    p = read_parameters(io.StringIO(text), required=GEOMETRY_KEYS)
    refl = reflections_from_parameters(p)
    assert refl.lsd_um == 7000.0
    assert set(refl.ring_nr.tolist()) == {1, 3}


@pytest.mark.parametrize("body, pattern", [
    ("x y z\n", "does not start with the hkls.csv header"),
    ("{h}\n1 1 1 2.3 1 0.1 0.1 0.1 2 4 200\n1 1 1 nan 1 0 0 0 0 0 0\n", "NaN or infinite"),
    ("{h}\n1 1 1 2.3 1 0.1 0.1 0.1 2 4\n", "expected 11 columns"),
    ("{h}\n1 1 1.5 2.3 1 0.1 0.1 0.1 2 4 200\n", "whole numbers"),
    ("{h}\n1 1 1 -2.3 1 0.1 0.1 0.1 2 4 200\n", "D-spacing must be > 0"),
    ("{h}\n1 1 1 abc 1 0.1 0.1 0.1 2 4 200\n", "rows must be numbers"),
])
def test_crafted_hkls_csv_is_refused_naming_the_file(tmp_path, body, pattern):
    from xreduce.nf.reflections import HKLS_CSV_HEADER

    path = tmp_path / "hkls.csv"
    path.write_text(body.format(h=HKLS_CSV_HEADER))
    with pytest.raises(ValueError, match=pattern) as info:
        read_hkls_csv(path)
    assert "hkls.csv" in str(info.value)
