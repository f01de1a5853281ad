"""``xreduce demo``: integrate a synthetic LaB6 calibrant image, all made in code.

The demo geometry (:func:`xreduce.demo_data.demo_geometry`: a Pilatus 1M 0.2 m from the
sample, tilted by a few degrees, 1 Angstrom X-rays) sees the powder rings of LaB6 (cubic, a = 4.15692 A,
Pm-3m: every (h, k, l) reflects, at d = a / sqrt(h^2 + k^2 + l^2)); each ring is a Gaussian
profile in 2theta on a smooth background, with Poisson noise. The image is integrated in 1D
and 2D; the demo prints the method, the time per frame and the ring positions found against
the expected ones, and writes ``demo_1d.png`` / ``demo_2d.png`` when matplotlib is present.

Example
-------
>>> from xreduce.demo import run_demo
>>> run_demo(output_dir="/tmp")        # doctest: +SKIP
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np

LAB6_A_ANGSTROM = 4.15692
RING_WIDTH_DEG = 0.04  # Gaussian sigma of each ring in 2theta


def lab6_two_theta_deg(wavelength_m: float, max_two_theta_deg: float = 60.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """2theta (degrees) of the LaB6 rings below ``max_two_theta_deg`` and their multiplicities.

    Pm-3m has no systematic absences: every h^2 + k^2 + l^2 = s that is a sum of three
    squares gives a ring at d = a / sqrt(s); the multiplicity counts the (h, k, l) with it.
    """
    hmax = 12
    h = np.arange(-hmax, hmax + 1)
    s = (h[:, None, None] ** 2 + h[None, :, None] ** 2 + h[None, None, :] ** 2).ravel()
    s = s[s > 0]
    values, multiplicity = np.unique(s, return_counts=True)
    d_m = LAB6_A_ANGSTROM * 1e-10 / np.sqrt(values)
    sin_theta = wavelength_m / (2 * d_m)
    ok = sin_theta < 1
    tth = np.rad2deg(2 * np.arcsin(sin_theta[ok]))
    keep = tth < max_two_theta_deg
    return tth[keep], multiplicity[ok][keep]


def synthetic_image(geometry, rng: np.random.Generator) -> np.ndarray:
    """A LaB6 calibrant frame (uint32 counts) on the detector of ``geometry``."""
    tth = np.rad2deg(np.asarray(geometry.twotheta_array()))
    rings, multiplicity = lab6_two_theta_deg(geometry.wavelength, float(tth.max()) + 1)
    expected = 20.0 + 30.0 * np.exp(-tth / 15.0)
    for position, mult in zip(rings, multiplicity):
        near = np.abs(tth - position) < 6 * RING_WIDTH_DEG
        amplitude = 2000.0 * mult / 24.0 * np.exp(-position / 25.0)
        expected[near] += amplitude * np.exp(-0.5 * ((tth[near] - position) / RING_WIDTH_DEG) ** 2)
    expected *= np.asarray(geometry.solid_angle_array())
    expected *= np.asarray(geometry.polarization_array(0.99))
    frame = rng.poisson(expected).astype(np.uint32)
    mask = geometry.detector.mask
    if mask is not None:
        frame[np.asarray(mask) != 0] = np.iinfo(np.uint32).max  # module gaps: invalid pixels
    return frame


def find_peaks(radial: np.ndarray, intensity: np.ndarray, expected: np.ndarray,
               window: float) -> np.ndarray:
    """Centroid of the profile within ``window`` of each expected position (NaN if none)."""
    found = np.full(len(expected), np.nan)
    base = np.nanpercentile(intensity, 20)
    for i, position in enumerate(expected):
        sel = (np.abs(radial - position) < window) & np.isfinite(intensity)
        if sel.sum() < 3:
            continue
        weight = np.clip(intensity[sel] - base, 0, None)
        if weight.sum() > 0 and intensity[sel].max() > 3 * base:
            found[i] = np.sum(weight * radial[sel]) / weight.sum()
    return found


def run_demo(output_dir: str = ".", plot: bool = True, seed: int = 0) -> int:
    """Build the synthetic LaB6 image, integrate it in 1D and 2D, print a summary, plot.

    Returns 0 on success (every ring found within 0.01 degree), 1 otherwise.
    """
    from xreduce.demo_data import demo_geometry
    from xreduce.integrator import AzimuthalIntegrator

    t_start = time.perf_counter()
    geometry = demo_geometry()
    frame = synthetic_image(geometry, np.random.default_rng(seed))
    print(f"Synthetic LaB6 powder image (a = {LAB6_A_ANGSTROM} A, Poisson noise, module gaps "
          f"marked invalid), {frame.dtype} frame, on the demo geometry:")
    print("    " + str(geometry).replace("\n", "\n    "))

    ai = AzimuthalIntegrator(geometry)
    method = ("full", "csr", "cython")
    options = dict(unit="2th_deg", method=method, error_model="poisson", polarization_factor=0.99)
    t0 = time.perf_counter()
    res = ai.integrate1d(frame, 2000, **options)
    build_1d = time.perf_counter() - t0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        res = ai.integrate1d(frame, 2000, **options)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    cake = ai.integrate2d(frame, 500, 360, **options)
    build_2d = time.perf_counter() - t0
    times_2d = []
    for _ in range(3):
        t0 = time.perf_counter()
        cake = ai.integrate2d(frame, 500, 360, **options)
        times_2d.append(time.perf_counter() - t0)
    print(f"Method {method}: 1D 2000 bins {statistics.median(times) * 1e3:.1f} ms/frame "
          f"(first call with matrix build {build_1d:.2f} s); 2D 500x360 "
          f"{statistics.median(times_2d) * 1e3:.1f} ms/frame (first call {build_2d:.2f} s)")

    rings, _ = lab6_two_theta_deg(geometry.wavelength, float(res.radial.max()))
    rings = rings[rings > res.radial.min() + 0.2]
    found = find_peaks(res.radial, res.intensity, rings, window=0.15)
    print("  ring   expected 2theta (deg)   found (deg)   difference (deg)")
    for i, (want, got) in enumerate(zip(rings, found)):
        print(f"  {i + 1:4d}   {want:18.4f}   {got:11.4f}   {got - want:+14.4f}")
    ok = np.isfinite(found)
    worst = float(np.max(np.abs(found[ok] - rings[ok]))) if ok.any() else np.inf
    print(f"{ok.sum()} of {len(rings)} rings found; largest deviation {worst:.4f} deg "
          f"(bin width {res.radial[1] - res.radial[0]:.4f} deg)")

    if plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not installed: no plots")
        else:
            from xreduce.io.writers import atomic_output

            fig, ax = plt.subplots(figsize=(9, 4))
            res.plot(ax=ax)
            for position in rings:
                ax.axvline(position, color="r", lw=0.3, alpha=0.5)
            ax.set_title("Synthetic LaB6, Pilatus 1M: 1D integration (red: expected rings)")
            path_1d = os.path.join(output_dir, "demo_1d.png")
            with atomic_output(path_1d) as tmp:
                fig.savefig(tmp, dpi=120, bbox_inches="tight")
            fig, ax = plt.subplots(figsize=(9, 5))
            cake.plot(ax=ax)
            ax.set_title("Synthetic LaB6, Pilatus 1M: cake (2D integration)")
            path_2d = os.path.join(output_dir, "demo_2d.png")
            with atomic_output(path_2d) as tmp:
                fig.savefig(tmp, dpi=120, bbox_inches="tight")
            plt.close("all")
            print(f"Wrote {path_1d} and {path_2d}")
    print(f"Demo done in {time.perf_counter() - t_start:.1f} s")
    return 0 if ok.all() and worst < 0.01 else 1
