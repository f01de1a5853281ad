"""Integrate a stack of frames chunk by chunk into one NeXus file, resumably, on this machine
or on a dask.distributed cluster (see ``doc/stack.md``).

:func:`integrate_stack` reads the frames of a source (any stack URL of :mod:`xreduce.io`) in
chunks aligned to the HDF5 chunking, integrates them with an
:class:`~xreduce.integrator.AzimuthalIntegrator` (1D, or 2D with ``npt_azim``) through the
executor layer of :mod:`xreduce.executors`, and writes the results in frame order.

Resume: the results of every finished chunk are appended to a log in a folder next to the
output (``.out.h5.parts/``, :class:`xreduce.io.chunk_log.ChunkLog`: checksummed records, whole
or ignored), with a manifest holding a hash of the configuration and of the input (paths,
sizes, modification times and a checksum of sample frames). ``resume=True`` integrates only
the chunks without a record and refuses a manifest made with other options or another input
(except files of a series that were replaced, e.g. a broken frame: the chunks of their frames
are redone). The NeXus file is written while the run goes and renamed into place when every
chunk is in; the folder is removed then.

Example
-------
>>> from xreduce.stack import integrate_stack
>>> report = integrate_stack("scan.h5::/entry/data", ai, 1000, "scan_q.h5",
...                          unit="q_nm^-1", error_model="poisson")      # doctest: +SKIP
>>> report.frames, report.frames_per_s                                   # doctest: +SKIP
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import os
import queue
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from xreduce.executors import LOCAL_READERS, run_chunks
from xreduce.io.chunk_log import ChunkLog
from xreduce.io.chunks import aligned_empty
from xreduce.io.stacks import StackUrl, open_stack
from xreduce.io.writers import atomic_output, nexus_entry, partial_path
from xreduce.limits import check_allocation, cpu_count

__all__ = ["integrate_stack", "StackReport", "StackIntegrationError", "sinogram",
           "NEXUS_UNITS", "COMPRESSIONS"]

#: NeXus ``units`` of the axes we write, by xreduce unit name.
NEXUS_UNITS = {"q_nm^-1": "1/nm", "q_A^-1": "1/angstrom", "2th_deg": "degrees",
               "2th_rad": "radians", "r_mm": "mm", "r_m": "m", "d*2_A^-2": "1/angstrom^2",
               "chi_deg": "degrees", "chi_rad": "radians"}

#: Raw bytes per chunk aimed at when ``chunk_frames`` is not given.
_CHUNK_BYTES = 32 * 2**20
#: Chunks whose results may wait for the writer thread.
_WRITES_AHEAD = 8
#: Version of the run records (2: sampled frames hashed as stored where read as chunks;
#: 3: results in a ChunkLog instead of one file a chunk).
_FORMAT_VERSION = 3


class StackIntegrationError(RuntimeError):
    """Some chunks failed; ``failed`` lists ``(first_frame, stop_frame, message)``. The chunks
    that succeeded are kept: fix the cause and run again with ``resume=True``."""

    def __init__(self, message: str, failed: list[tuple[int, int, str]]):
        super().__init__(message)
        self.failed = failed


@dataclass
class StackReport:
    """What :func:`integrate_stack` did."""

    output: str
    frames: int
    chunks: int
    chunks_computed: int
    chunks_resumed: int
    frames_computed: int
    seconds: float
    previews: list[str] = field(default_factory=list)
    #: frames per chunk (per task; the last chunk may hold fewer)
    chunk_frames: int = 0

    @property
    def frames_per_s(self) -> float:
        """Frames integrated in this run per second of wall time (all of it: checks,
        reading, integration, writing)."""
        return 0.0 if self.seconds <= 0 else self.frames_computed / self.seconds


# ----------------------------------------------------------------------- the worker's job
class _IntegrateJob:
    """Read and integrate frame ranges (the :class:`xreduce.executors.ChunkJob` of a stack)."""

    def __init__(self, key: str, source: StackUrl, integrator: Any, engine_file: str | None,
                 npt: int, npt_azim: int | None, options: dict, arrays: dict,
                 chunk_frames: int, raw_reads: bool):
        self.key = key
        # raw chunk reads are I/O only (~0.2 ms a frame): one reader keeps ahead of the
        # integration; decompressing readers (OpenCL integration, other formats) need two
        self.readers = 1 if raw_reads and options["method"][2] != "opencl" else LOCAL_READERS
        self.chunk_frames = chunk_frames
        self.source = source
        self.integrator = integrator
        self.engine_file = engine_file
        self.npt, self.npt_azim = npt, npt_azim
        self.options = options
        self.arrays = arrays

    def setup(self) -> dict:
        ai = self.integrator
        if self.engine_file is not None:
            from xreduce.integrator import AzimuthalIntegrator

            ai = AzimuthalIntegrator.load_engine(self.engine_file)
        # frame buffers handed from load to compute and back: fresh memory for every chunk
        # costs page faults that take longer than decompressing into memory already used
        return {"stack": open_stack(self.source), "ai": ai, "buffers": queue.SimpleQueue()}

    def teardown(self, state: dict) -> None:
        state["stack"].close()

    def load(self, state: dict, chunk: tuple[int, int]) -> tuple[np.ndarray, Any]:
        """The frames of a chunk, or their compressed chunks (direct chunk reads): those are
        decompressed in :meth:`compute` with the integration's threads, one stage after the
        other on every core, instead of a reader thread competing with the integration for
        the same cores. When the integration runs on an OpenCL device they are decompressed
        here, in the reader threads, while the device integrates the chunk before
        (doc/stack.md, "Speed")."""
        start, stop = chunk
        stack = state["stack"]
        if stack.direct_chunks:
            raw = stack.read_raw(start, stop)
            if self.options["method"][2] != "opencl":
                return None, raw

            def read(out: np.ndarray) -> np.ndarray:  # the cores shared by the readers
                threads = max(1, cpu_count() // LOCAL_READERS)
                return raw.decompress_into(out, num_threads=threads)
        else:
            def read(out: np.ndarray) -> np.ndarray:
                return stack.read_into(start, stop, out)
        buffer = self._buffer(state, stop - start, tuple(stack.shape[1:]), stack.dtype)
        try:
            return buffer, read(buffer[:stop - start])
        except BaseException:
            state["buffers"].put(buffer)
            raise

    def _buffer(self, state: dict, frames: int, shape: tuple, dtype: Any) -> np.ndarray:
        """A frame buffer of at least ``frames`` frames, reused from an earlier chunk."""
        try:
            buffer = state["buffers"].get_nowait()
        except queue.Empty:
            buffer = aligned_empty((self.chunk_frames,) + shape, dtype)
        if len(buffer) < frames:  # a chunk larger than planned: no reuse
            buffer = aligned_empty((frames,) + shape, dtype)
        return buffer

    def compute(self, state: dict, loaded: tuple[np.ndarray | None, Any]) -> dict:
        buffer, frames = loaded
        if buffer is None and self.options["method"][1] == "csc":
            # compressed chunks to the csc method: each block decoded and integrated in the
            # core's cache, the frames never written out (doc/stack.md, "Speed")
            return self._integrate(state["ai"], frames)
        if buffer is None:  # compressed chunks: decompressed into a reused buffer
            buffer = self._buffer(state, len(frames), frames.frame_shape, frames.dtype)
            try:
                frames = frames.decompress_into(buffer[:len(frames)])
            except BaseException:
                state["buffers"].put(buffer)
                raise
        try:
            return self._integrate(state["ai"], frames)
        finally:
            state["buffers"].put(buffer)

    def _integrate(self, ai: Any, frames: np.ndarray) -> dict:
        kwargs = dict(self.options, **self.arrays)
        if self.npt_azim is None:
            res = ai.integrate1d(frames, self.npt, **kwargs)
        else:
            res = ai.integrate2d(frames, self.npt, self.npt_azim, **kwargs)
        out = {"intensity": res.intensity, "count": res.count}
        if res.sigma is not None:
            out["sigma"] = res.sigma
        if self.npt_azim is not None:
            out["azimuthal"] = res.azimuthal
        out["radial"] = res.radial
        return out


# ----------------------------------------------------------------------- hashes
def _digest(array: Any) -> str | None:
    if array is None:
        return None
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(str((arr.dtype.str, arr.shape)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def _geometry_config(geometry: Any) -> dict:
    det = geometry.detector
    config = {name: float(getattr(geometry, name)) for name in
              ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")}
    config["wavelength"] = None if geometry.wavelength is None else float(geometry.wavelength)
    config["detector"] = {"name": det.name, "pixel1": float(det.pixel1),
                          "pixel2": float(det.pixel2), "shape": [int(s) for s in det.shape],
                          "mask_sha256": _digest(det.mask)}
    return config


def _input_record(stack: Any) -> dict:
    """Paths, sizes, modification times and a checksum of sample frames of the input (of
    their stored chunks where they are read as such)."""
    files = []
    for name in stack.files:
        info = os.stat(name)
        files.append({"path": name, "size": info.st_size, "mtime_ns": info.st_mtime_ns})
    n = len(stack)
    h = hashlib.sha256()
    for index in sorted({0, n // 2, n - 1}) if n else []:
        if stack.direct_chunks:  # the stored (compressed) chunk: ~9x fewer bytes to hash
            raw = stack.read_raw(index, index + 1)
            for _, _, stored in raw.pieces:
                h.update(stored)
            raw.release()
        else:
            h.update(np.ascontiguousarray(stack.read(index, index + 1)).tobytes())
    return {"source": stack.source if isinstance(stack.source, str) else list(stack.source),
            "frames": n, "frame_shape": list(stack.shape[1:]), "dtype": np.dtype(stack.dtype).str,
            "files": files, "sample_sha256": h.hexdigest()}


def _hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    found = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return found


# ----------------------------------------------------------------------- checks
def _check_scan(scan: Any, frames: int, npt_azim: int | None) -> tuple[int, int] | None:
    if scan is None:
        return None
    try:
        nrot, ntrans = (int(v) for v in scan)
    except (TypeError, ValueError):
        raise ValueError(f"scan: expected (n_rotations, n_translations), got {scan!r}") from None
    if nrot < 1 or ntrans < 1 or nrot * ntrans != frames:
        raise ValueError(f"scan: {nrot} rotations x {ntrans} translations = {nrot * ntrans} "
                         f"frames, but the source has {frames} frames")
    if npt_azim is not None:
        raise ValueError("scan: sinograms are made of 1D profiles; leave npt_azim unset")
    return nrot, ntrans


def _check_engine_file(path: str, geometry: Any) -> None:
    """The saved engine's geometry must be the integrator's: the provenance records the
    integrator's PONI while the workers integrate with the file's matrix."""
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"engine_file: no file {path!r}")
    try:
        with h5py.File(path, "r") as h5:
            saved = {k: float(h5["geometry"].attrs[k]) for k in
                     ("dist", "poni1", "poni2", "rot1", "rot2", "rot3")}
            detector = h5["geometry/detector"]
            saved_shape = tuple(detector["pixel_mask"].shape) if "pixel_mask" in detector \
                else ()
    except (OSError, KeyError) as exc:
        raise ValueError(f"engine_file: {path!r} is not a file of "
                         f"AzimuthalIntegrator.save_engine ({exc})") from None
    current = {k: float(getattr(geometry, k)) for k in saved}
    if saved != current or (saved_shape and saved_shape != tuple(geometry.detector.shape)):
        raise ValueError(f"engine_file: {path!r} holds another geometry ({saved}, detector "
                         f"{saved_shape}) than the integrator ({current}, detector "
                         f"{tuple(geometry.detector.shape)})")


#: The methods of a stack integration without one given: csc where it applies, else csr.
FAST_METHOD, GENERAL_METHOD = ("bbox", "csc", "cython"), ("bbox", "csr", "cython")


def _default_method(integrator: Any, stack: Any, npt: int, npt_azim: int | None,
                    engine_file: str | None, options: dict, arrays: dict) -> tuple:
    """:data:`FAST_METHOD` for a 1D integration it does (tried on the first frame, which
    builds the engine the run then uses where it runs in this process), else
    :data:`GENERAL_METHOD` (2D, the azimuthal error model, a saved engine, pixels wider
    than its window)."""
    if npt_azim is not None or engine_file is not None or options["error_model"] == "azimuthal":
        return GENERAL_METHOD
    from xreduce.engines.cython_csc import CscUnsupported

    trial = dict(options, method=FAST_METHOD)
    try:
        integrator.integrate1d(stack.read(0, 1), npt, **trial, **arrays)
    except CscUnsupported:
        return GENERAL_METHOD
    except Exception:  # e.g. a damaged first frame: its chunk fails in the run, named there
        pass
    return FAST_METHOD


def _bytes_per_frame(stack: Any, method: tuple) -> int:
    """The memory a frame takes while its chunk is in flight: its stored (compressed) chunk
    where the csc method integrates the chunks as they are decoded (never holding the frame),
    else the frame itself."""
    frame_bytes = int(np.prod(stack.shape[1:])) * np.dtype(stack.dtype).itemsize
    if stack.direct_chunks and method[1:] == ("csc", "cython") and len(stack):
        from xreduce.engines.cython_csc import fusable_chunks
        from xreduce.io.chunks import CompressedFrames

        raw = stack.read_raw(0, 1)
        try:
            if fusable_chunks(CompressedFrames(raw)) is not None:
                return max(1, sum(piece[2].size for piece in raw.pieces))
        finally:
            raw.release()
    return frame_bytes


def _chunks(frames: int, chunk_frames: int | None, stack: Any,
            frame_bytes: int) -> list[tuple[int, int]]:
    """Frame ranges of ``chunk_frames`` frames, or by default ~32 MiB of ``frame_bytes``."""
    aligned = max(1, int(getattr(stack, "chunk_frames", 1)))
    if chunk_frames is None:
        want = max(1, _CHUNK_BYTES // max(1, frame_bytes))
        # a multiple of the HDF5 chunking and of 2 frames (the CSR kernel integrates 32-bit
        # frames two at a time, sharing the matrix reads: doc/stack.md, "Speed")
        step = aligned if aligned % 2 == 0 else 2 * aligned
        chunk_frames = max(step, round(want / step) * step)
    elif isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) \
            or chunk_frames < 1:
        raise ValueError(f"chunk_frames: expected an integer >= 1, got {chunk_frames!r}")
    size = int(chunk_frames)
    return [(start, min(start + size, frames)) for start in range(0, frames, size)]


# ----------------------------------------------------------------------- the record
def _changed_frames(old: dict, new: dict, frames_of_files) -> np.ndarray | None:
    """Frames to integrate again when only some files of a file series changed (same
    source, same files, same frames): those read from the changed files. None otherwise."""
    same = all(old.get(k) == new.get(k) for k in ("source", "frames", "frame_shape", "dtype"))
    old_files = {f["path"]: f for f in old.get("files", [])}
    new_files = {f["path"]: f for f in new["files"]}
    if not same or set(old_files) != set(new_files):
        return None
    changed = [p for p, f in new_files.items() if old_files[p] != f]
    return frames_of_files(changed) if changed else None


def _prepare_folder(folder: str, manifest: dict, resume: bool, frames_of_files,
                    chunks: list[tuple[int, int]]) -> ChunkLog:
    """Start a record, or check the one to resume; returns its log of finished chunks. Where
    only some files of a series changed (a broken frame replaced), the records of the chunks
    holding their frames are dropped, to be redone."""
    path = os.path.join(folder, "manifest.json")
    if resume and os.path.exists(path):
        with open(path) as handle:
            old = json.load(handle)
        if old.get("config_sha256") != manifest["config_sha256"]:
            diffs = _differences(old.get("config", {}), manifest["config"])
            raise ValueError(f"resume: the record in {folder!r} was made with other options: "
                             + "; ".join(diffs[:6]) + " (run without resume to start again)")
        if old.get("input_sha256") == manifest["input_sha256"]:
            return ChunkLog(folder)
        redo = _changed_frames(old.get("input", {}), manifest["input"], frames_of_files)
        if redo is None:
            diffs = _differences(old.get("input", {}), manifest["input"])
            raise ValueError(f"resume: the record in {folder!r} was made with other input: "
                             + "; ".join(diffs[:6]) + " (run without resume to start again)")
        log = ChunkLog(folder)  # dropped before the new manifest says the input is current
        log.keep_only(c for c in chunks if not np.any((redo >= c[0]) & (redo < c[1])))
    elif os.path.isdir(folder):  # a previous record, not resumed: start again
        for name in os.listdir(folder):
            if name == "manifest.json" or ChunkLog.is_log_name(name):
                os.remove(os.path.join(folder, name))
    os.makedirs(folder, exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
    return ChunkLog(folder)


# ----------------------------------------------------------------------- outputs
def sinogram(intensity: np.ndarray, scan: tuple[int, int], zigzag: bool = False) -> np.ndarray:
    """Frames of an XRD-CT scan as a (rotation, translation, npt) cube.

    Frames run translation-fastest; with ``zigzag`` every second translation line was scanned
    backwards and is flipped.

    Example
    -------
    >>> sinogram(np.arange(6)[:, None], (2, 3), zigzag=True)[..., 0]
    array([[0, 1, 2],
           [5, 4, 3]])
    """
    nrot, ntrans = scan
    cube = np.array(intensity).reshape((nrot, ntrans) + intensity.shape[1:])
    if zigzag:
        cube[1::2] = cube[1::2, ::-1]
    return cube


def _write_preview(path: str, cube: np.ndarray, radial: np.ndarray, unit: str,
                   preview: Sequence[float], rotation_range_deg: float) -> str:
    """Filtered back-projection (scikit-image ``iradon``) of the sinogram at chosen radial
    values, one panel each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.transform import iradon

    angles = np.linspace(0.0, rotation_range_deg, cube.shape[0], endpoint=False)
    fig, axes = plt.subplots(1, len(preview), figsize=(4 * len(preview), 4), squeeze=False)
    for ax, value in zip(axes[0], preview):
        index = int(np.argmin(np.abs(radial - value)))
        sino = np.nan_to_num(cube[:, :, index].T.astype(np.float64))
        image = iradon(sino, theta=angles, filter_name="ramp", circle=True)
        ax.imshow(image, cmap="viridis")
        ax.set_title(f"{unit} = {radial[index]:.4g}")
        ax.set_axis_off()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


#: Compressions of the NeXus output (doc/stack.md, "Output"): bitshuffle-LZ4, read where
#: hdf5plugin is loaded (silx view, pyFAI, DAWN; h5py after ``import hdf5plugin``); gzip,
#: read by any HDF5 reader but ~11 % slower end to end on 2 cores; none.
COMPRESSIONS = ("bitshuffle-lz4", "gzip", None)


def _output_filters(compression: str | None) -> dict:
    """The h5py ``create_dataset`` keywords of a compression of :data:`COMPRESSIONS`."""
    if compression == "bitshuffle-lz4":
        import hdf5plugin

        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    return {}


def _writer(dataset: Any) -> Any:
    """``write(lo, hi, rows)``: rows ``lo .. hi - 1`` of ``dataset``."""
    def write(lo: int, hi: int, rows: np.ndarray) -> None:
        dataset[lo:hi] = rows
    return write


class _WholeChunks:
    """Rows of an HDF5 dataset chunked by ``rows`` along its first axis, collected until one
    of its chunks is whole, then written: compressed once, never read back and compressed
    again as a chunk written in parts is. Rows may come in any order (a dask run finishes
    chunks out of order); ``write(lo, hi, rows)`` stores rows ``lo .. hi - 1``."""

    def __init__(self, total: int, rows: int, row_shape: tuple, dtype: Any, write: Any):
        self.total, self.rows, self.row_shape, self.dtype = total, rows, row_shape, dtype
        self.write = write
        self.pending: dict[int, tuple[np.ndarray, int]] = {}  # chunk -> (rows, rows missing)

    def add(self, start: int, values: np.ndarray) -> None:
        """Rows ``start .. start + len(values) - 1``."""
        stop = start + len(values)
        for chunk in range(start // self.rows, (stop - 1) // self.rows + 1):
            lo, hi = chunk * self.rows, min(self.total, (chunk + 1) * self.rows)
            a, b = max(start, lo), min(stop, hi)
            if (a, b) == (lo, hi) and chunk not in self.pending:
                self.write(lo, hi, values[a - start:b - start])
                continue
            rows, missing = self.pending.pop(chunk, (None, hi - lo))
            if rows is None:
                rows = np.empty((hi - lo,) + self.row_shape, self.dtype)
            rows[a - lo:b - lo] = values[a - start:b - start]
            if missing - (b - a):
                self.pending[chunk] = (rows, missing - (b - a))
            else:
                self.write(lo, hi, rows)


class _NexusOutput:
    """The NeXus output, written while the run goes (by its writer thread): the file and its
    provenance at the start, the datasets at the first result (their shapes come from it),
    then each chunk's rows in place, the sinogram's too: the run holds no more than the
    chunks in flight, whatever the number of frames."""

    def __init__(self, path: str, frames: int, radial_unit: str, config: dict,
                 input_record: dict, poni: str, scan: tuple[int, int] | None, zigzag: bool,
                 rotation_range_deg: float, compression: str | None):
        import h5py

        import xreduce

        self.frames, self.radial_unit, self.scan, self.zigzag = frames, radial_unit, scan, zigzag
        self.filters = _output_filters(compression)
        self.rotation_range_deg = rotation_range_deg
        # whole chunks only (_WholeChunks): no chunk cache, each is compressed as it comes
        self.h5 = h5py.File(path, "w", rdcc_nbytes=0)
        self.entry = nexus_entry(self.h5, "sinogram" if scan else "integrated")
        self.entry["program_name"] = "xreduce"
        self.entry["program_name"].attrs["version"] = xreduce.__version__
        process = self.entry.create_group("process")
        process.attrs["NX_class"] = "NXprocess"
        process["program"] = "xreduce.stack.integrate_stack"
        process["version"] = xreduce.__version__
        process["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        process["configuration"] = json.dumps(config, sort_keys=True)
        process["input"] = json.dumps(input_record, sort_keys=True)
        process["poni"] = poni
        self.datasets: dict[str, _WholeChunks] = {}

    def __enter__(self) -> "_NexusOutput":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:  # the run failed: the partial file is abandoned
            self.h5.close()

    def _create(self, result: dict) -> None:
        """The NXdata groups, shaped after the first chunk's result."""
        row = result["intensity"].shape[1:]
        # chunks of ~256 kB: the last one, compressed after the last frame, is small
        rows_per_chunk = max(1, min(self.frames, 2**18 // max(1, 8 * int(np.prod(row)))))
        radial_name = self.radial_unit.split("_")[0].replace("2th", "2theta").replace(
            "d*2", "dstar2")
        data = self.entry.create_group("integrated")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "intensity"
        for name, key in (("intensity", "intensity"), ("intensity_errors", "sigma"),
                          ("count", "count")):
            if key in result:
                dataset = data.create_dataset(
                    name, shape=(self.frames,) + row, dtype=result[key].dtype,
                    chunks=(rows_per_chunk,) + row, **self.filters)
                self.datasets[key] = _WholeChunks(self.frames, rows_per_chunk, row,
                                                  dataset.dtype, _writer(dataset))
        data["intensity"].attrs["long_name"] = "intensity (a.u.)"
        data["frame"] = np.arange(self.frames)
        data[radial_name] = result["radial"]
        data[radial_name].attrs["units"] = NEXUS_UNITS.get(self.radial_unit, self.radial_unit)
        data[radial_name].attrs["long_name"] = f"{self.radial_unit}"
        axes = ["frame", radial_name]
        if "azimuthal" in result:
            data["chi"] = result["azimuthal"]
            data["chi"].attrs["units"] = "degrees"
            axes = ["frame", "chi", radial_name]
        data.attrs["axes"] = axes
        if self.scan:
            nrot, ntrans = self.scan
            sino = self.entry.create_group("sinogram")
            sino.attrs["NX_class"] = "NXdata"
            sino.attrs["signal"] = "intensity"
            cube = sino.create_dataset(
                "intensity", shape=(nrot, ntrans) + row, dtype=result["intensity"].dtype,
                chunks=(1, ntrans) + row, **self.filters)

            def write_rotation(lo: int, hi: int, rows: np.ndarray) -> None:
                cube[lo // ntrans] = rows

            # rows in the order of the cube (rotation, translation): one chunk a rotation
            self.datasets["sinogram"] = _WholeChunks(nrot * ntrans, ntrans, row, cube.dtype,
                                                     write_rotation)
            sino["rotation_angle"] = np.linspace(0.0, self.rotation_range_deg, nrot,
                                                 endpoint=False)
            sino["rotation_angle"].attrs["units"] = "degrees"
            sino["translation"] = np.arange(ntrans)
            sino[radial_name] = result["radial"]
            sino[radial_name].attrs["units"] = NEXUS_UNITS.get(self.radial_unit,
                                                               self.radial_unit)
            sino.attrs["axes"] = ["rotation_angle", "translation", radial_name]

    def put(self, chunk: tuple[int, int], result: dict) -> None:
        """Write the rows of frames ``chunk[0] .. chunk[1] - 1``."""
        if not self.datasets:
            self._create(result)
        start, stop = chunk
        for key in ("intensity", "sigma", "count"):
            if key in self.datasets:
                self.datasets[key].add(start, result[key])
        if self.scan:  # the sinogram's rows: frames run translation-fastest (see sinogram)
            ntrans = self.scan[1]
            for rotation in range(start // ntrans, (stop - 1) // ntrans + 1):
                lo, hi = max(start, rotation * ntrans), min(stop, (rotation + 1) * ntrans)
                rows = result["intensity"][lo - start:hi - start]
                if self.zigzag and rotation % 2:  # scanned backwards: flipped
                    lo, rows = 2 * rotation * ntrans + ntrans - hi, rows[::-1]
                self.datasets["sinogram"].add(lo, rows)

    def close(self) -> None:
        """Close the file; every row must have been written."""
        missing = [key for key, rows in self.datasets.items() if rows.pending]
        self.h5.close()
        if missing:
            raise RuntimeError(f"output: rows of {missing} were never written (a bug)")


def _write_text_files(pattern: str, results: dict, radial_unit: str, config: dict) -> None:
    header = f"xreduce integrate_stack {json.dumps(config, sort_keys=True)}\n" \
             f"{radial_unit} intensity" + (" sigma" if "sigma" in results else "")
    for frame in range(results["intensity"].shape[0]):
        columns = [results["radial"], results["intensity"][frame]]
        if "sigma" in results:
            columns.append(results["sigma"][frame])
        with atomic_output(pattern % frame) as tmp:
            np.savetxt(tmp, np.column_stack(columns), header=header)


# ----------------------------------------------------------------------- the entry point
def integrate_stack(source: StackUrl, integrator: Any, npt: int, output: str | os.PathLike, *,
                    npt_azim: int | None = None, unit: str = "q_nm^-1",
                    method: str | Sequence[str] | None = None,
                    radial_range: tuple[float, float] | None = None,
                    azimuth_range: tuple[float, float] | None = None,
                    mask: Any = None, dark: Any = None, flat: Any = None,
                    error_model: str | None = None, polarization_factor: float | None = None,
                    correct_solid_angle: bool = True, dummy: float | None = None,
                    delta_dummy: float | None = None, normalization_factor: float = 1.0,
                    chunk_frames: int | None = None, executor: Any = None,
                    num_threads: int | None = None, engine_file: str | None = None,
                    resume: bool = False, overwrite: bool = True,
                    scan: tuple[int, int] | None = None, zigzag: bool = False,
                    preview: Sequence[float] | None = None, rotation_range_deg: float = 180.0,
                    compression: str | None = "bitshuffle-lz4",
                    progress: bool = True) -> StackReport:
    """Integrate every frame of ``source`` and write the results, in frame order, to ``output``.

    Parameters
    ----------
    source : stack URL (see :func:`xreduce.io.open_stack`)
        ``"scan.h5::/entry/data"``, ``"master.h5"``, ``"frames_%05d.cbf"``, a list...
    integrator : AzimuthalIntegrator
        Its detector must have the frames' shape. Sent once to each worker.
    npt : int
        Radial bins.
    output : path
        ``.h5``/``.nxs``/``.hdf5``: one NeXus file (NXentry/NXprocess with the PONI and all
        options, NXdata ``integrated`` (frame, [chi,] radial), and with ``scan`` the NXdata
        ``sinogram``); a pattern with ``%d`` (``"out/frame_%05d.dat"``): one text file per frame.
    npt_azim : int, optional
        Azimuthal bins: 2D integration (``integrate2d``) instead of 1D.
    method : str or (split, algorithm, implementation), optional
        As in :meth:`AzimuthalIntegrator.integrate1d`. Default: ``("bbox", "csc", "cython")``
        for a 1D integration it does (the fastest on stacks: compressed chunks integrated as
        they are decoded; equal to the csr method to ~1e-15 relative, doc/integration.md),
        else ``("bbox", "csr", "cython")``; the method used is in the output's provenance.
    unit, radial_range, azimuth_range, mask, dark, flat, error_model,
    polarization_factor, correct_solid_angle, dummy, delta_dummy, normalization_factor
        As in :meth:`AzimuthalIntegrator.integrate1d`.
    chunk_frames : int, optional
        Frames per task; default: a multiple of the HDF5 chunking and of 2 near 32 MiB of
        raw frames.
    executor : None, concurrent.futures.Executor or dask.distributed.Client
        Where chunks run (:func:`xreduce.executors.run_chunks`); see
        :func:`xreduce.executors.open_cluster` for a local or remote dask cluster.
    num_threads : int, optional
        OpenMP threads per task (0/None: all cores locally; a dask worker's share there).
    engine_file : path, optional
        A file of :meth:`AzimuthalIntegrator.save_engine`: workers load the matrix from it
        instead of building it (the file must be readable from every worker).
    resume : bool
        Integrate only the chunks a previous run with the same options and input did not
        finish; refuse a record made with other options.
    overwrite : bool
        Replace an existing output (else FileExistsError before any work).
    scan : (n_rotations, n_translations), optional
        XRD-CT: also write the (rotation, translation, npt) sinogram cube.
    zigzag : bool
        Every second translation line of the scan runs backwards.
    preview : list of float, optional
        Radial values (in ``unit``) of which a filtered back-projection is saved as PNG
        (``output`` with ``_fbp.png``); needs ``scan``.
    rotation_range_deg : float
        Rotation covered by the scan's ``n_rotations`` steps (180 or 360).
    compression : {"bitshuffle-lz4", "gzip", None}
        Of the NeXus output's datasets. bitshuffle-LZ4 (what Eiger and most fast detectors
        write) is read by silx view, pyFAI, DAWN and by h5py after ``import hdf5plugin``;
        gzip by any HDF5 reader, but ~11 % slower end to end on 2 cores (doc/stack.md,
        "Output").
    progress : bool
        Show a progress bar (frames/s, ETA).

    Returns
    -------
    StackReport

    Raises
    ------
    ValueError, TypeError
        Bad arguments, or frames that do not match the detector, before any work.
    StackIntegrationError
        Some chunks failed (the frames are named); the others are kept for ``resume=True``.

    Example
    -------
    >>> report = integrate_stack("scan.h5::/entry/data", ai, 1000, "scan_q.h5")  # doctest: +SKIP
    """
    started = time.perf_counter()
    output = os.fspath(output)
    text_output = "%" in os.path.basename(output)
    if not text_output and not output.lower().endswith((".h5", ".nxs", ".hdf5", ".hdf", ".nx5")):
        raise ValueError(f"output: expected an HDF5 name (.h5, .nxs, .hdf5) or a text pattern "
                         f"with %d ('frame_%05d.dat'), got {output!r}")
    if text_output:
        try:
            output % 0
        except (TypeError, ValueError):
            raise ValueError(f"output: a text pattern needs one integer field such as %05d, "
                             f"got {output!r}") from None
    if not overwrite and not text_output and os.path.exists(output):
        raise FileExistsError(f"output: {output!r} exists (overwrite is off)")
    folder = os.path.dirname(os.path.abspath(output % 0 if text_output else output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"output: folder {folder!r} does not exist")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression: expected one of {COMPRESSIONS}, got {compression!r}")
    if preview and not scan:
        raise ValueError("preview: back-projection previews need scan=(n_rotations, "
                         "n_translations)")
    if not hasattr(integrator, "integrate1d") or not hasattr(integrator, "detector"):
        raise TypeError(f"integrator: expected an AzimuthalIntegrator, got "
                        f"{type(integrator).__name__}")

    from xreduce.integrator import parse_method
    from xreduce.units import get_unit

    if engine_file is not None:
        _check_engine_file(os.fspath(engine_file), integrator.geometry)

    radial_unit = get_unit(unit).name
    shape = tuple(int(s) for s in integrator.detector.shape)
    options = {"unit": radial_unit, "method": None, "radial_range": radial_range,
               "azimuth_range": azimuth_range, "error_model": error_model,
               "polarization_factor": polarization_factor,
               "correct_solid_angle": bool(correct_solid_angle), "dummy": dummy,
               "delta_dummy": delta_dummy, "normalization_factor": float(normalization_factor)}
    arrays = {"mask": mask, "dark": dark, "flat": flat}
    for name, value in arrays.items():
        if value is not None and np.shape(value) != shape:
            raise ValueError(f"{name}: expected shape {shape} (the detector's), got "
                             f"{np.shape(value)}")
    with open_stack(source) as stack:
        if tuple(stack.shape[1:]) != shape:
            name = integrator.detector.name or "unnamed"
            raise ValueError(f"source: frames of shape {tuple(stack.shape[1:])}, but the "
                             f"integrator's detector ({name}) has shape {shape}; is this the "
                             f"right PONI file?")
        if len(stack) == 0:
            raise ValueError(f"source: {source!r} has no frames")
        frames = len(stack)
        scan_t = _check_scan(scan, frames, npt_azim)
        if method is None:
            method_t = _default_method(integrator, stack, npt, npt_azim, engine_file,
                                       options, arrays)
        else:
            method_t = parse_method(method)
        options["method"] = method_t
        frame_bytes = _bytes_per_frame(stack, method_t)
        raw_reads = bool(stack.direct_chunks)
        chunks = _chunks(frames, chunk_frames, stack, frame_bytes)
        input_record = _input_record(stack)
        frames_of_files = stack.frames_of_files  # works on a closed stack too
    check_allocation(max(b - a for a, b in chunks) * frame_bytes, "chunk_frames",
                     "one chunk of frames")
    if text_output:  # assembled in memory (a NeXus output is written while the run goes)
        check_allocation(frames * npt * (npt_azim or 1) * 8 * 3, "npt",
                         "the integrated stack (3 float64 arrays)")

    config = {"format": _FORMAT_VERSION, "npt": int(npt),
              "npt_azim": None if npt_azim is None else int(npt_azim),
              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
              "arrays_sha256": {k: _digest(v) for k, v in arrays.items()},
              "geometry": _geometry_config(integrator.geometry),
              "chunks": [chunks[0][1] - chunks[0][0], len(chunks)],
              "scan": None if scan_t is None else list(scan_t), "zigzag": bool(zigzag)}
    config_hash, input_hash = _hash(config), _hash(input_record)
    manifest = {"config": config, "config_sha256": config_hash,
                "input": input_record, "input_sha256": input_hash}
    parts = partial_path(output if not text_output else os.path.join(folder, "frames"), "parts")
    log = _prepare_folder(parts, manifest, resume, frames_of_files, chunks)

    done = {c for c in chunks if c in log}
    todo = [c for c in chunks if c not in done]
    job = _IntegrateJob(config_hash + input_hash[:16], source, integrator, engine_file,
                        int(npt), None if npt_azim is None else int(npt_azim), options,
                        {k: None if v is None else np.asarray(v) for k, v in arrays.items()},
                        max(b - a for a, b in chunks), raw_reads)
    failed: list[tuple[int, int, str]] = []
    from tqdm import tqdm

    from xreduce.poni import poni_text

    computed: dict[tuple[int, int], dict] = {}  # text output only: assembled at the end
    with contextlib.ExitStack() as context:
        context.enter_context(log)  # synced and closed however the run ends
        nexus = None
        if not text_output:  # written while the run goes, renamed into place at the end
            tmp = context.enter_context(atomic_output(output, overwrite=overwrite,
                                                      keep_partial=True))
            nexus = context.enter_context(_NexusOutput(
                tmp, frames, radial_unit, config, input_record, poni_text(integrator.geometry),
                scan_t, zigzag, rotation_range_deg, compression))

        def save(chunk: tuple[int, int], result: dict) -> None:
            log.append(chunk, result)
            if nexus is None:
                computed[chunk] = result
            else:
                nexus.put(chunk, result)

        # the record (and the output's rows) are written by one writer thread: its waits on
        # the disk and the compression overlap the next chunks; at most _WRITES_AHEAD chunks
        # wait for it (a slow disk holds the run up instead of filling the memory)
        with tqdm(total=frames, initial=sum(b - a for a, b in done), unit="frame",
                  disable=not progress, desc="integrate", smoothing=0.1) as bar, \
                concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xreduce-write") \
                as writer:
            writes: collections.deque = collections.deque()
            for chunk, result in run_chunks(job, todo, executor, num_threads=num_threads):
                if isinstance(result, BaseException):
                    failed.append((chunk[0], chunk[1], f"{type(result).__name__}: {result}"))
                else:
                    writes.append(writer.submit(save, chunk, result))
                while writes and (writes[0].done() or len(writes) > _WRITES_AHEAD):
                    writes.popleft().result()  # a failed write stops the run
                bar.update(chunk[1] - chunk[0])
            for write in writes:
                write.result()
        if failed:
            failed.sort()
            lines = [f"frames {a}-{b - 1}: {msg}" for a, b, msg in failed[:10]]
            more = f" (and {len(failed) - 10} more chunks)" if len(failed) > 10 else ""
            raise StackIntegrationError(
                f"{len(failed)} of {len(chunks)} chunks failed{more}; the others are kept in "
                f"{parts!r} (run again with resume=True):\n  " + "\n  ".join(lines), failed)
        if nexus is not None:
            for chunk in sorted(done):  # a previous run's chunks
                nexus.put(chunk, _recorded(log, chunk))
        else:
            results = _assemble(log, chunks, computed)
            _write_text_files(output, results, radial_unit, config)

    previews: list[str] = []
    if preview:
        import h5py

        png = os.path.splitext(output)[0] + "_fbp.png"
        if text_output:
            previews.append(_write_preview(png, sinogram(results["intensity"], scan_t, zigzag),
                                           results["radial"], radial_unit, list(preview),
                                           rotation_range_deg))
        else:  # the sinogram's columns read from the file
            with h5py.File(output, "r") as h5:
                sino = h5["/entry/sinogram"]
                previews.append(_write_preview(png, sino["intensity"],
                                               sino[sino.attrs["axes"][-1]][()], radial_unit,
                                               list(preview), rotation_range_deg))
    shutil.rmtree(parts, ignore_errors=True)
    return StackReport(output, frames, len(chunks), len(todo), len(done),
                       sum(b - a for a, b in todo), time.perf_counter() - started, previews,
                       chunks[0][1] - chunks[0][0])


def _recorded(log: ChunkLog, chunk: tuple[int, int]) -> dict:
    """The results of a finished chunk from the record, checked to be a chunk's results."""
    result = log.read(chunk)
    intensity = result.get("intensity")
    if intensity is None or intensity.ndim < 2 or len(intensity) != chunk[1] - chunk[0] \
            or "radial" not in result:
        raise ValueError(f"the record of frames {chunk[0]}-{chunk[1] - 1} in {log.folder!r} "
                         f"does not hold their results; run again without resume")
    return result


def _assemble(log: ChunkLog, chunks: list[tuple[int, int]], computed: dict) -> dict:
    """Every chunk's results, in frame order, into whole arrays (each frame exactly once):
    those ``computed`` by this run as they are, the others from the record."""
    pieces: dict[str, list[np.ndarray]] = {}
    axes: dict[str, np.ndarray] = {}
    for chunk in chunks:
        result = computed[chunk] if chunk in computed else _recorded(log, chunk)
        for name, value in result.items():
            if name in ("radial", "azimuthal"):
                axes.setdefault(name, value)
            else:
                pieces.setdefault(name, []).append(value)
    results = {name: np.concatenate(values) for name, values in pieces.items()}
    results.update(axes)
    return results
