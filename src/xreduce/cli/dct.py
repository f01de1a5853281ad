"""The ``xreduce-dct`` command: DCT pipeline steps driven by a YAML configuration.

    xreduce-dct preprocess config.yml        # dark, normalisation, background, 2D median
    xreduce-dct preprocess --template        # print a configuration with every key
    xreduce-dct segment config.yml           # double-threshold segmentation into difspots

Each step is a subcommand registered in ``SUBCOMMANDS`` by a function that adds its parser
and returns the function that runs it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from xreduce.cli.config_command import Runner, add_config_command
from xreduce.dct.segment_cli import add_parser as add_segment_parser

TEMPLATE = """\
preprocess:
  input: scan.h5::/entry/data[0:3600]   # HDF5 URL, image file, glob pattern of files
  output: scan_preprocessed.h5           # one HDF5 file per volume
  dark: dark.h5::/entry/dark             # optional: dark frames (reduced by dark_reduction)
  dark_reduction: mean                   # mean | median
  offset: 0.0                            # constant subtracted after the dark
  normalization: none                    # none | margin
  margin_bbox: null                      # [[row0, col0], [row1, col1]] (half-open) for margin
  moving_median:
    window: 31                           # frames; null: no background subtraction
    mode: nearest                        # nearest | reflect | mirror | wrap | shrink
    step: 1                              # compute every `step` frames, interpolate between
    interpolation: nearest               # nearest | linear
  median_filter:
    size: 3                              # 3, 5, [rows, cols]; null or 1: off
    mode: reflect                        # reflect | nearest | mirror | wrap | constant
  save_background: false
  chunk_frames: 100                      # frames per chunk (memory; resumable unit)
  backend: cython                        # cython | opencl
  num_threads: null                      # OpenMP threads (default: all)
  compression: null                      # null | gzip | lzf
  overwrite: false
"""


def _run_preprocess(config: str, progress: bool) -> str:
    from xreduce.dct.preprocess import preprocess

    result = preprocess(config, progress=progress)
    return (f"{result.output}: {result.n_frames} frames of {result.frame_shape}, "
            f"{result.chunks_computed} chunk(s) computed, {result.chunks_skipped} resumed; "
            f"working memory about {result.memory_bytes / 2**20:.0f} MiB")


def _add_preprocess(sub: argparse._SubParsersAction) -> Runner:
    return add_config_command(
        sub, "preprocess",
        help="dark/offset, margin normalisation, moving-median background, 2D median",
        description="Preprocess a DCT volume as configured in the 'preprocess' section of a "
                    "YAML file. An interrupted run resumes when started again.",
        template=TEMPLATE, run_config=_run_preprocess)


SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], Runner]] = {
    "preprocess": _add_preprocess,
    "segment": add_segment_parser,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce-dct`` console script."""
    parser = argparse.ArgumentParser(prog="xreduce-dct", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {name: add(sub) for name, add in SUBCOMMANDS.items()}
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        return runners[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"xreduce-dct {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
