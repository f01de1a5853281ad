"""Survey of the faults of issue #16 in the DCT area: run each case in a fresh subprocess of
the given Python and classify what happened.

    python scripts/robustness_survey.py [--python /path/to/venv/bin/python]

Classes: ``ok`` (correct result, or refused with a ValueError/TypeError/KeyError/OSError/
MemoryError that names the argument or file), ``MIXED`` (exit 0 with wrong or mixed data),
``crash`` (a signal, or another exception type: IndexError, OverflowError, an HDF5 traceback
without a hint...), ``slow`` (still running after the time limit), ``followed`` (a planted link
was followed). Each case runs with a 4 GiB address-space limit, so an attempted allocation of
tens of GiB shows as a bare ``MemoryError`` (counted as ``crash``: it names nothing).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import textwrap

PRELUDE = r'''
import os, sys, json, numpy as np, h5py
os.environ.setdefault("OMP_NUM_THREADS", "2")
def stack_file(path, seed=0, n=30, shape=(16, 16), spots=True):
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 1, (n,) + shape).astype(np.float32)
    if spots:
        for k in range(0, n, 5):
            r, c = rng.integers(2, shape[0] - 2, 2)
            data[k:k + 2, r - 1:r + 2, c - 1:c + 2] += 60 + 10 * rng.random()
    with h5py.File(path, "w") as h5:
        h5["/entry/data"] = data
    return data
def pre_config(inp, out, **extra):
    d = {"input": inp + "::/entry/data", "output": out, "chunk_frames": 5,
         "moving_median": {"window": 7}, "median_filter": {"size": 3}}
    d.update(extra)
    return {"preprocess": d}
def seg_yaml(inp, out, **extra):
    import yaml
    d = {"input": inp, "output": out, "seed_threshold": 30.0, "tau": 0.2, "bb_max": [3, 4, 4],
         "chunk_frames": 5}
    d.update(extra)
    with open("seg.yml", "w") as f:
        yaml.safe_dump({"segment": d}, f)
    return "seg.yml"
class Stop(Exception):
    pass
def stop_after(k):
    def on_chunk(index, first, stop):
        if index >= k:
            raise Stop()
    return on_chunk
'''

CASES = [
    ("resume: segment API, other stack same shape", r'''
from xreduce.dct.segment import segment
a = stack_file("a.h5", 1)[()]; b = stack_file("b.h5", 2)[()]
kw = dict(seed_threshold=30.0, tau=0.2, bb_max=3, chunk_frames=5)
ra = segment(a, checkpoint="ck", **kw)
rb = segment(b, checkpoint="ck", **kw)
print("MIXED" if np.array_equal(ra.peaks, rb.peaks) else "OK")
'''),
    ("resume: preprocess on a rewritten scan", r'''
from xreduce.dct import preprocess
stack_file("s.h5", 1)
try:
    preprocess(pre_config("s.h5", "o.h5"), progress=False, on_chunk=stop_after(2))
except Stop:
    pass
stack_file("s.h5", 2)
preprocess(pre_config("s.h5", "o.h5"), progress=False)
got = h5py.File("o.h5")["/entry/preprocessed/data"][()]
preprocess(pre_config("s.h5", "p.h5"), progress=False)
ref = h5py.File("p.h5")["/entry/preprocessed/data"][()]
print("OK" if np.array_equal(got, ref) else "MIXED")
'''),
    ("resume: preprocess on a grown scan (30 -> 35 frames)", r'''
from xreduce.dct import preprocess
stack_file("s.h5", 1)
try:
    preprocess(pre_config("s.h5", "o.h5"), progress=False, on_chunk=stop_after(2))
except Stop:
    pass
stack_file("s.h5", 1, n=35)
preprocess(pre_config("s.h5", "o.h5"), progress=False)
got = h5py.File("o.h5")["/entry/preprocessed/data"][()]
preprocess(pre_config("s.h5", "p.h5"), progress=False)
ref = h5py.File("p.h5")["/entry/preprocessed/data"][()]
print("OK" if got.shape == ref.shape and np.array_equal(got, ref) else "MIXED")
'''),
    ("resume: segment CLI after the input was regenerated", r'''
from xreduce.dct.segment_cli import run_segment, checkpoint_path
import xreduce.dct.segment as S
stack_file("a.h5", 1)
cfg = seg_yaml("a.h5::/entry/data", "d.h5")
real = S._Checkpoint.save_window
calls = []
def boom(self, *a):
    real(self, *a); calls.append(1)
    if len(calls) == 1: raise Stop()
S._Checkpoint.save_window = boom
try:
    run_segment(cfg, progress=False)
except Stop:
    pass
S._Checkpoint.save_window = real
stack_file("a.h5", 2)
r1, _ = run_segment(cfg, progress=False)
r2, _ = run_segment(seg_yaml("a.h5::/entry/data", "e.h5"), progress=False)
print("OK" if np.array_equal(r1.voxels, r2.voxels) else "MIXED")
'''),
    ("threads: segment num_threads=100000", r'''
from xreduce.dct.segment import segment
r = segment(stack_file("a.h5", 1), 30.0, 0.2, 3, num_threads=100000); print("OK")
'''),
    ("threads: segment num_threads=10**9", r'''
from xreduce.dct.segment import segment
r = segment(stack_file("a.h5", 1), 30.0, 0.2, 3, num_threads=10**9); print("OK")
'''),
    ("threads: segment num_threads=2**31", r'''
from xreduce.dct.segment import segment
r = segment(stack_file("a.h5", 1), 30.0, 0.2, 3, num_threads=2**31); print("OK")
'''),
    ("threads: preprocess config num_threads: 2**31", r'''
from xreduce.dct import preprocess
stack_file("s.h5", 1)
preprocess(pre_config("s.h5", "o.h5", num_threads=2**31), progress=False); print("OK")
'''),
    ("threads: segment config num_threads: 10**9", r'''
from xreduce.dct.segment_cli import run_segment
stack_file("a.h5", 1)
run_segment(seg_yaml("a.h5::/entry/data", "d.h5", num_threads=10**9), progress=False); print("OK")
'''),
    ("threads: moving_median num_threads=10**9", r'''
from xreduce.median import moving_median
moving_median(np.zeros((30, 4, 4), np.float32), 5, num_threads=10**9); print("OK")
'''),
    ("sizes: moving_median window 1e9", r'''
from xreduce.median import moving_median
moving_median(np.zeros((30, 4, 4), np.float32), 10**9); print("OK")
'''),
    ("sizes: moving_median window 1e6 on 30 frames", r'''
from xreduce.median import moving_median
moving_median(np.zeros((30, 64, 64), np.float32), 10**6); print("OK")
'''),
    ("sizes: median_filter2d size 200 on a 1x1 frame", r'''
import time
from xreduce.median import median_filter2d
t = time.perf_counter(); median_filter2d(np.zeros((1, 1, 1), np.float32), 200)
print("OK" if time.perf_counter() - t < 1.0 else "SLOW")
'''),
    ("sizes: median_filter2d size 10**5", r'''
from xreduce.median import median_filter2d
median_filter2d(np.zeros((1, 4, 4), np.float32), 10**5); print("OK")
'''),
    ("sizes: spline valid region 1e6", r'''
from xreduce.spline import DistortionSpline, write_spline, spline_detector
knots = np.array([0.0] * 4 + [100.0] * 4)
sp = DistortionSpline(valid_region=(0.0, 0.0, 1e6, 1e6), grid_spacing=5.0,
                      pixel_size_um=(50.0, 50.0), x_knots=(knots, knots),
                      x_coefficients=np.zeros(16), y_knots=(knots, knots),
                      y_coefficients=np.zeros(16))
write_spline("big.spline", sp)
spline_detector("big.spline"); print("OK")
'''),
    ("links: symlink planted at the atomic writer's temporary name", r'''
from xreduce.io import atomic_output, partial_path
open("victim.txt", "w").write("precious")
os.symlink(os.path.abspath("victim.txt"), partial_path("out.txt"))
with atomic_output("out.txt") as tmp:
    open(tmp, "w").write("new")
print("FOLLOWED" if open("victim.txt").read() != "precious" else "OK")
'''),
    ("links: symlink planted at the partial preprocess output", r'''
from xreduce.dct import preprocess
from xreduce.io import partial_path
stack_file("s.h5", 1); stack_file("victim.h5", 9)
before = open("victim.h5", "rb").read()
os.symlink(os.path.abspath("victim.h5"), partial_path("o.h5"))
try:
    preprocess(pre_config("s.h5", "o.h5"), progress=False)
finally:
    print("FOLLOWED" if open("victim.h5", "rb").read() != before else "OK")
'''),
    ("links: HDF5 external link planted in a partial preprocess output", r'''
from xreduce.dct import preprocess
from xreduce.io import partial_path
stack_file("s.h5", 1)
try:
    preprocess(pre_config("s.h5", "o.h5"), progress=False, on_chunk=stop_after(1))
except Stop:
    pass
with h5py.File("victim.h5", "w") as v:
    v["/d"] = np.zeros((30, 16, 16), np.float32)
with h5py.File(partial_path("o.h5"), "r+") as h5:
    del h5["/entry/preprocessed/data"]
    h5["/entry/preprocessed/data"] = h5py.ExternalLink(os.path.abspath("victim.h5"), "/d")
try:
    preprocess(pre_config("s.h5", "o.h5"), progress=False)
finally:
    print("FOLLOWED" if np.any(h5py.File("victim.h5")["/d"][()] != 0) else "OK")
'''),
    ("umask: preprocess, difspot and atomic_output files 0644 under umask 022", r'''
os.umask(0o022)
from xreduce.dct import preprocess
from xreduce.dct.segment_cli import run_segment
from xreduce.io import atomic_output
stack_file("s.h5", 1)
preprocess(pre_config("s.h5", "o.h5"), progress=False)
run_segment(seg_yaml("o.h5::/entry/preprocessed/data", "d.h5"), progress=False)
with atomic_output("t.txt") as tmp:
    open(tmp, "w").write("x")
modes = {p: oct(os.stat(p).st_mode & 0o777) for p in ("o.h5", "d.h5", "t.txt")}
print("OK" if set(modes.values()) == {"0o644"} else f"MIXED {modes}")
'''),
    ("partial: chunk addresses past the end of the file (gzip)", r'''
import struct
from xreduce.dct import preprocess
from xreduce.io import partial_path
stack_file("s.h5", 1)
try:
    preprocess(pre_config("s.h5", "o.h5", compression="gzip"), progress=False, on_chunk=stop_after(3))
except Stop:
    pass
p = partial_path("o.h5")
with h5py.File(p, "r") as h5:
    d = h5["/entry/preprocessed/data"]
    cut = d.id.get_chunk_info_by_coord((15, 0, 0)).byte_offset + 10
size = os.path.getsize(p)
with open(p, "r+b") as f:
    f.truncate(cut)
    f.seek(40); f.write(struct.pack("<Q", cut))   # superblock v0 end-of-file address
preprocess(pre_config("s.h5", "o.h5", compression="gzip"), progress=False)
got = h5py.File("o.h5")["/entry/preprocessed/data"][()]
preprocess(pre_config("s.h5", "p.h5", compression="gzip"), progress=False)
ref = h5py.File("p.h5")["/entry/preprocessed/data"][()]
print("OK" if np.array_equal(got, ref) else "MIXED")
'''),
    ("partial: truncated to half", r'''
from xreduce.dct import preprocess
from xreduce.io import partial_path
stack_file("s.h5", 1)
try:
    preprocess(pre_config("s.h5", "o.h5"), progress=False, on_chunk=stop_after(3))
except Stop:
    pass
p = partial_path("o.h5")
os.truncate(p, os.path.getsize(p) // 2)
preprocess(pre_config("s.h5", "o.h5"), progress=False); print("OK")
'''),
    ("concurrency: two preprocess runs of one config at once", r'''
import threading
from xreduce.dct import preprocess
stack_file("s.h5", 1, n=60)
errors = []
def run():
    try:
        preprocess(pre_config("s.h5", "o.h5", chunk_frames=2), progress=False)
    except Exception as exc:
        errors.append(exc)
import multiprocessing as mp
ps = [mp.get_context("fork").Process(target=run) for _ in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
codes = [p.exitcode for p in ps]
preprocess(pre_config("s.h5", "p.h5", chunk_frames=2), progress=False)
ok = np.array_equal(h5py.File("o.h5")["/entry/preprocessed/data"][()],
                    h5py.File("p.h5")["/entry/preprocessed/data"][()])
print("OK" if ok and codes.count(0) >= 1 and min(codes) >= 0 else f"MIXED {codes} {ok}")
'''),
    ("cli: segment input without ::/entry/preprocessed/data", r'''
from xreduce.cli.dct import main
from xreduce.dct import preprocess
stack_file("s.h5", 1)
preprocess(pre_config("s.h5", "o.h5"), progress=False)
rc = main(["segment", "--no-progress", seg_yaml("o.h5", "d.h5")])
print("OK" if rc == 0 else f"rc={rc}")
'''),
    ("cli: segment into a missing output folder", r'''
from xreduce.cli.dct import main
stack_file("s.h5", 1)
rc = main(["segment", "--no-progress", seg_yaml("s.h5::/entry/data", "nowhere/d.h5")])
print("OK" if rc == 2 and not os.path.exists("nowhere") else f"MIXED rc={rc} created={os.path.exists('nowhere')}")
'''),
    ("cli: preprocess onto a full disk (file size limit)", r'''
import resource, signal, yaml
from xreduce.cli.dct import main
stack_file("s.h5", 1, n=60, shape=(64, 64))
yaml.safe_dump(pre_config("s.h5", "o.h5"), open("p.yml", "w"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300000, 300000))
rc = main(["preprocess", "--no-progress", "p.yml"])
print("OK" if rc == 1 else f"rc={rc}")
'''),
    ("cli: preprocess of a truncated input file", r'''
from xreduce.cli.dct import main
import yaml
stack_file("s.h5", 1, n=200, shape=(64, 64))
os.truncate("s.h5", os.path.getsize("s.h5") // 2)
yaml.safe_dump(pre_config("s.h5", "o.h5"), open("p.yml", "w"))
rc = main(["preprocess", "--no-progress", "p.yml"])
print("OK" if rc in (1, 2) else f"rc={rc}")
'''),
]


def classify(proc: subprocess.CompletedProcess | None) -> str:
    if proc is None:
        return "slow"
    if proc.returncode < 0:
        return f"crash (signal {-proc.returncode})"
    out = proc.stdout.strip().splitlines()
    last = out[-1] if out else ""
    if "FOLLOWED" in proc.stdout:
        return "followed"
    if proc.returncode == 0:
        return "ok" if last == "OK" else last.split()[0] if last else "?"
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    tail = err[-1] if err else ""
    kind = tail.split(":")[0].split(".")[-1]
    clear = ("ValueError", "TypeError", "KeyError", "OSError", "FileNotFoundError",
             "FileExistsError", "PermissionError", "ConfigError", "IsADirectoryError",
             "RunChangedError", "PartialFileError", "RunLockedError")
    if kind == "MemoryError" and "Unable to allocate" not in tail and "needs" in tail:
        return "ok (refused)"
    if kind in clear:
        return "ok (refused)"
    return f"crash ({kind})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    tests = os.path.join(os.path.dirname(here), "tests")
    spline = next((os.path.join(tests, "data", f) for f in sorted(os.listdir(os.path.join(tests, "data")))
                   if f.endswith(".spline")), "")
    env = dict(os.environ, XR_TESTS=tests, XR_SPLINE=spline)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    for name, code in CASES:
        with tempfile.TemporaryDirectory() as folder:
            script = PRELUDE + textwrap.dedent(code)
            try:
                proc = subprocess.run([args.python, "-c", script], cwd=folder, env=env,
                                      capture_output=True, text=True, timeout=args.timeout,
                                      preexec_fn=limit)
            except subprocess.TimeoutExpired:
                proc = None
            os.chmod(folder, 0o755)
            for root, dirs, _ in os.walk(folder):
                for d in dirs:
                    os.chmod(os.path.join(root, d), 0o755)
        print(f"{classify(proc):24s} | {name}", flush=True)


if __name__ == "__main__":
    main()
