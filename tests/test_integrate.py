"""The integration kernels (csr_integrate, histogram) on hand-made inputs, against tests/reference.py.

Tolerances: the kernels accumulate in float64 like the references, but in another order and
the azimuthal model uses a single-pass update against a two-pass reference, so agreement is
to 1e-10 relative (a few hundred ulps over the bins' length), not bit-exact.
"""
import numpy as np
import pytest

import reference
from xreduce.engines import ERROR_MODES
from xreduce.ext import csr_integrate, histogram

DTYPES = [np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64,
          np.float32, np.float64]


def random_csr(rng, nbins=13, npix=200, with_coef=True):
    rows = [np.sort(rng.choice(npix, rng.integers(0, 30), replace=False)) for _ in range(nbins)]
    rows[3] = rows[3][:0]  # one empty bin
    indptr = np.zeros(nbins + 1, np.int32)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    indices = np.concatenate(rows).astype(np.int32)
    coef = rng.uniform(0.01, 1, len(indices)).astype(np.float32) if with_coef else None
    return indptr, indices, coef


def run_csr(frames, indptr, indices, coef, norm, dark=None, variance=None, error_model=None,
            dummy=None, delta_dummy=0.0):
    nbins = len(indptr) - 1
    static = [np.empty(nbins) for _ in range(3)]
    empty32 = np.zeros(0, np.float32)
    csr_integrate.static_sums(indptr, indices, empty32 if coef is None else coef,
                              coef is not None, norm, *static)
    out = [np.empty((frames.shape[0], nbins)) for _ in range(5)]
    var = np.zeros((1, 0), np.float32) if variance is None else \
        np.ascontiguousarray(variance, np.float32).reshape(-1, frames.shape[1])
    csr_integrate.integrate_frames(
        frames, indptr, indices, empty32 if coef is None else coef, coef is not None, norm,
        *static, empty32 if dark is None else dark.astype(np.float32), dark is not None, var,
        ERROR_MODES[error_model], True, dummy is not None,
        0.0 if dummy is None else dummy, delta_dummy, *out)
    return dict(zip(("signal", "variance", "norm", "norm2", "count"), out))


def frames_of(rng, dtype, nframes, npix):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    hi = 50 if info is None else min(50, info.max)
    frames = rng.integers(0, hi, (nframes, npix)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        frames += rng.random((nframes, npix)).astype(dtype)
        frames[0, 5] = np.nan
        frames[1, 7] = np.inf
        frames[0, 9] = -3.5  # a legitimate negative value of a float frame
    else:
        frames[0, 5] = info.max
        if info.min < 0:
            frames[1, 7] = -1
    return frames


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("error_model", [None, "poisson", "variance", "azimuthal"])
def test_csr_kernel_matches_reference(rng, dtype, error_model):
    """Every raw dtype and error model: each frame of a stack equals the dense reference.

    The frames carry invalid values (NaN, inf, negative ints, dtype maximum): they must be
    left out of both the signal and the normalisation. Tolerance 1e-10 relative.
    """
    npix = 200
    indptr, indices, coef = random_csr(rng, npix=npix)
    norm = rng.uniform(0.5, 1.5, npix)
    frames = frames_of(rng, dtype, 3, npix)
    dark = rng.uniform(0, 2, npix).astype(np.float32)
    variance = rng.uniform(1, 5, (3, npix)).astype(np.float32) if error_model == "variance" else None
    got = run_csr(frames, indptr, indices, coef, norm, dark, variance, error_model)
    dense = reference.csr_to_dense(indptr, indices, coef, npix)
    for f in range(3):
        want = reference.integrate_dense_reference(
            frames[f], dense, norm, dark, None if variance is None else variance[f], error_model)
        for name in want:
            np.testing.assert_allclose(got[name][f], want[name], rtol=1e-10, atol=1e-10,
                                       err_msg=f"{name} frame {f}")


def test_csr_kernel_compact_and_dummy(rng):
    """No coefficients (compact no-split matrix), dummy with delta_dummy, bins all invalid."""
    npix = 150
    indptr, indices, _ = random_csr(rng, npix=npix, with_coef=False)
    norm = rng.uniform(0.5, 1.5, npix)
    frame = rng.integers(0, 20, (1, npix)).astype(np.int32)
    frame[0, indices[indptr[0]:indptr[1]]] = 7  # first bin: every pixel is "dummy"
    frame[0, :10] = 8
    got = run_csr(frame, indptr, indices, None, norm, error_model="poisson", dummy=7.5,
                  delta_dummy=0.6)
    dense = reference.csr_to_dense(indptr, indices, None, npix)
    want = reference.integrate_dense_reference(frame[0], dense, norm, error_model="poisson",
                                               dummy=7.5, delta_dummy=0.6)
    for name in want:
        np.testing.assert_allclose(got[name][0], want[name], rtol=1e-10, atol=1e-12)
    assert got["norm"][0, 0] == 0.0 and got["count"][0, 0] == 0.0  # exact zeros, no residue


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("two_d", [False, True])
@pytest.mark.parametrize("error_model", ["poisson", "azimuthal"])
def test_histogram_kernel_matches_reference(rng, dtype, split, two_d, error_model):
    """Histogram kernel (no / bbox, 1D / 2D, chi wrap-around) equals the dense bbox reference.

    Pixel boxes straddling +-pi are given with azi_hi > pi and must wrap; pixels partly
    outside the radial range contribute their inside fraction. Tolerance 1e-10 relative.
    """
    npix = 300
    centre = rng.uniform(-1, 11, npix)
    width = rng.uniform(0, 0.7, npix) if split else np.zeros(npix)
    rad_lo, rad_hi = centre - width / 2, centre + width / 2
    chi = rng.uniform(-np.pi, np.pi, npix)
    awidth = rng.uniform(0, 0.5, npix) if split else np.zeros(npix)
    azi_lo = chi
    azi_hi = chi + awidth  # some exceed pi: wrap-around
    skip = np.zeros(npix, np.uint8)
    skip[::17] = 1
    norm = rng.uniform(0.5, 1.5, npix)
    frames = frames_of(rng, dtype, 2, npix)
    edges = np.linspace(0.0, 10.0, 8)
    azi_edges = np.linspace(-np.pi, np.pi, 7) if two_d else None
    na = 6 if two_d else 1
    nfields = 8 if error_model == "azimuthal" else 5
    acc = np.zeros((2, 2, 7 * na, nfields))
    histogram.histogram_frames(
        frames, rad_lo, rad_hi if split else rad_lo, azi_lo, azi_hi if split else azi_lo, two_d,
        split, 0.0, 10.0, 7, -np.pi, np.pi, na, skip, norm, np.zeros(0, np.float32), False,
        np.zeros((1, 0), np.float32), ERROR_MODES[error_model], True, False, 0.0, 0.0, acc)
    histogram.merge_threads(acc, ERROR_MODES[error_model])
    dense = reference.bbox_matrix_reference(
        rad_lo, rad_hi if split else rad_lo, edges, azi_lo if two_d else None,
        (azi_hi if split else azi_lo) if two_d else None, azi_edges)
    dense[:, skip == 1] = 0
    for f in range(2):
        want = reference.integrate_dense_reference(frames[f], dense, norm,
                                                   error_model=error_model)
        total = acc[0, f]
        np.testing.assert_allclose(total[:, 0], want["signal"], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(total[:, 4], want["count"], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(total[:, 3], want["norm2"], rtol=1e-10, atol=1e-10)
        if error_model == "azimuthal":
            np.testing.assert_allclose(total[:, 5], want["norm"], rtol=1e-10, atol=1e-10)
            spread = np.where(total[:, 5] > 0, total[:, 7] / np.where(total[:, 5] > 0, total[:, 5], 1)
                              * total[:, 3], 0)
            np.testing.assert_allclose(spread, want["variance"], rtol=1e-9, atol=1e-10)
        else:
            np.testing.assert_allclose(total[:, 2], want["norm"], rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(total[:, 1], want["variance"], rtol=1e-10, atol=1e-10)
