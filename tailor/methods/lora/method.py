"""LoRA for text-to-image diffusion (Hu et al. 2021): low-rank updates ``(alpha/r) B A`` on the UNet's attention.

Built on :mod:`tailor.core.lora` (peft layers, scales, fuse, merge). The method trains one adapter; loaded files
(ours, kohya/A1111, diffusers/peft) attach with the modules and ranks they hold, so several LoRAs compose on one
pipeline, each with its own weight (``Pipeline.attach(tailor.load(path), weight=0.8)``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.io import meta_json, save_tensors
from tailor.core.lora import LoRA, find_targets, specs_from_state
from tailor.core.lora_math import merge, most_common
from tailor.core.method import ARTIFACT_FORMAT, Method
from tailor.errors import ConfigError
from tailor.methods.lora.config import LoRAConfig
from tailor.methods.lora.formats import canonical, detect_layout, read_file, sniff_keys, to_diffusers, write_files

_ids = itertools.count()


class LoRAMethod(Method):
    """One LoRA adapter over the UNet (and optionally the text encoders)."""

    name = "lora"
    config_cls = LoRAConfig
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, config: LoRAConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.lora: LoRA | None = None
        self._stash: dict[str, torch.Tensor] | None = None  # weights waiting for attach (any supported layout)
        self._stash_meta: dict[str, str] = {}

    @property
    def trains_text_encoder(self) -> bool:  # type: ignore[override]
        return bool(self.config.train_text_encoder)

    # ------------------------------------------------------------------ attach / detach
    def build(self, components) -> None:
        cfg = self.config
        if self._stash is not None:
            self._stash = canonical(self._stash, self._stash_meta, components)
            specs = specs_from_state(self._stash)
        else:
            text = cfg.text_targets if cfg.train_text_encoder else ()
            specs = {k: (cfg.rank, cfg.lora_alpha) for k in find_targets(components, cfg.targets, text)}
        init: Any = True if cfg.init == "kaiming" else "gaussian"
        self.lora = LoRA(f"tailor_lora_{next(_ids)}", specs, dropout=cfg.dropout, init=init)

    def attach(self, components) -> None:
        self.lora.attach(components)
        if self._stash is not None:
            try:
                self.lora.load_state_dict(canonical(self._stash, self._stash_meta, components))
            except Exception:
                self.lora.detach()  # leave the base as it was
                self.components = None
                raise
            self._stash = None
        self.lora.set_scale(self.scale)

    def detach(self, components) -> None:
        self._stash, self._stash_meta = self.lora.state_dict(), {}  # a later patch() brings the weights back
        self.lora.detach()

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        if self.lora is not None:
            self.lora.set_scale(scale)

    def fuse(self, weight: float = 1.0) -> None:
        """Bake ``weight`` times this LoRA into the base weights (undone by ``unfuse()`` or detaching)."""
        self._attached().fuse(weight)

    def unfuse(self) -> None:
        self._attached().unfuse()

    def _attached(self) -> LoRA:
        if self.lora is None or self.lora.components is None:
            raise RuntimeError("attach the LoRA to a pipeline first (Pipeline.attach).")
        return self.lora

    # ------------------------------------------------------------------ training
    def modules(self) -> list[nn.Module]:
        return self.lora.modules() if self.lora is not None and self.lora.components is not None else []

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = self.lora.parameters() if self.lora is not None else []
        for p in params:
            p.requires_grad_(True)
        return params

    # ------------------------------------------------------------------ weights and files
    def canonical_state(self) -> dict[str, torch.Tensor]:
        """The weights in tailor's canonical LoRA layout (see tailor.core.lora)."""
        if self.lora is not None and self.lora.components is not None:
            return self.lora.state_dict()
        if self._stash is not None and detect_layout(self._stash) != "kohya":
            return canonical(self._stash, self._stash_meta)
        raise RuntimeError("this LoRA's weights are not resolved yet; attach it to a base first.")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{self.name}.{k}": v for k, v in self.canonical_state().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
        prefix = f"{self.name}."
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
        if self.lora is not None and self.lora.components is not None:
            self.lora.load_state_dict(canonical(state, metadata, self.lora.components))
        else:
            self._stash, self._stash_meta = dict(state), dict(metadata or {})

    def save(self, out_dir: str | Path) -> Path:
        """``lora.safetensors`` (diffusers/peft keys + tailor metadata) and ``lora_kohya.safetensors``."""
        comps = self.components if self.components is not None else getattr(self.lora, "components", None)
        sdxl = bool(comps is not None and comps.is_sdxl)
        path, _ = write_files(out_dir, self.canonical_state(), self.metadata(), sdxl, comps.unet if sdxl else None)
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> LoRAMethod:
        tensors, meta = read_file(path)
        if meta.get("format") == ARTIFACT_FORMAT and meta.get("method") == cls.name:
            config = cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path))
        else:  # a community file: describe it as well as its keys allow
            ranks = [v.shape[0] for k, v in tensors.items() if k.endswith((".lora_A.weight", ".lora_down.weight"))]
            te = any(k.startswith(("lora_te", "text_encoder")) for k in tensors)
            config = cls.config_cls(rank=int(most_common(ranks)), train_text_encoder=te)
        method = cls(config)
        method.load_state_dict(tensors, meta)
        return method

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim kohya/A1111 (``lora_unet_``/``lora_te_``) and diffusers/peft (``lora_A``/``lora_B``) LoRA files."""
        return sniff_keys(path)


def merge_files(
    paths: list[str | Path],
    out: str | Path,
    weights: list[float] | None = None,
    mode: str = "concat",
    rank: int | None = None,
    components=None,
) -> Path:
    """Merge LoRA files (any supported layout) into one ``lora.safetensors``-style file (see core.lora_math.merge).

    ``concat`` (default) stacks the ranks and is exact; ``svd`` truncates the summed update to ``rank``. kohya inputs
    need ``components`` (the base) to resolve their module names.
    """
    states = []
    for p in paths:
        tensors, meta = read_file(p)
        state = canonical(tensors, meta, components)
        if state is None:
            raise ConfigError(f"{p} is a kohya LoRA: pass the base (components) so its module names can be resolved.")
        states.append(state)
    merged = merge(states, weights, mode, rank)
    ranks = [v.shape[0] for k, v in merged.items() if k.endswith(".lora_A.weight")]
    te = any(not k.startswith("unet.") for k in merged)
    config = LoRAConfig(rank=int(most_common(ranks)), train_text_encoder=te)
    tensors, dmeta = to_diffusers(merged)
    base = getattr(components, "source", "") if components is not None else ""
    meta = {
        "format": ARTIFACT_FORMAT,
        "method": LoRAMethod.name,
        "config": config.to_dict(),
        "base": base,
        "merged_from": [Path(p).name for p in paths],
        "merge_weights": weights,
        "merge_mode": mode,
    }
    save_tensors(out, tensors, {**dmeta, **meta})
    return Path(out)
