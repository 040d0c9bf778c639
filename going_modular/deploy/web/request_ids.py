"""Every answer names its request: an X-Request-ID header on every response, refusals and errors
included, so a client can quote the id of a 415 or a 503 as it can of a prediction.

A client's own X-Request-ID is kept when it is a plain token (it goes into logs and headers), else a
fresh one is made. It is kept in the request's state, where /predict reads it for its JSON and the
prediction log. Pure ASGI and outermost, so the guards' refusals (413, 408, 400) carry it too."""
from __future__ import annotations

import re
import uuid

PLAIN_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestIds:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == b"x-request-id"), b"")
        rid = given.decode() if PLAIN_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
