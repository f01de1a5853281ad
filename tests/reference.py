"""Slow, obviously-correct NumPy reference implementations of every xreduce kernel.

Tests compare the compiled kernels (Cython and OpenCL) against these. Each function is written
for clarity, not speed: plain loops and textbook formulas, no shared code with the package.
"""
import numpy as np


# =====================================================================================
# Geometry (foundation)
# =====================================================================================



# =====================================================================================
# Sparse matrix builder: pixel splitting (integration)
# =====================================================================================



# =====================================================================================
# Integration: sums, intensities, uncertainties (integration)
# =====================================================================================

def valid_values_reference(values, dummy=None, delta_dummy=0.0):
    """True where a raw pixel value is usable: finite floats; integers >= 0 and below the
    dtype's maximum; not equal to ``dummy`` (within ``delta_dummy``)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        ok = np.isfinite(values)
    else:
        info = np.iinfo(values.dtype)
        ok = (values >= 0) & (values != info.max)
    if dummy is not None:
        ok &= ~(np.abs(values.astype(np.float64) - dummy) <= delta_dummy)
    return ok


def csr_to_dense(indptr, indices, data, npix):
    """Dense (nbins, npix) coefficient matrix of a CSR matrix (data None: coefficients 1)."""
    dense = np.zeros((len(indptr) - 1, npix))
    for b in range(len(indptr) - 1):
        for j in range(indptr[b], indptr[b + 1]):
            dense[b, indices[j]] += 1.0 if data is None else data[j]
    return dense


def integrate_dense_reference(frame, coef, norm, dark=None, variance=None, error_model=None,
                              dummy=None, delta_dummy=0.0):
    """Per-bin sums of REFERENCE.md section 4 for one frame, bin by bin with a dense matrix.

    Returns a dict: signal, variance, norm, norm2, count (each (nbins,)). Invalid pixels (see
    valid_values_reference) are left out of every sum. Azimuthal model: two-pass weighted
    spread of x = signal/norm with weights c*norm, variance = spread^2 * sum (c*norm)^2.
    """
    frame = np.asarray(frame).ravel()
    ok = valid_values_reference(frame, dummy, delta_dummy)
    raw = frame.astype(np.float64)
    signal = raw - (0.0 if dark is None else np.asarray(dark, np.float64).ravel())
    if error_model == "poisson":
        var = np.maximum(raw, 1.0)
    elif error_model == "variance":
        var = np.asarray(variance, np.float64).ravel()
    else:
        var = np.zeros_like(raw)
    out = {k: np.zeros(coef.shape[0]) for k in ("signal", "variance", "norm", "norm2", "count")}
    for b in range(coef.shape[0]):
        c = np.where(ok, coef[b], 0.0)
        sel = c > 0
        c, s, n, v = c[sel], signal[sel], norm[sel], var[sel]
        out["signal"][b] = np.sum(c * s)
        out["norm"][b] = np.sum(c * n)
        out["norm2"][b] = np.sum((c * n) ** 2)
        out["count"][b] = np.sum(c)
        if error_model == "azimuthal":
            if out["norm"][b] > 0:
                w = c * n
                x = s / n
                mean = np.sum(w * x) / np.sum(w)
                spread2 = np.sum(w * (x - mean) ** 2) / np.sum(w)
                out["variance"][b] = spread2 * out["norm2"][b]
        else:
            out["variance"][b] = np.sum(c * c * v)
    return out


def bbox_matrix_reference(rad_lo, rad_hi, edges, azi_lo=None, azi_hi=None, azi_edges=None):
    """Dense (nbins, npix) matrix of bounding-box splitting, bin = i_azim * nrad + i_rad.

    Each pixel spreads uniformly over [rad_lo, rad_hi] x [azi_lo, azi_hi] (radians; an
    azimuthal box reaching beyond pi wraps round to -pi); the coefficient of a bin is the
    fraction of the box inside it. A zero-width box puts all of its weight in the bin that
    holds it (bins are half-open: [low, high)).
    """
    def fractions(lo, hi, e):
        f = np.zeros(len(e) - 1)
        if hi > lo:
            f = np.clip(np.minimum(hi, e[1:]) - np.maximum(lo, e[:-1]), 0, None) / (hi - lo)
        elif e[0] <= lo < e[-1]:
            f[np.searchsorted(e, lo, side="right") - 1] = 1.0
        return f

    nrad = len(edges) - 1
    nazi = 1 if azi_edges is None else len(azi_edges) - 1
    dense = np.zeros((nrad * nazi, len(rad_lo)))
    for i in range(len(rad_lo)):
        fr = fractions(rad_lo[i], rad_hi[i], edges)
        if azi_edges is None:
            fa = np.ones(1)
        else:
            fa = fractions(azi_lo[i], azi_hi[i], azi_edges)
            if azi_hi[i] > np.pi:
                fa = fa + fractions(azi_lo[i] - 2 * np.pi, azi_hi[i] - 2 * np.pi, azi_edges)
        dense[:, i] = np.outer(fa, fr).ravel()
    return dense




# =====================================================================================
# Medians (DCT preprocessing)
# =====================================================================================



# =====================================================================================
# Labelling and double-threshold segmentation (DCT)
# =====================================================================================



# =====================================================================================
# NF-HEDM
# =====================================================================================

