"""The `served` fixture: the app on the tiny models of tests/conftest.py, with a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from service.settings import Settings
from tests.helpers import Served, serve


@pytest.fixture
async def served(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    async with serve(make_settings()) as s:
        yield s
