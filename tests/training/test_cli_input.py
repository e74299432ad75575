"""Bad input to the trainer's CLI gets one clear line and exit 2, never a traceback: `--set` values
parsed by each recipe field's type, sample's --out, --seed and --nrow, export's --name and an
existing weights folder, and a --data-dir that does not exist."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gancore.weights import InvalidModelName, check_model_name
from tests.helpers import tiny_recipe, write_model
from training.cli import main
from training.data import DatasetError, load_idx_dataset
from training.export import export_run
from training.loop import train
from training.recipe import Recipe, load_recipe

RECIPE = "fashion-mnist-cwgangp"
MAX_SEED = 2**63 - 1


def _dry_run(*sets: str) -> list[str]:
    return ["train", "--recipe", RECIPE, "--out", "unused", "--dry-run", *(a for s in sets for a in ("--set", s))]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of a command line that argparse refuses (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------- train --set: every field by its type


def _as_text(value: object) -> str:
    """A field's value as a user would type it after --set KEY=."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return ",".join(repr(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Recipe)])
def test_set_takes_every_fields_own_value_back(field, capsys):
    recipe = load_recipe(RECIPE)
    assert main(_dry_run(f"{field}={_as_text(getattr(recipe, field))}")) == 0
    expected = recipe.to_dict()
    if field == "epochs":  # a length in epochs clears the recipe's steps, which would override it
        expected["steps"] = None
    assert json.loads(capsys.readouterr().out) == expected


NOT_TEXT = [f.name for f in dataclasses.fields(Recipe) if "str" not in str(f.type)]


@pytest.mark.parametrize("field", NOT_TEXT)
def test_set_refuses_a_word_for_every_field_that_is_not_text(field, capsys):
    assert main(_dry_run(f"{field}=abc")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}: expected ") and "'abc'" in err and "Traceback" not in err


@pytest.mark.parametrize("setting,expected", [
    ("lr_g=abc", "error: lr_g: expected a finite number, got 'abc'"),
    ("lr_d=nan", "error: lr_d: expected a finite number, got 'nan'"),
    ("epochs=inf", "error: epochs: expected a finite number, got 'inf'"),
    ("betas=abc", "error: betas: expected 2 numbers separated by commas, e.g. 0.5,0.9, got 'abc'"),
    ("betas=0.5", "error: betas: expected 2 numbers separated by commas, e.g. 0.5,0.9, got '0.5'"),
    ("betas=0.5,0.9,0.99", "error: betas: expected 2 numbers"),
    ("bf16=maybe", "error: bf16: expected true or false, got 'maybe'"),
    ("steps=abc", "error: steps: expected an integer or null, got 'abc'"),
    ("seed=1.5", "error: seed: expected an integer, got '1.5'"),
    ("n_critic=none", "error: n_critic: expected an integer, got 'none'"),
    ("n_critic=null", "error: n_critic: cannot be null"),
    ("extra=[1]", "error: extra: expected a JSON object, got '[1]'"),
    # the loop derives seeds as seed * 100003 + epoch: a larger one overflowed torch's 64 bits at start
    ("seed=1099511627777", "error: recipe 'fashion-mnist-cwgangp': seed must be in 0..1099511627776"),
    ("seed=-1", "error: recipe 'fashion-mnist-cwgangp': seed must be in 0..1099511627776"),
])
def test_set_messages_name_the_field_and_what_it_takes(setting, expected, capsys):
    assert main(_dry_run(setting)) == 2
    assert capsys.readouterr().err.startswith(expected)


def test_set_parses_numbers_tuples_bools_optionals_and_words(capsys):
    assert main(_dry_run("lr_g=1e-4", "epochs=3", "betas=[0.0, 0.99]", "bf16=yes", "steps=none",
                         "data_dir=null", "conditioning=none", "name=123", 'extra={"note": 1}')) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["lr_g"], out["epochs"], out["betas"], out["bf16"]) == (1e-4, 3.0, [0.0, 0.99], True)
    assert (out["steps"], out["data_dir"], out["conditioning"], out["name"]) == (None, None, "none", "123")
    assert out["extra"] == {"note": 1}


def test_a_recipe_file_with_a_wrongly_typed_field_is_refused(tmp_path, capsys):
    path = tmp_path / "mine.json"
    for fields, expected in (({"lr_g": "abc"}, "error: lr_g: expected a finite number"),
                             ({"betas": [0.5, True]}, "error: betas: expected 2 numbers"),
                             ({"n_critic": 2.5}, "error: n_critic: expected an integer")):
        path.write_text(json.dumps(fields))
        assert main(["train", "--recipe", str(path), "--out", "unused", "--dry-run"]) == 2
        assert capsys.readouterr().err.startswith(expected)


# ---------------------------------------------------------------- sample: --out, --seed, --nrow


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "weights" / "tiny"
    write_model(folder, seed=0, channels=1, image_size=28, labels=["a", "b"])
    return folder


def _sample(model: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", str(model), "--label", "a", "--n", "2", "--out", str(out), *extra]


def test_sample_refuses_a_folder_as_out(model, tmp_path, capsys):
    folder = tmp_path / "grids"
    folder.mkdir()
    err = _usage_error(_sample(model, folder, "--seed", "1"), capsys)
    assert "argument --out" in err and "is a folder" in err and str(folder / "grid.png") in err
    assert list(folder.iterdir()) == []
    assert main(_sample(model, folder / "grid.png", "--seed", "1")) == 0  # the README's way: a file


def test_sample_seeds_are_the_services_range(model, tmp_path, capsys):
    from service.schemas import MAX_SEED as SERVICE_MAX_SEED

    assert SERVICE_MAX_SEED == MAX_SEED  # a CLI grid can be asked of the service again
    for seed in ("-1", str(MAX_SEED + 1), str(2**64), "1.5", "abc"):
        err = _usage_error(_sample(model, tmp_path / "x.png", "--seed", seed), capsys)
        assert "argument --seed" in err and f"0..{MAX_SEED}" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
    for seed in ("0", str(MAX_SEED)):
        assert main(_sample(model, tmp_path / f"{seed}.png", "--seed", seed)) == 0
        assert (tmp_path / f"{seed}.png").read_bytes()[:4] == b"\x89PNG"


def test_sample_truncates_as_the_service_does(model, tmp_path, capsys):
    """--truncation draws the service's truncated latents: each tile is the model's image of
    seeded_latents(seed, n, latent_dim, psi), and a value outside (0, 1] is one usage line."""
    import torch

    from gancore.images import make_grid, to_uint8
    from gancore.sampling import seeded_latents
    from gancore.weights import load_generator
    from tests.helpers import png_array

    out = tmp_path / "cut.png"
    assert main(["sample", str(model), "--label", "b", "--n", "3", "--seed", "7", "--truncation", "0.5",
                 "--nrow", "3", "--out", str(out)]) == 0
    assert "seed 7, truncation 0.5" in capsys.readouterr().out
    gen = load_generator(model, "cpu")
    with torch.inference_mode():
        tiles = to_uint8(gen.model(seeded_latents(7, 3, gen.latent_dim, 0.5), torch.full((3,), 1)))
    expected = make_grid(tiles, nrow=3)[0].numpy()
    assert (png_array(out.read_bytes()) == expected).all()
    plain = tmp_path / "plain.png"
    assert main(["sample", str(model), "--label", "b", "--n", "3", "--seed", "7", "--nrow", "3",
                 "--out", str(plain)]) == 0
    assert (png_array(plain.read_bytes()) != expected).any()  # psi 0.5 moved something
    for psi in ("0", "1.5", "nan", "0.5,0.7", "x"):
        err = _usage_error(_sample(model, tmp_path / "bad.png", "--truncation", psi), capsys)
        assert "argument --truncation" in err and "Traceback" not in err
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("nrow", ["0", "-2"])
def test_sample_refuses_an_empty_row(model, tmp_path, nrow, capsys):
    err = _usage_error(_sample(model, tmp_path / "x.png", "--nrow", nrow), capsys)
    assert "argument --nrow" in err and "at least 1" in err
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- export: --name, an existing folder


@pytest.mark.parametrize("name", ["snow✓", "bad name", "../evil", "..", ".hidden", "-x", "a/b", "", "x" * 65,
                                  "ok\n"])
def test_model_names_follow_one_rule(name, tmp_path, capsys):
    with pytest.raises(InvalidModelName, match="letters, digits"):
        check_model_name(name)
    err = _usage_error(["export", str(tmp_path / "run"), f"--name={name}",  # "=": "-x" is no flag
                        "--weights-dir", str(tmp_path / "weights")], capsys)
    assert "argument --name" in err and "starting with a letter or digit" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, inside or outside


@pytest.mark.parametrize("name", ["fashion-mnist-cwgangp", "m", "My_model.v2", "0" * 64])
def test_good_model_names_pass(name):
    assert check_model_name(name) == name


def test_export_keeps_an_existing_weights_folder_unless_forced(tmp_path, idx_dir, capsys):
    train(tiny_recipe(idx_dir, steps=1), tmp_path / "run", device="cpu", progress=False)
    shipped = tmp_path / "weights" / "shipped"
    export_run(tmp_path / "run", shipped)
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    argv = ["export", str(tmp_path / "run"), "--name", "shipped", "--weights-dir", str(tmp_path / "weights")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{shipped} already exists" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before
    assert main([*argv, "--force"]) == 0
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------- train --data-dir that does not exist


def test_a_missing_data_dir_is_refused_not_passed_over(tmp_path, idx_dir, monkeypatch, capsys):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(idx_dir))  # good files elsewhere must not be used instead
    missing = tmp_path / "nonexistent"
    with pytest.raises(DatasetError, match="does not exist"):
        load_idx_dataset("fashion-mnist", "train", missing)
    run = tmp_path / "run"
    assert main(["train", "--recipe", RECIPE, "--out", str(run), "--steps", "1", "--data-dir", str(missing),
                 "--no-progress", "--set", "verify_data=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: data folder {missing} (--data-dir") and "does not exist" in err
    assert not run.exists()
    assert len(load_idx_dataset("fashion-mnist", "train", None)) == 64  # not given: the lookup goes on


# ---------------------------------------------------------------- outputs that must not be overwritten


def test_classifier_out_never_replaces_a_generator_and_a_classifier_only_with_force(model, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    argv = ["classifier", "--epochs", "1", "--width", "4", "--feature-dim", "4", "--out"]
    assert main([*argv, str(model)]) == 2  # before: its config.json became a classifier's
    assert "holds a generator" in capsys.readouterr().err
    assert main([*argv, str(model), "--force"]) == 2
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    clf = tmp_path / "clf"
    (clf).mkdir()
    (clf / "config.json").write_text(json.dumps({"format": "cgan-service/classifier"}))
    assert main([*argv, str(clf)]) == 2
    assert "already holds a classifier; pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--epochs", "-1"), ("--batch-size", "0"),
                                        ("--lr", "nan"), ("--lr", "0"), ("--width", "0"), ("--threads", "-1")])
def test_classifier_numbers_are_checked_before_any_work(flag, value, tmp_path, capsys):
    err = _usage_error(["classifier", flag, value, "--out", str(tmp_path / "clf")], capsys)
    assert f"argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "clf").exists()


def test_evaluate_out_and_json_are_checked_before_the_evaluation(model, tmp_path, capsys):
    other = tmp_path / "weights" / "other"
    write_model(other, seed=1, channels=1, image_size=28, labels=["a", "b"])
    pictures = {p.name: p.read_bytes() for p in other.iterdir()}
    assert main(["evaluate", str(model), "--out", str(other)]) == 2  # before: its card's PNGs replaced
    assert "weights folder: the report's PNGs would replace" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["evaluate", str(model), "--out", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err
    err = _usage_error(["evaluate", str(model), "--json", str(tmp_path)], capsys)  # before: IsADirectoryError
    assert "argument --json" in err and "is a folder" in err
    err = _usage_error(["evaluate", str(model), "--seed", "-1"], capsys)
    assert "argument --seed" in err
    assert {p.name: p.read_bytes() for p in other.iterdir()} == pictures


def test_export_refuses_a_file_as_weights_dir_and_another_kind_of_model(tmp_path, idx_dir, capsys):
    train(tiny_recipe(idx_dir, steps=1), tmp_path / "run", device="cpu", progress=False)
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(tmp_path / "run"), "--name", "m", "--weights-dir", str(tmp_path / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err  # before: NotADirectoryError
    clf = tmp_path / "weights" / "clf"
    clf.mkdir(parents=True)
    (clf / "config.json").write_text(json.dumps({"format": "cgan-service/classifier"}))
    assert main(["export", str(tmp_path / "run"), "--name", "clf", "--weights-dir", str(tmp_path / "weights"),
                 "--force"]) == 2
    assert "holds a classifier, not a generator" in capsys.readouterr().err
    odd = tmp_path / "weights" / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"format": "cgan-service/generator", "metrics": [1]}))
    assert main(["export", str(tmp_path / "run"), "--name", "odd", "--weights-dir", str(tmp_path / "weights"),
                 "--force"]) == 0  # before: AttributeError reading its old metrics


@pytest.mark.parametrize("text", ["[1, 2]", "null", "3"])
def test_a_recipe_file_that_is_not_an_object_is_refused(text, tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(text)
    assert main(["train", "--recipe", str(path), "--out", "unused", "--dry-run"]) == 2
    assert "a recipe is a JSON object" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["g_base_width", "d_base_width", "embed_dim", "image_size", "channels"])
def test_widths_and_sizes_must_be_positive(field, capsys):
    assert main(_dry_run(f"{field}=0")) == 2
    assert f"{field} must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{oops", "[1]"])
def test_resuming_a_run_whose_recipe_json_is_damaged_says_so(text, tmp_path, idx_dir):
    from training.loop import RunFolderError

    recipe = tiny_recipe(idx_dir, steps=2)
    train(recipe, tmp_path / "run", device="cpu", progress=False, stop_after=1)
    (tmp_path / "run" / "recipe.json").write_text(text)
    with pytest.raises(RunFolderError, match="recipe.json"):
        train(recipe, tmp_path / "run", device="cpu", progress=False, resume=True)


@pytest.mark.parametrize("field,value,says", [("architecture", ["dcgan"], "must be a string"),
                                              ("labels", None, "must be a list"),
                                              ("latent_dim", "8", "must be an integer")])
def test_a_hand_edited_config_with_a_wrong_type_names_the_field(model, field, value, says, tmp_path, capsys):
    config = json.loads((model / "config.json").read_text())
    config[field] = value
    (model / "config.json").write_text(json.dumps(config))
    assert main(["sample", str(model), "--label", "a", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert f"field {field!r} {says}" in err and "Traceback" not in err
