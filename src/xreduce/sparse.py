"""Sparse pixel-splitting matrices: which fraction of each pixel falls in each bin.

The matrix has one row per bin (1D radial, or 2D radial x azimuthal in azimuth-major order:
``bin = i_azim * npt_rad + i_rad``) and one column per pixel of the flattened frame. An
integration is then a sparse product with the frame. Four splitting schemes:

- ``"no"``: each pixel centre goes whole to one bin (compact: no coefficients stored);
- ``"bbox"``: the pixel's bounding box in (radial, chi) is spread uniformly over the bins it
  covers;
- ``"pseudo"``: as bbox, with the box shrunk about its centre to the pixel's area;
- ``"full"``: the pixel polygon (quadrilateral; hexagon for hexagonal pixels) is split
  exactly by area (polygon clipping);
- ``"bbox_pyfai"``: bbox with pyFAI's box, centre +- the largest corner deviation (symmetric,
  slightly wider than the true box; doc/integration.md), for bin-for-bin comparisons with
  pyFAI. Built from a geometry only (:func:`build_csr`).

Example
-------
>>> import numpy as np
>>> from xreduce.sparse import build_csr_from_arrays
>>> corners = np.array([[[0.0, 0.1], [1.0, 0.1], [1.0, 0.2], [0.0, 0.2]]])  # one pixel
>>> m = build_csr_from_arrays(corners, None, 4, split="full", radial_range=(0.0, 2.0))
>>> m.data.tolist()
[0.5, 0.5]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from xreduce.ext import csr_builder

SPLITS = ("no", "bbox", "pseudo", "full")
PYFAI_BBOX = "bbox_pyfai"
# The upper edge of a default range is nudged up by one float32 epsilon (relative), as the
# established tool does, so that the largest value falls inside the last bin.
_EPS32 = 1.0 + float(np.finfo(np.float32).eps)


@dataclass(frozen=True, eq=False)
class CsrMatrix:
    """A pixel-splitting matrix in CSR form (rows = bins, columns = pixels).

    Attributes
    ----------
    indptr : ndarray int32, (nbins + 1,)
    indices : ndarray int32
        Pixel index in the flattened frame; sorted within each row.
    data : ndarray float32 (or float64 on request), or None
        Fraction of the pixel in the bin; None for the compact no-split matrix (all ones).
    radial_edges : ndarray float64, (npt_rad + 1,)
        Bin edges in the radial unit.
    azimuthal_edges : ndarray float64, (npt_azim + 1,), or None
        Bin edges in radians; None for a 1D matrix.
    shape : tuple (nbins, npix)
    split : str
    unit : str
        Name of the radial unit.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray | None
    radial_edges: np.ndarray
    azimuthal_edges: np.ndarray | None
    shape: tuple[int, int]
    split: str
    unit: str

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.indices.size)

    @property
    def nbytes(self) -> int:
        """Memory held by indptr, indices and data, in bytes."""
        data_bytes = 0 if self.data is None else self.data.nbytes
        return self.indptr.nbytes + self.indices.nbytes + data_bytes

    def to_scipy(self):
        """The matrix as a ``scipy.sparse.csr_matrix`` (ones where ``data`` is None)."""
        from scipy.sparse import csr_matrix

        data = self.data if self.data is not None else np.ones(self.nnz, dtype=np.float32)
        return csr_matrix((data, self.indices, self.indptr), shape=self.shape)


def _check_npt(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _check_range(name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with low < high, got {value!r}")
    return lo, hi


def _center_columns(centers: Any) -> tuple[np.ndarray, np.ndarray]:
    """Radial and chi columns (1D float64, views where possible) of (npix, 2) centres or of a
    pair (radial, chi) of arrays."""
    if centers is None:
        raise ValueError("centers are needed for split='no', got None")
    if isinstance(centers, (tuple, list)):
        if len(centers) != 2:
            raise ValueError(f"centers as a pair must be (radial, chi), got {len(centers)} items")
        radial, chi = (np.asarray(c, dtype=np.float64).reshape(-1) for c in centers)
        if radial.shape != chi.shape:
            raise ValueError(
                f"centers: radial and chi differ in size, {radial.size} and {chi.size}")
        return radial, chi
    centers = np.asarray(centers, dtype=np.float64)
    if centers.shape[-1:] != (2,):
        raise ValueError(f"centers must have shape (npix, 2), got {centers.shape}")
    centers = centers.reshape(-1, 2)
    return centers[:, 0], centers[:, 1]


def _default_upper(vmax: float) -> float:
    if vmax > 0:
        return vmax * _EPS32
    if vmax < 0:
        return vmax / _EPS32
    return float(np.finfo(np.float32).eps)


def build_csr_from_arrays(
    corners: np.ndarray | None,
    centers: np.ndarray | None,
    npt_rad: int,
    npt_azim: int | None = None,
    split: str = "bbox",
    radial_range: tuple[float, float] | None = None,
    azimuth_range_rad: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
    chi_discontinuity_at_pi: bool = True,
    *,
    unit: str = "",
    dtype: Any = np.float32,
    compact: bool = True,
    num_threads: int = 0,
    radial_bounds: np.ndarray | None = None,
) -> CsrMatrix:
    """Build a pixel-splitting matrix from per-pixel positions.

    Parameters
    ----------
    corners : ndarray (npix, k, 2) or (rows, cols, k, 2), or None
        ``[..., 0]`` radial value (in the unit) and ``[..., 1]`` chi (radians, (-pi, pi]) at the
        k corners of each pixel, going round it (k = 4, or 6 for hexagonal pixels; 3 to 8).
        Needed unless ``split == "no"``.
    centers : ndarray (npix, 2) or (rows, cols, 2), or a pair (radial, chi) of arrays, or None
        Radial value and chi (radians) at each pixel centre. Needed for ``split == "no"``.
    npt_rad : int
        Number of radial bins.
    npt_azim : int or None
        Number of azimuthal bins; None for a 1D (radial) matrix.
    split : {"no", "bbox", "pseudo", "full"}
    radial_range : (float, float) or None
        In the radial unit. Default: min..max over the unmasked pixel corners (centres for "no"),
        the top nudged up so the maximum is inside. Parts of pixels outside are dropped.
    azimuth_range_rad : (float, float) or None
        In radians, inside (-pi, pi] (or [0, 2 pi) without the discontinuity at pi). Default:
        the full circle.
    mask : ndarray (npix,) or frame-shaped, or None
        Non-zero pixels are left out.
    chi_discontinuity_at_pi : bool
        True: chi runs over (-pi, pi]; False: over [0, 2 pi).
    unit : str
        Name of the radial unit, recorded in the result.
    dtype : float32 or float64
        Type of the coefficients (they are computed in float64).
    compact : bool
        For ``split == "no"``: store no coefficients (``data`` None). False stores ones.
    num_threads : int
        OpenMP threads; 0 for the OpenMP default.
    radial_bounds : ndarray (npix, 2) or (rows, cols, 2), or None
        Each pixel's radial (min, max) over its corners (NaN for a pixel to leave out), as
        :meth:`xreduce.geometry.Geometry.radial_bounds` gives. Used, instead of `corners`
        (which may then be None), by the 1D bbox split over the full circle; ignored otherwise.

    Returns
    -------
    CsrMatrix

    Example
    -------
    >>> import numpy as np
    >>> centers = np.array([[0.5, 0.0], [1.5, 0.0], [1.6, 0.0]])
    >>> m = build_csr_from_arrays(None, centers, 2, split="no", radial_range=(0, 2))
    >>> m.indptr.tolist(), m.indices.tolist(), m.data
    ([0, 1, 3], [0, 1, 2], None)
    """
    if not isinstance(split, str) or split.lower() not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    split = split.lower()
    npt_rad = _check_npt("npt_rad", npt_rad)
    npt_azim = None if npt_azim is None else _check_npt("npt_azim", npt_azim)
    radial_range = _check_range("radial_range", radial_range)
    azimuth_range_rad = _check_range("azimuth_range", azimuth_range_rad)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")

    if npt_azim is None and azimuth_range_rad is None and split == "bbox" \
            and radial_bounds is not None:
        corners = centers = None
        radial_bounds = np.ascontiguousarray(radial_bounds, dtype=np.float64)
        if radial_bounds.shape[-1:] != (2,):
            raise ValueError("radial_bounds must have shape (npix, 2), got "
                             f"{radial_bounds.shape}")
        radial_bounds = radial_bounds.reshape(-1, 2)
        points_radial = points_chi = radial_bounds
    elif split == "no":
        radial_bounds = None
        radial, chi = _center_columns(centers)
        corners, centers = None, (radial, chi)
        points_radial, points_chi = radial[:, None], chi[:, None]
    else:
        radial_bounds = None
        if corners is None:
            raise ValueError(f"corners are needed for split={split!r}, got None")
        corners = np.ascontiguousarray(corners, dtype=np.float64)
        if corners.ndim < 3:
            raise ValueError(f"corners must have shape (npix, k, 2), got {corners.shape}")
        corners = corners.reshape((-1,) + corners.shape[-2:])
        csr_builder.check_corner_shape(corners)
        centers = None
        points_radial, points_chi = corners[:, :, 0], corners[:, :, 1]
    npix = points_radial.shape[0]
    if npix >= 2**31:
        raise ValueError(f"at most 2**31 - 1 pixels are supported, got {npix}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.size != npix:
            raise ValueError(
                f"mask must have {npix} elements (one per pixel), got shape {mask.shape}")
        mask = np.ascontiguousarray(mask.reshape(-1) != 0, dtype=np.uint8)

    chi_lo = -np.pi if chi_discontinuity_at_pi else 0.0
    if azimuth_range_rad is None:
        a0, a1 = chi_lo, chi_lo + 2 * np.pi
    else:
        a0, a1 = azimuth_range_rad
        tol = 1e-12
        if a0 < chi_lo - tol or a1 > chi_lo + 2 * np.pi + tol:
            span = "[-180, 180]" if chi_discontinuity_at_pi else "[0, 360]"
            raise ValueError(
                f"azimuth_range must lie inside {span} degrees, got "
                f"({np.rad2deg(a0):g}, {np.rad2deg(a1):g})")
        a0, a1 = max(a0, chi_lo), min(a1, chi_lo + 2 * np.pi)
    full_circle = a1 - a0 >= 2 * np.pi

    if npt_azim is None:
        na, azim_clip, azimuthal_edges = 1, not full_circle, None
    else:
        na, azim_clip = npt_azim, True
        azimuthal_edges = np.linspace(a0, a1, npt_azim + 1)

    # 1D bbox over the full circle: one pass over the corners gives each pixel's radial extent
    # (what the build reads) and the default range.
    bounds = radial_bounds
    if bounds is not None:
        if radial_range is None:
            rmin, rmax, nvalid = csr_builder.bounds_extent(bounds, mask, num_threads)
    elif split == "bbox" and not azim_clip:
        bounds, rmin, rmax, nvalid = csr_builder.radial_bounds(corners, mask, num_threads)
    elif radial_range is None:
        rmin, rmax, nvalid = csr_builder.valid_extent(points_radial, points_chi, mask,
                                                       num_threads)
    if radial_range is None:
        if nvalid == 0:
            raise ValueError("no valid pixel: every pixel is masked or has non-finite positions")
        r0, r1 = rmin, _default_upper(rmax)
    else:
        r0, r1 = radial_range

    data_dtype = None if (split == "no" and compact) else dtype
    indptr, indices, data = csr_builder.build(
        corners, centers, mask, split, npt_rad, r0, r1, na, a0, a1, azim_clip, chi_lo,
        data_dtype, num_threads, bounds=bounds)
    return CsrMatrix(
        indptr=indptr,
        indices=indices,
        data=data,
        radial_edges=np.linspace(r0, r1, npt_rad + 1),
        azimuthal_edges=azimuthal_edges,
        shape=(npt_rad * na, npix),
        split=split,
        unit=str(getattr(unit, "name", unit)),
    )


def build_csr(
    geometry_or_arrays: Any,
    npt_rad: int,
    npt_azim: int | None = None,
    unit: Any = "2th_deg",
    split: str = "bbox",
    radial_range: tuple[float, float] | None = None,
    azimuth_range: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
    *,
    chi_discontinuity_at_pi: bool = True,
    dtype: Any = np.float32,
    compact: bool = True,
    num_threads: int = 0,
) -> CsrMatrix:
    """Build the pixel-splitting matrix of a geometry.

    Parameters
    ----------
    geometry_or_arrays : Geometry or (corners, centers)
        A ``xreduce.geometry.Geometry`` (its corner, centre and chi arrays in `unit`, and its
        detector mask, are used), or a pair of arrays as in :func:`build_csr_from_arrays`
        (``centers`` may be None unless ``split == "no"``), already in `unit`.
    npt_rad : int
        Number of radial bins.
    npt_azim : int or None
        Number of azimuthal bins; None for a 1D matrix.
    unit : str or Unit
        Radial unit, e.g. "2th_deg", "q_nm^-1".
    split : {"no", "bbox", "pseudo", "full", "bbox_pyfai"}
    radial_range : (float, float) or None
        In `unit`.
    azimuth_range : (float, float) or None
        In degrees, inside [-180, 180] ([0, 360] without the discontinuity at pi).
    mask : ndarray or None
        Frame-shaped; non-zero pixels are left out, in addition to the detector mask.
    chi_discontinuity_at_pi, dtype, compact, num_threads
        See :func:`build_csr_from_arrays`.

    Returns
    -------
    CsrMatrix

    Example
    -------
    >>> from xreduce.detectors import Detector
    >>> from xreduce.geometry import Geometry
    >>> geometry = Geometry(0.1, 0.01, 0.01, 0, 0, 0, 1e-10, Detector(1e-4, 1e-4, (200, 200)))
    >>> m = build_csr(geometry, 100, unit="2th_deg", split="full")
    >>> m.shape, round(float(m.data.sum()))
    ((100, 40000), 40000)
    """
    split_name = split.lower() if isinstance(split, str) else split
    if split_name == PYFAI_BBOX:
        if not hasattr(geometry_or_arrays, "corner_array"):
            raise ValueError(f"split={PYFAI_BBOX!r} needs a Geometry, got "
                             f"{type(geometry_or_arrays).__name__}")
        return _build_pyfai_bbox(geometry_or_arrays, npt_rad, npt_azim, unit, radial_range,
                                 azimuth_range, mask, chi_discontinuity_at_pi, dtype,
                                 num_threads)
    if hasattr(geometry_or_arrays, "corner_array"):
        geometry = geometry_or_arrays
        corners = centers = radial_bounds = None
        if split_name == "no":
            centers = (geometry.center_array(unit), geometry.chi_array())
        elif split_name == "bbox" and npt_azim is None and azimuth_range is None:
            radial_bounds = geometry.radial_bounds(unit)    # all that a 1D bbox reads
        else:
            corners = geometry.corner_array(unit)
        detector_mask = getattr(geometry.detector, "mask", None)
        if detector_mask is not None:
            if mask is not None:
                mask = np.asarray(mask)
                if mask.shape != detector_mask.shape:
                    raise ValueError(f"mask must have the detector shape {detector_mask.shape}, "
                                     f"got {mask.shape}")
                mask = (mask != 0) | (detector_mask != 0)
            else:
                mask = detector_mask
    else:
        radial_bounds = None
        try:
            corners, centers = geometry_or_arrays
        except (TypeError, ValueError):
            raise TypeError("geometry_or_arrays must be a Geometry or a pair (corners, centers), "
                            f"got {type(geometry_or_arrays).__name__}") from None
    azimuth_range = _check_range("azimuth_range", azimuth_range)
    azimuth_range_rad = None if azimuth_range is None else tuple(np.deg2rad(azimuth_range))
    return build_csr_from_arrays(
        corners, centers, npt_rad, npt_azim, split, radial_range, azimuth_range_rad, mask,
        chi_discontinuity_at_pi, unit=unit, dtype=dtype, compact=compact,
        num_threads=num_threads, radial_bounds=radial_bounds)


def _build_pyfai_bbox(geometry, npt_rad, npt_azim, unit, radial_range, azimuth_range, mask,
                      chi_discontinuity_at_pi, dtype, num_threads) -> CsrMatrix:
    """The ``"bbox_pyfai"`` matrix: the bbox build of pyFAI's boxes (:func:`pyfai_bbox_corners`).

    The compiled builder takes a box whose chi span exceeds pi for one that straddles the
    seam; a pyFAI box that wide (pixels next to the beam centre) is really that wide, so those
    few pixels are left to NumPy here: their coefficients are the fractions of the box in
    each radial and each azimuthal bin, multiplied.
    """
    chi_range = None
    if npt_azim is not None or azimuth_range is not None:
        lo_deg, hi_deg = _check_range("azimuth_range", azimuth_range) or \
            ((-180.0, 180.0) if chi_discontinuity_at_pi else (0.0, 360.0))
        chi_range = (float(np.deg2rad(lo_deg)), float(np.deg2rad(hi_deg)))
    invalid = np.asarray(geometry.detector.mask) != 0
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != invalid.shape:
            raise ValueError(f"mask must have the detector shape {invalid.shape}, "
                             f"got {mask.shape}")
        invalid = invalid | (mask != 0)
    if chi_range is None:                  # 1D over the full circle: the radial box is all
        centre = np.asarray(geometry.center_array(unit))
        delta = np.asarray(geometry.delta_array(unit))
        bounds = np.stack([np.maximum(centre - delta, 0.0), centre + delta], axis=-1)
        matrix = build_csr_from_arrays(
            None, None, npt_rad, None, "bbox", radial_range, None, invalid,
            chi_discontinuity_at_pi, unit=unit, dtype=dtype, num_threads=num_threads,
            radial_bounds=bounds)
        return dataclasses.replace(matrix, split=PYFAI_BBOX)
    corners = pyfai_bbox_corners(geometry, unit, chi_range)
    invalid = invalid | np.isnan(corners[..., 0, 1])      # boxes that miss the range
    lo, hi = corners[..., 0, 0], corners[..., 1, 0]
    if radial_range is None:
        ok = ~invalid & np.isfinite(lo) & np.isfinite(hi)
        if not ok.any():
            raise ValueError("no valid pixel: every pixel is masked or has non-finite positions")
        radial_range = (float(lo[ok].min()), _default_upper(float(hi[ok].max())))
    wide = ~invalid & (corners[..., 2, 1] - corners[..., 0, 1] > np.pi)
    matrix = build_csr_from_arrays(
        corners, None, npt_rad, npt_azim, "bbox", radial_range, chi_range, invalid | wide,
        chi_discontinuity_at_pi, unit=unit, dtype=dtype, num_threads=num_threads)
    if wide.any():
        matrix = _add_wide_boxes(matrix, corners.reshape(-1, 4, 2), np.flatnonzero(wide),
                                 npt_rad, npt_azim)
    return dataclasses.replace(matrix, split=PYFAI_BBOX)


def _box_fractions(lo: float, hi: float, edges: np.ndarray) -> np.ndarray:
    """Fraction of [lo, hi] in each bin of ``edges`` (a zero-width box: its bin gets 1)."""
    if hi > lo:
        return np.clip(np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1]), 0, None) \
            / (hi - lo)
    out = np.zeros(len(edges) - 1)
    if edges[0] <= lo < edges[-1]:
        out[np.searchsorted(edges, lo, side="right") - 1] = 1.0
    return out


def _add_wide_boxes(matrix: CsrMatrix, boxes: np.ndarray, pixels: np.ndarray, npt_rad: int,
                    npt_azim: int | None) -> CsrMatrix:
    """``matrix`` with the columns of ``pixels`` (boxes wider than pi in chi) added."""
    from scipy.sparse import csr_matrix

    rad_edges = matrix.radial_edges
    azi_edges = matrix.azimuthal_edges
    if azi_edges is None:                                   # a 1D sector: one chi "bin"
        azi_edges = np.array([-np.inf, np.inf])
    rows, cols, values = [], [], []
    for pixel in pixels:
        box = boxes[pixel]
        fr = _box_fractions(box[0, 0], box[1, 0], rad_edges)
        fa = _box_fractions(box[0, 1], box[2, 1], azi_edges) if npt_azim is not None \
            else np.ones(1)
        weights = np.outer(fa, fr).ravel()
        hit = np.flatnonzero(weights)
        rows.append(hit)
        cols.append(np.full(hit.size, pixel))
        values.append(weights[hit])
    extra = csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                       shape=matrix.shape)
    data = matrix.data if matrix.data is not None else np.ones(len(matrix.indices))
    total = csr_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape) + extra
    total.sort_indices()
    dtype = matrix.data.dtype if matrix.data is not None else np.float32
    return dataclasses.replace(matrix, indptr=total.indptr.astype(np.int32),
                               indices=total.indices.astype(np.int32),
                               data=total.data.astype(dtype))


def pyfai_bbox_corners(geometry: Any, unit: Any = "2th_deg",
                       chi_range: tuple[float, float] | None = None) -> np.ndarray:
    """pyFAI's bbox of every pixel, as the 4 corners of a (radial, chi) rectangle.

    pyFAI's box is the pixel centre ``c`` +- ``d = max_k |corner_k - c|`` in the radial unit
    (its low end clipped at 0: 2theta, q, r and d*^2 are never negative), and in chi the
    centre +- the largest corner deviation taken the short way round the circle. Returned in
    the layout of :meth:`Geometry.corner_array` (rows, cols, 4, 2), corners (low, low),
    (high, low), (high, high), (low, high), so the true-box ``"bbox"`` build of these corners
    is pyFAI's box (doc/integration.md, "Note on bbox"). With ``chi_range`` (radians) the
    chi side is clipped to it, as pyFAI does, so that a pixel's whole weight lands inside
    the range (chi NaN for pixels whose box misses it); without, chi may leave (-pi, pi] by
    up to ``d``.

    Example
    -------
    >>> from xreduce.detectors import Detector
    >>> from xreduce.geometry import Geometry
    >>> g = Geometry(0.1, 0.001, 0.001, 0, 0, 0, 1e-10, Detector(1e-4, 1e-4, (4, 4)))
    >>> c = pyfai_bbox_corners(g, "r_mm")
    >>> bool((c[..., 0, 0] <= g.center_array("r_mm")).all())
    True
    """
    centre = np.asarray(geometry.center_array(unit), dtype=np.float64)
    delta = np.asarray(geometry.delta_array(unit))
    chi = np.asarray(geometry.chi_array(), dtype=np.float64)
    delta_chi = np.asarray(geometry.delta_array("chi_rad"))
    lo = np.maximum(centre - delta, 0.0)
    hi = centre + delta
    out = np.empty(centre.shape + (4, 2))
    out[..., 0, 0] = out[..., 3, 0] = lo
    out[..., 1, 0] = out[..., 2, 0] = hi
    chi_lo, chi_hi = chi - delta_chi, chi + delta_chi
    if chi_range is not None:
        a0, a1 = chi_range
        miss = (chi_hi < a0) | (chi_lo > a1)
        chi_lo, chi_hi = np.maximum(chi_lo, a0), np.minimum(chi_hi, a1)
        chi_lo[miss] = chi_hi[miss] = np.nan
    out[..., 0, 1] = out[..., 1, 1] = chi_lo
    out[..., 2, 1] = out[..., 3, 1] = chi_hi
    return out
