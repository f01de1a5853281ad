"""Calibration from a calibrant image: xreduce vs pyFAI's scripted path, side by side in one run.

For every synthetic case (calibrant, detector, distance, beam position, tilt, spotty rings,
beam stop) the image is made from a known geometry, then:

- xreduce: ``calibrate(image, detector, calibrant, energy_kev=...)`` from no guess at all
  (beam centre, distance, ring numbers and tilts found from the image), timed;
- pyFAI: ``SingleGeometry.extract_cp`` + ``GeometryRefinement.refine3`` (pyFAI has no
  guess-free scripted path), then ``GeometryRefinement.curve_fit`` for pyFAI's own standard
  uncertainties, timed, from five starts (six runs):

  - "pyFAI": xreduce's bootstrap (beam centre, distance, no tilt), every ring at once
    (``extract_cp``'s default);
  - "pyFAI+": the same bootstrap, pyFAI's tools applied outwards (3 rings without then with
    tilts, then 6, 12, ... rings, refining after each), as a pyFAI-calib2 user would;
  - "pyFAI3": xreduce's geometry refined on its innermost rings with tilts, before its outward
    stages and final passes (``CalibrationResult.stages``), one extraction;
  - "pyFAI3r": the same start, then one more ``extract_cp`` + ``refine3`` around pyFAI's own
    first result (as pyFAI-calib2 users do): the fair comparison (doc/calibration.md);
  - "pyFAI3r20": the same, on the innermost 20 rings only (``extract_cp(max_rings=20)``), as
    a pyFAI user does on dense patterns where the outer rings crowd (the same as pyFAI3r on
    cases with at most 20 rings on the detector);
  - "pyFAI*": xreduce's refined geometry (a user refining from the best guess they have).

All are compared with the truth: distance (relative), PONI (pixels), rotations (rad), the
beam centre (pixels), and xreduce's errors in units of its reported standard uncertainties;
for pyFAI, (pyFAI - xreduce) in units of the combined uncertainty sqrt(s_xreduce^2 +
s_pyFAI^2), each tool's error in its own uncertainty, and the fraction of its control points
given the wrong ring number. For pyFAI3r, pyFAI3r20 and pyFAI* a per-parameter table (xreduce, pyFAI,
truth, both uncertainties, which is closer) follows, and cross-checks of where the
difference comes from: pyFAI's ``refine3`` on xreduce's control points (weighted 1/sigma),
and xreduce's least squares on pyFAI's control points. The ratio is pyFAI's time over
xreduce's (xreduce's time includes its bootstrap and validation; pyFAI's does not).

Usage: ``python benchmarks/bench_calib.py [--small] [--binning N] [--cases 9,10,11]
[--no-pyfai] [--json out.json]`` (``--small``: 3 cases, 2x binned detectors; default: the full
matrix at full resolution; ``--cases``: those cases only, numbered from 0).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings

CASES = [  # calibrant, detector, dist (m), beam (fraction of rows, cols), tilt (deg), direction,
    #        energy (keV), spotty, beam stop radius (px, full resolution)
    ("LaB6", "Pilatus 1M", 0.15, (0.3, 0.4), 3.0, 30, 17.0, 0.0, 0),
    ("CeO2", "Pilatus 1M", 0.25, (0.7, 0.3), 5.0, 200, 17.0, 0.7, 24),
    ("Si", "Pilatus 1M", 0.12, (0.5, 0.5), 4.0, 120, 17.0, 0.0, 30),
    ("LaB6", "Eiger 4M", 0.2, (0.45, 0.6), 5.0, 300, 25.0, 0.5, 30),
    ("CeO2", "Eiger 4M", 0.5, (0.2, 0.8), 2.0, 60, 30.0, 0.0, 0),
    ("Si", "Eiger 4M", 0.08, (0.5, 0.5), 3.0, 10, 17.0, 0.0, 20),
    ("LaB6", "Perkin Elmer", 0.3, (0.5, 0.5), 2.0, 240, 60.0, 0.0, 20),
    ("CeO2", "Perkin Elmer", 1.0, (0.4, 0.5), 1.0, 150, 80.0, 0.0, 0),
    ("Si", "Perkin Elmer", 0.6, (0.6, 0.45), 4.0, 330, 40.0, 0.8, 15),
    ("LaB6", "Eiger 4M", 0.05, (0.5, 0.55), 2.0, 90, 17.0, 0.0, 0),
    # short distance, dense rings everywhere: 5 degrees, spotty, beam stop; beam near an edge
    ("CeO2", "Eiger 4M", 0.05, (0.3, 0.6), 5.0, 45, 17.0, 0.5, 30),
    ("LaB6", "Eiger 4M", 0.05, (0.08, 0.9), 5.0, 250, 17.0, 0.0, 0),
    # long distance, few rings (4 on the detector)
    ("LaB6", "Perkin Elmer", 1.0, (0.5, 0.5), 3.0, 200, 30.0, 0.0, 0),
]


def run_case(case, binning: int, pyfai: bool) -> dict:
    from xreduce.calibrant import get_calibrant
    from xreduce.calibration import beam_centre_px, calibrate
    from xreduce.calibration.synthetic import synthetic_case

    calibrant, detector, dist, beam, tilt, direction, energy, spotty, stop = case
    truth, image = synthetic_case(calibrant, detector, binning, dist, beam, tilt, direction,
                                  energy_kev=energy, spotty=spotty,
                                  beamstop_radius_px=stop / binning, seed=7)
    pixel = truth.detector.pixel1
    row = {"case": f"{calibrant} {detector}/{binning} {dist} m tilt {tilt} deg"
                   f"{' spotty' if spotty else ''}{' beamstop' if stop else ''}",
           "shape": list(image.shape)}

    def errors(geo):
        true_beam, beam_rc = beam_centre_px(truth), beam_centre_px(geo)
        return {"dist_rel": (geo.dist - truth.dist) / truth.dist,
                "poni1_px": (geo.poni1 - truth.poni1) / pixel,
                "poni2_px": (geo.poni2 - truth.poni2) / pixel,
                "rot1": geo.rot1 - truth.rot1, "rot2": geo.rot2 - truth.rot2,
                "beam_px": math.hypot(beam_rc[0] - true_beam[0], beam_rc[1] - true_beam[1])}

    start = time.perf_counter()
    try:
        result = calibrate(image, truth.detector, calibrant, energy_kev=energy)
    except ValueError as error:
        row["xreduce"] = {"failed": str(error), "time_s": time.perf_counter() - start}
        return row
    elapsed = time.perf_counter() - start
    sigma = result.refinement.uncertainties
    ours = errors(result.geometry)
    ours["sigmas"] = {name: abs(getattr(result.geometry, name) - getattr(truth, name)) / sigma[name]
                      for name in ("dist", "poni1", "poni2", "rot1", "rot2")}
    ours.update(time_s=elapsed, ok=result.ok, problems=result.problems,
                points=sum(len(p) for p in result.refinement.points))
    row["xreduce"] = ours
    if pyfai:
        _run_pyfai(row, image, truth, result, get_calibrant(calibrant), errors)
    return row


#: (key, label, start, pyfai_refine options) of the pyFAI runs; the start is taken from
#: xreduce's result: "start" its bootstrap, "inner" its 3-ring stage, "final" its answer.
PYFAI_RUNS = [("pyfai", "pyFAI", "start", {}),
              ("pyfai_outwards", "pyFAI+", "start", {"rings_outwards": True}),
              ("pyfai_inner", "pyFAI3", "inner", {}),
              ("pyfai_inner_reextract", "pyFAI3r", "inner", {"reextract": 1}),
              ("pyfai_inner_reextract_20", "pyFAI3r20", "inner", {"reextract": 1, "max_rings": 20}),
              ("pyfai_from_ours", "pyFAI*", "final", {})]
#: The runs shown parameter by parameter (the fair comparisons).
TABLED = ("pyfai_inner_reextract", "pyfai_inner_reextract_20", "pyfai_from_ours")


def _run_pyfai(row, image, truth, result, calibrant, errors) -> None:
    import numpy as np
    from xreduce.calibration import refine_geometry
    from xreduce.calibration.compare import (COMPARED, agreement, point_offsets_px,
                                             pyfai_refine, pyfai_refine_points, subpixel_bias)
    from xreduce.calibration.peaks import ControlPoints

    sigma = result.refinement.uncertainties
    starts = {"start": result.start[0], "final": result.geometry,
              "inner": next(geos for label, geos in result.stages if label.endswith(", tilts"))[0]}
    mine = result.refinement.points[0]
    mine = np.column_stack([mine.rows, mine.cols, mine.ring])
    row["xreduce"]["point_spread_px"] = _spread(point_offsets_px(mine, truth, calibrant),
                                                subpixel_bias(mine, truth, calibrant))
    for key, _, begin, options in PYFAI_RUNS:
        start = time.perf_counter()
        try:
            theirs = pyfai_refine(image, starts[begin], calibrant, truth=truth, **options)
        except Exception as error:  # pyFAI failing is a result to report, not a crash
            row[key] = {"failed": f"{type(error).__name__}: {error}",
                        "time_s": time.perf_counter() - start}
            continue
        elapsed = time.perf_counter() - start
        geo = result.geometry.with_(**{k: theirs[k] for k in COMPARED})
        table = agreement(result.geometry, sigma, theirs, theirs["uncertainties"], truth)
        row[key] = {**errors(geo), "time_s": elapsed, "points": theirs["points"],
                    "wrong_ring": theirs["wrong_ring"], "table": table,
                    "point_spread_px": _spread(point_offsets_px(theirs["data"], truth, calibrant),
                                               subpixel_bias(theirs["data"], truth, calibrant)),
                    "diff_sigmas": {r["name"]: abs(r["theirs"] - r["ours"]) / r["sigma_ours"]
                                    for r in table}}
        if key == "pyfai_inner_reextract":  # where does the difference come from?
            on_ours = pyfai_refine_points(result.refinement.points[0], starts["inner"], calibrant)
            at_ours = pyfai_refine_points(result.refinement.points[0], starts["final"], calibrant)
            data = theirs["data"]
            their_points = ControlPoints(data[:, 0].copy(), data[:, 1].copy(),
                                         data[:, 2].astype(np.int64), np.ones(len(data)))
            plain = refine_geometry(their_points, starts["inner"], calibrant.d_spacings,
                                    fix=("rot3", "wavelength"), loss="linear", outlier_sigma=1e9)
            robust = refine_geometry(their_points, starts["inner"], calibrant.d_spacings,
                                     fix=("rot3", "wavelength"))
            row["cross_checks"] = {
                "pyfai_on_our_points_minus_ours_in_our_sigmas":
                    {k: (on_ours[k] - getattr(result.geometry, k)) / sigma[k] for k in COMPARED},
                "pyfai_on_our_points_from_ours_minus_ours_in_our_sigmas":
                    {k: (at_ours[k] - getattr(result.geometry, k)) / sigma[k] for k in COMPARED},
                # > 0: pyFAI's SLSQP stopped above the minimum it reaches from our solution
                "pyfai_on_our_points_sum_squares_excess":
                    {"relative": on_ours["sum_squares"] / at_ours["sum_squares"] - 1},
                "ours_plain_on_pyfai_points_minus_pyfai_in_pyfai_sigmas":
                    {k: (plain.values[k] - theirs[k]) / theirs["uncertainties"][k] for k in COMPARED},
                "ours_robust_on_pyfai_points_err_in_our_sigmas":
                    {k: (robust.values[k] - getattr(truth, k)) / sigma[k] for k in COMPARED}}


def _spread(offsets_px, bias) -> dict:
    """Scatter of control points about the true ring: robust (1.4826 MAD) and RMS, pixels, the
    fraction more than 1 px off, and the pixel locking: half the difference of the mean offsets
    of points whose true ring crosses 0.1-0.3 px below and above a pixel centre (positive =
    pulled towards the centre; ``compare.subpixel_bias``)."""
    import numpy as np

    offsets_px = np.asarray(offsets_px)
    _, mean, error, _ = bias
    return {"mad_px": float(1.4826 * np.median(np.abs(offsets_px - np.median(offsets_px)))),
            "rms_px": float(np.sqrt(np.mean(offsets_px ** 2))),
            "beyond_1px": float(np.mean(np.abs(offsets_px) > 1.0)),
            "locking_px": float((mean[1] - mean[3]) / 2),
            "locking_error_px": float(np.hypot(error[1], error[3]) / 2)}


def _line(label, e):
    if "failed" in e:
        return f"  {label:8s} FAILED ({e['time_s']:.1f} s): {e['failed'][:90]}"
    text = (f"  {label:8s} {e['time_s']:6.2f} s  dist {e['dist_rel']:+.1e}  poni {e['poni1_px']:+.3f} "
            f"{e['poni2_px']:+.3f} px  rot {e['rot1']:+.1e} {e['rot2']:+.1e}  beam {e['beam_px']:.3f} px"
            f"  {e['points']} pts")
    if "sigmas" in e:
        text += "  |err|/sigma " + " ".join(f"{v:.1f}" for v in e["sigmas"].values())
        text += "  OK" if e["ok"] else f"  POOR: {e['problems'][0][:60]}"
    if "table" in e:
        text += ("  (pyFAI-ours)/combined " + " ".join(f"{r['diff_combined']:+.1f}" for r in e["table"])
                 + f"  wrong ring {100 * e['wrong_ring']:.1f} %")
    if "point_spread_px" in e:
        spread = e["point_spread_px"]
        text += (f"  points off the true ring: MAD {spread['mad_px']:.3f} px, RMS {spread['rms_px']:.3f}"
                 f" px, {100 * spread['beyond_1px']:.1f} % > 1 px, locking {spread['locking_px']:+.3f}"
                 f" +- {spread['locking_error_px']:.3f} px")
    return text


def _table(table) -> str:
    lines = [f"    {'':6s} {'xreduce':>14s} {'pyFAI':>14s} {'truth':>14s} {'s_xreduce':>9s} "
             f"{'s_pyFAI':>9s} {'diff/comb':>9s} {'x err/s':>8s} {'p err/s':>8s}  closer"]
    for r in table:
        lines.append(f"    {r['name']:6s} {r['ours']:14.8g} {r['theirs']:14.8g} {r['truth']:14.8g} "
                     f"{r['sigma_ours']:9.2e} {r['sigma_theirs']:9.2e} {r['diff_combined']:+9.2f} "
                     f"{r['ours_err_sigma']:+8.2f} {r['theirs_err_sigma']:+8.2f}  {r['closer']}")
    return "\n".join(lines)


def _markdown(rows) -> str:
    """The benchmark table of doc/calibration.md, one line per case."""
    def error(e):
        return (f"{abs(e['dist_rel']):.1e} / {max(abs(e['poni1_px']), abs(e['poni2_px'])):.3f} px / "
                f"{max(abs(e['rot1']), abs(e['rot2'])):.1e}")

    def fair(e):
        if "table" not in e:
            return "failed"
        table = e["table"]
        ratio = [r["sigma_theirs"] / r["sigma_ours"] for r in table]
        return (f"{max(abs(r['diff_combined']) for r in table):.1f}; "
                f"{max(abs(r['theirs_err_sigma']) for r in table):.1f}; "
                f"{min(ratio):.1f}-{max(ratio):.1f}; "
                f"{sum(r['closer'] == 'xreduce' for r in table)}/5")

    lines = ["| case | xreduce time | xreduce error dist / PONI / rot | xreduce max err/sigma | "
             "pyFAI from bootstrap: error; points off their ring | pyFAI+ (outwards): error; time | "
             "pyFAI3r: max abs(diff) / combined sigma; pyFAI max abs(err) / own sigma; sigma_pyFAI/sigma_xreduce; "
             "xreduce closer; time | pyFAI3r20 (20 rings): the same | pyFAI*: the same | "
             "pixel locking pyFAI3r / xreduce (px) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ours = row["xreduce"]
        if "failed" in ours:
            lines.append(f"| {row['case']} | failed: {ours['failed'][:60]} |")
            continue
        cells = [row["case"], f"{ours['time_s']:.1f} s", error(ours),
                 f"{max(ours['sigmas'].values()):.1f}"]
        boot, out, inner, inner20, final = (row.get(k, {}) for k in (
            "pyfai", "pyfai_outwards", "pyfai_inner_reextract", "pyfai_inner_reextract_20",
            "pyfai_from_ours"))
        cells.append(f"{error(boot)}; {100 * boot['wrong_ring']:.1f} %" if "table" in boot else "failed")
        cells.append(f"{error(out)}; {out['time_s']:.1f} s" if "table" in out else "failed")
        cells.append(f"{fair(inner)}; {inner['time_s']:.1f} s" if "table" in inner else "failed")
        cells.append(fair(inner20))
        cells.append(fair(final))
        cells.append(f"{inner['point_spread_px']['locking_px']:+.3f} / "
                     f"{ours['point_spread_px']['locking_px']:+.3f}" if "table" in inner else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="3 cases, 2x binned")
    parser.add_argument("--binning", type=int, default=None, help="detector binning (default 1)")
    parser.add_argument("--no-pyfai", action="store_true", help="time xreduce only")
    parser.add_argument("--cases", help="comma-separated case numbers (0-based) to run")
    parser.add_argument("--json", help="write the rows as JSON")
    parser.add_argument("--markdown", action="store_true",
                        help="finish with the table of doc/calibration.md's benchmark section")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    cases = CASES[:3] if args.small else CASES
    if args.cases:
        cases = [CASES[int(n)] for n in args.cases.split(",")]
    binning = args.binning or (2 if args.small else 1)
    rows = []
    for case in cases:
        row = run_case(case, binning, not args.no_pyfai)
        rows.append(row)
        print(f"{row['case']}  {tuple(row['shape'])}")
        print(_line("xreduce", row["xreduce"]))
        for key, label, _, _ in PYFAI_RUNS:
            if key not in row:
                continue
            print(_line(label, row[key]))
            if "failed" not in row[key] and "failed" not in row["xreduce"]:
                ratio = row[key]["time_s"] / row["xreduce"]["time_s"]
                closer = sum(r["closer"] == "xreduce" for r in row[key]["table"])
                within = sum(abs(r["diff_combined"]) <= 3 for r in row[key]["table"])
                print(f"  {'':8s} {label} / xreduce time: {ratio:.2f}x; xreduce closer to the "
                      f"truth on {closer}/5 parameters; |pyFAI - xreduce| <= 3 combined "
                      f"uncertainties on {within}/5")
                if key in TABLED:
                    print(_table(row[key]["table"]))
        if "cross_checks" in row:
            for name, values in row["cross_checks"].items():
                print(f"  {'':8s} {name}: " + " ".join(f"{k} {v:+.3g}" for k, v in values.items()))
    for key, label, _, _ in PYFAI_RUNS:
        tables = [row[key]["table"] for row in rows if "table" in row.get(key, {})]
        if not tables:
            continue
        values = [r for table in tables for r in table]
        print(f"{label:8s} over {len(tables)} cases, {len(values)} parameters: |pyFAI - xreduce| <= 3 "
              f"combined uncertainties on {sum(abs(r['diff_combined']) <= 3 for r in values)} "
              f"(largest {max(abs(r['diff_combined']) for r in values):.1f}); each within 3 of "
              f"its own uncertainty of the truth: xreduce "
              f"{sum(abs(r['ours_err_sigma']) <= 3 for r in values)}, pyFAI "
              f"{sum(abs(r['theirs_err_sigma']) <= 3 for r in values)}; closer to the truth: "
              f"xreduce {sum(r['closer'] == 'xreduce' for r in values)}, pyFAI "
              f"{sum(r['closer'] == 'pyFAI' for r in values)}")
    if args.markdown:
        print(_markdown(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
