"""xreduce: fast, exact reduction of synchrotron X-ray diffraction data.

Azimuthal integration (pyFAI-style geometry and PONI files), DCT preprocessing and
segmentation, and NF-HEDM, with Cython + OpenMP and OpenCL kernels.

Example
-------
>>> import xreduce
>>> xreduce.__version__
'0.1.0'
"""
__version__ = "0.1.0"
