"""The service's front: one pure ASGI layer in front of FastAPI.

It does, per request, what three middlewares did before: gives the request an id (a sane
X-Request-ID from the client, or a new one) and echoes it, counts it in the metrics by route
template and status, and answers 413 for bodies over max_bytes (declared or streamed). With API
keys or a metrics token set (service/auth.py) it answers 401 for the guarded paths before
reading any body, and counts the images served and the refusals per key id; without them it
checks nothing.

It also serves the hot route itself. `POST /generate` is answered here, by the same handler the
FastAPI route uses (service/routes/generate.py), and so is a `GET /generate` whose query string
is plain (other queries go on to FastAPI, which words their errors), without the framework's
per-request layers (exception middlewares, routing, dependency resolution, the body parsed
twice): at a few hundred requests per second on two cores those layers cost more CPU than the
generator's forward. The
handler asks the batcher for admission right after the body is parsed, before any other work,
so that a retry storm costs as little as possible.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import Guard
from service.batcher import QueueFull, ShuttingDown
from service.errors import ClientGone, response_for
from service.pacing import RetryPacer
from service.ratelimit import key_id

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Request ids made here: a random per-process prefix and a counter (unique across workers and
# restarts, and far cheaper per request than uuid4, which showed in profiles under load).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)

# (method, path) -> handler(state, payload, headers, request_id, scope_state, receive) -> Response,
# or None when the request is not the handler's to answer (FastAPI answers it then). The payload is
# the body of a POST, the raw query string of a GET.
FastHandler = Callable[[Any, bytes, Headers, str, dict[str, Any], Receive], Awaitable[Response | None]]
CLIENT_CLOSED = 499  # the status recorded for a request whose client left (nginx's convention)


class BodyDeadline:
    """Ends request bodies that arrive too slowly (GAN_BODY_TIMEOUT_S). A read costs a dict entry
    per request, no timer: one sweeper task (started by the lifespan) looks at the reads in
    progress a few times a second and cancels the task of any past its deadline, which the
    reader answers with 408. A timer per request cost 6-10 us, more than the rest of a read."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.reading: dict[asyncio.Task[Any], float] = {}  # task -> perf_counter() of its request's start
        self.expired: set[asyncio.Task[Any]] = set()  # cancelled by the sweeper, not yet answered

    async def sweep(self) -> None:
        """Run for the app's life: cancel every read older than the deadline."""
        every = min(1.0, self.seconds / 4)
        while True:
            await asyncio.sleep(every)
            now = time.perf_counter()
            late = [task for task, began in self.reading.items() if now - began > self.seconds]
            for task in late:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()

    def ran_out(self, task: asyncio.Task[Any]) -> bool:
        """Whether the sweeper cancelled `task` (then the cancellation is taken back: it answers 408)."""
        if task not in self.expired:
            return False  # someone else's cancellation (shutdown): let it through
        self.expired.discard(task)
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+ counts cancellations; 3.10 has no count to take back
        if uncancel is not None:
            uncancel()
        return True


class _BodyTooLarge(Exception):
    """A streamed body grew past max_bytes."""


class ServiceFront:
    def __init__(self, app: ASGIApp, state: Any, max_bytes: int, fast_routes: dict[tuple[str, str], FastHandler],
                 guard: Guard | None = None, pacer: RetryPacer | None = None, paths: frozenset[str] = frozenset()):
        self.app = app
        self.state = state  # the FastAPI app's state: settings, registry, metrics
        self.max_bytes = max_bytes
        self.fast_routes = fast_routes
        self.guard = guard  # None: no keys, no metrics token, nothing to check
        self.pacer = pacer or RetryPacer(0.0, 0.0)  # holds repeated refusals (off by default here)
        self.deadline: BodyDeadline = state.body_deadline  # its sweeper runs in the app's lifespan
        self.paths = paths  # the app's fixed route paths: metrics labels for requests no route took

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        rid = given if given and _SAFE_ID.match(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"
        scope_state = scope.setdefault("state", {})
        scope_state["request_id"] = rid
        status = 500
        id_header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        fast = self.fast_routes.get((scope["method"], scope["path"]))
        route = scope["path"] if fast is not None else None
        try:
            guard = self.guard
            if guard is not None and scope["path"] in guard.paths and scope["method"] != "OPTIONS":
                refusal = guard.check(scope["path"], headers, scope_state, self.state.metrics)
                if refusal is not None:
                    route = scope["path"]  # one of a few fixed paths
                    await refusal(scope, receive, send_with_id)
                    return
            if scope["method"] == "HEAD":  # every GET route answers HEAD too (uptime checks, link checkers)
                # a copy: uvicorn reads the method of its own scope to send no body after the headers
                as_get = {**scope, "method": "GET"}
                try:
                    await self.app(as_get, receive, _without_body(send_with_id))
                finally:
                    if "route" in as_get:  # for the metrics' route label below
                        scope["route"] = as_get["route"]
                return
            if scope["method"] in ("GET", "OPTIONS"):
                if fast is None or scope["method"] == "OPTIONS":
                    await self.app(scope, receive, send_with_id)
                    return
                payload = scope["query_string"]
            else:
                try:
                    body = await self._read_body(headers, receive, send_with_id, started)
                except ClientGone:  # it hung up mid-body: nobody to answer, and no failure of ours
                    status = CLIENT_CLOSED
                    return
                if body is None:  # answered (413, 408)
                    return
                if fast is None:
                    await self.app(scope, _replay(body, receive), send_with_id)
                    return
                payload = body
            try:
                response = await fast(self.state, payload, headers, rid, scope_state, receive)
            except ClientGone:
                status = CLIENT_CLOSED  # nobody to answer; counted, in the metrics and below
                self.state.metrics.observe_cancelled(scope_state.get("model", "unknown"))
                return
            except Exception as exc:
                response = response_for(exc, rid, scope_state.get("model"), self.state.metrics)
                if isinstance(exc, QueueFull) and not isinstance(exc, ShuttingDown):
                    await self._refuse(scope, receive, send_with_id, response)
                    return
            if response is None:  # not the handler's to answer (a GET whose query it does not read)
                await self.app(scope, receive, send_with_id)
                return
            await response(scope, receive, send_with_id)
        finally:
            if route is None:
                matched = scope.get("route")
                # errors before routing (413, 408, a client gone) still name a route of ours
                route = getattr(matched, "path", None) or (scope["path"] if scope["path"] in self.paths else "unmatched")
            self.state.metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
            if self.guard is not None and "key_digest" in scope_state:
                self._count_key(scope_state, status)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, response: Response) -> None:
        """Send a 503 (overloaded), held first when this connection asked again at once after its
        last one (retry pacing, service/pacing.py)."""
        client = scope.get("client")  # (host, port); some servers give a list, None on a Unix socket
        connection = tuple(client) if client else None
        hold = self.pacer.hold_for(connection)
        if hold:
            self.state.metrics.observe_refusal_held()
            await asyncio.sleep(hold)
        await response(scope, receive, send)
        self.pacer.refused(connection, held=hold > 0)

    def _count_key(self, scope_state: dict[str, Any], status: int) -> None:
        """Images served per key id (set by ratelimit.charge_images), and rate-limit refusals."""
        if status == 200 and scope_state.get("images"):
            self.state.metrics.observe_key_images(key_id(scope_state["key_digest"]), scope_state["images"])
        elif status == 429:
            self.state.metrics.observe_key_refused(key_id(scope_state["key_digest"]), 429)

    async def _read_body(self, headers: Headers, receive: Receive, send: Send, started: float) -> bytes | None:
        """The whole body, or None after answering 413 (at most max_bytes + 1 of it is read) or
        408 (not all there within GAN_BODY_TIMEOUT_S of `started`); ClientGone when the client hangs up."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return None
        task = asyncio.current_task()
        assert task is not None
        self.deadline.reading[task] = started
        try:
            return await self._receive_body(receive)
        except asyncio.CancelledError:
            if not self.deadline.ran_out(task):
                raise
            await self._answer(send, 408, "body_timeout",
                               f"the request body did not arrive within {self.deadline.seconds:g} s "
                               "(GAN_BODY_TIMEOUT_S); send it whole, at once", close=True)
            return None
        except _BodyTooLarge:
            await self._reject(send, f"more than {self.max_bytes}")
            return None
        finally:
            self.deadline.reading.pop(task, None)

    async def _receive_body(self, receive: Receive) -> bytes:
        """The body's chunks joined; raises ClientGone on a disconnect, _BodyTooLarge past max_bytes."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _reject(self, send: Send, size: Any) -> None:
        await self._answer(send, 413, "body_too_large", f"request body of {size} bytes is over the limit of "
                           f"{self.max_bytes} bytes (GAN_MAX_BODY_BYTES)")

    async def _answer(self, send: Send, status: int, code: str, message: str, close: bool = False) -> None:
        """A JSON error about the body; `close`: the rest of the body may still come, so the
        connection cannot carry another request."""
        body = json.dumps({"error": code, "field": "body", "message": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _without_body(send: Send) -> Send:
    """A GET's answer as HEAD's: the same status and headers (Content-Length included), no body."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return send_head


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
