"""Time the DCT preprocessing pipeline stage by stage, against plain NumPy/SciPy.

A synthetic uint16 stack (frames, rows, cols) in HDF5 (no compression, one HDF5 chunk per
frame) with 20 dark frames goes through :func:`xreduce.dct.preprocess` (dark, margin
normalisation, moving median of window 31, 3x3 median filter, float32 HDF5 output). Printed:
the wall time of each stage in ns per pixel-frame (the write runs in a thread beside the
computation: "write_wait" is what the computation waited for it), the CPU time of the whole
run, and the projection to a 3600 x 2048 x 2048 volume. Use ``--frames`` large enough that
the output does not fit in the page cache (e.g. 1800) to see the disk's part.

The same pipeline as a user would write it with NumPy and ``scipy.ndimage.median_filter``
(both medians) is timed on a column slice of the stack (SciPy's moving median is too slow
for the whole stack) and compared per pixel-frame, as a ratio.

Run: ``python benchmarks/bench_preprocess.py [--frames 360] [--size 512] [--threads 2]``
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import h5py
import numpy as np

FULL_PIXEL_FRAMES = 3600 * 2048 * 2048
STAGES = ("read", "correct", "overlap_copy", "moving_median", "subtract", "median2d",
          "write_wait", "write")
WRITER_STAGES = ("write",)  # timed in the writer thread, beside the computation


def make_input(folder: str, frames: int, size: int) -> tuple[str, str]:
    """A uint16 stack with a slowly varying background, drift and sparse spots, and darks."""
    rng = np.random.default_rng(0)
    path = os.path.join(folder, "scan.h5")
    yy, xx = np.mgrid[0:size, 0:size]
    background = 200 + 100 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / size**2)
    with h5py.File(path, "w") as h5:
        data = h5.create_dataset("data", (frames, size, size), np.uint16,
                                 chunks=(1, size, size))
        for i in range(frames):
            frame = background * (1 + 0.05 * np.sin(i / 50)) + rng.poisson(5, (size, size))
            spots = rng.integers(0, size, (2, 50))
            frame[spots[0], spots[1]] += 1000
            data[i] = frame.astype(np.uint16)
        h5["dark"] = rng.poisson(100, (20, size, size)).astype(np.uint16)
    return path + "::/data", path + "::/dark"


def numpy_scipy_pipeline(raw: np.ndarray, dark: np.ndarray, box, window: int) -> np.ndarray:
    """The pipeline as a user writes it with NumPy and scipy.ndimage."""
    from scipy.ndimage import median_filter

    frames = raw.astype(np.float32) - dark.mean(axis=0).astype(np.float32)
    margin = frames[(slice(None),) + box].mean(axis=(1, 2), dtype=np.float64)
    frames *= (margin[0] / margin).astype(np.float32)[:, None, None]
    frames -= median_filter(frames, size=(window, 1, 1), mode="nearest")
    return median_filter(frames, size=(1, 3, 3), mode="reflect")


def main() -> None:
    from xreduce.dct import preprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=360)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scipy-cols", type=int, default=16,
                        help="columns of the slice timed with SciPy")
    args = parser.parse_args()
    window = 31
    pixel_frames = args.frames * args.size * args.size
    with tempfile.TemporaryDirectory() as folder:
        url, dark_url = make_input(folder, args.frames, args.size)
        margin = [[0, 0], [args.size, 16]]
        cfg = {"preprocess": {
            "input": url, "output": os.path.join(folder, "out.h5"), "dark": dark_url,
            "normalization": "margin", "margin_bbox": margin,
            "moving_median": {"window": window}, "median_filter": {"size": 3},
            "chunk_frames": args.chunk, "num_threads": args.threads, "overwrite": True,
        }}
        best = None
        for _ in range(args.repeat):  # best of several: the machine may be shared
            if os.path.exists(cfg["preprocess"]["output"]):  # unlinking is not timed
                os.remove(cfg["preprocess"]["output"])
            timings: dict = {}
            wall0, cpu0 = time.perf_counter(), time.process_time()
            preprocess(cfg, progress=False, timings=timings)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if best is None or wall < best[0]:
                best = (wall, cpu, timings)
        wall, cpu, timings = best
        print(f"xreduce preprocess, ({args.frames}, {args.size}, {args.size}) uint16, window "
              f"{window}, 3x3, chunk {args.chunk}, {args.threads} threads (best of "
              f"{args.repeat} by wall time)")
        print(f"{'stage':>14} {'wall s':>8} {'CPU s':>8} {'wall ns/pf':>11} {'CPU ns/pf':>10}")
        for stage in STAGES + ("other", "total"):
            if stage == "other":  # (CPU: the stages' process CPU counts the writer's too)
                main = [v for k, v in timings.items() if k not in WRITER_STAGES]
                s_wall, s_cpu = wall - sum(v[0] for v in main), float("nan")
            elif stage == "total":
                s_wall, s_cpu = wall, cpu
            else:
                s_wall, s_cpu = timings.get(stage, (0.0, 0.0))
            note = "  (writer thread, overlaps the rest)" if stage in WRITER_STAGES else ""
            print(f"{stage:>14} {s_wall:8.3f} {s_cpu:8.3f} {1e9 * s_wall / pixel_frames:11.2f} "
                  f"{1e9 * s_cpu / pixel_frames:10.2f}{note}")
        full_wall = wall / pixel_frames * FULL_PIXEL_FRAMES
        full_cpu = cpu / pixel_frames * FULL_PIXEL_FRAMES
        print(f"projected 3600 x 2048 x 2048: {full_wall:.0f} s wall here, {full_cpu:.0f} "
              f"CPU-seconds = {full_cpu / 2:.0f} s on 2 otherwise idle cores")

        cols = args.scipy_cols
        box = (slice(0, args.size), slice(0, min(16, cols)))
        with h5py.File(url.split("::")[0], "r") as h5:
            t0, c0 = time.perf_counter(), time.process_time()
            raw = h5["data"][:, :, :cols]
            dark = h5["dark"][:, :, :cols]
            numpy_scipy_pipeline(raw, dark, box, window)
            s_wall, s_cpu = time.perf_counter() - t0, time.process_time() - c0
        s_pf = args.frames * args.size * cols
        print(f"NumPy + scipy.ndimage.median_filter on ({args.frames}, {args.size}, {cols}): "
              f"{s_wall:.2f} s wall, {1e9 * s_wall / s_pf:.0f} ns per pixel-frame "
              f"(1 thread); projected 3600 x 2048 x 2048: "
              f"{s_wall / s_pf * FULL_PIXEL_FRAMES / 3600:.1f} hours")
        print(f"ratio NumPy/SciPy : xreduce per pixel-frame: wall "
              f"{(s_wall / s_pf) / (wall / pixel_frames):.0f}x, CPU "
              f"{(s_cpu / s_pf) / (cpu / pixel_frames):.0f}x")


if __name__ == "__main__":
    main()
