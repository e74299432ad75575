"""GET /models says which data split each generator trained on (all and test include the test images)."""

from __future__ import annotations

import json

import pytest

from service.settings import Settings
from tests.helpers import serve
from tests.service.test_shipped_weights import SHIPPED, shipped_models

pytestmark = pytest.mark.anyio


@pytest.mark.skipif(not shipped_models(), reason="no exported model in weights/ yet")
async def test_models_show_the_training_split_of_the_shipped_generators() -> None:
    async with serve(Settings(weights_dir=SHIPPED, device="cpu", max_batch=2, max_wait_ms=1)) as s:
        models = {m["name"]: m for m in (await s.client.get("/models")).json()["models"]}
    # /models says what each folder's config.json records, and a Fashion-MNIST generator trained
    # on `all` (the test images included) has a card that says so first thing.
    for name in ("fashion-mnist-cwgangp", "fashion-mnist-acgan"):
        split = json.loads((SHIPPED / name / "config.json").read_text())["training_split"]
        assert models[name]["training_split"] == split and split in ("train", "all"), name
        first_lines = (SHIPPED / name / "card.md").read_text().split("\n\n")[1]
        assert ("not held out" in first_lines) == (split == "all"), name
    # Both shipped Fashion-MNIST generators train on the training split only (issue #15): their
    # test figures are held out.
    assert models["fashion-mnist-cwgangp"]["training_split"] == "train"
    assert models["fashion-mnist-acgan"]["training_split"] == "train"
    # Colour models train on CIFAR-10's 50,000 training images only: their test figures are held out.
    for name, model in models.items():
        if name.startswith("cifar10-"):
            assert model["training_split"] == "train", name
