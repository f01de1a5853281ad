"""Diffraction contrast tomography: preprocessing (and segmentation) of rotation series.

Example
-------
>>> from xreduce.dct import preprocess
>>> preprocess("preprocess.yml")   # doctest: +SKIP
"""
from .config import PreprocessConfig, load_section
from .preprocess import PreprocessResult, preprocess

__all__ = ["preprocess", "PreprocessResult", "PreprocessConfig", "load_section"]
