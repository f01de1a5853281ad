"""Diffraction contrast tomography: preprocessing and segmentation of rotation series.

Example
-------
>>> from xreduce.dct import preprocess
>>> preprocess("preprocess.yml")   # doctest: +SKIP
"""
from . import segment_cli  # registers the 'segment' YAML section next to 'preprocess'
from .config import PreprocessConfig, load_section
from .difspot import read_difspots, write_difspots
from .labelling import label, label_statistics
from .preprocess import PreprocessResult, preprocess
from .segment import Segmentation

__all__ = [
    "preprocess", "PreprocessResult", "PreprocessConfig", "load_section",
    "label", "label_statistics", "Segmentation", "write_difspots", "read_difspots",
]
