"""The csc method (1D integration pixel by pixel, xreduce.ext.csc_integrate): equal to the csr
method to rounding for every option; identical sums whatever the SIMD path, threads, frames
a call, and whether the frames come decompressed or as their bitshuffle-LZ4 chunks (decoded
in the kernel's pass); clear errors for what it does not do, damaged chunks included."""
import h5py
import hdf5plugin
import numpy as np
import pytest

from xreduce.ext import csc_integrate, openmp_info
from xreduce.io.chunks import ChunkBuffers, read_raw_chunks

# Both methods add the same float32 coefficients times the same values in float64, in
# another order: relative differences of a few ulps per bin (~1e-15); 1e-12 leaves room
# for bins of thousands of entries and fails on any wrong entry (a coefficient is >= 1e-7).
RTOL = 1e-12
CSC = ("bbox", "csc", "cython")
SHAPE = (300, 260)  # 78 000 pixels: two slices of 65 536


@pytest.fixture(scope="module")
def ai():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    det = Detector(172e-6, 172e-6, SHAPE, max_value_invalid=True)
    return AzimuthalIntegrator(Geometry(0.08, 120 * 172e-6, 100 * 172e-6, 0.01, -0.02, 0.0,
                                        1e-10, det))


def _frames(rng, n, dtype=np.int32):
    frames = rng.poisson(20.0, (n,) + SHAPE).astype(dtype)
    if np.dtype(dtype).kind == "f":
        frames[0, 10, 10:30] = np.nan  # invalid: not a number
    else:
        frames[0, 10, 10:30] = np.iinfo(dtype).max  # invalid: the Dectris mark
    if np.dtype(dtype).kind != "u":
        frames[-1, 200, 5:9] = -2  # invalid: negative (signed), valid (float)
    return frames


def _close(a, b, names=("intensity", "sigma", "count", "sum_signal", "sum_normalization")):
    for name in names:
        x, y = getattr(a, name), getattr(b, name)
        if x is None and y is None:
            continue
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=0, err_msg=name)


def _same(a, b, names=("intensity", "sigma", "count", "sum_signal", "sum_variance")):
    for name in names:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("split", ["no", "bbox", "full"])
@pytest.mark.parametrize("error_model", [None, "poisson"])
def test_equals_csr(ai, rng, split, error_model):
    frames = _frames(rng, 3)
    kw = dict(unit="q_nm^-1", error_model=error_model)
    csc = ai.integrate1d(frames, 400, method=(split, "csc", "cython"), **kw)
    csr = ai.integrate1d(frames, 400, method=(split, "csr", "cython"), **kw)
    _close(csc, csr)
    assert (csc.count[0] < csc.count[1]).any()  # the marked pixels were masked


def test_equals_csr_with_corrections(ai, rng):
    frames = _frames(rng, 2).astype(np.float32)
    frames[1, 50, 50] = np.nan
    dark = rng.uniform(0, 3, SHAPE).astype(np.float32)
    dark[7, 7] = np.inf  # masks the pixel
    flat = rng.uniform(0.8, 1.2, SHAPE)
    flat[100:110, 100:120] = 0.0  # unusable normalisation: masked
    mask = np.zeros(SHAPE, bool)
    mask[150:160, :] = True
    variance = rng.uniform(1, 30, (2,) + SHAPE).astype(np.float32)
    kw = dict(unit="2th_deg", dark=dark, flat=flat, mask=mask, variance=variance, dummy=0.0,
              delta_dummy=0.5, polarization_factor=0.95)
    _close(ai.integrate1d(frames, 300, method=CSC, **kw),
           ai.integrate1d(frames, 300, method="bbox_csr", **kw))


def test_bins_all_invalid_are_zeros(ai, rng):
    frame = _frames(rng, 1)[0]
    frame[120:, :] = -1  # the bins beyond these rows have only invalid pixels
    csc = ai.integrate1d(frame, 80, method=CSC)
    csr = ai.integrate1d(frame, 80, method="bbox_csr")
    engine = next(e for k, e in ai.engines if k.algorithm == "csc" and k.npt_rad == 80)
    empty = (csc.count == 0) & (engine.pixels.entries > 0)
    assert empty.sum() > 5
    assert (csc.sum_normalization[empty] == 0).all() and (csc.sum_signal[empty] == 0).all()
    _close(csc, csr)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.uint16, np.float64])
def test_same_sums_whatever_simd_threads_and_frames(ai, rng, dtype):
    frames = _frames(rng, 6, dtype)
    ref = [ai.integrate1d(f, 500, method=CSC, error_model="poisson") for f in frames]
    before = openmp_info.max_threads()
    try:
        for threads in (1, 2):
            openmp_info.set_max_threads(threads)
            for enabled in (True, False):
                csc_integrate.simd(enabled)
                res = ai.integrate1d(frames, 500, method=CSC, error_model="poisson")
                for f, one in enumerate(ref):
                    for name in ("intensity", "sigma", "count", "sum_signal"):
                        np.testing.assert_array_equal(getattr(res, name)[f],
                                                      getattr(one, name), err_msg=name)
    finally:
        csc_integrate.simd(True)
        openmp_info.set_max_threads(before)


def _stack(path, frames, **filters):
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("data", data=frames, chunks=(1,) + frames.shape[1:],
                               **(filters or hdf5plugin.Bitshuffle(cname="lz4")))
        return ds.id.get_chunk_info(0).size


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_compressed_chunks_give_the_same_sums(ai, rng, tmp_path, dtype):
    """Each block decoded and integrated in the kernel's pass: bit for bit the sums of the
    decompressed frames (SHAPE's 78 000 pixels: a partial last block and 0 raw values; the
    second shape below has 5 raw values at the chunk's end)."""
    frames = _frames(rng, 5, dtype)
    _stack(tmp_path / "s.h5", frames)
    with h5py.File(tmp_path / "s.h5") as h5:
        raw = read_raw_chunks(h5["data"], 0, 5, ChunkBuffers())
        fused = ai.integrate1d(raw, 500, method=CSC, error_model="poisson")
        assert raw.pieces == []  # the chunks' buffers were handed back
        _same(fused, ai.integrate1d(frames, 500, method=CSC, error_model="poisson"))
        # other methods get the frames decompressed
        _same(ai.integrate1d(read_raw_chunks(h5["data"], 1, 3), 500, error_model="poisson"),
              ai.integrate1d(frames[1:3], 500, error_model="poisson"))


def test_compressed_odd_sizes_and_stored_chunks(rng, tmp_path):
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    shape = (263, 251)  # 66 013 pixels: 5 values stored raw after the last block
    ai = AzimuthalIntegrator(Geometry(0.05, 0.02, 0.02, 0.0, 0.0, 0.0, 1e-10,
                                      Detector(172e-6, 172e-6, shape)))
    frames = rng.poisson(9.0, (3,) + shape).astype(np.int32)
    _stack(tmp_path / "s.h5", frames)
    with h5py.File(tmp_path / "s.h5", "r+") as h5:  # frame 1 stored with the filter skipped
        h5["data"].id.write_direct_chunk((1, 0, 0), frames[1].tobytes(), filter_mask=1)
    with h5py.File(tmp_path / "s.h5") as h5:
        fused = ai.integrate1d(read_raw_chunks(h5["data"], 0, 3), 200, method=CSC)
    _same(fused, ai.integrate1d(frames, 200, method=CSC))


def test_damaged_chunk_names_its_frame(ai, rng, tmp_path):
    frames = _frames(rng, 3)
    _stack(tmp_path / "s.h5", frames)
    with h5py.File(tmp_path / "s.h5", "r+") as h5:
        ds = h5["data"]
        _, raw = ds.id.read_direct_chunk((2, 0, 0))
        bad = bytearray(raw)
        bad[16:20] = b"\xff" * 4  # the first block's first literal run too long, sizes intact
        ds.id.write_direct_chunk((2, 0, 0), bytes(bad))
        _, raw = ds.id.read_direct_chunk((1, 0, 0))
        ds.id.write_direct_chunk((1, 0, 0), raw[:len(raw) // 2])  # truncated
    with h5py.File(tmp_path / "s.h5") as h5:
        with pytest.raises(ValueError, match=r"frame\(s\) \[2\]"):
            ai.integrate1d(read_raw_chunks(h5["data"], 2, 3), 100, method=CSC)
        with pytest.raises(ValueError, match="frames 1-1"):  # found by the decompression
            ai.integrate1d(read_raw_chunks(h5["data"], 0, 3), 100, method=CSC)


def test_what_csc_does_not_do(ai, rng):
    frame = _frames(rng, 1)[0]
    with pytest.raises(ValueError, match="1D only"):
        ai.integrate2d(frame, 50, 36, method=CSC)
    with pytest.raises(ValueError, match="azimuthal error model"):
        ai.integrate1d(frame, 50, method=CSC, error_model="azimuthal")
    with pytest.raises(ValueError, match="window"):  # pixels wider than 8 bins
        ai.integrate1d(frame, 20000, method=("full", "csc", "cython"))


def test_pixel_major_refuses_scattered_bins():
    from xreduce.engines.cython_csc import pixel_major

    with pytest.raises(ValueError, match="follow each other"):
        pixel_major(np.array([0, 1, 1, 2]), np.array([0, 0]), None, (3, 1))


def test_kernel_checks_shapes(ai, rng):
    ai.integrate1d(_frames(rng, 1)[0], 40, method=CSC)
    engine = next(e for k, e in ai.engines if k.algorithm == "csc" and k.npt_rad == 40)
    m = engine.pixels
    with pytest.raises(ValueError, match="slice_off"):
        csc_integrate.static_sums(m.base, m.meta, m.coef, m.slice_off[:-1],
                                  np.ones(m.base.size), 40)
    with pytest.raises(ValueError, match="norm"):
        csc_integrate.static_sums(m.base, m.meta, m.coef, m.slice_off, np.ones(3), 40)
