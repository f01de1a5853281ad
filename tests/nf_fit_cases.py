"""Small NF geometries shared by the NF fitting tests (issue 11b): two distances, tilts, Au."""
import numpy as np

from xreduce.nf.reflections import reflection_list
from xreduce.nf.spots import NFGeometry

WAVELENGTH = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)
N_FRAMES = 180


def geometry(tilts=(0.2, -0.15, 0.3), shape=(512, 512)):
    """Two distances (3 and 4 mm), 1.48 um pixels, 2-degree frames over 360 degrees."""
    return NFGeometry(lsd_um=(3000.0, 4000.0), bc_px=((256.3, 255.6), (257.2, 254.9)),
                      px_um=1.48, wavelength_A=WAVELENGTH, omega_start_deg=-180.0,
                      omega_step_deg=2.0, omega_ranges_deg=((-180.0, 180.0),),
                      box_sizes_um=((-370.0, 370.0, -370.0, 370.0),), tilts_deg=tilts,
                      exclude_pole_deg=2.0, detector_shape=shape, n_frames=N_FRAMES)


def reflections():
    return reflection_list(225, AU, WAVELENGTH, 3000.0, 300.0)


def rotate_by(U, angles_deg, rng):
    """Each U rotated about a random axis by the given angle (degrees)."""
    from scipy.spatial.transform import Rotation

    axes = rng.normal(size=(len(U), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axes * np.radians(angles_deg)[:, None]).as_matrix()
    return dR @ U
