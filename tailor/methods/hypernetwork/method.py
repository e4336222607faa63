"""Hypernetworks (NovelAI 2022, A1111 semantics): per attention-context width a pair of MLPs rewrites the context
fed to ``to_k`` (``x + mlp_k(x) * strength``) and to ``to_v`` (``x + mlp_v(x) * strength``); queries are untouched.

MLP pairs are picked by the width of the context, so on SD1.5 the 768 pair acts in cross-attention and the
320/640/1280 pairs in self-attention. ``patch`` wraps every UNet attention processor
(``modules.HypernetworkProcessor``; several hypernetworks nest and apply in attachment order); ``unpatch`` puts the
original processors back. The pipeline's ``set_scale`` (the attachment weight) multiplies ``strength``; in training
mode the MLPs run at strength 1, as in A1111.

Saved files: ``hypernetwork.safetensors`` (keys ``hypernetwork.<width>.<k|v>.linear.<i>.weight``, tailor metadata)
and the A1111 file ``hypernetwork.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from tailor.core.io import PICKLE_SUFFIXES, read_metadata
from tailor.core.method import ARTIFACT_FORMAT, Method, load_module_state
from tailor.errors import FormatError, IncompatibleError
from tailor.methods.hypernetwork import formats
from tailor.methods.hypernetwork.config import HypernetworkConfig
from tailor.methods.hypernetwork.modules import HypernetworkModule, HypernetworkProcessor, unwrap, wrap


def context_widths(unet) -> tuple[list[int], int]:
    """(every width of a context fed to ``to_k`` in the UNet's attention, the cross-attention width)."""
    from diffusers.models.attention_processor import Attention

    widths = {int(m.to_k.in_features) for m in unet.modules() if isinstance(m, Attention) and hasattr(m, "to_k")}
    return sorted(widths), int(unet.config.cross_attention_dim)


def _owns(processor, owner) -> bool:
    while isinstance(processor, HypernetworkProcessor):
        if processor.owner is owner:
            return True
        processor = processor.base
    return False


class HypernetworkMethod(Method):
    """Train (or load) a hypernetwork; the base UNet stays frozen."""

    name = "hypernetwork"
    config_cls = HypernetworkConfig
    default_lr: ClassVar[float] = 1e-5  # A1111's default learning rate

    def __init__(self, config: HypernetworkConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.layers = nn.ModuleDict()  # str(width) -> ModuleDict(k=HypernetworkModule, v=HypernetworkModule)
        self.step = 0
        self._source_file = "the hypernetwork"  # named in errors about a loaded file

    def modules(self) -> list[nn.Module]:
        return [self.layers] if self._built else []

    def effective_strength(self) -> float:
        return 1.0 if self.layers.training else float(self.config.strength) * float(self.scale)

    def mlp(self, width: int, which: str) -> nn.Module | None:
        pair = self.layers[str(width)] if str(width) in self.layers else None
        return None if pair is None else pair[which]

    # ------------------------------------------------------------------ attach / detach
    def patch(self, components) -> None:
        """``Method.patch``; a failure (a file for another base) leaves the method detached as before."""
        pending = self._pending_state
        try:
            super().patch(components)
        except Exception:
            if not any(_owns(p, self) for p in components.unet.attn_processors.values()):
                self.components, self._built, self._pending_state = None, False, pending
                self.layers = nn.ModuleDict()
            raise

    def build(self, components) -> None:
        c = self.config
        base, cross = context_widths(components.unet)
        widths = list(c.widths) or base
        foreign = [w for w in widths if w not in base]
        if foreign and cross not in widths:
            raise IncompatibleError(
                f"{self._source_file} has MLPs for context widths {', '.join(map(str, widths))} but this base's "
                f"attention contexts have widths {', '.join(map(str, base))} (cross-attention {cross}); it was made "
                f"for another base model — use a hypernetwork made for this one."
            )
        dropout = c.resolved_dropout()
        for w in widths:
            self.layers[str(w)] = nn.ModuleDict({
                which: HypernetworkModule(w, c.layer_structure, c.activation_func, c.weight_initialization,
                                          c.is_layer_norm, c.activate_output, dropout)
                for which in ("k", "v")
            })  # fmt: skip
        self.layers.eval()

    def attach(self, components) -> None:
        unet = components.unet
        if any(_owns(p, self) for p in unet.attn_processors.values()):
            return  # already attached to this base (the trainer patched it; a pipeline attaches it again)
        unet.set_attn_processor({k: wrap(p, self) for k, p in unet.attn_processors.items()})

    def detach(self, components) -> None:
        unet = components.unet
        unet.set_attn_processor({k: unwrap(p, self) for k, p in unet.attn_processors.items()})

    def loss(self, pred, target, state, weights):
        if torch.is_grad_enabled():
            self.step += 1  # micro-steps seen, recorded as A1111's "step"
        return super().loss(pred, target, state, weights)

    def training_state(self) -> dict:
        return {"step": self.step}

    def load_training_state(self, state: dict) -> None:
        self.step = int(state.get("step", self.step))

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built and self._pending_state is not None:
            return dict(self._pending_state)
        return {f"{self.name}.{k}": v for k, v in self.layers.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        prefix = f"{self.name}."
        load_module_state(self.layers, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)},
                          f"{self.name} ({self._source_file})")  # fmt: skip

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> Path:
        """``hypernetwork.safetensors`` (tailor) + ``hypernetwork.pt`` (A1111)."""
        path = super().save(out_dir)
        source = getattr(self.components, "source", None) if self.components is not None else None
        formats.write_a1111(Path(out_dir) / f"{self.name}.pt", self._saved_config(), self.state_dict(), self.name,
                            self.step, source or None)  # fmt: skip
        return path

    def _saved_config(self) -> HypernetworkConfig:
        widths = sorted({int(k.split(".")[1]) for k in self.state_dict()})
        return self.config.replace(widths=widths)

    def metadata(self) -> dict:
        return {**super().metadata(), "config": self._saved_config().to_dict()}

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(path, metadata)

    @classmethod
    def from_file(cls, path: str | Path) -> HypernetworkMethod:
        """A tailor ``hypernetwork.safetensors`` or an A1111 ``.pt`` (read without running pickle code)."""
        path = Path(path)
        if path.suffix in PICKLE_SUFFIXES:
            config, state, _ = formats.read(path)
            method = cls(config)
        else:
            meta = read_metadata(path)
            if meta.get("format") != ARTIFACT_FORMAT or meta.get("method") != cls.name:
                raise FormatError(
                    f"{path} is not a tailor hypernetwork file; pass hypernetwork.safetensors or an "
                    f"A1111 hypernetwork .pt."
                )
            method = super().from_file(path)  # type: ignore[assignment]
            state = None
        method._source_file = str(path)
        if state is not None:
            method.load_state_dict(state)
        return method  # type: ignore[return-value]
