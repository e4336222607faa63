"""LoRA file layouts (Hu et al. 2021): kohya / A1111 and diffusers / peft, to and from tailor's canonical layout.

Canonical (:mod:`tailor.core.lora`): ``<part>.<path>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha``.

kohya / A1111 (sd-scripts ``networks/lora.py``)::

    lora_unet_<path with . -> _>.lora_down.weight  (= lora_A)    text encoder: lora_te_ (SDXL: lora_te1_, lora_te2_)
    lora_unet_<path with . -> _>.lora_up.weight    (= lora_B)
    lora_unet_<path with . -> _>.alpha             scale = alpha / rank; a missing alpha means alpha = rank

  Underscores are ambiguous (``down_blocks`` vs ``down.blocks``), so reading needs the base's module names
  (:func:`from_kohya`). SD1.x/SD2 UNet names follow the diffusers module paths; SDXL files from sd-scripts name the
  UNet after the original LDM blocks (``input_blocks_4_1_...``), which this module does not map (yet).

diffusers / peft (what ``pipe.load_lora_weights`` reads): ``unet.<path>.lora_A.weight`` / ``lora_B.weight``
(``text_encoder.`` / ``text_encoder_2.``), no alpha tensors; ranks and alphas go into the safetensors metadata key
``lora_adapter_metadata`` (JSON of ``LoraConfig`` arguments per part: ``unet.r``, ``unet.lora_alpha``,
``unet.rank_pattern``, ``unet.alpha_pattern``, ``unet.target_modules``), which diffusers reads back. A diffusers file
without that metadata means alpha = rank (scale 1), the diffusers convention.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import torch

from tailor.core.lora import (
    PARTS,
    adaptable_modules,
    canonical_path,
    part_model,
    specs_from_state,
)
from tailor.core.lora_math import modules_of, most_common
from tailor.errors import FormatError

if TYPE_CHECKING:
    from tailor.core.components import Components

DIFFUSERS_META_KEY = "lora_adapter_metadata"
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")


def detect_layout(keys) -> str | None:
    """``kohya``, ``diffusers`` (peft keys, parts as prefixes) or None."""
    keys = list(keys)
    if keys and all(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if any(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys):
        if all(k.split(".", 1)[0] in PARTS for k in keys):
            return "diffusers"
    return None


# --------------------------------------------------------------------- kohya
def kohya_prefix(part: str, sdxl: bool) -> str:
    return {"unet": "lora_unet_", "text_encoder": "lora_te1_" if sdxl else "lora_te_", "text_encoder_2": "lora_te2_"}[
        part
    ]


def to_kohya(state: dict[str, torch.Tensor], sdxl: bool = False) -> dict[str, torch.Tensor]:
    """Canonical -> kohya keys (alpha always written, as sd-scripts does)."""
    out = {}
    for mod in modules_of(state):
        part, _, path = mod.partition(".")
        name = kohya_prefix(part, sdxl) + path.replace(".", "_")
        a = state[f"{mod}.lora_A.weight"]
        out[f"{name}.lora_down.weight"] = a
        out[f"{name}.lora_up.weight"] = state[f"{mod}.lora_B.weight"]
        out[f"{name}.alpha"] = state.get(f"{mod}.alpha", torch.tensor(float(a.shape[0]))).float()
    return out


def kohya_names(components: Components) -> dict[str, str]:
    """kohya module name -> canonical module key, for every adaptable module of the base."""
    names = {}
    for part in PARTS:
        model = part_model(components, part)
        if model is None:
            continue
        prefixes = {kohya_prefix(part, components.is_sdxl)}
        if part == "text_encoder":
            prefixes |= {"lora_te_", "lora_te1_"}  # SD and SDXL spellings of the first text encoder
        for path in adaptable_modules(model):
            path = canonical_path(model, part, path)
            for p in prefixes:
                names[p + path.replace(".", "_")] = f"{part}.{path}"
    return names


def from_kohya(state: dict[str, torch.Tensor], components: Components) -> dict[str, torch.Tensor]:
    """kohya keys -> canonical, resolving names against ``components``' modules."""
    from tailor.errors import IncompatibleError

    names = kohya_names(components)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name, _, kind = key.partition(".")
        if kind not in ("lora_down.weight", "lora_up.weight", "alpha"):
            continue  # dora_scale, hada_*, ... (other network types) are not LoRA weights
        if name not in names:
            hint = " (an SDXL file with original-LDM block names?)" if "input_blocks" in name else ""
            raise IncompatibleError(
                f"kohya LoRA module {name}{hint} does not exist in this base model; use a LoRA made for this base."
            )
        mod = names[name]
        target = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight", "alpha": "alpha"}[kind]
        out[f"{mod}.{target}"] = value
    for mod in modules_of(out):  # missing alpha means alpha = rank
        out.setdefault(f"{mod}.alpha", torch.tensor(float(out[f"{mod}.lora_A.weight"].shape[0])))
        if f"{mod}.lora_B.weight" not in out:
            raise FormatError(f"kohya LoRA module {mod} has lora_down but no lora_up; the file is incomplete.")
    return out


def kohya_metadata(state: dict[str, torch.Tensor]) -> dict[str, str]:
    specs = specs_from_state(state)
    dims = [r for r, _ in specs.values()]
    alphas = [a for _, a in specs.values()]
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(int(most_common(dims))),
        "ss_network_alpha": _num(most_common(alphas)),
    }


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# --------------------------------------------------------------------- diffusers / peft
def to_diffusers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Canonical -> (diffusers tensors, safetensors metadata with ``lora_adapter_metadata``)."""
    tensors = {k: v for k, v in state.items() if not k.endswith(".alpha")}
    specs = specs_from_state(state)
    meta: dict[str, object] = {}
    for part in PARTS:
        # module names without "text_model.": peft matches them as suffixes, with and without that level
        mods = {
            k.partition(".")[2].removeprefix("text_model."): v for k, v in specs.items() if k.startswith(part + ".")
        }
        if not mods:
            continue
        r0 = int(most_common(r for r, _ in mods.values()))
        a0 = float(most_common(a for _, a in mods.values()))
        meta[f"{part}.r"] = r0
        meta[f"{part}.lora_alpha"] = a0
        meta[f"{part}.rank_pattern"] = {p: r for p, (r, _) in mods.items() if r != r0}
        meta[f"{part}.alpha_pattern"] = {p: a for p, (_, a) in mods.items() if a != a0}
        meta[f"{part}.target_modules"] = sorted(mods)
    return tensors, {"format": "pt", DIFFUSERS_META_KEY: json.dumps(meta, sort_keys=True)}


def from_diffusers(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """diffusers/peft tensors (+ optional ``lora_adapter_metadata``) -> canonical."""
    meta: dict = {}
    raw = (metadata or {}).get(DIFFUSERS_META_KEY)
    if raw:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FormatError(f"the LoRA file's {DIFFUSERS_META_KEY} metadata is not JSON ({e}).") from e
    out = {k: v for k, v in tensors.items() if k.endswith((".lora_A.weight", ".lora_B.weight", ".alpha"))}
    for mod in modules_of(out):
        if f"{mod}.alpha" in out:
            continue
        part, _, path = mod.partition(".")
        path = path.removeprefix("text_model.")
        rank = out[f"{mod}.lora_A.weight"].shape[0]
        alpha = meta.get(f"{part}.alpha_pattern", {}).get(path, meta.get(f"{part}.lora_alpha", rank))
        out[f"{mod}.alpha"] = torch.tensor(float(alpha))
    return out


def canonical(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, components: Components | None = None
) -> dict[str, torch.Tensor] | None:
    """Any supported layout -> canonical; None when a kohya file needs ``components`` to resolve its names."""
    layout = detect_layout(tensors)
    if layout == "kohya":
        return None if components is None else from_kohya(tensors, components)
    if layout == "diffusers":
        return from_diffusers(tensors, metadata)
    raise FormatError(
        "the weights are neither a kohya/A1111 LoRA (lora_unet_/lora_te_ keys) nor a diffusers/peft "
        "LoRA (unet./text_encoder. ... lora_A/lora_B keys)."
    )
