"""GET /models: what each model generates, and whether it loaded."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import RegistryDep
from service.schemas import ModelInfo, ModelList

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    default = registry.default_name
    models = []
    for entry in registry.entries.values():
        if not entry.loaded:
            models.append(ModelInfo(name=entry.name, loaded=False, error=entry.error))
            continue
        runner = entry.runner
        assert runner is not None
        config = runner.config
        models.append(
            ModelInfo(
                name=entry.name,
                loaded=True,
                default=entry.name == default,
                architecture=config.get("architecture"),
                conditional=runner.conditional,
                # an unconditional model's config keeps its data's classes, which it does not take
                labels=list(config.get("labels", [])) if runner.conditional else [],
                label_aliases=dict(config.get("label_aliases", {})) if runner.conditional else {},
                image_size=runner.image_size,
                channels=runner.channels,
                latent_dim=runner.latent_dim,
                training_split=_training_split(config),
                metrics=dict(config.get("metrics") or {}),
                weights_sha256=entry.weights_sha256,
                loaded_at=entry.loaded_at,
                load_seconds=None if entry.load_seconds is None else round(entry.load_seconds, 3),
            )
        )
    return ModelList(default=default, models=models)


def _training_split(config: dict) -> str | None:
    """config.json's training_split; older exports record it only in their recipe."""
    recipe = config.get("recipe")
    split = config.get("training_split") or (recipe.get("split") if isinstance(recipe, dict) else None)
    return split if isinstance(split, str) else None
