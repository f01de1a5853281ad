# cython: language_level=3
"""OpenMP introspection: how many threads a parallel region really uses."""
from cython.parallel cimport prange, parallel
cimport openmp


def max_threads() -> int:
    """Number of threads OpenMP would use for a parallel region (``omp_get_max_threads``)."""
    return openmp.omp_get_max_threads()


def threads_used(int num_threads=0) -> int:
    """Run a parallel region and count the distinct threads that executed it.

    Parameters
    ----------
    num_threads : int
        Threads to ask for; 0 uses the OpenMP default.

    Returns
    -------
    int
        Number of threads that took part. 1 means OpenMP is off or was built out.
    """
    cdef int seen[256]
    cdef int i, n = 0, tid
    cdef int want = num_threads if num_threads > 0 else openmp.omp_get_max_threads()
    for i in range(256):
        seen[i] = 0
    with nogil, parallel(num_threads=want):
        tid = openmp.omp_get_thread_num()
        if tid < 256:
            seen[tid] = 1
    for i in range(256):
        n += seen[i]
    return n


def set_max_threads(int num_threads) -> None:
    """Threads of the parallel regions started later from the calling thread
    (``omp_set_num_threads``; each Python thread has its own setting)."""
    if num_threads < 1:
        raise ValueError(f"num_threads: expected an integer >= 1, got {num_threads}")
    openmp.omp_set_num_threads(num_threads)
