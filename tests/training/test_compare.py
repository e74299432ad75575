"""`python -m training compare` end to end on tiny IDX data, a tiny classifier and tiny budgets."""

from __future__ import annotations

import json

import pytest

from training.cli import main
from training.compare import MODELS, StudySettings, gan_recipe

PNG = b"\x89PNG\r\n\x1a\n"


def test_study_models_use_the_promised_settings(tmp_path):
    s = StudySettings(out=tmp_path, models=list(MODELS), steps=300)
    recipes = {name: gan_recipe(m, s, "fashion-mnist", 28, 1) for name, m in MODELS.items() if name != "vae"}
    assert recipes["gan"].loss == "gan" and not recipes["gan"].conditional
    assert recipes["ns-gan"].loss == "ns-gan" and not recipes["ns-gan"].conditional
    assert recipes["cgan"].loss == "ns-gan" and recipes["cgan"].conditioning == "projection"
    w = recipes["wgan"]
    assert (w.loss, w.optimizer, w.lr_d, w.n_critic, w.clip_value) == ("wgan", "rmsprop", 5e-5, 5, 0.01)
    assert recipes["wgan-gp"].loss == "wgan-gp" and not recipes["wgan-gp"].conditional
    assert recipes["cwgan-gp"].conditional and recipes["cwgan-gp"].conditioning == "projection"
    assert recipes["acwgan-gp"].aux_classifier and recipes["acwgan-gp"].conditioning == "none"
    # Same budget, seed, networks and data split for every model.
    for r in recipes.values():
        assert (r.steps, r.seed, r.g_base_width, r.d_base_width, r.split) == (300, 0, 64, 32, "train")
    assert s.ema == pytest.approx(1 - 10 / 300)


def test_compare_writes_report_table_curves_and_samples(idx_data, tiny_classifier, tmp_path, capsys):
    out = tmp_path / "study"
    rc = main(["compare", "--out", str(out), "--models", "ns-gan,cwgan-gp,vae", "--steps", "3",
               "--batch-size", "8", "--g-width", "32", "--d-width", "8", "--latent-dim", "6",
               "--n-per-class", "3", "--classifier", str(tiny_classifier), "--data-dir", str(idx_data),
               "--device", "cpu"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in report["models"]] == ["ns-gan", "cwgan-gp", "vae"]
    for row in report["models"]:
        assert row["steps"] == 3 and row["wall_seconds"] >= 0
        for key in ("fid", "fid_floor", "precision", "recall", "inception_score", "inception_score_real"):
            assert isinstance(row["metrics"][key], float), (row["model"], key)
        assert ("conditional_accuracy" in row["metrics"]) is row["conditional"]
        assert (out / row["samples"]).read_bytes()[:8] == PNG
        assert json.loads((out / row["model"] / "weights" / "config.json").read_text())["metrics"]["fid"] \
            == row["metrics"]["fid"]
    assert (out / "curves.png").read_bytes()[:8] == PNG

    md = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert {"ns-gan", "cwgan-gp", "vae", "*real data (reference)*"} <= set(rows)
    assert "| no |" in rows["ns-gan"] and "n/a" in rows["ns-gan"] and "n/a" in rows["vae"]
    assert "n/a" not in rows["cwgan-gp"]
    for name in ("ns-gan", "cwgan-gp", "vae"):
        assert f"(samples/{name}.png)" in md
    assert "(curves.png)" in md
    assert "| cwgan-gp |" in capsys.readouterr().out

    # A second study into the same folder is refused before any training.
    rc = main(["compare", "--out", str(out), "--models", "vae", "--classifier", str(tiny_classifier),
               "--data-dir", str(idx_data), "--device", "cpu"])
    assert rc == 2
    assert "holds an earlier study" in capsys.readouterr().err


def test_unknown_model_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--models", "gan,diffusion"])
    assert exc.value.code == 2
    assert "diffusion" in capsys.readouterr().err


def test_an_interrupted_run_ends_the_study(idx_data, tiny_classifier, tmp_path, monkeypatch, capsys):
    from training.loop import TrainResult

    # SIGINT/SIGTERM make the loop checkpoint and return `interrupted`; the study must stop too.
    monkeypatch.setattr("training.compare.train_gan", lambda recipe, run_dir, **kw: TrainResult(run_dir, 1, 3, True, 0.1))
    rc = main(["compare", "--out", str(tmp_path / "s"), "--models", "gan,vae", "--steps", "3",
               "--classifier", str(tiny_classifier), "--data-dir", str(idx_data), "--device", "cpu"])
    assert rc == 130
    assert not (tmp_path / "s" / "vae").exists() and not (tmp_path / "s" / "report.md").exists()
