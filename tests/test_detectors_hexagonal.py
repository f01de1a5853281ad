"""Hexagonal pixels (Pixirad): geometry, pixel splitting and integration (issue 15).

A hexagonal pixel is a polygon of 6 corners; the pixel-splitting kernel clips any polygon of
3-8 corners, so no split, bbox, pseudo and full split are all exact. Checked against the
one-pixel-at-a-time NumPy reference (tests/reference.py), against an independent construction
(a hexagon cut into two quadrilaterals whose full splits are merged in proportion to their
areas), and against pyFAI 2026.9's Pixirad detectors where pyFAI integrates them.
"""
import numpy as np
import pytest
from scipy.sparse import csr_matrix

import reference
from xreduce.detectors import Detector, hexagonal_pixel_corners
from xreduce.geometry import Geometry, rotation_matrix
from xreduce.sparse import build_csr, build_csr_from_arrays

PITCH = 60e-6
HEIGHT = PITCH * np.sqrt(3) / 2


def hex_geometry(shape=(9, 11), poni=(2.6e-4, 3.1e-4)):
    """A small hexagonal detector with the beam on it (pixels all round the chi seam)."""
    det = Detector(HEIGHT, PITCH, shape, corners=hexagonal_pixel_corners(shape, PITCH),
                   name="hex test")
    return Geometry(0.002, poni[0], poni[1], 0.03, -0.02, 0.1, 1e-10, det)


def test_hexagonal_corners_tile_the_plane():
    """Regular hexagons of the pitch: equal areas sqrt(3)/2 pitch^2, neighbours one pitch
    apart, corners shared with the neighbours (no gap, no overlap)."""
    c = hexagonal_pixel_corners((4, 5), PITCH)[..., :2]
    area = 0.5 * np.abs(np.sum(c[..., 0] * np.roll(c[..., 1], -1, axis=-1)
                               - np.roll(c[..., 0], -1, axis=-1) * c[..., 1], axis=-1))
    np.testing.assert_allclose(area, np.sqrt(3) / 2 * PITCH**2, rtol=1e-12)
    centre = c.mean(axis=2)
    np.testing.assert_allclose(np.diff(centre[..., 1], axis=1), PITCH, rtol=1e-12)
    np.testing.assert_allclose(np.hypot(*(centre[1, 0] - centre[0, 0])), PITCH, rtol=1e-12)
    # pixel (0, 0) and its right neighbour share a side; (1, 0) sits under both
    np.testing.assert_allclose(c[0, 0, [1, 2]], c[0, 1, [5, 4]], atol=1e-18)
    np.testing.assert_allclose(c[1, 0, 0], c[0, 0, 2], atol=1e-18)
    np.testing.assert_allclose(c[1, 0, 5], c[0, 0, 3], atol=1e-18)


def test_detector_accepts_polygon_pixels_and_refuses_bad_corners():
    corners = hexagonal_pixel_corners((3, 4), PITCH)
    det = Detector(HEIGHT, PITCH, (3, 4), corners=corners)
    assert det.corners.shape == (3, 4, 6, 3) and not det.is_flat
    with pytest.raises(ValueError, match="corners per pixel"):
        Detector(HEIGHT, PITCH, (3, 4), corners=np.zeros((3, 4, 2, 3)))
    with pytest.raises(ValueError, match="corners per pixel"):
        Detector(HEIGHT, PITCH, (3, 4), corners=np.zeros((3, 4, 9, 3)))
    with pytest.raises(ValueError, match="pitch_m"):
        hexagonal_pixel_corners((3, 4), -1.0)
    with pytest.raises(ValueError, match="corners must have shape"):
        build_csr_from_arrays(np.zeros((5, 9, 2)), None, 4, split="full")


def test_geometry_of_hexagonal_pixels():
    """Corner arrays have 6 corners; a pixel's centre is the mean of its corners (the centroid
    of a regular hexagon), and its 2theta equals the one computed from that point directly."""
    g = hex_geometry()
    corners = g.corner_array("2th_deg")
    assert corners.shape == (9, 11, 6, 2)
    centre = g.detector.corners.mean(axis=2)
    # 2theta of the centroid, by hand: rotate the point and take the angle to the beam
    d1 = centre[..., 0] - g.poni1
    d2 = centre[..., 1] - g.poni2
    xyz = np.stack([d1, d2, np.full_like(d1, g.dist)], axis=-1) @ rotation_matrix(
        g.rot1, g.rot2, g.rot3).T
    expected = np.degrees(np.arctan2(np.hypot(xyz[..., 0], xyz[..., 1]), xyz[..., 2]))
    np.testing.assert_allclose(g.center_array("2th_deg"), expected, rtol=1e-12, atol=1e-12)


def _split_cases():
    for split in ("no", "bbox", "pseudo", "full"):
        for npt_azim in (None, 8):
            yield split, npt_azim


@pytest.mark.parametrize("split,npt_azim", list(_split_cases()))
def test_hexagonal_split_matches_the_reference(split, npt_azim):
    """Every scheme, 1D and 2D, equals the one-pixel-at-a-time NumPy reference (float64
    coefficients: 1e-12), beam centre and chi seam included."""
    g = hex_geometry()
    m = build_csr(g, 14, npt_azim, unit="2th_deg", split=split, dtype=np.float64,
                  compact=False)
    corners = g.corner_array("2th_deg").reshape(-1, 6, 2)
    centres = np.stack([g.center_array("2th_deg").reshape(-1), g.chi_array().reshape(-1)], 1)
    expected = reference.split_matrix_dense(corners, centres, split, m.radial_edges,
                                            m.azimuthal_edges)
    np.testing.assert_allclose(m.to_scipy().toarray(), expected, atol=1e-12)
    if split != "no":
        inside = expected.sum(axis=0)
        assert np.count_nonzero(np.abs(inside - 1) < 1e-9) > 0.9 * inside.size


@pytest.mark.parametrize("npt_azim", [None, 12])
def test_hexagon_full_split_equals_its_two_halves_merged_by_area(npt_azim):
    """An independent construction: cut each hexagon along its long diagonal (corners 0-3)
    into two quadrilaterals, split each exactly with the 4-corner kernel, and merge the two
    columns with weights proportional to their areas in (2theta, chi). That is the hexagon's
    exact area split; float64 coefficients agree to 1e-12."""
    g = hex_geometry(shape=(8, 10), poni=(6e-4, 6e-4))     # beam off the pixels
    corners = g.corner_array("2th_deg").reshape(-1, 6, 2)
    ours = build_csr(g, 20, npt_azim, unit="2th_deg", split="full", dtype=np.float64)
    halves = (corners[:, [0, 1, 2, 3]], corners[:, [3, 4, 5, 0]])
    area = [0.5 * np.abs(np.sum(h[..., 0] * np.roll(h[..., 1], -1, axis=1)
                                - np.roll(h[..., 0], -1, axis=1) * h[..., 1], axis=1))
            for h in halves]
    merged = 0
    for half, weight in zip(halves, (area[0] / (area[0] + area[1]),
                                     area[1] / (area[0] + area[1]))):
        part = build_csr_from_arrays(half, None, 20, npt_azim, "full",
                                     (ours.radial_edges[0], ours.radial_edges[-1]),
                                     dtype=np.float64)
        merged = merged + part.to_scipy() @ csr_matrix(np.diag(weight))
    np.testing.assert_allclose(ours.to_scipy().toarray(), merged.toarray(), atol=1e-12)
    # on the detector the halves have equal areas; mapped to (2theta, chi) this close to the
    # beam they do not, which is why the weights are their areas there and not 1/2
    flat = g.detector.corners[..., :2].reshape(-1, 6, 2)
    flat_area = [0.5 * np.abs(np.sum(h[..., 0] * np.roll(h[..., 1], -1, axis=1)
                                     - np.roll(h[..., 0], -1, axis=1) * h[..., 1], axis=1))
                 for h in (flat[:, [0, 1, 2, 3]], flat[:, [3, 4, 5, 0]])]
    np.testing.assert_allclose(flat_area[0], flat_area[1], rtol=1e-9)
    assert abs(area[0] / area[1] - 1).max() > 0.01


def test_hexagonal_integration_conserves_and_agrees_between_schemes():
    """A flat frame integrated with each scheme: the mean stays 1 in every bin fully inside
    the detector, the totals equal the pixel count."""
    from xreduce.integrator import AzimuthalIntegrator

    g = hex_geometry(shape=(40, 44), poni=(1.1e-3, 1.3e-3))
    ai = AzimuthalIntegrator(g)
    frame = np.ones(g.detector.shape, np.float32)
    for split in ("no", "bbox", "full"):
        res = ai.integrate1d(frame, 30, unit="2th_deg", method=(split, "csr", "cython"),
                             correct_solid_angle=False)
        np.testing.assert_allclose(res.intensity[res.count > 0], 1.0, rtol=1e-5)
        np.testing.assert_allclose(res.count.sum(), frame.size, rtol=1e-5)


# ----------------------------------------------------------------------------- pyFAI

def _pixirad_geometry(pyfai_name="Pixirad1"):
    detectors = pytest.importorskip("pyFAI.detectors")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    theirs = AzimuthalIntegrator(dist=0.08, poni1=0.011, poni2=0.014, rot1=0.02, rot2=-0.01,
                                 rot3=0.0, wavelength=1e-10,
                                 detector=detectors.detector_factory(pyfai_name))
    return theirs, Geometry.from_pyfai(theirs)


def test_pixirad_from_pyfai_has_pyfais_corners():
    """Pixirad1 through pyFAI: 6 corners per pixel, the positions of pyFAI's corners (which
    pyFAI keeps in float32), our own Pixirad layout to float32 precision, and 2theta
    and chi at every corner equal to pyFAI's corner array (1e-6 relative: float32 corners)."""
    theirs, ours = _pixirad_geometry()
    det = ours.detector
    assert det.shape == (476, 512) and det.corners.shape == (476, 512, 6, 3)
    assert (det.pixel1, det.pixel2) == (theirs.detector.pixel1, theirs.detector.pixel2)
    zyx = theirs.detector.get_pixel_corners()
    np.testing.assert_array_equal(det.corners[..., 0], zyx[..., 1])
    np.testing.assert_array_equal(det.corners[..., 1], zyx[..., 2])
    np.testing.assert_allclose(det.corners, hexagonal_pixel_corners(det.shape, PITCH),
                               rtol=2e-7, atol=1e-12)
    their_corners = theirs.array_from_unit(typ="corner", unit="2th_deg")
    sample = (slice(None, None, 7), slice(None, None, 5))
    np.testing.assert_allclose(ours.corner_array("2th_deg")[sample][..., 0],
                               their_corners[sample][..., 0], rtol=1e-6)
    np.testing.assert_allclose(ours.corner_array("2th_deg")[sample][..., 1],
                               their_corners[sample][..., 1], atol=1e-6)


def test_pyfai_places_a_hexagon_centre_a_quarter_pitch_off():
    """pyFAI's pixel centre is the bilinear middle of the first four corners, which for a
    hexagon lies pitch/4 off its centre along the fast axis (doc/detectors.md). Ours is the
    centroid. Measured here so that the difference stays known."""
    theirs, ours = _pixirad_geometry()
    p1, p2, _ = theirs.detector.calc_cartesian_positions()
    centroid = ours.detector.corners.mean(axis=2)
    # pyFAI's positions are float32: 2e-9 m is a few of their ulps at 30 mm
    np.testing.assert_allclose(p1, centroid[..., 0], atol=2e-9)
    np.testing.assert_allclose(p2 - centroid[..., 1], PITCH / 4, atol=2e-9)


@pytest.mark.parametrize("npt_azim", [None, 36])
def test_pixirad_no_split_integration_equals_pyfais(npt_azim):
    """A Pixirad1 frame integrated without splitting, ours against pyFAI's integrate1d /
    integrate2d (no split, CSR). pyFAI's centres sit pitch/4 off the hexagon centres (see
    above), so ours is given the same centres: the hexagons moved by pitch/4 along the fast
    axis. Then the pixels land in the same bins (but for a few within pyFAI's float32 rounding
    of a bin edge): intensities agree to 1e-5 relative (float32 accumulation in pyFAI) on the
    bins with > 10 pixels and the same count."""
    from xreduce.integrator import AzimuthalIntegrator

    theirs, ours = _pixirad_geometry()
    shifted = np.array(ours.detector.corners)
    shifted[..., 1] += PITCH / 4
    det = Detector(ours.detector.pixel1, ours.detector.pixel2, ours.detector.shape,
                   corners=shifted, name="Pixirad1")
    ours = ours.with_(detector=det)
    frame = np.random.default_rng(5).poisson(200, det.shape).astype(np.float32)
    ai = AzimuthalIntegrator(ours)
    # ranges that hold every pixel from the low end: pyFAI's first bin would otherwise also
    # take the pixels up to one bin below an explicit range (doc/integration.md)
    radial_range, azimuth_range = (0.0, 14.0), (-180.0, 180.0)
    if npt_azim is None:
        their = theirs.integrate1d(frame, 200, unit="2th_deg", method=("no", "csr", "cython"),
                                   correctSolidAngle=False, radial_range=radial_range)
        mine = ai.integrate1d(frame, 200, unit="2th_deg", method=("no", "csr", "cython"),
                              correct_solid_angle=False, radial_range=radial_range)
    else:
        their = theirs.integrate2d(frame, 60, npt_azim, unit="2th_deg",
                                   method=("no", "csr", "cython"), correctSolidAngle=False,
                                   radial_range=radial_range, azimuth_range=azimuth_range)
        mine = ai.integrate2d(frame, 60, npt_azim, unit="2th_deg",
                              method=("no", "csr", "cython"), correct_solid_angle=False,
                              radial_range=radial_range, azimuth_range=azimuth_range)
    np.testing.assert_allclose(mine.radial, their.radial, rtol=1e-6)   # pyFAI: float32
    ours_count, count = np.asarray(mine.count), np.asarray(their.count)
    # pyFAI's pixel positions are float32: a pixel within ~1e-7 of a bin edge may fall on
    # the other side there, so a few bins differ by one pixel, none by more
    moved = ours_count != count
    assert np.abs(ours_count - count).max() <= 1 and moved.mean() < 0.05
    same = ~moved & (count > 10)
    assert same.sum() > 0.5 * count.size if npt_azim is None else same.sum() > 200
    np.testing.assert_allclose(np.asarray(mine.intensity)[same],
                               np.asarray(their.intensity)[same], rtol=1e-5)


def test_to_pyfai_needs_pyfais_own_corners():
    """A detector with explicit corners goes to pyFAI only as pyFAI's detector of the same
    name and corners; our test hexagons (no pyFAI class) are refused with a clear error."""
    pytest.importorskip("pyFAI")
    with pytest.raises(ValueError, match="corners"):
        hex_geometry().detector.to_pyfai()
