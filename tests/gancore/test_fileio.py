"""Weights files are byte-reproducible: the same tensors and metadata make the same bytes, so an
export of one checkpoint has one SHA-256 (safetensors alone orders its metadata differently from
one call to the next)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load, save

from gancore.fileio import atomic_save_safetensors, canonical_safetensors
from gancore.weights import sha256_file

METADATA = {"format": "cgan-service/generator", "arch": "dcgan", "note": "tréma", "z": "1"}


def test_canonical_bytes_are_one_and_load_the_same_tensors() -> None:
    tensors = {"net.1.weight": torch.randn(4, 3), "net.0.num_batches_tracked": torch.tensor(7)}
    written = {save(tensors, metadata=METADATA) for _ in range(30)}
    canonical = {canonical_safetensors(data) for data in written}
    assert len(canonical) == 1
    data = canonical.pop()
    assert canonical_safetensors(data) == data and len(data) == len(next(iter(written)))
    back = load(data)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert b'"__metadata__":{"arch":"dcgan","format":"cgan-service/generator","note":"tr' in data


def test_atomic_save_gives_one_sha_for_one_content(tmp_path: Path) -> None:
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    shas = set()
    for i in range(10):
        atomic_save_safetensors(tmp_path / f"{i}.safetensors", tensors, METADATA)
        shas.add(sha256_file(tmp_path / f"{i}.safetensors"))
    assert len(shas) == 1


def test_a_file_without_metadata_is_left_as_written() -> None:
    data = save({"w": torch.zeros(2)})
    assert canonical_safetensors(data) == data
