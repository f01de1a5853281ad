"""Per-call overhead of corrections: an Eiger 16M frame integrated with and without a flat
field and a mask, on an engine already built (what a call costs beyond the kernel).

The flat and the mask are passed as a user passes them (writeable arrays) and read-only
(``flat.setflags(write=False)``: fingerprinted once, then recognised by identity). The
overhead is the median time of a call with them minus that of a call with neither.

Run: ``python benchmarks/bench_overhead.py [--calls 7] [--detector "Eiger 16M"]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _median_call(call, calls: int) -> float:
    call()  # warm-up: builds the engine and the normalisation
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    from xreduce import AzimuthalIntegrator, Geometry, get_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=7, help="timed calls per case")
    parser.add_argument("--detector", default="Eiger 16M")
    options = parser.parse_args(argv)
    detector = get_detector(options.detector)
    shape = detector.shape
    geometry = Geometry(0.3, shape[0] * 37.5e-6, shape[1] * 37.5e-6, 0.0, 0.0, 0.0, 1e-10,
                        detector)
    ai = AzimuthalIntegrator(geometry)
    rng = np.random.default_rng(0)
    frame = rng.poisson(10, shape).astype(np.uint32)
    flat = rng.uniform(0.9, 1.1, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[:, :10] = 1
    kwargs = dict(unit="2th_deg", method=("bbox", "csr", "cython"))
    bare = _median_call(lambda: ai.integrate1d(frame, 1000, **kwargs), options.calls)
    with_both = _median_call(lambda: ai.integrate1d(frame, 1000, flat=flat, mask=mask, **kwargs),
                             options.calls)
    flat_ro, mask_ro = flat.copy(), mask.copy()
    flat_ro.setflags(write=False)
    mask_ro.setflags(write=False)
    read_only = _median_call(
        lambda: ai.integrate1d(frame, 1000, flat=flat_ro, mask=mask_ro, **kwargs), options.calls)
    print(f"{options.detector} {shape}, 1D bbox 1000 bins, median of {options.calls} calls")
    print(f"  no flat, no mask        : {bare * 1e3:8.1f} ms")
    print(f"  flat + mask (writeable) : {with_both * 1e3:8.1f} ms  overhead "
          f"{(with_both - bare) * 1e3:+.1f} ms")
    print(f"  flat + mask (read-only) : {read_only * 1e3:8.1f} ms  overhead "
          f"{(read_only - bare) * 1e3:+.1f} ms")


if __name__ == "__main__":
    main()
