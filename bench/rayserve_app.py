"""Baseline: Ray Serve serving the same generator with its own batching (`@serve.batch`).

One deployment, one replica, behind Ray Serve's HTTP proxy: POST /generate takes the benchmark's
body `{"label", "n", "seed"}`, and the replica's `@serve.batch` handler gathers requests for up to
`batch_timeout` seconds, concatenates their latents into one forward, splits the images back per
request and encodes each as the same PNG grid as the service's. The batch unit is images, as in
the service: `batch_size_fn` counts each request as its n rows, and a batch closes at
`max_batch` images (Ray 2.60; a single request larger than that still runs alone). GET /readyz
answers once the replica is up.

Ray is started here on this machine's cores (ray.init(num_cpus=cores)); the replica asks for
all of them and runs torch on that many threads, which is what plain FastAPI and LitServe get by
default (Ray would otherwise set OMP_NUM_THREADS to the replica's CPU count). The proxy, the
controller and Ray's own processes share the same cores, at nice 0 like every other server here
(Ray's default worker niceness is 15). SIGTERM shuts Serve and Ray down.

    .bench-venvs/ray/bin/python -m bench.rayserve_app --weights DIR --port P [--max-batch 64] [--batch-timeout 0.005]

(`bash bench/baselines.sh ray` makes that interpreter.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import ray
import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bench import work


@serve.deployment(max_ongoing_requests=100_000)  # queueing is the batcher's job, not a 503's
class Generator:
    def __init__(self, weights: str, device: str, threads: int, max_batch: int, batch_timeout: float):
        torch.set_num_threads(threads)
        self.device = device
        self.model, self.latent_dim = work.load_model(Path(weights), device)
        z, labels = work.request_inputs(0, 1, 0, self.latent_dim)
        work.forward(self.model, z, labels, device)  # warm-up
        self.forward.set_max_batch_size(max_batch)
        self.forward.set_batch_wait_timeout_s(batch_timeout)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, batch_size_fn=lambda items: sum(n for _, n, _ in items))
    async def forward(self, items: list[tuple[int, int, int]]) -> list[bytes]:
        inputs = [work.request_inputs(label, n, seed, self.latent_dim) for label, n, seed in items]
        images = work.forward(self.model, torch.cat([z for z, _ in inputs]), torch.cat([y for _, y in inputs]),
                              self.device)
        return [work.png(part) for part in torch.split(images, [n for _, n, _ in items])]

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET" and request.url.path.rstrip("/").endswith("readyz"):
            return JSONResponse({"status": "ready"})
        body = work.Body(**(await request.json()))
        return Response(await self.forward((body.label, body.n, body.seed)), media_type="image/png")


def main() -> None:
    p = work.server_arguments(__doc__)
    p.add_argument("--max-batch", type=int, default=64, help="images per forward at most")
    p.add_argument("--batch-timeout", type=float, default=0.005, help="seconds to wait for a fuller batch")
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    # Ray starts its workers (the proxy and the replica too) at nice 15 by default; every other
    # server here runs at the load generator's priority, so Ray's should too
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=cores, num_gpus=1 if a.device.startswith("cuda") else 0, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": a.port}, logging_config={"log_level": "WARNING"})
    options: dict[str, Any] = {"num_cpus": cores}
    if a.device.startswith("cuda"):
        options["num_gpus"] = 1
    app = Generator.options(ray_actor_options=options).bind(a.weights, a.device, cores, a.max_batch, a.batch_timeout)
    serve.run(app, route_prefix="/", blocking=False)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
