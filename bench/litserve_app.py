"""Baseline 3: LitServe serving the same generator with its own batching.

LitServe's batch unit is a request, not an image: `max_batch_size` requests are collected for up
to `batch_timeout` seconds, their latents concatenated into one forward, the images split back per
request and each encoded as the same PNG grid as the service's. The benchmark passes
max_batch_size = service max_batch // n, so both run forwards of at most the same number of images.
`python -m bench.litserve_app --weights DIR --port P --max-batch-size 64 --batch-timeout 0.005`.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's and encode_response's
# annotations at run time to build its endpoint, and a string annotation would not resolve there.
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from fastapi import Response

from bench import work
from bench.work import Body


class GeneratorAPI(ls.LitAPI):
    def __init__(self, weights: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.weights = weights

    def setup(self, device: str) -> None:
        self.device = device
        self.model, self.latent_dim = work.load_model(self.weights, device)
        z, labels = work.request_inputs(0, 1, 0, self.latent_dim)
        work.forward(self.model, z, labels, device)

    def decode_request(self, request: Body) -> tuple[torch.Tensor, torch.Tensor]:
        return work.request_inputs(request.label, request.n, request.seed, self.latent_dim)

    def batch(self, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        return torch.cat([z for z, _ in inputs]), torch.cat([y for _, y in inputs]), [len(y) for _, y in inputs]

    def predict(self, x: Any) -> Any:
        if isinstance(x, tuple) and len(x) == 3:  # batched: (z, labels, sizes)
            z, labels, sizes = x
            return work.forward(self.model, z, labels, self.device), sizes
        z, labels = x  # max_batch_size 1: LitServe calls predict per request, without batch()
        return work.forward(self.model, z, labels, self.device)

    def unbatch(self, output: tuple[torch.Tensor, list[int]]) -> list[torch.Tensor]:
        images, sizes = output
        return list(torch.split(images, sizes))

    def encode_response(self, images: torch.Tensor) -> Response:
        return Response(content=work.png(images), media_type="image/png")


def main() -> None:
    p = work.server_arguments(__doc__)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-timeout", type=float, default=0.005)
    a = p.parse_args()
    api = GeneratorAPI(Path(a.weights), max_batch_size=a.max_batch_size, batch_timeout=a.batch_timeout,
                       api_path="/generate")
    server = ls.LitServer(api, accelerator="cuda" if a.device.startswith("cuda") else "cpu", devices=1,
                          workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=a.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
