"""Integration speed on this machine: every method and back end, on the usual detector sizes.

For each detector (Pilatus 1M, Pilatus 2M, Eiger 4M, Pilatus 6M, Eiger 9M, Eiger 16M), each
pixel splitting (no, bbox, full), 1D (1000 bins) and 2D (500 x 360 bins), and each back end
(Cython on the CPU, OpenCL on every device found), it measures the initialisation time (the
first call: sparse-matrix build, frame-invariant sums, device upload and kernel compilation)
and the time per frame of the following calls, one frame per call as a user's loop would do.
Each result is checked against the reference method (Cython CSR with the same splitting) on
the same frame; a result that disagrees is reported as FAILED, without speed. With
``compare=("pyfai",)`` pyFAI integrates the same frames with the same geometry, splitting and
back end in the same run, and the ratio xreduce / pyFAI of frames per second is reported.

Example
-------
>>> report = run_benchmark(["Pilatus 1M"], splits=["bbox"], frames=2)   # doctest: +SKIP
>>> report["results"][0]["frames_per_s"]                               # doctest: +SKIP
23.5
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

DETECTORS = ("Pilatus 1M", "Pilatus 2M", "Eiger 4M", "Pilatus 6M", "Eiger 9M", "Eiger 16M")
SPLITS = ("no", "bbox", "full")
DIMS = {"1d": (1000, None), "2d": (500, 360)}
#: a result agrees with the reference when |I - I_ref| <= RTOL * |I_ref| + ATOL * max|I_ref|
RTOL, ATOL = 1e-4, 1e-6
#: OpenCL full splitting is skipped above this many pixels when `skip_big_full` is set: on a
#: 2-core machine its matrix build alone takes most of the time budget of the quick run.
FULL_SPLIT_MAX_MPIX = 5.0


@dataclass
class Point:
    """One measurement: a detector, a dimension, a splitting and a back end."""

    detector: str
    mpix: float
    dim: str
    split: str
    backend: str                 # "cython", "opencl", "pyfai-cython", "pyfai-opencl"
    device: str                  # "CPU (OpenMP)" or the OpenCL device name
    init_s: float | None = None
    frame_s: float | None = None
    frames_per_s: float | None = None
    mpix_per_s: float | None = None
    check: str = ""              # "reference", "ok (max rel diff ...)" or "FAILED ..."
    max_rel_diff: float | None = None
    ratio_vs_pyfai: float | None = None
    resident_frames_per_s: float | None = None   # OpenCL, stack already on the device
    error: str | None = None


# --------------------------------------------------------------------------- environment
def machine_info() -> dict:
    """CPU model, core count, OS and Python of this machine."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    """Versions of xreduce and of the libraries it is compared with or runs on."""
    out = {}
    for name in ("xreduce", "numpy", "pyopencl", "pyFAI"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", getattr(module, "version", "?")))
        except ImportError:
            out[name] = None
    return out


def opencl_devices() -> list[dict]:
    """Every OpenCL device: (platform, device) ids, names, type, memory; [] without OpenCL."""
    try:
        import pyopencl as cl
        platforms = cl.get_platforms()
    except Exception:  # no pyopencl, or no ICD loader/platform
        return []
    found = []
    for p, plat in enumerate(platforms):
        try:
            devices = plat.get_devices()
        except Exception:
            continue
        for d, dev in enumerate(devices):
            found.append({"id": [p, d], "platform": plat.name, "name": dev.name,
                          "type": cl.device_type.to_string(dev.type),
                          "global_mem_mib": dev.global_mem_size // 2**20,
                          "compute_units": dev.max_compute_units,
                          "fp64": "cl_khr_fp64" in dev.extensions})
    return found


# --------------------------------------------------------------------------- problem set-up
def make_geometry(detector_name: str) -> Any:
    """A typical SAXS/WAXS geometry: beam near the detector centre, slightly tilted."""
    from xreduce.detectors import get_detector
    from xreduce.geometry import Geometry

    det = get_detector(detector_name)
    rows, cols = det.shape
    return Geometry(dist=0.2, poni1=0.47 * rows * det.pixel1, poni2=0.53 * cols * det.pixel2,
                    rot1=0.01, rot2=-0.02, rot3=0.0, wavelength=1e-10, detector=det)


def make_frames(geometry: Any, nframes: int, seed: int = 0) -> np.ndarray:
    """Random counting-detector frames in the detector's native type (int32 for Pilatus,
    uint32 for Eiger), with a few invalid pixels (-1 or the type's maximum)."""
    det = geometry.detector
    dtype = np.int32 if "pilatus" in (det.name or "").lower() else np.uint32
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 2000, size=(nframes,) + tuple(det.shape), dtype=dtype)
    bad = rng.integers(0, frames[0].size, 100)
    frames.reshape(nframes, -1)[:, bad] = -1 if dtype == np.int32 else np.iinfo(dtype).max
    return frames


def _pyfai_integrator(geometry: Any) -> Any:
    from pyFAI.detectors import Detector as PyFAIDetector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator as PyFAIIntegrator

    det = geometry.detector
    pdet = PyFAIDetector(det.pixel1, det.pixel2, max_shape=tuple(det.shape))
    pdet.mask = np.asarray(det.mask, dtype=np.int8)
    return PyFAIIntegrator(dist=geometry.dist, poni1=geometry.poni1, poni2=geometry.poni2,
                           rot1=geometry.rot1, rot2=geometry.rot2, rot3=geometry.rot3,
                           wavelength=geometry.wavelength, detector=pdet)


# --------------------------------------------------------------------------- timing
def _time_calls(call, frames: np.ndarray) -> tuple[float, float, Any]:
    """(init_s, per-frame s, last result): first call on frame 0, then one call per frame."""
    t0 = time.perf_counter()
    call(frames[0])
    first = time.perf_counter() - t0
    times = []
    result = None
    for frame in frames[1:] if len(frames) > 1 else frames:
        t0 = time.perf_counter()
        result = call(frame)
        times.append(time.perf_counter() - t0)
    per_frame = float(np.median(times))
    return max(first - per_frame, 0.0), per_frame, result


def _resident_rate(ai: Any, stack: np.ndarray, error_model: str | None) -> float:
    """Frames/s of the integrator's OpenCL engine on the stack uploaded to the device first."""
    import pyopencl as cl
    import pyopencl.array as cla

    from xreduce.engines.opencl import OpenCLIntegrationEngine

    engine = next(e for _, e in ai.engines if isinstance(e, OpenCLIntegrationEngine))
    device_engine = engine.device_engines[-1]
    queue = cl.CommandQueue(device_engine.context)
    frames = cla.to_device(queue, np.ascontiguousarray(stack.reshape(len(stack), -1)))
    queue.finish()
    model = error_model or "none"
    device_engine.integrate_stack(frames[:1], error_model=model)  # warm-up
    t0 = time.perf_counter()
    device_engine.integrate_stack(frames, error_model=model)
    return len(stack) / (time.perf_counter() - t0)


def _agreement(intensity: np.ndarray, reference: np.ndarray, filled: np.ndarray) -> float:
    """Largest |I - I_ref| / (RTOL |I_ref| + ATOL max|I_ref|) * RTOL over the filled bins:
    below RTOL means the result agrees."""
    ref = reference[filled]
    if ref.size == 0:
        return 0.0
    scale = RTOL * np.abs(ref) + ATOL * np.abs(ref).max()
    return float(np.max(np.abs(intensity[filled] - ref) / scale) * RTOL)


def _integrate_call(ai: Any, dim: str, split: str, impl: str, error_model: str):
    npt_rad, npt_azim = DIMS[dim]
    method = (split, "csr", impl)
    if npt_azim is None:
        return lambda frame: ai.integrate1d(frame, npt_rad, unit="2th_deg", method=method,
                                            error_model=error_model)
    return lambda frame: ai.integrate2d(frame, npt_rad, npt_azim, unit="2th_deg",
                                        method=method, error_model=error_model)


def _pyfai_call(ai: Any, dim: str, split: str, impl: str, target, error_model: str):
    from pyFAI.method_registry import IntegrationMethod

    npt_rad, npt_azim = DIMS[dim]
    found = IntegrationMethod.select_method(dim=1 if npt_azim is None else 2, split=split,
                                            algo="csr", impl=impl, target=target)
    if not found:
        raise RuntimeError(f"pyFAI has no {split}/csr/{impl} method for {target}")
    method = found[0]
    if npt_azim is None:
        return lambda frame: ai.integrate1d(frame, npt_rad, unit="2th_deg", method=method,
                                            error_model=error_model)
    return lambda frame: ai.integrate2d(frame, npt_rad, npt_azim, unit="2th_deg",
                                        method=method, error_model=error_model)


def _plan(detectors, dims, splits, backends, devices, compare, skip_big_full) -> list[tuple]:
    from xreduce.detectors import get_detector

    plan = []
    for name in detectors:
        det = get_detector(name)
        mpix = det.shape[0] * det.shape[1] / 1e6
        for dim in dims:
            for split in splits:
                runs = []
                if "cython" in backends:
                    runs.append(("cython", None))
                if "opencl" in backends:
                    if not (skip_big_full and split == "full" and mpix > FULL_SPLIT_MAX_MPIX):
                        runs.extend(("opencl", dev) for dev in devices)
                if "pyfai" in compare:
                    runs += [("pyfai-" + b, d) for b, d in runs]
                plan.extend((name, mpix, dim, split, b, d) for b, d in runs)
    return plan


def run_benchmark(detectors: Sequence[str] = DETECTORS, splits: Sequence[str] = SPLITS,
                  dims: Sequence[str] = ("1d", "2d"), frames: int = 5,
                  backends: Sequence[str] = ("cython", "opencl"),
                  devices: Sequence[Sequence[int]] | None = None, compare: Iterable[str] = (),
                  error_model: str = "poisson", skip_big_full: bool = True,
                  resident: bool = False, progress: bool = True) -> dict:
    """Time every (detector, dim, split, back end) and check it against the reference.

    Parameters
    ----------
    detectors : names from the detector registry.
    splits : pixel splittings among "no", "bbox", "pseudo", "full".
    dims : "1d" (1000 bins) and/or "2d" (500 radial x 360 azimuthal bins).
    frames : frames per point; the first call is the initialisation, the others are timed
        (median), so at least 2.
    backends : "cython" and/or "opencl".
    devices : OpenCL (platform, device) ids; None: every device found.
    compare : ("pyfai",) to time pyFAI on the same frames (skipped when not installed).
    error_model : "poisson", "azimuthal" or None.
    skip_big_full : skip OpenCL full splitting above FULL_SPLIT_MAX_MPIX Mpixels.
    resident : for OpenCL, also time the whole stack already on the device
        (``OpenCLCsrEngine.integrate_stack`` on a ``pyopencl.array.Array``: no transfer).
    progress : show a tqdm progress bar.

    Returns
    -------
    dict with "machine", "versions", "devices", "settings" and "results" (a list of Point
    dicts); see doc/benchmark.md.
    """
    from tqdm import tqdm

    from xreduce.integrator import AzimuthalIntegrator

    if int(frames) < 2:
        raise ValueError(f"frames: expected at least 2 (one initialisation, one timed), "
                         f"got {frames}")
    unknown = set(dims) - set(DIMS)
    if unknown:
        raise ValueError(f"dims: expected '1d' and/or '2d', got {sorted(unknown)}")
    all_devices = opencl_devices() if "opencl" in backends else []
    if devices is not None:
        wanted = [list(d) for d in devices]
        missing = [d for d in wanted if d not in [dev["id"] for dev in all_devices]]
        if missing:
            raise ValueError(f"devices: no OpenCL device {missing}; found "
                             f"{[dev['id'] for dev in all_devices]}")
        all_devices = [dev for dev in all_devices if dev["id"] in wanted]
    compare = tuple(compare)
    if "pyfai" in compare:
        try:
            import pyFAI  # noqa: F401
        except ImportError:
            compare = ()
    plan = _plan(detectors, dims, splits, backends, [tuple(d["id"]) for d in all_devices],
                 compare, skip_big_full)
    names = {tuple(d["id"]): d["name"] for d in all_devices}
    results: list[Point] = []
    references: dict = {}
    geometries: dict = {}
    stacks: dict = {}
    previous_env = os.environ.get("XREDUCE_OPENCL_DEVICE")
    bar = tqdm(plan, desc="xreduce-benchmark", unit="point", disable=not progress)
    try:
        for name, mpix, dim, split, backend, dev in bar:
            bar.set_postfix_str(f"{name} {dim} {split} {backend}")
            if name not in geometries:
                geometries.clear()
                stacks.clear()
                geometries[name] = make_geometry(name)
                stacks[name] = make_frames(geometries[name], int(frames))
            geometry, stack = geometries[name], stacks[name]
            point = Point(name, mpix, dim, split, backend,
                          "CPU (OpenMP)" if dev is None else names[dev])
            try:
                if backend.startswith("pyfai"):
                    impl = backend.split("-", 1)[1]
                    call = _pyfai_call(_pyfai_integrator(geometry), dim, split, impl, dev,
                                       error_model)
                else:
                    if dev is not None:
                        os.environ["XREDUCE_OPENCL_DEVICE"] = f"{dev[0]},{dev[1]}"
                    ai = AzimuthalIntegrator(geometry)
                    call = _integrate_call(ai, dim, split, backend, error_model)
                init_s, frame_s, result = _time_calls(call, stack)
                if resident and backend == "opencl":
                    point.resident_frames_per_s = _resident_rate(ai, stack, error_model)
            except Exception as err:  # reported, the other points go on
                point.error = f"{type(err).__name__}: {err}"
                point.check = "FAILED (error)"
                results.append(point)
                continue
            point.init_s, point.frame_s = init_s, frame_s
            fps = 1.0 / frame_s if frame_s > 0 else float("inf")
            ref_key = (name, dim, split)
            if backend == "cython":
                references[ref_key] = result
                point.check = "reference"
                ok = True
            elif backend.startswith("pyfai"):
                point.check = "timing only"  # another tool: its bins differ slightly
                ok = True
            elif ref_key in references:
                ref = references[ref_key]
                filled = np.asarray(ref.sum_normalization) > 0
                diff = _agreement(np.asarray(result.intensity), np.asarray(ref.intensity), filled)
                point.max_rel_diff = diff
                ok = diff <= RTOL
                point.check = f"ok ({diff:.1e})" if ok else f"FAILED (max rel diff {diff:.1e})"
            else:
                point.check = "unchecked (no Cython reference run)"
                ok = True
            if ok:
                point.frames_per_s = fps
                point.mpix_per_s = fps * mpix
            results.append(point)
    finally:
        bar.close()
        if previous_env is None:
            os.environ.pop("XREDUCE_OPENCL_DEVICE", None)
        else:
            os.environ["XREDUCE_OPENCL_DEVICE"] = previous_env
    _ratios(results)
    return {"machine": machine_info(), "versions": versions(), "devices": all_devices,
            "settings": {"detectors": list(detectors), "splits": list(splits),
                         "dims": {d: DIMS[d] for d in dims}, "frames": int(frames),
                         "error_model": error_model, "unit": "2th_deg",
                         "check_rtol": RTOL, "check_atol_of_max": ATOL,
                         "compare": list(compare)},
            "results": [asdict(p) for p in results]}


def _ratios(results: list[Point]) -> None:
    """xreduce frames/s over pyFAI's for the same detector, dim, split, back end and device."""
    pyfai = {(p.detector, p.dim, p.split, p.backend[len("pyfai-"):], p.device): p
             for p in results if p.backend.startswith("pyfai")}
    for p in results:
        other = pyfai.get((p.detector, p.dim, p.split, p.backend, p.device))
        if other is not None and p.frames_per_s and other.frames_per_s:
            p.ratio_vs_pyfai = p.frames_per_s / other.frames_per_s


# --------------------------------------------------------------------------- outputs
def format_table(report: dict) -> str:
    """The results as a fixed-width text table."""
    has_ratio = any(r["ratio_vs_pyfai"] is not None for r in report["results"])
    has_resident = any(r["resident_frames_per_s"] is not None for r in report["results"])
    head = (f"{'detector':<11} {'Mpix':>5} {'dim':<3} {'split':<5} {'backend':<13} "
            f"{'device':<24} {'init s':>7} {'ms/frame':>9} {'frames/s':>9} {'Mpix/s':>8}"
            + (f" {'vs pyFAI':>8}" if has_ratio else "")
            + (f" {'resident':>9}" if has_resident else "") + "  check")
    lines = [head, "-" * len(head)]

    def num(value, fmt):
        return format(value, fmt) if value is not None else "-"
    for r in report["results"]:
        ms = None if r["frame_s"] is None or r["frames_per_s"] is None else 1e3 * r["frame_s"]
        line = (f"{r['detector']:<11} {r['mpix']:>5.2f} {r['dim']:<3} {r['split']:<5} "
                f"{r['backend']:<13} {r['device'][:24]:<24} {num(r['init_s'], '7.2f'):>7} "
                f"{num(ms, '9.1f'):>9} {num(r['frames_per_s'], '9.1f'):>9} "
                f"{num(r['mpix_per_s'], '8.1f'):>8}")
        if has_ratio:
            ratio = r["ratio_vs_pyfai"]
            line += f" {(format(ratio, '.2f') + 'x') if ratio else '-':>8}"
        if has_resident:
            line += f" {num(r['resident_frames_per_s'], '9.1f'):>9}"
        line += f"  {r['check']}" + (f": {r['error']}" if r["error"] else "")
        lines.append(line)
    return "\n".join(lines)


def write_json(report: dict, path: str) -> None:
    """Write the report as JSON, atomically (``xreduce.io.writers.atomic_output``)."""
    from xreduce.io.writers import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


def write_plot(report: dict, path: str) -> None:
    """Frames/s against detector Mpixels, log axes, one line per (back end, device, split),
    1D and 2D side by side; written atomically (``atomic_output``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    dims = sorted({r["dim"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(dims), figsize=(6.5 * len(dims), 5), squeeze=False)
    for ax, dim in zip(axes[0], dims):
        lines: dict = {}
        for r in report["results"]:
            if r["dim"] == dim and r["frames_per_s"]:
                label = f"{r['backend']} {r['split']}" + \
                    ("" if r["backend"].endswith("cython") else f" ({r['device'][:20]})")
                lines.setdefault(label, []).append((r["mpix"], r["frames_per_s"]))
        for label, pts in sorted(lines.items()):
            pts.sort()
            style = "--" if label.startswith("pyfai") else "-"
            ax.plot(*zip(*pts), style, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        # tick each detector by name, plain numbers on the frames/s axis
        sizes = sorted({(r["mpix"], r["detector"]) for r in report["results"] if r["dim"] == dim})
        ax.set_xticks([m for m, _ in sizes], [f"{m:.1f}\n{name}" for m, name in sizes],
                      fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("detector size (Mpixel)")
        ax.set_ylabel("frames per second")
        bins = report["settings"]["dims"][dim]
        ax.set_title(f"{dim.upper()} integration, {bins[0]}"
                     + (f" x {bins[1]}" if bins[1] else "") + " bins")
        ax.grid(True, which="both", alpha=0.3)
        if lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"xreduce {report['versions'].get('xreduce')} on "
                 f"{report['machine']['cpu_model']} ({report['machine']['cores']} cores)",
                 fontsize=9)
    fig.tight_layout()
    from xreduce.io.writers import atomic_output

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100)  # the temporary name keeps the extension last
    finally:
        plt.close(fig)


if __name__ == "__main__":
    from xreduce.cli.benchmark import main

    raise SystemExit(main())
