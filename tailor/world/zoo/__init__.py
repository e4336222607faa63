"""The world model zoo: recipes that train the world's models, and the weights shipped in the repo.

Shipped under ``weights/`` (safetensors only):

- ``base/``: a diffusers ``StableDiffusionPipeline`` folder (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
  CLIPTokenizer, DDIM scheduler config), so everything that works on it works on SD1.5 unchanged;
- ``clip/``: the world CLIP (transformers ``CLIPModel``) with its tokenizer; ``clip_vision/``: its vision tower as
  ``CLIPVisionModelWithProjection`` (the image encoder diffusers' ``load_ip_adapter`` expects);
- ``oracles/``: the evaluators (attribute classifier, face-identity embedder, instance embedder, segmenter);
- ``adapters/<name>/``: trained adapters for the base (float16 on disk), loadable by name anywhere a path is taken
  (``tailor.load("canny")``, ``--control canny:IMG``, ``--ip-adapter world``; a file or folder of that name wins):
  ControlNets ``canny`` and ``seg``, T2I-Adapter ``t2i-canny``, ControlNeXt ``controlnext-canny``, IP-Adapters
  ``world`` and ``world-plus``, the identity methods ``instantid``, ``photomaker``, ``pulid`` (the name
  ``world`` after ``--instantid`` / ``--photomaker`` / ``--pulid`` means these: :func:`identity_adapter`) and
  StoryGen's context module ``storygen`` (``--storygen world``: :func:`method_adapter`), the try-on UNet
  ``ref-unet`` (``--ref-unet ref-unet=SCENE+REF+MASK+SHAPE``).
  StoryGen's context module ``storygen`` (``--storygen world``: :func:`method_adapter`), Infinite-ID ``infinite-id``
  (``--infinite-id world``: the method folder's resource provider).

This package keeps what runs at inference: these paths, the oracle models (:mod:`.oracles`), the world CLIP scorer
(:mod:`.clip`, :mod:`.scorer`) and the caption vocabulary (:mod:`.vocabulary`). The recipes that trained the weights
are not installed: they live in the source checkout's top-level ``zoo/`` folder (``python -m zoo train ...``, or
``tailor world train-zoo`` run from that checkout; docs/zoo.md).
"""

from __future__ import annotations

from pathlib import Path

from tailor.errors import InputError

WEIGHTS = Path(__file__).parent / "weights"
NOT_TRAINED = "the world model is not trained yet; run `tailor world train-zoo` from a source checkout"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{NOT_TRAINED} ({what} {path} is missing).")
    return path


def base_path() -> Path:
    """The shipped diffusers folder of the world base model."""
    return _require(WEIGHTS / "base" / "model_index.json", "base model").parent


def clip_path() -> Path:
    """The shipped world CLIP folder (transformers ``CLIPModel`` + tokenizer)."""
    return _require(WEIGHTS / "clip" / "config.json", "world CLIP").parent


def clip_vision_path() -> Path:
    """The world CLIP's vision tower as a ``CLIPVisionModelWithProjection`` folder (IP-Adapter image encoder)."""
    return _require(WEIGHTS / "clip_vision" / "config.json", "world CLIP vision tower").parent


def oracle_path(name: str) -> Path:
    """``weights/oracles/<name>.safetensors`` (``attributes``, ``face``, ``instance``, ``segmenter``,
    ``segmenter_scenes``, ``detector``)."""
    return _require(WEIGHTS / "oracles" / f"{name}.safetensors", f"oracle {name!r}")


#: shipped adapter name -> (method, condition kind or None); their recipes: the source checkout's ``zoo/adapters.py``
ADAPTERS = {
    "canny": ("controlnet", "canny"),
    "seg": ("controlnet", "seg"),
    "layout": ("controlnet", "layout"),
    "t2i-canny": ("t2i_adapter", "canny"),
    "controlnext-canny": ("controlnext", "canny"),
    "world": ("ip_adapter", None),
    "world-plus": ("ip_adapter", None),
    "instantid": ("instantid", None),
    "photomaker": ("photomaker", None),
    "pulid": ("pulid", None),
    "storygen": ("storygen", None),
    "ic-light-fc": ("ic_light", None),
    "ic-light-fbc": ("ic_light", None),
    "ref-unet": ("ref_unet", None),
    "infinite-id": ("infinite_id", None),
    "world-inpaint": ("inpaint", None),
}
#: the world identity weights of each identity method: ``--instantid world`` -> ``adapters/instantid``
IDENTITY_ADAPTERS = {"instantid": "instantid", "photomaker": "photomaker", "pulid": "pulid"}
#: other methods whose world weights the name ``world`` stands for: ``--storygen world`` -> ``adapters/storygen``
METHOD_ADAPTERS = {**IDENTITY_ADAPTERS, "storygen": "storygen"}


def adapter_path(name: str) -> Path:
    """``weights/adapters/<name>/``, the folder of a shipped adapter (``tailor.load`` reads it)."""
    if name not in ADAPTERS:
        raise InputError(
            f"{name!r} is neither an existing file or folder nor a shipped world adapter; pass a path or one of "
            f"{', '.join(ADAPTERS)}."
        )
    return _require(WEIGHTS / "adapters" / name / "tailor.json", f"adapter {name!r}").parent


class ShippedMethod:
    """A method's shipped world weights, ``weights/adapters/<name>/``, as its ``artifact:<method>`` resource: ``world``
    maps one of ``aliases`` to the folder (``tailor.load`` reads its ``tailor.json``) and any other name to None;
    ``missing`` is the one sentence (naming the recipe) when this install lacks them."""

    def __init__(self, name: str, aliases: tuple[str, ...], missing: str):
        self.name, self.aliases, self.missing = name, tuple(aliases), missing

    def folder(self) -> Path:
        return WEIGHTS / "adapters" / self.name

    def world(self, asked: str) -> Path | None:
        if asked not in self.aliases:
            return None
        if not (self.folder() / "tailor.json").is_file():
            raise InputError(self.missing)
        return self.folder()

    def names(self) -> list[str]:
        return list(self.aliases)


def shipped_adapters() -> list[str]:
    """The adapter names whose weights are present."""
    return [n for n in ADAPTERS if (WEIGHTS / "adapters" / n / "tailor.json").is_file()]


def identity_adapter(kind: str) -> Path:
    """The folder of the shipped world weights of identity method ``kind`` (``instantid``, ``photomaker``,
    ``pulid``): what ``world`` names after ``--instantid`` / ``--photomaker`` / ``--pulid``."""
    if kind not in IDENTITY_ADAPTERS:
        raise InputError(f"no world weights for {kind!r}; the world ships them for {', '.join(IDENTITY_ADAPTERS)}.")
    return adapter_path(IDENTITY_ADAPTERS[kind])


def method_adapter(kind: str) -> Path:
    """The folder of the shipped world weights of method ``kind`` (the identity methods, ``storygen``): what
    ``world`` names after that method's flag."""
    if kind not in METHOD_ADAPTERS:
        raise InputError(f"no world weights for {kind!r}; the world ships them for {', '.join(METHOD_ADAPTERS)}.")
    return adapter_path(METHOD_ADAPTERS[kind])
