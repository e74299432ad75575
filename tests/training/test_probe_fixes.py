"""Fixes from a probe of the training half: run length, multi-process stop and epochs, resume."""

from __future__ import annotations

import json

import pytest

from tests.helpers import tiny_recipe
from training import distributed as dist_utils
from training.cli import main
from training.distributed import Dist
from training.loop import train
from training.recipe import Recipe


@pytest.mark.parametrize("flags", [["--epochs", "2"], ["--set", "epochs=2"]])
def test_epochs_clear_a_named_recipes_steps(flags, capsys):
    # fashion-mnist-cwgangp sets steps, which overrode any epochs given before
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", *flags, "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["epochs"] == 2.0 and resolved["steps"] is None


@pytest.mark.parametrize("flags", [["--epochs", "2", "--set", "steps=10"],
                                   ["--set", "epochs=2", "--steps", "10"],
                                   ["--set", "epochs=2", "--set", "steps=10"]])
def test_epochs_and_steps_together_are_refused(flags, capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", *flags, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not both" in err and err.count("\n") == 1


def test_epochs_with_steps_null_is_accepted(capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", "--epochs", "3",
                 "--set", "steps=null", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] is None


def test_steps_alone_still_set_the_length(capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", "--steps", "7", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 7


class OneProcessAsTwo(Dist):
    """Rank 0 of a two-process group whose collectives are this process's own values: enough for
    what the loop derives from world_size, without starting a second process."""

    def barrier(self) -> None:
        pass

    def all_reduce_grads(self, module) -> None:
        pass

    def any_flags(self, *flags: bool) -> tuple[bool, ...]:
        return tuple(bool(f) for f in flags)

    def gather_rng(self, state):
        return [state, state]

    def shutdown(self) -> None:
        pass


def test_total_steps_count_epochs_of_all_processes():
    recipe = Recipe(epochs=2.0, batch_size=16, n_critic=2)
    assert recipe.total_steps(640) == 40  # 2 * 640 / 16 critic batches, 2 per step
    assert recipe.total_steps(640, world_size=2) == 20  # each step takes 2 x 16 images
    assert Recipe(steps=7).total_steps(640, world_size=4) == 7


def test_an_epoch_under_two_processes_is_one_pass_over_the_data(tmp_path, idx_dir, monkeypatch):
    monkeypatch.setattr(dist_utils, "init", lambda device: OneProcessAsTwo(enabled=True, world_size=2))
    recipe = tiny_recipe(idx_dir, steps=None, epochs=1.0)  # 64 images, batch 16, n_critic 2
    result = train(recipe, tmp_path / "run", device="cpu", progress=False)
    assert result.total_steps == 1  # 64 / (16 x 2) = 2 critic batches per epoch; was 2 steps (2 epochs)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["epoch"] == 1.0
