"""Grids: MIDAS hexagonal triangle grid (3456 for Rsample 50, GridSize 2.5), grid.txt, masks."""
import numpy as np
import pytest

from xreduce.nf.grid import (
    apply_grid_mask, apply_tomo_mask, hexagonal_grid, read_grid, square_grid, write_grid,
)


def _point_in_polygons(points, verts):
    """(p, n) bool: point p inside convex counter-clockwise polygon n (edges included)."""
    inside = np.ones((len(points), len(verts)), dtype=bool)
    nv = verts.shape[1]
    for k in range(nv):
        a, b = verts[:, k], verts[:, (k + 1) % nv]
        cross = ((b[:, 0] - a[:, 0])[None] * (points[:, 1:2] - a[None, :, 1])
                 - (b[:, 1] - a[:, 1])[None] * (points[:, 0:1] - a[None, :, 0]))
        inside &= cross >= -1e-9
    return inside


def test_midas_example_count_and_file(tmp_path):
    g = hexagonal_grid(50.0, 2.5)
    assert len(g) == 3456
    assert set(np.unique(g.ud)) == {-1, 1}
    write_grid(g, tmp_path / "grid.txt")
    lines = (tmp_path / "grid.txt").read_text().splitlines()
    assert lines[0] == "3456" and len(lines) == 3457
    cols = np.array(lines[1].split(), dtype=float)
    h = np.sqrt(3) / 2 * 2.5
    assert sorted(cols[:2]) == pytest.approx([h / 3, 2 * h / 3], abs=1e-6)
    assert cols[4] == pytest.approx(1.25)
    # MIDAS order: rows from the most negative y; the first triangle of row -24 is a down
    # triangle at x = -N e + 24 e/2 + e/2 = -28.75, y = -24 H + 2H/3 (H = sqrt(3)/2 e)
    assert lines[1] == "1.443376 0.721688 -28.750000 -50.518149 1.250000"
    assert lines[2] == "0.721688 1.443376 -27.500000 -51.239836 1.250000"
    back = read_grid(tmp_path / "grid.txt")
    np.testing.assert_array_equal(back.ud, g.ud)
    np.testing.assert_allclose(back.x_um, g.x_um, atol=1e-6)
    np.testing.assert_allclose(back.y_um, g.y_um, atol=1e-6)
    assert back.edge_um == pytest.approx(2.5)


def test_triangles_tile_the_sample(rng):
    """Every point of the disc lies in exactly one triangle; triangles are equilateral with
    edge GridSize, their centroids at (x, y), and their total area is the hexagon's."""
    g = hexagonal_grid(20.0, 2.0)
    v = g.vertices_um()
    np.testing.assert_allclose(v.mean(axis=1), np.c_[g.x_um, g.y_um], atol=1e-12)
    for k in range(3):
        np.testing.assert_allclose(np.linalg.norm(v[:, k] - v[:, (k + 1) % 3], axis=1), 2.0)
    # counter-clockwise (positive area) and UD = apex direction
    area = 0.5 * ((v[:, 1, 0] - v[:, 0, 0]) * (v[:, 2, 1] - v[:, 0, 1])
                  - (v[:, 2, 0] - v[:, 0, 0]) * (v[:, 1, 1] - v[:, 0, 1]))
    np.testing.assert_allclose(area, np.sqrt(3) / 4 * 4.0)
    apex_up = v[:, :, 1].max(axis=1) - g.y_um > g.y_um - v[:, :, 1].min(axis=1)
    np.testing.assert_array_equal(np.where(apex_up, 1, -1), g.ud)
    r = 20.0 * np.sqrt(rng.uniform(0, 1, 4000))
    t = rng.uniform(0, 2 * np.pi, 4000)
    pts = np.c_[r * np.cos(t), r * np.sin(t)]
    hits = _point_in_polygons(pts, v).sum(axis=1)
    # points exactly on shared edges can count twice; random points essentially never are
    assert np.all(hits == 1)


def test_square_grid_and_masks(tmp_path):
    s = square_grid(10.0, 2.5)
    assert len(s) == 64 and s.kind == "square"
    v = s.vertices_um()
    assert v.shape == (64, 4, 2)
    with pytest.raises(ValueError, match="triangle grids only"):
        write_grid(s, tmp_path / "g.txt")
    g = hexagonal_grid(50.0, 2.5)
    m = apply_grid_mask(g, (-10, 20, -5, 5))
    assert len(m) > 0
    assert np.all((m.x_um >= -10) & (m.x_um <= 20) & (np.abs(m.y_um) <= 5))
    kept = (g.x_um >= -10) & (g.x_um <= 20) & (np.abs(g.y_um) <= 5)
    assert len(m) == kept.sum()
    with pytest.raises(ValueError, match="grid_mask_um"):
        apply_grid_mask(g, (1, 0, 0, 1))
    # tomography: a disc of radius 30 um on a 100 x 100 image of 1 um pixels
    yy, xx = np.mgrid[0:100, 0:100]
    xc, yc = xx + 0.5 - 50, yy + 0.5 - 50
    tomo = ((xc - 10) ** 2 + yc ** 2 < 30 ** 2).astype(np.float32)
    t = apply_tomo_mask(g, tomo, 1.0)
    d = np.hypot(t.x_um - 10, t.y_um)
    assert np.all(d < 31) and len(t) > 0.9 * np.sum(np.hypot(g.x_um - 10, g.y_um) < 29)
    with pytest.raises(ValueError, match="pixel_size_um"):
        apply_tomo_mask(g, tomo, 0.0)
    # the same slice from a TIFF file, rows along +y: an off-centre disc at y = +15 um
    import fabio.tifimage

    tomo_y = ((xc ** 2 + (yc - 15) ** 2) < 20 ** 2).astype(np.float32)
    fabio.tifimage.TifImage(data=tomo_y).write(str(tmp_path / "tomo.tif"))
    ty = apply_tomo_mask(g, tmp_path / "tomo.tif", 1.0)
    assert len(ty) > 0 and np.all(np.hypot(ty.x_um, ty.y_um - 15) < 21)


@pytest.mark.parametrize("text, pattern", [
    ("abc\n1 2 3 4 5\n", "number of grid points on the first line"),
    ("2\n1 2 3 4 5\n", r"expected 2 lines of 5 numbers"),
    ("1\n1 2 nan 4 5\n", "finite"),
    ("1\n1 2 3 4 x\n", "5 numbers per line"),
    ("99999999999\n1 2 3 4 5\n", "number of grid points"),
])
def test_crafted_grid_file_is_refused_naming_the_file(tmp_path, text, pattern):
    from xreduce.nf.grid import read_grid

    (tmp_path / "grid.txt").write_text(text)
    with pytest.raises(ValueError, match=pattern) as info:
        read_grid(tmp_path / "grid.txt")
    assert "grid.txt" in str(info.value)
