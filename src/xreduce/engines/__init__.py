"""Integration engines: what :class:`xreduce.AzimuthalIntegrator` runs a call on.

One module per job (``doc/developers.md``, "Integration engines"):

- :mod:`~xreduce.engines.registry`: method parsing (with a device target), engine keys and
  the per-key engine cache;
- :mod:`~xreduce.engines.preprocess`: the one invalid-pixel rule and the per-pixel
  normalisation, shared by every back end and the NumPy reference;
- :mod:`~xreduce.engines.cython_csr`, :mod:`~xreduce.engines.histogram`,
  :mod:`~xreduce.engines.opencl`: the back ends (the ``.cl`` kernels live in the top-level
  ``opencl/`` folder);
- :mod:`~xreduce.engines.robust`: per-ring sigma clipping and median filtering;
- :mod:`~xreduce.engines.files`: engine files, checked on load.

An engine holds everything an integration needs that does not change from frame to frame;
engines are immutable once built and hold no per-call scratch, so one engine serves any
number of threads at once.

Example
-------
>>> from xreduce.engines import EngineCache, parse_method
>>> parse_method(("bbox", "csr"))
('bbox', 'csr', 'cython')
>>> EngineCache(max_engines=2).get_or_create("key", lambda: "engine")
'engine'
"""
from xreduce.engines.cython_csr import CsrEngine, StaticSums, validate_csr
from xreduce.engines.histogram import HistogramEngine
from xreduce.engines.preprocess import (ERROR_MODES, FrameArgs, Normalisation, PixelRule, Sums,
                                        digest, invalid_pixels, make_normalisation, pixel_rule)
from xreduce.engines.registry import (DEFAULT_METHOD, IMPLEMENTATIONS, SPLITS, EngineCache,
                                      EngineKey, Implementation, parse_method,
                                      parse_method_target, register_implementation,
                                      valid_methods)

__all__ = ["CsrEngine", "DEFAULT_METHOD", "ERROR_MODES", "EngineCache", "EngineKey",
           "FrameArgs", "HistogramEngine", "IMPLEMENTATIONS", "Implementation", "Normalisation",
           "PixelRule", "SPLITS", "StaticSums", "Sums", "digest", "invalid_pixels",
           "make_normalisation", "parse_method", "parse_method_target", "pixel_rule",
           "register_implementation", "valid_methods", "validate_csr"]
