"""The `idx_dir` fixture: hand-made IDX files (tests.helpers) accepted without the SHA-256 check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_idx_folder


@pytest.fixture
def idx_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = make_idx_folder(tmp_path / "fashion")
    # Test files are not the official ones: checksum verification is patched to accept them.
    monkeypatch.setattr("training.data._verify", lambda path, raw, source: None)
    return folder
