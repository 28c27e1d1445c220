"""The thread count every compiled loop and BLAS call of dse uses (one setting for the process, overridden per
worker thread by :func:`map_split`). Below dse.model: the float executor's compiled convolutions and GEMMs split
their outputs over these threads, as dse.kernels' loops do."""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from dse.errors import DseError

_threads: int | None = None  # None = every core this process may run on
_local = threading.local()  # per-thread override (image-parallel workers run their kernels on one thread)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), the default thread count."""
    return len(os.sched_getaffinity(0))


def get_threads() -> int:
    """Threads the kernels use (OpenMP loops of dse._kernels and the BLAS GEMMs)."""
    return getattr(_local, "threads", None) or _threads or available_cores()


def set_threads(n: int | None) -> int:
    """Use ``n`` threads in every kernel (None = all cores); BLAS is limited to the same number so the two never
    oversubscribe the machine (they never run at the same time). Results do not depend on ``n``. Returns the count."""
    global _threads
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise DseError(f"threads = {n!r}: must be a whole number >= 1")
    _threads = None if n is None else int(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(get_threads(), user_api="blas")
    return get_threads()


@contextlib.contextmanager
def using_threads(n: int | None) -> Iterator[int]:
    """:func:`set_threads` ``(n)`` for the block (yields the count), then the setting from before it back, also when
    the block raises."""
    before = _threads
    try:
        yield set_threads(n)
    finally:
        set_threads(before)


def map_split(fn, items: list) -> list:
    """[fn(item) for item in items] on min(len(items), get_threads()) threads, each running its kernels on one thread
    with BLAS limited to one thread meanwhile (work split over independent items, e.g. images, instead of inside each
    kernel: the numpy glue between kernels runs in parallel too). Order and results are those of the plain loop."""
    n = min(len(items), get_threads())
    if n <= 1:
        return [fn(it) for it in items]
    from threadpoolctl import threadpool_limits

    def one(it):
        _local.threads = 1
        try:
            return fn(it)
        finally:
            del _local.threads
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, items))
