"""Calibrants: d-spacings from lattice + space group (gemmi), pyFAI .D files, synthetic images."""
import math
import os

import numpy as np
import pytest

from xreduce.calibrant import (Calibrant, calibrant_names, energy_to_wavelength,
                               fake_calibration_image, get_calibrant)
from xreduce.detectors import Detector
from xreduce.geometry import Geometry


def _pyfai_file(name):
    pyFAI_calibrant = pytest.importorskip("pyFAI.calibrant")
    path = os.path.join(os.path.dirname(pyFAI_calibrant.__file__), "resources", "calibration",
                        name + ".D")
    if not os.path.exists(path):
        pytest.skip(f"pyFAI has no {name}.D here")
    return path


@pytest.mark.parametrize("ours, theirs", [("LaB6", "LaB6_SRM660c"), ("CeO2", "CeO2"),
                                          ("Al2O3", "alpha_Al2O3_SRM676a_2015"), ("NaCl", "NaCl"),
                                          ("Au", "Au")])
def test_d_spacings_match_pyfai_files(ours, theirs):
    # pyFAI's files are computed from the same certified lattice constants; they print 8
    # decimals, so the agreement is to about 1e-8 relative.
    theirs = Calibrant.from_file(_pyfai_file(theirs))
    ours = get_calibrant(ours, d_min=1.0)
    expected = theirs.d_spacings[theirs.d_spacings >= 1.0]
    assert len(ours) == expected.size
    np.testing.assert_allclose(ours.d_spacings, expected, rtol=2e-8)


def test_silicon_structure_factor_extinctions():
    si = get_calibrant("Si", d_min=1.0)
    # diamond structure: h, k, l all odd, or all even with h + k + l = 4n
    assert si.hkl[:5] == [(1, 1, 1), (2, 2, 0), (3, 1, 1), (4, 0, 0), (3, 3, 1)]
    a = 5.431144
    np.testing.assert_allclose(si.d_spacings[:3], a / np.sqrt([3, 8, 11]), rtol=1e-12)
    assert si.source.startswith("NIST SRM 640f")


def test_every_builtin_calibrant_builds():
    for name in calibrant_names():
        c = get_calibrant(name, d_min=1.0)
        assert len(c) >= 3 and np.all(np.diff(c.d_spacings) < 0), name
        assert c.source, name


def test_from_file_reads_pyfai_format(tmp_path):
    path = tmp_path / "mine.D"
    path.write_text("# Calibrant: Mine\n# Ref: a test\n\n  3.5 # (1 0 0) 6 100\n2.0\n  # tail\n")
    c = Calibrant.from_file(path)
    assert c.d_spacings.tolist() == [3.5, 2.0] and c.source == "a test" and c.hkl is None
    assert get_calibrant(str(path)).d_spacings.tolist() == [3.5, 2.0]
    bad = tmp_path / "bad.D"
    bad.write_text("3.0\nnot-a-number\n")
    with pytest.raises(ValueError, match="line 2"):
        Calibrant.from_file(bad)
    empty = tmp_path / "empty.D"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="found none"):
        Calibrant.from_file(empty)


def test_two_theta_is_bragg():
    c = Calibrant("x", [4.0, 2.0, 0.4])
    tth = c.two_theta(1e-10)
    assert tth.size == 2  # 0.4 A is out of reach of 1 A (lambda > 2 d)
    np.testing.assert_allclose(np.sin(tth / 2), [1 / 8, 1 / 4], rtol=1e-14)
    np.testing.assert_allclose(energy_to_wavelength(12.398419843320026), 1e-10, rtol=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1e-10, 1.0, float("nan")])
def test_two_theta_rejects_bad_wavelength(bad):
    with pytest.raises(ValueError, match="wavelength"):
        get_calibrant("LaB6").two_theta(bad)


def test_unknown_calibrant_names_the_choices():
    with pytest.raises(ValueError, match="LaB6"):
        get_calibrant("unobtainium")
    with pytest.raises(TypeError):
        get_calibrant(3.0)


def test_fake_image_rings_where_bragg_says():
    det = Detector(1e-4, 1e-4, (200, 200))
    geo = Geometry(0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-10, det)
    cal = Calibrant("x", [2.0])
    image = fake_calibration_image(geo, cal, fwhm_deg=0.2, background=5.0, noise=False)
    tth = geo.twotheta_array()
    ring = cal.two_theta(1e-10)[0]
    near = np.abs(tth - ring) < math.radians(0.02)
    far = np.abs(tth - ring) > math.radians(1.0)
    assert image.dtype == np.float32
    assert image[near].min() > 900 and np.allclose(image[far], 5.0)


def test_fake_image_options():
    det = Detector(1e-4, 1e-4, (120, 120), mask=np.eye(120, dtype=np.uint8))
    geo = Geometry(0.03, 0.006, 0.006, 0.0, 0.0, 0.0, 1e-10, det)
    image = fake_calibration_image(geo, "LaB6", fwhm_deg=0.3, spotty=1.0, spots_per_ring=5,
                                   beamstop_radius_px=10, seed=1)
    assert image.dtype == np.int32
    assert np.all(image[np.eye(120, dtype=bool)] == -1)
    assert image[55:65, 55:65].max() < 5  # beam-stop shadow (beam at pixel 59.5, 59.5)
    smooth = fake_calibration_image(geo, "LaB6", fwhm_deg=0.3, noise=False)
    spotty = fake_calibration_image(geo, "LaB6", fwhm_deg=0.3, noise=False, spotty=1.0,
                                    spots_per_ring=5)
    assert (spotty - 10).sum() < 0.6 * (smooth - 10).sum()  # most of each ring is gone
    with pytest.raises(ValueError, match="spotty"):
        fake_calibration_image(geo, "LaB6", spotty=2.0)
    with pytest.raises(ValueError, match="fwhm_deg"):
        fake_calibration_image(geo, "LaB6", fwhm_deg=0.0)
