"""Every test here is a reliability test (`pytest -m reliability` selects them, `-m "not
reliability"` skips them); the tiny served models come from tests/conftest.py."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.path).startswith(here + "/"):
            item.add_marker(pytest.mark.reliability)
