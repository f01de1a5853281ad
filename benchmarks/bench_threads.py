"""Threads: 8 threads x 200 mixed cached calls on one integrator while another thread builds
a new (2D full-split 1000x720) engine.

Checks and reports:

- every result is bitwise equal to the same call made serially;
- per call kind, the median, 95th percentile and worst time of a cached call (a) alone on
  the machine, (b) among the 8 threads with no engine being built, (c) among the 8 threads
  while the engine is built (only the calls whose time overlapped the build). (b)/(a) is the
  cost of sharing the cores (8 threads on 2 cores: ~4x by arithmetic alone); (c)/(b) is what
  the build adds: with the per-key engine cache it must stay below 2 for every call kind, at
  the median, the 95th percentile and the worst call (before, every call waited for the
  build: 2.5 s instead of 19 ms).

Run: ``python benchmarks/bench_threads.py [--calls 200] [--threads 8] [--detector "Pilatus 1M"]``.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

CALLS = [  # (name, method, kwargs): the mixed calls, all on engines built beforehand
    ("1D bbox poisson", "integrate1d", dict(npt=1000, error_model="poisson")),
    ("1D no", "integrate1d", dict(npt=500, method=("no", "csr", "cython"))),
    ("1D bbox flat+mask", "integrate1d", dict(npt=1000, use_flat=True, use_mask=True)),
    ("2D bbox 100x36", "integrate2d", dict(npt_rad=100, npt_azim=36)),
    ("1D histogram", "integrate1d", dict(npt=300, method=("no", "histogram", "cython"))),
]


def _caller(ai, frame, flat, mask):
    def call(kind: int):
        name, method, kwargs = CALLS[kind]
        kwargs = dict(kwargs)
        if kwargs.pop("use_flat", False):
            kwargs["flat"] = flat
        if kwargs.pop("use_mask", False):
            kwargs["mask"] = mask
        if method == "integrate1d":
            npt = kwargs.pop("npt")
            return ai.integrate1d(frame, npt, unit="2th_deg", **kwargs).intensity
        return ai.integrate2d(frame, kwargs.pop("npt_rad"), kwargs.pop("npt_azim"),
                              unit="2th_deg", **kwargs).intensity
    return call


def run_threads(call, kinds, nthreads, serial, build=None):
    """Run ``kinds`` split over ``nthreads`` threads (plus ``build`` in its own thread);
    returns per-kind call times, the results that differ from ``serial`` and, with
    ``build``, the per-kind times of the calls that overlapped it (else None)."""
    spans = {k: [] for k in range(len(CALLS))}
    mismatches = []
    build_span = []
    lock = threading.Lock()
    start = threading.Barrier(nthreads + (build is not None))

    def worker(part):
        start.wait()
        for kind in part:
            t0 = time.perf_counter()
            out = call(kind)
            t1 = time.perf_counter()
            same = np.array_equal(out, serial[kind], equal_nan=True)
            with lock:
                spans[kind].append((t0, t1))
                if not same:
                    mismatches.append(kind)

    def builder():
        start.wait()
        t0 = time.perf_counter()
        build()
        build_span.append((t0, time.perf_counter()))

    threads = [threading.Thread(target=worker, args=(kinds[i::nthreads],))
               for i in range(nthreads)]
    if build is not None:
        threads.append(threading.Thread(target=builder))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = {k: [t1 - t0 for t0, t1 in v] for k, v in spans.items()}
    if not build_span:
        return times, mismatches, None
    b0, b1 = build_span[0]
    during = {k: [t1 - t0 for t0, t1 in v if t0 < b1 and t1 > b0] for k, v in spans.items()}
    return times, mismatches, during


def main(argv=None) -> None:
    from xreduce import AzimuthalIntegrator, Geometry, get_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per thread")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--detector", default="Pilatus 1M")
    options = parser.parse_args(argv)
    det = get_detector(options.detector)
    shape = det.shape
    geometry = Geometry(0.2, shape[0] * 86e-6, shape[1] * 86e-6, 0.01, 0.0, 0.0, 1e-10, det)
    ai = AzimuthalIntegrator(geometry, max_engines=16)
    rng = np.random.default_rng(0)
    frame = rng.poisson(50, shape).astype(np.int32)
    flat = rng.uniform(0.9, 1.1, shape)
    flat.setflags(write=False)
    mask = np.zeros(shape, np.uint8)
    mask[:, :20] = 1
    mask.setflags(write=False)
    call = _caller(ai, frame, flat, mask)
    serial = [call(k) for k in range(len(CALLS))]  # builds every engine
    alone = {k: [] for k in range(len(CALLS))}
    for _ in range(5):
        for k in range(len(CALLS)):
            t0 = time.perf_counter()
            call(k)
            alone[k].append(time.perf_counter() - t0)
    kinds = list(rng.integers(0, len(CALLS), options.calls * options.threads))
    shared, bad_b, _ = run_threads(call, kinds, options.threads, serial)
    t_build = []

    def build():
        t0 = time.perf_counter()
        ai.integrate2d(frame, 1000, 720, unit="2th_deg", method="full_csr")
        t_build.append(time.perf_counter() - t0)

    _, bad_c, building = run_threads(call, kinds, options.threads, serial, build)
    overlapping = sum(len(v) for v in building.values())
    print(f"{options.detector} {shape}: {options.threads} threads x {options.calls} mixed "
          f"calls; 2D full-split 1000x720 engine built meanwhile in {t_build[0]:.1f} s; "
          f"(c) = the {overlapping} calls that overlapped the build")
    print(f"results differing from serial: {len(bad_b)} without build, {len(bad_c)} with build")
    print("times in ms; (c)/(b) per statistic: median, 95th percentile, worst call")
    print(f"{'call':20s} {'alone':>7s} {'8 thr':>7s} {'+build':>7s} {'p95 8thr':>9s} "
          f"{'p95 +b':>7s} {'worst 8':>8s} {'worst+b':>8s} {'(c)/(b) med/p95/worst':>22s}")
    worst_ratio = 0.0
    for k, (name, _, _) in enumerate(CALLS):
        a = statistics.median(alone[k]) * 1e3
        stats_b = _stats(shared[k])
        stats_c = _stats(building[k])
        ratios = [c / b for b, c in zip(stats_b, stats_c)]
        worst_ratio = max(worst_ratio, ratios[2])
        print(f"{name:20s} {a:7.1f} {stats_b[0]:7.1f} {stats_c[0]:7.1f} {stats_b[1]:9.1f} "
              f"{stats_c[1]:7.1f} {stats_b[2]:8.1f} {stats_c[2]:8.1f} "
              f"{ratios[0]:8.2f}/{ratios[1]:.2f}/{ratios[2]:.2f}")
    print(f"slowest cached call while the engine was built / slowest without the build: "
          f"{worst_ratio:.2f} (target < 2)")


def _stats(seconds: list[float]) -> tuple[float, float, float]:
    """Median, 95th percentile and worst of call times, in ms."""
    values = np.asarray(seconds) * 1e3
    return float(np.median(values)), float(np.percentile(values, 95)), float(values.max())


if __name__ == "__main__":
    main()
