"""Why pyFAI's 2D full splitting differs from ours (issue 15): the cause, shown.

pyFAI (2026.9, ``splitPixelFullCSR.FullSplitCSR_2d``) splits a pixel exactly along the radial
axis, but inside one radial bin it shares the pixel's area between azimuthal bins by an
approximation: it integrates each piece of the pixel's edges over the radial bin and stacks
that piece's area from the bottom of the pixel's box as a rectangle as wide as the piece
(the area under each piece becomes a rectangle of the piece's mean chi). Where an edge
crosses an azimuthal bin edge inside a radial bin, that moves area to the neighbouring
azimuthal bin (up to a few % of a pixel). xreduce clips the polygon exactly (equal to the
NumPy polygon-clipping reference, tests/reference.py).

Shown here on the compat corpus' Pilatus 300k geometry (q_nm^-1, 200 x 36 bins), same float32
corners for both tools, pixels away from the radial range's ends:

- per pixel and radial bin, pyFAI's total over chi = ours (2e-5: pyFAI's float32 buffers);
- pyFAI's coefficients = the rule above, written in NumPy (5e-5), while they differ from the
  exact ones by up to ~5e-2 of a pixel;
- a pixel inside one azimuthal bin gets the same coefficients from both (2e-5);
- ours = the exact reference (1e-12, float64).

doc/pyfai.md, "How close", records it.
"""
import numpy as np
import pytest
from scipy.sparse import csr_matrix

import reference

NR, NA = 200, 36


def pyfai_full_split_2d_rule(quad, radial_edges, azimuthal_edges):
    """One pixel's 2D coefficients by pyFAI's rule (see the module docstring), (NA * NR,)
    azimuth-major. ``quad``: (4, 2) radial and chi corners, away from the chi seam."""
    poly = np.asarray(quad, dtype=float)
    area = reference.split_polygon_area(poly.tolist())
    sign = 1.0 if area > 0 else -1.0
    na, nr = len(azimuthal_edges) - 1, len(radial_edges) - 1
    base = azimuthal_edges[np.searchsorted(azimuthal_edges, poly[:, 1].min(), "right") - 1]
    out = np.zeros((na, nr))
    for i in range(nr):
        if radial_edges[i + 1] <= poly[:, 0].min() or radial_edges[i] >= poly[:, 0].max():
            continue
        part = reference.split_clip_polygon(poly.tolist(), 0, radial_edges[i], True)
        part = reference.split_clip_polygon(part, 0, radial_edges[i + 1], False)
        for a, b in zip(part, part[1:] + part[:1]):
            width = b[0] - a[0]                         # signed: the edge's direction
            height = 0.5 * (a[1] + b[1])                # the piece's mean chi
            for j in range(na):
                stacked = min(height, azimuthal_edges[j + 1]) - max(base, azimuthal_edges[j])
                if stacked > 0:
                    out[j, i] -= sign * width * stacked / abs(area)
    return out.reshape(-1)


@pytest.fixture(scope="module")
def matrices():
    pytest.importorskip("pyFAI")
    from pyFAI.ext.splitPixelFullCSR import FullSplitCSR_2d
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    from xreduce.geometry import Geometry
    from xreduce.sparse import build_csr_from_arrays

    ai = AzimuthalIntegrator(dist=0.1, poni1=0.045, poni2=0.042, detector="Pilatus300k",
                             wavelength=0.8e-10)
    geometry = Geometry.from_pyfai(ai)
    corners = np.ascontiguousarray(geometry.corner_array("q_nm^-1").reshape(-1, 4, 2)
                                   .astype(np.float32), dtype=np.float64)  # pyFAI's type
    chosen = np.zeros(geometry.detector.shape, bool)
    chosen[200:260:3, 150:330:3] = True                  # ~1000 pixels once gaps are out
    chosen &= geometry.detector.mask == 0
    mask = ~chosen.reshape(-1)
    ours = build_csr_from_arrays(corners, None, NR, NA, "full", None, None, mask,
                                 dtype=np.float64)
    edges = ours.radial_edges
    theirs = FullSplitCSR_2d(corners.astype(np.float32), (NR, NA),
                             pos0_range=(edges[0], edges[-1]), pos1_range=(-np.pi, np.pi),
                             mask=mask.astype(np.int8))
    data, indices, indptr = theirs.lut
    pixels = np.flatnonzero(chosen.reshape(-1))
    their_matrix = csr_matrix((data, indices, indptr), shape=(NR * NA, corners.shape[0]))
    # pyFAI's rows are radial-major (i_rad * NA + i_azim); ours azimuth-major
    theirs = their_matrix[:, pixels].toarray().reshape(NR, NA, -1).transpose(1, 0, 2)
    mine = ours.to_scipy()[:, pixels].toarray().reshape(NA, NR, -1)
    quads = corners[pixels]
    # pixels away from the ends of the radial range (each tool its own convention there)
    interior = (quads[..., 0].min(axis=1) > edges[3]) & (quads[..., 0].max(axis=1) < edges[-4])
    return mine, theirs, quads, interior, edges, ours.azimuthal_edges


def test_radial_shares_are_the_same(matrices):
    mine, theirs, _, interior, _, _ = matrices
    assert interior.sum() > 900
    np.testing.assert_allclose(mine.sum(axis=0)[:, interior], theirs.sum(axis=0)[:, interior],
                               atol=2e-5)


def test_pyfai_follows_the_stacked_rectangle_rule(matrices):
    mine, theirs, quads, interior, radial_edges, azimuthal_edges = matrices
    picked = np.flatnonzero(interior)[::4]                 # 300 pixels: NumPy is slow
    rule = np.stack([pyfai_full_split_2d_rule(quads[p], radial_edges, azimuthal_edges)
                     for p in picked], axis=1)
    theirs = theirs.reshape(NA * NR, -1)[:, picked]
    mine = mine.reshape(NA * NR, -1)[:, picked]
    np.testing.assert_allclose(theirs, rule, atol=5e-5)
    assert np.abs(mine - theirs).max() > 1e-2               # the difference is real ...
    assert np.abs(mine - rule).max() > 1e-2                 # ... and it is this rule


def test_pixels_inside_one_azimuthal_bin_agree(matrices):
    mine, theirs, quads, interior, _, azimuthal_edges = matrices
    bins = np.searchsorted(azimuthal_edges, quads[..., 1], "right")
    single = interior & (bins.min(axis=1) == bins.max(axis=1))
    assert single.sum() > 500
    np.testing.assert_allclose(mine[..., single], theirs[..., single], atol=2e-5)


def test_ours_is_the_exact_polygon_clipping(matrices):
    mine, _, quads, interior, radial_edges, azimuthal_edges = matrices
    picked = np.flatnonzero(interior)[::40]
    exact = reference.split_matrix_dense(quads[picked], None, "full", radial_edges,
                                         azimuthal_edges)
    np.testing.assert_allclose(mine.reshape(NA * NR, -1)[:, picked], exact, atol=1e-12)
