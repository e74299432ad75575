"""`evaluate --truncation`: one row per psi from the same seeded latents, psi 1 equal to the plain
evaluation, truncation that narrows the samples lowers recall, the table on the card, and bad psi
values refused by the CLI with a message."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gancore.images import to_unit_range
from gancore.sampling import truncation_threshold
from gancore.weights import LoadedGenerator, load_classifier
from tests.helpers import EVAL_CLASSES as CLASSES
from tests.helpers import save_tiny_generator
from training.cli import main
from training.evaluate import evaluate_generator

ROW_KEYS = ("conditional_accuracy", "fid", "precision", "recall", "inception_score", "memorised_share",
            "nn_train_median")


class LatentPicker(nn.Module):
    """Real test images picked by the latent: for class c, image floor(Phi(z[:, 0]) * B) of the B
    test images of class c. Truncation confines z[:, 0] to the central psi of its mass, so the
    picks to the central psi of each class's images: fewer distinct images, each a real one."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__()
        self.bank = [to_unit_range(images[labels == c]) for c in range(int(labels.max()) + 1)]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        u = torch.special.ndtr(z[:, 0])  # (N,) in (0, 1)
        out = torch.empty(len(labels), *self.bank[0].shape[1:])
        for c, bank in enumerate(self.bank):
            mask = labels == c
            out[mask] = bank[(u[mask] * len(bank)).long().clamp(max=len(bank) - 1)]
        return out


def test_one_row_per_psi_and_psi_one_is_the_plain_evaluation(classifier_dir, sets):
    train, test = sets
    clf = load_classifier(classifier_dir)
    config = {"labels": CLASSES, "latent_dim": 4, "num_classes": 3, "channels": 3, "image_size": 28}
    gen = LoadedGenerator("picker", LatentPicker(test.images, test.labels), config)
    plain, _ = evaluate_generator(gen, clf, train, test, n_per_class=20, tstr_epochs=0)
    swept, _ = evaluate_generator(gen, clf, train, test, n_per_class=20, tstr_epochs=0, truncation=[1, 0.6, 0.2])

    assert "truncation" not in plain
    assert {k: v for k, v in swept.items() if k != "truncation"} == plain  # the sweep changes no plain figure
    sweep = swept["truncation"]
    assert (sweep["n_per_class"], sweep["samples"], sweep["seed"]) == (20, 60, 0)
    rows = sweep["rows"]
    assert [r["psi"] for r in rows] == [1, 0.6, 0.2]
    assert rows[0]["threshold"] is None  # psi 1: no bound (JSON has no infinity)
    assert [r["threshold"] for r in rows[1:]] == [truncation_threshold(0.6), truncation_threshold(0.2)]
    for key in ROW_KEYS:
        assert rows[0][key] == plain[key], key
    per_class = plain["conditional_accuracy_per_class"]
    assert rows[0]["conditional_accuracy_min"] == min(per_class.values())
    assert rows[0]["conditional_accuracy_min_class"] in CLASSES

    # Every pick is a real test image, so precision stays 1 at any psi; psi 0.2 picks from the
    # central 4 of each class's 20 images, which covers far less of the test set than psi 1.
    assert all(r["precision"] == 1.0 for r in rows)
    assert rows[2]["recall"] < rows[0]["recall"] - 0.3, [r["recall"] for r in rows]


def test_evaluate_truncation_prints_stores_and_cards_the_table(classifier_dir, data_root, tmp_path, capsys):
    folder = save_tiny_generator(tmp_path / "weights" / "tiny-gan")
    base = ["evaluate", str(folder), "--classifier", str(classifier_dir), "--data-dir", str(data_root),
            "--n-per-class", "8", "--tstr-epochs", "0", "--device", "cpu", "--out", str(tmp_path / "report"),
            "--update-card"]
    assert main([*base, "--truncation", "1,0.5"]) == 0
    out = capsys.readouterr().out
    assert "truncation (latent seed 0, 24 samples per psi)" in out and "bound on abs(z)" in out

    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    metrics = json.loads((folder / "config.json").read_text())["metrics"]
    for stored in (report, metrics):
        sweep = stored["truncation"]
        assert [r["psi"] for r in sweep["rows"]] == [1.0, 0.5]
        assert sweep["command"].endswith("--truncation 1,0.5") and sweep["hardware"].startswith("CPU")
        for key in ROW_KEYS:
            assert sweep["rows"][0][key] == stored[key], key
    card = (folder / "card.md").read_text()
    assert "## Truncation: variety against fidelity" in card and "--truncation 1,0.5" in card
    assert "| 0.5 | 0.674 |" in card and "How to pick psi" in card
    assert "## Truncation" in (tmp_path / "report" / "report.md").read_text()

    # Without --truncation the report is as before, and the card drops the old sweep with the old numbers.
    assert main(base) == 0
    assert "truncation" not in json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert json.loads((folder / "config.json").read_text())["metrics"]["truncation"] is None
    assert "## Truncation" not in (folder / "card.md").read_text()
    assert "## Truncation" not in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize("value, message", [
    ("1,1.5", "psi must be in (0, 1]"),
    ("0", "psi must be in (0, 1]"),
    ("-0.5", "psi must be in (0, 1]"),
    ("nan", "psi must be in (0, 1]"),
    ("1,abc", "comma-separated numbers in (0, 1]"),
    ("0.8,0.8", "lists a psi twice"),
])
def test_truncation_outside_the_range_is_refused_with_a_message(value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "weights/fashion-mnist-cwgangp", "--truncation", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --truncation" in err and message in err and "Traceback" not in err
