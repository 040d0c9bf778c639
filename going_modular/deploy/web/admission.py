"""Admission control for the web service: at most `max_queue` requests in progress, the others wait.

A request beyond `max_queue` does not get its 503 at once: it waits, first come first served, up to
`wait_s` for a slot, and only then is refused (`Overloaded`: 503 + Retry-After). Why: clients that
retry without backing off (a load balancer's retries, a `while True: post()`) answered at once send
the next request at once, and turning each away cost the server a full pass through HTTP parsing,
routing and a response in Python. With wrk holding 200 such connections, the default server
answered 1,200-2,000 503/s, each accepted request cost 2.4-2.9 times the CPU it does at 32
connections, and accepted req/s fell to 38-68% of the 32-connection figure
(`python -m benchmarks.web_load --no-backoff`; README has the table). A waiting request costs one
future, and its client sends nothing more meanwhile: one request per connection is in flight, so
the waiters are bounded by --max-connections, and its body, not read yet, stays in the socket
buffers (uvicorn stops reading a connection past 64 KB unread). Refusals then come at most at
(open connections) / `wait_s` per second however fast clients retry.

`wait_s` = 0 is the immediate refusal for deployments that prefer it (the caller then queues).
"""
from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator


class Overloaded(Exception):
    """No slot freed within the wait: the caller should answer 503 + Retry-After."""


class Admission:
    """`async with admission.slot():` around the whole of a request's work (reading its body included,
    which bounds the memory bodies take to `max_queue` of them)."""

    def __init__(self, max_queue: int, wait_s: float):
        """The limits have one home, serve.Settings (the CLI defaults); they are passed in, never defaulted here."""
        self.max_queue, self.wait_s = max_queue, wait_s
        self.admitted = 0  # requests holding a slot
        self.waiting = 0  # requests waiting for one
        self.stats = {"waited": 0, "refused": 0}  # since start: admitted after waiting; refused
        self._waiters: deque[asyncio.Future] = deque()  # first come, first served
        self.on_change = None  # called with admitted + waiting when either changes (the queue-depth gauge)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.admitted + self.waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.admitted < self.max_queue and not self.waiting:
            self.admitted += 1
            self._changed()
        else:
            await self._wait_for_slot()
        try:
            yield
        finally:
            self._release()
            self._changed()

    async def _wait_for_slot(self) -> None:
        if self.wait_s <= 0:
            self.stats["refused"] += 1
            raise Overloaded(f"The server is at capacity ({self.max_queue} requests in progress).")
        handed = asyncio.get_running_loop().create_future()  # done: a finishing request gave us its slot
        self._waiters.append(handed)
        self.waiting += 1
        self._changed()
        try:
            async with asyncio.timeout(self.wait_s):
                await handed
        except TimeoutError:
            if not handed.done() or handed.cancelled():  # else the slot came as the wait ran out: keep it
                self.stats["refused"] += 1
                raise Overloaded(f"The server is at capacity ({self.max_queue} requests in progress, "
                                 f"none freed within {self.wait_s:g} s).") from None
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self._release()  # the slot arrived, the request is gone: pass it on
            raise
        finally:
            self.waiting -= 1
            self._changed()
        self.stats["waited"] += 1

    def _release(self) -> None:
        """Hand the slot to the longest waiter still waiting, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter whose wait ran out has a cancelled future: skip it
                waiter.set_result(None)
                return
        self.admitted -= 1
