"""``xreduce demo``: the main job on built-in demo data.

For now it prints the demo geometry (a tilted Pilatus 1M at 1 Angstrom) and the range of a few
per-pixel arrays; the integration engine replaces the body of :func:`run_demo`.
"""
from __future__ import annotations

import time

import numpy as np


def run_demo() -> int:
    """Print the demo geometry and a summary of its per-pixel arrays; return 0 on success."""
    from .demo_data import DEMO_PONI, demo_geometry

    geometry = demo_geometry()
    print("Demo PONI file:")
    print("    " + DEMO_PONI.rstrip().replace("\n", "\n    "))
    print()
    print(geometry)
    start = time.perf_counter()
    tth = geometry.center_array("2th_deg")
    q = geometry.center_array("q_nm^-1")
    chi = geometry.center_array("chi_deg")
    solid_angle = geometry.solid_angle_array()
    corners = geometry.corner_array("q_nm^-1")
    elapsed = time.perf_counter() - start
    valid = geometry.detector.mask == 0
    print()
    print(f"Per-pixel arrays ({tth.size} pixels, {int(valid.sum())} in modules) in {elapsed * 1e3:.0f} ms:")
    for label, array in (("2theta (deg)", tth), ("q (nm^-1)", q), ("chi (deg)", chi),
                         ("solid angle (rel.)", solid_angle)):
        print(f"    {label:<20} {np.min(array[valid]):10.4f} .. {np.max(array[valid]):10.4f}")
    print(f"    corner array         shape {corners.shape}")
    return 0
