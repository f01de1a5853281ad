"""DCT preprocessing: dark/offset, margin normalisation, moving-median background, 2D median.

:func:`preprocess` streams a stack of frames chunk by chunk through

1. ``frame - dark - offset`` (the dark is the mean, or median, of the dark frames);
2. optionally ``* ref / mean(frame[margin_bbox])``, where ``ref`` is the margin mean of the
   first frame, so every frame has the margin intensity of the first (beam-intensity drift
   removed, units kept);
3. minus the per-pixel moving median along the frames (the background);
4. a per-frame 2D median filter;

and writes one HDF5 file per volume (NeXus layout: ``/entry/preprocessed/data``, optional
``/entry/background/data``, provenance in ``/entry/process``). Results are identical to
applying the same steps to the whole stack in memory, whatever ``chunk_frames``.

Memory: about ``4 * rows * cols * (9 * chunk_frames + 3 * (window + 2 * step))`` bytes (the
corrected frames a chunk's windows reach, those of the previous chunk kept for the overlap,
the background, result and filtered result, and a second copy of the frames to write: a
writer thread writes chunk k while chunk k + 1 is computed), stated in the result and by the
command line.

Resuming: the file is written as ``.<name>.partial`` next to the output; each finished chunk is
flagged in ``/entry/process/chunk_done`` with the CRC-32 of its frames. Running the same
configuration again skips the finished chunks; the file is renamed to its final name when
every chunk is done. A rerun first checks that the inputs are the same (path, size,
modification time, checksum of sampled frames) and refuses otherwise (``restart=True``
starts again); it checks the partial file and salvages the chunks that verify when it is
damaged (:mod:`xreduce.dct.partial_file`). A lock file (``.<name>.lock``) refuses a second
run on the same output. See ``doc/robustness.md``.

Example
-------
>>> from xreduce.dct import preprocess
>>> result = preprocess("preprocess.yml")          # doctest: +SKIP
>>> result.output, result.chunks_computed          # doctest: +SKIP
('volume_pre.h5', 36)
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import datetime
import os
import time
import uuid
from typing import Callable, Mapping, Optional, Union

import numpy as np

from xreduce.dct.config import (
    ConfigError,
    PreprocessConfig,
    dump_section,
    load_section,
)
from xreduce.dct.partial_file import frames_crc32, mark_completed
from xreduce.executors import is_dask_client, run_chunks
from xreduce.io import open_stack, partial_path, read_stack
from xreduce.io.run_identity import RunLock, stack_identity
from xreduce.io.writers import fsync_path, naming_file
from xreduce.limits import check_allocation, check_num_threads

__all__ = ["preprocess", "PreprocessResult", "memory_estimate_bytes"]


@dataclasses.dataclass(frozen=True)
class PreprocessResult:
    """What a :func:`preprocess` run did."""

    output: str
    n_frames: int
    frame_shape: tuple
    chunks_total: int
    chunks_computed: int
    chunks_skipped: int
    memory_bytes: int
    chunks_salvaged_redone: int = 0


def memory_estimate_bytes(frame_shape: tuple, chunk_frames: int, window: Optional[int],
                          step: int = 1) -> int:
    """Upper estimate of the working memory of one chunk (float32 frames), the second copy
    of the written frames (being written while the next chunk is computed) included."""
    reach = window + 2 * step if window else 0
    return int(4 * frame_shape[0] * frame_shape[1] * (9 * chunk_frames + 3 * reach))


@contextlib.contextmanager
def _open_input(url: str):
    """The input stack, open; errors name the input."""
    with naming_file("preprocess.input", url):
        stack = open_stack(url)
    with stack:
        yield stack


def _as_config(config) -> tuple[PreprocessConfig, str]:
    """The validated configuration and the YAML text it came from (for provenance)."""
    if isinstance(config, PreprocessConfig):
        return config, ""
    if not isinstance(config, (str, os.PathLike, Mapping)):
        raise TypeError(
            f"config: expected a PreprocessConfig, a YAML file, YAML text or a mapping, got "
            f"{type(config).__name__}"
        )
    cfg = load_section(config, "preprocess")        # validates, the file's text included
    source_text = ""
    if isinstance(config, (str, os.PathLike)) and os.path.isfile(os.fspath(config)):
        with open(os.fspath(config), encoding="utf-8") as handle:
            source_text = handle.read()
    elif isinstance(config, str):
        source_text = config
    return cfg, source_text


class _Stopwatch:
    """Accumulates ``[wall, CPU]`` seconds per pipeline stage into ``sink`` (a dict), if one
    is given; CPU is that of the whole process (all threads), or with ``this_thread`` that of
    the calling thread (the writer thread, which runs beside the computation)."""

    def __init__(self, sink: Optional[dict] = None):
        self.sink = sink

    @contextlib.contextmanager
    def __call__(self, stage: str, this_thread: bool = False):
        if self.sink is None:
            yield
            return
        cpu_clock = time.thread_time if this_thread else time.process_time
        wall, cpu = time.perf_counter(), cpu_clock()
        try:
            yield
        finally:
            spent = self.sink.setdefault(stage, [0.0, 0.0])
            spent[0] += time.perf_counter() - wall
            spent[1] += cpu_clock() - cpu


_FUSED_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.int32,
                                               np.uint32, np.float32, np.float64))


class _Corrector:
    """Dark/offset subtraction and margin normalisation of raw frames, into float32 buffers.

    The arithmetic is that of the NumPy steps ``float32(raw) - dark``, ``- offset``,
    ``* scale`` (each rounded to float32), done in one threaded pass by a compiled helper.
    """

    def __init__(self, cfg: PreprocessConfig, stack, watch: _Stopwatch):
        self.stack, self.watch, self.url = stack, watch, cfg.input
        self.threads = cfg.num_threads or 0
        self.raw = None  # buffer of raw frames
        rows, cols = stack.shape[1:]
        self.dark = None
        if cfg.dark is not None:
            with naming_file("preprocess.dark", cfg.dark):
                dark = read_stack(cfg.dark).astype(np.float64)
            if dark.shape[1:] != (rows, cols):
                raise ValueError(
                    f"preprocess.dark: frames of shape {dark.shape[1:]} do not match the input "
                    f"frames {(rows, cols)}"
                )
            reduce = np.mean if cfg.dark_reduction == "mean" else np.median
            self.dark = np.ascontiguousarray(reduce(dark, axis=0), dtype=np.float32)
        self.offset = np.float32(cfg.offset)
        self.box = None
        if cfg.normalization == "margin":
            (r0, c0), (r1, c1) = cfg.margin_bbox
            if r1 > rows or c1 > cols:
                raise ValueError(
                    f"preprocess.margin_bbox: {cfg.margin_bbox} reaches outside the frames "
                    f"{(rows, cols)}"
                )
            self.box = (slice(r0, r1), slice(c0, c1))
            first = self.into(np.array([0]), np.empty((1, rows, cols), np.float32),
                              normalise=False)
            self.reference = float(self._margin_means(first)[0])

    def _margin_means(self, frames: np.ndarray) -> np.ndarray:
        means = frames[(slice(None),) + self.box].mean(axis=(1, 2), dtype=np.float64)
        if np.any(means == 0) or not np.all(np.isfinite(means)):
            raise ValueError(
                "preprocess.margin_bbox: the margin mean is zero or not finite in some frame; "
                "choose a box in the illuminated margin"
            )
        return means

    def _fused(self, raw: np.ndarray, out: np.ndarray, scale: Optional[np.ndarray]) -> None:
        """out = ((float32(raw) - dark) - offset) * scale, frame by frame."""
        if raw.dtype in _FUSED_DTYPES:
            from xreduce.ext.frame_correction import correct_frames

            none = np.zeros(0, np.float32)
            correct_frames(raw, none.reshape(0, 0) if self.dark is None else self.dark,
                           float(self.offset), none if scale is None else scale, out,
                           0, raw.shape[1], self.threads)
            return
        self._numpy_steps(raw, out, (slice(None), slice(None)))  # other dtypes
        if scale is not None:
            out *= scale[:, None, None]

    def _numpy_steps(self, raw: np.ndarray, out: np.ndarray, box: tuple) -> None:
        """out = (float32(raw) - dark[box]) - offset, with NumPy (views of a box allowed)."""
        if self.dark is not None:
            np.subtract(raw, self.dark[box], out=out, dtype=np.float32)
        else:
            out[...] = raw
        if self.offset:
            out -= self.offset

    def into(self, indices: np.ndarray, out: np.ndarray, normalise: bool = True) -> np.ndarray:
        """Corrected frames ``indices`` written into ``out`` (C-contiguous float32)."""
        with self.watch("read"):
            if self.raw is None or len(self.raw) < len(indices):  # reused from chunk to chunk
                self.raw = np.empty((len(indices),) + self.stack.shape[1:], self.stack.dtype)
            with naming_file("preprocess.input", self.url):
                raw = self.stack.read_frames(indices, out=self.raw[:len(indices)])
        with self.watch("correct"):
            scale = None
            if self.box is not None and normalise:
                # the margin box first (the same float32 steps), for the scale; then one pass
                # over every pixel overwrites it with the scaled values
                box = (slice(None),) + self.box
                self._numpy_steps(raw[box], out[box], self.box)
                scale = (self.reference / self._margin_means(out)).astype(np.float32)
            self._fused(raw, out, scale)
        return out


class _Buffers:
    """Float32 arrays reused from chunk to chunk (no new allocation, no page faults).

    Arrays that are written to the file come in two copies (``get_output``), used by
    alternate chunks: the writer thread writes one while the next chunk fills the other.
    """

    def __init__(self, frame_shape: tuple):
        self.frame_shape, self.arrays = tuple(frame_shape), {}
        self.slot = 0

    def get(self, name: str, n_frames: int) -> np.ndarray:
        array = self.arrays.get(name)
        if array is None or len(array) < n_frames:
            array = self.arrays[name] = np.empty((n_frames,) + self.frame_shape, np.float32)
        return array[:n_frames]

    def get_output(self, name: str, n_frames: int) -> np.ndarray:
        """The current chunk's copy of an array that will be written."""
        return self.get(f"{name}{self.slot}", n_frames)


class _Background:
    """Moving-median background of chunks of frames, identical to that of the whole stack.

    The windows of the (sampled) frames of a chunk reach the frames the edge mode maps them
    to; those are corrected (reusing the previous chunk's overlap) and handed to the kernel
    with a frame map into that block.
    """

    def __init__(self, cfg: PreprocessConfig, n_frames: int, frame_shape: tuple,
                 correct: "_Corrector", buffers: _Buffers):
        from xreduce.median import _frame_map, _ranks, _sample_frames, effective_window

        mm = cfg.moving_median
        window = effective_window(mm.window, n_frames, mm.mode, "preprocess.moving_median.window")
        mm = dataclasses.replace(mm, window=window)
        self.window, self.step, self.interpolation = mm.window, mm.step, mm.interpolation
        self.backend, self.threads = cfg.backend, cfg.num_threads or 0
        self.keep_background = cfg.save_background
        self.frame_shape, self.correct, self.buffers = frame_shape, correct, buffers
        self.frame_map = _frame_map(n_frames, mm.window, mm.mode)
        self.samples = _sample_frames(n_frames, mm.step)
        self.rank_lo, self.rank_hi = _ranks(self.frame_map, self.samples, mm.window, "mean")
        self.cache = (np.zeros(0, np.int64), None)  # corrected frames of the last chunk
        self.parity = 0  # the corrected frames alternate between two buffers

    def subtract(self, first: int, stop: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Corrected frames first..stop-1 minus their background, and the background (None
        when it is not saved and was subtracted in the median pass; the arrays are reused by
        the next call but one)."""
        from xreduce.ext.frame_correction import subtract_frames
        from xreduce.median import _interpolate, _run_moving_median

        samples, window, watch = self.samples, self.window, self.correct.watch
        i0 = int(np.searchsorted(samples, first, side="right")) - 1  # last sample <= first
        i1 = int(np.searchsorted(samples, stop - 1, side="left"))  # first sample >= stop-1
        s0, s1 = int(samples[i0]), int(samples[i1])
        reach = self.frame_map[s0: s1 + window]
        needed = np.unique(reach[reach >= 0])
        self.parity ^= 1
        frames = self.buffers.get(f"corrected{self.parity}", len(needed))
        _reuse_or_correct(needed, self.cache, self.correct, frames)
        self.cache = (needed, frames)
        local_map = np.where(reach >= 0, np.searchsorted(needed, reach), -1).astype(np.int32)
        local_samples = np.ascontiguousarray(samples[i0: i1 + 1] - s0, np.int32)
        direct = self.backend == "cython"
        own = int(np.searchsorted(needed, first))  # frames first..stop-1 follow each other
        # every frame a sample and the background not kept: each frame minus its median comes
        # straight out of the median pass (step 1: the samples are frames first..stop-1)
        fused = self.step == 1 and not self.keep_background
        with watch("moving_median"):
            medians = _run_moving_median(
                frames.reshape(len(needed), -1), window, local_map, local_samples,
                self.rank_lo[i0: i1 + 1], self.rank_hi[i0: i1 + 1], self.backend, self.threads,
                out=(self.buffers.get_output("medians", len(local_samples)).reshape(
                    len(local_samples), -1) if direct else None),
                subtract_from=own + np.arange(stop - first) if fused else None,
            )
            if self.step > 1:
                medians = _interpolate(medians, local_samples, s1 - s0 + 1, self.interpolation,
                                       np.dtype(np.float32))[first - s0: stop - s0]
        if fused:
            return medians.reshape((stop - first,) + self.frame_shape), None
        background = medians.reshape((stop - first,) + self.frame_shape)
        with watch("subtract"):
            # in place over the background unless it is saved; the corrected frames are kept
            # for the next chunk's overlap
            out = (self.buffers.get_output("result", stop - first) if self.keep_background
                   else background)
            shape = (stop - first, -1)  # float32 subtraction over OpenMP threads
            subtract_frames(frames[own: own + stop - first].reshape(shape),
                            background.reshape(shape), out.reshape(shape), self.threads)
        return out, background


def _compute_chunk(cfg: PreprocessConfig, correct: _Corrector,
                   background_plan: Optional[_Background], buffers: _Buffers,
                   watch: _Stopwatch, first: int, stop: int
                   ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Frames first..stop-1 preprocessed, and their background (None when not computed)."""
    from xreduce.median import median_filter2d

    mf = cfg.median_filter
    if background_plan is None:
        result = correct.into(np.arange(first, stop), buffers.get_output("result", stop - first))
        background = None
    else:
        result, background = background_plan.subtract(first, stop)
    if mf.active:
        with watch("median2d"):
            result = median_filter2d(result, tuple(mf.size) if isinstance(mf.size, list)
                                     else mf.size, mode=mf.mode,
                                     out=buffers.get_output("filtered", stop - first),
                                     backend=cfg.backend, num_threads=cfg.num_threads)
    return result, background


class _PreprocessJob:
    """The chunks of a run as a :class:`xreduce.executors.ChunkJob`: a task computes one
    chunk (reading the frames its windows reach) and returns its frames; the caller writes
    them. Each task has its own buffers, so tasks of one process may run side by side."""

    def __init__(self, key: str, cfg: PreprocessConfig, n_frames: int, chunk: int,
                 threads: int):
        self.key, self.cfg, self.n_frames, self.chunk = key, cfg, n_frames, chunk
        self.threads = threads  # 0: the task's OpenMP threads (set by run_chunks)

    def setup(self) -> dict:
        """The input, open, and its dark/normalisation (read once per worker process)."""
        stack = open_stack(self.cfg.input)
        try:
            return {"stack": stack, "correct": _Corrector(self.cfg, stack, _Stopwatch())}
        except BaseException:
            stack.close()
            raise

    def teardown(self, state: dict) -> None:
        state["stack"].close()

    def load(self, state: dict, index: int) -> int:
        return index  # the frames a chunk reads depend on its windows: read in compute

    def compute(self, state: dict, index: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        from xreduce.ext import openmp_info

        threads = self.threads or openmp_info.max_threads()
        cfg = dataclasses.replace(self.cfg, num_threads=threads)
        correct = copy.copy(state["correct"])  # its own raw-frame buffer
        correct.raw, correct.threads = None, threads
        frame_shape = tuple(correct.stack.shape[1:])
        buffers = _Buffers(frame_shape)
        plan = (None if cfg.moving_median.window is None else
                _Background(cfg, self.n_frames, frame_shape, correct, buffers))
        first, stop = index * self.chunk, min(self.n_frames, (index + 1) * self.chunk)
        return _compute_chunk(cfg, correct, plan, buffers, _Stopwatch(), first, stop)


@contextlib.contextmanager
def _executor_of(cfg: PreprocessConfig, executor):
    """``executor``, or a dask client for the configuration's ``workers``/``scheduler``
    (closed at the end), or None (this machine)."""
    wanted = cfg.workers is not None or cfg.scheduler is not None
    if executor is not None and wanted:
        raise ValueError("executor: given together with preprocess.workers/scheduler; "
                         "give one of them")
    if not wanted:
        yield executor
        return
    from xreduce.executors import open_cluster

    with open_cluster(workers=cfg.workers, scheduler=cfg.scheduler) as client:
        yield client


def _reuse_or_correct(needed: np.ndarray, cache: tuple, correct: "_Corrector",
                      frames: np.ndarray) -> np.ndarray:
    """Fill ``frames`` with the corrected frames ``needed`` (sorted), taking those the
    previous chunk already corrected (the window overlap) from ``cache = (indices, frames)``."""
    cached_idx, cached = cache
    have = np.isin(needed, cached_idx)
    if not have.any():
        return correct.into(needed, frames)
    with correct.watch("overlap_copy"):
        dst = np.flatnonzero(have)
        src = np.searchsorted(cached_idx, needed[have])
        if np.all(np.diff(dst) == 1) and np.all(np.diff(src) == 1):  # one block: plain copy
            frames[dst[0]: dst[-1] + 1] = cached[src[0]: src[-1] + 1]
        else:
            frames[dst] = cached[src]
    missing = np.flatnonzero(~have)
    if len(missing) and np.all(np.diff(missing) == 1):  # one block: corrected in place
        correct.into(needed[missing], frames[missing[0]: missing[-1] + 1])
    elif len(missing):
        frames[missing] = correct.into(needed[missing], np.empty(
            (len(missing),) + frames.shape[1:], np.float32))
    return frames


def _write_frames(dataset, first: int, frames: np.ndarray) -> None:
    """Write float32 frames at ``first``: uncompressed, one HDF5 chunk per frame, each frame
    is its chunk's bytes and goes to the file directly (no chunk cache, no conversion)."""
    if (dataset.compression is not None or dataset.shuffle or dataset.fletcher32
            or dataset.chunks != (1,) + frames.shape[1:] or frames.dtype != np.float32):
        dataset[first: first + len(frames)] = frames
        return
    frames = np.ascontiguousarray(frames)
    for k in range(len(frames)):
        dataset.id.write_direct_chunk((first + k, 0, 0), frames[k])


class _ChunkWriter:
    """Writes finished chunks in a background thread while the next chunk is computed (the
    kernels and HDF5 release the GIL, so writing to a slow disk overlaps the computation).
    At most one chunk is in flight; its ``chunk_done`` flag is set once it is written."""

    def __init__(self, h5, done, crcs, save_background: bool, watch: _Stopwatch):
        from concurrent.futures import ThreadPoolExecutor

        self.h5, self.done, self.save_background, self.watch = h5, done, save_background, watch
        self.crcs = crcs
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xreduce-writer")
        self.pending = None

    def _write(self, index: int, first: int, result: np.ndarray, background) -> None:
        with self.watch("write", this_thread=True), naming_file("preprocess.output",
                                                                self.h5.filename):

            _write_frames(self.h5["/entry/preprocessed/data"], first, result)
            if self.save_background:
                _write_frames(self.h5["/entry/background/data"], first, background)
            # checked when a run resumes (doc/robustness.md)
            self.crcs[index] = frames_crc32(result, background if self.save_background else None)
            self.h5.flush()
            self.done[index] = 1
            self.h5.flush()

    def submit(self, index: int, first: int, stop: int, result: np.ndarray,
               background) -> None:
        """Start writing chunk ``index`` (after :meth:`drain`: one chunk in flight at most)."""
        if self.pending is not None:
            raise RuntimeError("a chunk is still being written")
        self.pending = (self.pool.submit(self._write, index, first, result, background),
                        (index, first, stop))

    def drain(self) -> list:
        """Wait for the chunk in flight; returns its (index, first, stop) (or nothing)."""
        if self.pending is None:
            return []
        future, chunk = self.pending
        self.pending = None
        with self.watch("write_wait"):
            future.result()                     # re-raises an error of the write
        return [chunk]

    def close(self) -> None:
        """Let a chunk in flight finish (the file stays consistent), then stop the thread."""
        if self.pending is not None:
            self.pending[0].exception()         # waits; an error is not raised twice
            self.pending = None
        self.pool.shutdown(wait=True)


def _report(written: list, bar, on_chunk) -> int:
    """Advance the progress bar and call ``on_chunk`` for each written chunk; their number."""
    for chunk in written:
        bar.update(1)
        if on_chunk is not None:
            on_chunk(*chunk)
    return len(written)


def _results_differ(a: PreprocessConfig, b: PreprocessConfig) -> bool:
    """Whether two configurations can give different output data (threads, back end,
    workers and overwrite cannot: the back ends and executors are bit-identical)."""
    neutral = {"overwrite": False, "num_threads": None, "backend": "cython", "workers": None,
               "scheduler": None}
    return dataclasses.replace(a, **neutral) != dataclasses.replace(b, **neutral)


def _process_attrs(cfg: PreprocessConfig, config_yaml: str, source_text: str,
                   identity: dict) -> dict:
    """Provenance stored in /entry/process: what was run, on which inputs."""
    import json

    import xreduce

    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return {"program": "xreduce-dct preprocess", "version": xreduce.__version__, "date": now,
            "config": config_yaml, "config_source": source_text, "input": cfg.input,
            "chunk_frames": cfg.chunk_frames, "input_identity": json.dumps(identity)}


def _open_output(cfg: PreprocessConfig, config_yaml: str, source_text: str, n_frames: int,
                 frame_shape: tuple, n_chunks: int, identity: dict, restart: bool):
    """Create the partial output file, or reopen it (checked, salvaged when damaged) to
    resume. Returns (h5 file, chunk_done, chunk_crc32, chunks that failed verification)."""
    import json

    from xreduce.dct.partial_file import create_partial, open_for_resume
    from xreduce.io.run_identity import identity_differences
    from xreduce.io.writers import check_regular_file

    tmp = partial_path(cfg.output)
    groups = ["preprocessed"] + (["background"] if cfg.save_background else [])
    attrs = _process_attrs(cfg, config_yaml, source_text, identity)

    def layout(path):
        return create_partial(path, n_frames, frame_shape, groups, n_chunks, cfg.compression,
                              attrs)

    def check_run(stored: dict) -> None:
        config = stored.get("config")
        if config is None or _results_differ(load_section(config, "preprocess"), cfg):
            raise RunChangedError(
                f"preprocess.output: {tmp!r} holds an unfinished run with a different "
                "configuration; run with the same configuration to resume it, or start again "
                "with --restart (restart=True) or by deleting it")
        try:
            recorded = json.loads(stored.get("input_identity", "{}"))
        except (TypeError, ValueError):
            recorded = {}
        changed = sorted({f"{name} ({word})" for name in set(recorded) | set(identity)
                          for word in identity_differences(recorded.get(name) or {},
                                                           identity.get(name) or {})})
        if changed:
            raise RunChangedError(
                f"preprocess.input: the inputs changed since the unfinished run in {tmp!r} "
                f"started: {', '.join(changed)}; resuming would mix two inputs. Start again "
                "with --restart (restart=True), or delete the partial file")

    if check_regular_file(tmp, "partial file") and restart:
        os.remove(tmp)
    if os.path.exists(tmp):
        expected = {f"/entry/{g}/data": ((n_frames,) + tuple(frame_shape), np.float32)
                    for g in groups}
        expected.update({"/entry/process/chunk_done": ((n_chunks,), np.uint8),
                         "/entry/process/chunk_crc32": ((n_chunks,), np.uint32)})
        h5, redo = open_for_resume(tmp, expected, [f"/entry/{g}/data" for g in groups],
                                   min(cfg.chunk_frames, n_frames), n_frames, n_chunks,
                                   check_run, layout)
    else:
        h5, redo = layout(tmp), 0
    process = h5["/entry/process"]
    return h5, process["chunk_done"], process["chunk_crc32"], redo


class RunChangedError(ConfigError):
    """An unfinished run was started with other inputs or another configuration (a
    ValueError): resuming it would mix two runs."""


def preprocess(
    config: Union[PreprocessConfig, str, os.PathLike, Mapping],
    progress: bool = True,
    on_chunk: Optional[Callable[[int, int, int], None]] = None,
    timings: Optional[dict] = None,
    restart: bool = False,
    executor=None,
) -> PreprocessResult:
    """Run the DCT preprocessing of one volume (see the module notes).

    Parameters
    ----------
    config : PreprocessConfig, YAML file, YAML text or mapping
        The ``preprocess`` section (see :class:`xreduce.dct.config.PreprocessConfig`).
    progress : bool
        Show a tqdm progress bar over chunks.
    on_chunk : callable, optional
        Called as ``on_chunk(index, first_frame, stop_frame)`` after each chunk is safely
        written (an exception raised there interrupts the run; it resumes later).
    timings : dict, optional
        If given, receives ``[wall, CPU]`` seconds (CPU of all threads) spent in each stage (``read``, ``correct``,
        ``overlap_copy``, ``moving_median``, ``subtract``, ``median2d``), summed over chunks
        (profiling); ``write`` is timed in the writer thread (its own CPU), beside the
        computation of the next chunk, and ``write_wait`` is the time the computation waited
        for it.
    restart : bool
        Delete the partial file of an unfinished run and start again, instead of refusing
        when its inputs or configuration changed or it is damaged beyond repair.
    executor : None, concurrent.futures.Executor or dask.distributed.Client, optional
        Where the chunks are computed (:func:`xreduce.executors.run_chunks`; the results are
        identical, bit for bit, and only this process writes the file). None: this process,
        unless the configuration's ``workers``/``scheduler`` ask for a dask cluster
        (doc/stack.md, "Other jobs on the same executors"). ``timings`` then only times the
        writing.

    Returns
    -------
    PreprocessResult

    Raises
    ------
    FileExistsError
        The output exists and ``overwrite`` is false.
    ConfigError (a ValueError)
        Invalid configuration; :class:`RunChangedError`: an unfinished run with another
        configuration or other inputs (``restart=True`` starts again).
    xreduce.dct.partial_file.PartialFileError (a ValueError)
        The partial file of an unfinished run is damaged beyond repair.
    xreduce.io.run_identity.RunLockedError (an OSError)
        Another run is writing the same output.

    Example
    -------
    >>> preprocess({"preprocess": {"input": "scan.h5::/entry/data",
    ...                            "output": "scan_pre.h5"}})   # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    cfg, source_text = _as_config(config)
    if executor is not None and not (isinstance(executor, concurrent.futures.Executor)
                                     or is_dask_client(executor)):
        raise TypeError(f"executor: expected None, a concurrent.futures.Executor or a "
                        f"dask.distributed.Client, got {type(executor).__name__}")
    if not isinstance(restart, bool):
        raise TypeError(f"restart: expected True or False, got {restart!r}")
    if os.path.lexists(cfg.output) and not cfg.overwrite:
        raise FileExistsError(
            f"preprocess.output: {cfg.output!r} exists; set overwrite: true to replace it"
        )
    folder = os.path.dirname(cfg.output)
    if folder and not os.path.isdir(folder):
        raise FileNotFoundError(f"preprocess.output: the folder {folder!r} does not exist")
    if cfg.save_background and cfg.moving_median.window is None:
        raise ConfigError("preprocess.save_background: needs moving_median.window")
    config_yaml = dump_section(cfg)
    task_threads = cfg.num_threads or 0  # with an executor, 0: each task's share of its cores
    # threads capped to the machine (doc/limits.md); not part of the run's identity
    cfg = dataclasses.replace(cfg, num_threads=check_num_threads(cfg.num_threads,
                                                                 "preprocess.num_threads"))
    mm = cfg.moving_median
    with RunLock(cfg.output, "preprocess.output"), _open_input(cfg.input) as stack, \
            _executor_of(cfg, executor) as where:
        n_frames = len(stack)
        if n_frames == 0:
            raise ValueError(f"preprocess.input: {cfg.input!r} holds no frames")
        frame_shape = tuple(stack.shape[1:])
        watch = _Stopwatch(timings)
        correct = _Corrector(cfg, stack, watch)
        buffers = _Buffers(frame_shape)
        chunk = min(cfg.chunk_frames, n_frames)  # a larger chunk is the whole stack
        n_chunks = -(-n_frames // chunk)
        background_plan = None
        if mm.window is not None:
            background_plan = _Background(cfg, n_frames, frame_shape, correct, buffers)
        window = background_plan.window if background_plan is not None else None
        memory = memory_estimate_bytes(frame_shape, chunk, window, mm.step)
        check_allocation(memory, "preprocess.chunk_frames",
                         f"{chunk} frames of {frame_shape} and a window of {window}")
        identity = {"input": stack_identity(stack, cfg.input),
                    "dark": {} if correct.dark is None else {
                        "file": stack_identity(correct.dark[None], cfg.dark).get("file"),
                        "mean_dark_crc32": frames_crc32(correct.dark)}}
        h5, done, crcs, redo = _open_output(cfg, config_yaml, source_text, n_frames,
                                            frame_shape, n_chunks, identity, restart)
        computed = skipped = 0
        writer = _ChunkWriter(h5, done, crcs, cfg.save_background, watch)
        try:
            flags = done[...]
            bar = tqdm(total=n_chunks, disable=not progress, unit="chunk",
                       desc="preprocess", initial=int(flags.sum()))
            with bar:
                if where is None:
                    for index in range(n_chunks):
                        if flags[index]:
                            skipped += 1
                            continue
                        first, stop = index * chunk, min(n_frames, (index + 1) * chunk)
                        buffers.slot ^= 1            # the writer may still hold the other slot
                        result, background = _compute_chunk(cfg, correct, background_plan,
                                                             buffers, watch, first, stop)
                        computed += _report(writer.drain(), bar, on_chunk)  # previous chunk
                        writer.submit(index, first, stop, result, background)
                else:
                    todo = [index for index in range(n_chunks) if not flags[index]]
                    skipped = n_chunks - len(todo)
                    job = _PreprocessJob(f"xreduce-preprocess-{uuid.uuid4().hex}", cfg,
                                         n_frames, chunk, task_threads)
                    with contextlib.closing(run_chunks(job, todo, where,
                                                       num_threads=task_threads or None)) as runs:
                        for index, outcome in runs:  # as they finish; written here only
                            if isinstance(outcome, BaseException):
                                raise outcome
                            first, stop = index * chunk, min(n_frames, (index + 1) * chunk)
                            computed += _report(writer.drain(), bar, on_chunk)
                            writer.submit(index, first, stop, *outcome)
                computed += _report(writer.drain(), bar, on_chunk)
            mark_completed(h5, datetime.datetime.now(datetime.timezone.utc).isoformat())
        finally:
            writer.close()
            h5.close()
        final = partial_path(cfg.output)
        fsync_path(final)
        if cfg.overwrite:
            os.replace(final, cfg.output)
        else:  # never replace a file that appeared meanwhile
            os.link(final, cfg.output)
            os.remove(final)
    return PreprocessResult(
        output=cfg.output, n_frames=n_frames, frame_shape=frame_shape, chunks_total=n_chunks,
        chunks_computed=computed, chunks_skipped=skipped, memory_bytes=memory,
        chunks_salvaged_redone=redo,
    )
