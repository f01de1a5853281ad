"""DCT preprocessing and the NF fit: this process against a dask LocalCluster of N workers.

In one run, on the same inputs: :func:`xreduce.dct.preprocess` (a synthetic uint16 stack of
``bench_preprocess.py``: dark, margin normalisation, moving median, 3x3 median filter) and
:func:`xreduce.nf.fit.fit_orientations` (a Voronoi microstructure's simulated images, seeds
0.02-0.1 deg from the truth), each with ``executor=None`` (OpenMP over every core) and on
``open_cluster(workers=N)`` (N processes, cores / N OpenMP threads each). Printed: the wall
times (the cluster's start excluded, printed apart), their ratio, and whether the results
are identical (they must be). On one machine the cluster can only win where the local run
leaves cores idle (serial parts, I/O); its use is many machines (``--scheduler``).

Run: ``python benchmarks/bench_executors_dct_nf.py [--workers 2] [--frames 120] [--size 256]
[--rsample-um 25]``
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_preprocess import make_input  # noqa: E402

from xreduce.dct import preprocess  # noqa: E402
from xreduce.executors import open_cluster  # noqa: E402
from xreduce.nf.fit import fit_orientations  # noqa: E402
from xreduce.nf.grid import hexagonal_grid  # noqa: E402
from xreduce.nf.microstructure import voronoi_microstructure  # noqa: E402
from xreduce.nf.overlap import OverlapModel  # noqa: E402
from xreduce.nf.reflections import reflection_list  # noqa: E402
from xreduce.nf.simulate import simulate_binary_images  # noqa: E402
from xreduce.nf.spots import NFGeometry  # noqa: E402

WL = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)


def timed(run):
    t0 = time.perf_counter()
    out = run()
    return out, time.perf_counter() - t0


def dct_case(folder: str, frames: int, size: int, chunk: int) -> dict:
    data, dark = make_input(folder, frames, size)
    return {"preprocess": {
        "input": data, "dark": dark, "output": os.path.join(folder, "out.h5"),
        "normalization": "margin", "margin_bbox": [[0, 0], [8, size]],
        "moving_median": {"window": 31}, "median_filter": {"size": 3},
        "chunk_frames": chunk, "overwrite": True}}


def nf_case(rsample_um: float, grains: int):
    """A 1024^2 detector at 6 and 7 mm, 180 frames of 2 deg: small enough to travel."""
    npx, n_frames = 1024, 180
    geo = NFGeometry(lsd_um=(6000.0, 7000.0), bc_px=((512.3, 511.6), (512.9, 510.8)),
                     px_um=2.96, wavelength_A=WL, omega_start_deg=-180.0, omega_step_deg=2.0,
                     omega_ranges_deg=((-180.0, 180.0),),
                     box_sizes_um=((-1400.0, 1400.0, -1400.0, 1400.0),),
                     tilts_deg=(0.1, -0.05, 0.2), detector_shape=(npx, npx), n_frames=n_frames)
    refl = reflection_list(225, AU, WL, 6000.0, 1250.0)
    grid = hexagonal_grid(rsample_um, 2.5)
    micro = voronoi_microstructure(grid, grains, seed=1)
    words = simulate_binary_images(micro, refl, geo, n_frames=n_frames, conservative=True)
    model = OverlapModel(geo, refl, words, n_frames)
    from scipy.spatial.transform import Rotation

    U = micro.orientation_matrices()
    truth = np.stack([U[micro.grain_id == k][0] for k in np.unique(micro.grain_id)])
    reps = np.repeat(truth, 3, axis=0)
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(len(reps), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    seeds = Rotation.from_rotvec(axes * np.radians(rng.uniform(0.02, 0.1, len(reps)))[:, None]
                                 ).as_matrix() @ reps
    return model, grid, seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=30)
    ap.add_argument("--rsample-um", type=float, default=25.0)
    ap.add_argument("--grains", type=int, default=8)
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        config = dct_case(folder, args.frames, args.size, args.chunk)
        model, grid, seeds = nf_case(args.rsample_um, args.grains)

        def run_dct(executor):
            result = preprocess(config, progress=False, executor=executor)
            with h5py.File(result.output) as h5:
                return h5["/entry/preprocessed/data"][()]

        def run_fit(executor):
            return fit_orientations(model, grid, seeds, min_frac_accept=0.5,
                                    orient_tol_deg=1.0, progress=False, executor=executor)

        dct_local, t_dct_local = timed(lambda: run_dct(None))
        fit_local, t_fit_local = timed(lambda: run_fit(None))
        t0 = time.perf_counter()
        with open_cluster(workers=args.workers) as client:
            t_start = time.perf_counter() - t0
            dct_dask, t_dct_dask = timed(lambda: run_dct(client))
            fit_dask, t_fit_dask = timed(lambda: run_fit(client))
        print(f"LocalCluster of {args.workers} workers started in {t_start:.1f} s")
        same_dct = dct_local.tobytes() == dct_dask.tobytes()
        same_fit = all(np.array_equal(getattr(fit_local, n), getattr(fit_dask, n),
                                      equal_nan=True)
                       for n in ("euler_rad", "confidence", "row", "n_candidates"))
        print(f"DCT preprocess {args.frames} x {args.size}^2, chunks of {args.chunk}: "
              f"local {t_dct_local:.2f} s, dask {t_dct_dask:.2f} s "
              f"(local/dask {t_dct_local / t_dct_dask:.2f}), identical: {same_dct}")
        print(f"NF fit {len(grid)} voxels, {len(seeds)} seeds: local {t_fit_local:.2f} s, "
              f"dask {t_fit_dask:.2f} s (local/dask {t_fit_local / t_fit_dask:.2f}), "
              f"identical: {same_fit}, fitted {int(fit_local.found.sum())}")


if __name__ == "__main__":
    main()
