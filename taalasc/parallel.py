"""Run independent work units serially, on local processes, or on a Dask cluster.

One function, ``run_ordered``, hides the three engines. Results come back in the order of the
inputs whatever order workers finish in, so everything the caller assembles from them (a
manifest, a merged file) is the same bytes for any parallelism. At most ``window`` units are
in flight at once, which bounds the memory held by finished-but-not-yet-consumed results.

Engines:
  * serial      jobs == 1 and no scheduler: a plain loop in this process;
  * processes   jobs > 1: ``concurrent.futures.ProcessPoolExecutor`` with the "spawn" start
                method (fork would copy the parent's threads and locks, e.g. numpy's BLAS
                pool or a rich progress thread, into the children). Workers ignore Ctrl-C
                (the parent alone handles it and stops them) and die with the parent;
  * dask        ``scheduler`` is a ``tcp://host:port`` address, or a ``distributed.Client``
                / ``LocalCluster`` object (the tests pass a LocalCluster). Workers must see
                the same filesystem as this process (they read the checkpoint and write the
                die files into the output's staging folder).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
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


# The parent asks its workers to stop with this signal (Ctrl-C, an error, an early exit);
# a worker raises _Cancelled in the unit it runs, so the pool stays intact and shuts down in
# order (killing a worker breaks the pool, whose clean-up can then print tracebacks).
_CANCEL = getattr(signal, "SIGUSR1", None)
_PR_SET_PDEATHSIG = 1   # linux/prctl.h
_in_unit = False     # worker side: a unit is running
_cancelled = False   # worker side: the parent asked to stop


class _Cancelled(BaseException):
    """Raised in a worker's unit when the parent stops the run; nobody reads it."""


@contextmanager
def _spawning() -> Iterator[None]:
    """Start worker processes inside this block.

    Ctrl-C (SIGINT) is held until the block ends, then raised as KeyboardInterrupt as usual:
    starting a worker writes its start-up data down a pipe, and an interrupt in the middle
    leaves the worker reading half of it (it prints its own traceback) or the pool half
    started. SIGINT and the cancel signal are also blocked in this thread, and processes
    inherit that mask: a worker never sees Ctrl-C, not even while Python is starting up
    (a blocked SIGINT stays blocked, and _worker_start then ignores it)."""
    held = {signal.SIGINT} | ({_CANCEL} if _CANCEL is not None else set())
    caught: list[int] = []
    hold = (threading.current_thread() is threading.main_thread()
            and callable(signal.getsignal(signal.SIGINT)))
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum)) \
        if hold else None
    mask = None
    if hasattr(signal, "pthread_sigmask"):
        # Starting multiprocessing's resource tracker unblocks SIGINT in this thread when it
        # is done (bpo-33613): have it running before the mask is set.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        if mask is not None:  # a Ctrl-C that arrived meanwhile is caught just now
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if hold:
            signal.signal(signal.SIGINT, previous)
    if caught:
        previous(signal.SIGINT, None)  # Python's handler raises KeyboardInterrupt


def _worker_start(parent_pid: int) -> None:
    """First thing every local worker process runs.

    Ctrl-C at a terminal reaches every process of the group: only the parent acts on it
    (it stops the workers), so workers ignore SIGINT and print no traceback of their own.
    A worker also dies with its parent, so that a killed compile (kill -9) does not leave
    workers writing into its staging folder; the next run removes that folder."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _CANCEL is not None:
        signal.signal(_CANCEL, _on_cancel)
    if hasattr(signal, "pthread_sigmask"):  # blocked by _spawning; a cancel held meanwhile
        signal.pthread_sigmask(signal.SIG_UNBLOCK,  # runs _on_cancel now
                               {signal.SIGINT} | ({_CANCEL} if _CANCEL is not None else set()))
    _die_with_parent(parent_pid)


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel sends SIGKILL when the parent exits (PR_SET_PDEATHSIG), even while
    this process runs C code; elsewhere a thread notices the parent is gone within 0.5 s."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None
        if prctl is not None and prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # it died before the call
                os._exit(1)
            return

    def watch() -> None:
        import time

        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="taalasc-parent-watch", daemon=True).start()


def _on_cancel(signum, frame) -> None:
    global _cancelled
    _cancelled = True
    if _in_unit:
        raise _Cancelled


def _unit(fn, item):
    """Run one unit in a worker; a cancelled worker runs no more."""
    global _in_unit
    if _cancelled:
        raise _Cancelled
    _in_unit = True
    try:
        return fn(item)
    finally:
        _in_unit = False


def _worker_pid(_: int) -> int:
    import time

    time.sleep(0.02)  # long enough that the other start-up tasks go to the other workers
    return os.getpid()


def _start_all(pool, jobs: int) -> None:
    """Have every worker running before real work is handed out. The pool starts workers one
    per submission; one still booting when the run ends would not yet have _worker_start's
    signal handling."""
    seen: set[int] = set()
    for _ in range(20):  # capped: a worker that never answers is reported by the real work
        seen.update(pool.map(_worker_pid, range(jobs)))
        if len(seen) >= jobs:
            return


def _cancel_workers(pool) -> None:
    """Ask every worker to drop its unit (see _CANCEL); without the signal they finish it."""
    if _CANCEL is None:
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with suppress(OSError):   # already gone
            os.kill(process.pid, _CANCEL)


def _processes(fn, items: list, jobs: int, window: int | None) -> Iterator:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = None
    try:
        with _spawning():
            pool = ProcessPoolExecutor(max_workers=jobs,
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_start, initargs=(os.getpid(),))
            _start_all(pool, jobs)
        yield from _bounded(lambda item: pool.submit(_unit, fn, item), lambda f: f.result(),
                            items, window or 2 * jobs)
    except BaseException:  # Ctrl-C, a unit's error, the caller stopping early
        if pool is not None:
            _cancel_workers(pool)
        raise
    finally:
        if pool is not None:  # joins the workers and the pool's thread: nothing outlives it
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
