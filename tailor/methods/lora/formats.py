"""The LoRA method's files (Hu et al. 2021): ``lora.safetensors`` (diffusers/peft keys) and ``lora_kohya.safetensors``.

``lora.safetensors`` holds the diffusers/peft layout (``unet.<path>.lora_A.weight`` ...) with diffusers'
``lora_adapter_metadata`` (ranks, alphas) and tailor's metadata (method, config, base), so both
``pipe.load_lora_weights`` and ``tailor.load`` read it. ``lora_kohya.safetensors`` holds the kohya/A1111 layout
(``lora_unet_...lora_down/lora_up/alpha``, ``ss_network_dim`` / ``ss_network_alpha``) for A1111, ComfyUI and
sd-scripts. The key conversions below map between these layouts and tailor's canonical one (``tailor convert lora``
uses them too):

Canonical (:mod:`tailor.core.lora`): ``<part>.<path>.lora_A.weight`` / ``.lora_B.weight`` / ``.alpha``.

kohya / A1111 (sd-scripts ``networks/lora.py``)::

    lora_unet_<path with . -> _>.lora_down.weight  (= lora_A)    text encoder: lora_te_ (SDXL: lora_te1_, lora_te2_)
    lora_unet_<path with . -> _>.lora_up.weight    (= lora_B)
    lora_unet_<path with . -> _>.alpha             scale = alpha / rank; a missing alpha means alpha = rank

  Underscores are ambiguous (``down_blocks`` vs ``down.blocks``), so reading needs the base's module names
  (:func:`from_kohya`). SD1.x/SD2 UNet names follow the diffusers module paths; SDXL files (sd-scripts, A1111,
  ComfyUI) name the UNet after the original LDM/sgm blocks (``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_
  to_q``, ``middle_block_1``, ``output_blocks_...``; :func:`tailor.core.single_file.unet_ldm_namer` maps the paths).
  tailor writes SDXL UNet names in that original layout and SD1.x/SD2 names in the diffusers one, as sd-scripts does,
  and reads both spellings on every base (diffusers' ``load_lora_weights`` and ComfyUI accept both too).

diffusers / peft (what ``pipe.load_lora_weights`` reads): ``unet.<path>.lora_A.weight`` / ``lora_B.weight``
(``text_encoder.`` / ``text_encoder_2.``), no alpha tensors; ranks and alphas go into the safetensors metadata key
``lora_adapter_metadata`` (JSON of ``LoraConfig`` arguments per part: ``unet.r``, ``unet.lora_alpha``,
``unet.rank_pattern``, ``unet.alpha_pattern``, ``unet.target_modules``), which diffusers reads back. A diffusers file
without that metadata means alpha = rank (scale 1), the diffusers convention.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tailor.core.io import PICKLE_SUFFIXES, load_tensors, read_metadata, save_tensors
from tailor.core.lora import PARTS, adaptable_modules, canonical_path, part_model, specs_from_state
from tailor.core.lora_math import modules_of, most_common
from tailor.core.single_file import unet_ldm_namer
from tailor.errors import ConfigError, FormatError, IncompatibleError

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


def to_kohya(state: dict[str, torch.Tensor], sdxl: bool = False, unet=None) -> dict[str, torch.Tensor]:
    """Canonical -> kohya keys (alpha always written, as sd-scripts does). ``sdxl``: the UNet's names follow the
    original LDM layout, which needs the base's ``unet`` (its block structure) to map them."""
    out = {}
    namer = None
    if sdxl and any(k.startswith("unet.") for k in state):
        if unet is None:
            raise ConfigError("an SDXL kohya LoRA names the UNet's modules after the original layout; pass the base "
                              "(--base) so they can be mapped.")  # fmt: skip
        namer = unet_ldm_namer(unet)
    for mod in modules_of(state):
        part, _, path = mod.partition(".")
        if part == "unet" and namer is not None:
            path = namer(path)
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
        namer = _ldm_namer(model) if part == "unet" else None
        for path in adaptable_modules(model):
            path = canonical_path(model, part, path)
            spellings = [path]
            if namer is not None:  # the original LDM spelling (SDXL files), accepted on every base
                try:
                    spellings.append(namer(path))
                except IncompatibleError:
                    pass
            for p in prefixes:
                for spelling in spellings:
                    names[p + spelling.replace(".", "_")] = f"{part}.{path}"
    return names


def _ldm_namer(unet):
    try:
        return unet_ldm_namer(unet)
    except IncompatibleError:  # a UNet without the LDM block structure: diffusers spellings only
        return None


def from_kohya(state: dict[str, torch.Tensor], components: Components) -> dict[str, torch.Tensor]:
    """kohya keys -> canonical, resolving names against ``components``' modules."""
    names = kohya_names(components)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name, _, kind = key.partition(".")
        if kind not in ("lora_down.weight", "lora_up.weight", "alpha"):
            continue  # dora_scale, hada_*, ... (other network types) are not LoRA weights
        if name not in names:
            raise IncompatibleError(
                f"kohya LoRA module {name} does not exist in this base model; use a LoRA made for this base."
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


# --------------------------------------------------------------------- files
FILE = "lora.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"


def write_files(
    out_dir: str | Path, state: dict[str, torch.Tensor], meta: dict, sdxl: bool, unet=None
) -> tuple[Path, Path]:
    """Write both files from a canonical state dict; returns (lora.safetensors, lora_kohya.safetensors). ``unet``:
    the base's, which maps SDXL names to the original layout."""
    out_dir = Path(out_dir)
    tensors, dmeta = to_diffusers(state)
    path, kpath = out_dir / FILE, out_dir / KOHYA_FILE
    save_tensors(path, tensors, {**dmeta, **meta})
    save_tensors(
        kpath,
        to_kohya(state, sdxl=sdxl, unet=unet),
        {**kohya_metadata(state), "tailor_base": str(meta.get("base", ""))},
    )
    return path, kpath


def read_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a LoRA file in any supported layout; FormatError for anything else."""
    path = Path(path)
    tensors = load_tensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        meta: dict[str, str] = {}
        if isinstance(tensors, dict) and isinstance(tensors.get("state_dict"), dict):
            tensors = tensors["state_dict"]
    else:
        meta = read_metadata(path)
    flat = isinstance(tensors, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in tensors.items())
    if not flat or detect_layout(tensors) is None:
        raise FormatError(
            f"{path} is not a LoRA file (no kohya lora_unet_/lora_te_ or diffusers lora_A/lora_B keys); "
            f"pass a LoRA .safetensors."
        )
    for key, value in tensors.items():
        if key.endswith(MATRIX_SUFFIXES) and (value.ndim not in (2, 4) or 0 in value.shape):
            raise FormatError(f"{path}: LoRA tensor {key} has shape {tuple(value.shape)}, not a 2-D or 4-D matrix; "
                              f"the file is damaged — re-export it.")  # fmt: skip
        if key.endswith(".alpha") and value.numel() != 1:
            raise FormatError(f"{path}: LoRA alpha {key} has {value.numel()} values, not one; the file is damaged.")
    return tensors, meta


MATRIX_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight")


def sniff_keys(path: str | Path) -> bool:
    """Whether ``path`` is a kohya or diffusers/peft LoRA (reads the safetensors header only)."""
    from safetensors import safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # an unreadable file is not ours to claim; tailor.load reports it
        return False
    return detect_layout(keys) is not None
