"""The ``xreduce-nf`` command: NF-HEDM reconstruction from a MIDAS parameter file.

    xreduce-nf params.txt [--ncpus N] [--skip-image-processing] [--resume pipeline.h5]
               [--restart-from STAGE] [--workers N | --scheduler ADDRESS]

Reads the MIDAS parameter file unchanged, processes the raw frames into SpotsInfo.bin (unless
--skip-image-processing or PrecomputedSpotsInfo 1), fits, and writes into OutputDirectory (else
DataDirectory): the text mic, MicFileBinary, the NeXus map ``<mic>.h5`` and its IPF/confidence
picture ``<mic>.png``, Grains.csv, pipeline.h5 (every finished stage, resumable) and the log file
``xreduce-nf.log``; prints a summary at the end. Also ``python -m xreduce.nf``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path

from xreduce.cli import add_cluster_options


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xreduce-nf", description=__doc__.splitlines()[0])
    p.add_argument("params", help="MIDAS NF parameter file")
    p.add_argument("--ncpus", type=int, default=0, help="threads (default: all cores)")
    p.add_argument("--skip-image-processing", action="store_true",
                   help="fit the existing SpotsInfo.bin (as PrecomputedSpotsInfo 1)")
    p.add_argument("--resume", metavar="PIPELINE_H5",
                   help="continue an interrupted run from its pipeline file")
    p.add_argument("--restart-from", metavar="STAGE",
                   help="redo from this stage (e.g. loop_1_seeded)")
    p.add_argument("--nm-restarts", type=int, default=0, metavar="N",
                   help="beyond MIDAS: restart each Nelder-Mead from its best point up to N "
                        "times while the confidence improves (default 0: MIDAS)")
    p.add_argument("--neighbour-passes", type=int, default=0, metavar="N",
                   help="beyond MIDAS: up to N passes in which each voxel tries its "
                        "neighbours' fitted orientations (default 0: MIDAS)")
    p.add_argument("--fast", action="store_true",
                   help="beyond MIDAS: the fast path (one seed refined per group of copies, "
                        "smaller simplex, 2 neighbour passes; about 3.5x faster, at least as "
                        "accurate on the benchmarks; doc/nf_fit.md)")
    add_cluster_options(p, "fit voxel blocks")
    p.add_argument("--stop-after", metavar="STAGE", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


@contextlib.contextmanager
def _cluster(workers: int | None, scheduler: str | None):
    """A dask client for ``--workers``/``--scheduler`` (closed at the end), else None."""
    if workers is None and scheduler is None:
        yield None
        return
    from xreduce.executors import open_cluster

    with open_cluster(workers=workers, scheduler=scheduler) as client:
        yield client


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce-nf`` console script."""
    args = _parser().parse_args(argv)
    from xreduce.limits import check_num_threads
    from xreduce.nf.params import read_parameters
    from xreduce.nf.pipeline import _output_directory, run_pipeline

    handler = None
    try:
        threads = check_num_threads(args.ncpus, "--ncpus")
        path = Path(args.params)
        if not path.is_file():
            raise ValueError(f"params: parameter file {str(path)!r} does not exist")
        text = path.read_text()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            params = read_parameters(path)
        out_dir = _output_directory(params)
        handler = logging.FileHandler(out_dir / "xreduce-nf.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = logging.getLogger("xreduce.nf")
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        for w in caught:
            logger.warning("%s", w.message)
            print(f"warning: {w.message}", file=sys.stderr)
        logger.info("xreduce-nf %s", " ".join(argv if argv is not None else sys.argv[1:]))
        with warnings.catch_warnings(record=True) as caught, \
                _cluster(args.workers, args.scheduler) as executor:
            warnings.simplefilter("always")
            summary = run_pipeline(params, text, resume=args.resume,
                                   restart_from=args.restart_from,
                                   skip_image_processing=args.skip_image_processing,
                                   progress=not args.no_progress, num_threads=threads,
                                   stop_after=args.stop_after,
                                   restarts=args.nm_restarts,
                                   neighbour_passes=args.neighbour_passes,
                                   fast=args.fast, executor=executor)
        for w in caught:
            logger.warning("%s", w.message)
            print(f"warning: {w.message}", file=sys.stderr)
        logger.info("%s", summary.text())
        print(summary.text())
        return 0
    except (ValueError, TypeError, FileNotFoundError) as exc:
        if handler is not None:
            logging.getLogger("xreduce.nf").error("%s", exc)
        print(f"xreduce-nf: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if handler is not None:
            logging.getLogger("xreduce.nf").removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
