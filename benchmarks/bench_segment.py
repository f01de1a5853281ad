"""Labelling and double-threshold segmentation: xreduce against SciPy, side by side.

The stack is float32 (frames, rows, cols) with Gaussian spots on Gaussian noise, about 1% of the
voxels above the seed threshold. Timed in the same run:

- labelling (26-connectivity, dense labels): ``xreduce.dct.labelling.label(stack, threshold=t)``
  against ``scipy.ndimage.label(stack > t, structure)`` (threshold included in both, and SciPy
  also timed on a ready-made mask);
- whole segmentation: ``xreduce.dct.segment.segment`` against a SciPy implementation of the same
  rules that labels the seeds with ``scipy.ndimage.label``, finds maxima with
  ``scipy.ndimage.maximum_position`` and labels each seed's ``2 * bb_max + 1`` box with
  ``scipy.ndimage.label``; overlaps are resolved by the same ordered claim with a dense mask.
  Both results are checked equal.

Usage::

    python benchmarks/bench_segment.py [--shape 360 512 512] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import ndimage

from xreduce.dct.labelling import label
from xreduce.dct.segment import segment
from xreduce.ext import openmp_info

SEED_THRESHOLD = 10.0
TAU = 0.1
BB_MAX = (6, 10, 10)
STRUCTURE = np.ones((3, 3, 3), bool)


def make_stack(shape, lit_fraction=0.01, seed=0):
    """Float32 stack: Gaussian noise (sigma 2.5) plus Gaussian spots until ~lit_fraction is lit."""
    rng = np.random.default_rng(seed)
    stack = rng.standard_normal(shape, dtype=np.float32) * np.float32(2.5)
    target = lit_fraction * stack.size
    lit = 0
    while lit < target:
        sigma = rng.uniform([1.0, 1.2, 1.2], [2.5, 2.5, 2.5])
        amplitude = rng.uniform(30.0, 600.0)
        centre = rng.uniform(0, shape)
        half = np.ceil(4 * sigma).astype(int)
        lo = np.maximum(np.floor(centre).astype(int) - half, 0)
        hi = np.minimum(np.floor(centre).astype(int) + half + 1, shape)
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        spot = amplitude * np.exp(-0.5 * sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigma)))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        before = int((stack[box] > SEED_THRESHOLD).sum())
        stack[box] += spot.astype(np.float32)
        lit += int((stack[box] > SEED_THRESHOLD).sum()) - before
    return stack


def scipy_segment(stack, seed_threshold, tau, bb_max, min_size=1):
    """The same rules with SciPy: label seeds, then label each seed's full box."""
    seeds, n = ndimage.label(stack > seed_threshold, STRUCTURE)
    index = np.arange(1, n + 1)
    top = np.asarray(ndimage.maximum(stack, seeds, index), dtype=np.float64)
    peaks = np.array(ndimage.maximum_position(stack, seeds, index), dtype=np.int64).reshape(-1, 3)
    blobs = []
    bb = np.asarray(bb_max)
    for p, m in zip(peaks, top):
        threshold = min(tau * m, m)
        lo = np.maximum(p - bb, 0)
        hi = np.minimum(p + bb + 1, stack.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        comp, _ = ndimage.label(stack[box] >= threshold, STRUCTURE)
        where = np.argwhere(comp == comp[tuple(p - lo)]) + lo
        blobs.append(np.ravel_multi_index(where.T, stack.shape))
    flat_peaks = np.ravel_multi_index(peaks.T, stack.shape) if n else np.zeros(0, np.int64)
    claimed = np.zeros(stack.size, bool)
    spots = []
    for i in np.lexsort((flat_peaks, -top)):
        if claimed[flat_peaks[i]]:
            continue
        kept = blobs[i][~claimed[blobs[i]]]
        if len(kept) < min_size:
            continue
        claimed[kept] = True
        spots.append((flat_peaks[i], np.sort(kept)))
    spots.sort(key=lambda spot: spot[0])
    return spots


def best_of(function, repeat):
    """Best wall time of ``repeat`` calls, the CPU time (all threads) of that call, the result."""
    best = (np.inf, np.inf)
    for _ in range(repeat):
        cpu, start = time.process_time(), time.perf_counter()
        result = function()
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    return best, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(360, 512, 512))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    print(f"stack {shape} float32, OpenMP threads: {openmp_info.max_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    stack = make_stack(shape)
    voxels = stack.size
    print(f"made in {time.perf_counter() - t0:.1f} s; lit fraction {np.mean(stack > SEED_THRESHOLD):.4f}")

    t_ours, (labels, n) = best_of(lambda: label(stack, 26, threshold=SEED_THRESHOLD), args.repeat)
    t_scipy, (ref, n_ref) = best_of(lambda: ndimage.label(stack > SEED_THRESHOLD, STRUCTURE), args.repeat)
    mask = stack > SEED_THRESHOLD
    t_scipy_mask, _ = best_of(lambda: ndimage.label(mask, STRUCTURE), args.repeat)
    t_ours_mask, _ = best_of(lambda: label(mask, 26), args.repeat)
    assert n == n_ref and np.array_equal(labels, ref), "labels differ from scipy.ndimage.label"
    del labels, ref, mask
    print(f"\nlabelling, 26-connectivity, {n} components")
    print(f"  {'':34s} {'wall (s)':>9s} {'voxels/s':>10s} {'cpu (s)':>9s}")
    for name, t in (("xreduce label(stack, threshold)", t_ours), ("scipy label(stack > threshold)", t_scipy),
                    ("xreduce label(mask)", t_ours_mask), ("scipy label(mask)", t_scipy_mask)):
        print(f"  {name:34s} {t[0]:9.3f} {voxels / t[0]:10.3g} {t[1]:9.3f}")
    print(f"  ratio (wall) threshold included: {t_scipy[0] / t_ours[0]:.1f}x; "
          f"mask given: {t_scipy_mask[0] / t_ours_mask[0]:.1f}x")

    params = dict(seed_threshold=SEED_THRESHOLD, tau=TAU, bb_max=BB_MAX)
    t_seg, result = best_of(lambda: segment(stack, **params), args.repeat)
    t_ref, spots = best_of(lambda: scipy_segment(stack, **params), 1)
    got = np.ravel_multi_index(result.peaks.T, shape)
    assert list(got) == [p for p, _ in spots], "spots differ from the SciPy implementation"
    assert all(np.array_equal(result.voxels[result.offsets[i]:result.offsets[i + 1]], v)
               for i, (_, v) in enumerate(spots)), "spot voxels differ from the SciPy implementation"
    print(f"\ndouble-threshold segmentation, tau {TAU}, bb_max {BB_MAX}: {len(result)} spots")
    print(f"  {'xreduce segment':34s} {t_seg[0]:9.3f} {voxels / t_seg[0]:10.3g} {t_seg[1]:9.3f}")
    print(f"  {'scipy label per box':34s} {t_ref[0]:9.3f} {voxels / t_ref[0]:10.3g} {t_ref[1]:9.3f}")
    print(f"  ratio (wall): {t_ref[0] / t_seg[0]:.1f}x")


if __name__ == "__main__":
    main()
