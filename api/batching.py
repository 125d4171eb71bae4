"""Micro-batching on the event loop: requests that arrive together are served together.

Scoring a return costs more in fixed costs than in its own work: a transaction, a round trip to
PostgreSQL, the feature engine's set-up. Under load, requests queue up while one is being scored; instead
of scoring them one by one, the next batch takes all of them, so each of those costs is paid once per
batch. By default no request waits for a batch to fill: a batch is served on the loop's next turn after
its first request arrives and holds whatever arrived by then (one request when the server is idle, more
the busier it gets). So the busier the server, the less each request costs, instead of the queue running
away.

`wait` trades latency for throughput: while the server is busy (the last batch ended less than `wait`
ago), a new batch waits that long for company before it is served. An idle server never waits.

The work runs on the event loop's thread, as the scoring endpoint always did (CPU work and one round trip
per batch): handing it to a worker thread was measured slower (the GIL, and a hop per batch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("recoup.batching")

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `work(items) -> results` (one result or exception per item, in order) over the items
    submitted since the last batch, at most `max_batch` at a time.

    If `work` raises for a whole batch, each item is retried alone, so one item cannot fail the others.
    `batches`, `items` and `largest` count what was served."""

    def __init__(
        self,
        work: Callable[[Sequence[Item]], Sequence[Result | Exception]],
        max_batch: int = 32,
        wait: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if wait < 0:
            raise ValueError(f"wait must not be negative, got {wait}")
        self.work = work
        self.max_batch = max_batch
        self.wait = wait
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._scheduled = False
        self._last_end = -float("inf")
        self.batches = 0
        self.items = 0
        self.largest = 0

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            if self.wait and time.perf_counter() - self._last_end < self.wait:
                loop.call_later(self.wait, self._serve)
            else:  # on the loop's next turn: every request parsed on this turn joins the batch
                loop.call_soon(self._serve)
        return await future

    def _serve(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._serve)
        batch = [(item, future) for item, future in batch if not future.done()]  # cancelled: client gone
        if not batch:
            return
        self.batches += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        results = self._run([item for item, _ in batch])
        self._last_end = time.perf_counter()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _run(self, items: list[Item]) -> Sequence[Result | Exception]:
        try:
            results = self.work(items)
            if len(results) != len(items):
                raise RuntimeError(f"the batch's work gave {len(results)} results for {len(items)} items")
            return results
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning("a batch of %d failed (%s); serving each alone", len(items), exc)
            return [result for item in items for result in self._run([item])]
