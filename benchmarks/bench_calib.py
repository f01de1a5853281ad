"""Calibration from a calibrant image: xreduce vs pyFAI's scripted path, side by side in one run.

For every synthetic case (calibrant, detector, distance, beam position, tilt, spotty rings,
beam stop) the image is made from a known geometry, then:

- xreduce: ``calibrate(image, detector, calibrant, energy_kev=...)`` from no guess at all
  (beam centre, distance, ring numbers and tilts found from the image), timed;
- pyFAI: ``SingleGeometry.extract_cp`` + ``GeometryRefinement.refine3`` (pyFAI has no
  guess-free scripted path), timed, from four starts:

  - "pyFAI": xreduce's bootstrap (beam centre, distance, no tilt), every ring at once
    (``extract_cp``'s default);
  - "pyFAI+": the same bootstrap, pyFAI's tools applied outwards (3 rings without then with
    tilts, then 6, 12, ... rings, refining after each), as a pyFAI-calib2 user would;
  - "pyFAI3": xreduce's geometry refined on its innermost rings with tilts, before its outward
    stages and final passes: the fairest start xreduce's workflow has before its final
    refinement (``CalibrationResult.stages``);
  - "pyFAI*": xreduce's refined geometry: does pyFAI's refinement stay there?

All are compared with the truth: distance (relative), PONI (pixels), rotations (rad), the
beam centre (pixels), and xreduce's errors in units of its reported standard uncertainties;
for pyFAI, its difference from xreduce's result in xreduce's uncertainties and the fraction of
its control points given the wrong ring number. The ratio is pyFAI's time over xreduce's
(xreduce's time includes its bootstrap and validation; pyFAI's does not).

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
        from xreduce.calibration.compare import pyfai_refine

        inner = next(geos for label, geos in result.stages if label.endswith(", tilts"))[0]
        for key, begin, outwards in (("pyfai", result.start[0], False),
                                     ("pyfai_outwards", result.start[0], True),
                                     ("pyfai_inner", inner, False),
                                     ("pyfai_from_ours", result.geometry, False)):
            start = time.perf_counter()
            try:
                theirs = pyfai_refine(image, begin, get_calibrant(calibrant),
                                      rings_outwards=outwards, truth=truth)
            except Exception as error:  # pyFAI failing is a result to report, not a crash
                row[key] = {"failed": f"{type(error).__name__}: {error}",
                            "time_s": time.perf_counter() - start}
                continue
            elapsed = time.perf_counter() - start
            geo = result.geometry.with_(**{k: theirs[k] for k in ("dist", "poni1", "poni2", "rot1",
                                                                  "rot2", "rot3")})
            row[key] = {**errors(geo), "time_s": elapsed, "points": theirs["points"],
                        "wrong_ring": theirs["wrong_ring"],
                        "diff_sigmas": {name: abs(theirs[name] - getattr(result.geometry, name))
                                        / sigma[name]
                                        for name in ("dist", "poni1", "poni2", "rot1", "rot2")}}
    return row


def _line(label, e):
    if "failed" in e:
        return f"  {label:8s} FAILED ({e['time_s']:.1f} s): {e['failed'][:90]}"
    text = (f"  {label:8s} {e['time_s']:6.2f} s  dist {e['dist_rel']:+.1e}  poni {e['poni1_px']:+.3f} "
            f"{e['poni2_px']:+.3f} px  rot {e['rot1']:+.1e} {e['rot2']:+.1e}  beam {e['beam_px']:.3f} px"
            f"  {e['points']} pts")
    if "sigmas" in e:
        text += "  |err|/sigma " + " ".join(f"{v:.1f}" for v in e["sigmas"].values())
        text += "  OK" if e["ok"] else f"  POOR: {e['problems'][0][:60]}"
    if "diff_sigmas" in e:
        text += "  |pyFAI-ours|/sigma " + " ".join(f"{v:.0f}" for v in e["diff_sigmas"].values())
        text += f"  wrong ring {100 * e['wrong_ring']:.0f} %"
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="3 cases, 2x binned")
    parser.add_argument("--binning", type=int, default=None, help="detector binning (default 1)")
    parser.add_argument("--no-pyfai", action="store_true", help="time xreduce only")
    parser.add_argument("--cases", help="comma-separated case numbers (0-based) to run")
    parser.add_argument("--json", help="write the rows as JSON")
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
        for key, label in (("pyfai", "pyFAI"), ("pyfai_outwards", "pyFAI+"),
                           ("pyfai_inner", "pyFAI3"), ("pyfai_from_ours", "pyFAI*")):
            if key not in row:
                continue
            print(_line(label, row[key]))
            if "failed" not in row[key] and "failed" not in row["xreduce"]:
                ratio = row[key]["time_s"] / row["xreduce"]["time_s"]
                closer = [name for name in ("dist_rel", "poni1_px", "poni2_px", "rot1", "rot2")
                          if abs(row["xreduce"][name]) < abs(row[key][name])]
                print(f"  {'':8s} {label} / xreduce time: {ratio:.2f}x; xreduce closer to the "
                      f"truth on {len(closer)}/5 parameters")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
