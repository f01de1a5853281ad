"""Hexagonal-pixel (Pixirad) integration, pyFAI and xreduce.compat.pyfai side by side.

The same ``AzimuthalIntegrator(...)`` on a Pixirad detector (default Pixirad8, 476 x 4096
hexagonal pixels) and the same ``integrate1d`` / ``integrate2d`` calls through pyFAI and
through the compat module, timed alternately frame by frame with a pause after each call (as
in bench_compat_pyfai.py): the first call (matrix build included) and the median per frame.
pyFAI's full splitting refuses 6-cornered pixels: that row times xreduce alone. Intensities
are not compared here: pyFAI places a hexagon's centre a quarter pitch off (doc/detectors.md),
tests/test_detectors_hexagonal.py compares them on equal centres.

Run: ``python benchmarks/bench_hexagonal.py [--detector Pixirad8] [--frames 5]``.
Ratios > 1: xreduce faster.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np

PAUSE_S = 0.2
CASES = [  # label, method name, args, keywords
    ("1D no split 1000", "integrate1d", (1000,), dict(method=("no", "csr", "cython"))),
    ("1D bbox 1000", "integrate1d", (1000,), dict(method=("bbox", "csr", "cython"))),
    ("2D bbox 500x360", "integrate2d", (500, 360), dict(method=("bbox", "csr", "cython"))),
    ("1D full 1000", "integrate1d", (1000,), dict(method=("full", "csr", "cython"))),
]


def timed(call):
    start = time.perf_counter()
    try:
        call()
    except Exception as error:  # noqa: BLE001 - pyFAI refuses some methods: reported
        return None, f"{type(error).__name__}"
    return time.perf_counter() - start, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="Pixirad8")
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("pyFAI").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyfaiAI

    from xreduce.compat.pyfai import AzimuthalIntegrator as CompatAI

    kw = dict(dist=0.08, poni1=0.012, poni2=0.06, rot1=0.01, rot2=-0.01,
              detector=args.detector, wavelength=0.7e-10)
    theirs, ours = PyfaiAI(**kw), CompatAI(**kw)
    shape = tuple(ours.detector.shape)
    rng = np.random.default_rng(0)
    frames = [rng.poisson(100, shape).astype(np.uint32) for _ in range(args.frames)]
    print(f"{args.detector} {shape}, {args.frames} frames")
    print(f"{'case':18s} {'first call x / pyFAI (s)':>26s} {'per frame x / pyFAI (ms)':>26s} "
          f"{'ratio':>6s}")
    for label, name, call_args, kwargs in CASES:
        first = []
        for tool in (theirs, ours):
            first.append(timed(lambda: getattr(tool, name)(frames[0], *call_args, **kwargs)))
            time.sleep(PAUSE_S)
        per = {id(theirs): [], id(ours): []}
        for frame in frames:
            for tool in (theirs, ours):
                if first[0 if tool is theirs else 1][0] is None:
                    continue
                t, _ = timed(lambda: getattr(tool, name)(frame, *call_args, **kwargs))
                per[id(tool)].append(t)
                time.sleep(PAUSE_S)
        ours_ms = 1e3 * statistics.median(per[id(ours)])
        if first[0][0] is None:
            print(f"{label:18s} {first[1][0]:10.3f} / {'refused (' + first[0][1] + ')':>13s} "
                  f"{ours_ms:10.1f} / {'-':>13s} {'-':>6s}")
            continue
        theirs_ms = 1e3 * statistics.median(per[id(theirs)])
        print(f"{label:18s} {first[1][0]:10.3f} / {first[0][0]:13.3f} "
              f"{ours_ms:10.1f} / {theirs_ms:13.1f} {theirs_ms / ours_ms:6.2f}")


if __name__ == "__main__":
    main()
