"""The compiled kernels must really run in parallel: extensions built without OpenMP are a known
failure of this ecosystem, and they would pass every numerical test while running on one core."""
from xreduce.ext import openmp_info


def test_openmp_uses_more_than_one_thread():
    assert openmp_info.threads_used(2) == 2
    assert openmp_info.threads_used(4) == 4


def test_openmp_default_threads_positive():
    assert openmp_info.max_threads() >= 1
