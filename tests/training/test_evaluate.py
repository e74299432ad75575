"""`evaluate` end to end on a tiny generator and classifier, and its numbers on known cases."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from gancore.files import NOTES_FILE
from gancore.images import to_unit_range
from gancore.weights import LoadedGenerator, load_classifier
from tests.helpers import EVAL_CLASSES as CLASSES
from tests.helpers import save_tiny_generator
from training import metrics as M
from training.card import write_card
from training.classifier import accuracy, predict
from training.cli import main
from training.data import load_dataset
from training.evaluate import evaluate_generator


class OracleGenerator(nn.Module):
    """'Generates' real labelled images: for class c, the first images of class c, in order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.bank = [to_unit_range(images[labels == c]) for c in range(int(labels.max()) + 1)]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(labels), *self.bank[0].shape[1:])
        for c, bank in enumerate(self.bank):
            idx = (labels == c).nonzero().squeeze(1)
            out[idx] = bank[: len(idx)]
        return out


def _oracle(test) -> LoadedGenerator:
    config = {"labels": CLASSES, "latent_dim": 4, "num_classes": 3, "channels": 3, "image_size": 28}
    return LoadedGenerator("oracle", OracleGenerator(test.images, test.labels), config)


def test_conditional_accuracy_of_real_images_equals_classifier_accuracy(classifier_dir, data_root):
    clf = load_classifier(classifier_dir)
    train = load_dataset("folder", "train", data_root, image_size=28, channels=3)
    test = load_dataset("folder", "test", data_root, image_size=28, channels=3)
    metrics, extras = evaluate_generator(_oracle(test), clf, train, test, n_per_class=20, tstr_epochs=0)
    # The samples are the test images; scoring them both ways must agree exactly.
    expected, _ = accuracy(clf.model, test.images, test.labels)
    assert metrics["conditional_accuracy"] == pytest.approx(expected)
    assert metrics["classifier_test_accuracy"] == pytest.approx(expected)
    one_by_one = [predict(clf.model, x[None])[1].argmax().item() for x in extras["samples"]]
    overall, _ = M.conditional_accuracy(torch.tensor(one_by_one), extras["requested"], 3)
    assert overall == pytest.approx(expected)
    # Samples identical to the real test images: FID 0, perfect precision and recall.
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["nn_train_median"] == pytest.approx(metrics["nn_train_median_real"])


def test_evaluate_command_writes_metrics_card_and_pngs(classifier_dir, data_root, tmp_path):
    folder = save_tiny_generator(tmp_path / "tiny-gan")
    (folder / NOTES_FILE).write_text("Trained for zero steps: a smoke-test model.")
    out_json = tmp_path / "eval.json"
    rc = main(["evaluate", str(folder), "--classifier", str(classifier_dir), "--data-dir", str(data_root),
               "--n-per-class", "12", "--tstr-epochs", "1", "--device", "cpu", "--json", str(out_json),
               "--out", str(tmp_path / "report"), "--update-card"])
    assert rc == 0
    metrics = json.loads((folder / "config.json").read_text())["metrics"]
    for key in ("conditional_accuracy", "fid", "fid_floor", "precision", "recall", "inception_score",
                "inception_score_real", "nn_train_median", "memorised_share", "tstr_accuracy",
                "classifier_test_accuracy"):
        assert isinstance(metrics[key], float), key
    assert set(metrics["conditional_accuracy_per_class"]) == set(CLASSES)
    assert metrics["evaluation"]["n_per_class"] == 12 and metrics["evaluation"]["samples"] == 36
    assert json.loads(out_json.read_text())["fid"] == metrics["fid"]
    for png in ("samples.png", "interpolation.png", "nearest_neighbours.png"):
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (folder / "card.md").read_text()
    assert "FID" in card and "samples.png" in card and "smoke-test model" in card
    # Regenerating the card keeps the human note and the numbers.
    config = json.loads((folder / "config.json").read_text())
    assert write_card(folder, config).read_text() == card


def test_evaluate_refuses_a_classifier_for_other_labels(classifier_dir, data_root, tmp_path, capsys):
    folder = save_tiny_generator(tmp_path / "g")
    config = json.loads((folder / "config.json").read_text())
    config["labels"] = ["x", "y", "z"]
    (folder / "config.json").write_text(json.dumps(config))
    rc = main(["evaluate", str(folder), "--classifier", str(classifier_dir), "--data-dir", str(data_root),
               "--n-per-class", "5", "--device", "cpu", "--no-card"])
    assert rc == 2 and "labels" in capsys.readouterr().err


def test_evaluate_finds_the_matching_classifier_beside_the_generator(classifier_dir, data_root, tmp_path, capsys):
    weights = tmp_path / "weights"
    folder = save_tiny_generator(weights / "tiny-gan")
    shutil.copytree(classifier_dir, weights / "b-tiny-classifier")
    other = weights / "a-other-classifier"  # sorts first, but for other labels: skipped
    shutil.copytree(classifier_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["labels"] = ["x", "y", "z"]
    (other / "config.json").write_text(json.dumps(config))
    rc = main(["evaluate", str(folder), "--data-dir", str(data_root), "--n-per-class", "5",
               "--tstr-epochs", "0", "--device", "cpu", "--no-card", "--update-card", "--out", str(tmp_path / "r")])
    assert rc == 0
    assert f"classifier: {weights / 'b-tiny-classifier'}" in capsys.readouterr().out
    metrics = json.loads((folder / "config.json").read_text())["metrics"]
    assert metrics["evaluation"]["classifier"] == str(weights / "b-tiny-classifier")


def test_evaluate_without_a_matching_classifier_says_what_it_looked_at(data_root, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # no weights/ here either
    folder = save_tiny_generator(tmp_path / "alone" / "tiny-gan")
    rc = main(["evaluate", str(folder), "--data-dir", str(data_root), "--n-per-class", "5", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "no reference classifier for tiny-gan" in err and "--classifier" in err


class WrongClassGenerator(OracleGenerator):
    """Real test images, but of class (c + 1) mod K when class c is requested."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().forward(z, (labels + 1) % len(self.bank))


def _loaded(model: nn.Module) -> LoadedGenerator:
    config = {"labels": CLASSES, "latent_dim": 4, "num_classes": 3, "channels": 3, "image_size": 28}
    return LoadedGenerator("oracle", model, config)


def test_oracle_of_real_images_scores_like_the_real_data(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    metrics, _ = evaluate_generator(_loaded(OracleGenerator(test.images, test.labels)), clf, train, test,
                                    n_per_class=20, tstr_epochs=3)
    # Trained on the test images with their true labels, scored on the same images: near perfect.
    assert metrics["tstr_accuracy"] >= 0.9, metrics
    # 60 samples: one split, so IS is exact and order-free; the samples are the test images.
    assert metrics["inception_score"] == pytest.approx(metrics["inception_score_real"], rel=1e-9)
    # Samples that are unseen test images sit as far from the training set as the test images.
    assert metrics["memorised_share"] == pytest.approx(metrics["memorised_share_real"])
    assert metrics["memorised_share"] <= 0.05
    # FID 0 (the samples are the test set), the floor (train vs test) is not.
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-6) and metrics["fid_floor"] > 1e-3


def test_oracle_of_the_wrong_class_fails_conditional_accuracy_and_tstr(classifier_dir, sets):
    """A TSTR trained on real data, or scored on the synthetic set, would be high here."""
    train, test = sets
    clf = load_classifier(classifier_dir)
    gen = _loaded(WrongClassGenerator(test.images, test.labels))
    metrics, _ = evaluate_generator(gen, clf, train, test, n_per_class=20, tstr_epochs=3)
    assert metrics["classifier_test_accuracy"] >= 0.9  # the classifier can tell the classes apart
    assert metrics["conditional_accuracy"] <= 0.1, metrics
    assert metrics["tstr_accuracy"] <= 0.1, metrics
    # Class-blind figures do not see the swap: the samples are still the test images.
    assert metrics["fid"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0


def test_oracle_that_copies_the_training_set_is_memorised_and_scores_the_floor(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    gen = _loaded(OracleGenerator(train.images, train.labels))  # 20 per class: the whole train set
    metrics, extras = evaluate_generator(gen, clf, train, test, n_per_class=20, tstr_epochs=0)
    assert metrics["memorised_share"] == 1.0 and metrics["nn_train_median"] == 0.0
    assert metrics["memorised_share_real"] <= 0.05
    assert (train.images[extras["nn_index"]] == extras["samples"]).all()  # each found its own original
    # The samples are the training set (n = 60 uses all of it), so FID equals the train-vs-test floor.
    assert metrics["fid"] == pytest.approx(metrics["fid_floor"], rel=1e-9)
    assert metrics["fid_floor"] > 1e-3
    assert metrics["tstr_accuracy"] is None  # tstr_epochs=0: skipped, not a stale number
