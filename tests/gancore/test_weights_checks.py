"""config.json and weights files that must be refused with ModelLoadError, not crash later."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gancore.weights import FORMAT, MAX_CONFIG_BYTES, ModelLoadError, artefact_format, read_config


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(text)
    return folder


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  json.dumps({"format": FORMAT, "x": "a" * MAX_CONFIG_BYTES})])
def test_deep_or_huge_config_is_refused(tmp_path: Path, text: str) -> None:
    folder = _write(tmp_path / "m", text)
    assert artefact_format(folder) == ""
    with pytest.raises(ModelLoadError, match="config.json"):
        read_config(folder)
