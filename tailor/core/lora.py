"""LoRA, the shared building block (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Every adapted module computes ``y = W x + scale * (alpha / r) * B A x``; the layers are peft's (``peft.tuners.lora``),
injected with ``inject_adapter_in_model`` into the UNet (attention ``to_q/to_k/to_v/to_out.0``; optionally the
feed-forward, the transformer projections and the ResNet convolutions) and optionally the text encoder(s)
(``q/k/v/out_proj``, optionally ``fc1/fc2``). A :class:`LoRA` is one named peft adapter; several attach to one base at
once (each its own adapter name and scale, all active together, so their updates add up), ``set_scale`` only rewrites
peft's per-layer ``scaling`` numbers, ``detach`` puts the original module objects back (so the base is restored bit for
bit) and ``fuse`` adds ``weight * (alpha/r) * B A`` into the base weights (kept aside and restored on ``unfuse`` /
``detach``).

Weights are exchanged in one *canonical* layout (the diffusers/peft keys plus explicit alphas)::

    <part>.<module path>.lora_A.weight   (r, in[, k, k])   <part> = unet | text_encoder | text_encoder_2
    <part>.<module path>.lora_B.weight   (out, r[, 1, 1])
    <part>.<module path>.alpha           0-d tensor

Arithmetic on canonical state dicts (merging several LoRAs into one) is in :mod:`tailor.core.lora_math`.
Community layouts (kohya/A1111, diffusers files) are the lora method's (``tailor/methods/lora/formats.py``).
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from tailor.core.lora_math import delta_weight
from tailor.errors import ConfigError, FormatError, IncompatibleError

if TYPE_CHECKING:
    from tailor.core.components import Components

PARTS = ("unet", "text_encoder", "text_encoder_2")
#: module-name suffixes per target group
UNET_TARGETS = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),
    "ff": ("ff.net.0.proj", "ff.net.2"),
    "proj": ("proj_in", "proj_out"),
    "conv": ("conv1", "conv2", "downsamplers.0.conv", "upsamplers.0.conv"),
}
TEXT_TARGETS = {"attention": ("q_proj", "k_proj", "v_proj", "out_proj"), "mlp": ("fc1", "fc2")}

ModuleSpecs = dict[str, tuple[int, float]]  # "<part>.<module path>" -> (rank, alpha)


# --------------------------------------------------------------------- finding modules
def part_model(components: Components, part: str) -> nn.Module | None:
    return getattr(components, part, None)


def adaptable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> the Linear / Conv2d a LoRA can wrap (inside peft wrappers: the base layer)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = {}
    for name, m in model.named_modules():
        if ".lora_" in f".{name}" or name.endswith("base_layer") or ".base_layer." in name:
            continue
        base = m.get_base_layer() if isinstance(m, BaseTunerLayer) else m
        if isinstance(base, nn.Linear | nn.Conv2d):
            out[name] = base
    return out


def canonical_path(model: nn.Module, part: str, path: str) -> str:
    """Module path as files name it: CLIP text modules keep the classic ``text_model.`` prefix (transformers 5 drops
    it from the module tree; kohya, A1111 and older diffusers files have it)."""
    if part != "unet" and not hasattr(model, "text_model"):
        return f"text_model.{path}"
    return path


def model_path(model: nn.Module, path: str) -> str:
    """The inverse of :func:`canonical_path`."""
    if path.startswith("text_model.") and not hasattr(model, "text_model"):
        return path[len("text_model.") :]
    return path


def find_targets(components: Components, unet_groups: Iterable[str], text_groups: Iterable[str] = ()) -> list[str]:
    """``<part>.<path>`` of every module the target groups name (text groups apply to every text encoder)."""
    found = []
    for part, groups, table in (
        ("unet", unet_groups, UNET_TARGETS),
        ("text_encoder", text_groups, TEXT_TARGETS),
        ("text_encoder_2", text_groups, TEXT_TARGETS),
    ):
        model = part_model(components, part)
        groups = list(groups)
        if model is None or not groups:
            continue
        for g in groups:
            if g not in table:
                raise ConfigError(f"unknown LoRA target {g!r} for the {part}; use one of {', '.join(table)}.")
        suffixes = tuple(s for g in groups for s in table[g])
        for n in adaptable_modules(model):
            if any(n == s or n.endswith("." + s) for s in suffixes):
                found.append(f"{part}.{canonical_path(model, part, n)}")
    return found


def split_key(key: str) -> tuple[str, str]:
    part, _, path = key.partition(".")
    return part, path


def specs_from_state(state: dict[str, torch.Tensor]) -> ModuleSpecs:
    """Module specs (rank from ``lora_A``, alpha from ``.alpha`` or = rank) of a canonical state dict."""
    specs = {}
    for k, v in state.items():
        if k.endswith(".lora_A.weight"):
            mod = k[: -len(".lora_A.weight")]
            alpha = state.get(f"{mod}.alpha")
            specs[mod] = (int(v.shape[0]), float(alpha) if alpha is not None else float(v.shape[0]))
    if not specs:
        raise FormatError("the LoRA weights hold no lora_A tensors; the file is not a LoRA.")
    return specs


# --------------------------------------------------------------------- one adapter
class LoRA:
    """One named peft LoRA adapter over modules of a base (``specs``: module -> (rank, alpha))."""

    def __init__(self, name: str, specs: ModuleSpecs, dropout: float = 0.0, init: str | bool = True):
        if not specs:
            raise ConfigError("a LoRA needs at least one target module; check the targets.")
        self.name, self.specs, self.dropout, self.init = name, dict(specs), dropout, init
        self.components: Components | None = None
        self.layers: dict[str, nn.Module] = {}
        self._paths: dict[str, str] = {}  # module key -> path in the model
        self.scale = 1.0
        self._fused: dict[str, bool] = {}  # modules whose base weight holds this adapter

    # ---------------------------------------------------------------- attach / detach
    def attach(self, components: Components, trainable: bool = False) -> None:
        """Inject the adapter (a no-op when already attached to ``components``)."""
        from peft import LoraConfig, inject_adapter_in_model

        if self.components is components:
            return
        if self.components is not None:
            raise RuntimeError(f"LoRA {self.name} is attached to another base; detach it first.")
        self._check_shapes_exist(components)
        groups: dict[tuple[str, int, float], list[str]] = {}
        self._paths = {}
        for key, (r, a) in self.specs.items():
            part, path = split_key(key)
            self._paths[key] = model_path(part_model(components, part), path)
            groups.setdefault((part, r, a), []).append(self._paths[key])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multiple adapters in the model": that is the point
            for (part, r, a), paths in groups.items():
                cfg = LoraConfig(
                    r=r, lora_alpha=a, target_modules=paths, lora_dropout=self.dropout, init_lora_weights=self.init
                )
                inject_adapter_in_model(cfg, part_model(components, part), adapter_name=self.name)
        self.components = components
        self.layers = {k: part_model(components, split_key(k)[0]).get_submodule(self._paths[k]) for k in self.specs}
        device, dtype = components.device, components.dtype
        for layer in self.layers.values():
            _activate_all(layer, self.name, trainable)
            layer.lora_A[self.name].to(device=device, dtype=dtype)
            layer.lora_B[self.name].to(device=device, dtype=dtype)
        self._apply_scale(self.scale)

    def detach(self) -> None:
        """Remove the adapter; a module left without adapters gets its original object back (bit-exact base)."""
        if self.components is None:
            return
        self.unfuse()
        for key, layer in self.layers.items():
            part, path = split_key(key)[0], self._paths[key]
            model = part_model(self.components, part)
            others = [n for n in layer.lora_A.keys() if n != self.name]
            if others:
                grads = _grads(layer)
                layer.delete_adapter(self.name)
                _restore_grads(layer, grads)
                _activate_nonzero(layer)
            else:
                parent_path, _, child = path.rpartition(".")
                parent = model.get_submodule(parent_path) if parent_path else model
                setattr(parent, child, layer.get_base_layer())
        for part in PARTS:
            model = part_model(self.components, part)
            cfg = getattr(model, "peft_config", None)
            if isinstance(cfg, dict):
                cfg.pop(self.name, None)
                if not cfg:
                    del model.peft_config
        self.components, self.layers = None, {}

    def _check_shapes_exist(self, components: Components) -> None:
        found = {p: set(adaptable_modules(m)) for p in PARTS if (m := part_model(components, p)) is not None}
        for key in self.specs:
            part, path = split_key(key)
            model = part_model(components, part)
            if model is None or model_path(model, path) not in found[part]:
                raise IncompatibleError(
                    f"the LoRA adapts {key}, which this base does not have; it was made for another base model — "
                    f"use a LoRA made for this one."
                )

    # ---------------------------------------------------------------- scale
    def set_scale(self, scale: float) -> None:
        """Cheap: rewrites one number per layer, and only when the scale changes."""
        if scale != self.scale:
            self.scale = float(scale)
            self._apply_scale(self.scale)

    def _apply_scale(self, scale: float) -> None:
        s = 0.0 if self._fused else scale  # a fused adapter already lives in the base weights
        for key, layer in self.layers.items():
            r, a = self.specs[key]
            layer.scaling[self.name] = s * a / r
            _activate_nonzero(layer)

    # ---------------------------------------------------------------- weights
    def modules(self) -> list[nn.Module]:
        # the dropout module too: the trainer's train()/eval() must reach it (the frozen base stays in eval mode)
        names = ("lora_dropout", "lora_A", "lora_B")
        return [getattr(layer, n)[self.name] for layer in self.layers.values() for n in names]

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for key, layer in self.layers.items():
            out[f"{key}.lora_A.weight"] = layer.lora_A[self.name].weight.detach().clone()
            out[f"{key}.lora_B.weight"] = layer.lora_B[self.name].weight.detach().clone()
            out[f"{key}.alpha"] = torch.tensor(float(self.specs[key][1]))
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy canonical weights in; shapes are checked against this base (IncompatibleError names both)."""
        for key, layer in self.layers.items():
            for which in ("lora_A", "lora_B"):
                name = f"{key}.{which}.weight"
                if name not in state:
                    raise FormatError(f"the LoRA weights lack {name}; the file is incomplete.")
                own = getattr(layer, which)[self.name].weight
                if tuple(own.shape) != tuple(state[name].shape):
                    base = tuple(layer.get_base_layer().weight.shape)
                    raise IncompatibleError(
                        f"LoRA weight {name} has shape {tuple(state[name].shape)} but this base's module {key} "
                        f"(weight {base}) needs {tuple(own.shape)}; the LoRA was made for another base model — use "
                        f"one made for this base."
                    )
                with torch.no_grad():
                    own.copy_(state[name].to(own))

    # ---------------------------------------------------------------- fuse
    def fuse(self, weight: float = 1.0) -> None:
        """Add ``weight * (alpha/r) * B A`` to the base weights; the adapter then adds nothing on its own.

        Each adapted module keeps its unfused weight and the fused adapters (shared by all LoRAs in that module), so
        LoRAs fuse and unfuse in any order and the last ``unfuse`` restores the original weight bit for bit.
        """
        self.unfuse()
        for key, layer in self.layers.items():
            r, a = self.specs[key]
            state = layer.__dict__.setdefault("_tailor_fuse", {"original": None, "scales": {}})
            if state["original"] is None:
                state["original"] = layer.get_base_layer().weight.detach().clone()
            state["scales"][self.name] = weight * a / r
            _refuse(layer)
            self._fused[key] = True
        self._apply_scale(self.scale)

    def unfuse(self) -> None:
        """Take this adapter out of the base weights (the original weights come back exactly with the last one)."""
        for key in self._fused:
            layer = self.layers[key]
            layer._tailor_fuse["scales"].pop(self.name, None)
            _refuse(layer)
        self._fused = {}
        self._apply_scale(self.scale)

    @property
    def fused(self) -> bool:
        return bool(self._fused)


@torch.no_grad()
def bake(loras: list[LoRA], weights: list[float]) -> None:
    """Fuse each attached LoRA with its weight into the base for good: the adapters are removed, the fused weights
    stay (what ``tailor lora fuse`` saves as a plain diffusers folder)."""
    for lora, w in zip(loras, weights):
        lora.fuse(w)
    fused = {}
    for lora in loras:
        for key, layer in lora.layers.items():
            fused[(split_key(key)[0], lora._paths[key])] = layer.get_base_layer().weight.detach().clone()
    comps = loras[0].components if loras else None
    for lora in loras:
        lora.detach()  # restores the unfused weights and the original module objects ...
    for (part, path), weight in fused.items():
        part_model(comps, part).get_submodule(path).weight.copy_(weight)  # ... which then get the fused ones


@torch.no_grad()
def _refuse(layer) -> None:
    """Base weight = unfused weight + the fused adapters' ``scale * B A`` (in fuse order); unfused when none."""
    state = layer._tailor_fuse
    weight = layer.get_base_layer().weight
    weight.copy_(state["original"])
    for name, scale in state["scales"].items():
        weight.add_(scale * delta_weight(layer.lora_A[name].weight, layer.lora_B[name].weight).to(weight))
    if not state["scales"]:
        del layer._tailor_fuse


def _grads(layer) -> dict[str, bool]:
    return {n: layer.lora_A[n].weight.requires_grad for n in layer.lora_A.keys()}


def _restore_grads(layer, grads: dict[str, bool]) -> None:
    for n, g in grads.items():
        if n in layer.lora_A:
            layer.lora_A[n].requires_grad_(g)
            layer.lora_B[n].requires_grad_(g)


def _activate_all(layer, new: str, trainable: bool) -> None:
    """Make every adapter of ``layer`` active (they compose); keep the others' trainability, set the new one's."""
    grads = _grads(layer)
    grads[new] = trainable
    layer.set_adapter(list(layer.lora_A.keys()))
    _restore_grads(layer, grads)
    _bypass_if_idle(layer)


def _activate_nonzero(layer) -> None:
    """Make exactly the adapters with a non-zero scaling active, keeping every adapter's trainability.

    peft runs each active adapter in every forward, multiplying ``B A x`` by its scaling even when that is 0 (a fused
    LoRA, weight 0, DreamBooth's class images): skipped, a fused LoRA costs what the plain base costs."""
    names = [n for n in layer.lora_A.keys() if layer.scaling.get(n, 0.0) != 0.0]
    if names != list(layer.active_adapters):
        grads = _grads(layer)
        layer.set_adapter(names)
        _restore_grads(layer, grads)
    _bypass_if_idle(layer)


def _bypass_if_idle(layer) -> None:
    """With no adapter active, the layer's forward calls its base layer straight away (hooks included). peft's own
    forward with nothing to add still costs ~14 us per layer on a 64-wide Linear (its argument checks and adapter
    loop; a bare ``nn.Linear`` ~27 us), ~2% of a world-UNet step over its 56 attention projections
    (``benchmarks/inference_overhead.py``, fused LoRA). An instance attribute bound to the layer (the module tree,
    its keys and ``deepcopy`` stay right)."""
    if layer.active_adapters:
        layer.__dict__.pop("forward", None)
    else:
        layer.__dict__["forward"] = types.MethodType(_idle_forward, layer)


def _idle_forward(self, x, *args, **kwargs):
    if self.active_adapters:  # activated behind tailor's back (e.g. diffusers' loader on the same UNet): peft's path
        return type(self).forward(self, x, *args, **kwargs)
    return self.get_base_layer()(x, *args, **kwargs)
