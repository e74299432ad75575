"""service/coalesce.py: a response's header block and its first body chunk leave in one socket
write; HEAD (no body written), streamed bodies and connection close still send every byte, in
order. Driven through uvicorn's own request cycle with a transport that records its writes, and
once through a real `python -m service`-style server on a socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl

from service.coalesce import CoalescingCycle, CoalescingHttpToolsProtocol, http_protocol

pytestmark = pytest.mark.anyio


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(method: str = "GET", keep_alive: bool = True) -> tuple[CoalescingCycle, RecordingTransport]:
    transport = RecordingTransport()
    scope = {"type": "http", "method": method, "path": "/", "headers": [], "http_version": "1.1"}
    log = logging.getLogger("test")
    c = CoalescingCycle(scope=scope, transport=transport, flow=FlowControl(transport), logger=log,  # type: ignore[arg-type]
                        access_logger=log, access_log=False, default_headers=[], message_event=asyncio.Event(),
                        expect_100_continue=False, keep_alive=keep_alive, on_response=lambda: None)
    return c, transport


async def test_headers_and_body_leave_in_one_write() -> None:
    c, t = cycle()
    await c.send({"type": "http.response.start", "status": 503,
                  "headers": [(b"content-length", b"5"), (b"retry-after", b"2")]})
    assert t.writes == []  # held until the body
    await c.send({"type": "http.response.body", "body": b"hello"})
    assert len(t.writes) == 1
    head, _, body = t.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 2" in head and body == b"hello"
    assert c.response_complete


async def test_a_streamed_body_sends_the_header_with_its_first_chunk_only() -> None:
    c, t = cycle()
    await c.send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
    await c.send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await c.send({"type": "http.response.body", "body": b"cd", "more_body": False})
    assert len(t.writes) == 2
    assert t.writes[0].startswith(b"HTTP/1.1 200 ") and t.writes[0].endswith(b"2\r\nab\r\n")
    assert t.writes[1] == b"2\r\ncd\r\n0\r\n\r\n"


async def test_head_writes_the_header_alone() -> None:
    c, t = cycle("HEAD")
    await c.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await c.send({"type": "http.response.body", "body": b""})
    assert len(t.writes) == 1 and t.writes[0].startswith(b"HTTP/1.1 200 ") and t.writes[0].endswith(b"\r\n\r\n")


async def test_connection_close_sends_everything_before_closing() -> None:
    c, t = cycle(keep_alive=False)
    await c.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await c.send({"type": "http.response.body", "body": b"ok"})
    assert len(t.writes) == 1 and t.writes[0].endswith(b"\r\n\r\nok") and t.closed


def test_uvicorn_gets_the_coalescing_protocol() -> None:
    assert http_protocol() is CoalescingHttpToolsProtocol


def test_a_real_server_answers_pipelined_requests_in_order() -> None:
    """Keep-alive and pipelining are uvicorn's: two requests in one packet, two whole answers."""

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        if scope["type"] != "http":
            return
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=http_protocol(), log_level="error",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nHEAD /second HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"/third"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
        answers = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
        assert [a.partition(b"\r\n\r\n")[2] for a in answers] == [b"/first", b"", b"/third"]
        assert b"content-length: 7" in answers[1]  # HEAD keeps its header, sends no body
    finally:
        server.should_exit = True
        thread.join(10)
