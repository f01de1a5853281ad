"""Benchmark of the NF-HEDM forward model: spot prediction and misorientation.

Gold-like sample (a = 4.08 A, Fm-3m 225), 71.7 keV (wavelength 0.172979 A), Lsd 6 mm,
MaxRingRad 2 mm, 1.48 um pixels, omega -180..180 in 0.25 degree frames, ExcludePoleAngle 6.

- Spots predicted per second for 100,000 random orientations (OpenMP kernel), against a
  vectorised NumPy implementation of the same equations on the same orientations.
- Misorientations per second for 1,000,000 random cubic pairs (24 operators), against a
  vectorised NumPy quaternion implementation and scipy.spatial.transform.Rotation.
- Footprint rasterisation: (voxel, spot) footprints per second on two distances.

Run: ``python benchmarks/bench_nf_forward.py [--orientations N] [--pairs N] [--repeat R]``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.spatial.transform import Rotation

from xreduce.ext import openmp_info
from xreduce.nf.crystal import laue_quaternions, matrix_to_quaternion, misorientation_rad
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.reflections import reflection_list
from xreduce.nf.spots import NFGeometry, predict_spots, spot_footprints

WL = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)


def best_time(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def numpy_spots(U, g, wavelength, lsd, ranges, boxes, exclude_pole):
    """Vectorised NumPy version of the spot equations (no wedge, no tilts): the comparison."""
    G = np.einsum("nij,mj->nmi", U, g)
    glen = np.linalg.norm(g, axis=1)[None, :]
    sin_t = wavelength * glen / 2
    rho = np.hypot(G[..., 0], G[..., 1])
    ca = -glen * sin_t / rho
    ok = np.abs(ca) <= 1
    phi = np.arctan2(G[..., 1], G[..., 0])
    alpha = np.arccos(np.clip(ca, -1, 1))
    count = 0
    for sign in (1.0, -1.0):
        w = sign * alpha - phi
        c, s = np.cos(w), np.sin(w)
        Y = G[..., 0] * s + G[..., 1] * c
        Z = G[..., 2]
        X = G[..., 0] * c - G[..., 1] * s
        kx = 1 / wavelength + X
        eta = np.degrees(np.arctan2(-Y, Z))
        y, z = lsd * Y / kx, lsd * Z / kx
        omega = (np.degrees(w) + 180.0) % 360.0 - 180.0
        keep = ok & (np.abs(eta) >= exclude_pole) & (180 - np.abs(eta) >= exclude_pole)
        win = np.zeros_like(keep)
        for (lo, hi), (y0, y1, z0, z1) in zip(ranges, boxes):
            win |= (omega >= lo) & (omega <= hi) & (y >= y0) & (y <= y1) & (z >= z0) & (z <= z1)
        count += int(np.count_nonzero(keep & win))
    return count


def numpy_misorientation(q1, q2, sym):
    """Vectorised NumPy: p = conj(q1) q2, then max over symmetry of |w(p S)|."""
    a = q1 * np.array([1, -1, -1, -1])
    b = q2
    p = np.stack([
        a[:, 0] * b[:, 0] - a[:, 1] * b[:, 1] - a[:, 2] * b[:, 2] - a[:, 3] * b[:, 3],
        a[:, 0] * b[:, 1] + a[:, 1] * b[:, 0] + a[:, 2] * b[:, 3] - a[:, 3] * b[:, 2],
        a[:, 0] * b[:, 2] - a[:, 1] * b[:, 3] + a[:, 2] * b[:, 0] + a[:, 3] * b[:, 1],
        a[:, 0] * b[:, 3] + a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1] + a[:, 3] * b[:, 0],
    ], axis=1)
    w = np.abs(p @ (sym * np.array([1, -1, -1, -1])).T).max(axis=1)
    return 2 * np.arccos(np.minimum(w, 1.0))


def scipy_misorientation(r1, r2, sym_rot):
    """scipy Rotation: min over S of |r1^-1 r2 S| (magnitude)."""
    d = r1.inv() * r2
    best = np.full(len(r1), np.inf)
    for k in range(len(sym_rot)):
        best = np.minimum(best, (d * sym_rot[k]).magnitude())
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orientations", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"OpenMP threads: {openmp_info.max_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (times are best of {args.repeat})")

    geo = NFGeometry(lsd_um=(6000.0, 8000.0), bc_px=((1024.0, 50.0), (1024.0, 50.0)),
                     px_um=1.48, wavelength_A=WL, omega_start_deg=180.0, omega_step_deg=-0.25,
                     omega_ranges_deg=((-180.0, 180.0),),
                     box_sizes_um=((-1500.0, 1500.0, -75.0, 2950.0),), exclude_pole_deg=6.0)
    refl = reflection_list(225, AU, WL, 6000.0, 2000.0)
    print(f"Reflections: {len(refl)} in {len(refl.rings)} rings (d >= {refl.d_A.min():.3f} A)")
    n = args.orientations
    U = Rotation.random(n, random_state=rng).as_matrix()
    t_k, spots = best_time(lambda: predict_spots(U, refl, geo), args.repeat)
    n_np = min(n, 20_000)
    t_np, count_np = best_time(
        lambda: numpy_spots(U[:n_np], refl.g, WL, 6000.0, geo.omega_ranges_deg,
                            geo.box_sizes_um, 6.0), 1)
    count_k = int(np.count_nonzero(spots.orientation < n_np))
    print(f"Spot prediction, {n} orientations: {len(spots)} spots in {t_k:.3f} s -> "
          f"{len(spots) / t_k / 1e6:.2f} M spots/s, {n / t_k / 1e3:.1f} k orientations/s")
    print(f"  NumPy vectorised ({n_np} orientations, {count_np} spots, kernel {count_k}): "
          f"{count_np / t_np / 1e6:.2f} M spots/s; ratio kernel/NumPy = "
          f"{(len(spots) / t_k) / (count_np / t_np):.1f}x")

    # footprints of one voxel for all spots of 10,000 orientations
    grid = hexagonal_grid(50.0, 2.5)
    sub = spots.take(np.nonzero(spots.orientation < 10_000)[0])
    verts = grid.vertices_um()[:1]
    t_f, (indptr, _, _) = best_time(
        lambda: spot_footprints(sub, np.zeros(len(sub), np.int32), verts, geo), args.repeat)
    print(f"Footprints (2.5 um triangle, 2 distances): {len(sub)} spots in {t_f:.3f} s -> "
          f"{len(sub) / t_f / 1e6:.2f} M spot footprints/s, {indptr[-1] / len(sub) / 2:.1f} "
          f"pixels per spot and distance")

    m = args.pairs
    q1 = matrix_to_quaternion(Rotation.random(m, random_state=rng).as_matrix())
    q2 = matrix_to_quaternion(Rotation.random(m, random_state=rng).as_matrix())
    sym = laue_quaternions(225)
    t_m, ang = best_time(lambda: misorientation_rad(q1, q2, sym), args.repeat)
    t_m1, _ = best_time(lambda: misorientation_rad(q1, q2, sym, num_threads=1), args.repeat)
    t_mn, ang_np = best_time(lambda: numpy_misorientation(q1, q2, sym), args.repeat)
    m_sc = min(m, 200_000)
    r1 = Rotation.from_quat(q1[:m_sc, [1, 2, 3, 0]])
    r2 = Rotation.from_quat(q2[:m_sc, [1, 2, 3, 0]])
    sym_rot = Rotation.from_quat(sym[:, [1, 2, 3, 0]])
    t_sc, ang_sc = best_time(lambda: scipy_misorientation(r1, r2, sym_rot), 1)
    assert np.allclose(ang, ang_np, atol=1e-9) and np.allclose(ang[:m_sc], ang_sc, atol=1e-7)
    print(f"Misorientation, {m} cubic pairs (24 operators): {t_m * 1e3:.1f} ms -> "
          f"{m / t_m / 1e6:.1f} M pairs/s ({m / t_m1 / 1e6:.1f} M pairs/s on 1 thread)")
    print(f"  NumPy vectorised: {m / t_mn / 1e6:.2f} M pairs/s; ratio kernel/NumPy = "
          f"{t_mn / t_m:.1f}x")
    print(f"  scipy Rotation ({m_sc} pairs): {m_sc / t_sc / 1e6:.3f} M pairs/s; ratio "
          f"kernel/scipy = {(m / t_m) / (m_sc / t_sc):.0f}x")
    print(f"Load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
