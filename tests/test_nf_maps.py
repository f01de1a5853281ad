"""NF map outputs: NeXus/HDF5 with @default, IPF colours, PNG plots."""
import numpy as np
import pytest

from xreduce.nf.crystal import euler_to_matrix, laue_rotations, matrix_to_euler
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.maps import ipf_colors, plot_map, read_map_hdf5, write_map_hdf5
from xreduce.nf.microstructure import voronoi_microstructure


def _euler_with_axis_along_z(h):
    """An orientation whose crystal direction h (Cartesian) lies along sample +Z."""
    from scipy.spatial.transform import Rotation

    rot, _ = Rotation.align_vectors([[0, 0, 1]], [np.asarray(h, float)])
    return matrix_to_euler(rot.as_matrix()[None])[0]


@pytest.mark.parametrize("h, rgb", [([0, 0, 1], [1, 0, 0]), ([1, 0, 1], [0, 1, 0]),
                                    ([1, 1, 1], [0, 0, 1]), ([0, -1, 1], [0, 1, 0]),
                                    ([-1, 1, -1], [0, 0, 1]), ([0, 1, 0], [1, 0, 0])])
def test_cubic_key_corners(h, rgb):
    eul = _euler_with_axis_along_z(h)
    np.testing.assert_allclose(ipf_colors(eul[None], 225)[0], rgb, atol=1e-9)


def test_hexagonal_key_corners():
    lat = (2.95, 2.95, 4.68, 90, 90, 120)
    from xreduce.nf.crystal import direct_matrix

    A = direct_matrix(lat)
    for h, rgb in ((A[:, 2], [1, 0, 0]), (A[:, 0], [0, 1, 0]),
                   (np.cross(A[:, 1], A[:, 2]), [0, 0, 1]), (A[:, 1], [0, 1, 0]),
                   (-A[:, 2], [1, 0, 0])):
        eul = _euler_with_axis_along_z(h)
        np.testing.assert_allclose(ipf_colors(eul[None], 194, lat)[0], rgb, atol=1e-9)


@pytest.mark.parametrize("sg, lat", [(225, None), (229, None), (194, (2.95, 2.95, 4.68, 90, 90, 120)),
                                     (139, (3, 3, 5, 90, 90, 90)), (62, (3, 4, 5, 90, 90, 90))])
def test_colours_are_symmetry_invariant(rng, sg, lat):
    eul = rng.uniform(0, 2 * np.pi, (200, 3))
    eul[:, 1] = np.arccos(rng.uniform(-1, 1, 200))
    U = euler_to_matrix(eul)
    base = ipf_colors(eul, sg, lat)
    assert base.min() >= 0 and np.allclose(base.max(axis=1), 1)
    for S in laue_rotations(sg, lat):
        np.testing.assert_allclose(ipf_colors(matrix_to_euler(U @ S), sg, lat), base, atol=1e-6)


def test_unsupported_class_is_refused():
    with pytest.raises(ValueError, match="no IPF colour key for Laue class 'monoclinic'"):
        ipf_colors(np.zeros((1, 3)), 14)


def test_map_hdf5_is_nexus_with_default(tmp_path, rng):
    import h5py
    import io
    from silx.io import nxdata

    from xreduce.nf.params import read_parameters

    g = hexagonal_grid(20.0, 5.0)
    m = voronoi_microstructure(g, 4, seed=rng)
    conf = rng.uniform(0, 1, len(g))
    p = read_parameters(io.StringIO("nDistances 1\nLsd 6000\nBC 1 2\nSpaceGroup 225\n"
                                    "LatticeParameter 4.08 4.08 4.08 90 90 90\nIce9Input\n"
                                    "RawDataURL a.h5::/data\nOmegaRange -180 180\n"
                                    "BoxSize -1 1 -1 1\nGridPoints" + " 1" * 12 + "\n"),
                        required=())
    write_map_hdf5(tmp_path / "map.h5", g.x_um, g.y_um, g.edge_um, g.ud, m.euler_rad, conf,
                   row=np.arange(len(g)), orientation_id=2, time=0.5, params=p,
                   provenance={"seeds": "seeds.txt", "threads": 2})
    with h5py.File(tmp_path / "map.h5") as h5:
        default = nxdata.get_default(h5)
        assert default is not None and default.is_valid
        assert default.signal.name == "/entry/map/confidence"
        np.testing.assert_array_equal(default.signal[()], conf)
        assert h5["entry/map/x_um"].attrs["units"] == "um"
        assert h5["entry/map/euler_rad"].attrs["units"] == "rad"
        np.testing.assert_allclose(h5["entry/map/ipf_rgb"][()], ipf_colors(m.euler_rad, 225))
        assert h5["entry/parameters/SpaceGroup"][()] == 225
        assert h5["entry/parameters/RawDataURL"][0] == b"a.h5::/data"
        assert h5["entry/parameters/GridPoints"].shape == (1, 12)
        assert b"LatticeParameter 4.08" in h5["entry/parameters/parameter_file"][()]
        assert h5["entry/provenance/seeds"][()] == b"seeds.txt"
        assert h5["entry"].attrs["NX_class"] == "NXentry"
    back = read_map_hdf5(tmp_path / "map.h5")
    np.testing.assert_array_equal(back.euler_rad, m.euler_rad)
    np.testing.assert_array_equal(back.row, np.arange(len(g)))
    with pytest.raises(TypeError, match="params"):
        write_map_hdf5(tmp_path / "x.h5", [0.0], [0.0], 1.0, [1], np.zeros((1, 3)), params={})


def test_plot_map_png(tmp_path, rng):
    g = hexagonal_grid(20.0, 5.0)
    m = voronoi_microstructure(g, 4, seed=rng)
    conf = rng.uniform(0, 1, len(g))
    plot_map(tmp_path / "map.png", g.x_um, g.y_um, g.edge_um, g.ud, m.euler_rad, conf, 225,
             min_confidence=0.2, title="test")
    data = (tmp_path / "map.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "map.png")
    assert img.shape[0] > 300 and img.shape[1] > 600
