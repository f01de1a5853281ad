"""The ``segment`` step of ``xreduce-dct``: YAML section, parser and runner.

    xreduce-dct segment config.yml        # double-threshold segmentation into difspots
    xreduce-dct segment --template        # print the section with every key

The ``segment:`` section (validated by :class:`SegmentConfig`) names the preprocessed stack
(``input``: the file ``xreduce-dct preprocess`` wrote, whose ``/entry/preprocessed/data`` is
read, an HDF5 URL like ``scan.h5::/entry/data``, or any stack ``xreduce.io`` opens) and the
difspot file (``output``, in an existing folder). The stack is read ``chunk_frames`` frames at a time;
the output is written to a temporary name and renamed when complete. An interrupted run
resumes: the seeds and the finished windows of frames are kept in ``.<output>.checkpoint``
next to the output (deleted once the difspot file is complete), and running the same
configuration again skips them, after checking that the input (path, size, modification
time, checksum of sampled frames) and the parameters did not change (``--restart`` starts
again). A lock file ``.<output>.lock`` refuses a second run on the same output.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from typing import Callable, Optional, Union

from xreduce.cli.config_command import add_config_command
from xreduce.dct.config import (ConfigError, check_choice, check_int, check_number, check_str,
                                load_section, register_section)

TEMPLATE = """\
segment:
  input: scan_preprocessed.h5               # preprocess output (its /entry/preprocessed/data) or a URL
  output: difspots.h5                       # difspot file (table + per-spot arrays)
  seed_threshold: 20.0                      # seeds: connected voxels > seed_threshold
  tau: 0.1                                  # grow threshold = tau * seed maximum M
  grow_limits: [7, 20]                      # clamp tau * M to [low, high] counts; null: off
  bb_max: [20, 40, 40]                      # max half-size of a spot box (frames, rows, cols)
  box_increment: null                       # box growth step; null: bb_max // 2 (speed only)
  min_seed_voxels: 1                        # drop smaller seeds
  min_size: 1                               # drop smaller spots (voxels)
  max_size: null                            # drop larger spots; null: no limit
  connectivity: 26                          # 6 | 26
  chunk_frames: 100                         # frames read at a time (memory)
  num_threads: null                         # OpenMP threads (null or 0: all cores)
  compression: gzip                         # null | gzip | lzf (per-spot arrays)
  overwrite: false
"""


def _three_ints(where: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 3):
        raise ConfigError(f"{where}: expected an integer or [frames, rows, cols], got {value!r}")
    values = [check_int(where, v, 1) for v in values]
    return values * 3 if len(values) == 1 else values


@register_section("segment")
@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Parameters of ``xreduce-dct segment`` (the rules: doc/segmentation.md).

    Required: ``input``, ``output``, ``seed_threshold``, ``bb_max``.
    """

    input: str
    output: str
    seed_threshold: float
    bb_max: Union[int, list]
    tau: float = 0.1
    grow_limits: Optional[list] = None
    box_increment: Union[int, list, None] = None
    min_seed_voxels: int = 1
    min_size: int = 1
    max_size: Optional[int] = None
    connectivity: int = 26
    chunk_frames: int = 100
    num_threads: Optional[int] = None
    compression: Optional[str] = "gzip"
    overwrite: bool = False

    def __post_init__(self):
        check_str("segment.input", self.input)
        check_str("segment.output", self.output)
        object.__setattr__(self, "seed_threshold",
                           check_number("segment.seed_threshold", self.seed_threshold))
        tau = check_number("segment.tau", self.tau)
        if not 0.0 <= tau <= 1.0:
            raise ConfigError(f"segment.tau: expected a number in [0, 1], got {self.tau!r}")
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "bb_max", _three_ints("segment.bb_max", self.bb_max))
        object.__setattr__(self, "box_increment",
                           _three_ints("segment.box_increment", self.box_increment, allow_none=True))
        if self.grow_limits is not None:
            limits = self.grow_limits
            if not isinstance(limits, (list, tuple)) or len(limits) != 2:
                raise ConfigError(f"segment.grow_limits: expected [low, high] or null, got {limits!r}")
            low, high = (check_number("segment.grow_limits", v) for v in limits)
            if low > high:
                raise ConfigError(f"segment.grow_limits: expected low <= high, got {limits!r}")
            object.__setattr__(self, "grow_limits", [low, high])
        check_int("segment.min_seed_voxels", self.min_seed_voxels, 1)
        check_int("segment.min_size", self.min_size, 1)
        check_int("segment.max_size", self.max_size, self.min_size, allow_none=True)
        check_choice("segment.connectivity", self.connectivity, (6, 26))
        check_int("segment.chunk_frames", self.chunk_frames, 1)
        check_int("segment.num_threads", self.num_threads, 0, allow_none=True)
        check_choice("segment.compression", self.compression, (None, "gzip", "lzf"))
        if not isinstance(self.overwrite, bool):
            raise ConfigError(f"segment.overwrite: expected true/false, got {self.overwrite!r}")


class _Frames:
    """Frame slicing (``stack[a:b]``) over an :class:`xreduce.io.FrameStack`."""

    def __init__(self, stack, url: str = ""):
        self._stack, self.url = stack, url
        self.shape = tuple(stack.shape)
        self.dtype = stack.dtype

    def __getitem__(self, frames: slice):
        start, stop, step = frames.indices(self.shape[0])
        if step != 1:
            raise IndexError("frames: only contiguous slices")
        from xreduce.io.writers import naming_file

        with naming_file("segment.input", self.url):
            return self._stack.read(start, stop)


#: Where ``xreduce-dct preprocess`` writes its frames: the default dataset of a segment input.
PREPROCESSED_DATASET = "/entry/preprocessed/data"


def input_url(url: str) -> str:
    """The stack URL to read: a plain HDF5 file name means the dataset ``xreduce-dct
    preprocess`` writes (:data:`PREPROCESSED_DATASET`); other URLs are used as they are.

    Raises
    ------
    ValueError
        An HDF5 file without that dataset and no ``::/path`` given: the message says how to
        name the dataset.
    """
    if "::" in url or not os.path.isfile(url):
        return url
    import h5py

    if not h5py.is_hdf5(url):
        return url                       # an image file fabio reads
    with h5py.File(url, "r") as h5:
        link = h5.get(PREPROCESSED_DATASET, getlink=True)
        found = isinstance(link, h5py.HardLink) and isinstance(h5.get(PREPROCESSED_DATASET),
                                                                 h5py.Dataset)
    if not found:
        raise ValueError(f"segment.input: {url!r} is an HDF5 file without "
                         f"{PREPROCESSED_DATASET} (what xreduce-dct preprocess writes); name "
                         "the stack's dataset as 'file.h5::/path/to/data'")
    return f"{url}::{PREPROCESSED_DATASET}"


def run_segment(config, progress: bool = True, restart: bool = False):
    """Segment the configured stack and write the difspot file; returns (Segmentation, path).

    An interrupted run resumes from :func:`checkpoint_path` (see the module notes), after
    checking that the input and the parameters are those of the interrupted run (else it
    refuses, or starts again with ``restart=True``). A lock file refuses a second run writing
    the same output.
    """
    from xreduce.dct.difspot import write_difspots
    from xreduce.dct.segment import segment
    from xreduce.io import open_stack
    from xreduce.io.run_identity import RunLock
    from xreduce.io.writers import naming_file

    cfg = config if isinstance(config, SegmentConfig) else load_section(config, "segment")
    if not cfg.overwrite and os.path.lexists(cfg.output):
        raise FileExistsError(f"segment.output: {cfg.output!r} exists (overwrite is off)")
    folder = os.path.dirname(cfg.output)
    if folder and not os.path.isdir(folder):
        raise FileNotFoundError(f"segment.output: the folder {folder!r} does not exist")
    url = input_url(cfg.input)
    checkpoint = checkpoint_path(cfg.output)
    with RunLock(cfg.output, "segment.output"):
        with naming_file("segment.input", url):
            stack = open_stack(url)
        with stack:
            result = segment(_Frames(stack, url), cfg.seed_threshold, cfg.tau, cfg.bb_max,
                             grow_limits=cfg.grow_limits, min_seed_voxels=cfg.min_seed_voxels,
                             min_size=cfg.min_size, max_size=cfg.max_size,
                             connectivity=cfg.connectivity, box_increment=cfg.box_increment,
                             chunk_frames=cfg.chunk_frames, num_threads=cfg.num_threads or 0,
                             progress=progress, checkpoint=checkpoint, source=url,
                             restart=restart)
        with naming_file("segment.output", cfg.output):
            path = write_difspots(cfg.output, result, compression=cfg.compression,
                                  overwrite=cfg.overwrite, progress=progress)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return result, path


def checkpoint_path(output: str) -> str:
    """The folder where a segment run writing ``output`` keeps what it has done so far."""
    from xreduce.io import partial_path

    return partial_path(output, suffix="checkpoint")


def _run_and_summarise(config: str, progress: bool, restart: bool = False) -> str:
    result, path = run_segment(config, progress=progress, restart=restart)
    return f"{path}: {len(result)} difspots, {len(result.voxels)} voxels, stack {result.shape}"


def add_parser(sub: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    """Add the ``segment`` subcommand to ``xreduce-dct``; return the function that runs it."""
    return add_config_command(
        sub, "segment", help="double-threshold segmentation into difspots",
        description="Segment a preprocessed DCT stack into difspots as configured in the "
                    "'segment' section of a YAML file; writes one HDF5 file (silx view).",
        template=TEMPLATE, run_config=_run_and_summarise)
