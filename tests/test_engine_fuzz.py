"""Fuzzing (finding 2 and the "cannot be fooled" promise): 1000 crafted engine files and 1000
calls with one fuzzed argument each. Zero crashes; every failure is a ValueError or
TypeError (MemoryError for sizes) that names the argument or the file item at fault.

Seeded (numpy default_rng), so every run sees the same cases. Both loops run in a child
process with one OpenMP thread: a crash is reported as such (a negative return code, not a
dead test worker), and thousands of tiny parallel regions do not fight the other test
worker for the 2 cores (about 10 s on a quiet machine, most of it h5py reading the files).
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

N_FILES = 1000
N_CALLS = 1000


def make_geometry():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry

    det = Detector(172e-6, 172e-6, (24, 20))
    return Geometry(0.03, 12 * 172e-6, 10 * 172e-6, 0.01, 0.0, 0.0, 1e-10, det)


def save_base(geometry, path):
    """An engine file with a 1D bbox engine and a 2D full engine."""
    from xreduce import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry)
    frame = np.ones(geometry.detector.shape)
    ai.integrate1d(frame, 15)
    ai.integrate2d(frame, 8, 6, method="full_csr")
    ai.save_engine(path)
    return path


def _mutate(rng, h5):
    """One random damage to an engine file; returns a description."""
    engines = list(h5["engines"].values())
    g = engines[rng.integers(len(engines))]
    choice = rng.integers(14)
    name = ["indptr", "indices", "data", "radial_edges"][rng.integers(4)]
    if choice == 0 and name in g:  # shuffle (non-monotonic)
        values = g[name][()]
        rng.shuffle(values)
        del g[name]
        g.create_dataset(name, data=values)
    elif choice == 1 and name in g:  # one value out of range
        values = g[name][()].astype(np.float64)
        values[rng.integers(values.size)] = rng.choice([-1, 1e9, 2**31, np.nan, np.inf])
        del g[name]
        g.create_dataset(name, data=values if not np.isfinite(values).all() or name in (
            "data", "radial_edges") else values.astype(np.int64))
    elif choice == 2 and name in g:  # truncated
        values = g[name][()]
        del g[name]
        g.create_dataset(name, data=values[:rng.integers(values.size)])
    elif choice == 3 and name in g:  # wrong dtype
        values = g[name][()]
        del g[name]
        g.create_dataset(name, data=values.astype(["f4", "i1", "u8", "S4", "c8"][rng.integers(5)]))
    elif choice == 4 and name in g:  # wrong shape
        values = g[name][()]
        del g[name]
        g.create_dataset(name, data=np.stack([values, values]))
    elif choice == 5 and name in g:  # missing
        del g[name]
    elif choice == 6:
        shapes = [[0, 480], [15, 479], [-1, 480], [2**40, 480], [15]]
        g.attrs["shape"] = shapes[rng.integers(len(shapes))]
    elif choice == 7:
        key = json.loads(g.attrs["key"])
        field = list(key)[rng.integers(len(key))]
        key[field] = [None, "x", -5, 1e300, [1, 2, 3], {"a": 1}][rng.integers(6)]
        g.attrs["key"] = json.dumps(key)
    elif choice == 8:
        g.attrs["key"] = ["{not json", "[]", "3", '{"algorithm": "csr"}'][rng.integers(4)]
    elif choice == 9:
        h5["geometry"].attrs[["dist", "rot1", "wavelength"][rng.integers(3)]] = "far"
    elif choice == 10:
        del h5["geometry"]
    elif choice == 11:
        g.attrs["split"] = "diagonal"
    elif choice == 12 and "indices" in g:  # a valid-looking permutation of rows' pixels
        values = g["indices"][()]
        values[rng.integers(values.size)] = rng.integers(0, 480)
        del g["indices"]
        g.create_dataset("indices", data=values)
    else:  # huge indptr values that stay monotonic
        values = g["indptr"][()].astype(np.int64)
        values[-1] = 2**33
        del g["indptr"]
        g.create_dataset("indptr", data=values)
    return int(choice)


def fuzz_engine_files(saved):
    """1000 damaged engine files: loading and integrating with each either works or raises a
    ValueError / TypeError naming the item; never a crash or another exception."""
    from xreduce import AzimuthalIntegrator
    from xreduce.engines import FrameArgs, pixel_rule

    rng = np.random.default_rng(2024)
    frame = np.full((1, 480), 5.0)
    args = FrameArgs(frame, None, None, "poisson", pixel_rule(frame.dtype, None, None, False))
    names = ("indptr", "indices", "data", "radial_edges", "azimuthal_edges", "shape", "key",
             "geometry", "engines", "split", "path", "norm", "dist", "rot1", "wavelength",
             "unit", "detector")
    outcomes = {"ok": 0, "refused": 0}
    base = Path(saved).read_bytes()
    for _ in range(N_FILES):
        crafted = io.BytesIO(base)  # in memory: h5py reads and writes file-like objects
        with h5py.File(crafted, "r+") as h5:
            _mutate(rng, h5)
        try:
            ai = AzimuthalIntegrator.load_engine(crafted)
            for key, engine in ai.engines:
                engine.integrate(args, ai.normalisation())
            outcomes["ok"] += 1
        except (ValueError, TypeError) as err:
            assert any(n in str(err) for n in names), repr(err)
            outcomes["refused"] += 1
    assert outcomes["refused"] > N_FILES // 2, outcomes  # the damage is seen
    return outcomes


def _fuzzed_call(rng, shape):
    """A valid call with one argument replaced by a random, often bad, value."""
    kwargs = dict(data=np.ones(shape), npt=int(rng.integers(1, 40)), unit="2th_deg")
    bad = {
        "data": [np.ones((3, 3)), np.ones(shape, complex), np.ones(shape, bool),
                 np.array([["a"]]), np.ones((0,) + shape), [[1, 2]], None, "frame",
                 np.full(shape, np.nan), np.full(shape, np.inf, np.float32),
                 np.full((2,) + shape, -1, np.int16), np.ones(shape + (1,)),
                 np.full(shape, 2**64 - 1, np.uint64), np.ones(shape, np.float16),
                 np.ma.masked_array(np.ones(shape), np.ones(shape, bool))],
        "npt": [0, -1, 1.5, "10", 2**40, True, None, np.int64(7), 2**31],
        "unit": ["furlongs", None, 5, "chi_deg", "q_nm^-1", "r_mm"],
        "method": ["magic", ("bbox",), ("no", "histogram", "cython"), ("full", "histogram"),
                   ("bbox", "csr", "cython", "gpu"), 7, "splitpixel", ["a", "b", "c", "d", "e"]],
        "dummy": [np.nan, "x", np.inf, 1e300, -5, 1.0, [1]],
        "delta_dummy": [-1, np.nan, "y", 0.5, np.inf],
        "mask": [np.ones((2, 2)), np.array([["a"]] * shape[0]), np.ones(shape, bool),
                 np.zeros(shape, np.float32), "mask", np.ones(shape, complex)],
        "dark": [np.ones((2, 2)), np.full(shape, np.nan), "dark", np.ones(shape, complex)],
        "flat": [np.zeros(shape), np.full(shape, -1.0), np.ones((5,)), "flat",
                 np.full(shape, np.nan)],
        "variance": [np.ones((2, 2)), np.full(shape, np.nan), np.ones((4,) + shape)],
        "error_model": ["gauss", 5, "POISSON", "azimuthal", None],
        "radial_range": [(1, 0), (0, np.nan), "ab", (1,), (0, 1e300), (-1e9, 1e9)],
        "azimuth_range": [(-200, 0), (10, 10), (0, "x"), (-180, 180)],
        "polarization_factor": [2, -1.5, "p", np.nan, 0.99],
        "normalization_factor": [0, -1, np.nan, "n", np.inf, 2.0],
        "empty": ["e", None, 0.0],
        "target": ["tpu", 7, (0,), "cpu"],
    }
    name = list(bad)[rng.integers(len(bad))]
    options = bad[name]
    kwargs[name] = options[rng.integers(len(options))]
    return name, kwargs


def fuzz_arguments(geometry):
    """1000 calls of integrate1d with one random argument: each works (finite intensities
    where a bin has pixels) or raises ValueError / TypeError / MemoryError naming it."""
    from xreduce import AzimuthalIntegrator

    ai = AzimuthalIntegrator(geometry, max_engines=4)
    rng = np.random.default_rng(7)
    shape = geometry.detector.shape
    refused = 0
    for _ in range(N_CALLS):
        name, kwargs = _fuzzed_call(rng, shape)
        data, npt = kwargs.pop("data"), kwargs.pop("npt")
        try:
            res = ai.integrate1d(data, npt, **kwargs)
        except (ValueError, TypeError, MemoryError) as err:
            assert name in str(err) or (name == "npt" and "npt" in str(err)), (name, repr(err))
            refused += 1
            continue
        filled = np.asarray(res.count) > 0
        assert np.isfinite(res.intensity[filled]).all() or name in ("data", "dummy",
                                                                    "normalization_factor")
    assert 0 < refused < N_CALLS
    return {"refused": refused, "ok": N_CALLS - refused}


def _run_child(what, tmp_path):
    """Run one fuzz loop in a child process (one OpenMP thread); its outcome as a dict."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    here = Path(__file__).parent
    code = (f"import sys, json; sys.path.insert(0, {str(here)!r}); import test_engine_fuzz as f; "
            f"print(json.dumps(f.child({what!r}, {str(tmp_path)!r})))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (f"the fuzz child {'crashed' if done.returncode < 0 else 'failed'}"
                                  f" (return code {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(what, folder):
    geometry = make_geometry()
    if what == "files":
        return fuzz_engine_files(save_base(geometry, Path(folder) / "base.h5"))
    return fuzz_arguments(geometry)


def test_fuzzed_engine_files(tmp_path):
    outcome = _run_child("files", tmp_path)
    assert outcome["ok"] + outcome["refused"] == N_FILES


def test_fuzzed_arguments(tmp_path):
    outcome = _run_child("arguments", tmp_path)
    assert outcome["ok"] + outcome["refused"] == N_CALLS
