"""Baseline 4: a plain FastAPI endpoint that runs the generator once per request.

No queue, no batching: FastAPI runs the sync endpoint in its thread pool, so concurrent requests
run concurrent batch-of-n forwards. `python -m bench.plain_app --weights DIR --port P`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

from bench import work
from bench.work import Body


def create_app(weights: Path, device: str) -> FastAPI:
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model, latent_dim = work.load_model(weights, device)
        z, labels = work.request_inputs(0, 1, 0, latent_dim)
        work.forward(model, z, labels, device)  # first-use allocations before the first request
        state.update(model=model, latent_dim=latent_dim)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/generate")
    def generate(body: Body) -> Response:
        z, labels = work.request_inputs(body.label, body.n, body.seed, int(state["latent_dim"]))  # type: ignore[call-overload]
        images = work.forward(state["model"], z, labels, device)
        return Response(work.png(images), media_type="image/png")

    return app


def main() -> None:
    p = work.server_arguments(__doc__)
    a = p.parse_args()
    uvicorn.run(create_app(Path(a.weights), a.device), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
