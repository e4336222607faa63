"""Load a base model into :class:`Components` (tiny random ones: :mod:`tailor.core.tiny`).

A base is a diffusers folder (``model_index.json``), a single-file checkpoint (``.safetensors`` / ``.ckpt``, via
diffusers' ``from_single_file`` with a local config folder), or a name: a registered ``base`` resource
(:mod:`tailor.core.resources`; ``world``, the shipped world model, registered by the world package),
``tiny`` / ``tiny-xl`` (seeded random components of the SD / SDXL architectures, used by tests and the first demo).
Both SD1.x/SD2-style bases and SDXL-style bases (two text encoders, added time ids) are supported. Nothing is ever
downloaded: every loader is called with ``local_files_only=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.utils import logging as hf_logging

from tailor.core import resources
from tailor.core.fsguard import check_new_target
from tailor.core.io import atomic_dir, write_json
from tailor.errors import FormatError, IncompatibleError, InputError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = ("tiny", "tiny-xl")  # seeded random bases built here (tests, smoke runs)
SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def module_dtype(model: torch.nn.Module) -> torch.dtype:
    """``ModelMixin.dtype`` without its walk over every submodule looking for layerwise-casting hooks (~1 ms a call
    on the world ControlNet's 170 modules, three times per sampling step before): the first floating parameter's
    dtype. tailor never enables diffusers' layerwise casting (whose compute dtype differs from the storage dtype);
    a model with such a hook on its top level, or without floating parameters, falls back to ``model.dtype``."""
    if not hasattr(model, "_diffusers_hook"):
        keep = getattr(model, "_keep_in_fp32_modules", None)
        for name, p in model.named_parameters():
            if p.is_floating_point() and not (keep and any(k in name for k in keep)):
                return p.dtype
    return model.dtype


@dataclass
class Components:
    """The parts of a Stable Diffusion base; SDXL bases also have ``text_encoder_2`` / ``tokenizer_2``."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: Any
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None
    source: str = ""

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def is_inpainting(self) -> bool:
        """An inpainting UNet (diffusers' layout): latents + mask + masked-image latents in (9 channels for SD)."""
        return int(self.unet.config.in_channels) == 2 * int(self.vae.config.latent_channels) + 1

    @property
    def device(self) -> torch.device:
        # diffusers' ModelMixin.device walks every submodule looking for group-offloading hooks: ~6 ms a call on a
        # LoRA-wrapped world UNet, paid several times per training step. Without such hooks (they always sit on the
        # top-level module too) the first parameter's device is the same answer.
        unet = self.unet
        if not hasattr(unet, "_diffusers_hook"):
            first = next(unet.parameters(), None)
            if first is not None:
                return first.device
        return unet.device

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self.unet)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def default_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Components:
        for m in self.models():
            m.to(device=device, dtype=dtype)
        return self

    def models(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2) if m is not None]

    def freeze(self) -> Components:
        for m in self.models():
            m.requires_grad_(False)
            m.eval()
        return self

    def diffusers_pipeline(self, pipeline_cls=None, **extra):
        """The equivalent diffusers pipeline over the same module objects (no copies).

        ``pipeline_cls`` picks another SD / SDXL pipeline class (e.g. ``StableDiffusionControlNetPipeline``) and
        ``extra`` supplies its further modules (``controlnet=...``, ``adapter=...``).
        """
        from diffusers import (
            StableDiffusionInpaintPipeline,
            StableDiffusionPipeline,
            StableDiffusionXLInpaintPipeline,
            StableDiffusionXLPipeline,
        )

        modules = dict(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
        )
        if self.is_sdxl:
            cls = pipeline_cls or (
                StableDiffusionXLInpaintPipeline if self.is_inpainting else StableDiffusionXLPipeline
            )
            modules.update(text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2)
        else:
            cls = pipeline_cls or (StableDiffusionInpaintPipeline if self.is_inpainting else StableDiffusionPipeline)
            modules.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return cls(**{**modules, **extra})

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a diffusers pipeline folder that ``from_pretrained`` loads without tailor."""
        from tailor.core.tokenizers import save_tokenizer

        self.diffusers_pipeline().save_pretrained(str(folder))
        save_tokenizer(self.tokenizer, Path(folder) / "tokenizer")
        if self.tokenizer_2 is not None:
            save_tokenizer(self.tokenizer_2, Path(folder) / "tokenizer_2")

    def save_pipeline(self, folder: str | Path) -> None:
        """:meth:`save_pretrained` written atomically (temp, then rename) and quietly (no progress bar per model)."""
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar per text encoder
        try:
            check_new_target(folder, PIPELINE_RECORD)  # replaces only a pipeline folder tailor wrote
            with atomic_dir(folder) as tmp:
                self.save_pretrained(tmp)
                write_json(Path(tmp) / PIPELINE_RECORD, {"written_by": "tailor", "kind": "diffusers pipeline"})
        finally:
            if bars:
                hf_logging.enable_progress_bar()


#: the record save_pipeline leaves in its folder: only a folder holding it is replaced by a later save
PIPELINE_RECORD = "tailor-pipeline.json"


# --------------------------------------------------------------------- loading
def load_components(
    base: str | Path, device: str | torch.device = "cpu", config: str | Path | None = None
) -> Components:
    """Load ``base``: ``world``, ``tiny``, ``tiny-xl``, a diffusers folder or a single-file checkpoint.

    ``config`` is the diffusers folder whose configs a single-file checkpoint is read with (no downloads).
    """
    from tailor.core.progress import quiet_loading

    with quiet_loading():
        return _load_components(str(base), config).to(device).freeze()


def _load_components(name: str, config: str | Path | None) -> Components:
    named = resources.resolve("base", name) if resources.bare(name) and name not in TINY else None
    if named is not None:  # a registered name (``world``: the world zoo's base)
        comps = _from_folder(Path(named))
        comps.source = name
    elif name in TINY:
        comps = tiny_components(sdxl=name == "tiny-xl")
    else:
        path = Path(name)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise InputError(
                    f"{path} has no model_index.json; pass a diffusers model folder, a .safetensors "
                    f"checkpoint, or 'world'."
                )
            comps = _from_folder(path)
        elif path.is_file():
            comps = _from_single_file(path, config)
        else:
            raise InputError(
                f"base model {name!r} not found; pass a diffusers folder, a checkpoint file, or one of "
                f"{resources.choices('base', *TINY)}."
            )
        comps.source = str(path)
    return comps


def _from_folder(path: Path) -> Components:
    from diffusers import DiffusionPipeline

    from tailor.core.io import PICKLE_SUFFIXES, check_pickle

    for weights in sorted(path.glob("*/*")):  # name the real reason: a pickled model part that would run code
        if weights.suffix in PICKLE_SUFFIXES and not weights.with_suffix(".safetensors").exists():
            check_pickle(weights)
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, safety_checker=None)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise InputError(f"cannot load the diffusers model in {path} ({e}); check the folder is complete.") from e
    return _from_pipeline(pipe)


def _from_single_file(path: Path, config: str | Path | None) -> Components:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    if path.suffix not in (".safetensors", ".ckpt"):
        raise InputError(f"{path} is not a .safetensors or .ckpt checkpoint; pass a model file or folder.")
    if config is None:
        raise InputError(
            f"{path} is a single-file checkpoint: pass --base-config with a diffusers folder of the same "
            f"architecture (tailor never downloads configs)."
        )
    if not (Path(config) / "model_index.json").is_file():
        raise InputError(
            f"--base-config {config} is not a diffusers model folder (no model_index.json); pass the "
            f"folder of a model with the same architecture as {path.name}."
        )
    xl = (Path(config) / "text_encoder_2").is_dir()
    if path.suffix == ".ckpt":
        from tailor.core.io import check_pickle

        check_pickle(path)  # before diffusers unpickles it
    if path.suffix == ".safetensors" and _check_ldm_safetensors(path) != xl:
        kinds = ("an SD", "an SDXL")
        raise IncompatibleError(
            f"{path} is {kinds[not xl]} checkpoint but --base-config {config} is {kinds[xl]} "
            f"model; pass a config folder of the checkpoint's architecture."
        )
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    kw = {} if xl else {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = cls.from_single_file(str(path), config=str(config), local_files_only=True, **kw)
    except SingleFileComponentError as e:
        # diffusers' message suggests code changes; say which file lacks what instead
        part = str(e).split(".")[0].removeprefix("Failed to load ")
        raise FormatError(
            f"{path} has no weights for {part}; it is not a full checkpoint of the architecture of "
            f"{config} (a LoRA, embedding or partial file?)."
        ) from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise FormatError(
            f"cannot read checkpoint {path} with the configs of {config} ({e}); check the file is a "
            f"complete checkpoint of the same architecture."
        ) from e
    return _from_pipeline(pipe)


def _check_ldm_safetensors(path: Path) -> bool:
    """Whether ``path`` is an SDXL checkpoint; fails early on a file without an original-layout UNet."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path} is not a readable .safetensors file ({e}); re-export or re-download it.") from e
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise FormatError(
            f"{path} has no UNet weights (model.diffusion_model.*): it is not a full Stable Diffusion "
            f"checkpoint (a LoRA, embedding or VAE file?); pass a full model checkpoint."
        )
    return any(k.startswith("conditioner.") for k in keys)


def _from_pipeline(pipe) -> Components:
    return Components(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler=pipe.scheduler,
        text_encoder_2=getattr(pipe, "text_encoder_2", None),
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
    )


# kept importable from here (tests and users' scripts import them): built in their own modules
from tailor.core.image_encoder import load_image_encoder, tiny_image_encoder  # noqa: E402, F401
from tailor.core.tiny import tiny_components  # noqa: E402, F401
