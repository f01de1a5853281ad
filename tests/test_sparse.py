"""Sparse pixel-splitting matrix builder (xreduce.sparse, kernel xreduce.ext.csr_builder).

The kernel is compared coefficient by coefficient with the slow per-pixel, per-bin reference in
tests/reference.py on a small detector with large tilts (20, 16 and 34 degrees) whose beam centre
lies on it (so pixels straddle the chi discontinuity). Tolerance 1e-9: both compute in float64 in
pixel-local coordinates; what differs is only the order of operations and bin edges computed as
``r0 + i * dr`` versus ``numpy.linspace`` (a few 1e-16 relative to the pixel size).
"""
import numpy as np
import pytest
from scipy.sparse import csr_matrix

import reference
from xreduce.ext import csr_builder
from xreduce.sparse import CsrMatrix, build_csr, build_csr_from_arrays

SPLITS_WITH_AREA = ("bbox", "pseudo", "full")


def tilted_detector(shape=(24, 20), pixel_m=1e-3, dist_m=0.05, poni1_m=0.0306, poni2_m=0.0299,
                    rot1=0.35, rot2=-0.28, rot3=0.6):
    """2theta (degrees) and chi (radians) at pixel corners and centres, from the PONI formulas.

    Returns corners (rows, cols, 4, 2) with corner offsets (0,0), (1,0), (1,1), (0,1) in (slow,
    fast), and centres (rows, cols, 2).
    """
    c1, c2, c3 = np.cos([rot1, rot2, rot3])
    s1, s2, s3 = np.sin([rot1, rot2, rot3])

    def tth_chi(d1, d2):
        rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        p1 = (rows + d1) * pixel_m - poni1_m
        p2 = (cols + d2) * pixel_m - poni2_m
        L = dist_m
        t1 = p1 * c2 * c3 + p2 * (c3 * s1 * s2 - c1 * s3) - L * (c1 * c3 * s2 + s1 * s3)
        t2 = p1 * c2 * s3 + p2 * (c1 * c3 + s1 * s2 * s3) - L * (c1 * s2 * s3 - c3 * s1)
        t3 = p1 * s2 - p2 * c2 * s1 + L * c1 * c2
        return np.stack([np.degrees(np.arctan2(np.hypot(t1, t2), t3)), np.arctan2(t1, t2)], -1)

    corners = np.stack([tth_chi(d1, d2) for d1, d2 in ((0, 0), (1, 0), (1, 1), (0, 1))], axis=2)
    return corners, tth_chi(0.5, 0.5)


@pytest.fixture(scope="module")
def detector():
    corners, centers = tilted_detector()
    return corners.reshape(-1, 4, 2), centers.reshape(-1, 2)


def dense(matrix: CsrMatrix) -> np.ndarray:
    return matrix.to_scipy().toarray().astype(np.float64)


def straddling_pixels(corners):
    """Pixels whose corners' chi span more than pi (across the +-pi discontinuity)."""
    chi = corners[:, :, 1]
    return np.flatnonzero(chi.max(axis=1) - chi.min(axis=1) > np.pi)


def test_detector_covers_the_discontinuity_and_beam_centre(detector):
    """Guard for the tests below: the synthetic detector must exercise the chi wrap."""
    corners, _ = detector
    straddling = straddling_pixels(corners)
    assert len(straddling) >= 5
    assert len(beam_centre_pixels(corners)) == 1


@pytest.mark.parametrize("split", ["no", "bbox", "pseudo", "full"])
@pytest.mark.parametrize("npt_azim", [None, 16])
@pytest.mark.parametrize("ranges", ["default", "restricted"])
def test_coefficients_match_reference(detector, split, npt_azim, ranges):
    """Every coefficient agrees with the per-pixel, per-bin reference to 1e-9 (float64 data),
    1D and 2D, default and restricted ranges (restricted: parts outside are dropped)."""
    corners, centers = detector
    mask = np.zeros(len(corners), np.uint8)
    mask[::7] = 1
    radial_range = (4.0, 12.0) if ranges == "restricted" else None
    azimuth_deg = (-150.0, 170.0) if ranges == "restricted" else None
    m = build_csr((corners, centers), 30, npt_azim, split=split, radial_range=radial_range,
                  azimuth_range=azimuth_deg, mask=mask, dtype=np.float64, compact=False)
    azimuthal_edges = m.azimuthal_edges
    if npt_azim is not None:
        lo, hi = np.deg2rad(azimuth_deg) if azimuth_deg else (-np.pi, np.pi)
        assert np.allclose(azimuthal_edges, np.linspace(lo, hi, npt_azim + 1), atol=1e-15)
    expected = reference.split_matrix_dense(
        corners, centers, split, m.radial_edges, azimuthal_edges,
        azimuth_range_rad=None if azimuth_deg is None else np.deg2rad(azimuth_deg), mask=mask)
    got = dense(m)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert m.data.min() > 0  # no stored zeros


@pytest.mark.parametrize("split", SPLITS_WITH_AREA)
@pytest.mark.parametrize("npt_azim", [None, 1, 7, 36])
@pytest.mark.parametrize("chi_at_pi", [True, False])
def test_counts_conserved(detector, split, npt_azim, chi_at_pi):
    """With the default (full) ranges each valid pixel is shared out whole: the coefficients
    sum to the number of unmasked pixels to 1e-9 relative."""
    corners, _ = detector
    mask = np.zeros(len(corners), np.uint8)
    mask[5:40] = 1
    m = build_csr_from_arrays(corners, None, 25, npt_azim, split, mask=mask,
                              chi_discontinuity_at_pi=chi_at_pi, dtype=np.float64)
    np.testing.assert_allclose(m.data.sum(), np.count_nonzero(mask == 0), rtol=1e-9)
    per_pixel = np.bincount(m.indices, weights=m.data, minlength=len(corners))
    np.testing.assert_allclose(per_pixel[mask == 0], 1.0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("split", SPLITS_WITH_AREA)
def test_chi_wrap_splits_across_not_around(detector, split):
    """A pixel straddling +-pi (not the beam-centre one) lands in the first and last azimuthal
    bins only, never smeared over the circle, and keeps its whole weight."""
    corners, _ = detector
    npt_azim = 36
    m = build_csr_from_arrays(corners, None, 20, npt_azim, split, dtype=np.float64)
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    unwrapped = [reference.split_polygon_unwrapped(c)[:, 1] for c in corners]
    spans = np.array([c.max() - c.min() for c in unwrapped])
    checked = 0
    for pixel in straddling_pixels(corners):
        if spans[pixel] > np.pi / 2:  # the beam-centre pixel is all round: not this test
            continue
        azim_bins = set(rows[m.indices == pixel] // 20)
        reach = int(np.ceil(spans[pixel] / (2 * np.pi / npt_azim)))  # bins its width can cover
        near_ends = set(range(reach)) | set(range(npt_azim - reach, npt_azim))
        assert azim_bins <= near_ends
        if split != "pseudo":  # (a shrunken box may stay on one side)
            assert {0, npt_azim - 1} <= azim_bins  # its two sides go to both ends
        np.testing.assert_allclose(m.data[m.indices == pixel].sum(), 1.0, atol=1e-9)
        checked += 1
    assert checked >= 3


def test_chi_wrap_without_discontinuity_at_pi(detector):
    """With chi in [0, 2 pi) the same pixels are contiguous: no pixel lands in both end bins
    unless it straddles chi = 0; the matrix still matches the reference."""
    corners, centers = detector
    m = build_csr_from_arrays(corners, None, 20, 12, "full", chi_discontinuity_at_pi=False,
                              dtype=np.float64)
    assert m.azimuthal_edges[0] == 0 and np.isclose(m.azimuthal_edges[-1], 2 * np.pi)
    expected = reference.split_matrix_dense(corners, centers, "full", m.radial_edges,
                                            m.azimuthal_edges, chi_lo=0.0)
    np.testing.assert_allclose(dense(m), expected, rtol=0, atol=1e-9)


def test_no_split_is_compact_and_exact(detector):
    """No splitting: data is None, each valid pixel centre is in exactly the bin holding it."""
    corners, centers = detector
    mask = np.zeros(len(centers), np.uint8)
    mask[3] = 1
    m = build_csr_from_arrays(None, centers, 17, 8, "no", mask=mask)
    assert m.data is None
    assert m.nbytes == m.indptr.nbytes + m.indices.nbytes
    assert sorted(m.indices.tolist()) == [p for p in range(len(centers)) if p != 3]
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    i_rad = np.searchsorted(m.radial_edges, centers[m.indices, 0], side="right") - 1
    i_azim = np.searchsorted(m.azimuthal_edges, centers[m.indices, 1], side="right") - 1
    np.testing.assert_array_equal(rows, i_azim * 17 + i_rad)
    assert m.radial_edges[0] == centers[:, 0][mask == 0].min()
    assert m.radial_edges[-1] > centers[:, 0].max()
    # centres given as a pair of (rows, cols) arrays, as a Geometry has them
    pair = (centers[:, 0].reshape(24, 20), centers[:, 1].reshape(24, 20))
    same = build_csr_from_arrays(None, pair, 17, 8, "no", mask=mask)
    np.testing.assert_array_equal(same.indptr, m.indptr)
    np.testing.assert_array_equal(same.indices, m.indices)


def test_pixels_outside_range_are_absent(detector):
    """Pixels entirely outside the radial range have no entry; those crossing its edge keep only
    the inside fraction (not renormalised)."""
    corners, _ = detector
    lo, hi = 8.0, 12.0
    m = build_csr_from_arrays(corners, None, 10, None, "full", radial_range=(lo, hi),
                              dtype=np.float64)
    radial = corners[:, :, 0]
    outside = np.flatnonzero((radial.max(axis=1) <= lo) | (radial.min(axis=1) >= hi))
    inside = np.flatnonzero((radial.min(axis=1) >= lo) & (radial.max(axis=1) <= hi))
    crossing = np.setdiff1d(np.arange(len(corners)), np.concatenate([outside, inside]))
    assert len(outside) and len(inside) and len(crossing)
    assert not np.isin(outside, m.indices).any()
    per_pixel = np.bincount(m.indices, weights=m.data, minlength=len(corners))
    np.testing.assert_allclose(per_pixel[inside], 1.0, atol=1e-9)
    assert np.all(per_pixel[crossing] < 1.0 - 1e-6)


@pytest.mark.parametrize("npt_azim", [None, 24])
@pytest.mark.parametrize("split", ["no", "bbox", "full"])
def test_deterministic_and_sorted(detector, split, npt_azim):
    """The output does not depend on the number of threads, 1D and 2D; pixel indices are sorted
    within each row; index arrays are int32 and coefficients float32 by default."""
    corners, centers = detector
    big_c = np.tile(corners, (40, 1, 1))  # ~19k pixels: several chunks per thread
    big_m = np.tile(centers, (40, 1))
    one = build_csr((big_c, big_m), 50, npt_azim, split=split, num_threads=1)
    two = build_csr((big_c, big_m), 50, npt_azim, split=split, num_threads=2)
    three = build_csr((big_c, big_m), 50, npt_azim, split=split, num_threads=3)
    for other in (two, three):
        np.testing.assert_array_equal(one.indptr, other.indptr)
        np.testing.assert_array_equal(one.indices, other.indices)
        if split != "no":
            np.testing.assert_array_equal(one.data, other.data)
    assert one.indptr.dtype == np.int32 and one.indices.dtype == np.int32
    if split != "no":
        assert one.data.dtype == np.float32
    for b in range(one.shape[0]):
        row = one.indices[one.indptr[b]:one.indptr[b + 1]]
        assert np.all(np.diff(row) > 0)


@pytest.mark.parametrize("split", ["no", "bbox", "pseudo", "full"])
def test_buffered_and_recomputed_builds_agree(detector, split):
    """The kernel's two ways of filling the matrix (scatter a buffer of entries, or recompute
    them) give identical arrays, 1D and 2D."""
    corners, centers = detector
    for na, azim_clip in ((1, False), (1, True), (9, True)):
        args = (corners, (centers[:, 0], centers[:, 1]), None, split, 30, 0.3, 24.0, na, -2.5,
                np.pi, azim_clip, -np.pi, np.float64, 2)
        buffered = csr_builder.build(*args, buffered=True)
        recomputed = csr_builder.build(*args, buffered=False)
        for a, b in zip(buffered, recomputed):
            np.testing.assert_array_equal(a, b)
        assert buffered[0][-1] > len(corners) // 2  # not trivially empty


def test_radial_bounds(detector):
    """Per-pixel radial (min, max) equal the corners' min and max exactly (NaN for masked or
    non-finite pixels), and the extent and count equal those of valid_extent, for 1 and 2
    threads."""
    corners, _ = detector
    corners = corners.copy()
    corners[3, 2, 1] = np.nan          # a non-finite chi also leaves the pixel out
    mask = np.zeros(len(corners), dtype=np.uint8)
    mask[[0, 7, 100]] = 1
    expected = np.stack([corners[:, :, 0].min(axis=1), corners[:, :, 0].max(axis=1)], axis=1)
    expected[[0, 3, 7, 100]] = np.nan
    extent = csr_builder.valid_extent(corners[:, :, 0], corners[:, :, 1], mask)
    for threads in (1, 2):
        bounds, lo, hi, nvalid = csr_builder.radial_bounds(corners, mask, threads)
        np.testing.assert_array_equal(bounds, expected)
        assert (lo, hi, nvalid) == extent
        assert nvalid == len(corners) - 4


def test_bounds_extent(detector):
    """bounds_extent over (radial min, max) pairs gives what valid_extent gives over the corners
    (NaN bounds and masked pixels left out), for 1 and 2 threads."""
    corners, _ = detector
    mask = np.zeros(len(corners), dtype=np.uint8)
    mask[[0, 5, 200]] = 1
    bounds = csr_builder.radial_bounds(corners, None)[0]
    bounds[9] = np.nan
    corners = corners.copy()
    corners[9, 0, 0] = np.nan
    expected = csr_builder.valid_extent(corners[:, :, 0], corners[:, :, 1], mask)
    for threads in (1, 2):
        assert csr_builder.bounds_extent(bounds, mask, threads) == expected
    assert csr_builder.bounds_extent(bounds[:0], None) == (np.inf, -np.inf, 0)


@pytest.mark.parametrize("ranged", [False, True])
def test_1d_bbox_from_radial_bounds(detector, ranged):
    """A 1D bbox matrix built from per-pixel radial bounds (mask applied by the builder, NaN
    bounds left out) is identical to the one built from the corners."""
    corners, centers = detector
    mask = np.zeros(len(corners), dtype=np.uint8)
    mask[[1, 2, 50, 301]] = 1
    corners = corners.copy()
    corners[77, 2, 0] = np.inf
    bounds = csr_builder.radial_bounds(corners, None)[0]
    radial_range = (3.0, 20.0) if ranged else None
    from_corners = build_csr_from_arrays(corners, None, 40, split="bbox", mask=mask,
                                         radial_range=radial_range)
    from_bounds = build_csr_from_arrays(None, None, 40, split="bbox", mask=mask,
                                        radial_range=radial_range, radial_bounds=bounds)
    for name in ("indptr", "indices", "data", "radial_edges"):
        np.testing.assert_array_equal(getattr(from_bounds, name), getattr(from_corners, name))
    assert not np.isin([1, 2, 50, 77, 301], from_bounds.indices).any()
    with pytest.raises(ValueError, match="radial_bounds must have shape"):
        build_csr_from_arrays(None, None, 40, split="bbox", radial_bounds=bounds[:, :1])
    with pytest.raises(ValueError, match="corners are needed"):   # 2D needs the corners
        build_csr_from_arrays(None, None, 40, 8, split="bbox", radial_bounds=bounds)


def test_full_split_analytic_square():
    """A unit square pixel over bins of width 0.25 in both directions: each bin holds 1/16."""
    corners = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    m = build_csr_from_arrays(corners, None, 4, 4, "full", radial_range=(0, 1),
                              azimuth_range_rad=(0, 1), dtype=np.float64)
    np.testing.assert_allclose(m.data, 1 / 16, rtol=1e-14)
    assert m.nnz == 16
    # a triangle-like skewed pixel: half of a 2x1 parallelogram in each radial half
    corners = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 1.0], [1.0, 1.0]]])
    m = build_csr_from_arrays(corners, None, 2, None, "full", radial_range=(0, 2),
                              dtype=np.float64)
    np.testing.assert_allclose(m.data, [0.5, 0.5], rtol=1e-14)


def test_bad_input(detector):
    corners, centers = detector
    with pytest.raises(ValueError, match="split"):
        build_csr((corners, centers), 10, split="exact")
    with pytest.raises(ValueError, match="npt_rad"):
        build_csr((corners, centers), 0)
    with pytest.raises(TypeError, match="npt_azim"):
        build_csr((corners, centers), 10, 2.5)
    with pytest.raises(ValueError, match="radial_range"):
        build_csr((corners, centers), 10, radial_range=(5, 5))
    with pytest.raises(ValueError, match="azimuth_range"):
        build_csr((corners, centers), 10, 4, azimuth_range=(-190, 0))
    with pytest.raises(ValueError, match="corners"):
        build_csr((corners[:, :2], centers), 10)
    with pytest.raises(ValueError, match="centers"):
        build_csr((corners, None), 10, split="no")
    with pytest.raises(ValueError, match="mask"):
        build_csr((corners, centers), 10, mask=np.zeros(7))
    with pytest.raises(ValueError, match="no valid pixel"):
        build_csr((corners, centers), 10, mask=np.ones(len(corners)))
    with pytest.raises(TypeError, match="geometry_or_arrays"):
        build_csr(42, 10)
    with pytest.raises(TypeError, match="dtype"):
        build_csr((corners, centers), 10, dtype=np.int32)


def beam_centre_pixels(corners):
    """Pixels with corners all round the beam (no gap of pi between their sorted chi)."""
    chi = np.sort(corners[:, :, 1], axis=1)
    gaps = np.diff(np.concatenate([chi, chi[:, :1] + 2 * np.pi], axis=1), axis=1)
    return np.flatnonzero(gaps.max(axis=1) < np.pi)


def test_pyfai_full_split_row_sums(detector):
    """pyFAI's full-split CSR on the same corner positions gives the same per-bin totals.

    pyFAI stores float32 coefficients and positions: tolerance 1e-4 relative on bins holding
    more than one pixel. The default range holds every pixel whole (pyFAI clamps the parts of
    pixels outside a range into the edge bins, where we drop them). The pixel holding the beam
    centre is left out: its image in (2theta, chi) is not a quadrilateral and each tool has its
    own convention for it.
    """
    splitpixel = pytest.importorskip("pyFAI.ext.splitPixelFullCSR")
    corners, _ = detector
    centre = beam_centre_pixels(corners)
    assert len(centre) == 1
    ours = build_csr_from_arrays(corners, None, 40, None, "full")
    edges = ours.radial_edges
    theirs = splitpixel.FullSplitCSR_1d(np.ascontiguousarray(corners, dtype=np.float32), 40,
                                        pos0_range=(edges[0], edges[-1]))
    data, indices, indptr = theirs.lut
    keep = np.ones(len(corners), bool)
    keep[centre] = False
    our_sums = ours.to_scipy() @ keep.astype(float)
    their_sums = csr_matrix((data, indices, indptr), shape=ours.shape) @ keep.astype(float)
    big = our_sums > 1
    assert big.sum() > 20
    np.testing.assert_allclose(our_sums[big], their_sums[big], rtol=1e-4)


@pytest.mark.parametrize("split", ["no", "bbox", "full"])
def test_non_finite_positions_are_left_out(detector, split):
    """Pixels with a NaN or infinite position (e.g. beyond 90 degrees) are absent, and do not
    spoil the default radial range."""
    corners, centers = detector
    corners, centers = corners.copy(), centers.copy()
    corners[10, 2, 0] = np.nan
    corners[11, 0, 1] = np.inf
    centers[10, 0] = np.nan
    centers[11, 1] = -np.inf
    m = build_csr((corners, centers), 20, 6, split=split, compact=False)
    assert not np.isin([10, 11], m.indices).any()
    assert np.isfinite(m.radial_edges).all()
    assert len(np.unique(m.indices)) == len(corners) - 2


def test_concurrent_builds_agree(detector):
    """Builds running at the same time in several Python threads (the kernel releases the GIL)
    give identical matrices."""
    from concurrent.futures import ThreadPoolExecutor

    corners, centers = detector
    big = np.tile(corners, (20, 1, 1))

    def one(_):
        return build_csr((big, None), 40, 16, split="full", num_threads=2)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0].indptr, other.indptr)
        np.testing.assert_array_equal(results[0].indices, other.indices)
        np.testing.assert_array_equal(results[0].data, other.data)


def test_full_circle_azimuth_range_is_the_default(detector):
    """A 1D azimuth_range covering the whole circle gives the default matrix; without the
    discontinuity at pi the circle is [0, 360] degrees."""
    corners, _ = detector
    default = build_csr((corners, None), 20, split="full", dtype=np.float64)
    for azimuth_range, at_pi in (((-180, 180), True), ((0, 360), False)):
        m = build_csr((corners, None), 20, split="full", azimuth_range=azimuth_range,
                      chi_discontinuity_at_pi=at_pi, dtype=np.float64)
        np.testing.assert_array_equal(m.indices, default.indices)
        np.testing.assert_allclose(m.data, default.data, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Through the Geometry (xreduce.geometry)
# ------------------------------------------------------------------------------------------

def small_geometry(mask=None):
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    detector = Detector(1e-3, 1e-3, (24, 20), mask=mask)
    return Geometry(0.05, 0.0306, 0.0299, 0.35, -0.28, 0.6, 1e-10, detector)


@pytest.mark.parametrize("split", ["no", "bbox", "full"])
@pytest.mark.parametrize("npt_azim", [None, 12])
def test_geometry_gives_the_same_matrix_as_its_arrays(detector, split, npt_azim):
    """build_csr(Geometry) uses the geometry's corner / centre / chi arrays and its detector
    mask (or-ed with the user mask): the matrix equals the one built from the test's own NumPy
    positions of the same geometry (PONI formulas) to 1e-9."""
    corners, centers = detector
    detector_mask = np.zeros((24, 20), np.uint8)
    detector_mask[4, :] = 1
    user_mask = np.zeros((24, 20), bool)
    user_mask[:, 7] = True
    geometry = small_geometry(detector_mask)
    m = build_csr(geometry, 25, npt_azim, unit="2th_deg", split=split, mask=user_mask,
                  dtype=np.float64, compact=False)
    both = (detector_mask.ravel() != 0) | user_mask.ravel()
    expected = build_csr((corners, centers), 25, npt_azim, split=split, mask=both,
                         radial_range=(m.radial_edges[0], m.radial_edges[-1]),
                         dtype=np.float64, compact=False)
    np.testing.assert_allclose(m.radial_edges, expected.radial_edges, rtol=1e-12)
    np.testing.assert_allclose(dense(m), dense(expected), rtol=0, atol=1e-9)
    assert not np.isin(np.flatnonzero(both), m.indices).any()
    assert m.unit == "2th_deg"


def test_geometry_in_q_conserves_counts():
    """Any radial unit: in q_nm^-1 the full-split coefficients still sum to the valid pixels."""
    geometry = small_geometry()
    m = build_csr(geometry, 40, None, unit="q_nm^-1", split="full", dtype=np.float64)
    q = geometry.corner_array("q_nm^-1")[..., 0]
    assert m.radial_edges[0] == q.min() and m.radial_edges[-1] > q.max()
    np.testing.assert_allclose(m.data.sum(), 24 * 20, rtol=1e-9)


def test_pyfai_full_split_from_geometry():
    """The whole chain against pyFAI: its own geometry and full-split CSR (1D, 2th_deg) give the
    same per-bin totals as ours to 1e-4 relative (float32 in pyFAI) on bins with > 1 pixel;
    the beam-centre pixel is left out of both (each tool has its own convention for it)."""
    pytest.importorskip("pyFAI")
    from pyFAI.detectors import Detector as PyfaiDetector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    geometry = small_geometry()
    corners = geometry.corner_array("2th_deg").reshape(-1, 4, 2)
    keep = np.ones(len(corners))
    keep[beam_centre_pixels(corners)] = 0
    ours = build_csr(geometry, 40, unit="2th_deg", split="full")
    ai = AzimuthalIntegrator(dist=0.05, poni1=0.0306, poni2=0.0299, rot1=0.35, rot2=-0.28,
                             rot3=0.6, wavelength=1e-10,
                             detector=PyfaiDetector(1e-3, 1e-3, max_shape=(24, 20)))
    engine = ai.setup_sparse_integrator((24, 20), 40, unit="2th_deg", split="full",
                                        pos0_range=(ours.radial_edges[0], ours.radial_edges[-1]))
    data, indices, indptr = engine.lut
    their_sums = csr_matrix((data, indices, indptr), shape=ours.shape) @ keep
    our_sums = ours.to_scipy() @ keep
    big = our_sums > 1
    assert big.sum() > 20
    np.testing.assert_allclose(our_sums[big], their_sums[big], rtol=1e-4)


# ------------------------------------------------------------- pyFAI's box (issue 15)

def _pyfai_box_geometry():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    # beam centre on the detector: boxes clipped at 0 and pixels around the chi seam
    return Geometry(0.02, 0.0021, 0.0033, 0.05, -0.03, 0.0, 1e-10,
                    Detector(1e-4, 1.2e-4, (40, 52)))


def test_pyfai_bbox_1d_matches_the_reference():
    import reference
    from xreduce.sparse import build_csr

    g = _pyfai_box_geometry()
    m = build_csr(g, 30, unit="2th_deg", split="bbox_pyfai", dtype=np.float64)
    assert m.split == "bbox_pyfai"
    centres = g.center_array("2th_deg").reshape(-1)
    corners = g.corner_array("2th_deg")[..., 0].reshape(-1, 4)
    lo, hi = reference.pyfai_bbox_limits(centres, corners, low_limit=0.0)
    assert m.radial_edges[0] == pytest.approx(lo.min())
    dense = reference.bbox_matrix_reference(lo, hi, m.radial_edges)
    np.testing.assert_allclose(m.to_scipy().toarray(), dense, atol=1e-12)


def test_pyfai_bbox_2d_matches_the_reference():
    """2D: chi box = centre +- largest corner deviation the short way round, clipped to the
    azimuthal range with the whole weight kept inside (pyFAI's rule); pixels whose box misses
    the range stay out."""
    import reference
    from xreduce.sparse import build_csr

    g = _pyfai_box_geometry()
    for azimuth_range in (None, (-100.0, 35.0)):
        m = build_csr(g, 12, 16, unit="q_nm^-1", split="bbox_pyfai", dtype=np.float64,
                      azimuth_range=azimuth_range)
        centres = g.center_array("q_nm^-1").reshape(-1)
        corners = g.corner_array("q_nm^-1").reshape(-1, 4, 2)
        lo, hi = reference.pyfai_bbox_limits(centres, corners[..., 0], low_limit=0.0)
        chi = g.chi_array().reshape(-1)
        turn = np.angle(np.exp(1j * (corners[..., 1] - chi[:, None])))   # in (-pi, pi]
        dchi = np.abs(turn).max(axis=1)
        a0, a1 = np.deg2rad(azimuth_range or (-180.0, 180.0))
        keep = (chi + dchi >= a0) & (chi - dchi <= a1)
        alo, ahi = np.maximum(chi - dchi, a0), np.minimum(chi + dchi, a1)
        dense = reference.bbox_matrix_reference(lo, hi, m.radial_edges, alo, ahi,
                                                m.azimuthal_edges)
        dense[:, ~keep] = 0.0
        np.testing.assert_allclose(m.to_scipy().toarray(), dense, atol=1e-12)
        # every kept pixel's whole weight lands in the cake
        np.testing.assert_allclose(m.to_scipy().toarray().sum(axis=0)[keep], 1.0, rtol=1e-12)


def test_pyfai_bbox_needs_a_geometry():
    from xreduce.sparse import build_csr

    with pytest.raises(ValueError, match="bbox_pyfai.*Geometry"):
        build_csr((np.zeros((4, 4, 2)), None), 4, split="bbox_pyfai")
