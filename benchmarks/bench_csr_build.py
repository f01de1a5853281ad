"""Sparse-matrix build: xreduce.sparse versus pyFAI's CSR engine, side by side in one process.

Eiger 4M (2167 x 2070, 75 um), 1000 radial bins in 2th_deg (and a 2D 500 x 360 case), splits
no / bbox / full. Both tools start from pixel positions already computed (pyFAI's cached arrays;
xreduce gets pyFAI's corner array, so both see the same geometry), so the timings are the matrix
build alone. Reports the best of `--repeat` builds, the speed ratio, and the matrix memory
(indptr + indices + data) of each.

Usage: python benchmarks/bench_csr_build.py [--repeat 3] [--threads 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from xreduce.sparse import build_csr_from_arrays


def best_time(func, repeat: int):
    """Best wall time of `repeat` calls, and the last result."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def pyfai_matrix_bytes(engine) -> int:
    """Bytes of pyFAI's CSR arrays (data, indices, indptr)."""
    data, indices, indptr = engine.lut
    return sum(np.asarray(a).nbytes for a in (data, indices, indptr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: default)")
    args = parser.parse_args()

    import pyFAI
    from pyFAI.detectors import detector_factory
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    detector = detector_factory("Eiger4M")
    shape = detector.shape
    ai = AzimuthalIntegrator(dist=0.12, poni1=0.0812, poni2=0.0771, rot1=0.03, rot2=-0.02,
                             rot3=0.0, wavelength=1e-10, detector=detector)
    mask = np.ascontiguousarray(detector.mask, dtype=np.uint8).ravel()
    # Positions computed once, outside the timings, for both tools.
    corners = np.ascontiguousarray(
        ai.array_from_unit(shape, "corner", "2th_deg", scale=True), dtype=np.float64)
    centers = np.stack([ai.array_from_unit(shape, "center", "2th_deg", scale=True),
                        ai.center_array(shape, "chi_rad", scale=False)], axis=-1)
    for split in ("no", "bbox", "full"):
        ai.setup_sparse_integrator(shape, 1000, mask=mask.reshape(shape), unit="2th_deg",
                                   split=split, algo="CSR")  # warms pyFAI's position caches

    print(f"pyFAI {pyFAI.version}; Eiger 4M {shape}, {int(mask.sum())} masked pixels; "
          f"best of {args.repeat}")
    print(f"{'case':<18}{'xreduce s':>10}{'pyFAI s':>10}{'speed-up':>10}"
          f"{'xreduce MB':>12}{'pyFAI MB':>10}{'mem ratio':>10}")
    cases = [("no", 1000, None), ("bbox", 1000, None), ("full", 1000, None),
             ("bbox", 500, 360), ("full", 500, 360)]
    for split, npt_rad, npt_azim in cases:
        t_ours, ours = best_time(lambda: build_csr_from_arrays(
            corners, centers, npt_rad, npt_azim, split, mask=mask,
            num_threads=args.threads), args.repeat)
        npt = npt_rad if npt_azim is None else (npt_rad, npt_azim)
        t_theirs, theirs = best_time(lambda: ai.setup_sparse_integrator(
            shape, npt, mask=mask.reshape(shape), unit="2th_deg", split=split, algo="CSR"),
            args.repeat)
        ours_mb, theirs_mb = ours.nbytes / 1e6, pyfai_matrix_bytes(theirs) / 1e6
        name = f"{split} {npt_rad}" + (f"x{npt_azim}" if npt_azim else "")
        print(f"{name:<18}{t_ours:>10.3f}{t_theirs:>10.3f}{t_theirs / t_ours:>9.1f}x"
              f"{ours_mb:>12.1f}{theirs_mb:>10.1f}{ours_mb / theirs_mb:>10.2f}")


if __name__ == "__main__":
    main()
