"""Azimuthal integration: xreduce against pyFAI, side by side in one process on the same frames.

Eiger 4M, 1000 radial bins in 2theta (degrees), Poisson errors, solid angle and polarization
(0.99) corrections; 1D with no / bbox / full splitting and a 2D 500 x 360 bbox cake; uint32
frames as the detector writes them. For each case:

- per-frame time: median over ``--frames`` different frames, after one warm-up call, the two
  tools timed alternately frame by frame (both see the same load on a shared machine), with a
  pause of ``PAUSE_S`` after every call: each tool brings its own OpenMP runtime, whose threads
  keep spinning for a while after a parallel region; without the pause the one tool's
  spinning threads take the cores the other's next call needs (measured: xreduce's 1D bbox
  frame 9.2 ms right after a pyFAI call, 6.4 ms after a pause; pyFAI's unaffected);
- matrix build time: first call after ``reset_engines()`` (each tool keeps its cached pixel
  arrays and corrections, and builds its sparse engine again) minus the per-frame time, best
  of 3;
- matrix memory: bytes of indptr + indices + coefficients;
- the memory-bandwidth floor: the time NumPy needs to read the frame plus the matrix once
  (one-thread ``numpy.sum`` over the same bytes), the least any CSR integration can take on
  one core.

Run: ``python benchmarks/bench_integrate.py [--frames 7] [--quick]``. Ratios > 1 mean
xreduce is faster (or smaller).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np

CASES = [  # (label, split, npt_rad, npt_azim)
    ("1D no", "no", 1000, None),
    ("1D bbox", "bbox", 1000, None),
    ("1D full", "full", 1000, None),
    ("2D bbox 500x360", "bbox", 500, 360),
]
OPTIONS = dict(unit="2th_deg", error_model="poisson", polarization_factor=0.99)
PONI = dict(dist=0.15, poni1=0.09, poni2=0.08, rot1=0.02, rot2=-0.015, rot3=0.0, wavelength=0.7e-10)


PAUSE_S = 0.2  # after each timed call: lets the OpenMP threads of the tool just timed go idle


def _median_times(call_a, call_b, frames) -> tuple[float, float]:
    """Median seconds per frame of two calls, timed alternately frame by frame so that both
    see the same machine load, each after a pause (see the module notes)."""
    times_a, times_b = [], []
    for frame in frames:
        for call, times in ((call_a, times_a), (call_b, times_b)):
            t0 = time.perf_counter()
            call(frame)
            times.append(time.perf_counter() - t0)
            time.sleep(PAUSE_S)
    return statistics.median(times_a), statistics.median(times_b)


def _read_time(*arrays: np.ndarray, repeat: int = 5) -> float:
    """Seconds for a one-thread numpy.sum over the bytes of ``arrays`` (best of ``repeat``)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        for a in arrays:
            flat = a.reshape(-1)
            np.add.reduce(flat.view(np.float32) if flat.dtype.itemsize == 4 else flat)
        best = min(best, time.perf_counter() - t0)
    return best


def run(nframes: int = 7, quick: bool = False) -> list[dict]:
    import pyFAI
    import pyFAI.detectors
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyFAIIntegrator

    from xreduce.detectors import get_detector
    from xreduce.ext.openmp_info import max_threads
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    logging.getLogger("pyFAI").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    detector = get_detector("Eiger 4M")
    geometry = Geometry(PONI["dist"], PONI["poni1"], PONI["poni2"], PONI["rot1"], PONI["rot2"],
                        PONI["rot3"], PONI["wavelength"], detector)
    ref_det = pyFAI.detectors.detector_factory("Eiger 4M")
    print(f"pyFAI {pyFAI.version}; detector {detector.shape}, OpenMP threads: {max_threads()}")
    rng = np.random.default_rng(0)
    tth = np.asarray(geometry.twotheta_array())
    expected = 50 + 400 * np.exp(-((np.rad2deg(tth) % 3.0) - 1.5) ** 2 / 0.02)
    frames = [rng.poisson(expected).astype(np.uint32) for _ in range(nframes)]
    # One explicit radial range for both tools (their default ranges differ slightly), the top
    # nudged up by one float32 epsilon for xreduce as pyFAI does internally: same bins.
    top = float(np.ceil(np.asarray(geometry.corner_array("2th_deg"))[..., 0].max()))
    ours_range = (0.0, top * (1 + float(np.finfo(np.float32).eps)))
    theirs_range = (0.0, top)
    cases = CASES[1:2] if quick else CASES
    rows = []
    for label, split, npt, npt_azim in cases:
        method = (split, "csr", "cython")
        ours = AzimuthalIntegrator(geometry)
        theirs = PyFAIIntegrator(detector=ref_det, **PONI)
        if npt_azim is None:
            def call_ours(f, ai=ours):
                return ai.integrate1d(f, npt, method=method, radial_range=ours_range, **OPTIONS)

            def call_theirs(f, ai=theirs):
                return ai.integrate1d(f, npt, method=method, correctSolidAngle=True,
                                      radial_range=theirs_range, **OPTIONS)
        else:
            def call_ours(f, ai=ours):
                return ai.integrate2d(f, npt, npt_azim, method=method, radial_range=ours_range,
                                      **OPTIONS)

            def call_theirs(f, ai=theirs):
                return ai.integrate2d(f, npt, npt_azim, method=method, correctSolidAngle=True,
                                      radial_range=theirs_range, azimuth_range=(-180, 180),
                                      **OPTIONS)
        # Cold calls compute and cache the geometry arrays and corrections; then each tool
        # forgets its engine and builds it again: the matrix build alone.
        call_ours(frames[0])
        call_theirs(frames[0])
        first_ours = first_theirs = np.inf
        for _ in range(3):
            for ai, call in ((ours, call_ours), (theirs, call_theirs)):
                ai.reset_engines()
                t0 = time.perf_counter()
                call(frames[0])
                first = time.perf_counter() - t0
                time.sleep(PAUSE_S)
                if ai is ours:
                    first_ours = min(first_ours, first)
                else:
                    first_theirs = min(first_theirs, first)
        frame_ours, frame_theirs = _median_times(call_ours, call_theirs, frames)
        (key, engine), = ours.engines
        m = engine.matrix
        ref_engine = next(iter(theirs.engines.values())).engine
        mem_theirs = sum(np.asarray(getattr(ref_engine, name)).nbytes
                         for name in ("_indptr", "_indices", "_data"))
        floor = _read_time(frames[0], m.indices, *(() if m.data is None else (m.data,)))
        res_o, res_t = call_ours(frames[0]), call_theirs(frames[0])
        sel = (np.asarray(res_t.count) > 10) & (res_o.count > 10)
        agree = float(np.max(np.abs(res_o.intensity[sel] / np.asarray(res_t.intensity)[sel] - 1)))
        rows.append(dict(case=label, frame_ms=frame_ours * 1e3, pyfai_frame_ms=frame_theirs * 1e3,
                         build_s=first_ours - frame_ours, pyfai_build_s=first_theirs - frame_theirs,
                         mem_mb=m.nbytes / 1e6, pyfai_mem_mb=mem_theirs / 1e6, nnz=m.nnz,
                         floor_ms=floor * 1e3, max_rel_diff=agree))
        r = rows[-1]
        print(f"\n{label}  (nnz {m.nnz / 1e6:.2f} M; max relative difference to pyFAI on bins "
              f"> 10 px: {agree:.1e})")
        print(f"  per frame : xreduce {r['frame_ms']:8.1f} ms   pyFAI {r['pyfai_frame_ms']:8.1f} ms"
              f"   ratio {r['pyfai_frame_ms'] / r['frame_ms']:5.1f}x   "
              f"(bandwidth floor, 1 thread: {r['floor_ms']:.1f} ms)")
        print(f"  build     : xreduce {r['build_s']:8.2f} s    pyFAI {r['pyfai_build_s']:8.2f} s"
              f"    ratio {r['pyfai_build_s'] / r['build_s']:5.1f}x")
        print(f"  matrix    : xreduce {r['mem_mb']:8.1f} MB   pyFAI {r['pyfai_mem_mb']:8.1f} MB"
              f"   ratio {r['pyfai_mem_mb'] / r['mem_mb']:5.2f}x")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=7, help="frames timed per case")
    parser.add_argument("--quick", action="store_true", help="only the 1D bbox case")
    args = parser.parse_args(argv)
    run(args.frames, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
