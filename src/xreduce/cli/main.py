"""The ``xreduce`` command: ``xreduce demo`` and friends."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xreduce`` console script."""
    parser = argparse.ArgumentParser(prog="xreduce", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the version and the OpenMP threads available")
    sub.add_parser("demo", help="run the main job on built-in demo data")
    sub.add_parser("integrate", add_help=False,
                   help="integrate stacks of frames (same as xreduce-integrate)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["integrate"]:
        from xreduce.cli.integrate import main as integrate_main

        return integrate_main(argv[1:], prog="xreduce integrate")
    args = parser.parse_args(argv)
    if args.version or args.command == "info":
        import xreduce
        from xreduce.ext import openmp_info

        print(f"xreduce {xreduce.__version__}, OpenMP threads: {openmp_info.max_threads()}")
        return 0
    if args.command == "demo":
        from xreduce.demo import run_demo

        return run_demo()
    parser.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
