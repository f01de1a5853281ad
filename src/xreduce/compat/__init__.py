"""Drop-in surfaces of other tools: ``xreduce.compat.pyfai`` answers pyFAI scripts.

Example
-------
>>> from xreduce.compat import pyfai
>>> pyfai.AzimuthalIntegrator(dist=0.1, detector="Pilatus 1M").dist
0.1
"""
