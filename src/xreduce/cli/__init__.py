"""Console scripts of xreduce."""
from __future__ import annotations

import argparse


def add_cluster_options(parser: argparse.ArgumentParser, work: str,
                        config_keys: bool = False) -> None:
    """``--workers`` and ``--scheduler``: run ``work`` (e.g. "fit voxel blocks") on dask
    (:func:`xreduce.executors.open_cluster`); ``config_keys`` mentions the config file's keys
    of the same names."""
    def key(name: str) -> str:
        return f"; or the {name!r} key" if config_keys else ""

    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"{work} on a local dask cluster of N worker processes (0: one per "
                             f"core; same results{key('workers')})")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help=f"{work} on an existing dask cluster (scheduler address such as "
                             f"tcp://host:8786, or scheduler file{key('scheduler')})")
