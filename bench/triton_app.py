"""Baseline 5: NVIDIA Triton Inference Server, through PyTriton, serving the same generator with
Triton's dynamic batcher.

PyTriton starts the bundled `tritonserver` binary as a child process and binds a Python model to
it: Triton's HTTP front end and dynamic batcher queue the requests, and its Python backend stub
hands each batch over shared memory and ZeroMQ to the inference function in this process.

Model `generator`: inputs `label`, `n`, `seed` (INT64, shape (1,)), output `png` (BYTES, (1,)).
With max_batch_size > 0 every tensor has a leading batch dimension, so one request is one row of
shape [1, 1] (BODY_TEMPLATE). The batch unit is a request (a row), not an image, as in LitServe:
`--max-batch-size` is the most requests per batch, taken as given: pass
max(1, service max_batch // n), as bench.serve does for LitServe, so forwards hold at most as many
images as the service's.
`--batch-timeout` (seconds) is the batcher's max_queue_delay. The inference function concatenates
all rows' latents into one forward, splits the images back per row and encodes one PNG grid each,
the same bytes as the service's.

`python -m bench.triton_app --weights DIR --port P [--device cpu] [--max-batch-size 64]
[--batch-timeout 0.005]`; run it with `.bench-venvs/triton/bin/python` (bench/baselines.sh).
HTTP only, on 127.0.0.1:P; gRPC and metrics are off unless --grpc-port / --metrics-port are given.
Ready: GET /v2/models/generator/ready (READY_PATH). Not /v2/health/ready: PyTriton loads the model
through Triton's explicit model control after the server is up, and the server says ready (200)
with no model loaded yet. Infer: POST INFER_PATH with BODY_TEMPLATE % {label, n, seed}; the
answer is Triton's binary-data extension: a JSON header of Inference-Header-Content-Length bytes,
then the `png` tensor as a 4-byte little-endian length and the PNG.
"""

from __future__ import annotations

import logging
import os
import signal
import sysconfig
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from bench import work

MODEL_NAME = "generator"
READY_PATH = f"/v2/models/{MODEL_NAME}/ready"  # not /v2/health/ready: see the docstring
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
BODY_TEMPLATE = (
    '{"inputs": ['
    '{"name": "label", "shape": [1, 1], "datatype": "INT64", "data": [%(label)d]}, '
    '{"name": "n", "shape": [1, 1], "datatype": "INT64", "data": [%(n)d]}, '
    '{"name": "seed", "shape": [1, 1], "datatype": "INT64", "data": [%(seed)d]}], '
    '"outputs": [{"name": "png", "parameters": {"binary_data": true}}]}'
)


def make_infer(model: Any, latent_dim: int, device: str) -> Callable[..., dict[str, np.ndarray]]:
    @batch  # Triton's batch of requests -> one (rows, 1) array per input; outputs split back by rows
    def infer(label: np.ndarray, n: np.ndarray, seed: np.ndarray) -> dict[str, np.ndarray]:
        rows = [work.request_inputs(int(y), int(k), int(s), latent_dim)
                for y, k, s in zip(label[:, 0], n[:, 0], seed[:, 0], strict=True)]
        images = work.forward(model, torch.cat([z for z, _ in rows]), torch.cat([y for _, y in rows]), device)
        pngs = [work.png(part) for part in torch.split(images, [len(y) for _, y in rows])]
        out = np.empty((len(pngs), 1), dtype=np.object_)  # object, not np.bytes_: no NUL stripping
        out[:, 0] = pngs
        return {"png": out}

    return infer


def _use_this_libpython() -> None:
    """Put this interpreter's libpython first on tritonserver's library path (PyTriton appends its
    own libs to LD_LIBRARY_PATH). The backend stub embeds the libpython the loader finds; with a
    system libpython of another patch release (Debian's 3.11.2 under pyenv's 3.11.7) it runs this
    interpreter's stdlib on the wrong C runtime and the model fails to load."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Triton.serve() stops tritonserver and cleans its workspace on KeyboardInterrupt only
    raise KeyboardInterrupt


def main() -> None:
    p = work.server_arguments(__doc__)
    p.add_argument("--max-batch-size", type=int, default=64, help="most requests (not images) per batch")
    p.add_argument("--batch-timeout", type=float, default=0.005, help="seconds a request may wait for others")
    p.add_argument("--grpc-port", type=int, default=None, help="enable gRPC on this port (default: off)")
    p.add_argument("--metrics-port", type=int, default=None, help="enable metrics on this port (default: off)")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _terminate)
    _use_this_libpython()

    model, latent_dim = work.load_model(Path(a.weights), a.device)
    z, labels = work.request_inputs(0, 1, 0, latent_dim)
    work.forward(model, z, labels, a.device)  # first-use allocations before the first request

    config = TritonConfig(
        http_address="127.0.0.1", http_port=a.port,
        allow_grpc=a.grpc_port is not None, grpc_address="127.0.0.1", grpc_port=a.grpc_port,
        allow_metrics=a.metrics_port is not None, metrics_address="127.0.0.1", metrics_port=a.metrics_port,
        exit_timeout_secs=5,  # in-flight wait on stop, well inside the benchmark's SIGKILL grace
    )
    try:
        with Triton(config=config) as triton:  # __exit__ stops tritonserver if start-up is interrupted
            triton.bind(
                model_name=MODEL_NAME,
                infer_func=make_infer(model, latent_dim, a.device),
                inputs=[Tensor(name="label", dtype=np.int64, shape=(1,)),
                        Tensor(name="n", dtype=np.int64, shape=(1,)),
                        Tensor(name="seed", dtype=np.int64, shape=(1,))],
                outputs=[Tensor(name="png", dtype=bytes, shape=(1,))],
                config=ModelConfig(
                    max_batch_size=max(1, a.max_batch_size),
                    batcher=DynamicBatcher(max_queue_delay_microseconds=round(a.batch_timeout * 1e6)),
                ),
                strict=True,
            )
            triton.serve()
    except KeyboardInterrupt:  # SIGTERM before serve(): the with block has stopped Triton
        pass


if __name__ == "__main__":
    main()
