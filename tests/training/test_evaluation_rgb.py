"""The reference classifier and the evaluation on 32x32 colour folders, as for CIFAR-10:
`classifier --dataset folder --data-dir ROOT`, then `evaluate` of a ResNet generator."""

from __future__ import annotations

import json

from gancore.weights import load_classifier
from training.cli import main
from training.export import export_run


def test_classifier_and_evaluate_on_an_rgb_folder(rgb_root, resnet_run, tmp_path):
    clf_dir = tmp_path / "clf"
    assert main(["classifier", "--dataset", "folder", "--data-dir", str(rgb_root), "--out", str(clf_dir),
                 "--epochs", "2", "--batch-size", "8", "--width", "4", "--feature-dim", "8",
                 "--device", "cpu"]) == 0
    clf = load_classifier(clf_dir)
    assert clf.config["arch_args"]["channels"] == 3 and clf.config["arch_args"]["image_size"] == 32
    assert clf.config["dataset"] == "folder" and clf.labels == sorted(clf.labels)

    run_dir, _ = resnet_run
    gen_dir = tmp_path / "weights" / "tiny-resnet"
    export_run(run_dir, gen_dir)
    assert main(["evaluate", str(gen_dir), "--classifier", str(clf_dir), "--data-dir", str(rgb_root),
                 "--n-per-class", "4", "--tstr-epochs", "0", "--device", "cpu", "--update-card",
                 "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((gen_dir / "config.json").read_text())["metrics"]
    for key in ("fid", "precision", "recall", "conditional_accuracy", "nn_train_median"):
        assert isinstance(metrics[key], float), key
    assert metrics["evaluation"]["dataset"] == "folder" and metrics["evaluation"]["samples"] == 16
    assert (gen_dir / "samples.png").is_file() and (gen_dir / "card.md").is_file()
