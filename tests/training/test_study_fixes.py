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


def test_train_subset_draws_from_every_class_of_a_class_ordered_set() -> None:
    import torch

    from training.classifier import random_subset

    labels = torch.arange(10).repeat_interleave(100)  # listed class by class, as an image folder is
    images = torch.arange(1000)
    x, y = random_subset(images, labels, 200, seed=0)
    assert len(y) == 200 and set(y.tolist()) == set(range(10))  # the first 200 would be classes 0 and 1
    assert torch.equal(labels[x], y)  # images and labels stay paired
    x2, _ = random_subset(images, labels, 200, seed=0)
    assert torch.equal(x, x2)  # seeded
    assert random_subset(images, labels, 5000, seed=0)[0] is images


def test_compare_refuses_an_out_holding_an_earlier_report(tmp_path) -> None:
    from training import compare

    (tmp_path / compare.REPORT_JSON).write_text("{}")
    s = compare.StudySettings(out=tmp_path, models=["vae"])
    with pytest.raises(FileExistsError, match="--force"):
        compare.run_study(s, log=lambda *a: None)
    assert (tmp_path / compare.REPORT_JSON).read_text() == "{}"


def test_compare_curves_are_written_whole(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from training import compare

    path = tmp_path / "sub" / compare.CURVES_FILE
    compare.plot_curves([{"model": "vae", "loss": "elbo"}], tmp_path, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == [compare.CURVES_FILE]  # no temporary left


def test_aggregate_gives_means_sds_and_the_paired_difference_interval() -> None:
    from training.augment import aggregate, markdown_table, t95

    runs = [[{"k": 10, "real": a, "real_plus_generated": b, "generated_only": 0.5}]
            for a, b in [(0.70, 0.72), (0.72, 0.73), (0.74, 0.78)]]
    (row,) = aggregate(runs)
    assert row["real"] == pytest.approx(0.72) and row["real_sd"] == pytest.approx(0.02)
    assert row["real_plus_generated"] == pytest.approx(0.7433333, abs=1e-6)
    assert row["generated_only_sd"] == pytest.approx(0.0)
    # differences 0.02, 0.01, 0.04: mean 0.02333, SD 0.01528, t(2) = 4.303
    assert row["difference"] == pytest.approx(0.0233333, abs=1e-6)
    assert row["difference_ci95"] == pytest.approx(4.303 * 0.0152753 / 3**0.5, rel=1e-4)
    assert "± " in markdown_table({"rows": [row]}, 100)
    (one,) = aggregate(runs[:1])  # one seed: means only, no spread
    assert "real_sd" not in one and "difference_ci95" not in one and one["difference"] == pytest.approx(0.02)
    assert "±" not in markdown_table({"rows": [one]}, 100)
    assert t95(4) == 2.776 and t95(11) == 2.228 and t95(500) == 1.96
