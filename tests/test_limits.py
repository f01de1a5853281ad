"""Thread counts and allocation sizes are checked before work (xreduce.limits, doc/limits.md)."""
import pytest

from xreduce.limits import check_allocation, check_num_threads, cpu_count, max_allocation_bytes


def test_thread_count_defaults_to_every_core():
    assert check_num_threads(None) == cpu_count()
    assert check_num_threads(0) == cpu_count()
    assert check_num_threads(1) == 1


@pytest.mark.parametrize("value", [10**5, 10**9, 2**31, 2**64])
def test_huge_thread_counts_are_capped_with_a_warning(value):
    with pytest.warns(RuntimeWarning, match="cores"):
        assert check_num_threads(value) == cpu_count()


@pytest.mark.parametrize("value,error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                         ("4", TypeError)])
def test_bad_thread_counts_name_the_argument(value, error):
    with pytest.raises(error, match="workers"):
        check_num_threads(value, "workers")


def test_allocation_limit_from_environment(monkeypatch):
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", "1000")
    assert max_allocation_bytes() == 1000
    assert check_allocation(1000, "npt") == 1000
    with pytest.raises(MemoryError, match=r"npt: .*1\.0 kB.*bins"):
        check_allocation(1001, "npt", "bins")
    with pytest.raises(MemoryError, match="npt"):
        check_allocation(float("nan"), "npt")
    monkeypatch.setenv("XREDUCE_MAX_ALLOCATION_BYTES", "lots")
    with pytest.raises(ValueError, match="XREDUCE_MAX_ALLOCATION_BYTES"):
        max_allocation_bytes()


def test_default_allocation_limit_is_half_the_memory(monkeypatch):
    monkeypatch.delenv("XREDUCE_MAX_ALLOCATION_BYTES", raising=False)
    assert 2**28 <= max_allocation_bytes()
    with pytest.raises(MemoryError, match="window"):
        check_allocation(2**70, "window")
