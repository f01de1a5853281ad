"""xreduce: fast, exact reduction of synchrotron X-ray diffraction data.

Azimuthal integration (pyFAI-style geometry and PONI files), DCT preprocessing and
segmentation, and NF-HEDM, with Cython + OpenMP and OpenCL kernels.

Example
-------
>>> import xreduce
>>> xreduce.__version__
'0.1.0'
>>> xreduce.get_detector("Pilatus 1M").shape
(1043, 981)
"""
from __future__ import annotations

import os

from .detectors import Detector, get_detector
from .geometry import Geometry
from .integrator import AzimuthalIntegrator

__version__ = "0.1.0"
__all__ = ["AzimuthalIntegrator", "Detector", "Geometry", "get_detector", "load", "__version__"]


def load(path: str | os.PathLike, shape: tuple | None = None) -> AzimuthalIntegrator:
    """Load an experiment description (a PONI file) as an :class:`AzimuthalIntegrator`.

    The integrator holds the :class:`Geometry` (``ai.geometry``) and exposes its parameters and
    per-pixel arrays (``ai.dist``, ``ai.twotheta_array()``); :meth:`Geometry.load` always
    returns a Geometry.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.poni`` file (versions 1, 2, 2.1 and 3 as pyFAI writes them).
    shape : tuple of int, optional
        (rows, cols), only for files whose detector has no shape (e.g. version 1 files).
    """
    return AzimuthalIntegrator(Geometry.load(path, shape=shape))
