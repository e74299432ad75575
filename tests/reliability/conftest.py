"""Reuses the service tests' tiny models and settings factory."""

from __future__ import annotations

from tests.service.conftest import anyio_backend, make_settings, weights_dir  # noqa: F401 - fixtures
