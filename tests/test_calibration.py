"""Geometry calibration: sub-pixel angles, ring numbering, refinement, the whole chain, the CLI.

CI images are Pilatus 1M / Eiger 4M binned 4 (about 250 x 250 pixels) to keep this file under
a minute; on them the refined geometry is checked within 4 reported standard uncertainties
and within 3e-4 (relative distance), 0.2 px (PONI) and 3e-4 rad (rotations) of the truth. The
full-resolution matrix (3 calibrants x 3 detectors, tilts up to 5 degrees, 1e-4 / 0.1 px / 1e-4
rad) runs in benchmarks/bench_calib.py.
"""
import json
import math

import numpy as np
import pytest

from xreduce.calibrant import fake_calibration_image, get_calibrant
from xreduce.calibration import (ControlPoints, angles_at, assign_rings, beam_centre_px, calibrate,
                                 calibrate_jointly, pixels_at_angles, refine_geometry)
from xreduce.calibration.synthetic import geometry_with_beam_at, synthetic_case
from xreduce.cli.calib import main as calib_main
from xreduce.detectors import Detector, get_detector
from xreduce.geometry import Geometry


@pytest.mark.parametrize("orientation", [1, 2, 3, 4])
def test_angles_at_pixel_centres_match_geometry_arrays(orientation):
    det = Detector(172e-6, 150e-6, (40, 50), orientation=orientation)
    geo = Geometry(0.1, 0.003, -0.002, 0.05, -0.08, 0.3, 1e-10, det)
    rows, cols = np.meshgrid(np.arange(40.0), np.arange(50.0), indexing="ij")
    tth, chi = angles_at(geo, rows, cols)
    np.testing.assert_allclose(tth, geo.twotheta_array(), rtol=0, atol=1e-10)
    dchi = (chi - geo.chi_array() + np.pi) % (2 * np.pi) - np.pi
    assert np.abs(dchi).max() < 1e-10


def test_pixels_at_angles_inverts_angles_at():
    det = Detector(1e-4, 1e-4, (300, 200), orientation=2)
    geo = Geometry(0.08, 0.012, 0.011, 0.04, 0.07, -0.2, 1e-10, det)
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, 299, 500), rng.uniform(0, 199, 500)
    back = pixels_at_angles(geo, *angles_at(geo, rows, cols))
    np.testing.assert_allclose(back[0], rows, atol=1e-8)
    np.testing.assert_allclose(back[1], cols, atol=1e-8)
    assert np.allclose(beam_centre_px(geo.with_(rot1=0, rot2=0, rot3=0)),
                       (300 - 0.012 / 1e-4 - 0.5, 0.011 / 1e-4 - 0.5))  # rows flipped


def test_assign_rings_tolerates_missing_and_spurious_rings():
    tth = get_calibrant("LaB6").two_theta(0.7e-10)
    seen = [2, 3, 4, 6, 7, 8]  # rings 0, 1 (beam stop) and 5 unseen
    radii = np.sort(np.append(800 * np.tan(tth[seen]), 170.0))  # and a ring that is not LaB6
    best = assign_rings(radii, np.ones(radii.size), tth, 1e-4)[0]
    assert best.calibrant.tolist() == seen
    assert abs(best.dist_px - 800) < 0.5
    with pytest.raises(ValueError, match="do not match"):  # no distance in range fits
        assign_rings(np.array([100.0, 117.0, 151.0]), np.ones(3), tth, 1e-4, dist_range_m=(0.5, 0.6))


@pytest.mark.parametrize("detector, binning, beam, tilt_deg, direction, stop", [
    ("Eiger 4M", 4, (0.6, 0.3), 0.0, 120, 0.0),
    ("Eiger 4M", 4, (0.6, 0.3), 5.0, 120, 0.0),
    ("Pilatus 1M", 2, (0.26, 0.11), 3.9, 239, 8.0),  # beam near an edge, beam stop
])
def test_vote_finds_the_centre_of_dense_tilted_rings(detector, binning, beam, tilt_deg, direction,
                                                     stop):
    # LaB6 at 0.05 m: 20 to 30 rings; a tilt moves the outer rings' centres by up to ~20 px,
    # the inner ones' by under 1 px: the vote and the inner-ring hill-climb land within
    # 1.5 px of the beam (the ellipse fits then refine it)
    from xreduce.calibration.peaks import find_ring_candidates

    truth, image = synthetic_case("LaB6", detector, binning, 0.05, beam, tilt_deg, direction,
                                  beamstop_radius_px=stop, seed=9)
    found = find_ring_candidates(image, truth.detector)
    true_beam = beam_centre_px(truth)
    assert math.hypot(found.centre[0] - true_beam[0], found.centre[1] - true_beam[1]) < 1.5
    assert found.radii.size >= 10


def _exact_points(truth, calibrant, rings, per_ring=60, sigma=1e-5):
    tth = calibrant.two_theta(truth.wavelength)
    rows, cols, ring = [], [], []
    for k in rings:
        chi = np.linspace(-np.pi, np.pi, per_ring, endpoint=False)
        r, c = pixels_at_angles(truth, np.full(chi.shape, tth[k]), chi)
        inside = (r > 0) & (c > 0) & (r < truth.detector.shape[0] - 1) & (c < truth.detector.shape[1] - 1)
        rows.append(r[inside]), cols.append(c[inside]), ring.append(np.full(inside.sum(), k))
    rows, cols, ring = map(np.concatenate, (rows, cols, ring))
    return ControlPoints(rows, cols, ring, np.full(rows.size, sigma))


def test_refine_recovers_truth_from_exact_points():
    det = get_detector("Pilatus 1M")
    truth = Geometry(0.2, 0.09, 0.08, 0.03, -0.05, 0.0, 0.8e-10, det)
    lab6 = get_calibrant("LaB6")
    points = _exact_points(truth, lab6, range(8))
    start = truth.with_(dist=0.21, poni1=0.093, poni2=0.078, rot1=0.0, rot2=0.0)
    result = refine_geometry(points, start, lab6.d_spacings, fix=("rot3", "wavelength"))
    for name in ("dist", "poni1", "poni2", "rot1", "rot2"):
        assert abs(getattr(result.geometries[0], name) - getattr(truth, name)) < 1e-9, name
    assert result.rms_mdeg < 1e-6
    assert set(result.uncertainties) == {"dist", "poni1", "poni2", "rot1", "rot2"}


def test_refine_warns_when_dist_and_wavelength_are_inseparable():
    det = get_detector("Pilatus 1M")
    truth = Geometry(0.3, 0.09, 0.08, 0.0, 0.0, 0.0, 1e-10, det)
    lab6 = get_calibrant("LaB6")
    points = _exact_points(truth, lab6, range(3), sigma=2e-5)
    points = ControlPoints(points.rows + np.random.default_rng(1).normal(0, 0.05, len(points)),
                           points.cols, points.ring, points.sigma)
    result = refine_geometry(points, truth, lab6.d_spacings, fix=("rot3",))
    assert any("wavelength and dist are correlated" in w for w in result.warnings)


def test_joint_refinement_of_two_distances_separates_wavelength():
    det = get_detector("Pilatus 1M").binned(2)
    lab6 = get_calibrant("LaB6")
    truths = [Geometry(d, 0.08, 0.09, 0.01, -0.02, 0.0, 0.75e-10, det) for d in (0.12, 0.3)]
    points = [_exact_points(t, lab6, range(6)) for t in truths]
    starts = [t.with_(dist=t.dist * 1.01, wavelength=0.76e-10) for t in truths]
    result = refine_geometry(points, starts, lab6.d_spacings, fix=("rot3",))
    assert abs(result.values["wavelength"] - 0.75e-10) < 1e-16
    assert abs(result.geometries[1].dist - 0.3) < 1e-9
    assert "dist[1]" in result.names


CASES = [  # calibrant, detector, binning, dist, beam (fraction), tilt (deg), direction, options
    dict(calibrant="LaB6", detector="Pilatus 1M", binning=4, dist=0.12, beam_fraction=(0.4, 0.55),
         tilt_deg=3, tilt_direction_deg=30),
    dict(calibrant="CeO2", detector="Eiger 4M", binning=8, dist=0.25, beam_fraction=(0.7, 0.3),
         tilt_deg=5, tilt_direction_deg=200, spotty=0.7, beamstop_radius_px=6),
    dict(calibrant="LaB6", detector="Eiger 4M", binning=4, dist=0.9, beam_fraction=(0.45, 0.5),
         tilt_deg=2, tilt_direction_deg=300, energy_kev=60.0),
    # short distance: dense rings over the whole detector, beam near an edge, 5 degrees
    dict(calibrant="LaB6", detector="Eiger 4M", binning=4, dist=0.05, beam_fraction=(0.12, 0.85),
         tilt_deg=5, tilt_direction_deg=250),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['calibrant']}-{c['detector']}-{c['dist']}m")
def test_calibrate_without_a_guess(case):
    truth, image = synthetic_case(**case)
    result = calibrate(image, truth.detector, case["calibrant"],
                       energy_kev=case.get("energy_kev", 17.0))
    assert result.ok, result.problems
    geo, sigma, pixel = result.geometry, result.refinement.uncertainties, truth.detector.pixel1
    far = truth.dist > 0.5  # small angles: PONI and tilt are correlated, the beam centre is not
    for name, limit in (("dist", 3e-4 * truth.dist), ("poni1", 0.2 * pixel),
                        ("poni2", 0.2 * pixel), ("rot1", 3e-4), ("rot2", 3e-4)):
        error = abs(getattr(geo, name) - getattr(truth, name))
        assert error < 4 * sigma[name], (name, error, sigma[name])
        assert far or error < limit, (name, error, limit)
    beam, true_beam = beam_centre_px(geo), beam_centre_px(truth)
    assert math.hypot(beam[0] - true_beam[0], beam[1] - true_beam[1]) < 0.2


def test_calibrate_from_a_guess_and_free_wavelength_joint():
    truth, image = synthetic_case(**CASES[0])
    beam = beam_centre_px(truth)  # a guess: beam centre 2 px off, distance 2 % off, no tilt
    guess = geometry_with_beam_at(truth.detector, truth.dist * 1.02, (beam[0] + 2, beam[1] - 1),
                                  0.0, 0.0, wavelength=truth.wavelength)
    result = calibrate(image, truth.detector, "LaB6", geometry=guess)
    assert result.ok and result.candidates == [None]
    assert abs(result.geometry.dist - truth.dist) < 3e-4 * truth.dist
    far = truth.with_(dist=0.2, poni1=truth.poni1 + 0.002)
    image2 = fake_calibration_image(far, "LaB6", fwhm_deg=math.degrees(1.5 * far.detector.pixel1 / 0.2),
                                    background=20, peak_height=800, seed=3)
    joint = calibrate_jointly([image, image2], truth.detector, "LaB6", energy_kev=17.2,
                              fix=("rot3",))
    assert joint.ok, joint.problems
    assert abs(joint.refinement.values["wavelength"] - truth.wavelength) < 1e-3 * truth.wavelength


def test_no_rings_is_a_clear_failure():
    det = get_detector("Pilatus 1M").binned(4)
    noise = np.random.default_rng(0).poisson(20, det.shape).astype(np.int32)
    with pytest.raises(ValueError, match="rings"):
        calibrate(noise, det, "LaB6", energy_kev=17.0)


def _not_confident(image, det, calibrant, energy):
    try:
        result = calibrate(image, det, calibrant, energy_kev=energy)
    except ValueError:
        return True
    return not result.ok


def test_wrong_calibrant_or_wavelength_never_gives_a_confident_geometry():
    truth, image = synthetic_case(**CASES[0])
    assert _not_confident(image, truth.detector, "CeO2", 17.0)
    assert _not_confident(image, truth.detector, "LaB6", 17.0 * 1.1)  # wavelength 10 % short


def test_bad_arguments():
    det = get_detector("Pilatus 1M").binned(4)
    image = np.zeros(det.shape, np.int32)
    with pytest.raises(ValueError, match="energy"):
        calibrate(image, det, "LaB6")
    with pytest.raises(ValueError, match="shape"):
        calibrate(image[:10], det, "LaB6", energy_kev=17.0)
    with pytest.raises(ValueError, match="fix"):
        calibrate(image, det, "LaB6", energy_kev=17.0, fix="rot4")
    with pytest.raises(ValueError, match="not both"):
        calibrate(image, det, "LaB6", energy_kev=17.0, wavelength=1e-10)


@pytest.fixture(scope="module")
def lab6_file(tmp_path_factory):
    fabio = pytest.importorskip("fabio")
    truth, image = synthetic_case(calibrant="LaB6", detector="Pilatus 1M", binning=2, dist=0.3,
                                  beam_fraction=(0.45, 0.5), tilt_deg=2, tilt_direction_deg=60)
    path = tmp_path_factory.mktemp("calib") / "lab6.edf"
    fabio.edfimage.EdfImage(data=image).write(str(path))
    return truth, path


def test_cli_writes_a_poni_that_xreduce_and_pyfai_load(lab6_file, tmp_path):
    truth, path = lab6_file
    out, report, plot = tmp_path / "r.poni", tmp_path / "r.json", tmp_path / "r.png"
    code = calib_main([str(path), "--calibrant", "LaB6", "--detector", "Pilatus1M", "--binning",
                       "2", "--energy", "17.0", "-o", str(out), "--report", str(report), "--plot",
                       str(plot)])
    assert code == 0
    refined = Geometry.load(out)
    data = json.loads(report.read_text())
    assert data["ok"] and set(data["uncertainties"]) == {"dist", "poni1", "poni2", "rot1", "rot2"}
    assert abs(refined.dist - truth.dist) < 1e-4 * truth.dist
    for name in ("dist", "poni1", "poni2", "rot1", "rot2"):
        assert abs(getattr(refined, name) - getattr(truth, name)) < 4 * data["uncertainties"][name]
    beam, true_beam = beam_centre_px(refined.with_(detector=truth.detector)), beam_centre_px(truth)
    assert math.hypot(beam[0] - true_beam[0], beam[1] - true_beam[1]) < 0.1
    assert plot.read_bytes()[:4] == b"\x89PNG"
    pyFAI = pytest.importorskip("pyFAI")
    ai = pyFAI.load(str(out))
    assert abs(ai.dist - refined.dist) < 1e-12 and abs(ai.rot2 - refined.rot2) < 1e-12


def test_cli_exits_non_zero_on_bad_input(lab6_file, tmp_path, capsys):
    truth, path = lab6_file
    out = tmp_path / "r.poni"
    code = calib_main([str(path), "--calibrant", "CeO2", "--detector", "Pilatus1M", "--binning",
                       "2", "--energy", "17.0", "-o", str(out)])
    assert code in (1, 2)
    assert "poor fit" in capsys.readouterr().err or code == 2
    assert calib_main([str(path), "--calibrant", "LaB6", "-o", str(out), "--energy", "17"]) == 2


def test_pyfai_scripted_path_from_our_start_agrees_and_we_are_closer():
    pytest.importorskip("pyFAI")
    from xreduce.calibration.compare import pyfai_refine

    truth, image = synthetic_case(**CASES[0])
    lab6 = get_calibrant("LaB6")
    ours = calibrate(image, truth.detector, "LaB6", energy_kev=17.0)
    sigma = ours.refinement.uncertainties
    # from our tilt-free bootstrap, extract_cp takes every ring at once and numbers some
    # points of the displaced outer rings as their neighbours (doc/calibration.md)
    boot = pyfai_refine(image, ours.start[0], lab6, truth=truth)
    assert boot["wrong_ring"] > 0.01
    # from our geometry refined on the 3 innermost rings with tilts (before the outward
    # stages) every point is on its ring, pyFAI lands within 5 of our standard uncertainties,
    # and ours is closer to the truth
    inner = next(geos for label, geos in ours.stages if label.endswith(", tilts"))[0]
    theirs = pyfai_refine(image, inner, lab6, truth=truth)
    assert theirs["wrong_ring"] == 0.0
    for name in ("dist", "poni1", "poni2", "rot1", "rot2"):
        assert abs(theirs[name] - getattr(ours.geometry, name)) < 5 * sigma[name], name
    for name in ("dist", "poni1", "poni2"):
        assert abs(getattr(ours.geometry, name) - getattr(truth, name)) < abs(theirs[name] - getattr(truth, name))
    # started from our result, pyFAI's refinement stays within 5 of our standard uncertainties
    settled = pyfai_refine(image, ours.geometry, lab6)
    for name in ("dist", "poni1", "poni2", "rot1", "rot2"):
        assert abs(settled[name] - getattr(ours.geometry, name)) < 5 * sigma[name], name


def test_pyfai_agrees_within_the_combined_stated_uncertainties():
    # The fair comparison (doc/calibration.md, "pyFAI's scripted path: a fair comparison"):
    # pyFAI from our 3-ring stage with one re-extraction around its own first result, and from
    # our final geometry; each tool's stated uncertainty is its own (ours: s^2 (J^T J)^-1 of
    # our weighted fit; pyFAI's: GeometryRefinement.curve_fit at its solution). Coverage
    # factor 3 on every bound (a normal deviate exceeds 3 with probability 0.3 %). Image:
    # LaB6, Eiger 4M binned 4, 0.9 m, 60 keV. Not every image agrees this well: on CASES[0]
    # pyFAI is 3.0 combined uncertainties off in rot1 (its sub-pixel peaks are pulled towards
    # pixel centres, next test, which its uncertainty does not count), and on CASES[1] (8x
    # binned, spotty) 19 % of its points are off their ring from any start (doc).
    pytest.importorskip("pyFAI")
    from xreduce.calibration.compare import agreement, pyfai_refine, pyfai_refine_points

    truth, image = synthetic_case(**CASES[2])
    lab6 = get_calibrant("LaB6")
    ours = calibrate(image, truth.detector, "LaB6", energy_kev=60.0)
    sigma = ours.refinement.uncertainties
    inner = next(geos for label, geos in ours.stages if label.endswith(", tilts"))[0]
    runs = [pyfai_refine(image, inner, lab6, truth=truth, reextract=1),
            pyfai_refine(image, ours.geometry, lab6, truth=truth)]
    for theirs in runs:
        assert theirs["wrong_ring"] == 0.0
        assert set(theirs["uncertainties"]) == {"dist", "poni1", "poni2", "rot1", "rot2"}
        for row in agreement(ours.geometry, sigma, theirs, theirs["uncertainties"], truth):
            assert abs(row["diff_combined"]) < 3, row
            assert abs(row["ours_err_sigma"]) < 3 and abs(row["theirs_err_sigma"]) < 3, row
            # pyFAI's points scatter more than ours: its stated uncertainty is the larger
            assert row["sigma_theirs"] > row["sigma_ours"], row
    # pyFAI reaches the same optimum from both starts (within its own uncertainty)
    for name, s in runs[0]["uncertainties"].items():
        assert abs(runs[0][name] - runs[1][name]) < s, name
    # the difference is in the control points, not in the least squares: pyFAI's refine3 on
    # OUR points (weighted 1/sigma like ours) stays at our solution, and from our 3-ring stage
    # lands within one of our uncertainties of it (its SLSQP stops a little short in the
    # PONI-tilt valley of long distances)
    at_ours = pyfai_refine_points(ours.refinement.points[0], ours.geometry, lab6)
    from_inner = pyfai_refine_points(ours.refinement.points[0], inner, lab6)
    for name in ("dist", "poni1", "poni2", "rot1", "rot2"):
        assert abs(at_ours[name] - getattr(ours.geometry, name)) < 0.05 * sigma[name], name
        assert abs(from_inner[name] - getattr(ours.geometry, name)) < sigma[name], name


def test_pyfai_control_points_are_pulled_towards_pixel_centres():
    # Why pyFAI lands farther from the truth: extract_cp's points are local maxima refined to
    # sub-pixel by a quadratic on 3 x 3 pixels, which on rings 1.5 px wide pulls them towards
    # the nearest pixel centre ("pixel locking"); ours are area-weighted centroids in 2theta.
    # Points extracted around the true geometry, offsets measured from the true rings.
    pytest.importorskip("pyFAI")
    from xreduce.calibration.compare import pyfai_refine, subpixel_bias

    truth, image = synthetic_case(**CASES[0])
    lab6 = get_calibrant("LaB6")
    theirs = pyfai_refine(image, truth, lab6, truth=truth, uncertainties=False)
    _, mean, error, count = subpixel_bias(theirs["data"], truth, lab6)
    # ring crossing 0.1-0.3 px below / above a pixel centre: the point moves up / down to it
    assert mean[1] > max(0.03, 5 * error[1]) and mean[3] < -max(0.03, 5 * error[3])
    assert count[2] > count[0] + count[4]  # and points pile up near pixel centres
    ours = calibrate(image, truth.detector, "LaB6", energy_kev=17.0).refinement.points[0]
    _, mean, error, count = subpixel_bias(np.column_stack([ours.rows, ours.cols, ours.ring]),
                                          truth, lab6)
    assert np.all(np.abs(mean[count >= 20]) < 0.04)
