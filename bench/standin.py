"""A stand-in for a GPU's forward, for measuring the CPU side of the serving path on a CPU: every
`Runner.run` (the service) and `bench.work.forward` (the baselines) after the first of each
batch size sleeps `BENCH_STAND_IN_FORWARD_S` seconds and returns a copy of the images that first
real forward made. A GPU forward looks like that from
the CPU (a wait on an event, without the interpreter lock), so what is left to measure is the
service's own work: HTTP, batching, the pipe, PNG encoding.

Two ways in, neither touching the service's code: `bench.render` starts engine processes whose
entry installs it, and a server started with `bench/stand_in_site` first on PYTHONPATH installs
it in every process (that folder's sitecustomize.py), e.g.

    PYTHONPATH=bench/stand_in_site python -m bench.paired --servers plain --n 64 --concurrency 16 \\
        --variant w1:GAN_WORKERS=1,GAN_PIN_CPUS=false,BENCH_STAND_IN_FORWARD_S=0.0003 ...
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

ENV = "BENCH_STAND_IN_FORWARD_S"


def install(pause_s: float | None = None) -> bool:
    """Patch `service.inference.Runner.run` (the service's forward) and `bench.work.forward` (the
    plain FastAPI, LitServe and ceiling baselines' forward) in this process, so that a comparison
    through HTTP gives every server the same stand-in; False when no pause is set."""
    if pause_s is None:
        value = os.environ.get(ENV, "")
        if not value:
            return False
        pause_s = float(value)
    from bench import work
    from service.inference import Runner

    if hasattr(Runner.run, "stand_in_of"):  # installed already (sitecustomize, then bench.render's engine entry)
        return True

    def stand_in(real: Callable[..., torch.Tensor], key_of: Callable[..., tuple[int, int]]) -> Callable[..., torch.Tensor]:
        first: dict[tuple[int, int], torch.Tensor] = {}

        def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
            key = key_of(*args)
            if key not in first:
                first[key] = real(*args, **kwargs)
            else:
                time.sleep(pause_s)
            return first[key].clone()

        forward.stand_in_of = real  # type: ignore[attr-defined]
        return forward

    # per model and batch size: the first call's images, made by the real forward
    Runner.run = stand_in(Runner.run, lambda self, z, *rest: (id(self), int(z.shape[0])))  # type: ignore[method-assign]
    work.forward = stand_in(work.forward, lambda model, z, *rest: (id(model), int(z.shape[0])))
    return True


def uninstall() -> None:
    from bench import work
    from service.inference import Runner

    real = getattr(Runner.run, "stand_in_of", None)
    if real is not None:
        Runner.run = real  # type: ignore[method-assign]
    real = getattr(work.forward, "stand_in_of", None)
    if real is not None:
        work.forward = real
