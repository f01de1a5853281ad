"""Image stacks in and results out: HDF5 URLs (``file.h5::/entry/data[0:3600]``), fabio files
and file series, and writers that write to a temporary name and rename when complete.

Example
-------
>>> from xreduce.io import read_stack
>>> frames = read_stack("scan.h5::/entry/data[0:100]")  # doctest: +SKIP
"""
from .stacks import FrameStack, iter_chunks, open_stack, parse_hdf5_url, read_stack
from .writers import atomic_output, partial_path, write_hdf5

__all__ = ["FrameStack", "open_stack", "read_stack", "iter_chunks", "parse_hdf5_url",
           "atomic_output", "partial_path", "write_hdf5"]
