"""The world's vocabulary: shapes, colours, patterns, backgrounds and render styles, with their synonyms.

Every name the renderer accepts and every word the caption parser reads lives here, so captions, the
parser, the CLI and the datasets can never disagree about what exists. Also the seeded random helpers
that make every image a deterministic function of an integer seed.
"""

from __future__ import annotations

import numpy as np

from tailor.errors import ConfigError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "hexagon", "cross", "diamond")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (250, 215, 35),
    "green": (40, 165, 55),
    "blue": (35, 80, 215),
    "purple": (135, 55, 185),
    "pink": (250, 125, 185),
    "white": (248, 248, 248),
    "black": (25, 25, 25),
    "brown": (120, 70, 30),
}

# Patterns base objects wear (drawn in a lighter/darker shade of the object's one colour).
PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
# Two-colour subjects may also wear these, which base training never shows.
SUBJECT_PATTERNS: tuple[str, ...] = ("striped", "checkered", "dotted", "halves", "rings")
DECALS: tuple[str, ...] = ("dot", "ring", "bar", "cross")

BACKGROUNDS: tuple[str, ...] = ("grass", "sand", "snow", "water", "brick", "wood", "sky")

# Render style -> the phrase that opens a caption.
STYLES: dict[str, str] = {
    "photo": "a photo of",
    "sketch": "a sketch of",
    "pixel": "a pixel art of",
    "watercolor": "a watercolor of",
    "cartoon": "a cartoon of",
}

FACE_CLASSES: tuple[str, ...] = ("man", "woman", "child")

# word (lower case, as it may appear in a prompt) -> canonical name, per attribute.
SYNONYMS: dict[str, dict[str, str]] = {
    "shape": {
        **{s: s for s in SHAPES},
        **{s + "s": s for s in SHAPES if s != "cross"},
        "crosses": "cross",
        "plus": "cross",
        "rhombus": "diamond",
    },
    "color": {**{c: c for c in COLORS}, "violet": "purple"},
    "pattern": {
        "plain": "plain",
        "solid": "plain",
        "striped": "striped",
        "stripes": "striped",
        "stripe": "striped",
        "stripy": "striped",
        "checkered": "checkered",
        "chequered": "checkered",
        "checker": "checkered",
        "checkers": "checkered",
        "checkerboard": "checkered",
        "checks": "checkered",
        "checked": "checkered",
        "dotted": "dotted",
        "dots": "dotted",
        "dot": "dotted",
        "spotted": "dotted",
        "spots": "dotted",
        "polka": "dotted",
        "halves": "halves",
        "half": "halves",
        "split": "halves",
        "rings": "rings",
        "ringed": "rings",
        "concentric": "rings",
    },
    "background": {
        "grass": "grass",
        "grassy": "grass",
        "lawn": "grass",
        "meadow": "grass",
        "sand": "sand",
        "sandy": "sand",
        "beach": "sand",
        "desert": "sand",
        "snow": "snow",
        "snowy": "snow",
        "water": "water",
        "sea": "water",
        "ocean": "water",
        "lake": "water",
        "brick": "brick",
        "bricks": "brick",
        "wood": "wood",
        "wooden": "wood",
        "sky": "sky",
        "clouds": "sky",
        "cloudy": "sky",
    },
    "style": {
        "photo": "photo",
        "photograph": "photo",
        "photography": "photo",
        "realistic": "photo",
        "sketch": "sketch",
        "drawing": "sketch",
        "pencil": "sketch",
        "pixel": "pixel",
        "pixelart": "pixel",
        "watercolor": "watercolor",
        "watercolour": "watercolor",
        "cartoon": "cartoon",
        "comic": "cartoon",
    },
    "cls": {
        "man": "man",
        "men": "man",
        "woman": "woman",
        "women": "woman",
        "lady": "woman",
        "child": "child",
        "children": "child",
        "kid": "child",
        "boy": "child",
        "girl": "child",
    },
}
SYNONYMS["decal"] = {d: d for d in DECALS}

_VALID: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "pattern": PATTERNS,
    "subject pattern": SUBJECT_PATTERNS,
    "background": BACKGROUNDS,
    "style": tuple(STYLES),
    "cls": FACE_CLASSES,
    "decal": DECALS,
}


def vocabulary() -> dict[str, list[str]]:
    """Every name the world knows: ``shapes``, ``colors``, ``patterns``, ``backgrounds``, ``styles``, ``classes``."""
    return {
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "patterns": list(PATTERNS),
        "backgrounds": list(BACKGROUNDS),
        "styles": list(STYLES),
        "classes": list(FACE_CLASSES),
        "subject_patterns": list(SUBJECT_PATTERNS),
        "decals": list(DECALS),
    }


def canonical(kind: str, value: str | None) -> str | None:
    """Map ``value`` (a name or synonym) to its canonical name for attribute ``kind``; None stays None.

    Raises ConfigError naming the value and listing the valid names when ``value`` is unknown.
    """
    if value is None:
        return None
    table = SYNONYMS["pattern" if kind == "subject pattern" else kind]
    name = table.get(str(value).strip().lower())
    valid = _VALID[kind]
    if name is None or name not in valid:
        raise ConfigError(f"unknown {kind} {value!r}; valid {kind}s are: {', '.join(valid)}.")
    return name


def check_seed(seed: int) -> int:
    """Seeds are non-negative integers (numpy's generator refuses negatives)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    return int(seed)


def check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 16 <= size <= 2048:
        raise ConfigError(f"size must be an integer between 16 and 2048 pixels, got {size!r}.")
    return int(size)


def make_rng(*keys: int) -> np.random.Generator:
    """A generator seeded from a tuple of non-negative ints (e.g. ``(seed,)`` or ``(seed, index)``)."""
    return np.random.default_rng([int(k) for k in keys])


def derive_seed(*keys: int) -> int:
    """One 63-bit seed from several ints, stable across platforms and numpy versions."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def pick(rng: np.random.Generator, options: tuple[str, ...] | list[str], given: str | None) -> str:
    """Draw from ``options`` always (so the stream does not depend on what is given), then prefer ``given``."""
    drawn = options[int(rng.integers(len(options)))]
    return drawn if given is None else given


def shade(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A darker or lighter shade of ``rgb`` for patterns, far enough to see and near enough to keep the hue."""
    r, g, b = rgb
    lum = (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
    if lum > 0.55:
        return tuple(int(round(c * 0.62)) for c in rgb)
    mix = 0.42 if lum > 0.15 else 0.38
    return tuple(int(round(c + (255 - c) * mix)) for c in rgb)


def luminance(rgb: tuple[int, int, int]) -> float:
    r, g, b = rgb
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0
