"""Small NF geometries shared by the NF fitting tests (issue 11b): two tilted distances, Au."""
import numpy as np

from xreduce.nf.reflections import reflection_list
from xreduce.nf.spots import NFGeometry

WAVELENGTH = 0.12
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)
N_FRAMES = 720   # 0.5 degree frames


def geometry(tilts=(0.2, -0.15, 0.3), shape=(640, 640), step_deg=0.5):
    """Two distances (3 and 4 mm), 1.48 um pixels, frames of ``step_deg`` over 360 degrees
    (``n_frames`` = 360 / step_deg); five Au rings inside BoxSize."""
    cy, cz = shape[0] / 2, shape[1] / 2
    return NFGeometry(lsd_um=(3000.0, 4000.0), bc_px=((cy + 0.3, cz - 0.4), (cy + 1.2, cz - 1.1)),
                      px_um=1.48, wavelength_A=WAVELENGTH, omega_start_deg=-180.0,
                      omega_step_deg=step_deg, omega_ranges_deg=((-180.0, 180.0),),
                      box_sizes_um=((-350.0, 350.0, -350.0, 350.0),), tilts_deg=tilts,
                      exclude_pole_deg=2.0, detector_shape=shape,
                      n_frames=int(round(360 / step_deg)))


def reflections():
    return reflection_list(225, AU, WAVELENGTH, 3000.0, 330.0)


def rotate_by(U, angles_deg, rng):
    """Each U rotated about a random axis by the given angle (degrees)."""
    from scipy.spatial.transform import Rotation

    axes = rng.normal(size=(len(U), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    dR = Rotation.from_rotvec(axes * np.radians(angles_deg)[:, None]).as_matrix()
    return dR @ U


_CASES = {}


def voronoi_case(rsample_um=20.0, edge_um=4.0, n_grains=7, seed=4):
    """(model, grid, micro, truth) of a Voronoi microstructure whose images the NumPy
    reference made (cached per process: the reference is slow)."""
    import reference as ref
    from xreduce.nf.grid import hexagonal_grid
    from xreduce.nf.microstructure import voronoi_microstructure
    from xreduce.nf.overlap import OverlapModel, midas_vertices

    key = (rsample_um, edge_um, n_grains, seed)
    if key not in _CASES:
        geo = geometry()
        refl = reflections()
        grid = hexagonal_grid(rsample_um, edge_um)
        micro = voronoi_microstructure(grid, n_grains, seed=seed)
        U = micro.orientation_matrices()
        words = ref.nf_midas_lit_words(U, midas_vertices(grid), refl.g, geo, N_FRAMES,
                                       edge_um <= geo.px_um)
        truth = np.stack([U[micro.grain_id == k][0] for k in np.unique(micro.grain_id)])
        _CASES[key] = (OverlapModel(geo, refl, words, N_FRAMES), grid, micro, truth)
    return _CASES[key]
