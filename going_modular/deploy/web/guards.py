"""Protections below the app: open connections, request heads, bodies and Host headers."""
from __future__ import annotations

import asyncio
import socket

from fastapi import HTTPException
from starlette._utils import parse_host_header
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from going_modular.deploy.web.schema import RETRY_AFTER_S, Error, error_response
from going_modular.deploy.web.settings import settings_from_env


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol plus what it lacks against idle or half-sent connections: a cap on
    open connections (beyond it: a JSON 503, then close) and a deadline for each request head, so
    connections that never finish their headers cannot pile up until file descriptors run out."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # No Nagle delay. asyncio sets TCP_NODELAY only on sockets it knows are TCP; the listening
        # socket that --workers hands to each worker process comes back with proto 0, so without
        # this every keep-alive response there waits for the client's delayed ACK (~40 ms;
        # `python -m benchmarks.web_load --server-args "--workers 2"` shows it in p50).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = settings_from_env()
        if len(self.connections) > settings.max_connections:
            body = Error(detail=f"Too many open connections (limit {settings.max_connections}); "
                                f"retry later.").model_dump_json().encode()
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                            b"retry-after: %d\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                            % (RETRY_AFTER_S, len(body), body))
            transport.close()
            return
        self._expect_head_within(settings.header_timeout_s, waiting_after=None)

    def on_response_complete(self) -> None:
        finished = self.cycle  # captured first: a pipelined request may start inside super()
        super().on_response_complete()
        self._expect_head_within(settings_from_env().header_timeout_s, waiting_after=finished)

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _expect_head_within(self, seconds: float, waiting_after) -> None:
        def expire():
            # No new request head since the timer started (self.cycle is replaced when one arrives).
            if self.cycle is waiting_after and not self.transport.is_closing():
                self.transport.close()

        # One pending timer per connection: a timer per answered request would keep that request's
        # objects alive for header_timeout_s (thousands of them under load), and the garbage
        # collector's full passes over them stop every thread (slowest /health answer in
        # `python -m benchmarks.web_load`).
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(seconds, expire)


class BodyGuard:
    """ASGI middleware: 413 for bodies over `max_bytes` (counted as they arrive, never buffered
    first) and 408 when a body takes longer than `timeout_s` to arrive."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.too_large = f"Request body is larger than the {max_bytes / 2**20:g} MB limit."

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(413, self.too_large)(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received, complete = 0, False

        async def guarded_receive():
            nonlocal received, complete
            if complete:  # after the body only a disconnect can come: no deadline for that
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"The request body did not arrive within {self.timeout_s:g} s.") from None
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > self.max_bytes:
                raise HTTPException(413, self.too_large)  # turned into a JSON 413 by the app
            return message

        await self.app(scope, guarded_receive, send)


class AllowedHosts(TrustedHostMiddleware):
    """Starlette's Host allow-list (--allowed-hosts, '*.example.com' patterns), answering a refused
    Host with the service's JSON error body instead of plain text."""

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.allow_any:
            parsed = parse_host_header(Headers(scope=scope).get("host"))
            host = parsed.host.lower() if parsed else ""
            if not any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.allowed_hosts):
                return await error_response(400, "Invalid Host header.")(scope, receive, send)
        await self.app(scope, receive, send)
