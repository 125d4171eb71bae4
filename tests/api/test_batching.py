"""The micro-batcher on a real event loop: who is served together, in what order, and what one bad
item can and cannot do to the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from api.batching import Batcher


class Recorder:
    """Work that doubles numbers, refuses 13 (its own error) and breaks the whole batch on 99."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        if 99 in items:
            raise RuntimeError("the batch broke")
        return [ValueError(f"{item} refused") if item == 13 else item * 2 for item in items]


def run(coroutine):
    """On a fresh event loop; a batch that never answers fails the test instead of hanging it."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout=10))


def together(work, items, **settings) -> list:
    """What each of `items`, submitted on the same turn of the loop, got back (result or exception)."""

    async def main():
        batcher = Batcher(work, **settings)
        return await asyncio.gather(*(batcher.submit(item) for item in items), return_exceptions=True)

    return run(main())


def test_items_submitted_together_are_served_in_one_batch_in_order() -> None:
    work = Recorder()

    async def main():
        batcher = Batcher(work)
        results = await asyncio.gather(*(batcher.submit(n) for n in range(10)))
        alone = await batcher.submit(50)  # an idle batcher serves a lone item at once
        return batcher, results, alone

    batcher, results, alone = run(main())
    assert results == [n * 2 for n in range(10)] and alone == 100
    assert work.batches == [list(range(10)), [50]]
    assert (batcher.batches, batcher.items, batcher.largest) == (2, 11, 10)


def test_max_batch_splits_and_every_item_is_served() -> None:
    work = Recorder()
    assert together(work, range(10), max_batch=4) == [n * 2 for n in range(10)]
    assert [len(batch) for batch in work.batches] == [4, 4, 2]


def test_an_items_own_error_reaches_only_its_caller() -> None:
    work = Recorder()
    results = together(work, (12, 13, 14))
    assert results[0] == 24 and results[2] == 28
    assert isinstance(results[1], ValueError) and str(results[1]) == "13 refused"
    assert work.batches == [[12, 13, 14]]


def test_a_batch_that_breaks_is_served_again_item_by_item() -> None:
    work = Recorder()
    results = together(work, (1, 99, 2))
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], RuntimeError) and "broke" in str(results[1])
    assert work.batches == [[1, 99, 2], [1], [99], [2]]


def test_a_result_count_mismatch_is_an_error_not_a_silent_misalignment() -> None:
    # one result whatever the batch: each item is retried alone, where one result is right
    assert together(lambda items: [0], range(3)) == [0, 0, 0]


def test_a_cancelled_caller_is_skipped() -> None:
    work = Recorder()

    async def main():
        batcher = Batcher(work)
        gone = asyncio.ensure_future(batcher.submit(1))
        kept = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)  # both are pending
        gone.cancel()
        return await kept

    assert run(main()) == 4
    assert work.batches == [[2]]


def test_while_busy_a_batch_waits_for_company_and_an_idle_one_does_not() -> None:
    work = Recorder()

    async def main():
        loop = asyncio.get_running_loop()
        batcher = Batcher(work, wait=0.3)
        started = loop.time()
        await batcher.submit(1)  # idle: served at once
        first = loop.time() - started
        # busy now (a batch just ended): the next item waits, and one arriving meanwhile joins it
        second = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(batcher.submit(3))
        return first, await second, await third

    first, second, third = run(main())
    assert first < 0.25 and (second, third) == (4, 6)
    assert work.batches == [[1], [2, 3]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="wait"):
        Batcher(Recorder(), wait=-1)
