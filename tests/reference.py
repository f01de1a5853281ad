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



# =====================================================================================
# Medians (DCT preprocessing)
# =====================================================================================

# np.pad modes that match scipy.ndimage's edge modes.
_PAD_MODE = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect", "wrap": "wrap"}


def _median_of_sorted(values, even):
    """Median of a 1D array: NaN if any NaN; even counts by `even` (mean / lower / upper)."""
    if np.isnan(values).any():
        return np.nan
    ordered = np.sort(values)
    m = len(ordered)
    if even == "mean":
        return np.median(values)
    return ordered[(m - 1) // 2] if even == "lower" else ordered[m // 2]


def moving_median_reference(stack, window, axis=0, mode="nearest", even="mean"):
    """Median of each frame's explicit window of frames, per pixel (float64 or input dtype).

    The window of frame i covers frames i - window//2 .. i + (window-1)//2; frames outside
    are filled with np.pad (edge/symmetric/reflect/wrap) or dropped ("shrink").
    Odd windows and even="mean" use numpy.median directly.
    """
    data = np.moveaxis(np.asarray(stack), axis, 0)
    n = data.shape[0]
    before, after = window // 2, (window - 1) // 2
    result = []
    if mode == "shrink":
        windows = [data[max(0, i - before): min(n, i + after + 1)] for i in range(n)]
    else:
        padded = np.pad(data, [(before, after)] + [(0, 0)] * (data.ndim - 1),
                        mode=_PAD_MODE[mode])
        windows = [padded[i: i + window] for i in range(n)]
    for w in windows:
        if even == "mean":
            result.append(np.median(w, axis=0))
        else:
            flat = w.reshape(len(w), -1)
            med = [_median_of_sorted(flat[:, p], even) for p in range(flat.shape[1])]
            result.append(np.array(med).reshape(w.shape[1:]))
    return np.moveaxis(np.array(result), 0, axis)


def step_interpolation_reference(full, step, interpolation):
    """Keep frames 0, step, 2*step, ... and the last of `full` (frames on axis 0), and
    fill the others from the nearest kept frame (earlier on ties) or linearly, per pixel."""
    n = full.shape[0]
    kept = list(range(0, n, step))
    if kept[-1] != n - 1:
        kept.append(n - 1)
    result = np.empty(full.shape, np.float64)
    for i in range(n):
        left = max(k for k in kept if k <= i)
        right = min(k for k in kept if k >= i)
        if interpolation == "nearest":
            result[i] = full[left] if i - left <= right - i else full[right]
        elif left == right:
            result[i] = full[left]
        else:
            t = (i - left) / (right - left)
            a, b = full[left].astype(np.float64), full[right].astype(np.float64)
            result[i] = a + (b - a) * t
    return result


def median_filter2d_reference(frame, size, mode="reflect", cval=0.0):
    """Element of rank (rows*cols)//2 of each window of a 2D frame, NaN if the window has one.

    Same window placement and edge modes as scipy.ndimage.median_filter.
    """
    rows, cols = size
    frame = np.asarray(frame)
    pads = [(rows // 2, (rows - 1) // 2), (cols // 2, (cols - 1) // 2)]
    if mode == "constant":
        padded = np.pad(frame, pads, mode="constant", constant_values=cval)
    else:
        padded = np.pad(frame, pads, mode=_PAD_MODE[mode])
    out = np.empty_like(frame)
    rank = (rows * cols) // 2
    for r in range(frame.shape[0]):
        for c in range(frame.shape[1]):
            w = padded[r: r + rows, c: c + cols].ravel()
            out[r, c] = np.nan if np.isnan(w.astype(np.float64)).any() else np.sort(w)[rank]
    return out




# =====================================================================================
# Labelling and double-threshold segmentation (DCT)
# =====================================================================================



# =====================================================================================
# NF-HEDM
# =====================================================================================

