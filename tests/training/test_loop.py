"""The loop: resume equals uninterrupted, export-then-load, run-folder guard, CLI, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gancore.sampling import seeded_latents
from gancore.weights import load_generator
from tests.helpers import tiny_recipe
from training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from training.cli import main
from training.export import export_run
from training.loop import RunFolderError, ema_decay, train, update_ema

ROOT = Path(__file__).resolve().parents[2]


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir))


def assert_same_weights(a: dict, b: dict) -> None:
    for part in ("G", "D", "G_ema"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"


@pytest.mark.parametrize("overrides", [{}, {"aux_classifier": True, "conditioning": "none"}, {"bf16": True},
                                       {"channels_last": True}])
def test_resume_equals_uninterrupted(tmp_path, idx_dir, overrides):
    recipe = tiny_recipe(idx_dir, **overrides)
    whole = train(recipe, tmp_path / "whole", device="cpu", progress=False)
    assert whole.step == 6 and not whole.interrupted
    part = train(recipe, tmp_path / "parts", device="cpu", progress=False, stop_after=2)
    assert part.interrupted and part.step == 2
    part = train(recipe, tmp_path / "parts", device="cpu", progress=False, resume=True, stop_after=3)
    assert part.step == 5
    part = train(recipe, tmp_path / "parts", device="cpu", progress=False, resume=True)
    assert part.step == 6 and not part.interrupted
    a, b = final_state(tmp_path / "whole"), final_state(tmp_path / "parts")
    assert a["step"] == b["step"] == 6
    assert_same_weights(a, b)
    assert torch.equal(a["noise_rng"][0], b["noise_rng"][0])


def test_resume_of_a_checkpoint_from_another_device_kind_reseeds_its_noise(tmp_path, idx_dir, capsys):
    """A run begun on a CPU and finished on a GPU (or the reverse): the noise generator's state is
    5,056 bytes on a CPU and 16 on CUDA, so the saved one cannot be set. The run resumes its
    weights and optimisers, draws new noise seeded from the step (the same on every such resume),
    and says so; before, set_state raised "RNG state is wrong size"."""
    recipe = tiny_recipe(idx_dir)
    train(recipe, tmp_path / "run", device="cpu", progress=False, stop_after=2)
    ckpt = latest_checkpoint(tmp_path / "run")
    state = load_checkpoint(ckpt)
    state["noise_rng"] = [torch.zeros(16, dtype=torch.uint8)]  # the size of a CUDA generator's state
    torch.save(state, ckpt)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)
    capsys.readouterr()
    done = train(recipe, tmp_path / "run", device="cpu", progress=False, resume=True)
    assert done.step == 6 and not done.interrupted
    assert "reseeded, so from step 2" in capsys.readouterr().err
    train(recipe, copy, device="cpu", progress=False, resume=True)
    assert_same_weights(final_state(tmp_path / "run"), final_state(copy))


def test_logs_samples_and_checkpoint_rotation(tmp_path, idx_dir):
    recipe = tiny_recipe(idx_dir, steps=8, checkpoint_every=2, keep_checkpoints=2)
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8]
    assert all(k in records[0] for k in ("d_loss", "g_loss", "wdist", "gp", "steps_per_s"))
    names = [p.name for p in list_checkpoints(tmp_path / "run")]
    assert names == ["ckpt-000000006.pt", "ckpt-000000008.pt"]
    # 8 steps x 2 critic batches x 16 images = 256 images = 4 epochs of 64: a grid per epoch.
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert {"epoch-0001.png", "epoch-0004.png", "final.png", "latest.png"} <= set(samples)
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert saved["steps"] == 8 and saved["name"] == "tiny"


def test_run_folder_is_not_silently_overwritten(tmp_path, idx_dir):
    recipe = tiny_recipe(idx_dir, steps=2)
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    with pytest.raises(RunFolderError, match="--resume"):
        train(recipe, tmp_path / "run", device="cpu", progress=False)
    other = tiny_recipe(idx_dir, steps=2, name="other", loss="ns-gan")
    with pytest.raises(RunFolderError, match="refusing"):
        train(other, tmp_path / "run", device="cpu", progress=False, resume=True)


@pytest.mark.parametrize("loss", ["wgan", "gan", "ns-gan"])
def test_other_losses_train_and_stay_finite(tmp_path, idx_dir, loss):
    recipe = tiny_recipe(idx_dir, loss=loss, optimizer="rmsprop" if loss == "wgan" else "adam", steps=3)
    train(recipe, tmp_path / loss, device="cpu", progress=False)
    state = final_state(tmp_path / loss)
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    if loss == "wgan":
        assert max(v.abs().max().item() for v in state["D"].values()) <= 0.01 + 1e-7


@pytest.mark.parametrize("channels_last", [False, True])  # NHWC weights export as plain contiguous tensors
def test_export_then_load_gives_identical_samples(tmp_path, idx_dir, channels_last):
    recipe = tiny_recipe(idx_dir, steps=3, channels_last=channels_last)
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    config = export_run(tmp_path / "run", tmp_path / "weights" / "tiny")
    assert config["steps"] == 3 and config["labels"][7] == "sneaker" and config["ema"] is True
    assert config["dataset"]["name"] == "fashion-mnist" and len(config["weights_sha256"]) == 64
    state = final_state(tmp_path / "run")
    from gancore.networks.dcgan import ConditionalGenerator

    before = ConditionalGenerator(**state["g_args"])
    before.load_state_dict(state["G_ema"])
    before.eval()
    loaded = load_generator(tmp_path / "weights" / "tiny")
    z, y = seeded_latents(5, 6, 8), torch.arange(6)
    with torch.no_grad():
        assert torch.equal(before(z, y), loaded.model(z, y))
    assert loaded.label_id("Ankle boot") == 9
    assert config["weights_dtype"] == "float32"

    # float16 storage: half the file, loaded back as float32, images within a grey level or two
    half = export_run(tmp_path / "run", tmp_path / "weights" / "half", dtype=torch.float16)
    assert half["weights_dtype"] == "float16"
    full_size = (tmp_path / "weights" / "tiny" / "generator.safetensors").stat().st_size
    half_size = (tmp_path / "weights" / "half" / "generator.safetensors").stat().st_size
    assert half_size < 0.55 * full_size
    rounded = load_generator(tmp_path / "weights" / "half")  # SHA-checked like any export
    assert all(p.dtype == torch.float32 for p in rounded.model.parameters())
    with torch.no_grad():
        gap = (before(z, y) - rounded.model(z, y)).abs().max().item()
    assert 0 < gap < 2 * 2 / 255  # in [-1, 1] units: under two grey levels


def test_cli_train_export_sample_and_errors(tmp_path, idx_dir, capsys):
    run = tmp_path / "run"
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", str(run), "--steps", "2",
                 "--data-dir", str(idx_dir), "--no-progress", "--set", "split=train",
                 "--set", "verify_data=false", "--set", "g_base_width=32", "--set", "d_base_width=16", "--batch-size", "8"]) == 0
    assert main(["export", str(run), "--name", "m", "--weights-dir", str(tmp_path / "w")]) == 0
    out = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "w" / "m"), "--label", "sneaker", "--n", "4", "--seed", "1",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    # an existing grid is kept unless --force; the weights folder's own files are never written
    assert main(["sample", str(tmp_path / "w" / "m"), "--label", "bag", "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "w" / "m"), "--label", "bag", "--out", str(out), "--force"]) == 0
    weights_file = tmp_path / "w" / "m" / "generator.safetensors"
    for bad in (weights_file, tmp_path / "w" / "m" / "grid.png", tmp_path / "grid.jpg"):
        with pytest.raises(SystemExit) as usage:
            main(["sample", str(tmp_path / "w" / "m"), "--label", "bag", "--out", str(bad), "--force"])
        assert usage.value.code == 2
    assert load_generator(tmp_path / "w" / "m").name == "m"  # the SHA still matches
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "w" / "m"), "--label", "sneker", "--out", str(tmp_path / "typo.png")]) == 2
    err = capsys.readouterr().err
    assert "valid labels" in err and "did you mean 'sneaker'" in err
    assert main(["sample", str(tmp_path / "nope"), "--label", "bag", "--out", str(out)]) == 2
    assert main(["train", "--recipe", "nope", "--out", str(run)]) == 2
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", str(run), "--steps", "2",
                 "--data-dir", str(idx_dir), "--no-progress", "--set", "split=train",
                 "--set", "verify_data=false"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "empty"), "--name", "x"]) == 2
    # --stop-after ends the call early like an interruption (exit 130), and --resume goes on
    args = ["train", "--recipe", "fashion-mnist-cwgangp", "--out", str(tmp_path / "cut"), "--steps", "3",
            "--data-dir", str(idx_dir), "--no-progress", "--set", "split=train", "--set", "verify_data=false",
            "--set", "g_base_width=32", "--set", "d_base_width=16", "--batch-size", "8"]
    assert main([*args, "--stop-after", "1"]) == 130
    assert load_checkpoint(latest_checkpoint(tmp_path / "cut"))["step"] == 1
    assert main([*args, "--resume"]) == 0
    assert load_checkpoint(latest_checkpoint(tmp_path / "cut"))["step"] == 3
    assert main([*args, "--resume", "--stop-after", "0"]) == 2


def test_sigterm_writes_a_checkpoint_and_resume_continues(tmp_path, idx_dir):
    """A real process killed with SIGTERM mid-run leaves a loadable checkpoint."""
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "training", "train", "--recipe", "fashion-mnist-cwgangp", "--out", str(run),
           "--steps", "100000", "--data-dir", str(idx_dir), "--no-progress", "--set", "split=train",
           "--set", "g_base_width=32", "--set", "d_base_width=16", "--batch-size", "8",
           "--set", "log_every=1", "--set", "verify_data=false"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "--resume" in out
    ckpt = latest_checkpoint(run)
    state = load_checkpoint(ckpt)
    assert state["step"] >= 1


def test_torchrun_two_cpu_processes_with_gloo(tmp_path, idx_dir):
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun not found")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    run = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "training", "train",
           "--recipe", "fashion-mnist-cwgangp", "--out", str(run), "--steps", "3", "--device", "cpu",
           "--data-dir", str(idx_dir), "--no-progress", "--set", "split=train", "--set", "g_base_width=32",
           "--set", "d_base_width=16", "--batch-size", "8", "--set", "log_every=1", "--set", "verify_data=false"]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    state = final_state(run)
    assert state["step"] == 3 and len(state["noise_rng"]) == 2
    assert not torch.equal(state["noise_rng"][0], state["noise_rng"][1])


def test_export_writes_readable_files_and_curves(tmp_path, idx_dir):
    recipe = tiny_recipe(idx_dir, steps=4)
    train(recipe, tmp_path / "run", device="cpu", progress=False)
    folder = tmp_path / "weights" / "tiny"
    export_run(tmp_path / "run", folder)
    for name in ("generator.safetensors", "config.json", "curves.png"):
        assert (folder / name).stat().st_mode & 0o777 == 0o644, name  # readable by a non-root server
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_start_that_fails_on_data_leaves_no_run_behind(tmp_path, idx_dir):
    from training.data import DatasetError

    broken = tmp_path / "broken"
    shutil.copytree(idx_dir, broken)
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"cut short")
    bad = tiny_recipe(broken)
    with pytest.raises(DatasetError, match="cannot decompress"):
        train(bad, tmp_path / "run", device="cpu", progress=False)
    assert not (tmp_path / "run" / "recipe.json").exists()
    # the same folder then takes a plain (non --resume) run
    assert train(tiny_recipe(idx_dir, steps=1), tmp_path / "run", device="cpu", progress=False).step == 1


@pytest.mark.parametrize("device,message", [("tpu", "auto, cpu, cuda or cuda:N"), ("cuda:x", "auto, cpu")])
def test_bad_device_flag_is_a_one_line_error(tmp_path, capsys, device, message):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", str(tmp_path / "r"),
                 "--device", device, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", str(tmp_path / "r"),
                 "--device", "cuda", "--no-progress"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_ema_warms_up_then_holds_beta():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)  # the first update keeps 10% of the init
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 8_989) < 0.999 and ema_decay(0.999, 8_990) == 0.999
    assert ema_decay(0.9, 10**6) == 0.9
    # After 500 updates towards a constant target the average is within 1e-6 of it, whereas a
    # fixed 0.999 would still hold 0.999**500 = 61% of the starting weights.
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.nn.init.zeros_(ema.weight)
    torch.nn.init.ones_(model.weight)
    for step in range(500):
        update_ema(ema, model, ema_decay(0.999, step))
    assert torch.allclose(ema.weight, torch.ones(2, 3), atol=1e-6)


def test_ema_update_is_the_per_tensor_lerp_and_copies_buffers():
    """The multi-tensor update equals e <- e + (1 - beta) (p - e) tensor by tensor, and the
    batch-norm statistics are copied, not averaged."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model[1].running_mean.fill_(0.5)
    expected = [e.detach() + 0.25 * (p.detach() - e.detach()) for e, p in zip(ema.parameters(), model.parameters(), strict=True)]
    update_ema(ema, model, 0.75)
    for got, want in zip(ema.parameters(), expected, strict=True):
        assert torch.allclose(got, want, atol=1e-7, rtol=0)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)


def test_a_pause_with_sigstop_is_not_counted_as_training_time(tmp_path, idx_dir, monkeypatch):
    # SIGSTOP cannot be caught: the loop learns of a pause from the SIGCONT that ends it. Here a
    # step sleeps 2 s (the pause) and then, in the run that was "stopped", the process sends
    # itself SIGCONT (the continue); the other run merely had a slow step, which counts.
    import signal
    import time

    import training.loop as loop

    real_update_ema = loop.update_ema
    seconds, rates = {}, {}
    for continued in (False, True):
        calls = {"n": 0}

        def slow_fourth_step(ema, model, decay, calls=calls, continued=continued):
            calls["n"] += 1
            if calls["n"] == 4:
                time.sleep(2.0)
                if continued:
                    os.kill(os.getpid(), signal.SIGCONT)
            return real_update_ema(ema, model, decay)

        monkeypatch.setattr(loop, "update_ema", slow_fourth_step)
        run = tmp_path / f"continued-{continued}"
        result = train(tiny_recipe(idx_dir), run, device="cpu", progress=False)
        assert result.step == 6 and calls["n"] == 6
        assert final_state(run)["train_seconds"] == pytest.approx(result.train_seconds)
        seconds[continued] = result.train_seconds
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        rates[continued] = next(r["steps_per_s"] for r in records if r["step"] == 4)  # steps 3-4: the slow one
    assert seconds[False] >= 2.0  # a slow step is training time
    assert 0 < seconds[True] < seconds[False] - 1.5  # a pause is not: a step's time stands in for it
    assert rates[False] < 1.0 < 2.0 < rates[True]  # nor in the steps per second of its metrics record


def test_resume_refuses_data_whose_classes_changed(tmp_path, capsys):
    """A class folder added, removed or renamed between two pieces of a run would move the label
    ids under the trained weights: refused. Same classes, other files: said, and the run goes on."""
    from training.data import ImageSet
    from training.loop import check_same_data

    data = ImageSet(name="d", images=torch.zeros(2, 1, 8, 8, dtype=torch.uint8), labels=torch.tensor([0, 1]),
                    class_names=["cat", "dog"], aliases={}, checksum="new")
    ckpt = tmp_path / "ckpt-000000002.pt"
    with pytest.raises(RunFolderError, match="trained on classes cat, cow, dog; the data now has cat, dog"):
        check_same_data({"labels": ["cat", "cow", "dog"], "dataset": {"checksum": "new"}}, data, ckpt)
    check_same_data({"labels": ["cat", "dog"], "dataset": {"checksum": "old"}}, data, ckpt)
    assert "differ from those ckpt-000000002.pt was trained on" in capsys.readouterr().err
    check_same_data({"labels": ["cat", "dog"], "dataset": {"checksum": "new"}}, data, ckpt)
    assert capsys.readouterr().err == ""
