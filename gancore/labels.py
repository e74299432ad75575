"""Class names: canonical slugs, official names as aliases, and resolving what a user typed."""

from __future__ import annotations

import re

FASHION_MNIST_OFFICIAL = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_SLUGS = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)
MNIST_OFFICIAL = tuple(str(i) for i in range(10))
MNIST_SLUGS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def slugify(name: str) -> str:
    """'Ankle boot' -> 'ankle-boot'; 'T-shirt/top' -> 't-shirt-top' (callers may override)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not slug:
        raise ValueError(f"class name {name!r} has no letters or digits")
    return slug


class UnknownLabel(ValueError):
    """A label that is neither a slug, an alias nor a valid index; carries the valid slugs."""

    def __init__(self, value: object, valid: list[str]):
        self.value = value
        self.valid = valid
        super().__init__(f"unknown label {value!r}; valid labels: {', '.join(valid)}")


def resolve_label(value: str | int, slugs: list[str], aliases: dict[str, str] | None = None) -> int:
    """Map a slug, an alias (any case), an official name or a class index to its class id."""
    if isinstance(value, bool):
        raise UnknownLabel(value, slugs)
    if isinstance(value, int):
        if 0 <= value < len(slugs):
            return value
        raise UnknownLabel(value, slugs)
    text = str(value).strip()
    if text.isdigit() and text not in slugs:
        return resolve_label(int(text), slugs, aliases)
    key = text.lower()
    lowered = [s.lower() for s in slugs]
    if key in lowered:
        return lowered.index(key)
    for alias, slug in (aliases or {}).items():
        if alias.lower() == key:
            return slugs.index(slug)
    try:
        slug = slugify(text)
    except ValueError:
        raise UnknownLabel(value, slugs) from None
    if slug in lowered:
        return lowered.index(slug)
    raise UnknownLabel(value, slugs)
