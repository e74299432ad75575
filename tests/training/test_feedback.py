"""Training on a slow machine says how long it will take and saves progress by the clock."""

from __future__ import annotations

import json

import torch

from tests.helpers import tiny_recipe
from training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from training.loop import emulated_bf16_warning, format_duration, train


def test_time_based_checkpoints_and_metrics_leave_the_weights_unchanged(tmp_path, idx_dir, capsys):
    # Intervals so short that every step is due: a checkpoint and a metrics line at every step,
    # although the step-based intervals (log_every 100, checkpoint_every 100) never come.
    by_clock = tiny_recipe(idx_dir, steps=5, log_every=100, checkpoint_every=100, keep_checkpoints=10,
                           checkpoint_minutes=1e-9, log_seconds=1e-9)
    train(by_clock, tmp_path / "clock", device="cpu", progress=False)
    out = capsys.readouterr().out
    assert "step time" in out and "ETA" in out and "the whole run of 5 steps" in out
    names = [p.name for p in list_checkpoints(tmp_path / "clock")]
    assert names == [f"ckpt-{s:09d}.pt" for s in range(1, 6)]
    records = [json.loads(line) for line in (tmp_path / "clock" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]

    plain = tiny_recipe(idx_dir, steps=5, log_every=100, checkpoint_every=100, checkpoint_minutes=0, log_seconds=0)
    train(plain, tmp_path / "plain", device="cpu", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "plain")] == ["ckpt-000000005.pt"]
    records = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5]
    a = load_checkpoint(latest_checkpoint(tmp_path / "clock"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "plain"))
    for part in ("G", "D", "G_ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"


def test_bf16_on_a_cpu_that_would_emulate_it_is_called_out(tmp_path, idx_dir, capsys, monkeypatch):
    recipe = tiny_recipe(idx_dir, steps=1, bf16=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    warning = emulated_bf16_warning(recipe, cpu, native_bf16=False)
    assert warning is not None and "--set bf16=false" in warning and "AVX512-BF16 or AMX" in warning
    assert emulated_bf16_warning(recipe, cpu, native_bf16=True) is None
    assert emulated_bf16_warning(recipe, cuda, native_bf16=False) is None
    assert emulated_bf16_warning(tiny_recipe(idx_dir, steps=1), cpu, native_bf16=False) is None
    # and train() says it on stderr before the first step, whatever this machine's CPU is
    monkeypatch.setattr("training.loop.cpu_has_native_bf16", lambda: False)
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    assert "--set bf16=false" in capsys.readouterr().err


def test_format_duration() -> None:
    assert format_duration(4.24) == "4.2 s"
    assert format_duration(95) == "1 min 35 s"
    assert format_duration(3725) == "1 h 02 min"
    assert format_duration(9000 / 0.1) == "25 h 00 min"


def test_a_run_is_not_continued_on_another_split(tmp_path, idx_dir):
    import pytest

    from training.loop import RunFolderError

    train(tiny_recipe(idx_dir, steps=1, split="all"), tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(RunFolderError, match="--set split=all"):
        train(tiny_recipe(idx_dir, steps=2, split="train"), tmp_path / "run", device="cpu", progress=False, resume=True)
