"""Slow NumPy references for the OpenCL CSR engine (per-bin sums and sigma clipping).

Written for clarity: one loop over bins, float64 everywhere, no code shared with the package.
"""
import numpy as np


def valid_pixels(frame, dummy=None, delta_dummy=None, max_value_invalid=False):
    """Boolean mask of the usable pixels of a raw frame: the one rule of doc/integration.md
    ("What is masked"), stated in tests/reference.py (the dummy compared in the frame's own
    type, not rounded to float32)."""
    import reference

    return reference.valid_values_reference(frame, dummy, delta_dummy or 0.0, max_value_invalid)


def csr_sums(indptr, indices, data, frame, norm=None, dark=None, variance=None,
             error_model="poisson", dummy=None, delta_dummy=None, clip_thres=None, max_iter=0,
             max_value_invalid=False):
    """Per-bin sums (signal, variance, normalization, normalization2, count, valid) of a frame.

    Sigma clipping (max_iter > 0): entries whose s / n lies further than clip_thres * std
    (std = sqrt(sum_variance / sum_norm2)) from the bin mean of the previous iteration are
    dropped for good; stop when nothing was dropped or a single entry is left.
    """
    frame = np.asarray(frame).ravel()
    raw = frame.astype(np.float64)
    npix = raw.size
    n = np.ones(npix) if norm is None else np.asarray(norm, np.float64).ravel()
    s_all = raw - (0.0 if dark is None else np.asarray(dark, np.float64).ravel())
    ok_all = valid_pixels(frame, dummy, delta_dummy, max_value_invalid)
    if dark is not None:
        ok_all &= np.isfinite(np.asarray(dark, np.float64).ravel())
    if error_model == "variance":
        ok_all &= np.isfinite(np.asarray(variance, np.float64).ravel())
    nbins = len(indptr) - 1
    result = {k: np.zeros(nbins) for k in ("signal", "variance", "normalization",
                                           "normalization2", "count")}
    result["valid"] = np.zeros(nbins, np.int64)
    for b in range(nbins):
        idx = indices[indptr[b]:indptr[b + 1]]
        c = np.ones(len(idx)) if data is None else \
            np.asarray(data[indptr[b]:indptr[b + 1]], np.float64)
        keep = ok_all[idx].copy()
        s, nn, r = s_all[idx], n[idx], raw[idx]
        mean = std = 0.0
        for it in range(max_iter + 1):
            if it > 0:
                if keep.sum() < 2:   # a single entry has no spread to clip against
                    break
                # NaN pixels are already out of `keep`; compare only the kept ones
                dev = np.zeros(len(idx))
                dev[keep] = np.abs(s[keep] / nn[keep] - mean)
                drop = keep & (dev > clip_thres * std)
                if not drop.any():
                    break
                keep &= ~drop
            signal = np.sum(c[keep] * s[keep])
            norm_sum = np.sum(c[keep] * nn[keep])
            norm2 = np.sum((c[keep] * nn[keep]) ** 2)
            mean = signal / norm_sum if keep.any() and norm_sum != 0 else 0.0
            if error_model == "none":
                var = 0.0
            elif error_model == "poisson":
                var = np.sum(c[keep] ** 2 * np.maximum(r[keep], 1.0))
            elif error_model == "variance":
                var = np.sum(c[keep] ** 2 * np.asarray(variance, np.float64).ravel()[idx][keep])
            elif error_model == "azimuthal":
                # weighted spread of x = s / n (weights c n), times sum (c n)^2
                w = c[keep] * nn[keep]
                spread2 = (np.sum(w * (s[keep] / nn[keep] - mean) ** 2) / norm_sum
                           if keep.any() else 0.0)
                var = spread2 * norm2
            else:
                raise ValueError(error_model)
            std = np.sqrt(var / norm2) if keep.any() and norm2 > 0 else 0.0
        if keep.any():
            result["signal"][b] = signal
            result["variance"][b] = var
            result["normalization"][b] = norm_sum
            result["normalization2"][b] = norm2
            result["count"][b] = np.sum(c[keep])
        result["valid"][b] = keep.sum()
    return result


def random_csr(rng, nbins, npix, max_per_row=40, split=True):
    """A hand-made CSR matrix: each bin takes a random set of pixels, coefficients in (0, 1]."""
    indptr = [0]
    indices = []
    data = []
    for _ in range(nbins):
        k = int(rng.integers(0, max_per_row + 1))
        cols = np.sort(rng.choice(npix, size=k, replace=False))
        indices.extend(cols)
        data.extend(rng.uniform(0.05, 1.0, size=k))
        indptr.append(len(indices))
    return (np.array(indptr, np.int32), np.array(indices, np.int32),
            np.array(data, np.float32) if split else None)
