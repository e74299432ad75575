"""Wrong answers `evaluate` used to give, each pinned by its number: the median of an even count,
a test split too small for the metrics, a copier hidden by test images that copy the training set,
imbalanced classes, and a train-on-synthetic figure compared with a differently trained reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gancore.images import to_unit_range
from gancore.weights import LoadedGenerator, load_classifier
from tests.helpers import EVAL_CLASSES as CLASSES
from tests.helpers import make_image_folder, save_tiny_generator
from training import metrics as M
from training.card import metric_rows, render_card
from training.classifier import accuracy, train_classifier
from training.cli import main
from training.data import ImageSet
from training.evaluate import (
    EvaluationError,
    evaluate_generator,
    memorisation_threshold,
    memorised_share,
    proportional_counts,
    sample_grid,
)


class BankGenerator(nn.Module):
    """For class c, the images of class c in `images`, in order, cycling when more are asked for."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.bank = [to_unit_range(images[labels == c]) for c in range(len(CLASSES))]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(labels), *self.bank[0].shape[1:])
        for c, bank in enumerate(self.bank):
            idx = (labels == c).nonzero().squeeze(1)
            out[idx] = bank[torch.arange(len(idx)) % len(bank)]
        return out


def _gen(images: torch.Tensor, labels: torch.Tensor) -> LoadedGenerator:
    config = {"labels": CLASSES, "latent_dim": 4, "num_classes": 3, "channels": 3, "image_size": 28}
    return LoadedGenerator("bank", BankGenerator(images, labels), config)


def _subset(s: ImageSet, idx: torch.Tensor, images: torch.Tensor | None = None) -> ImageSet:
    return ImageSet(s.name, s.images[idx] if images is None else images, s.labels[idx], s.class_names,
                    s.aliases, s.checksum)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).float() / 255


# ---------------------------------------------------------------- 4. a true median


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    assert M.median(torch.tensor([1.0, 2.0, 3.0, 10.0])) == 2.5  # torch.median says 2.0
    assert M.median(np.array([3.0, 1.0, 2.0])) == 2.0


def test_evaluation_medians_are_true_medians(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    metrics, extras = evaluate_generator(_gen(test.images, test.labels), clf, train, test, n_per_class=20,
                                         tstr_epochs=0)
    # 60 samples and 60 test images: even counts, the whole test split is the real subset
    real = M.nearest_neighbour_distances(_pixels(test.images), _pixels(train.images))
    assert metrics["nn_train_median_real"] == pytest.approx(float(np.median(real.numpy())), rel=1e-6)
    assert metrics["nn_train_median"] == pytest.approx(float(np.median(extras["nn_dist"].numpy())), rel=1e-6)
    assert metrics["nn_train_median_real"] > real.median().item()  # the lower middle value it used to be


# ---------------------------------------------------------------- 5. a test split too small


@pytest.mark.parametrize("size", [0, 1, 3])
def test_a_test_split_of_three_images_or_fewer_is_refused_by_name(classifier_dir, sets, size):
    train, test = sets
    clf = load_classifier(classifier_dir)
    small = _subset(test, torch.arange(size))
    with pytest.raises(EvaluationError, match=rf"the test split holds {size} image\(s\).*at least 4"):
        evaluate_generator(_gen(test.images, test.labels), clf, train, small, n_per_class=20, tstr_epochs=0)


def test_a_test_split_of_four_images_is_measured(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    small = _subset(test, torch.tensor([0, 1, 20, 40]))
    metrics, _ = evaluate_generator(_gen(test.images, test.labels), clf, train, small, n_per_class=4, tstr_epochs=0)
    assert 0.0 <= metrics["recall_floor"] <= 1.0


def test_the_cli_turns_a_tiny_test_split_into_one_line_and_exit_2(classifier_dir, tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", per_class=1)  # 3 test images
    folder = save_tiny_generator(tmp_path / "tiny-gan")
    rc = main(["evaluate", str(folder), "--classifier", str(classifier_dir), "--data-dir", str(root),
               "--n-per-class", "5", "--tstr-epochs", "0", "--device", "cpu", "--no-card",
               "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert rc == 2 and "the test split holds 3 image(s)" in err and "Traceback" not in err


# ---------------------------------------------------------------- 3. copies hidden by duplicated test images


def test_a_copier_is_memorised_when_test_images_duplicate_training_images(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    images = test.images.clone()
    images[[0, 20, 40]] = train.images[[0, 20, 40]]  # 5% of the test split: same class, exact duplicates
    dup = ImageSet(test.name, images, test.labels, test.class_names, test.aliases, test.checksum)
    metrics, _ = evaluate_generator(_gen(train.images, train.labels), clf, train, dup, n_per_class=20,
                                    tstr_epochs=0)
    assert metrics["memorised_share"] == 1.0  # was 0.0: the 1st percentile was 0 and `<` excluded every copy
    assert metrics["memorisation_test_copies"] == 3
    real = M.nearest_neighbour_distances(_pixels(images), _pixels(train.images))
    assert metrics["memorisation_threshold"] == pytest.approx(torch.quantile(real[real > 0], 0.01).item())
    assert metrics["memorisation_threshold"] > 0
    # the 3 duplicates plus the one of the other 57 below their 1st percentile
    assert metrics["memorised_share_real"] == pytest.approx(4 / 60)


def test_without_duplicates_the_threshold_is_the_plain_first_percentile(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    metrics, _ = evaluate_generator(_gen(test.images, test.labels), clf, train, test, n_per_class=20,
                                    tstr_epochs=0)
    real = M.nearest_neighbour_distances(_pixels(test.images), _pixels(train.images))
    assert metrics["memorisation_test_copies"] == 0
    assert metrics["memorisation_threshold"] == pytest.approx(torch.quantile(real, 0.01).item())
    assert metrics["memorised_share_real"] == pytest.approx(1 / 60)


def test_every_test_image_a_duplicate_still_counts_a_copier():
    threshold, copies = memorisation_threshold(torch.zeros(5))
    assert (threshold, copies) == (0.0, 5)
    assert memorised_share(torch.tensor([0.0, 0.0, 1.0, 2.0]), threshold) == 0.5


# ---------------------------------------------------------------- 2. unequal classes


def test_largest_remainder_allocation():
    assert proportional_counts([3, 3, 1], 10) == [4, 4, 2]  # quotas 4.29, 4.29, 1.43
    assert proportional_counts([300, 20, 300, 20], 64) == [30, 2, 30, 2]
    assert proportional_counts([1, 1, 1], 10) == [4, 3, 3]  # a tie goes to the lower index


def test_a_perfect_generator_of_unequal_classes_scores_the_real_data(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    uneven = _subset(test, torch.cat([torch.arange(0, 20), torch.arange(20, 25), torch.arange(40, 45)]))
    gen = _gen(uneven.images, uneven.labels)  # draws the test images of the requested class
    metrics, extras = evaluate_generator(gen, clf, train, uneven, n_per_class=10, tstr_epochs=0)
    # 30 samples in the test split's proportions 20:5:5 are the test split itself; uniform draws
    # (10 per class, the small classes repeated) gave a FID above 0 for a perfect generator
    assert extras["requested"].bincount().tolist() == [20, 5, 5]
    assert metrics["samples_per_class"] == dict(zip(CLASSES, [20, 5, 5], strict=True))
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["conditional_accuracy"] == pytest.approx(metrics["classifier_test_accuracy"])


def test_equal_classes_are_drawn_uniformly(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    metrics, extras = evaluate_generator(_gen(test.images, test.labels), clf, train, test, n_per_class=7,
                                         tstr_epochs=0)
    assert extras["requested"].tolist() == torch.arange(3).repeat_interleave(7).tolist()
    assert "samples_per_class" not in metrics


def test_sample_grid_of_unequal_classes_pads_short_rows_with_blanks():
    samples = torch.arange(1, 5, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    blank = torch.zeros_like(samples[:1])
    padded = torch.cat([samples[0:2], samples[3:4], blank, blank, blank])  # rows: 3 -> 2 shown, 1, 0
    assert torch.equal(sample_grid(samples, 0, 3, columns=2, counts=[3, 1, 0]), sample_grid(padded, 2, 3))


# ---------------------------------------------------------------- 1. TSTR against TRTR at the same n


class WrongClassGenerator(BankGenerator):
    """Real test images, but of class (c + 1) mod K when class c is requested."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().forward(z, (labels + 1) % len(self.bank))


def test_tstr_is_compared_with_a_real_classifier_trained_the_same_way(classifier_dir, sets, monkeypatch):
    train, test = sets
    clf = load_classifier(classifier_dir)
    clf.config["training"] = {"flip_augmentation": True, "shift_augmentation": 1}  # as CIFAR-10's records it
    calls, models = [], []

    def recording(images, labels, num_classes, **kwargs):
        calls.append((images, labels, kwargs))
        models.append(train_classifier(images, labels, num_classes, **kwargs))
        return models[-1]

    monkeypatch.setattr("training.evaluate.train_classifier", recording)
    gen = LoadedGenerator("wrong", WrongClassGenerator(test.images, test.labels), _gen(test.images, test.labels).config)
    metrics, extras = evaluate_generator(gen, clf, train, test, n_per_class=20, tstr_epochs=1, seed=3)
    (fake_x, fake_y, fake_kw), (real_x, real_y, real_kw) = calls
    assert fake_kw == real_kw  # one protocol: epochs, min steps, seed, augmentation, architecture
    assert fake_kw["flip"] is True and fake_kw["shift"] == 1 and fake_kw["epochs"] == 1 and fake_kw["seed"] == 3
    assert torch.equal(fake_x, extras["samples"]) and torch.equal(fake_y, extras["requested"])
    # the same n (60: the whole training split), real images with their own labels
    assert len(real_x) == len(fake_x)
    assert torch.equal(real_x, train.images) and torch.equal(real_y, train.labels)
    assert metrics["tstr_accuracy"] == accuracy(models[0], test.images, test.labels)[0] <= 0.1
    assert metrics["tstr_real"] == accuracy(models[1], test.images, test.labels)[0] >= 0.9


def test_tstr_skipped_clears_its_reference_too(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    metrics, _ = evaluate_generator(_gen(test.images, test.labels), clf, train, test, n_per_class=20, tstr_epochs=0)
    assert metrics["tstr_accuracy"] is None and metrics["tstr_real"] is None


def _tstr_row(metrics):
    return next(row for row in metric_rows(metrics) if row[0] == "Train on synthetic, test on real")


def test_the_card_prints_trtr_at_the_same_n_beside_tstr(tmp_path):
    metrics = {"tstr_accuracy": 0.869, "tstr_real": 0.885, "classifier_test_accuracy": 0.9397}
    assert _tstr_row(metrics)[2] == "0.8850" and "TRTR at the same n" in _tstr_row(metrics)[3]
    card = render_card(tmp_path, {"name": "m", "metrics": metrics})
    assert "0.869 on real test images (TRTR at the same n, trained the same way on as many real images: 0.885)" in card


def test_a_card_evaluated_before_trtr_still_renders_and_names_its_reference(tmp_path):
    metrics = {"tstr_accuracy": 0.869, "classifier_test_accuracy": 0.9397}  # the shipped cards' metrics
    label, value, reference, meaning = _tstr_row(metrics)
    assert (value, reference) == ("0.8690", "0.9397 (reference classifier)")
    assert "TRTR at the same n was not measured" in meaning
    card = render_card(tmp_path, {"name": "m", "metrics": metrics})
    assert "(the reference classifier, trained longer on every real training image: 0.940)" in card
