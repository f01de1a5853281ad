"""The ``xreduce-calib`` command: refine a PONI geometry from a calibrant image.

Examples
--------
    xreduce-calib lab6.cbf --calibrant LaB6 --detector Pilatus1M --energy 17.0 -o refined.poni
    xreduce-calib lab6.h5::/entry/data/data[0] --calibrant LaB6 --detector "Eiger 4M" \\
        --energy 30 --poni guess.poni --fix rot3,wavelength -o refined.poni \\
        --report report.json --plot rings.png

Exit status: 0 when the fit is good, 1 when it is poor (the reasons are printed; the PONI is
still written, the thresholds are those of ``xreduce.calibration.Thresholds``, listed in
``doc/calibration.md``), 2 when it could not be done (bad input, no rings, rings that do not
match the calibrant).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xreduce-calib",
        description="Refine the geometry (PONI) of a calibrant image from the detector, the "
                    "calibrant and the energy; no starting geometry needed. Prints the refined "
                    "parameters with their uncertainties, and exits 1 when the fit is poor.")
    parser.add_argument("image", help="the calibrant image: a file fabio reads, or an HDF5 URL "
                                      "file.h5::/path[index]")
    parser.add_argument("--calibrant", required=True,
                        help="calibrant name (LaB6, CeO2, Si, Al2O3, Cr2O3, AgBh, NaCl, Au, Ni, "
                             "quartz) or a pyFAI .D file")
    parser.add_argument("--detector", help="detector name (e.g. Pilatus1M); default: the one of "
                                           "--poni")
    parser.add_argument("--binning", type=int, default=1, help="binning of the image (default 1)")
    energy = parser.add_mutually_exclusive_group()
    energy.add_argument("--energy", type=float, help="X-ray energy, keV")
    energy.add_argument("--wavelength", type=float, help="X-ray wavelength, Angstrom")
    parser.add_argument("--poni", help="a starting geometry (PONI file) instead of the automatic one")
    parser.add_argument("--fix", default="rot3,wavelength",
                        help="parameters kept fixed, comma separated (default rot3,wavelength; "
                             "'' refines all)")
    parser.add_argument("--mask", help="mask image (non-zero = ignore), a file fabio reads")
    parser.add_argument("-o", "--output", required=True, help="refined PONI file to write")
    parser.add_argument("--report", help="write a JSON report (parameters, uncertainties, "
                                         "correlations, per-ring residuals, checks)")
    parser.add_argument("--plot", help="write a PNG: refined rings on the image, residuals vs azimuth")
    return parser


def _read_image(url: str) -> np.ndarray:
    from xreduce.io import read_stack

    frames = read_stack(url)
    frames = np.asarray(frames)
    if frames.ndim == 3:
        if frames.shape[0] != 1:
            raise ValueError(f"image: expected one frame, {url!r} has {frames.shape[0]}; "
                             f"select one with file.h5::/path[index]")
        frames = frames[0]
    return frames


def _format(name: str, value: float, sigma: float) -> str:
    if name == "wavelength":
        return f"{name:10s} {value * 1e10:.7f} +- {sigma * 1e10:.2g} A"
    if name.startswith(("rot",)):
        return f"{name:10s} {value:+.6f} +- {sigma:.2g} rad"
    return f"{name:10s} {value:.7f} +- {sigma:.2g} m"


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xreduce.calibrant import get_calibrant
    from xreduce.calibration import calibrate, plot_calibration
    from xreduce.detectors import get_detector
    from xreduce.geometry import Geometry
    from xreduce.io.writers import atomic_output

    try:
        guess = Geometry.load(args.poni) if args.poni else None
        if args.detector:
            detector = get_detector(args.detector)
        elif guess is not None:
            detector = guess.detector
        else:
            raise ValueError("--detector: the detector is needed (or a --poni that names it)")
        if args.binning > 1:
            detector = detector.binned(args.binning)
        wavelength = None if args.wavelength is None else args.wavelength * 1e-10
        if args.energy is None and wavelength is None and (guess is None or guess.wavelength is None):
            raise ValueError("--energy: the energy (or --wavelength) is needed")
        calibrant = get_calibrant(args.calibrant)
        image = _read_image(args.image)
        mask = None
        if args.mask:
            import fabio

            mask = np.asarray(fabio.open(args.mask).data) != 0
        result = calibrate(image, detector, calibrant, energy_kev=args.energy,
                           wavelength=wavelength, geometry=guess, fix=args.fix, mask=mask)
    except (ValueError, TypeError, KeyError, OSError) as error:
        print(f"xreduce-calib: calibration failed: {error}", file=sys.stderr)
        return 2
    ref = result.refinement
    result.geometry.save(args.output)
    print(f"{calibrant.name}: {sum(len(p) for p in ref.points)} control points on "
          f"{len({r['ring'] for r in ref.per_ring})} rings, RMS residual {ref.rms_mdeg:.3g} mdeg "
          f"({ref.rms_px():.3g} px), reduced chi2 {ref.chi2_reduced:.3g}")
    for name in ref.names:
        print("  " + _format(name, ref.values[name], ref.uncertainties[name]))
    for warning in ref.warnings:
        print(f"warning: {warning}")
    if args.report:
        with atomic_output(args.report) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            json.dump(result.report(), handle, indent=1,
                      default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x)
    if args.plot:
        try:
            plot_calibration(args.plot, image, result)
        except ImportError:
            print("xreduce-calib: --plot needs matplotlib (pip install xreduce[plot]); "
                  "no figure written", file=sys.stderr)
    print(f"wrote {args.output}")
    if not result.ok:
        for problem in result.problems:
            print(f"poor fit: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
