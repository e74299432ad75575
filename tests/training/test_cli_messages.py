"""The trainer's CLI says what to do: a missing label, a bare model name, a misspelt recipe field,
and a recipe list with costs."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import tiny_recipe
from training.cli import main
from training.export import export_run
from training.loop import train
from training.recipe import available_recipes


def _weights(tmp_path: Path, idx_dir: Path) -> Path:
    train(tiny_recipe(idx_dir, steps=1), tmp_path / "run", device="cpu", progress=False)
    export_run(tmp_path / "run", tmp_path / "weights" / "tiny-model")
    return tmp_path / "weights" / "tiny-model"


def test_sample_messages(tmp_path, idx_dir, monkeypatch, capsys):
    folder = _weights(tmp_path, idx_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(folder), "--out", "a.png"]) == 2
    err = capsys.readouterr().err
    assert "None" not in err and "pass --label" in err and "sneaker" in err

    # A bare model name is looked up in weights/.
    assert main(["sample", "tiny-model", "--label", "sneaker", "--n", "2", "--seed", "1", "--out", "b.png"]) == 0
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", "no-such-model", "--label", "sneaker", "--out", "c.png"]) == 2
    err = capsys.readouterr().err
    assert "weights/no-such-model" in err and "tiny-model" in err


def test_export_records_the_split(tmp_path, idx_dir):
    import json

    config = json.loads((_weights(tmp_path, idx_dir) / "config.json").read_text())
    assert config["training_split"] == "train" and config["test_figures_held_out"] is True


def test_unknown_recipe_field_suggests_close_ones(capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", "--set", "lr=1e-4", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe field 'lr'" in err and "lr_g" in err and "lr_d" in err


def test_recipes_prints_one_line_each_with_measured_cost(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(available_recipes())
    default = next(line for line in lines if line.startswith("fashion-mnist-cwgangp:"))
    assert "fashion-mnist/train" in default and "9,000 steps" in default and "GPU: 13.3 steps/s" in default
    assert all("CPU:" in line and "GPU:" in line for line in lines)


def test_export_over_evaluated_weights_says_their_figures_are_gone(tmp_path, idx_dir, capsys):
    import json

    folder = _weights(tmp_path, idx_dir)
    assert main(["export", str(tmp_path / "run"), "--name", "tiny-model",
                 "--weights-dir", str(folder.parent), "--force"]) == 0
    assert "note:" not in capsys.readouterr().out  # nothing on record: nothing to say
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    recorded = f"python -m training evaluate {folder} --n-per-class 1000 --seed 0 --truncation 1,0.9,0.8,0.7 --update-card"
    config["metrics"] = {"evaluation": {"n_per_class": 1000, "command": recorded}, "truncation": {"rows": []}}
    config_path.write_text(json.dumps(config))
    # the same weights again keep the figures that measured them
    assert main(["export", str(tmp_path / "run"), "--name", "tiny-model",
                 "--weights-dir", str(folder.parent), "--force"]) == 0
    assert "note:" not in capsys.readouterr().out
    assert json.loads(config_path.read_text())["metrics"]["evaluation"] == {"n_per_class": 1000, "command": recorded}
    # other weights (a config that measured an older file) lose them, and the CLI says so
    config = json.loads(config_path.read_text())
    config["weights_sha256"] = "0" * 64
    config_path.write_text(json.dumps(config))
    (folder / "card.md").write_text("# tiny-model\n\nFID 0.5 (the old weights' figures)\n")
    (folder / "samples.png").write_bytes(b"\x89PNG old weights' samples")
    assert main(["export", str(tmp_path / "run"), "--name", "tiny-model",
                 "--weights-dir", str(folder.parent), "--force"]) == 0
    out = capsys.readouterr().out
    assert "evaluation on record (figures and a truncation table)" in out
    assert f"python -m training evaluate {folder} --n-per-class 1000 --seed 0 --truncation 1,0.9,0.8,0.7" in out
    assert "evaluation" not in json.loads(config_path.read_text()).get("metrics", {})
    # neither the card nor the images keep describing the replaced weights
    card = (folder / "card.md").read_text()
    assert "FID 0.5" not in card and "Not evaluated yet" in card
    assert not (folder / "samples.png").exists()


def test_export_counts_epochs_as_the_training_log_does(tmp_path, idx_dir):
    import json

    # batch 24 leaves a partial batch per pass, which the loop drops: an epoch is whole batches
    train(tiny_recipe(idx_dir, steps=7, batch_size=24, log_every=1), tmp_path / "run", device="cpu", progress=False)
    config = export_run(tmp_path / "run", tmp_path / "weights" / "m")
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in logged if row.get("step") == 7][-1]
    assert config["training"]["epochs"] == round(last["epoch"], 3)
    n = config["dataset"]["size"]
    assert n % 24, "the test needs a dataset that batch 24 does not divide"
    assert config["training"]["epochs"] == round(7 * 2 / (n // 24), 3)
