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

from xreduce.cli import add_cluster_options
from xreduce.cli.config_command import Runner, add_config_command
from xreduce.dct.segment_cli import add_parser as add_segment_parser

TEMPLATE = """\
preprocess:
  input: scan.h5::/entry/data[0:3600]   # HDF5 URL, image file, glob pattern of files
  output: scan_preprocessed.h5           # one HDF5 file per volume (segment's default input)
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
  num_threads: null                      # OpenMP threads (null or 0: all cores)
  compression: null                      # null | gzip | lzf
  overwrite: false
  workers: null                          # dask: a local cluster of N processes (0: per core)
  scheduler: null                        # dask: an existing cluster's address or file
"""


def _run_preprocess(config: str, progress: bool, restart: bool = False,
                    workers: int | None = None, scheduler: str | None = None) -> str:
    from xreduce.dct.preprocess import preprocess

    if workers is None and scheduler is None:
        result = preprocess(config, progress=progress, restart=restart)
    else:
        from xreduce.executors import open_cluster

        with open_cluster(workers=workers, scheduler=scheduler) as client:
            result = preprocess(config, progress=progress, restart=restart, executor=client)
    salvaged = (f"; {result.chunks_salvaged_redone} damaged chunk(s) of the partial file "
                "computed again" if result.chunks_salvaged_redone else "")
    return (f"{result.output}: {result.n_frames} frames of {result.frame_shape}, "
            f"{result.chunks_computed} chunk(s) computed, {result.chunks_skipped} resumed; "
            f"working memory about {result.memory_bytes / 2**20:.0f} MiB{salvaged}")


def _add_preprocess(sub: argparse._SubParsersAction) -> Runner:
    cluster: dict = {}  # --workers/--scheduler of the command line being run

    def run_config(config: str, progress: bool, restart: bool) -> str:
        return _run_preprocess(config, progress, restart, **cluster)

    runner = add_config_command(
        sub, "preprocess",
        help="dark/offset, margin normalisation, moving-median background, 2D median",
        description="Preprocess a DCT volume as configured in the 'preprocess' section of a "
                    "YAML file. An interrupted run resumes when started again.",
        template=TEMPLATE, run_config=run_config)
    parser = sub.choices["preprocess"]
    add_cluster_options(parser, "compute the chunks", config_keys=True)

    def run(args: argparse.Namespace) -> int:
        cluster.update(workers=args.workers, scheduler=args.scheduler)
        return runner(args)

    return run


SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], Runner]] = {
    "preprocess": _add_preprocess,
    "segment": add_segment_parser,
}


#: Exit statuses of ``xreduce-dct`` (doc/robustness.md).
EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _one_line(exc: BaseException) -> str:
    """An exception as one line, with the file it concerns when it names one."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    filename = getattr(exc, "filename", None)
    if filename and str(filename) not in text:
        text = f"{filename}: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce-dct`` console script.

    Every error ends in one line on stderr and an exit status: 0 done, 1 failed (a file that
    cannot be read or written, a full disk, another run holding the lock), 2 bad input (the
    configuration, an input that does not fit, a size beyond the limits, an unfinished run of
    other inputs), 130 interrupted (run the same command again to resume).
    """
    parser = argparse.ArgumentParser(prog="xreduce-dct", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {name: add(sub) for name, add in SUBCOMMANDS.items()}
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_FAILED
    prefix = f"xreduce-dct {args.command}: "
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        print(f"{prefix}interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"{prefix}error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, RuntimeError) as exc:  # h5py reports HDF5 errors as OSError/RuntimeError
        print(f"{prefix}failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, TypeError, KeyError, MemoryError) as exc:
        print(f"{prefix}error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
