"""Run a job chunk by chunk: on this machine's threads, on any ``concurrent.futures`` executor,
or on a ``dask.distributed`` cluster, with the same results everywhere.

A job is a picklable object with four members (see :class:`ChunkJob` and ``doc/stack.md``):

- ``key``: a string naming the job's worker-side state (same key, same state);
- ``setup()``: builds that state (open files, build a matrix...) once per worker process, on
  the worker; it is cached there under ``key``, never rebuilt per chunk;
- ``load(state, chunk)``: the input part of a chunk (reading frames);
- ``compute(state, loaded)``: the work on it, returning the chunk's result;
- optionally ``teardown(state)``: releases the state (closes files) when this process is done;
- optionally ``readers``: the reader threads of a local run (default ``LOCAL_READERS``; 1
  where a load is only I/O, so that the first chunk is not read at half speed beside the
  second).

:func:`run_chunks` yields ``(chunk, result)`` pairs, or ``(chunk, exception)`` for a chunk that
failed, so one bad chunk does not stop the others. With ``executor=None`` the loads run ahead in
reader threads (one OpenMP thread each) while the calling thread computes with every core;
elsewhere a chunk is one task (load then compute), not pinned to a worker, so dask re-runs the
tasks of a lost worker.
Tasks return results to the caller, who alone writes them.

The DCT preprocessing (frame windows) and the NF fit (voxel blocks) can use the same layer by
writing a job class with these four members.

Example
-------
>>> class Squares:
...     key = "squares"
...     def setup(self): return None
...     def load(self, state, chunk): return chunk
...     def compute(self, state, chunk): return chunk * chunk
>>> sorted(result for _, result in run_chunks(Squares(), [1, 2, 3]))
[1, 4, 9]
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import threading
from typing import Any, Iterable, Iterator, Protocol

from xreduce.limits import check_num_threads, cpu_count

__all__ = ["ChunkJob", "run_chunks", "open_cluster", "is_dask_client", "worker_state",
           "release_state", "run_on_worker"]


class ChunkJob(Protocol):
    """What :func:`run_chunks` needs of a job (see the module notes)."""

    key: str

    def setup(self) -> Any: ...

    def load(self, state: Any, chunk: Any) -> Any: ...

    def compute(self, state: Any, loaded: Any) -> Any: ...


_STATES: dict[str, tuple[Any, Any]] = {}  # key -> (job, state)
_STATES_LOCK = threading.Lock()
_MAX_STATES = 4


def worker_state(job: ChunkJob) -> Any:
    """The job's state in this process, built by ``job.setup()`` the first time (the oldest
    of more than ``_MAX_STATES`` states is released)."""
    evicted = []
    with _STATES_LOCK:
        if job.key not in _STATES:
            while len(_STATES) >= _MAX_STATES:
                evicted.append(_STATES.pop(next(iter(_STATES))))
            _STATES[job.key] = (job, job.setup())
        state = _STATES[job.key][1]
    for old_job, old_state in evicted:
        if hasattr(old_job, "teardown"):
            old_job.teardown(old_state)
    return state


@contextlib.contextmanager
def _openmp_threads(num_threads: int | None) -> Iterator[None]:
    """OpenMP threads of the kernels called from this thread inside the block."""
    from xreduce.ext import openmp_info

    if num_threads is None:
        yield
        return
    before = openmp_info.max_threads()
    openmp_info.set_max_threads(int(num_threads))
    try:
        yield
    finally:
        openmp_info.set_max_threads(before)


def _dask_worker_threads() -> int | None:
    """OpenMP threads for a task on a dask worker: ``OMP_NUM_THREADS`` where the worker's
    environment sets it (dask's nannies and :func:`open_cluster` do), else the worker's cores
    shared by its task threads; None outside a dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, cpu_count() // max(1, int(worker.state.nthreads)))


def run_on_worker(job: ChunkJob, chunk: Any, num_threads: int | None) -> Any:
    """One task: the job's state (cached per process), then load and compute one chunk."""
    state = worker_state(job)
    threads = num_threads if num_threads is not None else _dask_worker_threads()
    with _openmp_threads(threads):
        return job.compute(state, job.load(state, chunk))


def is_dask_client(executor: Any) -> bool:
    """Whether ``executor`` is a ``dask.distributed.Client`` (without importing dask)."""
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scatter")


def run_chunks(job: ChunkJob, chunks: Iterable[Any], executor: Any = None, *,
               num_threads: int | None = None, max_in_flight: int | None = None
               ) -> Iterator[tuple[Any, Any]]:
    """Run ``job`` on every chunk; yield ``(chunk, result)`` (or ``(chunk, exception)``).

    Parameters
    ----------
    job : ChunkJob
        Picklable when ``executor`` runs elsewhere (processes, dask workers).
    chunks : iterable
        Picklable chunk descriptions (e.g. ``(start, stop)`` frame ranges).
    executor : None, concurrent.futures.Executor or dask.distributed.Client
        None: this machine (results in chunk order); otherwise results come as they finish.
    num_threads : int, optional
        OpenMP threads per task (0 or None: every core for ``executor=None``; on dask
        workers, the worker's cores divided by its task threads; else the process default).
    max_in_flight : int, optional
        Tasks submitted ahead of the results (default: four per worker thread).

    Yields
    ------
    (chunk, result or BaseException)
        A chunk whose task raised an ``Exception`` yields it; KeyboardInterrupt and
        SystemExit stop the run (pending tasks are cancelled).
    """
    if executor is None:
        try:
            yield from _run_local(job, chunks, check_num_threads(num_threads))
        finally:
            release_state(job)
        return
    threads = None if num_threads is None else check_num_threads(num_threads)
    if is_dask_client(executor):
        yield from _run_dask(job, chunks, executor, threads, max_in_flight)
    elif isinstance(executor, concurrent.futures.Executor):
        workers = getattr(executor, "_max_workers", None) or cpu_count()
        try:
            yield from _run_windowed(
                lambda chunk: executor.submit(run_on_worker, job, chunk, threads), chunks,
                max_in_flight or 4 * workers, _wait_futures)
        finally:
            release_state(job)  # a thread pool's state lives in this process
    else:
        raise TypeError(f"executor: expected None, a concurrent.futures.Executor or a "
                        f"dask.distributed.Client, got {type(executor).__name__}")


def release_state(job: ChunkJob) -> None:
    """Drop the job's state in this process (``job.teardown(state)`` first, if it has one)."""
    with _STATES_LOCK:
        entry = _STATES.pop(job.key, None)
    if entry is not None and hasattr(job, "teardown"):
        job.teardown(entry[1])


def _load_one_thread(job: ChunkJob, state: Any, chunk: Any) -> Any:
    """A load in a reader thread: its kernels (decompression) on one OpenMP thread, so that
    readers work on different chunks side by side instead of waiting on each other."""
    with _openmp_threads(1):
        return job.load(state, chunk)


#: Reader threads of a local run (``executor=None``): their loads run ahead of the compute.
LOCAL_READERS = 2


def _run_local(job: ChunkJob, chunks: Iterable[Any], num_threads: int
               ) -> Iterator[tuple[Any, Any]]:
    """Loads run ahead in reader threads; the calling thread computes, in chunk order."""
    state = worker_state(job)
    chunks = list(chunks)
    readers = max(1, min(int(getattr(job, "readers", LOCAL_READERS)), cpu_count()))
    with concurrent.futures.ThreadPoolExecutor(readers, thread_name_prefix="xreduce-read") as pool:
        pending: list[concurrent.futures.Future] = []
        ahead = readers + 1
        try:
            for i, chunk in enumerate(chunks):
                while len(pending) < ahead and i + len(pending) < len(chunks):
                    pending.append(pool.submit(_load_one_thread, job, state,
                                               chunks[i + len(pending)]))
                future = pending.pop(0)
                try:
                    loaded = future.result()
                    with _openmp_threads(num_threads):
                        result = job.compute(state, loaded)
                except Exception as exc:  # one failed chunk must not stop the others
                    result = exc
                yield chunk, result
        finally:
            for future in pending:
                future.cancel()


def _wait_futures(pending: set) -> tuple[set, set]:
    done, rest = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
    return set(done), set(rest)


def _collect_future(future: Any) -> Any:
    """The result of a finished concurrent.futures task, or its exception."""
    error = future.exception()
    return error if error is not None else future.result()


def _run_windowed(submit, chunks: Iterable[Any], window: int, wait
                  ) -> Iterator[tuple[Any, Any]]:
    """Submit up to ``window`` tasks ahead; yield each as it finishes."""
    iterator = iter(chunks)
    pending: dict[Any, Any] = {}
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < window:
                chunk = next(iterator, _END)
                if chunk is _END:
                    exhausted = True
                    break
                pending[submit(chunk)] = chunk
            if not pending:
                return
            done, _ = wait(set(pending))
            for future in done:
                yield pending.pop(future), _collect_future(future)
    finally:
        for future in pending:
            future.cancel()


_END = object()


#: Times a chunk whose task dask cancelled (its inputs lost with a worker) is submitted again.
_RESEND = 3


def _run_dask(job: ChunkJob, chunks: Iterable[Any], client: Any, num_threads: int | None,
              max_in_flight: int | None) -> Iterator[tuple[Any, Any]]:
    """Tasks through ``distributed.as_completed`` (results fetched in batches as they come),
    at most ``max_in_flight`` ahead; a task lost with its worker is re-run by dask."""
    from distributed import as_completed

    # the job travels once to every worker; tasks refer to it
    job_future = [client.scatter(job, broadcast=True, hash=False)]
    workers = sum(client.nthreads().values()) or 1
    window = max_in_flight or 8 * workers
    iterator = iter(chunks)
    chunk_of: dict[Any, tuple[int, Any]] = {}
    resent: dict[int, int] = {}
    counter = itertools.count()

    def submit(item: tuple[int, Any] | None = None) -> Any:
        if item is None:
            chunk = next(iterator, _END)
            if chunk is _END:
                return None
            item = (next(counter), chunk)
        future = client.submit(run_on_worker, job_future[0], item[1], num_threads, pure=False)
        chunk_of[future] = item
        return future

    first = [f for f in (submit() for _ in range(window)) if f is not None]
    running = as_completed(first, with_results=True, raise_errors=False)
    try:
        for future, result in running:
            number, chunk = chunk_of.pop(future)
            if future.cancelled() and resent.get(number, 0) < _RESEND:
                # dask cancels a task whose job copy was lost with a killed worker before
                # another copy could be used ("lost dependencies"): send the job again and
                # run the chunk again, a few times at most
                resent[number] = resent.get(number, 0) + 1
                job_future[0] = client.scatter(job, broadcast=True, hash=False)
                running.add(submit((number, chunk)))
                continue
            if future.status == "error":
                result = future.exception()
            yield chunk, result
            following = submit()
            if following is not None:
                running.add(following)
    finally:
        for future in chunk_of:
            future.cancel()


@contextlib.contextmanager
def open_cluster(workers: int | None = None, scheduler: str | None = None,
                 timeout_s: float = 6.0, threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``dask.distributed.Client``: connected to ``scheduler`` (an address such as
    ``"tcp://host:8786"`` or a scheduler file), else on a new ``LocalCluster`` of ``workers``
    processes (0 or None: one per core), closed at the end of the block.

    Raises
    ------
    ImportError
        dask.distributed is not installed (``pip install xreduce[dask]``).
    ConnectionError
        The scheduler did not answer within ``timeout_s``.

    Example
    -------
    >>> with open_cluster(workers=2) as client:       # doctest: +SKIP
    ...     print(client)
    """
    try:
        import distributed
    except ImportError:
        raise ImportError("workers/scheduler: dask.distributed is needed; install it with "
                          "'pip install xreduce[dask]'") from None
    if scheduler is not None:
        if workers:
            raise ValueError("workers: give either workers (a local cluster) or scheduler "
                             "(an existing cluster), not both")
        scheduler = os.fspath(scheduler)
        is_file = os.path.isfile(scheduler)
        try:
            client = (distributed.Client(scheduler_file=scheduler, timeout=f"{timeout_s}s")
                      if is_file else distributed.Client(scheduler, timeout=f"{timeout_s}s"))
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConnectionError(f"scheduler: no dask scheduler answered at {scheduler!r} "
                                  f"within {timeout_s:g} s ({exc})") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = check_num_threads(workers, "workers")
    omp = max(1, cpu_count() // (n * threads_per_worker))
    cluster = distributed.LocalCluster(
        n_workers=n, threads_per_worker=threads_per_worker, processes=True,
        dashboard_address=None, silence_logs=40, env={"OMP_NUM_THREADS": str(omp)})
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()
