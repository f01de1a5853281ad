"""The histogram engine: integration without a matrix (splits "no" and "bbox").

Each call histograms the pixels by their position (centre, or bounding box spread uniformly)
in (radial, azimuthal) space. Cheap to build, slower per frame than a CSR engine: meant for
one-off frames. Threads accumulate into private copies of the bins, merged in parallel; the
frames go through in blocks so that these copies stay within :data:`ACCUMULATOR_BYTES`
whatever the number of threads and frames.

Example
-------
>>> res = ai.integrate1d(frame, 500, method=("no", "histogram", "cython"))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xreduce.engines.preprocess import ERROR_MODES, FrameArgs, Normalisation, Sums
from xreduce.engines.registry import EngineKey
from xreduce.ext import histogram
from xreduce.ext.openmp_info import max_threads
from xreduce.limits import check_allocation

_EMPTY_F64 = np.zeros(0, dtype=np.float64)

ACCUMULATOR_BYTES = 256 * 2**20
"""Memory the per-thread accumulators of one block of frames may take (at least one frame)."""


class HistogramEngine:
    """Pixel extents in (radial, azimuthal) space and the bin edges of a histogram engine."""

    def __init__(self, key: EngineKey, radial_edges: np.ndarray,
                 azimuthal_edges: np.ndarray | None, azimuth_limits: tuple[float, float],
                 rad_lo: np.ndarray, rad_hi: np.ndarray, azi_lo: np.ndarray | None,
                 azi_hi: np.ndarray | None, skip: np.ndarray):
        self.key = key
        self.radial_edges = radial_edges
        self.azimuthal_edges = azimuthal_edges
        self.azimuth_limits = azimuth_limits
        self.rad_lo, self.rad_hi = rad_lo, rad_hi
        self.azi_lo, self.azi_hi = azi_lo, azi_hi
        self.skip = skip
        self.nr = len(radial_edges) - 1
        self.na = 1 if azimuthal_edges is None else len(azimuthal_edges) - 1
        self.nbins = self.nr * self.na
        self.npix = len(rad_lo)
        self.nbytes = sum(a.nbytes for a in (rad_lo, rad_hi, azi_lo, azi_hi, skip) if a is not None)

    def integrate(self, args: FrameArgs, norm: Normalisation) -> Sums:
        """Histogram the frames of ``args`` block by block into per-thread accumulators."""
        nframes, npix = args.frames.shape
        if npix != self.npix:
            raise ValueError(f"data: expected {self.npix} pixels a frame (the engine's), got "
                             f"{npix}")
        nthreads = max_threads()
        error_mode = ERROR_MODES[args.error_model]
        nfields = 8 if error_mode == 3 else 5
        per_frame = nthreads * self.nbins * nfields * 8
        check_allocation(per_frame + 5 * 8 * nframes * self.nbins, "npt",
                         f"{self.nbins} bins x {nthreads} threads of accumulators")
        block = max(1, min(nframes, ACCUMULATOR_BYTES // per_frame))
        out = np.empty((5, nframes, self.nbins))
        skip = self.skip if norm.invalid is None else self.skip | norm.invalid.view(np.uint8)
        use_azimuth = self.azi_lo is not None
        a0, a1 = self.azimuth_limits if use_azimuth else (0.0, 1.0)
        dark, has_dark, variance, *rest = args.kernel_args()
        buffer = np.empty(nthreads * block * self.nbins * nfields)
        for first in range(0, nframes, block):
            n = min(block, nframes - first)
            acc = buffer[:nthreads * n * self.nbins * nfields].reshape(
                nthreads, n, self.nbins, nfields)
            acc[...] = 0.0
            frame_variance = variance if variance.shape[0] == 1 else variance[first:first + n]
            histogram.histogram_frames(
                args.frames[first:first + n], self.rad_lo, self.rad_hi,
                self.azi_lo if use_azimuth else _EMPTY_F64,
                self.azi_hi if use_azimuth else _EMPTY_F64,
                use_azimuth, self.key.split == "bbox",
                float(self.radial_edges[0]), float(self.radial_edges[-1]), self.nr, a0, a1,
                self.na, skip, norm.values, dark, has_dark, frame_variance, *rest, acc)
            histogram.merge_threads(acc, error_mode)
            total = acc[0]
            sum_norm, variance_sum = total[..., 2], total[..., 1]
            if error_mode == 3:
                sum_norm = total[..., 5]
                with np.errstate(invalid="ignore", divide="ignore"):
                    variance_sum = np.where(sum_norm > 0, total[..., 7] / sum_norm
                                            * total[..., 3], 0.0)
            for q, values in enumerate((total[..., 0], variance_sum, sum_norm, total[..., 3],
                                        total[..., 4])):
                out[q, first:first + n] = values
        return Sums(*out)


def build(ai: Any, key: EngineKey, user_mask: np.ndarray | None) -> HistogramEngine:
    """The ``("histogram", "cython")`` builder: pixel extents from the geometry."""
    mask = ai.combined_mask(user_mask)
    radial_range = key.radial_range or ai.default_radial_range(key.unit, key.split, mask)
    g = ai.geometry
    use_azimuth = key.npt_azim is not None or key.azimuth_range is not None
    na = key.npt_azim or 1
    lo_deg, hi_deg = key.azimuth_range or (-180.0, 180.0)
    azimuthal_edges = np.linspace(np.deg2rad(lo_deg), np.deg2rad(hi_deg), na + 1)
    if key.split == "no":
        rad_lo = np.ascontiguousarray(g.center_array(key.unit), dtype=np.float64).reshape(-1)
        rad_hi = rad_lo
        azi_lo = azi_hi = None
        finite = np.isfinite(rad_lo)
        if use_azimuth:
            chi = np.asarray(g.chi_array(), dtype=np.float64).reshape(-1)
            azi_lo = azi_hi = np.where(chi >= np.pi, chi - 2 * np.pi, chi)  # chi in [-pi, pi)
            finite &= np.isfinite(azi_lo)
    else:
        corners = np.asarray(g.corner_array(key.unit))
        rad = corners[..., 0].reshape(-1, corners.shape[-2])
        rad_lo, rad_hi = rad.min(axis=1), rad.max(axis=1)
        finite = np.isfinite(rad).all(axis=1)
        azi_lo = azi_hi = None
        if use_azimuth:
            chi = corners[..., 1].reshape(-1, corners.shape[-2])
            chi = np.where(chi >= np.pi, chi - 2 * np.pi, chi)
            lo, hi = chi.min(axis=1), chi.max(axis=1)
            wrap = hi - lo > np.pi  # straddles the discontinuity: unwrap past +pi
            if wrap.any():
                unwrapped = np.where(chi[wrap] < 0, chi[wrap] + 2 * np.pi, chi[wrap])
                lo[wrap], hi[wrap] = unwrapped.min(axis=1), unwrapped.max(axis=1)
            azi_lo, azi_hi = lo, hi
            finite &= np.isfinite(chi).all(axis=1)
    skip = mask.reshape(-1) | ~finite
    return HistogramEngine(
        key, np.linspace(radial_range[0], radial_range[1], key.npt_rad + 1),
        azimuthal_edges if key.npt_azim is not None else None,
        (float(azimuthal_edges[0]), float(azimuthal_edges[-1])),
        rad_lo, rad_hi, azi_lo, azi_hi, np.ascontiguousarray(skip, dtype=np.uint8))
