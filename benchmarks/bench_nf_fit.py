"""Benchmark of NF-HEDM orientation fitting: xreduce against midas-nf-fitorientation.

Au-like case in MIDAS's example geometry: two distances (6 and 7 mm), 2048^2 pixels of
1.48 um, 71.7 keV, tilts (0.1, -0.05, 0.2) deg, omega -180..180 in 1 degree frames (360),
GridSize 2.5 um and Rsample 50 um (3456 triangles), a 20-grain Voronoi microstructure. Binary
images: the forward model of :mod:`xreduce.nf.simulate` (every pixel a projected triangle
touches, an independent rasterisation from the fitter's MIDAS footprint rule).

Measured, side by side in one run:

- seeded fit: seeds of far-field quality (3 per grain, 0.02-0.1 deg from the truth, so about 3
  candidates per voxel), MinFracAccept 0.5, OrientTol 1 deg: voxels fitted per second and the
  accuracy (misorientation to the truth with cubic symmetry), for xreduce (all voxels; MIDAS's
  rules, the default, and the fast path of options beyond MIDAS, ``FAST``) and
  midas-nf-fitorientation (CPU torch, MIDAS's input files written from the same data; a voxel
  subset, it is much slower);
- unseeded screen: 20 000 random orientations against a voxel subset, (voxel, orientation)
  pairs per second, compared with MIDAS's GPU (about 0.5 us per pair, REFERENCE) and with the
  35 s MIDAS's C fitter takes for the seeded Au example on the 2 cores of this machine.

Run: ``python benchmarks/bench_nf_fit.py [--voxels-midas 32] [--screen-voxels 64]
[--screen-orientations 20000] [--grains 20] [--skip-midas]``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from xreduce.nf.crystal import euler_to_quaternion, matrix_to_quaternion, misorientation_rad
from xreduce.nf.fit import FAST_PATH, fit_orientations
from xreduce.nf.grid import hexagonal_grid, write_grid
from xreduce.nf.microstructure import random_orientations, voronoi_microstructure
from xreduce.nf.overlap import OverlapModel
from xreduce.nf.reflections import reflection_list
from xreduce.nf.simulate import simulate_binary_images
from xreduce.nf.spots import NFGeometry, predict_spots
from xreduce.nf.spotsinfo import write_spots_info

WL = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)
LSD = (6000.0, 7000.0)
BC = ((1024.3, 1023.6), (1025.1, 1022.8))
TILTS = (0.1, -0.05, 0.2)
NPX = 2048
N_FRAMES = 360
MAX_RING_RAD = 1250.0
C_FITTER_SECONDS = 35.0      # MIDAS's C fitter, seeded Au example, 2 cores (REFERENCE)
GPU_US_PER_PAIR = 0.5        # MIDAS on one GPU (REFERENCE)
FAST = FAST_PATH              # options beyond MIDAS (doc/nf_fit.md, "Fast path")


def geometry() -> NFGeometry:
    return NFGeometry(lsd_um=LSD, bc_px=BC, px_um=1.48, wavelength_A=WL,
                      omega_start_deg=-180.0, omega_step_deg=1.0,
                      omega_ranges_deg=((-180.0, 180.0),),
                      box_sizes_um=((-1400.0, 1400.0, -1400.0, 1400.0),), tilts_deg=TILTS,
                      exclude_pole_deg=6.0, detector_shape=(NPX, NPX), n_frames=N_FRAMES)


def errors_deg(euler, U_true):
    q = euler_to_quaternion(np.nan_to_num(euler))
    err = np.degrees(misorientation_rad(q, matrix_to_quaternion(U_true), 225))
    err[~np.all(np.isfinite(euler), axis=1)] = np.inf
    return err


def accuracy_text(err, conf) -> str:
    return (f"{np.mean(err <= 0.25) * 100:5.1f} % within 0.25 deg, "
            f"{np.mean(err <= 0.1) * 100:5.1f} % within 0.1 deg, "
            f"median confidence {np.median(conf):.3f}")


def write_midas_inputs(folder: Path, geo, refl, grid, words, seeds) -> Path:
    """The files MIDAS's FitOrientationOMP (and midas-nf-fitorientation) read."""
    write_spots_info(folder / "SpotsInfo.bin", words)
    write_grid(grid, folder / "grid.txt")
    refl.write_csv(folder / "hkls.csv")
    spots = predict_spots(seeds, refl, geo)
    counts = np.bincount(spots.orientation, minlength=len(seeds)).astype(np.int32)
    key = np.stack([counts, np.r_[0, np.cumsum(counts)[:-1]].astype(np.int32)], axis=1)
    key.astype("<i4").tofile(folder / "Key.bin")
    np.ascontiguousarray(seeds, dtype="<f8").tofile(folder / "OrientMat.bin")
    rows = np.stack([spots.dir_y * LSD[0], spots.dir_z * LSD[0], spots.omega_deg], axis=1)
    np.ascontiguousarray(rows, dtype="<f8").tofile(folder / "DiffractionSpots.bin")
    text = f"""DataDirectory {folder}
OutputDirectory {folder}
ReducedFileName spots
nDistances 2
Lsd {LSD[0]}
Lsd {LSD[1]}
BC {BC[0][0]} {BC[0][1]}
BC {BC[1][0]} {BC[1][1]}
px 1.48
tx {TILTS[0]}
ty {TILTS[1]}
tz {TILTS[2]}
Wavelength {WL}
NrPixels {NPX}
OmegaStart -180
OmegaStep 1
StartNr 1
EndNr {N_FRAMES}
NrFilesPerDistance {N_FRAMES}
OmegaRange -180 180
BoxSize -1400 1400 -1400 1400
LatticeParameter {' '.join(map(str, AU))}
SpaceGroup 225
MaxRingRad {MAX_RING_RAD}
ExcludePoleAngle 6
OrientTol 1
MinFracAccept 0.5
GridSize 2.5
EdgeLength 2.5
MicFileBinary midas.mic.bin
MicFileText midas.mic
SaveNSolutions 1
"""
    path = folder / "params.txt"
    path.write_text(text)
    return path


def run_midas_package(param_file: Path, voxels: np.ndarray, n_vox_total: int):
    """midas-nf-fitorientation on CPU for the given voxels: (seconds, euler (n, 3), conf)."""
    import torch

    from midas_nf_fitorientation.fit_orientation import fit_orientation_run

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    mic = fit_orientation_run(str(param_file), device="cpu", voxel_indices=voxels)
    seconds = time.perf_counter() - t0
    data = np.fromfile(mic, dtype="<f8").reshape(-1, 11)
    rows = data[voxels]
    return seconds, rows[:, 7:10], rows[:, 10]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grains", type=int, default=20)
    ap.add_argument("--voxels-midas", type=int, default=32,
                    help="voxels fitted by midas-nf-fitorientation (a subset: it is slow)")
    ap.add_argument("--screen-voxels", type=int, default=512)
    ap.add_argument("--screen-orientations", type=int, default=20000)
    ap.add_argument("--skip-midas", action="store_true")
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")

    geo = geometry()
    refl = reflection_list(225, AU, WL, LSD[0], MAX_RING_RAD)
    grid = hexagonal_grid(50.0, 2.5)
    rng = np.random.default_rng(0)
    micro = voronoi_microstructure(grid, args.grains, seed=1)
    U = micro.orientation_matrices()
    t0 = time.perf_counter()
    words = simulate_binary_images(micro, refl, geo, n_frames=N_FRAMES, conservative=True)
    print(f"case: {len(grid)} voxels, {len(np.unique(micro.grain_id))} grains, "
          f"{len(refl)} reflections, images made in {time.perf_counter() - t0:.1f} s")
    model = OverlapModel(geo, refl, words, N_FRAMES)

    from scipy.spatial.transform import Rotation

    grains = np.unique(micro.grain_id)
    truth = np.stack([U[micro.grain_id == k][0] for k in grains])
    reps = np.repeat(truth, 3, axis=0)
    axes = rng.normal(size=(len(reps), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    seeds = Rotation.from_rotvec(axes * np.radians(rng.uniform(0.02, 0.1, len(reps)))[:, None]
                                 ).as_matrix() @ reps

    # ---- xreduce, seeded, all voxels
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=1.0,
                           progress=False)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    err = errors_deg(res.euler_rad, U)
    print(f"xreduce seeded fit: {len(grid)} voxels in {t_ours:.2f} s ({c_ours:.2f} s of CPU "
          f"time) = {len(grid) / t_ours:.0f} voxels/s, {res.n_candidates.mean():.2f} "
          f"candidates/voxel; " + accuracy_text(err, res.confidence))
    print(f"  vs MIDAS's C fitter (35 s for the seeded Au example on 2 cores): "
          f"{C_FITTER_SECONDS / t_ours:.1f}x")
    # beyond MIDAS (options, doc/nf_fit.md "Fast path"): one seed refined per group of
    # copies, a simplex step near the seeds' error, a 0.01 deg simplex-size stop, the
    # neighbours' orientations tried (those that could win)
    t0, c0 = time.perf_counter(), time.process_time()
    fast = fit_orientations(model, grid, seeds, min_frac_accept=0.5, orient_tol_deg=1.0,
                            progress=False, **FAST)
    t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
    print(f"xreduce seeded fit, fast path {FAST}: "
          f"{t_fast:.2f} s ({c_fast:.2f} s of CPU time) = {len(grid) / t_fast:.0f} voxels/s; "
          + accuracy_text(errors_deg(fast.euler_rad, U), fast.confidence)
          + f"; vs MIDAS's C fitter {C_FITTER_SECONDS / t_fast:.1f}x, vs the default "
          f"{t_ours / t_fast:.1f}x")

    # ---- xreduce, unseeded screen
    sub = grid.select(np.linspace(0, len(grid) - 1, args.screen_voxels).astype(int))
    many = random_orientations(args.screen_orientations, rng)
    pairs = len(many) * len(sub)
    for min_conf, what in ((0.0, "exact"), (0.5, "early exits below MinFracAccept 0.5")):
        t0, c0 = time.perf_counter(), time.process_time()
        model.confidence(many, sub, min_confidence=min_conf)
        t_screen, c_screen = time.perf_counter() - t0, time.process_time() - c0
        us = t_screen / pairs * 1e6
        print(f"xreduce screen ({what}): {pairs} pairs in {t_screen:.2f} s = "
              f"{pairs / t_screen:.3g} pairs/s ({us:.2f} us/pair wall, "
              f"{c_screen / pairs * 1e6:.2f} us/pair of CPU time; MIDAS GPU about "
              f"{GPU_US_PER_PAIR} us/pair: {us / GPU_US_PER_PAIR:.0f}x slower)")

    # ---- midas-nf-fitorientation on a subset
    if args.skip_midas:
        return
    try:
        import midas_nf_fitorientation  # noqa: F401
    except ImportError as exc:
        print(f"midas-nf-fitorientation: not installed ({exc})")
        return
    voxels = np.linspace(0, len(grid) - 1, args.voxels_midas).astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        pfile = write_midas_inputs(Path(tmp), geo, refl, grid, words, seeds)
        try:
            t_m, e_m, c_m = run_midas_package(pfile, voxels, len(grid))
        except Exception as exc:   # report, do not hide, what the other tool did
            print(f"midas-nf-fitorientation failed: {type(exc).__name__}: {exc}")
            return
    subgrid = grid.select(voxels)
    t0 = time.perf_counter()
    ours = fit_orientations(model, subgrid, seeds, min_frac_accept=0.5, orient_tol_deg=1.0,
                            progress=False)
    t_o = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_fast = fit_orientations(model, subgrid, seeds, min_frac_accept=0.5,
                                 orient_tol_deg=1.0, progress=False, **FAST)
    t_f = time.perf_counter() - t0
    print(f"same {len(voxels)} voxels: midas-nf-fitorientation {t_m:.2f} s "
          f"({len(voxels) / t_m:.2f} voxels/s); xreduce {t_o:.3f} s "
          f"({len(voxels) / t_o:.0f} voxels/s): ratio {t_m / t_o:.1f}x; xreduce fast path "
          f"{t_f:.3f} s: ratio {t_m / t_f:.1f}x")
    print("  midas-nf-fitorientation: "
          + accuracy_text(errors_deg(np.where(c_m[:, None] > 0, e_m, np.nan), U[voxels]), c_m))
    print("  xreduce:                 "
          + accuracy_text(errors_deg(ours.euler_rad, U[voxels]), ours.confidence))
    print("  xreduce fast path:       "
          + accuracy_text(errors_deg(ours_fast.euler_rad, U[voxels]), ours_fast.confidence))
    print(f"load at the end: {os.getloadavg()[0]:.1f} (1 min)")


if __name__ == "__main__":
    main()
