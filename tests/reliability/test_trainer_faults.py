"""The trainer under faults, through its CLI in real processes: SIGKILL at random moments, bad
dataset files, and a run folder that holds another recipe's run."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gancore.files import CHECKPOINT_DIR
from tests.helpers import make_idx_folder
from training.checkpoint import list_checkpoints
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]
STEPS = 20
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def train_args(run: Path, data: Path, *extra: str, recipe: str = "fashion-mnist-cwgangp") -> list[str]:
    return ["train", "--recipe", recipe, "--out", str(run),
            "--steps", str(STEPS), "--data-dir", str(data), "--device", "cpu", "--no-progress",
            "--batch-size", "8", "--set", "split=train", "--set", "verify_data=false",
            "--set", "g_base_width=32", "--set", "d_base_width=16", "--set", "checkpoint_every=1",
            "--set", "keep_checkpoints=3", "--set", "log_every=1", "--set", "n_critic=2", *extra]


def train_cmd(run: Path, data: Path, *extra: str, recipe: str = "fashion-mnist-cwgangp") -> list[str]:
    """The same command as a real `python -m training` process."""
    return [sys.executable, "-m", "training", *train_args(run, data, *extra, recipe=recipe)]


def check_checkpoints(run: Path) -> list[int]:
    """Every ckpt-*.pt loads with weights_only=True and holds the step its name says; anything
    else in the folder (a temporary file from a killed write) is not listed as a checkpoint."""
    folder = run / CHECKPOINT_DIR
    listed = list_checkpoints(run)
    steps = []
    for path in listed:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert int(path.stem.split("-")[1]) == int(state["step"]), path
        assert {"G", "D", "G_ema", "opt_g", "opt_d", "noise_rng"} <= set(state), path
        steps.append(int(state["step"]))
    others = sorted(set(folder.iterdir()) - set(listed)) if folder.is_dir() else []
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in others), others
    return steps


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    data = make_idx_folder(tmp_path / "data")
    # The uninterrupted reference and the final resume run in this process (same CLI, same single
    # thread as the killed processes); the processes that get killed are real ones.
    assert main(train_args(tmp_path / "whole", data)) == 0

    rng = random.Random(8)  # fixed, so a failure can be replayed
    run, kills, seen_steps = tmp_path / "killed", 0, []
    for attempt in range(3):
        proc = subprocess.Popen(train_cmd(run, data, "--resume"), env=ENV, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        before = list_checkpoints(run)[-1:]
        # Wait for this process to write a checkpoint of its own, then kill it a random moment later.
        while list_checkpoints(run)[-1:] == before:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, f"attempt {attempt}: no checkpoint within 60 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            break  # finished before the kill landed
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        seen_steps.append(check_checkpoints(run))
    assert kills >= 3, f"only {kills} kills landed; checkpoints seen: {seen_steps}"
    latest = [steps[-1] for steps in seen_steps]
    assert latest == sorted(set(latest)) and latest[-1] < STEPS, seen_steps  # each run resumed, none finished

    assert main(train_args(run, data, "--resume")) == 0
    assert check_checkpoints(run)[-1] == STEPS
    a = torch.load(list_checkpoints(tmp_path / "whole")[-1], weights_only=True)
    b = torch.load(list_checkpoints(run)[-1], weights_only=True)
    assert a["step"] == b["step"] == STEPS
    for part in ("G", "D", "G_ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after {kills} kills"


def _truncate_images(folder: Path) -> None:
    path = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))


def _cut_gzip(folder: Path) -> None:
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])


def _garbage(folder: Path) -> None:
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"this is not a dataset")


@pytest.mark.parametrize("damage", [_truncate_images, _cut_gzip, _garbage], ids=["partial", "cut-gzip", "garbage"])
def test_bad_dataset_files_stop_before_training(tmp_path: Path, damage) -> None:  # noqa: ANN001
    data = make_idx_folder(tmp_path / "data")
    damage(data)
    run = tmp_path / "run"
    res = subprocess.run(train_cmd(run, data), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: "), res.stderr
    assert "train-" in res.stderr  # names the file
    assert list_checkpoints(run) == [] and not (run / "metrics.jsonl").exists()


def test_cli_refuses_a_run_folder_of_another_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_idx_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_args(run, data, "--steps", "1")) == 0
    before = {p.name: p.read_bytes() for p in (run / CHECKPOINT_DIR).iterdir()}
    recipe_before = (run / "recipe.json").read_text()
    capsys.readouterr()
    assert main(train_args(run, data, "--resume", recipe="fashion-mnist-acgan")) == 2
    assert "refusing" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (run / CHECKPOINT_DIR).iterdir()} == before
    assert (run / "recipe.json").read_text() == recipe_before
