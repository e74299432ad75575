"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis), in-process.

Every generated request, valid or not, must get no 5xx, a JSON body whenever it is an error, and
a status, headers and body that the schema documents. Examples are bounded and derandomised, so
the run is short and repeatable.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.python import asgi as st_asgi

from service.main import create_app
from service.settings import Settings
from tests.helpers import GRAY, UNCOND


@pytest.fixture(scope="module")
def fuzz_app(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    root = tmp_path_factory.mktemp("fuzz-weights")  # a conditional and an unconditional model
    for name in (GRAY, UNCOND):
        shutil.copytree(weights_dir / name, root / name)
    # Small limits keep each generated request cheap on CPU; the limits themselves get fuzzed too.
    # In-process forwards: schemathesis restarts the lifespan for every test, and an engine process
    # per model cost about 5 s a start (the API's answers are the same with either engine).
    return create_app(Settings(weights_dir=root, device="cpu", max_batch=8, max_wait_ms=1, max_n=16,
                               max_steps=8, max_scale=3, max_pixels=200_000, default_model=GRAY,
                               engine="thread"))


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.fixture
def ready(fuzz_app: FastAPI) -> None:
    """Start the lifespan (schemathesis' pytest plugin ends it after every test) and wait until the
    models are loaded, so that 503 'still loading' is not mistaken for a failure."""
    with st_asgi.get_client(fuzz_app):
        pass
    deadline = time.monotonic() + 60
    while not fuzz_app.state.loading.done():
        assert time.monotonic() < deadline, "models did not load within 60 s"
        time.sleep(0.02)


def error_is_json(ctx, response, case) -> bool:  # noqa: ANN001 - schemathesis check signature
    """Every 4xx/5xx (other than /readyz, whose 503 is its Readiness body) is an ErrorBody."""
    if response.status_code >= 400 and case.path != "/readyz":
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
        body = response.json()
        assert isinstance(body, dict) and {"error", "field", "message"} <= set(body), body
    return True


CASES = [
    ("POST", "/generate", GenerationMode.POSITIVE, 40),
    ("POST", "/generate", GenerationMode.NEGATIVE, 40),
    ("GET", "/interpolate", GenerationMode.POSITIVE, 40),
    ("GET", "/interpolate", GenerationMode.NEGATIVE, 40),
    ("POST", "/interpolate", GenerationMode.POSITIVE, 40),
    ("POST", "/interpolate", GenerationMode.NEGATIVE, 30),
    # No parameters: nothing to make negative, and few distinct requests.
    ("GET", "/models", GenerationMode.POSITIVE, 3),
    ("GET", "/readyz", GenerationMode.POSITIVE, 3),
    ("GET", "/healthz", GenerationMode.POSITIVE, 3),
    ("GET", "/metrics", GenerationMode.POSITIVE, 3),
]
IMAGE_PATHS = ("/generate", "/interpolate")
# The Accept header is not an OpenAPI parameter, so schemathesis does not vary it: the image
# routes' positive examples take these in turn, so that WebP, the JSON body and 406 are checked
# against the documented responses too (each case's app start costs seconds; a case per format
# would multiply that).
ACCEPTS = [None, "application/json", "image/webp", "text/html"]


@pytest.mark.parametrize(("method", "path", "mode", "examples"), CASES,
                         ids=[f"{m} {p} {g.value}" for m, p, g, _ in CASES])
def test_api_from_its_schema(fuzz_schema, ready, method: str, path: str, mode: GenerationMode,  # noqa: ANN001
                             examples: int) -> None:
    operation = fuzz_schema[path][method]
    accepts = itertools.cycle(ACCEPTS if path in IMAGE_PATHS and mode == GenerationMode.POSITIVE else [None])

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        accept = next(accepts)
        case.call_and_validate(headers=None if accept is None else {"Accept": accept},
                               additional_checks=[error_is_json], excluded_checks=[positive_data_acceptance])

    check()


def test_openapi_documents_the_error_body(fuzz_schema) -> None:  # noqa: ANN001
    """The 422 FastAPI documents by default ({"detail": [...]}) is replaced by what we send."""
    raw = fuzz_schema.raw_schema
    for path, method in (("/generate", "post"), ("/interpolate", "post"), ("/interpolate", "get")):
        responses = raw["paths"][path][method]["responses"]
        assert {"200", "404", "406", "422", "500", "503", "504"} <= set(responses)
        for status in ("406", "422"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorBody")
        assert set(responses["200"]["content"]) == {"image/png", "image/webp", "application/json"}
    assert "HTTPValidationError" not in str(raw)
