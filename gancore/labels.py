"""Class names: canonical slugs, official names as aliases, and resolving what a user typed."""

from __future__ import annotations

import difflib
import re
import unicodedata

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


# Latin letters that NFKD does not split into a base letter and an accent
_LATIN_LETTERS = str.maketrans({"ß": "ss", "ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "þ": "th", "ð": "d"})


def slugify(name: str) -> str:
    """'Ankle boot' -> 'ankle-boot'; 'T-shirt/top' -> 't-shirt-top'; 'Éclair' -> 'eclair' (accents
    dropped). ASCII only: a label travels in URLs and in HTTP headers (X-Label), which are latin-1."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", name.strip().lower().translate(_LATIN_LETTERS))
                     if not unicodedata.combining(c))
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    if not slug:
        raise ValueError(f"class name {name!r} has no letters or digits")
    return slug


class UnknownLabel(ValueError):
    """A label that is neither a slug, an alias nor a valid index; carries the valid slugs and,
    for a near miss such as a typo, the closest one (`suggestion`, else None)."""

    def __init__(self, value: object, valid: list[str]):
        self.value = value
        self.valid = valid
        self.suggestion = closest_name(value, valid)
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        super().__init__(f"unknown label {value!r}{hint}; valid labels: {', '.join(valid)}")


def _compact(name: str) -> str:
    """Letters and digits only, lower case, accents dropped: 'T-Shirt' and 'tshirt' -> 'tshirt'."""
    try:
        return slugify(name).replace("-", "")
    except ValueError:  # no letters or digits
        return ""


def closest_name(value: object, names: list[str]) -> str | None:
    """The name a near miss was probably meant to be ('sneker' -> 'sneaker'), compared without
    case or separators; None when none is close. For error messages only, never to resolve."""
    if not isinstance(value, str) or not value.strip():
        return None
    found = difflib.get_close_matches(_compact(value), [_compact(s) for s in names], n=1, cutoff=0.75)
    return next((s for s in names if found and _compact(s) == found[0]), None)


def _loose_match(text: str, slugs: list[str], aliases: dict[str, str]) -> int | None:
    """What a person types for a class beside its exact name: without its hyphens or spaces
    ('tshirt', 'ankleboot') or in the plural ('sneakers', 'dresses', 'ankle boots'). Used only
    where exactly one class fits, so a dataset that has both 'glass' and 'glasses' still needs
    the exact name for either."""
    names = {_compact(slug): i for i, slug in enumerate(slugs)}
    for alias, slug in aliases.items():
        names.setdefault(_compact(alias), slugs.index(slug))
    key = _compact(text)
    forms = [key]
    if key.endswith("s"):
        forms.append(key[:-1])
    if key.endswith("es"):
        forms.append(key[:-2])
    ids = {names[form] for form in forms if form in names}
    return ids.pop() if len(ids) == 1 else None


def resolve_label(value: str | int, slugs: list[str], aliases: dict[str, str] | None = None) -> int:
    """Map a slug, an alias (any case), an official name or a class index to its class id; then,
    where exactly one class fits, the name without separators or in the plural (`_loose_match`)."""
    if isinstance(value, bool):
        raise UnknownLabel(value, slugs)
    if isinstance(value, int):
        if 0 <= value < len(slugs):
            return value
        raise UnknownLabel(value, slugs)
    text = str(value).strip()
    # ASCII digits only: "²" and "٣" pass str.isdigit() (int() refuses the first, reads the second
    # as 3), and a class may be named by them (an alias)
    if text.isascii() and text.isdigit() and text not in slugs:
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
    loose = _loose_match(text, slugs, aliases or {})
    if loose is not None:
        return loose
    raise UnknownLabel(value, slugs)
