"""Reconstruction grids for NF-HEDM: MIDAS's hexagonal triangle grid, square grids, masks.

The triangle grid (as MIDAS's MakeHexGrid): ``GridSize`` is the triangle edge ``e``; rows of
height ``H = sqrt(3)/2 e`` are stacked from y = 0 outwards, ``N = ceil(2 Rsample / (sqrt(3) e))``
rows on each side, row ``i`` holding ``2 (2N - |i|) + 1`` triangles that alternate down
(UD = -1, apex towards -y) and up (UD = +1), starting with a down triangle. The triangles tile a
hexagon that contains the disc of radius ``Rsample``; Rsample 50, GridSize 2.5 gives 3456.

``grid.txt`` (MIDAS): first line the number of points, then one line per triangle with five
numbers: the distance from the centroid to the row edge farther from y = 0, the distance to the
row edge nearer to y = 0 (``H/3`` and ``2H/3`` in some order; together with the sign of y they
give UD), the centroid x and y (micrometres), and half the triangle edge.

Example
-------
>>> g = hexagonal_grid(50.0, 2.5)
>>> len(g), g.kind
(3456, 'triangle')
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from xreduce.limits import check_allocation

__all__ = ["Grid", "hexagonal_grid", "square_grid", "read_grid", "write_grid",
           "apply_grid_mask", "apply_tomo_mask", "grid_from_parameters"]

_SQ3 = np.sqrt(3.0)


@dataclass(frozen=True)
class Grid:
    """Voxels of a 2D reconstruction grid (sample frame, micrometres).

    Attributes
    ----------
    x_um, y_um : float (n,)
        Voxel centroids.
    ud : int8 (n,)
        +1 up triangle, -1 down triangle, 0 for square voxels.
    edge_um : float
        Triangle edge (or square side): the footprint drawn on the detector.
    kind : str
        ``"triangle"`` or ``"square"``.
    """

    x_um: np.ndarray
    y_um: np.ndarray
    ud: np.ndarray
    edge_um: float
    kind: str = "triangle"

    def __post_init__(self):
        if self.kind not in ("triangle", "square"):
            raise ValueError(f"kind: expected 'triangle' or 'square', got {self.kind!r}")
        n = len(self.x_um)
        if len(self.y_um) != n or len(self.ud) != n:
            raise ValueError(f"x_um, y_um, ud: expected equal lengths, got {n}, "
                             f"{len(self.y_um)}, {len(self.ud)}")
        if not self.edge_um > 0:
            raise ValueError(f"edge_um: expected > 0, got {self.edge_um}")

    def __len__(self) -> int:
        return len(self.x_um)

    @property
    def n_vertices(self) -> int:
        return 3 if self.kind == "triangle" else 4

    def vertices_um(self) -> np.ndarray:
        """Voxel corners, shape (n, 3, 2) for triangles or (n, 4, 2) for squares, as (x, y),
        counter-clockwise."""
        x, y, e = self.x_um, self.y_um, self.edge_um
        if self.kind == "square":
            h = e / 2
            offs = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
            return np.stack([x, y], axis=-1)[:, None, :] + offs[None]
        height = _SQ3 / 2 * e
        s = self.ud.astype(np.float64)  # +1 apex at +y
        verts = np.empty((len(self), 3, 2))
        # counter-clockwise for up triangles; for down ones the base order flips
        verts[:, 0, 0] = x - s * e / 2
        verts[:, 0, 1] = y - s * height / 3
        verts[:, 1, 0] = x + s * e / 2
        verts[:, 1, 1] = y - s * height / 3
        verts[:, 2, 0] = x
        verts[:, 2, 1] = y + s * 2 * height / 3
        return verts

    def select(self, keep) -> "Grid":
        """The voxels where ``keep`` (bool mask or indices) selects."""
        return replace(self, x_um=self.x_um[keep], y_um=self.y_um[keep], ud=self.ud[keep])


def hexagonal_grid(rsample_um: float, grid_size_um: float,
                   edge_length_um: float | None = None) -> Grid:
    """MIDAS's hexagonal grid of triangles covering a sample of radius ``rsample_um``.

    Parameters
    ----------
    rsample_um : float
        Sample radius (MIDAS ``Rsample``).
    grid_size_um : float
        Triangle edge and grid spacing (``GridSize``).
    edge_length_um : float, optional
        Edge of the triangle drawn on the detector (``EdgeLength``), default ``grid_size_um``.

    Returns
    -------
    Grid

    Example
    -------
    >>> len(hexagonal_grid(50.0, 2.5))
    3456
    """
    r, gs = float(rsample_um), float(grid_size_um)
    if not r > 0:
        raise ValueError(f"rsample_um: expected > 0, got {rsample_um}")
    if not gs > 0:
        raise ValueError(f"grid_size_um: expected > 0, got {grid_size_um}")
    edge = gs if edge_length_um is None else float(edge_length_um)
    if not (np.isfinite(r) and np.isfinite(gs)):
        raise ValueError(f"rsample_um, grid_size_um: expected finite numbers, got {r}, {gs}")
    n_hex = int(np.ceil(2 * r / (_SQ3 * gs) - 1e-12))
    # 2 n rows of up to 4 n + 1 triangles; x, y (float64) and ud (int8), built in pieces
    check_allocation(2 * n_hex * (4 * n_hex + 1) * 17 * 2, "rsample_um (Rsample), "
                     "grid_size_um (GridSize)", f"a grid of about {8 * n_hex ** 2} triangles")
    height = _SQ3 / 2 * gs
    xs, ys, uds = [], [], []
    for i in list(range(-n_hex, 0)) + list(range(1, n_hex + 1)):
        count = 2 * (2 * n_hex - abs(i)) + 1
        j = np.arange(count)
        x0 = -n_hex * gs + abs(i) * gs / 2 + (gs / 2 if i < 0 else 0.0)
        ud = np.where(j % 2 == 0, -1, 1)  # starts with a down triangle
        # row i > 0 spans [H(i-1), H i]; row i < 0 spans [H i, H(i+1)]
        bottom = height * (i - 1) if i > 0 else height * i
        y = np.where(ud > 0, bottom + height / 3, bottom + 2 * height / 3)
        xs.append(x0 + j * gs / 2)
        ys.append(y)
        uds.append(ud)
    return Grid(np.concatenate(xs), np.concatenate(ys), np.concatenate(uds).astype(np.int8),
                edge, "triangle")


def square_grid(rsample_um: float, grid_size_um: float) -> Grid:
    """Square voxels of side ``grid_size_um`` covering the square [-R, R]^2, centred on 0.

    Example
    -------
    >>> len(square_grid(10.0, 5.0))
    16
    """
    r, gs = float(rsample_um), float(grid_size_um)
    if not r > 0 or not gs > 0:
        raise ValueError(f"rsample_um, grid_size_um: expected > 0, got {rsample_um}, "
                         f"{grid_size_um}")
    n = int(np.ceil(r / gs - 1e-12))
    c = (np.arange(-n, n) + 0.5) * gs
    x, y = np.meshgrid(c, c, indexing="xy")
    return Grid(x.ravel(), y.ravel(), np.zeros(x.size, np.int8), gs, "square")


def write_grid(grid: Grid, path: str | os.PathLike) -> None:
    """Write a triangle grid as MIDAS ``grid.txt`` (atomically: ``atomic_output``)."""
    if grid.kind != "triangle":
        raise ValueError("grid: grid.txt holds triangle grids only, got a square grid")
    height = _SQ3 / 2 * grid.edge_um
    sign_y = np.where(grid.y_um >= 0, 1.0, -1.0)
    # distance to the outer row edge: 2H/3 when the apex points inward (towards y = 0)
    inward_apex = (grid.ud * sign_y) < 0
    outer = np.where(inward_apex, height / 3, 2 * height / 3)
    inner = height - outer
    from xreduce.io.writers import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", encoding="ascii") as f:
        f.write(f"{len(grid)}\n")
        for row in zip(outer, inner, grid.x_um, grid.y_um):
            f.write("%f %f %f %f %f\n" % (*row, grid.edge_um / 2))


def read_grid(path: str | os.PathLike) -> Grid:
    """Read a MIDAS ``grid.txt`` (ours or MakeHexGrid's) into a triangle :class:`Grid`."""
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().split()
            count = int(first[0])
            if not 1 <= count <= 2**31 - 1:
                raise ValueError
            check_allocation(count * 5 * 8 * 4, "path", f"{count} grid points")
            data = np.loadtxt(f, ndmin=2, dtype=np.float64)
    except UnicodeDecodeError:
        raise ValueError(f"{name}: grid file is not UTF-8 text") from None
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{name}: expected the number of grid points on the first line, then "
                         f"5 numbers per line ({exc})") from None
    if data.shape != (count, 5):
        raise ValueError(f"{name}: expected {count} lines of 5 numbers after the header, got "
                         f"array of shape {data.shape}")
    if not np.isfinite(data).all() or not (data[:, 4] > 0).all():
        raise ValueError(f"{name}: grid values must be finite with a positive half edge")
    outer, inner, x, y, half_edge = data.T
    sign_y = np.where(y >= 0, 1, -1)
    ud = np.where(outer > inner, 1, -1) * sign_y
    edge = 2 * float(np.median(half_edge))
    return Grid(x, y, ud.astype(np.int8), edge, "triangle")


def apply_grid_mask(grid: Grid, grid_mask_um) -> Grid:
    """Keep voxels whose centroid lies in ``GridMask`` = (xmin, xmax, ymin, ymax), um."""
    m = np.asarray(grid_mask_um, dtype=np.float64)
    if m.shape != (4,) or not (m[1] > m[0] and m[3] > m[2]):
        raise ValueError(f"grid_mask_um: expected (xmin, xmax, ymin, ymax) with max > min, "
                         f"got {grid_mask_um}")
    keep = (grid.x_um >= m[0]) & (grid.x_um <= m[1]) & (grid.y_um >= m[2]) & (grid.y_um <= m[3])
    return grid.select(keep)


def apply_tomo_mask(grid: Grid, image, pixel_size_um: float, threshold: float = 0.0) -> Grid:
    """Keep voxels whose centroid falls on a tomography pixel above ``threshold``.

    Parameters
    ----------
    grid : Grid
    image : 2D array or path
        Reconstructed tomography slice (any fabio-readable file), centred on the rotation axis:
        pixel (row, col) covers ``x = (col + 0.5 - ncols / 2) * pixel_size_um`` and
        ``y = (row + 0.5 - nrows / 2) * pixel_size_um`` (rows along sample +y).
    pixel_size_um : float
        Tomography pixel size (MIDAS ``TomoPixelSize``).
    threshold : float
        Pixels above it are sample. Centroids off the image are dropped.
    """
    if isinstance(image, (str, os.PathLike)):
        import fabio

        image = fabio.open(os.fspath(image)).data
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"image: expected a 2D tomography slice, got shape {img.shape}")
    ps = float(pixel_size_um)
    if not ps > 0:
        raise ValueError(f"pixel_size_um: expected > 0, got {pixel_size_um}")
    rows, cols = img.shape
    col = np.floor(grid.x_um / ps + cols / 2).astype(np.int64)
    row = np.floor(grid.y_um / ps + rows / 2).astype(np.int64)
    inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    keep = np.zeros(len(grid), dtype=bool)
    keep[inside] = img[row[inside], col[inside]] > threshold
    return grid.select(keep)


def grid_from_parameters(params) -> Grid:
    """The grid a MIDAS parameter set describes: ``GridFileName`` if it names an existing file,
    else the hexagonal grid of ``Rsample``, ``GridSize`` (and ``EdgeLength``); then
    ``GridMask`` and ``TomoImage``/``TomoPixelSize`` when given."""
    grid_file = params.grid_file_name
    if grid_file and params.data_directory and not os.path.isabs(grid_file):
        grid_file = os.path.join(params.output_directory or params.data_directory, grid_file)
    if grid_file and os.path.isfile(grid_file):
        grid = read_grid(grid_file)
    else:
        if params.rsample_um is None or params.grid_size_um is None:
            raise ValueError("params: keys 'Rsample' and 'GridSize' are needed to make a grid")
        grid = hexagonal_grid(params.rsample_um, params.grid_size_um, params.edge_length_um)
    if params.grid_mask_um is not None:
        grid = apply_grid_mask(grid, params.grid_mask_um)
    if params.tomo_image is not None:
        if params.tomo_pixel_size_um is None:
            raise ValueError("params: 'TomoImage' needs 'TomoPixelSize'")
        grid = apply_tomo_mask(grid, params.tomo_image, params.tomo_pixel_size_um)
    return grid
