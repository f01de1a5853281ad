"""A pyFAI script's calls, run by pyFAI and by xreduce.compat.pyfai side by side in one process.

The same ``AzimuthalIntegrator(...)`` and the same calls with pyFAI's defaults (method
``("bbox", "csr", "cython")``, unit ``q_nm^-1``, pyFAI's box, 2D azimuthal range from the
data), on a Pilatus 1M with uint32 frames: what a user sees after swapping the import. For
each case: the first call (matrix build included) and the median per-frame time over
``--frames`` frames, the two tools timed alternately frame by frame with a pause after each
call (each tool's OpenMP threads keep spinning a while after a parallel region; see
bench_integrate.py), and the largest relative difference of the intensities (bins with more
than 10 pixels).

Run: ``python benchmarks/bench_compat_pyfai.py [--frames 7]``. Ratios > 1: xreduce faster.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np

PAUSE_S = 0.2
KW = dict(dist=0.15, poni1=0.09, poni2=0.08, rot1=0.02, rot2=-0.015, rot3=0.0,
          detector="Pilatus1M", wavelength=0.7e-10)
CASES = [  # label, method name, args, keywords
    ("integrate1d default", "integrate1d", (1000,), {}),
    ("integrate1d full, 2th_deg, poisson", "integrate1d", (1000,),
     dict(method=("full", "csr", "cython"), unit="2th_deg", error_model="poisson")),
    ("integrate2d default 500x360", "integrate2d", (500, 360), {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("pyFAI").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyfaiAI

    from xreduce.compat.pyfai import AzimuthalIntegrator as CompatAI

    rng = np.random.default_rng(0)
    theirs, ours = PyfaiAI(**KW), CompatAI(**KW)
    frames = [rng.poisson(100, (1043, 981)).astype(np.uint32) for _ in range(args.frames)]
    print(f"{'case':38s} {'first call x / pyFAI':>22s} {'per frame x / pyFAI':>24s} "
          f"{'ratio':>6s} {'max rel diff':>12s}")
    for label, name, call_args, kwargs in CASES:
        t0 = time.perf_counter()
        ref = getattr(theirs, name)(frames[0], *call_args, **kwargs)
        first_theirs = time.perf_counter() - t0
        time.sleep(PAUSE_S)
        t0 = time.perf_counter()
        res = getattr(ours, name)(frames[0], *call_args, **kwargs)
        first_ours = time.perf_counter() - t0
        keep = np.asarray(ref.count) > 10
        diff = np.max(np.abs(np.asarray(res.intensity)[keep] / np.asarray(ref.intensity)[keep]
                             - 1))
        t_ours, t_theirs = [], []
        for frame in frames:
            for ai, times in ((ours, t_ours), (theirs, t_theirs)):
                t0 = time.perf_counter()
                getattr(ai, name)(frame, *call_args, **kwargs)
                times.append(time.perf_counter() - t0)
                time.sleep(PAUSE_S)
        med_ours, med_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"{label:38s} {first_ours:9.3f} / {first_theirs:6.3f} s "
              f"{med_ours * 1e3:10.1f} / {med_theirs * 1e3:7.1f} ms "
              f"{med_theirs / med_ours:5.1f}x {diff:12.1e}")


if __name__ == "__main__":
    main()
