"""Gradient averaging across two real gloo processes (training/distributed.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn

from training.distributed import Dist


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    dist = Dist(enabled=True, rank=rank, world_size=world)
    torch.manual_seed(0)  # the same initial weights on both ranks, as after the loop's broadcast
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    # Rank-dependent gradients: rank r gets (r + 1) * base, so the mean is 1.5 * base for two ranks;
    # a missing division gives 3 * base, a missing all-reduce (r + 1) * base.
    for i, p in enumerate(model.parameters()):
        p.grad = (rank + 1) * torch.arange(p.numel(), dtype=torch.float32).view_as(p) + i
    model[1].weight.grad = (rank + 1) * torch.ones_like(model[1].weight)
    dist.all_reduce_grads(model)
    grads = [p.grad.tolist() for p in model.parameters()]
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    params = [p.detach().tolist() for p in model.parameters()]
    stop = dist.any_flag(rank == 1)  # only rank 1 saw a signal
    rng = dist.gather_rng(torch.Generator().manual_seed(rank).get_state())
    Path(out).write_text(json.dumps({"grads": grads, "params": params, "stop": stop,
                                     "rng_seeds_equal": [bool((s == torch.Generator().manual_seed(r).get_state()).all())
                                                         for r, s in enumerate(rng)]}))
    dist.barrier()
    # Leave without tearing gloo down: its C++ destructors abort now and then under load
    # ("terminate called without an active exception"), after everything under test is done.
    os._exit(0)


def test_two_gloo_processes_average_gradients_and_stay_in_step(tmp_path: Path) -> None:
    world = 2
    outs = [tmp_path / f"rank{r}.json" for r in range(world)]
    mp.start_processes(_worker_entry, args=(world, str(tmp_path / "init"), [str(o) for o in outs]),
                       nprocs=world, join=True, start_method="spawn")
    results = [json.loads(o.read_text()) for o in outs]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    params = list(model.parameters())
    mean = [1.5 * torch.arange(p.numel(), dtype=torch.float32).view_as(p) + i for i, p in enumerate(params)]
    mean[2] = torch.full_like(params[2], 1.5)
    for r, res in enumerate(results):
        for got, want in zip(res["grads"], mean, strict=True):
            assert torch.allclose(torch.tensor(got), want), f"rank {r}: not the mean gradient"
        assert res["stop"] is True, f"rank {r} did not hear rank 1's stop"
        assert res["rng_seeds_equal"] == [True, True]
    # Same start, same averaged gradient: the same parameters after a step, namely p - 0.1 * mean.
    for a, b, p, g in zip(results[0]["params"], results[1]["params"], params, mean, strict=True):
        assert a == b
        assert torch.allclose(torch.tensor(a), p.detach() - 0.1 * g)


def _worker_entry(rank: int, world: int, init_file: str, outs: list[str]) -> None:
    _worker(rank, world, init_file, outs[rank])


def test_backend_follows_the_device_asked_for(monkeypatch):
    """--device cpu trains over gloo even where CUDA exists; NCCL only for GPU training."""
    from training.distributed import backend_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backend_for("cpu") == "gloo"
    assert backend_for("auto") == "nccl" and backend_for("cuda") == "nccl"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend_for("auto") == "gloo" and backend_for("cuda") == "gloo"


def test_a_named_gpu_under_torchrun_is_refused_with_a_hint():
    import pytest

    from gancore.devices import DeviceError

    with pytest.raises(DeviceError, match="LOCAL_RANK.*CUDA_VISIBLE_DEVICES"):
        Dist(enabled=True, rank=0, world_size=2).device("cuda:1")
    assert Dist(enabled=True, rank=0, world_size=2).device("cpu") == torch.device("cpu")


def test_a_rank_leaves_without_teardown_with_its_code_and_output(tmp_path: Path) -> None:
    # A process that joined a group ends with os._exit after flushing (training/__main__.py):
    # the exit code and every line written must survive; the interpreter's exit handlers do not run.
    import subprocess
    import sys

    script = (
        "import atexit, sys, training.distributed as d\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "d.exit_without_teardown(0)  # not joined: returns\n"
        "print('buffered line', end=''); sys.stderr.write('to stderr')\n"
        "d._joined_a_group = True\n"
        "d.exit_without_teardown(7)\n"
        "print('not reached')\n"
    )
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 7, res.stderr
    assert res.stdout == "buffered line" and res.stderr == "to stderr"


def _refused_worker(rank: int, world: int, init_file: str, run_dir: str, outs: list[str]) -> None:
    from tests.helpers import tiny_recipe
    from training.data import ImageSet
    from training.loop import RunFolderError, train

    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    data = ImageSet(name="tiny", images=torch.zeros(32, 1, 28, 28, dtype=torch.uint8),
                    labels=torch.arange(32) % 2, class_names=["a", "b"], aliases={}, checksum="x")
    try:
        train(tiny_recipe(Path(run_dir)), run_dir, device="cpu", progress=False, dataset=data)
        outcome = "trained"
    except RunFolderError as exc:
        outcome = f"refused: {exc}"
    Path(outs[rank]).write_text(outcome)
    os._exit(0)


def test_a_run_folder_refused_by_rank_0_stops_every_rank(tmp_path: Path) -> None:
    # Rank 0 alone checks the folder (a run there, no --resume): before, the other rank waited
    # for it at the next collective for ever.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    outs = [str(tmp_path / f"rank{r}.txt") for r in range(2)]
    ctx = mp.start_processes(_refused_worker, args=(2, str(tmp_path / "init"), str(run_dir), outs),
                             nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        assert time.monotonic() < deadline, "a rank hung after rank 0 refused the run folder"
    texts = [Path(o).read_text() for o in outs]
    assert texts[0].startswith("refused: ") and "already holds a training run" in texts[0]
    assert texts[1].startswith("refused: ") and "rank 0" in texts[1]
