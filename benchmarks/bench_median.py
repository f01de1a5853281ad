"""Moving median and 2D median filter: xreduce vs bottleneck and scipy, side by side.

Run: ``python benchmarks/bench_median.py`` (full sizes, about a minute on 2 cores) or
``--quick`` for smaller stacks. Reports pixel-frames (or pixels) per second and ratios.

- Moving median along frames of a (360, 512, 512) float32 stack, windows 31 and 101:
  xreduce (Cython, all threads) vs ``bottleneck.move_median`` run in ``--threads`` threads
  over column blocks (it is single-threaded but releases the GIL) vs
  ``scipy.ndimage.median_filter(size=(w, 1, 1))`` timed on a slice and scaled per
  pixel-frame. The same number of medians is computed by each.
- 2D median 3x3 and 5x5 on a 2048x2048 float32 frame vs ``scipy.ndimage.median_filter``.

Each line gives the best wall time (xreduce and bottleneck: best of ``--repeat`` runs each;
SciPy: one run on a slice), the best CPU time (all threads), the throughput and the other
tools' times divided by xreduce's (wall and CPU): on a shared machine the CPU ratio is the
steadier one.
"""
from __future__ import annotations

import argparse
import os
import time
from multiprocessing.pool import ThreadPool

import numpy as np


def best_time(func, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time (all threads) over ``repeat`` runs. On a shared
    machine the CPU time is the steadier measure of the work done."""
    wall = cpu = np.inf
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        func()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def report(rows, work, unit):
    """Print name, wall s, CPU s, throughput (per wall second) and speed-ups vs the first."""
    wall0, cpu0 = rows[0][1]
    for name, (wall, cpu) in rows:
        print(f"{name:<34}{wall:>9.3f}{cpu:>9.3f}{work / wall / 1e6:>12.1f}"
              f"{wall / wall0:>11.1f}x{cpu / cpu0:>10.1f}x")


def bottleneck_threads(stack, window, threads):
    import bottleneck

    blocks = np.array_split(np.arange(stack.shape[2]), threads)

    def run(cols):
        return bottleneck.move_median(stack[:, :, cols[0]: cols[-1] + 1], window, axis=0,
                                      min_count=1)

    with ThreadPool(threads) as pool:
        return pool.map(run, blocks)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for xreduce and bottleneck (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import scipy.ndimage as ndimage

    from xreduce.ext import moving_median as mm_ext
    from xreduce.median import median_filter2d, moving_median

    rng = np.random.default_rng(0)
    shape = (360, 128, 256) if args.quick else (360, 512, 512)
    stack = rng.normal(100, 10, size=shape).astype(np.float32)
    pix_frames = stack.size
    print(f"CPU path {mm_ext.best_isa()}, {args.threads} threads; stack {shape} float32")
    header = (f"{'wall s':>9}{'CPU s':>9}{'M/s':>12}{'speed-up':>12}{'CPU ratio':>11}")
    print(f"{'moving median (M = pixel-frames)':<34}{header}")
    for window in (31, 101):
        t_x = best_time(lambda: moving_median(stack, window, num_threads=args.threads),
                        args.repeat)
        t_b = best_time(lambda: bottleneck_threads(stack, window, args.threads), args.repeat)
        sub = stack[:, :32, :32] if not args.quick else stack[:, :16, :16]
        t_s = best_time(lambda: ndimage.median_filter(sub, size=(window, 1, 1), mode="reflect"),
                        1)
        t_s = tuple(t * stack.size / sub.size for t in t_s)
        ours = moving_median(sub, window, mode="reflect", even="upper")
        assert np.array_equal(ours, ndimage.median_filter(sub, size=(window, 1, 1),
                                                          mode="reflect"))
        report([(f"xreduce w={window}", t_x),
                (f"bottleneck x{args.threads} thr w={window}", t_b),
                (f"scipy (scaled) w={window}", t_s)], pix_frames, "pixel-frames")

    frame = rng.normal(100, 10, size=(2048, 2048)).astype(np.float32)
    print(f"\n{'2D median 2048x2048 (M = pixels)':<34}{header}")
    for size in (3, 5):
        t_x = best_time(lambda: median_filter2d(frame, size, num_threads=args.threads),
                        args.repeat)
        t_s = best_time(lambda: ndimage.median_filter(frame, size), 1)
        assert np.array_equal(median_filter2d(frame, size), ndimage.median_filter(frame, size))
        report([(f"xreduce {size}x{size}", t_x), (f"scipy {size}x{size}", t_s)], frame.size,
               "pixels")


if __name__ == "__main__":
    main()
