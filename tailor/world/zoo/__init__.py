"""The world model zoo: recipes that train the world's models, and the weights shipped in the repo.

Shipped under ``weights/`` (safetensors only):

- ``base/``: a diffusers ``StableDiffusionPipeline`` folder (UNet2DConditionModel, AutoencoderKL, CLIPTextModel,
  CLIPTokenizer, DDIM scheduler config), so everything that works on it works on SD1.5 unchanged;
- ``clip/``: the world CLIP (transformers ``CLIPModel``) with its tokenizer; ``clip_vision/``: its vision tower as
  ``CLIPVisionModelWithProjection`` (the image encoder diffusers' ``load_ip_adapter`` expects);
- ``oracles/``: the evaluators (attribute classifier, face-identity embedder, instance embedder, segmenter).

The recipes live beside this file (``tokenizer``, ``vae``, ``unet``, ``clip``, ``oracles``, ``export``) and run
through ``tailor world train-zoo``.
"""

from __future__ import annotations

from pathlib import Path

from tailor.errors import InputError

WEIGHTS = Path(__file__).parent / "weights"
NOT_TRAINED = "the world model is not trained yet; run `tailor world train-zoo`"


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
    """``weights/oracles/<name>.safetensors`` (``attributes``, ``face``, ``instance``, ``segmenter``)."""
    return _require(WEIGHTS / "oracles" / f"{name}.safetensors", f"oracle {name!r}")
