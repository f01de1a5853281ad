"""A subcommand driven by one YAML configuration file (``COMMAND config.yml`` or
``COMMAND --template``), shared by the steps of ``xreduce-dct``."""
from __future__ import annotations

import argparse
from typing import Callable

Runner = Callable[[argparse.Namespace], int]


def add_config_command(sub: argparse._SubParsersAction, name: str, help: str, description: str,
                       template: str, run_config: Callable[[str, bool, bool], str]) -> Runner:
    """Add a subcommand that runs ``run_config(config_path, progress)`` and prints its summary.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subparsers of the command.
    name, help, description : str
        The subcommand's name, one-line help and description.
    template : str
        The YAML section with every key, printed by ``--template``.
    run_config : callable
        ``run_config(config_path, progress, restart)`` runs the step (``progress``: show
        progress bars; ``restart``: discard an interrupted run's work) and returns the
        one-line summary to print.

    Returns
    -------
    callable
        The function that runs the parsed arguments and returns the exit status.
    """
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("config", nargs="?", help="YAML configuration file")
    parser.add_argument("--template", action="store_true",
                        help="print a configuration template with every key and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--restart", action="store_true",
                        help="discard the unfinished work of an interrupted run and start "
                             "again (a run resumes by default, and refuses to when its inputs "
                             "or configuration changed)")

    def run(args: argparse.Namespace) -> int:
        if args.template:
            print(template, end="")
            return 0
        if not args.config:
            parser.error("the configuration file is required (or --template)")
        print(run_config(args.config, not args.no_progress, args.restart))
        return 0

    return run
