"""Run independent work units serially, on local processes, or on a Dask cluster.

One function, ``run_ordered``, hides the three engines. Results come back in the order of the
inputs whatever order workers finish in, so everything the caller assembles from them (a
manifest, a merged file) is the same bytes for any parallelism. At most ``window`` units are
in flight at once, which bounds the memory held by finished-but-not-yet-consumed results.

Engines:
  * serial      jobs == 1 and no scheduler: a plain loop in this process;
  * processes   jobs > 1: ``concurrent.futures.ProcessPoolExecutor`` with the "spawn" start
                method (fork would copy the parent's threads and locks, e.g. numpy's BLAS
                pool or a rich progress thread, into the children);
  * dask        ``scheduler`` is a ``tcp://host:port`` address, or a ``distributed.Client``
                / ``LocalCluster`` object (the tests pass a LocalCluster). Workers must see
                the same filesystem as this process (they read the checkpoint and write the
                die files into the output's staging folder).
"""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from taalasc.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


def describe_engine(jobs: int = 1, scheduler: Any = None) -> str:
    """A short human/JSON description: 'serial', 'processes:4' or 'dask:tcp://…'."""
    if scheduler is not None:
        return f"dask:{scheduler if isinstance(scheduler, str) else type(scheduler).__name__}"
    return "serial" if jobs == 1 else f"processes:{jobs}"


def run_ordered(fn: Callable[[T], R], items: Iterable[T], *, jobs: int = 1,
                scheduler: Any = None, window: int | None = None) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in input order, on the chosen engine.

    ``fn`` must be a module-level function and items and results picklable (except serial).
    The first exception raised by a unit is re-raised here, unchanged.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError("--jobs", [f"jobs must be a positive integer, not {jobs!r}"])
    items = list(items)
    if scheduler is not None:
        return _dask(fn, items, scheduler, window)
    if jobs == 1 or len(items) <= 1:
        return (fn(item) for item in items)
    return _processes(fn, items, min(jobs, len(items)), window)


def _bounded(submit: Callable[[Any], Any], result: Callable[[Any], Any], items: list,
             window: int) -> Iterator:
    pending: deque = deque()
    it = iter(items)
    for item in it:
        pending.append(submit(item))
        if len(pending) >= window:
            break
    while pending:
        yield result(pending.popleft())
        for item in it:
            pending.append(submit(item))
            break


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt as usual.

    Starting a worker writes its start-up data down a pipe; an interrupt in the middle leaves
    the worker reading half of it (it prints its own traceback) or the pool half started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _worker_pid(_: int) -> int:
    import os
    import time

    time.sleep(0.02)  # long enough that the other start-up tasks go to the other workers
    return os.getpid()


def _start_all(pool, jobs: int) -> None:
    """Have every worker running before real work is handed out. The pool starts workers one
    per submission; one still booting when Ctrl-C ends the parent dies reading its start-up
    data and prints a traceback of its own onto the user's terminal."""
    seen: set[int] = set()
    for _ in range(20):  # capped: a worker that never answers is reported by the real work
        seen.update(pool.map(_worker_pid, range(jobs)))
        if len(seen) >= jobs:
            return


def _processes(fn, items: list, jobs: int, window: int | None) -> Iterator:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with _sigint_deferred():  # a Ctrl-C now would cut a worker's start-up data in half
        pool = ProcessPoolExecutor(max_workers=jobs,
                                   mp_context=multiprocessing.get_context("spawn"))
        _start_all(pool, jobs)
    try:
        yield from _bounded(lambda item: pool.submit(fn, item), lambda f: f.result(), items,
                            window or 2 * jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _dask(fn, items: list, scheduler: Any, window: int | None) -> Iterator:
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--scheduler", ["Dask distributed is not installed: pip install "
                                          "'taalasc[cluster]'"]) from None
    own = False
    if isinstance(scheduler, Client):
        client = scheduler
    elif isinstance(scheduler, str):
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError("--scheduler", [f"cannot connect to {scheduler!r} ({exc})"]) from None
        own = True
    else:  # a cluster object (LocalCluster, SSHCluster, ...)
        client = Client(scheduler)
        own = True
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        yield from _bounded(lambda item: client.submit(fn, item, pure=False),
                            lambda f: f.result(), items, window or 2 * workers)
    finally:
        if own:
            client.close()
