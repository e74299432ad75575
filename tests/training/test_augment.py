"""The augmentation study on the tiny image-folder dataset."""

from __future__ import annotations

import json

from tests.helpers import save_tiny_generator
from training.augment import markdown_table, per_class_subset
from training.cli import main
from training.data import load_dataset


def test_per_class_subset_takes_k_of_each_class(data_root):
    train = load_dataset("folder", "train", data_root, image_size=28, channels=3)
    x, y = per_class_subset(train, 4, seed=0)
    assert x.shape[0] == 12 and y.bincount().tolist() == [4, 4, 4]
    assert per_class_subset(train, 4, seed=0)[0].equal(x)


def test_augment_command_prints_a_table_and_writes_json(data_root, tmp_path, capsys):
    folder = save_tiny_generator(tmp_path / "g")
    out = tmp_path / "augment.json"
    rc = main(["augment", "--generator", str(folder), "--dataset", "folder", "--data-dir", str(data_root),
               "--k", "2,5", "--generated-per-class", "4", "--steps", "5", "--width", "4",
               "--feature-dim", "8", "--device", "cpu", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [r["k"] for r in result["rows"]] == [2, 5]
    for row in result["rows"]:
        assert 0.0 <= row["real"] <= 1.0 and 0.0 <= row["real_plus_generated"] <= 1.0
    assert markdown_table(result, 4) in capsys.readouterr().out


def test_augment_takes_the_dataset_its_generator_trained_on(data_root, tmp_path, capsys):
    """Without --dataset, the study used Fashion-MNIST whatever the generator: a folder model then
    failed on labels after loading 70,000 images. The recipe in config.json says which it was."""
    from gancore.files import CONFIG_FILE

    folder = save_tiny_generator(tmp_path / "g")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["recipe"] = {"name": "mine", "dataset": "folder"}
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    rc = main(["augment", "--generator", str(folder), "--data-dir", str(data_root), "--k", "2",
               "--generated-per-class", "4", "--steps", "3", "--width", "4", "--feature-dim", "8",
               "--device", "cpu", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    assert "| 2 |" in capsys.readouterr().out


def test_a_folder_models_card_says_its_data_dir():
    from pathlib import Path

    from training.card import reproduce_commands

    config = {"name": "mine", "recipe": {"name": "fashion-mnist-cwgangp", "dataset": "folder", "channels": 3},
              "metrics": {}}
    train, export, evaluate = reproduce_commands(config, Path("weights/mine"))
    assert "--data-dir ROOT" in train and "--data-dir ROOT" in evaluate and "--name mine" in export
