"""Benchmark of NF image processing (raw frames -> SpotsInfo.bin), time and peak memory.

A synthetic NF stack (Poisson background, random Gaussian spots, uint16) is written to HDF5;
then, each in its own process so that peak memory (ru_maxrss) is its own:

- xreduce: ``xreduce.nf.images.process_images`` (row-band median, streamed frames; band
  buffer ``--band-mb``);
- the plain NumPy/SciPy way a user would write it: load the whole stack, ``np.partition``
  median over frames, ``scipy.ndimage.median_filter`` per frame, threshold, pack.

Both give the same bits (checked). MIDAS's own C program (ProcessImagesCombined) is not
installable here, so it is not in the comparison.

Run: ``python benchmarks/bench_nf_images.py [--frames 360] [--size 1024] [--band-mb 64]``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_stack(path: str, n_frames: int, size: int, seed: int = 0) -> None:
    import h5py
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("data", (n_frames, size, size), dtype=np.uint16,
                                 chunks=(1, size, size))
        for j in range(n_frames):
            spots = np.zeros((size, size))
            n = 20
            spots[rng.integers(0, size, n), rng.integers(0, size, n)] = 3000.0
            frame = rng.poisson(50.0 + gaussian_filter(spots, 1.0)).astype(np.uint16)
            dset[j] = frame


def run_xreduce(path: str, n_frames: int, size: int, band_mb: int) -> np.ndarray:
    import io

    from xreduce.nf.images import process_images
    from xreduce.nf.params import read_parameters

    text = (f"nDistances 1\nLsd 1000\nBC 0 0\nNrPixels {size}\nStartNr 0\n"
            f"EndNr {n_frames - 1}\nRawDataURL {path}::/data\nBlanketSubtraction 20\n"
            f"MedFiltRadius 1\nDoLoGFilter 0\n")
    p = read_parameters(io.StringIO(text), required=())
    return process_images(p, progress=False, memory_bytes=band_mb << 20)


def run_numpy(path: str, n_frames: int, size: int) -> np.ndarray:
    import h5py
    from scipy.ndimage import median_filter

    with h5py.File(path, "r") as h5:
        stack = h5["data"][()]
    k = (n_frames - 1) // 2
    background = np.partition(stack, k, axis=0)[k].astype(np.float64)
    bits = []
    for frame in stack:
        sig = np.maximum(frame - background - 20.0, 0.0)
        filt = median_filter(sig, 3)
        sig[1:-1, 1:-1] = filt[1:-1, 1:-1]
        lit = (sig != 0)[::-1, ::-1].T
        bits.append(np.packbits(lit.ravel(), bitorder="little"))
    return np.concatenate(bits).view("<u4")


def worker(args) -> None:
    import h5py  # noqa: F401  (imports outside the timed part)
    import scipy.ndimage  # noqa: F401

    import xreduce.median  # noqa: F401
    import xreduce.nf.images  # noqa: F401

    t0 = time.perf_counter()
    if args.worker == "xreduce":
        words = run_xreduce(args.file, args.frames, args.size, args.band_mb)
    else:
        words = run_numpy(args.file, args.frames, args.size)
    seconds = time.perf_counter() - t0
    np.save(args.file + f".{args.worker}.npy", words)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=360)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--band-mb", type=int, default=64)
    ap.add_argument("--worker", choices=("xreduce", "numpy"))
    ap.add_argument("--file")
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stack.h5")
        make_stack(path, args.frames, args.size)
        raw_mb = args.frames * args.size ** 2 * 2 / 2**20
        print(f"stack: {args.frames} frames of {args.size}^2 uint16 ({raw_mb:.0f} MiB), "
              f"load {os.getloadavg()[0]:.1f}, cpus {os.cpu_count()}")
        results = {}
        for name in ("xreduce", "numpy"):
            cmd = [sys.executable, __file__, "--worker", name, "--file", path,
                   "--frames", str(args.frames), "--size", str(args.size),
                   "--band-mb", str(args.band_mb)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{name} failed:\n{proc.stderr}")
            out = proc.stdout
            results[name] = json.loads(out.strip().splitlines()[-1])
            print(f"{name:8s} {results[name]['seconds']:7.2f} s   peak RSS "
                  f"{results[name]['peak_mb']:7.0f} MiB")
        same = np.array_equal(np.load(path + ".xreduce.npy"), np.load(path + ".numpy.npy"))
        print(f"same bits: {same}; speed ratio numpy/xreduce "
              f"{results['numpy']['seconds'] / results['xreduce']['seconds']:.2f}x; "
              f"memory ratio {results['numpy']['peak_mb'] / results['xreduce']['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
