"""Simulation: .mic files, Voronoi microstructures, bit-packed binary images, intensity frames."""
import numpy as np
import pytest

from xreduce.nf.crystal import euler_to_matrix
from xreduce.nf.grid import hexagonal_grid
from xreduce.nf.mic import read_mic
from xreduce.nf.microstructure import microstructure_from_mic, voronoi_microstructure
from xreduce.nf.reflections import reflection_list
from xreduce.nf.simulate import (
    lit_pixels, simulate_binary_images, simulate_frames, unpack_image, write_frames_hdf5,
    write_frames_tiff,
)
from xreduce.nf.spots import NFGeometry, predict_spots, spot_footprints, spot_pixels

WL = 0.172979
AU = (4.08, 4.08, 4.08, 90.0, 90.0, 90.0)


def _geometry(**kw):
    base = dict(lsd_um=(3000.0, 4000.0), bc_px=((128.0, 10.0), (129.0, 12.0)), px_um=1.48,
                wavelength_A=WL, omega_start_deg=-180.0, omega_step_deg=2.0,
                omega_ranges_deg=((-180.0, 180.0),),
                box_sizes_um=((-2000.0, 2000.0, -2000.0, 2000.0),), detector_shape=(256, 200),
                tilts_deg=(0.1, 0.2, -0.1))
    base.update(kw)
    return NFGeometry(**base)


def test_mic_round_trip(tmp_path, rng):
    g = hexagonal_grid(20.0, 5.0)
    m = voronoi_microstructure(g, 5, seed=rng)
    m.write_mic(tmp_path / "a.mic")
    text = (tmp_path / "a.mic").read_text().splitlines()
    assert text[0].startswith("%TriEdgeSize 5.0") and text[1] == "%NumPhases 1"
    back = microstructure_from_mic(tmp_path / "a.mic")
    np.testing.assert_allclose(back.euler_rad, m.euler_rad, atol=1e-6)
    np.testing.assert_allclose(back.grid.x_um, g.x_um, atol=1e-6)
    np.testing.assert_array_equal(back.grid.ud, g.ud)
    assert back.grid.edge_um == 5.0
    mic = read_mic(tmp_path / "a.mic")
    assert mic.headers["NumPhases"] == "1" and len(mic) == len(g)


def test_voronoi_microstructure():
    g = hexagonal_grid(50.0, 2.5)
    m = voronoi_microstructure(g, 10, seed=3)
    assert len(m) == 3456
    ids = np.unique(m.grain_id)
    assert 5 <= len(ids) <= 10
    for gid in ids:  # one orientation per grain
        e = m.euler_rad[m.grain_id == gid]
        assert np.ptp(e, axis=0).max() == 0
    U = m.orientation_matrices()
    np.testing.assert_allclose(U @ U.transpose(0, 2, 1), np.broadcast_to(np.eye(3), U.shape),
                               atol=1e-12)


def test_binary_images_match_footprints_and_spot_centres():
    """Bits lit in the packed stack are exactly the footprints of every voxel's spots; with
    conservative footprints each spot centre (voxel centroid ray) lands on a lit pixel of its
    frame at every distance."""
    geo = _geometry()
    refl = reflection_list(225, AU, WL, 3000.0, 250.0)
    g = hexagonal_grid(10.0, 5.0)
    micro = voronoi_microstructure(g, 2, seed=7)
    nf = 180
    words = simulate_binary_images(micro, refl, geo, n_frames=nf)
    shape = (2, nf, 256, 200)
    assert words.shape == (2 * nf * 256 * 200 // 32,) and words.dtype == np.dtype("<u4")
    # expected set, built directly from spot_footprints voxel by voxel
    want = set()
    centres = []
    for v in range(len(micro)):
        s = predict_spots(euler_to_matrix(micro.euler_rad[v:v + 1]), refl, geo)
        indptr, py, pz = spot_footprints(s, np.zeros(len(s), np.int32),
                                         micro.grid.vertices_um()[v:v + 1], geo)
        for j in range(len(s)):
            for d in range(2):
                sl = slice(indptr[j * 2 + d], indptr[j * 2 + d + 1])
                want.update((d, int(s.frame[j]), y, z) for y, z in zip(py[sl], pz[sl]))
        c = spot_pixels(s, geo, micro.grid.x_um[v], micro.grid.y_um[v])
        centres += [(d, int(s.frame[j]), *np.floor(c[j, d] + 0.5).astype(int))
                    for j in range(len(s)) for d in range(2)]
    got = set()
    for d, f in {(d, f) for d, f, _, _ in want} | {(0, 0), (1, nf - 1)}:
        img = unpack_image(words, shape, d, f)
        got.update((d, f, y, z) for y, z in zip(*np.nonzero(img)))
        for y, z in zip(*np.nonzero(img)):  # MIDAS's bit rule, one pixel at a time
            k = ((d * nf + f) * 256 + y) * 200 + z
            assert (int(words[k // 32]) >> (k % 32)) & 1
    assert len(want) > 100 and got == want
    assert np.count_nonzero(np.unpackbits(words.view(np.uint8))) == len(want)
    # the pixel holding the centroid's spot is always lit by the conservative footprint
    cons = simulate_binary_images(micro, refl, geo, n_frames=nf, conservative=True)
    on_detector = [c for c in centres if 0 <= c[2] < 256 and 0 <= c[3] < 200 and c[1] < nf]
    assert len(on_detector) > 20
    assert all(unpack_image(cons, shape, d, f)[y, z] for d, f, y, z in on_detector)
    assert np.count_nonzero(np.unpackbits(cons.view(np.uint8))) > len(want)


def test_intensity_frames_tiff_and_hdf5(tmp_path):
    import fabio
    import h5py
    from scipy.ndimage import binary_dilation

    geo = _geometry(omega_step_deg=30.0)  # 12 frames
    refl = reflection_list(225, AU, WL, 3000.0, 250.0)
    micro = voronoi_microstructure(hexagonal_grid(15.0, 5.0), 2, seed=7)
    lit = lit_pixels(micro, refl, geo)
    frames = list(simulate_frames(micro, refl, geo, seed=1, background=100.0, spot_counts=800))
    assert len(frames) == 2 * 12
    lit_mask = np.zeros((2, 12, 200, 256), bool)  # raw orientation: row 199 - z, column 255 - y
    lit_mask[lit.distance, lit.frame, 199 - lit.z, 255 - lit.y] = True
    for d, f, img in frames:
        assert img.shape == (200, 256) and img.dtype == np.uint16
        far = ~binary_dilation(lit_mask[d, f], iterations=4)  # background pixels
        dark = img[far].astype(float)
        assert abs(dark.mean() - 100) < 1.0 and abs(dark.var() / dark.mean() - 1) < 0.1
        if lit_mask[d, f].any():
            assert img[lit_mask[d, f]].mean() > 250
    paths = write_frames_tiff(tmp_path, "sim", iter(frames[10:14]), 12, raw_start_nr=1)
    assert [p.name for p in paths] == ["sim_000011.tif", "sim_000012.tif", "sim_000013.tif",
                                       "sim_000014.tif"]  # d * 12 + 1 + f
    np.testing.assert_array_equal(fabio.open(str(paths[1])).data, frames[11][2])
    h5 = write_frames_hdf5(tmp_path / "sim.h5", iter(frames), geo)
    with h5py.File(h5) as f:
        from silx.io import nxdata

        assert f["entry/distance_1/data"].shape == (12, 200, 256)
        np.testing.assert_array_equal(f["entry/distance_1/data"][5], frames[12 + 5][2])
        assert f["entry/distance_0"].attrs["lsd_um"] == 3000.0
        default = nxdata.get_default(f)
        assert default is not None and default.is_valid
        assert default.signal.name == "/entry/distance_0/data"


def test_pipeline_from_midas_parameter_file(tmp_path):
    """The example MIDAS file drives reflections, grid (with GridMask) and geometry."""
    from pathlib import Path

    from xreduce.nf.grid import grid_from_parameters
    from xreduce.nf.params import read_parameters
    from xreduce.nf.reflections import reflections_from_parameters

    p = read_parameters(Path(__file__).parent / "data" / "nf" / "ps_au.txt")
    refl = reflections_from_parameters(p)
    assert set(refl.ring_nr.tolist()) == {1, 2, 3, 4} and refl.lsd_um == 8000.0
    grid = grid_from_parameters(p)
    assert len(grid) > 0 and np.all(np.abs(grid.x_um) <= 40) and np.all(np.abs(grid.y_um) <= 40)
    geo = NFGeometry.from_parameters(p)
    assert geo.n_frames == 1440 and geo.tilts_deg == (0.0, 0.1, -0.05)
    assert geo.detector_shape == (2048, 2048) and geo.exclude_pole_deg == 6.0
    s = predict_spots(euler_to_matrix([[0.3, 0.6, 0.9]]), refl, geo)
    assert len(s) > 10 and np.all((s.frame >= 0) & (s.frame <= 1440))
    assert np.all(s.y_um[:, 0] >= -1500) and np.all(s.z_um[:, 0] >= -100)


def test_microstructure_from_grid_points():
    import io

    from xreduce.nf.microstructure import microstructure_from_grid_points
    from xreduce.nf.params import read_parameters

    text = ("GridSize 2.5\n"
            "GridPoints 0 0 0 1.0 2.0 2.5 1 0.1 0.2 0.3 1 1\n"
            "GridPoints 0 0 0 -1.0 2.0 2.5 -1 0.4 0.5 0.6 1 1;\n")
    m = microstructure_from_grid_points(read_parameters(io.StringIO(text), required=()))
    assert m.grid.x_um.tolist() == [1.0, -1.0] and m.grid.ud.tolist() == [1, -1]
    assert m.grid.edge_um == 2.5 and m.euler_rad[1].tolist() == [0.4, 0.5, 0.6]
    bad = text.replace(" 1 0.1", " 3 0.1")
    with pytest.raises(ValueError, match="UpDown"):
        microstructure_from_grid_points(read_parameters(io.StringIO(bad), required=()))
