"""Compiled kernels of xreduce (Cython + OpenMP). Each module does one job; call them through
the public Python fronts in :mod:`xreduce`, never directly.

OpenMP threads that finish a parallel region spin before they sleep; GNU OpenMP spins ~3 ms
by default, which on a machine with few cores takes them from the threads that read and write
around the kernels (and from other processes). Unless the user chose (``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY`` set), they spin ~0.1 ms here: our parallel regions last milliseconds, so
waking a sleeping thread costs nothing measurable, and a stack integration on 2 loaded cores
used 30 % less CPU per frame (doc/stack.md, "Speed"). It takes effect where this package loads
the OpenMP runtime first.
"""
import os as _os

if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"
