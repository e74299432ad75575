"""Fixes from a probe of the training half: run length, multi-process stop and epochs, resume."""

from __future__ import annotations

import json

import pytest

from training.cli import main


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
