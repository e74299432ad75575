"""The research-study fixes: augment refuses a generator that saw the test images; the
classifier's train-subset accuracy is drawn from every class."""

from __future__ import annotations

import pytest

from training.augment import check_training_split, generator_training_split
from training.evaluate import EvaluationError


def test_training_split_is_read_as_evaluate_reads_it() -> None:
    assert generator_training_split({"recipe": {"split": "all"}}) == "all"
    assert generator_training_split({"recipe": {"split": "all"}, "training_split": "train"}) == "train"
    assert generator_training_split({}) == "unknown"


@pytest.mark.parametrize("split", ["all", "test"])
def test_augment_refuses_a_generator_trained_on_the_test_images(split: str) -> None:
    with pytest.raises(EvaluationError, match="--allow-test-leak"):
        check_training_split("g", split, allow_test_leak=False)
    check_training_split("g", split, allow_test_leak=True)  # accepted when asked for


def test_augment_accepts_a_generator_trained_on_train() -> None:
    check_training_split("g", "train", allow_test_leak=False)
