"""DreamBooth (Ruiz et al. 2022): bind a subject to ``a [V] [class]`` with a class-specific prior-preservation loss.

DreamBooth composes registered methods instead of re-implementing them (``builds_on=("finetune", "lora")``): the
weights that train are those of ``finetune`` (the whole UNet, the paper's setting; optionally the text encoder) or,
with ``lora_rank > 0``, of ``lora`` (DreamBooth-LoRA), created through the registry. DreamBooth itself adds the
identifier (:mod:`.identifier`), the class images made by the frozen base and cached across runs, batches of B instance
+ B class rows (``wrap_dataset`` pairs them, the trainer hook ``expand_batch`` stacks them) and the loss
``L = MSE(instance rows) + prior_loss_weight * MSE(class rows)``.

Files: ``dreambooth.safetensors`` (the trained weights, keys ``dreambooth.<inner keys>``, tailor metadata with the
identifier and prompts) plus, for the full UNet, ``pipeline/`` (a diffusers ``StableDiffusionPipeline`` folder) and,
for DreamBooth-LoRA, the LoRA method's ``lora.safetensors`` (diffusers/peft) and ``lora_kohya.safetensors``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tailor.core.method import ComposedMethod, get_spec
from tailor.methods.dreambooth.config import DreamBoothConfig
from tailor.methods.dreambooth.data import (
    PriorDataset,
    class_folder,
    default_cache_root,
    expand_batch,
    generate_class_images,
)
from tailor.methods.dreambooth.identifier import pick_identifier, prompt_words

log = logging.getLogger("tailor")


class DreamBoothMethod(ComposedMethod):
    """Subject-driven fine-tuning with prior preservation; full UNet (default) or LoRA."""

    name = "dreambooth"
    config_cls = DreamBoothConfig

    def __init__(self, config: DreamBoothConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        cfg = self.config
        if cfg.lora_rank > 0:
            self.inner = get_spec("lora").method(
                rank=cfg.lora_rank, alpha=cfg.lora_alpha, train_text_encoder=cfg.train_text_encoder
            )
        else:
            self.inner = get_spec("finetune").method(train_text_encoder=cfg.train_text_encoder)
        self.class_images_generated = 0  # by the last wrap_dataset call (0 when the cache was complete)

    @property
    def default_lr(self) -> float:
        return 1e-4 if self.config.lora_rank > 0 else 5e-6  # DreamBooth-LoRA / the paper's SD full fine-tune

    @property
    def trains_text_encoder(self) -> bool:  # type: ignore[override]
        return self.inner.trains_text_encoder

    # ------------------------------------------------------------------ prompts
    def resolve_identifier(self, tokenizer) -> str:
        """The identifier [V]: the configured word, else the tokenizer rule (recorded in the config once picked)."""
        cfg = self.config
        if not cfg.identifier:
            avoid = prompt_words(cfg.class_word, cfg.class_prompt, cfg.instance_prompt.replace("{identifier}", ""))
            self.config = cfg.replace(identifier=pick_identifier(tokenizer, avoid | {"a", "an", "the", "of"}))
            log.info("dreambooth identifier: %r", self.config.identifier)
        elif len(tokenizer.tokenize(cfg.identifier)) > 1:
            log.warning(
                "identifier %r is %d tokens for this tokenizer; a single rare token binds the subject best "
                "(leave --identifier empty to pick one).",
                cfg.identifier,
                len(tokenizer.tokenize(cfg.identifier)),
            )
        return self.config.identifier

    @property
    def instance_prompt(self) -> str:
        cfg = self.config
        template = cfg.instance_prompt or "a {identifier} {class_word}"
        return template.format(identifier=cfg.identifier, class_word=cfg.class_word)

    @property
    def class_prompt(self) -> str:
        cfg = self.config
        return (cfg.class_prompt or "a {class_word}").format(class_word=cfg.class_word)

    # ------------------------------------------------------------------ attach / detach (delegated)
    def patch(self, components) -> None:
        if self.components is not None and self.components is not components:
            raise RuntimeError("dreambooth is already attached to another base; call unpatch() first.")
        self.resolve_identifier(components.tokenizer)
        self.components = components
        self.inner.patch(components)

    def unpatch(self) -> None:
        self.inner.unpatch()
        self.components = None

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        self.inner.set_scale(scale)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.inner.trainable_parameters()

    # ------------------------------------------------------------------ data and loss
    def class_spec(self, size: int) -> dict[str, Any]:
        cfg, c = self.config, self.components
        return {
            "base": getattr(c, "source", "") or "",
            "prompt": self.class_prompt,
            "count": cfg.num_class_images,
            "seed": cfg.class_seed,
            "steps": cfg.class_steps,
            "guidance": cfg.class_guidance,
            "size": size,
        }

    @torch.no_grad()
    def ensure_class_images(self, size: int | None = None, out: str | Path | None = None) -> Path:
        """The class-image folder, generating what it lacks with the frozen base (this method made inert): under
        ``class_dir``, else ``<out>/class_images`` (the training run's folder), else the user cache."""
        from tailor.core.pipeline import Pipeline

        c = self.components
        spec = self.class_spec(size or c.default_size)
        root = self.config.class_dir or (Path(out) / "class_images" if out is not None else default_cache_root())
        folder = class_folder(root, spec)
        modes = [m.training for m in self.modules()]
        scale = self.scale
        self.set_scale(0.0)  # LoRA adds nothing; a full fine-tune has not changed the base yet when training starts
        for m in self.modules():
            m.eval()
        try:
            self.class_images_generated = generate_class_images(Pipeline(c), folder, spec)
        finally:
            self.set_scale(scale)
            for m, mode in zip(self.modules(), modes):
                m.train(mode)
        if self.class_images_generated:
            log.info("generated %d class images in %s", self.class_images_generated, folder)
        return folder

    def wrap_dataset(self, dataset, config):
        """Instance items get the instance prompt; with prior preservation each is paired with a class image."""
        from tailor.core.training.data import FolderDataset

        size = config.resolution or self.components.default_size
        classes = None
        if self.config.with_prior_preservation:
            classes = FolderDataset(self.ensure_class_images(out=config.out), size, caption=self.class_prompt)
        return PriorDataset(dataset, self.instance_prompt, classes, self.class_prompt)

    def expand_batch(self, batch, keys, positions):
        """Trainer hook: each (instance, class) pair of the batch becomes two rows (see :mod:`.data`)."""
        return expand_batch(batch, keys, positions)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, state, weights: torch.Tensor | None):
        """``MSE(instance rows) + prior_loss_weight * MSE(class rows)`` (rows split by the batch's ``prior`` flag)."""
        prior = (state.inputs or {}).get("prior") if state is not None else None
        if prior is None or not self.config.with_prior_preservation:
            return super().loss(pred, target, state, weights)
        per = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
        if weights is not None:
            per = per * weights
        prior = torch.as_tensor(prior, device=per.device).bool().reshape(-1)
        inst, cls = per[~prior], per[prior]
        inst_loss = inst.mean() if inst.numel() else per.sum() * 0.0
        prior_loss = cls.mean() if cls.numel() else per.sum() * 0.0
        loss = inst_loss + self.config.prior_loss_weight * prior_loss
        return loss, {"mse": float(inst_loss.detach()), "prior_mse": float(prior_loss.detach())}

    # ------------------------------------------------------------------ weights and files
    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "instance_prompt": self.instance_prompt, "class_prompt": self.class_prompt}

    def save(self, out_dir: str | Path) -> Path:
        """``dreambooth.safetensors`` plus ``pipeline/`` (full UNet) or ``lora.safetensors`` + kohya (LoRA)."""
        path = super().save(out_dir)
        if self.components is None:
            return path
        if self.config.lora_rank > 0:
            self.inner.save(out_dir)
        else:
            self.components.save_pipeline(Path(out_dir) / "pipeline")
        return path
