"""One socket write per small HTTP response instead of two.

uvicorn's httptools protocol writes a response's header block when the app sends
`http.response.start` and its body when the app sends `http.response.body`: two send() calls,
and on a loopback or a fast network two wake-ups of the client for every answer. Under load most
of the service's answers are small (a 503 of ~200 bytes, a PNG of a few KB), and a py-spy profile
of a worker under a retry storm put 30% of its samples in the header write alone (BENCHMARKS.md).

`CoalescingHttpToolsProtocol` is uvicorn's own protocol with one change: each request's cycle
holds the header block and sends it with the first body write, or on its own at the end of that
`send` when uvicorn writes no body (HEAD). Nothing else of uvicorn's behaviour changes: flow
control, keep-alive, pipelining, limits and error handling are its own. Used by `python -m
service` (service/__main__.py); a uvicorn without the hook it relies on gets its plain protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
except ImportError:  # uvicorn without httptools (not uvicorn[standard]): the plain protocols serve
    HttpToolsProtocol = RequestResponseCycle = None  # type: ignore[assignment,misc]


class _Collect:
    """Stands in for the transport while uvicorn writes a header block: keeps the bytes."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))


class _Prepend:
    """Stands in for the transport while uvicorn writes the first body chunk: sends the held
    header block in the same write. Anything else (close, is_closing, ...) goes to the transport."""

    __slots__ = ("transport", "head", "sent")

    def __init__(self, transport: asyncio.Transport, head: bytes):
        self.transport = transport
        self.head = head
        self.sent = False

    def write(self, data: bytes) -> None:
        if not self.sent:
            self.sent = True
            data = self.head + data
        self.transport.write(data)

    def close(self) -> None:
        if not self.sent:
            self.sent = True
            self.transport.write(self.head)
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


if RequestResponseCycle is not None:

    class CoalescingCycle(RequestResponseCycle):  # type: ignore[misc,valid-type]
        """A request's cycle whose header block goes out with the first body write."""

        _head: bytes | None = None

        async def send(self, message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                real, collect = self.transport, _Collect()
                self.transport = collect  # type: ignore[assignment]
                try:
                    await super().send(message)
                finally:
                    self.transport = real
                if collect.parts:
                    self._head = b"".join(collect.parts)
                return
            head = self._head
            if head is None or kind != "http.response.body":
                await super().send(message)
                return
            self._head = None
            real, prepend = self.transport, _Prepend(self.transport, head)
            self.transport = prepend  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = real
                if not prepend.sent:  # no body written (HEAD) or the send failed: headers alone
                    prepend.sent = True
                    if not real.is_closing():
                        real.write(head)

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol whose request cycles coalesce header and body writes."""

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            cycle.__class__ = CoalescingCycle  # before the task runs: its send is looked up then
            super()._start_asgi_task(cycle, app)


def http_protocol() -> Any:
    """The `http` argument for uvicorn: the coalescing protocol where this uvicorn has the hook it
    needs (0.3x-0.5x's `HttpToolsProtocol._start_asgi_task`), else "auto"."""
    if HttpToolsProtocol is None or not hasattr(HttpToolsProtocol, "_start_asgi_task"):
        return "auto"
    return CoalescingHttpToolsProtocol
