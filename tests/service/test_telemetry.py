"""FastAPI's native OpenTelemetry: off unless GAN_OPENTELEMETRY, so that a request does not look
the global providers up for nothing; on, a configured provider gets the request's span."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from service.settings import Settings
from tests.helpers import serve

trace = pytest.importorskip("opentelemetry.trace")
if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
    pytest.skip("this FastAPI has no native telemetry", allow_module_level=True)

pytestmark = pytest.mark.anyio


class CountingProvider(trace.TracerProvider):
    """A configured (not the default proxy) tracer provider that counts who asks it for a tracer."""

    def __init__(self) -> None:
        self.tracers = 0

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        self.tracers += 1
        return trace.NoOpTracer()


@pytest.mark.parametrize("enabled", [False, True])
async def test_opentelemetry_is_off_unless_asked_for(enabled: bool, make_settings: Callable[..., Settings],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    provider = CountingProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    async with serve(make_settings(opentelemetry=enabled)) as s:
        r = await s.client.post("/generate", json={"label": 0, "n": 1, "seed": 1})
        assert r.status_code == 200
    assert (provider.tracers > 0) == enabled
