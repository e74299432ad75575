"""Request and response bodies. Upper limits that come from settings are checked in the routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, StrictInt, StrictStr

from gancore.sampling import MAX_SEED  # the one seed range of the service and the CLI

# A latent entry: a JSON number (an integer is a number too), finite. pydantic would otherwise
# take NaN and Infinity, which Python's JSON parser accepts, and strings such as "1.5".
LatentValue = Annotated[float, Strict(), AllowInfNan(False)]
Latent = list[LatentValue]  # one latent vector, latent_dim entries (GET /models gives latent_dim)
Truncation = Annotated[float, Strict(), AllowInfNan(False), Field(gt=0, le=1)]
TRUNCATION_HELP = ("Truncation psi in (0, 1]: latent entries beyond Phi^-1((1 + psi) / 2) are redrawn within it "
                   "(0.9 -> 1.645, 0.7 -> 1.036, 0.5 -> 0.674); 1 (the default) is off")


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
    truncation: Truncation = Field(1.0, description=TRUNCATION_HELP)
    latents: list[Latent] | None = Field(
        None, min_length=1,
        description="The latents to render instead of drawing them from a seed: one row of latent_dim numbers "
                    "per image (at most GAN_MAX_N rows; n is then the row count). Not with seed or truncation",
    )


class InterpolateRequest(BaseModel):
    """POST /interpolate: the options of GET /interpolate, and optionally the two latents to walk
    between instead of the latents of two seeds."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"label": "sneaker", "label_to": "ankle-boot", "steps": 8,
                                         "seed_from": 1, "seed_to": 2}]},
    )

    label: StrictStr | StrictInt | None = Field(None, description="Class at the start; omit for unconditional models")
    label_to: StrictStr | StrictInt | None = Field(None, description="Class at the end (walks the label embedding)")
    steps: StrictInt = Field(8, ge=2, description="Frames in the strip (at most GAN_MAX_STEPS)")
    seed_from: StrictInt | None = Field(None, ge=0, le=MAX_SEED,
                                        description="Seed of the first latent; random when omitted")
    seed_to: StrictInt | None = Field(None, ge=0, le=MAX_SEED,
                                      description="Seed of the last latent; seed_from + 1 when omitted (seed_from - 1 when seed_from is the largest seed)")
    truncation: Truncation = Field(1.0, description=TRUNCATION_HELP + " (applies to the seeds' latents)")
    latent_from: Latent | None = Field(None, description="First latent (latent_dim numbers); with latent_to, "
                                                         "instead of the seeds")
    latent_to: Latent | None = Field(None, description="Last latent (latent_dim numbers); with latent_from")
    method: Literal["slerp", "lerp"] = Field(
        "slerp", description="slerp (the default) follows the arc between the two latents; lerp the straight line, "
                 "whose middle frames have latents of smaller norm than a Gaussian draw"
    )
    model: StrictStr | None = Field(None, description="Model name from /models; the default model when omitted")
    padding: StrictInt = Field(2, ge=0, le=32, description="Pixels between images")
    scale: StrictInt = Field(1, ge=1, description="Integer nearest-neighbour upscaling (at most GAN_MAX_SCALE)")


class GenerateJson(BaseModel):
    """POST /generate with Accept: application/json."""

    model: str
    label: str | None = Field(description="The label's name; null for unconditional models")
    seed: int | None = Field(description="The seed the latents came from; null when the request gave latents")
    truncation: float | None = Field(description="The truncation psi used; null when the request gave latents")
    latents: list[list[float]] = Field(description="One row per image; sent back as `latents`, they give the "
                                                   "same pixels")
    images: list[str] = Field(description="One base64 PNG per image, each upscaled by `scale`")


class InterpolateJson(BaseModel):
    """GET or POST /interpolate with Accept: application/json."""

    model: str
    label: str | None
    label_to: str | None
    seed_from: int | None = Field(description="null when the request gave latents")
    seed_to: int | None = Field(description="null when the request gave latents")
    truncation: float | None = Field(description="null when the request gave latents")
    method: str
    t: list[float] = Field(description="Each frame's place on the walk, 0 to 1 (also the label mix with label_to)")
    latents: list[list[float]] = Field(description="Each frame's latent")
    images: list[str] = Field(description="One base64 PNG per frame, each upscaled by `scale`")


class ErrorBody(BaseModel):
    """Every error response (see service/errors.py); some codes add fields such as `valid`,
    `problems`, `suggestion` or `request_id`."""

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
