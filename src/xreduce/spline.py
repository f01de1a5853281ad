"""Fit2D spatial-distortion spline files: read, write, and turn into detector pixel corners.

Older CCD-based detectors (image intensifiers, FReLoN cameras) come with a "spline file": two
bicubic splines giving, at each point (x along the fast axis, y along the slow axis, in
pixels), the displacement dx, dy (pixels) between where the detector reports a point and
where it really is. The text format (Fit2D's) holds the valid region, the grid spacing and
pixel sizes (micrometres), then for X and Y the knot counts, the knots along x, along y and
the coefficients, in 14-character fields, 5 to a line.

A pixel corner at (row i, column j) is at ``pixel1 * (i + dy)``, ``pixel2 * (j + dx)`` metres
in the detector plane, with (dx, dy) the splines evaluated at (x=j, y=i): the convention of
the established tool, so a detector made from a spline file gives the same pixel positions.

Example
-------
>>> from xreduce.spline import read_spline, spline_detector   # doctest: +SKIP
>>> detector = spline_detector("frelon.spline")                # doctest: +SKIP
>>> detector.shape, detector.pixel1                            # doctest: +SKIP
((2048, 2048), 4.6e-05)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from xreduce.detectors import Detector

_FIELD = 14          # characters per number
_PER_LINE = 5
_DEGREE = 3          # bicubic
_MAX_EXTENT = 2**20  # pixels along one axis of a valid region (a million: no real detector)


@dataclass(frozen=True, eq=False)
class DistortionSpline:
    """The two displacement splines of a Fit2D spline file.

    Attributes
    ----------
    valid_region : (xmin, ymin, xmax, ymax), pixels
    grid_spacing : float
    pixel_size_um : (x, y)
        Pixel size along the fast (x) and slow (y) axes, micrometres.
    x_knots, y_knots : (knots along x, knots along y) of the X and Y displacement splines
    x_coefficients, y_coefficients : ndarray
    """

    valid_region: tuple
    grid_spacing: float
    pixel_size_um: tuple
    x_knots: tuple
    x_coefficients: np.ndarray
    y_knots: tuple
    y_coefficients: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the detector: the extent of the valid region."""
        xmin, ymin, xmax, ymax = self.valid_region
        return int(ymax - ymin), int(xmax - xmin)

    def displacement(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) in pixels on the grid of points ``x`` (fast axis) by ``y`` (slow axis).

        ``x`` and ``y`` are increasing 1D arrays of pixel coordinates; the results have shape
        (len(y), len(x)). Outside the knots the splines are continued by their edge values.
        """
        from scipy.interpolate import bisplev

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        dx = bisplev(x, y, (*self.x_knots, self.x_coefficients, _DEGREE, _DEGREE))
        dy = bisplev(x, y, (*self.y_knots, self.y_coefficients, _DEGREE, _DEGREE))
        return np.atleast_2d(dx).T, np.atleast_2d(dy).T


def read_spline(path: str | os.PathLike) -> DistortionSpline:
    """Read a Fit2D spline file.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A section is missing or malformed, a number not finite, the valid region empty or
        wider than 2**20 pixels, knots decreasing (the message names the file and the line).
    """
    path = os.fspath(path)
    with open(path, encoding="ascii", errors="replace") as handle:
        lines = [line.rstrip("\n\r") for line in handle]
    titles = {line.strip().upper(): n for n, line in enumerate(lines)}

    def numbers(n: int, count: int | None = None) -> list[float]:
        """The fixed-width numbers from line n on (a block ends at a blank line)."""
        values = []
        while n < len(lines) and lines[n].strip() and (count is None or len(values) < count):
            text = lines[n].rstrip()
            try:
                values += [float(text[k:k + _FIELD]) for k in range(0, len(text), _FIELD)]
            except ValueError:
                raise ValueError(f"{path}, line {n + 1}: expected numbers in {_FIELD}-character "
                                 f"fields, got {text!r}") from None
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{path}, line {n + 1}: expected finite numbers, got {text!r}")
            n += 1
        return values

    def section(title: str) -> int:
        if title not in titles:
            raise ValueError(f"{path}: not a spline file: no {title!r} section")
        return titles[title] + 1

    start = section("VALID REGION")
    region = numbers(start, 4)
    if len(region) < 4:
        raise ValueError(f"{path}, line {start + 1}: VALID REGION: expected 4 numbers")
    xmin, ymin, xmax, ymax = region[:4]
    if not (1 <= xmax - xmin < _MAX_EXTENT and 1 <= ymax - ymin < _MAX_EXTENT):
        raise ValueError(f"{path}, line {start + 1}: VALID REGION: expected xmin < xmax and "
                         f"ymin < ymax, each extent from 1 to {_MAX_EXTENT} pixels, got "
                         f"{region[:4]}")
    start = section("GRID SPACING, X-PIXEL SIZE, Y-PIXEL SIZE")
    grid = numbers(start, 3)
    if len(grid) < 3 or not grid[1] > 0 or not grid[2] > 0 or not grid[0] >= 0:
        raise ValueError(f"{path}, line {start + 1}: expected the grid spacing and two positive "
                         "pixel sizes (micrometres)")
    splines = []
    for title in ("X-DISTORTION", "Y-DISTORTION"):
        start = section(title)
        try:
            nx, ny = (int(v) for v in lines[start].split())
        except (IndexError, ValueError):
            raise ValueError(f"{path}, line {start + 1}: {title}: expected the two knot counts"
                             ) from None
        values = numbers(start + 1)
        ncoef = (nx - _DEGREE - 1) * (ny - _DEGREE - 1)
        if min(nx, ny) < 2 * (_DEGREE + 1) or len(values) != nx + ny + ncoef:
            raise ValueError(f"{path}, line {start + 1}: {title}: {nx} x {ny} knots need "
                             f"{nx + ny + ncoef} numbers, found {len(values)}")
        for knots in (values[:nx], values[nx:nx + ny]):
            if np.any(np.diff(knots) < 0):
                raise ValueError(f"{path}, line {start + 2}: {title}: knots must not decrease")
        splines.append(((np.array(values[:nx]), np.array(values[nx:nx + ny])),
                        np.array(values[nx + ny:])))
    return DistortionSpline(valid_region=tuple(region[:4]), grid_spacing=grid[0],
                            pixel_size_um=(grid[1], grid[2]), x_knots=splines[0][0],
                            x_coefficients=splines[0][1], y_knots=splines[1][0],
                            y_coefficients=splines[1][1])


def write_spline(path: str | os.PathLike, spline: DistortionSpline) -> None:
    """Write ``spline`` as a Fit2D spline file (written to a temporary name, then renamed)."""
    from xreduce.io.writers import atomic_output

    def block(values) -> list[str]:
        text = [f"{float(v):{_FIELD}.7E}" for v in values]
        return ["".join(text[k:k + _PER_LINE]) for k in range(0, len(text), _PER_LINE)]

    out = ["SPATIAL DISTORTION SPLINE INTERPOLATION COEFFICIENTS", "", "  VALID REGION",
           *block(spline.valid_region), "", "  GRID SPACING, X-PIXEL SIZE, Y-PIXEL SIZE",
           *block((spline.grid_spacing, *spline.pixel_size_um)), ""]
    for title, (kx, ky), coefficients in (
            ("X-DISTORTION", spline.x_knots, spline.x_coefficients),
            ("Y-DISTORTION", spline.y_knots, spline.y_coefficients)):
        out += [f"  {title}", f"{len(kx):6d}{len(ky):6d}", *block(kx), *block(ky),
                *block(coefficients), ""]
    with atomic_output(path) as tmp, open(tmp, "w", encoding="ascii") as handle:
        handle.write("\n".join(out) + "\n")


def spline_detector(spline: DistortionSpline | str | os.PathLike,
                    shape: tuple[int, int] | None = None, mask=None,
                    name: str | None = None) -> Detector:
    """A :class:`~xreduce.detectors.Detector` whose pixel corners follow a distortion spline.

    Parameters
    ----------
    spline : DistortionSpline or path of a spline file
    shape : (rows, cols), optional
        Default: the extent of the spline's valid region.
    mask : array of ``shape``, optional
    name : str, optional

    Returns
    -------
    Detector
        Pixel sizes from the spline file (micrometres -> metres), explicit corners (flat:
        height 0) displaced by the splines.
    """
    from xreduce.limits import check_allocation

    if not isinstance(spline, DistortionSpline):
        spline = read_spline(spline)
    rows, cols = spline.shape if shape is None else (int(shape[0]), int(shape[1]))
    if rows <= 0 or cols <= 0:
        raise ValueError(f"shape: expected positive (rows, cols), got {(rows, cols)}")
    # corners (rows, cols, 4, 3) float64, and the Detector's copy of them
    check_allocation(2 * rows * cols * 4 * 3 * 8, "shape" if shape is not None else
                     "spline valid region", f"{rows} x {cols} pixels of 4 float64 corners")
    pixel1, pixel2 = spline.pixel_size_um[1] / 1e6, spline.pixel_size_um[0] / 1e6
    x = np.arange(cols + 1, dtype=np.float64)
    y = np.arange(rows + 1, dtype=np.float64)
    dx, dy = spline.displacement(x, y)
    p1 = pixel1 * (y[:, None] + dy)          # (rows + 1, cols + 1) corner grid, metres
    p2 = pixel2 * (x[None, :] + dx)
    corners = np.zeros((rows, cols, 4, 3))
    for k, (o1, o2) in enumerate(((0, 0), (1, 0), (1, 1), (0, 1))):
        corners[:, :, k, 0] = p1[o1:rows + o1, o2:cols + o2]
        corners[:, :, k, 1] = p2[o1:rows + o1, o2:cols + o2]
    return Detector(pixel1, pixel2, (rows, cols), mask=mask, corners=corners, name=name)
