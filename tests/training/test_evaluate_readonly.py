"""`evaluate` only reads a weights folder unless --update-card, which refuses a smaller sample
than the one on record unless --force; `evaluate --help` reads as a sentence."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import save_tiny_generator
from training.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.timeout(180)  # --n-per-class 2 and no TSTR keep it to seconds, not the minutes of a full run
def test_evaluate_leaves_a_copy_of_a_shipped_folder_byte_identical(tmp_path, monkeypatch, capsys):
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    folder = tmp_path / "weights" / "fashion-mnist-cwgangp"
    shutil.copytree(ROOT / "weights" / "fashion-mnist-cwgangp", folder)
    classifier = tmp_path / "weights" / "fashion-mnist-classifier"
    shutil.copytree(ROOT / "weights" / "fashion-mnist-classifier", classifier)
    before, clf_before = digests(folder), digests(classifier)
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", str(folder), "--n-per-class", "2", "--tstr-epochs", "0", "--device", "cpu",
            "--data-dir", str(FASHION)]

    assert main(args) == 0
    assert digests(folder) == before and digests(classifier) == clf_before
    report = tmp_path / "runs" / "evaluate" / "fashion-mnist-cwgangp"
    assert json.loads((report / "metrics.json").read_text())["evaluation"]["samples"] == 20
    text = (report / "report.md").read_text()
    # The report states what the test figures mean for this generator's training split.
    split = json.loads((folder / "config.json").read_text())["training_split"]
    assert ("not held out" in text) == (split in ("all", "test")) and "samples.png" in text
    assert ("held-out images" in text) == (split == "train")
    err = capsys.readouterr().err
    assert "generating 20 samples" in err and "memorisation" in err  # progress, stage by stage

    # --update-card with 20 samples over the 10,000 on record: refused, nothing written.
    assert main([*args, "--update-card"]) == 2
    err = capsys.readouterr().err
    assert "10000 samples" in err and "--force" in err
    assert digests(folder) == before


def test_update_card_writes_the_folder_and_force_allows_a_smaller_sample(classifier_dir, data_root, tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = save_tiny_generator(tmp_path / "weights" / "tiny-gan")
    base = ["evaluate", str(folder), "--classifier", str(classifier_dir), "--data-dir", str(data_root),
            "--tstr-epochs", "0", "--device", "cpu"]
    before = digests(folder)
    assert main([*base, "--n-per-class", "6", "--out", str(tmp_path / "report")]) == 0
    assert digests(folder) == before
    assert (tmp_path / "report" / "samples.png").is_file() and (tmp_path / "report" / "report.md").is_file()

    assert main([*base, "--n-per-class", "6", "--update-card"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["metrics"]["evaluation"]["n_per_class"] == 6 and (folder / "card.md").is_file()
    assert (tmp_path / "runs" / "evaluate" / "tiny-gan" / "metrics.json").is_file()  # the default --out

    assert main([*base, "--n-per-class", "4", "--update-card"]) == 2
    assert "--force" in capsys.readouterr().err
    assert json.loads((folder / "config.json").read_text())["metrics"]["evaluation"]["n_per_class"] == 6
    assert main([*base, "--n-per-class", "4", "--update-card", "--force"]) == 0
    assert json.loads((folder / "config.json").read_text())["metrics"]["evaluation"]["n_per_class"] == 4


def test_subcommand_descriptions_are_whole_sentences() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("evaluate", "augment", "compare"):
        description = subparsers[name].description
        assert description.endswith("."), (name, description)
        assert "\n" not in description
    assert "runs/evaluate" in subparsers["evaluate"].description
    assert "--update-card" in subparsers["evaluate"].format_help()
