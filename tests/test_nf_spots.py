"""Spot prediction: Bragg's law and the diffraction condition, symmetry, displacement, tilts,
windows, and triangle footprints."""
import numpy as np
import pytest

import reference
from xreduce.nf.crystal import euler_to_matrix, laue_rotations
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.reflections import reflection_list
from xreduce.nf.spots import NFGeometry, predict_spots, spot_footprints, spot_pixels, tilt_matrix

WL = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)


def _geometry(**kw):
    base = dict(lsd_um=(6000.0, 8000.0), bc_px=((1024.0, 100.0), (1030.0, 110.0)), px_um=1.48,
                wavelength_A=WL, omega_start_deg=180.0, omega_step_deg=-0.25,
                omega_ranges_deg=((-180.0, 180.0),),
                box_sizes_um=((-3000.0, 3000.0, -3000.0, 3000.0),), detector_shape=(2048, 2048))
    base.update(kw)
    return NFGeometry(**base)


def test_kernel_atan2_accuracy(rng):
    """The kernel's atan2 (table + series) equals numpy's to 1e-15 rad (2 ulp at pi)."""
    from xreduce.ext.nf_spots import atan2_array

    y = np.r_[rng.normal(size=200000), 0.0, 1.0, -1.0, 0.0, 3.0, -2.0]
    x = np.r_[rng.normal(size=200000), 1.0, 0.0, 0.0, -1.0, 3.0, -2.0]
    y[:1000] *= 1e-9  # near the axes
    x[1000:2000] *= 1e-9
    np.testing.assert_allclose(atan2_array(y, x), np.arctan2(y, x), rtol=0, atol=1e-15)


def _random_U(rng, n):
    return euler_to_matrix(rng.uniform(0, 1, (n, 3)) * [2 * np.pi, np.pi, 2 * np.pi])


@pytest.mark.parametrize("wedge", [0.0, 2.0])
def test_spots_match_textbook_solution(rng, wedge):
    """Same spot set as the quadratic-in-cos(w) reference, omega/eta/y/z to 1e-9."""
    refl = reflection_list(225, AU, WL, 6000.0, 2000.0)
    geo = _geometry(omega_ranges_deg=((-170.0, -20.0), (20.0, 190.0)),
                    box_sizes_um=((-1500.0, 1500.0, -200.0, 1500.0),) * 2,
                    exclude_pole_deg=6.0, wedge_deg=wedge)
    U = _random_U(rng, 12)
    spots = predict_spots(U, refl, geo)
    want = reference.nf_spots_brute(U, refl.g, WL, 6000.0, geo.omega_ranges_deg,
                                    geo.box_sizes_um, 6.0, wedge)
    assert len(spots) == len(want) > 100
    got = sorted(zip(spots.orientation, spots.reflection, spots.omega_deg, spots.eta_deg,
                     spots.y_um[:, 0], spots.z_um[:, 0]))
    want = sorted(want)
    for a, b in zip(got, want):
        assert a[:2] == b[:2]
        np.testing.assert_allclose(a[2:], b[2:], atol=1e-9, rtol=0)
    assert np.all(np.abs(spots.eta_deg) >= 6.0) and np.all(180 - np.abs(spots.eta_deg) >= 6.0)
    np.testing.assert_array_equal(spots.frame, np.floor((spots.omega_deg - 180.0) / -0.25))


def test_wedge_sign_matches_midas_omega_correction(rng):
    """Our Wedge agrees with MIDAS's omega correction (NF SharedFuncsFit.c CorrectWedge, FF
    FitWedge.c): take the lab scattering vector of the spot predicted without wedge, rotate it
    by Ry(+Wedge), find the small rotation w' about Z that puts it back on the Bragg cone, and
    subtract w' from the omega. That rule is first order in the wedge; our solution is exact,
    so they agree to second order (below 0.01 deg at a 0.5 deg wedge) where w' stays small
    (|w'| <= 1 deg: near the rotation axis the first-order rule breaks down); the opposite sign
    is off by 2 w' (0.5 deg typically, up to 2 deg)."""
    wedge = 0.5
    refl = reflection_list(225, AU, WL, 6000.0, 2000.0)
    flat, tilted = _geometry(), _geometry(wedge_deg=wedge)
    U = _random_U(rng, 6)
    s0, s1 = predict_spots(U, refl, flat), predict_spots(U, refl, tilted)
    Ry = np.array([[np.cos(np.radians(wedge)), 0, np.sin(np.radians(wedge))], [0, 1, 0],
                   [-np.sin(np.radians(wedge)), 0, np.cos(np.radians(wedge))]])
    shifts, errors = [], []
    for k in range(len(s0)):
        i, m, w0 = s0.orientation[k], s0.reflection[k], np.radians(s0.omega_deg[k])
        G = U[i] @ refl.g[m]
        c, s = np.cos(w0), np.sin(w0)
        g_wedged = Ry @ (np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ G)
        # Rz(w') g_wedged has x = -|G| sin(theta) = -|G|^2 lambda / 2: a cos w' + b sin w' = t
        a, b, t = g_wedged[0], -g_wedged[1], -G @ G * WL / 2
        phase, amp = np.arctan2(b, a), np.hypot(a, b)
        candidates = phase + np.array([1, -1]) * np.arccos(np.clip(t / amp, -1, 1))
        w_small = np.degrees((candidates + np.pi) % (2 * np.pi) - np.pi)
        w_small = w_small[np.argmin(np.abs(w_small))]
        same = (s1.orientation == i) & (s1.reflection == m)
        if abs(w_small) > 1.0 or not same.any():
            continue
        midas = s0.omega_deg[k] - w_small
        diff = (s1.omega_deg[same] - midas + 180.0) % 360.0 - 180.0
        shifts.append(abs(w_small))
        errors.append(np.min(np.abs(diff)))
    assert len(errors) > 1000 and np.median(shifts) > 0.1   # the wedge moves spots visibly
    assert np.max(errors) < 0.02


def test_bragg_and_diffraction_condition(rng):
    """|k_in + G| = |k_in| and the scattering angle is 2 theta of Bragg's law, to 1e-9;
    the spot lies on the diffracted beam at every distance."""
    refl = reflection_list(225, AU, WL, 6000.0, 2500.0)
    geo = _geometry()
    U = _random_U(rng, 20)
    s = predict_spots(U, refl, geo)
    w = np.radians(s.omega_deg)
    Rz = np.zeros((len(s), 3, 3))
    Rz[:, 0, 0] = Rz[:, 1, 1] = np.cos(w)
    Rz[:, 0, 1], Rz[:, 1, 0] = -np.sin(w), np.sin(w)
    Rz[:, 2, 2] = 1
    G = np.einsum("nij,njk,nk->ni", Rz, U[s.orientation], refl.g[s.reflection])
    k_in = np.array([1 / WL, 0, 0])
    k_out = k_in + G
    np.testing.assert_allclose(np.linalg.norm(k_out, axis=1) * WL, 1.0, atol=1e-9)
    two_theta = np.arccos(k_out[:, 0] / np.linalg.norm(k_out, axis=1))
    d = 1 / np.linalg.norm(refl.g[s.reflection], axis=1)
    np.testing.assert_allclose(np.sin(two_theta / 2), WL / (2 * d), atol=1e-9)
    for k, lsd in enumerate(geo.lsd_um):
        np.testing.assert_allclose(s.y_um[:, k], lsd * k_out[:, 1] / k_out[:, 0], atol=1e-9)
        np.testing.assert_allclose(s.z_um[:, k], lsd * k_out[:, 2] / k_out[:, 0], atol=1e-9)
        np.testing.assert_allclose(np.hypot(s.y_um[:, k], s.z_um[:, k]),
                                   lsd * np.tan(two_theta), rtol=1e-9)


def test_symmetry_equivalent_orientations_same_spots(rng):
    refl = reflection_list(194, (2.95, 2.95, 4.68, 90, 90, 120), WL, 6000.0, 2000.0)
    geo = _geometry()
    U = _random_U(rng, 1)[0]
    ref = predict_spots(U, refl, geo)
    key = np.sort(ref.omega_deg * 1e3 + ref.eta_deg)
    for S in laue_rotations(194, (2.95, 2.95, 4.68, 90, 90, 120)):
        s = predict_spots(U @ S, refl, geo)
        assert len(s) == len(ref)
        np.testing.assert_allclose(np.sort(s.omega_deg * 1e3 + s.eta_deg), key, atol=1e-7)


def test_displaced_voxel_and_tilts_follow_rays(rng):
    """Spot pixels of a displaced voxel equal a 3x3 linear-solve line/plane intersection
    (independent of the kernel's formula) to 1e-7 px, with tilts; without tilts they equal the
    REFERENCE displacement formula."""
    refl = reflection_list(225, AU, WL, 6000.0, 2000.0)
    geo = _geometry(tilts_deg=(0.3, -0.7, 1.1))
    s = predict_spots(_random_U(rng, 3), refl, geo)
    a, b = rng.uniform(-300, 300, len(s)), rng.uniform(-300, 300, len(s))
    got = spot_pixels(s, geo, a, b)
    Rt = tilt_matrix(geo.tilts_deg)
    for j in range(0, len(s), 7):
        w = np.radians(s.omega_deg[j])
        P = np.array([a[j] * np.cos(w) - b[j] * np.sin(w), a[j] * np.sin(w) + b[j] * np.cos(w), 0])
        for k, lsd in enumerate(geo.lsd_um):
            want = reference.nf_ray_on_detector(P, np.array([1, s.dir_y[j], s.dir_z[j]]), lsd, Rt,
                                                geo.bc_px[k], geo.px_um)
            np.testing.assert_allclose(got[j, k], want, atol=1e-7)
    flat = _geometry()
    got = spot_pixels(s, flat, a, b)
    w = np.radians(s.omega_deg)
    xa, ya = a * np.cos(w) - b * np.sin(w), a * np.sin(w) + b * np.cos(w)
    for k, lsd in enumerate(flat.lsd_um):
        t = 1 - xa / lsd
        np.testing.assert_allclose(got[:, k, 0], (ya + s.y_um[:, k] * t) / 1.48 + flat.bc_px[k][0],
                                   atol=1e-8)
        np.testing.assert_allclose(got[:, k, 1], s.z_um[:, k] * t / 1.48 + flat.bc_px[k][1],
                                   atol=1e-8)


def _raster_reference(poly, shape):
    """Pixels (integer centres) inside a convex polygon: every pixel of the detector within a
    generous box around it is tested against every edge."""
    y0 = max(int(poly[:, 0].min()) - 3, 0)
    z0 = max(int(poly[:, 1].min()) - 3, 0)
    y1 = min(int(poly[:, 0].max()) + 4, shape[0])
    z1 = min(int(poly[:, 1].max()) + 4, shape[1])
    if y1 <= y0 or z1 <= z0:
        return set()
    yy, zz = np.mgrid[y0:y1, z0:z1]
    inside = np.ones(yy.shape, dtype=bool)
    n = len(poly)
    area = sum(poly[k, 0] * poly[(k + 1) % n, 1] - poly[(k + 1) % n, 0] * poly[k, 1]
               for k in range(n))
    for k in range(n):
        a, b = poly[k], poly[(k + 1) % n]
        cross = (b[0] - a[0]) * (zz - a[1]) - (b[1] - a[1]) * (yy - a[0])
        inside &= np.sign(area) * cross >= -1e-9
    return set(zip(yy[inside].tolist(), zz[inside].tolist()))


def test_footprints_cover_projected_triangles(rng):
    """Footprint pixels = pixel centres inside the projected triangle (brute force over a small
    detector); footprint area grows with the triangle; conservative mode is a superset."""
    refl = reflection_list(225, AU, WL, 6000.0, 800.0)
    geo = _geometry(detector_shape=(300, 300), bc_px=((150.0, 20.0), (150.0, 20.0)),
                    lsd_um=(3000.0, 4000.0), tilts_deg=(0.2, 0.4, -0.3))
    grid = hexagonal_grid(30.0, 10.0)
    s = predict_spots(_random_U(rng, 8), refl, geo)
    s = s.take(np.nonzero((np.abs(s.y_um[:, 1] / 1.48) < 160) & (s.z_um[:, 1] / 1.48 < 290))[0])
    voxel = rng.integers(0, len(grid), len(s))
    verts = grid.vertices_um()
    indptr, py, pz = spot_footprints(s, voxel, verts, geo)
    _, py_c, pz_c = spot_footprints(s, voxel, verts, geo, conservative=True)
    nd = geo.n_distances
    assert len(py_c) >= len(py)
    checked = 0
    for j in range(len(s)):
        for d in range(nd):
            pix = set(zip(py[indptr[j * nd + d]:indptr[j * nd + d + 1]].tolist(),
                          pz[indptr[j * nd + d]:indptr[j * nd + d + 1]].tolist()))
            corners = spot_pixels(s.take([j, j, j]), geo, verts[voxel[j], :, 0],
                                  verts[voxel[j], :, 1])[:, d]
            want = _raster_reference(corners, geo.detector_shape)
            if want:
                assert pix == want
                checked += 1
            elif pix:
                centroid = np.floor(corners.mean(axis=0) + 0.5).astype(int)
                assert pix == {tuple(centroid)}
    assert checked > 20
