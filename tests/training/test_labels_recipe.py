"""Label resolution and recipe parsing/overrides."""

from __future__ import annotations

import pytest

from gancore.labels import FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS, UnknownLabel, resolve_label
from training.recipe import RecipeError, apply_overrides, available_recipes, load_recipe

SLUGS = list(FASHION_MNIST_SLUGS)
ALIASES = dict(zip(FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS, strict=True))


@pytest.mark.parametrize("value,expected", [
    ("sneaker", 7), ("Sneaker", 7), ("T-shirt/top", 0), ("t-shirt/TOP", 0), ("Ankle boot", 9),
    ("ankle-boot", 9), ("ANKLE BOOT", 9), (3, 3), ("3", 3),
    # what people type beside the exact names: no separators, plurals
    ("tshirt", 0), ("T-Shirts", 0), ("sneakers", 7), ("Dresses", 3), ("ankle boots", 9), ("AnkleBoot", 9),
])
def test_resolve_label(value, expected):
    assert resolve_label(value, SLUGS, ALIASES) == expected


@pytest.mark.parametrize("value", ["unicorn", "tops", "", 10, -1, True, "11", "²", "١"])
def test_unknown_label_lists_valid(value):
    with pytest.raises(UnknownLabel) as err:
        resolve_label(value, SLUGS, ALIASES)
    assert err.value.valid == SLUGS and "ankle-boot" in str(err.value)
    assert err.value.suggestion is None and "did you mean" not in str(err.value)


@pytest.mark.parametrize("typo,closest", [("sneker", "sneaker"), ("tshrt", "t-shirt"), ("Pulover", "pullover"),
                                          ("ankel boot", "ankle-boot")])
def test_a_typo_names_the_closest_label(typo, closest):
    with pytest.raises(UnknownLabel) as err:
        resolve_label(typo, SLUGS, ALIASES)
    assert err.value.suggestion == closest and f"did you mean {closest!r}" in str(err.value)


def test_loose_forms_resolve_only_where_one_class_fits():
    classes = ["glass", "glasses", "box"]
    assert [resolve_label(v, classes) for v in ("glass", "glasses", "boxes", "Box")] == [0, 1, 2, 2]
    # "boxes" is "boxe" plus "s" or "box" plus "es": where both are classes, neither is picked
    with pytest.raises(UnknownLabel):
        resolve_label("boxes", ["box", "boxe"])


def test_named_recipes_load_and_validate():
    names = available_recipes()
    assert {"fashion-mnist-cwgangp", "fashion-mnist-acgan", "fashion-mnist-cwgangp-study"} <= set(names)
    study = load_recipe("fashion-mnist-cwgangp-study")
    assert (study.latent_dim, study.lr_g, study.betas, study.batch_size, study.epochs) == (20, 5e-5, (0.5, 0.9), 64, 30)
    assert study.total_steps(70_000) == int(30 * 70_000 / 64 // 5)
    ac = load_recipe("fashion-mnist-acgan")
    assert ac.aux_classifier and ac.ac_weight_g == 1.0  # 0.1 left the generator ignoring labels (card notes)


def test_overrides_are_typed_and_checked():
    r = apply_overrides(load_recipe("fashion-mnist-cwgangp"),
                        {"lr_g": "1e-4", "bf16": "true", "betas": "0.5,0.99", "steps": "10"})
    assert r.lr_g == 1e-4 and r.bf16 is True and r.betas == (0.5, 0.99) and r.steps == 10
    with pytest.raises(RecipeError, match="unknown recipe field"):
        apply_overrides(r, {"learning_rate": "1"})
    with pytest.raises(RecipeError, match="loss must be"):
        apply_overrides(r, {"loss": "hinged"})
    with pytest.raises(RecipeError, match="d_norm must be"):
        apply_overrides(r, {"d_norm": "batch"})
    with pytest.raises(RecipeError, match="integer"):
        apply_overrides(r, {"n_critic": "two"})
    # optional fields can be reset; required ones cannot; "none" stays a word where it is a value
    cifar = load_recipe("cifar10-resnet-acgan")
    assert cifar.g_batch_size == 128
    assert apply_overrides(cifar, {"g_batch_size": "null", "steps": "None"}).g_batch_size is None
    assert apply_overrides(cifar, {"steps": "none"}).steps is None
    with pytest.raises(RecipeError, match="n_critic: cannot be null"):
        apply_overrides(r, {"n_critic": "null"})
    assert apply_overrides(r, {"conditioning": "none"}).conditioning == "none"
    with pytest.raises(RecipeError, match="no recipe"):
        load_recipe("nope")


def test_only_ascii_digits_are_an_index_and_other_digits_can_name_a_class():
    """str.isdigit() is true for '²' (int() raised: a 500 in the service) and for '٣' (read as 3)."""
    classes, aliases = ["class-0", "class-1"], {"٣": "class-0", "３": "class-1"}
    assert resolve_label("٣", classes, aliases) == 0 and resolve_label("３", classes, aliases) == 1
    assert resolve_label("1", classes, aliases) == 1


def test_slugs_spell_latin_letters_out_and_drop_accents():
    from gancore.labels import slugify

    assert [slugify(n) for n in ("Straße", "Øl", "Crème brûlée", "Łódź")] == ["strasse", "ol", "creme-brulee", "lodz"]
