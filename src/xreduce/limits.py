"""Bounds checked before work starts: thread counts and the memory a size argument implies.

Every public entry point that takes a thread count or a size (bins, window, frames read from a
file...) checks it here, so a typo or a crafted file gives a clear error naming the argument
instead of a crash or an allocation of tens of GiB. See ``doc/limits.md``.

Example
-------
>>> from xreduce.limits import check_num_threads, check_allocation
>>> check_num_threads(0) >= 1          # 0 or None: every core of this machine
True
>>> check_allocation(8 * 1000, "npt")  # 8 kB: fine, returns the byte count
8000
"""
from __future__ import annotations

import numbers
import os
import warnings

__all__ = ["cpu_count", "check_num_threads", "max_allocation_bytes", "check_allocation"]

#: Environment variable overriding the largest single allocation allowed (bytes).
MAX_ALLOCATION_ENV = "XREDUCE_MAX_ALLOCATION_BYTES"


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_num_threads(value, name: str = "num_threads") -> int:
    """Validate a thread count and return the number of threads to use.

    ``None`` or 0 means every core (:func:`cpu_count`); a positive integer is used as given,
    capped at the number of cores with a ``RuntimeWarning`` (more threads than cores only
    oversubscribe, and huge values crash OpenMP runtimes).

    Raises
    ------
    TypeError
        ``value`` is not an integer (bools and floats are refused).
    ValueError
        ``value`` is negative.
    """
    cores = cpu_count()
    if value is None:
        return cores
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= 0 (0 = all cores), got {value!r}")
    value = int(value)
    if value < 0:
        raise ValueError(f"{name}: expected an integer >= 0 (0 = all cores), got {value}")
    if value == 0:
        return cores
    if value > cores:
        warnings.warn(f"{name}={value} is more than the {cores} cores of this machine; "
                      f"using {cores}", RuntimeWarning, stacklevel=2)
        return cores
    return value


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def max_allocation_bytes() -> int:
    """The largest single allocation a size argument may imply, in bytes.

    ``XREDUCE_MAX_ALLOCATION_BYTES`` when set, else half of the physical memory (64 GiB where
    the OS does not say).
    """
    env = os.environ.get(MAX_ALLOCATION_ENV)
    if env:
        try:
            limit = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_ALLOCATION_ENV}: expected a number of bytes, got {env!r}")
        if limit <= 0:
            raise ValueError(f"{MAX_ALLOCATION_ENV}: expected a positive number of bytes, "
                             f"got {env!r}")
        return limit
    physical = _physical_memory_bytes()
    return physical // 2 if physical else 64 * 2**30


def _format_bytes(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} PB"


def check_allocation(nbytes, argument: str, what: str = "") -> int:
    """Refuse a size that implies more memory than :func:`max_allocation_bytes`.

    Parameters
    ----------
    nbytes : int or float
        Bytes the request implies (compute it in Python integers or floats, so it cannot
        overflow).
    argument : str
        The argument (or file key) the size comes from, named in the error.
    what : str
        What would be allocated, for the message (``"1000 x 1000 bins of 5 float64 sums"``).

    Returns
    -------
    int
        ``nbytes`` as an integer.

    Raises
    ------
    MemoryError
        With the argument, the bytes and the limit in the message.
    """
    limit = max_allocation_bytes()
    if not nbytes <= limit:  # also catches NaN
        detail = f" ({what})" if what else ""
        raise MemoryError(f"{argument}: this request needs {_format_bytes(float(nbytes))}"
                          f"{detail}, more than the {_format_bytes(limit)} allowed "
                          f"(half the memory, or {MAX_ALLOCATION_ENV})")
    return int(nbytes)
