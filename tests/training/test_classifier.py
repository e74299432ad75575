"""The reference classifier: shapes, save-then-load, batched equals alone, shift and flip augmentation."""

from __future__ import annotations

import json

import pytest
import torch

from gancore.networks.classifier import Classifier
from gancore.weights import ClassifierLoadError, ModelLoadError, load_classifier
from training.classifier import predict, random_flip, random_shift


def test_features_and_logits_have_the_promised_shapes():
    model = Classifier(channels=3, image_size=32, num_classes=7, width=4, feature_dim=12).eval()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    assert model.features(x).shape == (5, 12)
    assert model(x).shape == (5, 7)


def test_save_then_load_gives_the_same_outputs(classifier_dir):
    loaded = load_classifier(classifier_dir)
    x = torch.randint(0, 256, (6, 3, 28, 28), dtype=torch.uint8)
    f1, p1 = predict(loaded.model, x)
    f2, p2 = predict(load_classifier(classifier_dir).model, x)
    assert torch.equal(f1, f2) and torch.equal(p1, p2)
    assert p1.sum(1).sub(1).abs().max() < 1e-5


def test_batched_equals_alone(classifier_dir):
    model = load_classifier(classifier_dir).model
    x = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    f_all, _ = predict(model, x)
    f_one = torch.cat([predict(model, x[i : i + 1])[0] for i in range(4)])
    assert torch.allclose(f_all, f_one, atol=1e-5)


def test_corrupt_weights_are_refused(classifier_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((classifier_dir / "config.json").read_text())
    (bad / "classifier.safetensors").write_bytes(b"not weights")
    with pytest.raises(ClassifierLoadError, match="SHA-256"):
        load_classifier(bad)
    config = json.loads((bad / "config.json").read_text())
    config["format"] = "something-else"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a classifier config"):
        load_classifier(bad)


def test_random_shift_translates_and_fills_with_background():
    x = torch.full((3, 1, 6, 6), -1.0)
    x[:, :, 2, 3] = 1.0
    g = torch.Generator().manual_seed(0)
    y = random_shift(x, 2, g)
    assert y.shape == x.shape and (y == 1.0).sum() == 3  # each bright pixel moved, none lost
    assert (y != 1.0).logical_and(y != -1.0).sum() == 0
    assert torch.equal(random_shift(x, 0, g), x)


def test_random_flip_mirrors_about_half_and_keeps_the_rest():
    x = torch.arange(400 * 3 * 4 * 4, dtype=torch.float32).reshape(400, 3, 4, 4)
    y = random_flip(x, torch.Generator().manual_seed(0))
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((mirrored ^ kept).all())  # every image is one or the other, whole
    assert 160 < int(mirrored.sum()) < 240


def test_saved_files_are_world_readable(classifier_dir):
    # A server or evaluator running as another user (the container's) must be able to read them.
    for name in ("classifier.safetensors", "config.json"):
        assert (classifier_dir / name).stat().st_mode & 0o777 == 0o644, name
    assert not list(classifier_dir.glob(".*tmp"))  # no temporary files left behind


def test_a_grayscale_classifier_for_an_image_folder(data_root, tmp_path, capsys):
    """A classifier for an image folder was always RGB, so a grayscale generator trained on the
    same folder had none to be evaluated with: --channels 1 (and --image-size) make one."""
    from training.cli import main

    out = tmp_path / "gray-classifier"
    assert main(["classifier", "--dataset", "folder", "--data-dir", str(data_root), "--channels", "1",
                 "--image-size", "16", "--epochs", "1", "--batch-size", "16", "--width", "4",
                 "--feature-dim", "8", "--threads", "1", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["arch_args"]["channels"], config["arch_args"]["image_size"]) == (1, 16)
    assert config["labels"] == sorted(config["labels"]) and len(config["labels"]) == 3
