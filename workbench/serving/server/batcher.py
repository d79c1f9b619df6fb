"""A small dynamic batcher: requests queue up, one worker thread runs them through the model in batches.

Why: a model call has a fixed cost (the Python and TensorFlow dispatch, one pass over the weights) that a batch
of images shares, so under load the server answers more images per second by running them together. One worker
thread also means one model call at a time, which the TFLite interpreter needs (it is not thread-safe).

How: each `submit` puts (item, future) on an asyncio queue. The batching task takes the first item, then
everything already queued, up to `max_batch`; while the batch is not full it waits for more at most `max_latency`
seconds after the first item was taken. Under load the queue fills while the model runs, so batches form without
waiting; with one client the wait is the only latency added (`max_latency=0`: never wait). The model runs in the
worker thread, so the event loop keeps accepting requests meanwhile. `run_batch` answers each item on its own,
a result or an exception, so one bad image fails its own request, never its batch neighbours'.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class DynamicBatcher(Generic[Item, Result]):
    """Batches `submit`ted items for `run_batch(items) -> [result or exception per item]`.

    `on_batch(size)` is called (in the worker thread) with the size of every batch run, for the metrics.
    `start` and `stop` run inside the event loop that serves the requests.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result | BaseException]],
        max_batch: int,
        max_latency: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_latency < 0:
            raise ValueError(f"max_latency must be at least 0 seconds, got {max_latency}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_latency = max_latency
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task = asyncio.create_task(self._serve(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        while self._queue is not None and not self._queue.empty():  # nobody will answer these any more
            _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, item: Item) -> Result:
        """The result of `item`, once its batch has run; raises the exception `run_batch` gave for it."""
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _next_batch(self) -> list[tuple[Item, asyncio.Future]]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_latency
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _run(self, items: list[Item]) -> Sequence[Result | BaseException]:
        results = self.run_batch(items)
        if self.on_batch is not None:
            self.on_batch(len(items))
        return results

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [(item, future) for item, future in batch if not future.done()]  # a cancelled request: skip it
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._run, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"run_batch answered {len(results)} results for {len(live)} items")
            except asyncio.CancelledError:
                for _, future in live:
                    future.cancel()
                raise
            except Exception as error:  # a failure of the whole batch (a bug, out of memory): every item gets it
                results = [error] * len(live)
            for (_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
