"""Baseline 5: BentoML 1.4 serving the same generator with its own adaptive batching.

Two services, composed the way BentoML's adaptive-batching guide does it for a request that needs
work around a batched model:

- `GenerateAPI` (HTTP-facing): POST /generate takes `{"label", "n", "seed"}`, draws the request's
  latents with `work.request_inputs`, sends them as one float32 array of n rows (z plus the label
  as a last column, exact for small ints) to `GeneratorModel` through `bentoml.depends`, and encodes
  the n images it gets back as the same PNG grid as the service's (`work.png`).
- `GeneratorModel`: one `@bentoml.api(batchable=True)` method over numpy arrays, batch dim 0. Its
  CorkDispatcher counts a batch in rows (`array.shape[0]`), so the batch unit is the image: a
  request of n images adds n rows, a forward gets at most `--max-batch` rows, and a request that
  does not fit in what is left of a batch is split, its rows run in two forwards and joined again.

BentoML has no batch-window setting: its dispatcher learns how long a forward takes and how long
requests wait, and waits for more only while that looks worth it. `max_latency_ms` is a deadline,
not a window: a queued request predicted to miss it is answered 503. So `--batch-timeout` is
accepted for the same command line as the other baselines and not used; `--max-latency-ms` keeps
BentoML's default, 60000.

Each service runs in its own worker process (1 worker each: the machine has 2 cores), under
BentoML's circus arbiter, talking over a Unix socket. This command execs `bentoml serve`, so the
arbiter is this process (it renames itself `circusd`); SIGTERM to it stops the whole tree in a few
seconds. The workers run in sessions of their own (circus calls setsid), so a SIGKILL to this
process group alone would leave them running. Readiness: GET /readyz answers 200 once
both services have loaded the model (BentoML's runner probe checks the dependency). Access logs are
off and BentoML's loggers are at warning level; BentoML's Prometheus metrics stay at its default
(on). `python -m bench.bentoml_app --weights DIR --port P [--device cpu] [--max-batch 64]`.
"""

# No `from __future__ import annotations`: BentoML builds each endpoint's input and output
# schemas from these annotations at import time, so they are kept as real objects.
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
import torch
from bentoml.validators import ContentType
from pydantic import BaseModel

from bench import work
from gancore.weights import read_config

# BentoML's server logging config puts its own loggers at INFO; this module is imported in every
# BentoML process after that config is applied, so this holds everywhere.
logging.getLogger("bentoml").setLevel(logging.WARNING)


class Args(BaseModel):
    """Bento arguments (`bentoml serve --arg k=v`): each worker process re-imports this module, so
    settings reach the services this way rather than through this module's command line."""

    weights: str = ""
    device: str = "cpu"
    max_batch: int = 64
    max_latency_ms: int = 60000


args = bentoml.use_arguments(Args)
NO_ACCESS_LOG = {"access": {"enabled": False}}
# How callers' clients to this service are kept. BentoML (since 1.4.31) replaces a caller's client
# session every 100 requests or 300 s by default and closes the old one under the requests still
# in flight on it, which answer 500 (ServerDisconnectedError): ~5% of requests at 8 connections.
# Limits far past any benchmark run keep one session, as BentoML did before 1.4.31.
ONE_SESSION = {"max_requests": 2**31 - 1, "max_age": 1e9}


@bentoml.service(workers=1, logging=NO_ACCESS_LOG, runner_connection=ONE_SESSION)
class GeneratorModel:
    def __init__(self) -> None:
        self.model, self.latent_dim = work.load_model(args.weights, args.device)
        z, labels = work.request_inputs(0, 1, 0, self.latent_dim)
        work.forward(self.model, z, labels, args.device)  # first-use allocations before the first request

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=args.max_batch, max_latency_ms=args.max_latency_ms)
    def generate(self, rows: np.ndarray) -> np.ndarray:
        """float32 (B, latent_dim + 1): z, then the label -> uint8 (B, C, H, W)."""
        x = torch.tensor(rows)  # a copy: an unpickled array is read-only, which torch warns about
        z, labels = x[:, :self.latent_dim].contiguous(), x[:, self.latent_dim].long()
        return work.forward(self.model, z, labels, args.device).numpy()


@bentoml.service(workers=1, logging=NO_ACCESS_LOG)
class GenerateAPI:
    model = bentoml.depends(GeneratorModel)

    def __init__(self) -> None:
        self.latent_dim = int(read_config(args.weights)["latent_dim"])

    @bentoml.api(route="/generate")
    async def generate(self, label: int, n: int = 16, seed: int = 0) -> Annotated[bytes, ContentType("image/png")]:
        z, labels = work.request_inputs(label, n, seed, self.latent_dim)
        rows = torch.cat([z, labels.to(z.dtype).unsqueeze(1)], dim=1).numpy()
        images = await self.model.to_async.generate(rows)
        # Encoded on the event loop: a few hundred microseconds for 16 images of 28x28, and this
        # process has nothing else to run meanwhile but other requests' equally small steps.
        return work.png(torch.tensor(images))  # a copy, as above: a few KB


def main() -> None:
    p = work.server_arguments(__doc__)
    p.add_argument("--max-batch", type=int, default=64, help="images per forward (BentoML needs >= 2)")
    p.add_argument("--batch-timeout", type=float, default=0.005,
                   help="accepted for a uniform command line; BentoML has no batch window (see above)")
    p.add_argument("--max-latency-ms", type=int, default=60000, help="BentoML's deadline; 503 past it")
    a = p.parse_args()
    if a.max_batch < 2:
        p.error("--max-batch must be at least 2 (BentoML's max_batch_size must be > 1)")
    weights = Path(a.weights).resolve()
    read_config(weights)  # fail here, not in a worker, on a folder that is not a generator
    # No usage tracking: the benchmark machine may have no network, and it is not ours to report.
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    argv = [sys.executable, "-m", "bentoml", "serve", "bench.bentoml_app:GenerateAPI",
            "--host", "127.0.0.1", "--port", str(a.port),
            "--arg", f"weights={weights}", "--arg", f"device={a.device}",
            "--arg", f"max_batch={a.max_batch}", "--arg", f"max_latency_ms={a.max_latency_ms}"]
    # exec: the arbiter replaces this process, so the caller's pid and SIGTERM reach it directly.
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
