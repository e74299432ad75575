"""A stand-in for a GPU's forward, for measuring the CPU side of the serving path on a CPU: every
`Runner.run` after the first of each batch size sleeps `BENCH_STAND_IN_FORWARD_S` seconds and
returns a copy of the images that first real forward made. A GPU forward looks like that from
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

import torch

ENV = "BENCH_STAND_IN_FORWARD_S"


def install(pause_s: float | None = None) -> bool:
    """Patch `service.inference.Runner.run` in this process; False when no pause is set."""
    if pause_s is None:
        value = os.environ.get(ENV, "")
        if not value:
            return False
        pause_s = float(value)
    from service.inference import Runner

    real = Runner.run
    first: dict[tuple[int, int], torch.Tensor] = {}

    def run(self: Runner, z: torch.Tensor, labels: torch.Tensor | None, labels_to: torch.Tensor | None = None,
            mix: torch.Tensor | None = None) -> torch.Tensor:
        key = (id(self), int(z.shape[0]))
        if key not in first:
            first[key] = real(self, z, labels, labels_to, mix)
        else:
            time.sleep(pause_s)
        return first[key].clone()

    run.stand_in_of = real  # type: ignore[attr-defined]
    Runner.run = run  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    from service.inference import Runner

    real = getattr(Runner.run, "stand_in_of", None)
    if real is not None:
        Runner.run = real  # type: ignore[method-assign]
