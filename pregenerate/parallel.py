"""Worker processes with bounded, ordered results: the reader never runs ahead of the workers by more than a
window of tasks, so memory stays flat however large the input."""
from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_START_SECONDS = 600


@contextlib.contextmanager
def worker_pool(num_workers: int, initializer: Callable[..., None], initargs: tuple):
    """A spawn pool of `num_workers` processes, or None to run in this process when num_workers <= 1."""
    if num_workers <= 1:
        initializer(*initargs)
        yield None
        return
    # The Rust tokenizer's own threads would compete with the worker processes for the same cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    context = mp.get_context("spawn")
    ready = context.Barrier(num_workers + 1)
    with context.Pool(num_workers, _initialize, (ready, initializer, initargs)) as pool:
        try:
            ready.wait(timeout=_START_SECONDS)  # every worker set up, as the in-process path is: timings compare
        except threading.BrokenBarrierError as e:
            raise RuntimeError(f"the {num_workers} worker processes did not start within {_START_SECONDS} s") from e
        yield pool


def _initialize(ready, initializer: Callable[..., None], initargs: tuple) -> None:
    initializer(*initargs)
    ready.wait(timeout=_START_SECONDS)


def ordered_map(pool, fn: Callable[[Any], Any], items: Iterable[Any], window: int) -> Iterator[Any]:
    """fn over items in order, at most `window` tasks in flight."""
    if pool is None:
        for item in items:
            yield fn(item)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()
