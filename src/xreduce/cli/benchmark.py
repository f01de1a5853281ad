"""The ``xreduce-benchmark`` command: integration speed of every method and back end here.

Examples
--------
    xreduce-benchmark --size 2 --plot b.png --json b.json
    xreduce-benchmark --size 3 --compare pyfai
    python -m xreduce.benchmark --size 1
"""
from __future__ import annotations

import argparse
import sys

from xreduce.benchmark import DETECTORS, DIMS, FULL_SPLIT_MAX_MPIX, SPLITS


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _device(text: str) -> tuple[int, int]:
    try:
        platform_id, device_id = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'platform_id,device_id' (see clinfo -l), got {text!r}") from None
    return platform_id, device_id


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xreduce-benchmark",
        description="Time azimuthal integration (init, per frame, frames/s, Mpix/s) for each "
                    "detector size, pixel splitting and back end (Cython, OpenCL on each "
                    "device), 1D (1000 bins) and 2D (500 x 360); every result is checked "
                    "against Cython CSR with the same splitting.")
    parser.add_argument("--size", type=int, default=len(DETECTORS), metavar="N",
                        help=f"only the first N detectors of: {', '.join(DETECTORS)}")
    parser.add_argument("--frames", type=int, default=5, metavar="N",
                        help="frames per point: one initialisation call, N-1 timed (default 5)")
    parser.add_argument("--methods", type=_csv, default=list(SPLITS), metavar="SPLITS",
                        help="pixel splittings, comma separated (default no,bbox,full)")
    parser.add_argument("--dims", type=_csv, default=list(DIMS), metavar="DIMS",
                        help="1d and/or 2d (default both)")
    parser.add_argument("--backends", type=_csv, default=["cython", "opencl"],
                        metavar="NAMES", help="cython and/or opencl (default both)")
    parser.add_argument("--device", type=_device, action="append", dest="devices",
                        metavar="P,D", help="OpenCL device (repeatable; default: every device)")
    parser.add_argument("--error-model", default="poisson",
                        choices=["poisson", "azimuthal", "none"],
                        help="error model of every integration (default poisson)")
    parser.add_argument("--compare", choices=["pyfai"], action="append", default=[],
                        help="also time pyFAI on the same frames and print the ratio")
    parser.add_argument("--all-full", action="store_true",
                        help=f"also run OpenCL full splitting above {FULL_SPLIT_MAX_MPIX:g} Mpix")
    parser.add_argument("--resident", action="store_true",
                        help="OpenCL: also time the frames already on the device (no "
                             "transfer), in frames/s")
    parser.add_argument("--json", metavar="FILE", help="write the results, machine, versions "
                                                       "and devices as JSON")
    parser.add_argument("--plot", metavar="FILE", help="write frames/s against Mpix (PNG)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Test hook: an explicit list of detector names instead of --size.
    parser.add_argument("--detectors", type=_csv, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce-benchmark`` console script; returns the exit status
    (1 when a result FAILED its check)."""
    from xreduce.benchmark import format_table, run_benchmark, write_json, write_plot

    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.size <= len(DETECTORS):
        parser.error(f"--size: expected 1 to {len(DETECTORS)}, got {args.size}")
    if args.frames < 2:
        parser.error(f"--frames: expected at least 2, got {args.frames}")
    for split in args.methods:
        if split not in ("no", "bbox", "pseudo", "full"):
            parser.error(f"--methods: expected no, bbox, pseudo or full, got {split!r}")
    for dim in args.dims:
        if dim not in DIMS:
            parser.error(f"--dims: expected 1d or 2d, got {dim!r}")
    for backend in args.backends:
        if backend not in ("cython", "opencl"):
            parser.error(f"--backends: expected cython or opencl, got {backend!r}")
    detectors = args.detectors or list(DETECTORS[:args.size])
    try:
        report = run_benchmark(detectors, splits=args.methods, dims=args.dims,
                               frames=args.frames, backends=args.backends,
                               devices=args.devices, compare=args.compare,
                               error_model=None if args.error_model == "none" else args.error_model,
                               skip_big_full=not args.all_full, resident=args.resident,
                               progress=not args.no_progress)
    except (ValueError, KeyError) as err:
        parser.error(str(err))
    print(format_table(report))
    if args.compare and not report["settings"]["compare"]:
        print("pyFAI is not installed: no comparison", file=sys.stderr)
    if args.json:
        write_json(report, args.json)
        print(f"results written to {args.json}")
    if args.plot:
        write_plot(report, args.plot)
        print(f"plot written to {args.plot}")
    failed = [r for r in report["results"] if r["check"].startswith("FAILED")]
    if failed:
        print(f"{len(failed)} result(s) FAILED their check: their speed is not reported",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
