"""Dynamic micro-batching for the web service: concurrent requests share one forward pass.

Each request decodes and preprocesses its image in a thread pool (`prepare`), then waits for a
batch slot (`infer`). One loop on the event loop runs forward passes one at a time in a single
dedicated thread; while a pass runs, new items queue up, so the next pass takes all of them (up
to `max_batch`). A lone request therefore runs at once; the loop only waits (at most
`max_wait_ms`) when the batch is not full and other admitted requests are still preprocessing,
i.e. when there is something worth waiting for.

Admission control (how many requests may be in progress) is admission.Admission.
"""
from __future__ import annotations

import asyncio
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


class MicroBatcher:
    """Gathers preprocessed items into batches for `forward(items) -> rows` (one pass per batch)."""

    def __init__(self, forward: Callable[[list], Sequence], max_batch: int, max_wait_ms: float,
                 prepare_threads: int | None = None):
        """The limits have one home, settings.Settings (the CLI defaults); they are passed in, never defaulted here."""
        self.forward = forward
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.preparing = 0  # items decoding right now: they will join a batch soon
        self.stats = {"batches": 0, "images": 0, "largest_batch": 0}
        self._waiting: deque[tuple[object, asyncio.Future]] = deque()
        self._changed = asyncio.Event()  # an item was queued or finished preprocessing
        self._prepare_pool = ThreadPoolExecutor(prepare_threads or os.cpu_count() or 1, "prepare")
        self._forward_pool = ThreadPoolExecutor(1, "forward")  # one pass at a time: it uses every core
        self._loop_task: asyncio.Task | None = None
        self.on_batch: Callable[[int], None] | None = None  # called with each pass's size (a metric)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Called after the server has drained, so nothing is waiting any more."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._prepare_pool.shutdown(wait=True)
        self._forward_pool.shutdown(wait=True)

    async def prepare(self, fn: Callable, *args):
        """Run the CPU-bound `fn(*args)` (decode + preprocess) in the preprocessing pool."""
        self.preparing += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._prepare_pool, fn, *args)
        finally:
            self.preparing -= 1
            self._changed.set()

    async def infer(self, item):
        """The model's output row for one preprocessed item, computed in a shared batch."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._changed.set()
        return await future

    async def _gather_window(self) -> None:
        """Wait up to max_wait for requests still preprocessing, unless the batch is already full."""
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(self._waiting) < self.max_batch and self.preparing > 0:
            self._changed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._changed.wait()
            except TimeoutError:
                return

    def _next_batch(self) -> list[tuple[object, asyncio.Future]]:
        batch = []
        while self._waiting and len(batch) < self.max_batch:
            item, future = self._waiting.popleft()
            if not future.done():  # a request past its deadline was cancelled: skip its item
                batch.append((item, future))
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._changed.clear()
                await self._changed.wait()
            await self._gather_window()
            batch = self._next_batch()
            if not batch:
                continue
            try:
                rows = await loop.run_in_executor(self._forward_pool, self.forward, [item for item, _ in batch])
            except Exception as e:  # handed to every request of the batch, which reports it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.stats["batches"] += 1
            self.stats["images"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for (_, future), row in zip(batch, rows, strict=True):
                if not future.done():
                    future.set_result(row)
