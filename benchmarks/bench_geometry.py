"""Per-pixel geometry arrays for an Eiger 4M: xreduce vs pyFAI, side by side in one run.

Each repetition builds fresh objects (no cache on either side) and computes 2theta, chi, the
solid angle and the corner array (2theta in degrees + chi at the 4 corners), each timed
separately. pyFAI's corner array is float32; xreduce's is timed in float32 (same output) and
float64. The best of ``--repeat`` runs is reported.

Usage: ``python benchmarks/bench_geometry.py [--repeat 5] [--detector "Eiger 4M"]``
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np

PARAMS = dict(dist=0.15, poni1=0.08, poni2=0.075, rot1=0.03, rot2=-0.02, rot3=0.01,
              wavelength=1e-10)


def _best(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def xreduce_steps(detector_name: str) -> dict:
    from xreduce import Geometry, get_detector

    detector = get_detector(detector_name)

    def fresh():
        return Geometry(**PARAMS, detector=detector)

    return {
        "2theta": lambda: fresh().twotheta_array(),
        "chi": lambda: fresh().chi_array(),
        "2theta + chi": lambda: (lambda g: (g.twotheta_array(), g.chi_array()))(fresh()),
        "solid angle": lambda: fresh().solid_angle_array(),
        "corner array (float32)": lambda: fresh().corner_array("2th_deg", dtype=np.float32),
        "corner array (float64)": lambda: fresh().corner_array("2th_deg"),
        "all four": lambda: (lambda g: (g.twotheta_array(), g.chi_array(), g.solid_angle_array(),
                                        g.corner_array("2th_deg", dtype=np.float32)))(fresh()),
    }


def pyfai_steps(detector_name: str) -> dict:
    import pyFAI.detectors
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    detector = pyFAI.detectors.detector_factory(detector_name.replace(" ", ""))

    def fresh():
        return AzimuthalIntegrator(detector=detector, **PARAMS)

    return {
        "2theta": lambda: fresh().twoThetaArray(),
        "chi": lambda: fresh().chiArray(),
        "2theta + chi": lambda: (lambda a: (a.twoThetaArray(), a.chiArray()))(fresh()),
        "solid angle": lambda: fresh().solidAngleArray(),
        "corner array (float32)": lambda: fresh().array_from_unit(typ="corner", unit="2th_deg"),
        "corner array (float64)": None,
        "all four": lambda: (lambda a: (a.twoThetaArray(), a.chiArray(), a.solidAngleArray(),
                                        a.array_from_unit(typ="corner", unit="2th_deg")))(fresh()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--detector", default="Eiger 4M")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")          # pyFAI's deprecation notices
    logging.getLogger("pyFAI").setLevel(logging.ERROR)
    from xreduce.ext import openmp_info

    ours = xreduce_steps(args.detector)
    try:
        theirs = pyfai_steps(args.detector)
        import pyFAI
        their_version = pyFAI.version
    except ImportError:
        theirs, their_version = {}, "not installed"
    print(f"{args.detector}, best of {args.repeat}, OpenMP threads: {openmp_info.max_threads()}, "
          f"pyFAI {their_version}")
    print(f"{'step':<26}{'xreduce (ms)':>14}{'pyFAI (ms)':>14}{'pyFAI / xreduce':>18}")
    for name, function in ours.items():
        mine = _best(function, args.repeat)
        other = theirs.get(name)
        if other is None:
            print(f"{name:<26}{mine * 1e3:14.1f}{'-':>14}{'-':>18}")
            continue
        their_time = _best(other, args.repeat)
        print(f"{name:<26}{mine * 1e3:14.1f}{their_time * 1e3:14.1f}{their_time / mine:18.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
