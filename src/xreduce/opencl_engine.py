"""Former home of the OpenCL integration engine, now :mod:`xreduce.engines.opencl`; this
name stays so that existing scripts keep working.

>>> from xreduce.opencl_engine import OpenCLCsrEngine   # doctest: +SKIP
"""
from xreduce.engines.opencl import (CsrSums, OpenCLCsrEngine,  # noqa: F401
                                    OpenCLIntegrationEngine)
