"""Request and response bodies. Upper limits that come from settings are checked in the routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes up to 64 bits; keep seeds signed-safe


class GenerateRequest(BaseModel):
    """POST /generate. Integers are strict: "16", 16.0 and true are rejected, not coerced."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"label": "sneaker", "n": 16, "seed": 42}]},
    )

    label: StrictStr | StrictInt | None = Field(
        None, description="Class slug, official name (any case) or index; omit for unconditional models"
    )
    n: StrictInt = Field(16, ge=1, description="Number of images (at most GAN_MAX_N)")
    seed: StrictInt | None = Field(
        None, ge=0, le=MAX_SEED, description="Seed of the latents; random when omitted, returned in X-Seed"
    )
    model: StrictStr | None = Field(None, description="Model name from /models; the default model when omitted")
    nrow: StrictInt | None = Field(None, ge=1, description="Images per grid row; about sqrt(n) when omitted")
    padding: StrictInt = Field(2, ge=0, le=32, description="Pixels between images")
    scale: StrictInt = Field(1, ge=1, description="Integer nearest-neighbour upscaling (at most GAN_MAX_SCALE)")


class ErrorBody(BaseModel):
    """Every error response (see service/errors.py); some codes add fields such as `valid`,
    `problems` or `request_id`."""

    model_config = ConfigDict(extra="allow")

    error: str  # a stable code: invalid_input, unknown_label, unknown_model, overloaded, ...
    field: str | None  # the request field at fault, or null
    message: str


class ModelInfo(BaseModel):
    name: str
    loaded: bool
    error: str | None = None
    default: bool = False
    architecture: str | None = None
    conditional: bool | None = None
    labels: list[str] = []
    label_aliases: dict[str, str] = {}
    image_size: int | None = None
    channels: int | None = None
    latent_dim: int | None = None
    training_split: str | None = Field(
        default=None, description="Data split the generator trained on: train, test or all (all and test include "
                          "the test images, so its test-set metrics are not held out)")
    metrics: dict[str, Any] = {}
    weights_sha256: str | None = Field(default=None, description="SHA-256 of the weights being served")
    loaded_at: datetime | None = Field(default=None, description="When this version started serving (UTC)")
    load_seconds: float | None = Field(default=None, description="Seconds to load, check and warm it up")


class ModelList(BaseModel):
    default: str | None
    models: list[ModelInfo]


class Readiness(BaseModel):
    status: str  # "ready" | "loading" | "no models loaded"
    models: dict[str, str]  # name -> "loaded" | "failed: <reason>"
