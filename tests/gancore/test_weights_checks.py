"""config.json and weights files that must be refused with ModelLoadError, not crash later."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from gancore.fileio import atomic_write_bytes
from gancore.networks import ARCHITECTURES
from gancore.weights import (
    FORMAT,
    MAX_CONFIG_BYTES,
    WEIGHTS_FILE,
    ModelLoadError,
    artefact_format,
    load_generator,
    read_config,
    save_generator,
)


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


def _tiny_generator(folder: Path, **changes: Any) -> Path:
    """A small conditional DCGAN saved to `folder`, its config.json then edited with `changes`."""
    args = {"latent_dim": 8, "image_size": 8, "channels": 1, "num_classes": 3, "base_width": 16}
    family = ARCHITECTURES["dcgan"]
    save_generator(folder, family.generator(**args), "dcgan", args, ["a", "b", "c"], {"A": "a"})
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_tiny_generator_loads(tmp_path: Path) -> None:
    assert load_generator(_tiny_generator(tmp_path / "m")).label_id("A") == 0


@pytest.mark.parametrize(("changes", "field"), [
    ({"labels": ["a", "b", "c", "d", "e"]}, "labels"),
    ({"labels": [1, 2, 3]}, "labels"),
    ({"label_aliases": {"x": "nope"}}, "label_aliases"),
    ({"label_aliases": {"x": 1}}, "label_aliases"),
    ({"label_aliases": ["a"]}, "label_aliases"),
    ({"latent_dim": 16}, "latent_dim"),
    ({"num_classes": 5}, "num_classes"),
])
def test_inconsistent_config_is_refused(tmp_path: Path, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ModelLoadError, match=f"config.json: field '{field}'"):
        load_generator(_tiny_generator(tmp_path / "m", **changes))


@pytest.mark.parametrize("name", [None, 123, "../../etc", "bad\r\nX-Injected: 1", "", "a\n"])
def test_bad_name_is_refused(tmp_path: Path, name: object) -> None:
    with pytest.raises(ModelLoadError, match="config.json: field 'name'"):
        load_generator(_tiny_generator(tmp_path / "m", name=name))


@pytest.mark.parametrize("sha", [5, True, "abc", "g" * 64])
def test_bad_sha_is_refused(tmp_path: Path, sha: object) -> None:
    with pytest.raises(ModelLoadError, match="config.json: field 'weights_sha256'"):
        load_generator(_tiny_generator(tmp_path / "m", weights_sha256=sha))


def test_sha_compares_without_case(tmp_path: Path) -> None:
    folder = _tiny_generator(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["weights_sha256"] = config["weights_sha256"].upper()
    (folder / "config.json").write_text(json.dumps(config))
    assert load_generator(folder).name == "m"


def test_atomic_write_fsyncs_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bool] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or real(fd))
    atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert synced == [False, True]  # the file, then its folder after the rename
    assert (tmp_path / "f.bin").read_bytes() == b"x"


@pytest.mark.parametrize(("make", "match"), [
    (lambda t: t.to(torch.int64), "expected floating point"),
    (lambda t: t.to(torch.bool), "expected floating point"),
    (lambda t: t.fill_(float("nan")), "NaN or inf"),
    (lambda t: t.fill_(float("inf")), "NaN or inf"),
])
def test_bad_tensors_are_refused(tmp_path: Path, make: Callable[[torch.Tensor], torch.Tensor], match: str) -> None:
    folder = _tiny_generator(tmp_path / "m")
    tensors = load_file(str(folder / WEIGHTS_FILE))
    key = next(k for k, t in tensors.items() if t.is_floating_point())
    tensors[key] = make(tensors[key].clone())
    save_file(tensors, str(folder / WEIGHTS_FILE))
    with pytest.raises(ModelLoadError, match=f"tensor '{key}'.*{match}"):
        load_generator(folder, verify=False)


def test_shape_mismatch_is_found_before_building(tmp_path: Path) -> None:
    folder = _tiny_generator(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["arch_args"]["latent_dim"] = config["latent_dim"] = 100_000
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="arch_args make"):
        load_generator(folder)
