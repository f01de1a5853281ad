"""``xreduce-integrate``: integrate stacks of frames into one NeXus file, on this machine or on
a dask.distributed cluster, resumably (also ``xreduce integrate``; see ``doc/stack.md``).

Exit codes: 0 done, 1 failed (the failed frames are named), 2 bad input, 130 interrupted
(Ctrl-C; the finished chunks are kept for ``--resume``).

Example
-------
    xreduce-integrate scan.h5::/entry/data --poni det.poni --npt 2000 --unit q_nm^-1 \\
        --error-model poisson -o scan_q.h5 --workers 4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from xreduce.cli import add_cluster_options

EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser(prog: str = "xreduce-integrate") -> argparse.ArgumentParser:
    """The argument parser (also used by ``xreduce integrate``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="*", help="frames: 'file.h5::/entry/data[0:100]', a silx "
                   "DataUrl, master.h5, 'frame_%%05d.cbf', a glob, or several (concatenated)")
    p.add_argument("--config", help="JSON or YAML file of options (the long option names); "
                   "options on the command line win")
    p.add_argument("--poni", help="PONI file of the geometry")
    p.add_argument("--engine-file", help="integrator saved by AzimuthalIntegrator.save_engine "
                   "(geometry and matrix; instead of --poni)")
    p.add_argument("--npt", type=int, help="radial bins")
    p.add_argument("--npt-azim", type=int, help="azimuthal bins: 2D integration")
    p.add_argument("--unit", default="q_nm^-1", help="radial unit (default q_nm^-1)")
    p.add_argument("--method", help="split,algorithm,implementation (default: bbox,csc,cython "
                   "for 1D where it applies, the fastest on stacks; else bbox,csr,cython)")
    p.add_argument("--radial-range", type=float, nargs=2, metavar=("LOW", "HIGH"))
    p.add_argument("--azimuth-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="degrees")
    p.add_argument("--mask", help="mask image (non-zero = ignore)")
    p.add_argument("--dark", help="dark image (several frames are averaged)")
    p.add_argument("--flat", help="flat-field image (several frames are averaged)")
    p.add_argument("--error-model", choices=["poisson", "azimuthal"])
    p.add_argument("--polarization-factor", type=float)
    p.add_argument("--no-solid-angle", action="store_true",
                   help="do not correct for the solid angle")
    p.add_argument("--dummy", type=float)
    p.add_argument("--delta-dummy", type=float)
    p.add_argument("-o", "--output", help="output .h5/.nxs, or 'dir/frame_%%05d.dat' for text")
    add_cluster_options(p, "integrate the chunks (default: this process's threads)")
    p.add_argument("--threads", type=int, help="OpenMP threads per task (0: all cores)")
    p.add_argument("--chunk-frames", type=int, help="frames per task")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run")
    p.add_argument("--scan", type=int, nargs=2, metavar=("NROT", "NTRANS"),
                   help="XRD-CT: rotations x translations; writes the sinogram")
    p.add_argument("--zigzag", action="store_true", help="every second line runs backwards")
    p.add_argument("--preview", type=float, nargs="+", metavar="Q",
                   help="radial values of which a back-projection PNG is saved (with --scan)")
    p.add_argument("--rotation-range-deg", type=float, default=180.0)
    p.add_argument("--compression", choices=["bitshuffle-lz4", "gzip", "none"],
                   default="bitshuffle-lz4", help="of the NeXus output (default bitshuffle-lz4: "
                   "h5py reads it after 'import hdf5plugin'; gzip: any HDF5 reader, ~11%% "
                   "slower)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the inputs and print the plan, integrate nothing")
    p.add_argument("--no-progress", action="store_true")
    return p


def _apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Options of a JSON/YAML file become the parser's defaults."""
    with open(path) as handle:
        text = handle.read()
    if path.lower().endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text)
    else:
        values = json.loads(text)
    if not isinstance(values, dict):
        raise ValueError(f"config: expected a mapping of options in {path!r}")
    known = {a.dest: a for a in parser._actions}
    defaults = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in known or dest in ("help", "config"):
            raise ValueError(f"config: unknown option {key!r} in {path!r}")
        defaults[dest] = value
    parser.set_defaults(**defaults)


def _image(url: str | None, name: str) -> np.ndarray | None:
    """One frame from a URL (several frames are averaged; a mask must be one frame)."""
    if url is None:
        return None
    from xreduce.io import read_stack

    frames = read_stack(url)
    if len(frames) == 1:
        return frames[0]
    if name == "mask":
        raise ValueError(f"mask: expected one frame, {url!r} has {len(frames)}")
    return frames.mean(axis=0, dtype=np.float64).astype(np.float32)


def _run(args: argparse.Namespace) -> int:
    from xreduce.executors import open_cluster
    from xreduce.integrator import AzimuthalIntegrator
    from xreduce.io import open_stack
    from xreduce.stack import integrate_stack

    if not args.source:
        raise ValueError("source: give at least one source of frames")
    if args.npt is None:
        raise ValueError("npt: give the number of radial bins (--npt)")
    if args.output is None:
        raise ValueError("output: give the output file (-o)")
    if (args.poni is None) == (args.engine_file is None):
        raise ValueError("poni: give exactly one of --poni and --engine-file")
    if args.workers is not None and args.scheduler is not None:
        raise ValueError("workers: give either --workers or --scheduler, not both")
    source: Any = args.source[0] if len(args.source) == 1 else list(args.source)
    if args.poni is not None:
        if not os.path.exists(args.poni):
            raise FileNotFoundError(f"poni: no file {args.poni!r}")
        ai = AzimuthalIntegrator.load(args.poni)
    else:
        ai = AzimuthalIntegrator.load_engine(args.engine_file)
    options = dict(
        npt_azim=args.npt_azim, unit=args.unit,
        method=None if args.method is None else
        tuple(args.method.split(",")) if "," in args.method else args.method,
        radial_range=None if args.radial_range is None else tuple(args.radial_range),
        azimuth_range=None if args.azimuth_range is None else tuple(args.azimuth_range),
        mask=_image(args.mask, "mask"), dark=_image(args.dark, "dark"),
        flat=_image(args.flat, "flat"), error_model=args.error_model,
        polarization_factor=args.polarization_factor,
        correct_solid_angle=not args.no_solid_angle, dummy=args.dummy,
        delta_dummy=args.delta_dummy, chunk_frames=args.chunk_frames,
        num_threads=args.threads, resume=args.resume,
        scan=None if args.scan is None else tuple(args.scan), zigzag=args.zigzag,
        preview=args.preview, rotation_range_deg=args.rotation_range_deg,
        compression=None if args.compression == "none" else args.compression,
        progress=not args.no_progress,
        engine_file=None if args.engine_file is None else os.path.abspath(args.engine_file))
    if args.dry_run:
        with open_stack(source) as stack:
            shape = tuple(ai.detector.shape)
            status = "matches" if tuple(stack.shape[1:]) == shape else "does NOT match"
            print(f"source: {len(stack)} frames of {stack.shape[1:]} {stack.dtype} "
                  f"(HDF5 chunk: {stack.chunk_frames} frames) from {len(stack.files)} file(s)")
            print(f"detector: {ai.detector.name} {shape} {status}")
            print(f"output: {args.output}; npt {args.npt}"
                  + (f" x {args.npt_azim}" if args.npt_azim else "") + f" {args.unit}")
            print(f"method: {args.method}" if args.method else
                  "method: bbox,csc,cython where it applies (1D), else bbox,csr,cython")
            return EXIT_DONE if status == "matches" else EXIT_BAD_INPUT
    if args.workers is None and args.scheduler is None:
        report = integrate_stack(source, ai, args.npt, args.output, **options)
    else:
        with open_stack(source) as stack:  # bad input fails before a cluster starts
            if tuple(stack.shape[1:]) != tuple(ai.detector.shape):
                raise ValueError(f"source: frames of shape {tuple(stack.shape[1:])}, but the "
                                 f"detector ({ai.detector.name or 'unnamed'}) has shape "
                                 f"{tuple(ai.detector.shape)}; is this the right PONI file?")
        with open_cluster(workers=args.workers, scheduler=args.scheduler) as client:
            report = integrate_stack(source, ai, args.npt, args.output, executor=client,
                                     **options)
    print(f"{report.frames} frames -> {report.output} ({report.chunks_computed} chunks "
          f"integrated, {report.chunks_resumed} resumed, {report.seconds:.1f} s, "
          f"{report.frames_per_s:.1f} frames/s)")
    for png in report.previews:
        print(f"preview: {png}")
    return EXIT_DONE


def main(argv: list[str] | None = None, prog: str = "xreduce-integrate") -> int:
    """Entry point of ``xreduce-integrate``; returns the exit code."""
    from xreduce.stack import StackIntegrationError

    parser = build_parser(prog)
    try:
        first, _ = parser.parse_known_args(argv)
        if first.config:
            _apply_config(parser, first.config)
        args = parser.parse_args(argv)
    except (OSError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run again with --resume to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StackIntegrationError as exc:
        print(f"{prog}: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, ConnectionError,
            ImportError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # anything else: failed, said in one line
        print(f"{prog}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
