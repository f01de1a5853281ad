"""Compiled kernels of xreduce (Cython + OpenMP). Each module does one job; call them through
the public Python fronts in :mod:`xreduce`, never directly."""
