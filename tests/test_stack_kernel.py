"""The CSR kernel's stack path (frames two at a time on the AVX2 gather, frames outside the
rows of a chunk): a stack gives, bit for bit, what each frame gives alone, whatever the
threads, chunks and invalid values in one frame of a pair only."""
import numpy as np
import pytest

from xreduce.ext import csr_integrate, openmp_info


@pytest.fixture(scope="module")
def ai():
    from xreduce.detectors import Detector
    from xreduce.geometry import Geometry
    from xreduce.integrator import AzimuthalIntegrator

    det = Detector(172e-6, 172e-6, (90, 70), max_value_invalid=True)
    return AzimuthalIntegrator(Geometry(0.05, 50 * 172e-6, 30 * 172e-6, 0.0, 0.0, 0.0, 1e-10,
                                        det))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
@pytest.mark.parametrize("error_model", [None, "poisson"])
def test_stack_equals_single_frames(ai, rng, dtype, error_model):
    frames = rng.poisson(5.0, (5,) + ai.detector.shape).astype(dtype)
    frames[1, 10, 10:30] = np.iinfo(dtype).max  # the second frame of the first pair only
    frames[2, 40, 5] = np.iinfo(dtype).max  # the first frame of the second pair only
    if dtype == np.int32:
        frames[3, 60, 20:24] = -2
    else:
        frames[3, 60, 20:24] = 2**31 + 3  # valid, but handed to the exact loop
    singles = [ai.integrate1d(f, 50, error_model=error_model) for f in frames]
    before = openmp_info.max_threads()
    try:
        for threads in (1, 2):
            openmp_info.set_max_threads(threads)
            for enabled in (True, False):
                csr_integrate.simd(enabled)
                res = ai.integrate1d(frames, 50, error_model=error_model)
                for f, one in enumerate(singles):
                    for name in ("intensity", "sum_signal", "sum_normalization", "count"):
                        np.testing.assert_array_equal(getattr(res, name)[f], getattr(one, name),
                                                      err_msg=f"{name} frame {f}")
                    if error_model:
                        np.testing.assert_array_equal(res.sigma[f], one.sigma)
    finally:
        csr_integrate.simd(True)
        openmp_info.set_max_threads(before)
    masked = singles[1].count < singles[0].count
    assert masked.any()  # the dtype maximum was masked in frame 1 only


def test_chunk_count():
    """At least 4 chunks per thread; about 256k entries each for large matrices."""
    assert csr_integrate.chunk_count(1000, 2) == 8
    assert csr_integrate.chunk_count(4_600_000, 2) == 4_600_000 // 262144
    assert csr_integrate.chunk_count(0, 0) == 4


def test_openmp_spin_default_respects_the_user():
    """xreduce.ext shortens GNU OpenMP's spin (GOMP_SPINCOUNT) only when the user set
    neither GOMP_SPINCOUNT nor OMP_WAIT_POLICY."""
    import os
    import subprocess
    import sys

    code = "import os, xreduce.ext; print(os.environ.get('GOMP_SPINCOUNT'))"
    base = {k: v for k, v in os.environ.items()
            if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    for extra, want in (({}, "10000"), ({"OMP_WAIT_POLICY": "active"}, "None"),
                        ({"GOMP_SPINCOUNT": "5"}, "5")):
        out = subprocess.run([sys.executable, "-c", code], env=dict(base, **extra),
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == want, (extra, out)
