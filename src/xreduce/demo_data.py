"""Built-in demo data: the geometry of a tilted Pilatus 1M at 1 Angstrom.

Example
-------
>>> from xreduce.demo_data import demo_geometry
>>> geo = demo_geometry()
>>> geo.detector.name, geo.wavelength
('Pilatus 1M', 1e-10)
"""
from __future__ import annotations

import os

from .geometry import Geometry

#: A version 2.1 PONI file: Pilatus 1M 0.2 m from the sample, beam near the centre, tilted by
#: a few degrees, 1 Angstrom X-rays.
DEMO_PONI = """\
# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis
# xreduce demo geometry: Pilatus 1M, tilted, 1 Angstrom
poni_version: 2.1
Detector: Pilatus 1M
Detector_config: {"pixel1": 0.000172, "pixel2": 0.000172, "orientation": 3}
Distance: 0.2
Poni1: 0.0872
Poni2: 0.0826
Rot1: 0.035
Rot2: -0.052
Rot3: 0.0
Wavelength: 1e-10
"""


def write_demo_poni(path: str | os.PathLike) -> str:
    """Write :data:`DEMO_PONI` to ``path`` (atomically) and return the path (as a str)."""
    from xreduce.io.writers import atomic_output

    path = os.fspath(path)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(DEMO_PONI)
    return path


def demo_geometry() -> Geometry:
    """The demo geometry, read from :data:`DEMO_PONI` through the PONI reader."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return Geometry.load(write_demo_poni(os.path.join(folder, "demo.poni")))
