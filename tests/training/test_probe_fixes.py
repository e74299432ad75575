"""Fixes from a probe of the training half: run length, multi-process stop and epochs, resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch.distributed as tdist
import torch.multiprocessing as mp

from tests.helpers import tiny_recipe
from training import distributed as dist_utils
from training import loop
from training.cli import main
from training.distributed import MAX_FLAG_SYNC_STEPS, Dist, flag_sync_interval
from training.loop import train, trim_metrics
from training.recipe import Recipe


@pytest.mark.parametrize("flags", [["--epochs", "2"], ["--set", "epochs=2"]])
def test_epochs_clear_a_named_recipes_steps(flags, capsys):
    # fashion-mnist-cwgangp sets steps, which overrode any epochs given before
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", *flags, "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["epochs"] == 2.0 and resolved["steps"] is None


@pytest.mark.parametrize("flags", [["--epochs", "2", "--set", "steps=10"],
                                   ["--set", "epochs=2", "--steps", "10"],
                                   ["--set", "epochs=2", "--set", "steps=10"]])
def test_epochs_and_steps_together_are_refused(flags, capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", *flags, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not both" in err and err.count("\n") == 1


def test_epochs_with_steps_null_is_accepted(capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", "--epochs", "3",
                 "--set", "steps=null", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] is None


def test_steps_alone_still_set_the_length(capsys):
    assert main(["train", "--recipe", "fashion-mnist-cwgangp", "--out", "x", "--steps", "7", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 7


class OneProcessAsTwo(Dist):
    """Rank 0 of a two-process group whose collectives are this process's own values: enough for
    what the loop derives from world_size, without starting a second process."""

    def barrier(self) -> None:
        pass

    def all_reduce_grads(self, module) -> None:
        pass

    def any_flag(self, flag: bool) -> bool:
        return flag

    def exchange_flags(self, step: int, *flags: bool) -> tuple[bool, ...]:
        return tuple(bool(f) for f in flags)

    def gather_rng(self, state):
        return [state, state]

    def shutdown(self) -> None:
        pass


def test_total_steps_count_epochs_of_all_processes():
    recipe = Recipe(epochs=2.0, batch_size=16, n_critic=2)
    assert recipe.total_steps(640) == 40  # 2 * 640 / 16 critic batches, 2 per step
    assert recipe.total_steps(640, world_size=2) == 20  # each step takes 2 x 16 images
    assert Recipe(steps=7).total_steps(640, world_size=4) == 7


def test_an_epoch_under_two_processes_is_one_pass_over_the_data(tmp_path, idx_dir, monkeypatch):
    monkeypatch.setattr(dist_utils, "init", lambda device: OneProcessAsTwo(enabled=True, world_size=2))
    recipe = tiny_recipe(idx_dir, steps=None, epochs=1.0)  # 64 images, batch 16, n_critic 2
    result = train(recipe, tmp_path / "run", device="cpu", progress=False)
    assert result.total_steps == 1  # 64 / (16 x 2) = 2 critic batches per epoch; was 2 steps (2 epochs)
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["epoch"] == 1.0


def _tiny_train_argv(idx_dir, out, *extra: str) -> list[str]:
    return ["train", "--recipe", "tiny", "--out", str(out), "--device", "cpu", "--no-progress", "--set",
            f"data_dir={idx_dir}", *extra]


@pytest.fixture
def tiny_named(idx_dir, tmp_path, monkeypatch):
    """`--recipe tiny`: tests.helpers.tiny_recipe as a named recipe."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "tiny.json").write_text(json.dumps(tiny_recipe(idx_dir).to_dict()))
    monkeypatch.setattr("training.recipe.RECIPE_DIR", folder)
    return idx_dir


@pytest.mark.parametrize("change,named", [
    (["--set", "g_base_width=16"], "g_base_width=32; this recipe has g_base_width=16"),
    (["--set", "latent_dim=4", "--set", "conditioning=channels"],
     "latent_dim=8, conditioning=projection; this recipe has latent_dim=4, conditioning=channels"),
    (["--set", "conditional=false"], "conditional=true; this recipe has conditional=false"),
    (["--set", "d_norm=spectral"], "d_norm=layer; this recipe has d_norm=spectral"),
])
def test_resume_with_other_networks_names_the_fields(tiny_named, tmp_path, capsys, change, named):
    run = tmp_path / "run"
    assert main(_tiny_train_argv(tiny_named, run, "--steps", "1")) == 0
    capsys.readouterr()
    assert main(_tiny_train_argv(tiny_named, run, "--steps", "2", "--resume", *change)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run} was trained with ") and named in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_resume_without_recipe_json_checks_the_checkpoints_recipe(tiny_named, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_tiny_train_argv(tiny_named, run, "--steps", "1")) == 0
    (run / "recipe.json").unlink()
    capsys.readouterr()
    assert main(_tiny_train_argv(tiny_named, run, "--steps", "2", "--resume", "--set", "embed_dim=5")) == 2
    err = capsys.readouterr().err
    assert "ckpt-000000001.pt was trained with embed_dim=4; this recipe has embed_dim=5" in err
    assert "--set embed_dim=4" in err and err.count("\n") == 1


def test_trim_metrics_keeps_the_checkpoints_timeline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "d_loss": 0.5}) + "\n" for s in (1, 2, 3, 4, 5)) + '{"step": 6, "d_')
    assert trim_metrics(path, 3) == 3  # steps 4 and 5, and the torn line a kill left
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert trim_metrics(path, 3) == 0 and trim_metrics(tmp_path / "none.jsonl", 3) == 0


def test_a_resume_after_a_kill_logs_each_step_once(tmp_path, idx_dir):
    run = tmp_path / "run"
    recipe = tiny_recipe(idx_dir, log_every=1, checkpoint_every=2)
    train(recipe, run, device="cpu", progress=False, stop_after=3)  # checkpoints at 2 and (stopping) 3
    # as a SIGKILL after step 5 would leave it: metrics of steps 4 and 5, no checkpoint past 3
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 4}) + "\n" + json.dumps({"step": 5}) + "\n")
    train(recipe, run, device="cpu", resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


class SecondSignal(Exception):
    """What the test's own SIGINT handler raises: a signal that reached it and not the loop's."""


def test_a_signal_during_the_last_checkpoint_does_not_lose_it(tmp_path, idx_dir, monkeypatch, capfd):
    def outside(signum, frame):
        raise SecondSignal

    previous = signal.signal(signal.SIGINT, outside)  # restored below; pytest's own would end the session
    real_save = loop.save_checkpoint

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the checkpoint is written
        time.sleep(0.2)  # the handler runs here, in the middle of the save
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", interrupted_save)
    try:
        result = train(tiny_recipe(idx_dir), tmp_path / "run", device="cpu", progress=False, stop_after=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.interrupted and result.step == 2
    assert (tmp_path / "run" / "checkpoints" / "ckpt-000000002.pt").is_file()
    assert (tmp_path / "run" / "samples" / "step-000000002.png").is_file()
    assert "writing the last checkpoint" in capfd.readouterr().err


def test_flag_sync_interval_is_every_step_on_gloo_and_about_two_seconds_on_nccl():
    assert flag_sync_interval(0.001, "gloo") == 1 and flag_sync_interval(8.0, "gloo") == 1
    assert flag_sync_interval(None, "nccl") == 1  # no step timed yet
    assert flag_sync_interval(0.5, "nccl") == 4 and flag_sync_interval(3.0, "nccl") == 1
    assert flag_sync_interval(0.075, "nccl") == 26  # the shipped default's 13.3 steps/s on an H100
    assert flag_sync_interval(1e-4, "nccl") == MAX_FLAG_SYNC_STEPS
    assert all(Dist().syncs_flags_at(s) for s in range(1, 50))  # one process: every step, at no cost


def _flag_worker(rank: int, world: int, init_file: str, outs: list[str]) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    # NCCL's rule over gloo, at a 0.1 s target: steps of 10 ms sync about every 10, of 30 ms every 3
    real = dist_utils.flag_sync_interval
    dist_utils.flag_sync_interval = lambda seconds, backend: real(seconds, "nccl")
    dist_utils.FLAG_SYNC_SECONDS = 0.1
    dist = Dist(enabled=True, rank=rank, world_size=world)
    synced, heard = [], None
    for step in range(1, 61):
        time.sleep((0.01 if step < 30 else 0.03) * (rank + 1))  # ranks of different speeds measure differently
        if dist.syncs_flags_at(step):
            synced.append(step)
            (stop,) = dist.exchange_flags(step, rank == 1 and step >= 40)  # rank 1 alone is signalled
            if stop and heard is None:
                heard = step
    Path(outs[rank]).write_text(json.dumps({"synced": synced, "heard": heard}))
    dist.barrier()
    os._exit(0)  # as in test_distributed.py: gloo's teardown aborts now and then under load


def test_ranks_agree_on_which_steps_exchange_flags(tmp_path):
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    mp.start_processes(_flag_worker, args=(2, str(tmp_path / "init"), outs), nprocs=2, join=True,
                       start_method="spawn")
    rank0, rank1 = (json.loads(Path(o).read_text()) for o in outs)
    assert rank0 == rank1  # the same steps, and the stop heard at the same one
    synced = rank0["synced"]
    gaps = [b - a for a, b in zip(synced, synced[1:], strict=False)]
    assert synced[0] == 1 and max(gaps) > 1  # not every step once the steps are timed
    assert rank0["heard"] == min(s for s in synced if s >= 40)
