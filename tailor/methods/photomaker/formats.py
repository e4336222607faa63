"""PhotoMaker files (Li et al. 2023, TencentARC/PhotoMaker): the release's checkpoint (``photomaker-v1.bin``) is one
dict with two parts, ``{"id_encoder": ..., "lora_weights": ...}``; its ``.safetensors`` form (which the official
``load_photomaker_adapter`` reads too) keeps them as key prefixes.

**Release layout (v1, SDXL)**, ``photomaker/model.py``'s ``PhotoMakerIDEncoder`` (a ``CLIPVisionModelWithProjection``
of CLIP ViT-L/14 plus a second projection and the fuse module)::

    id_encoder.vision_model.*                    the fine-tuned CLIP ViT-L/14 vision tower (1024 wide, 24 layers)
    id_encoder.visual_projection.weight          [768, 1024]   pooled output -> first text encoder's width
    id_encoder.visual_projection_2.weight        [1280, 1024]  pooled output -> second text encoder's width
    id_encoder.fuse_module.mlp1.{layernorm,fc1,fc2}.*   LayerNorm(4096), Linear(4096 -> 2048), Linear(2048 -> 2048)
    id_encoder.fuse_module.mlp2.{layernorm,fc1,fc2}.*   the same at 2048, with a residual
    id_encoder.fuse_module.layer_norm.*          LayerNorm(2048)
    lora_weights.unet.<path>.processor.to_{q,k,v,out}_lora.{down,up}.weight   (diffusers' attention-processor LoRA
                                                 names; no alphas: scale 1; peft ``lora_A``/``lora_B`` names read too)

The ID embedding is ``cat(visual_projection(pooled), visual_projection_2(pooled))`` (2048 = the concatenated text
width); tailor's :class:`~tailor.methods.photomaker.modules.IDEncoder` holds the two projections as one Linear (rows
stacked in that order) and reads the tower's pooled output when ``image_encoder="file"``, so release weights are used
unchanged and a read -> write round trip is bit-exact. The vision tower's sizes are read from its weights (heads of 64,
CLIP ViT-L's; quick-GELU).

**tailor layout** (any other ``image_encoder``, a named CLIP tower): ``id_encoder.*`` = the IDEncoder's own names
(``visual_projection`` on the tower's *projected* embedding, ``mlp1.norm`` ...) and ``lora_weights.*`` canonical
``unet.<path>.lora_A/B`` + ``alpha``. :func:`release_from_tailor` writes such a model in the release layout: the tower
is copied and the release projections are the product of the tower's projection and tailor's (exact up to float
rounding). PhotoMaker v2 files (``qformer_perceiver``, InsightFace embeddings) are not read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from tailor.core.io import PICKLE_SUFFIXES, load_tensors, safe_torch_load
from tailor.errors import FormatError, IncompatibleError

PARTS = ("id_encoder", "lora_weights")
VISION = "vision_model."
# tailor IDEncoder name -> release name (the fuse module's MLPs call their LayerNorm ``layernorm``)
_FUSE = {"mlp1.norm.": "fuse_module.mlp1.layernorm.", "mlp1.fc1.": "fuse_module.mlp1.fc1.",
         "mlp1.fc2.": "fuse_module.mlp1.fc2.", "mlp2.norm.": "fuse_module.mlp2.layernorm.",
         "mlp2.fc1.": "fuse_module.mlp2.fc1.", "mlp2.fc2.": "fuse_module.mlp2.fc2.",
         "layer_norm.": "fuse_module.layer_norm."}  # fmt: skip
_ATTN = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


def split(state: dict) -> dict[str, dict]:
    """Flat prefixed keys -> ``{"id_encoder": {...}, "lora_weights": {...}}`` (the release's nesting)."""
    out: dict[str, dict] = {p: {} for p in PARTS}
    for k, v in state.items():
        part, _, rest = k.partition(".")
        if part in out:
            out[part][rest] = v
    return out


def is_release(state: dict) -> bool:
    """Whether flat ``state`` is in the release layout (it carries the vision tower)."""
    return any(k.startswith("id_encoder." + VISION) for k in state)


# --------------------------------------------------------------------- reading
def read(path: str | Path) -> dict[str, torch.Tensor]:
    """A PhotoMaker file's tensors as flat ``id_encoder.`` / ``lora_weights.`` keys (``.bin``: the nested dict)."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        data = safe_torch_load(path)
        if not (isinstance(data, dict) and set(data) == set(PARTS) and all(isinstance(data[p], dict) for p in PARTS)):
            raise FormatError(f"{path} is not a PhotoMaker checkpoint (a dict of id_encoder and lora_weights).")
        flat = {f"{p}.{k}": v for p in PARTS for k, v in data[p].items()}
        if not all(torch.is_tensor(v) for v in flat.values()):
            raise FormatError(f"{path}: the PhotoMaker checkpoint holds non-tensor values; the file is damaged.")
        return flat
    return load_tensors(path)


def sniff_keys(keys) -> bool:
    keys = list(keys)
    return bool(keys) and all(k.startswith(("id_encoder.", "lora_weights.")) for k in keys) and any(
        k.startswith("id_encoder." + VISION) for k in keys)  # fmt: skip


def sniff(path: str | Path) -> bool:
    """Claim release files: a ``.safetensors`` of ``id_encoder.vision_model.*`` ... keys, or the ``.bin`` dict."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return sniff_keys(f.keys())
        if path.suffix in PICKLE_SUFFIXES:
            data = safe_torch_load(path)
            return isinstance(data, dict) and set(data) == set(PARTS)
    except Exception:  # unreadable: not ours to claim; tailor.load reports it
        return False
    return False


def vision_config(vision: dict[str, torch.Tensor], heads: int = 0):
    """The ``CLIPVisionConfig`` of a release vision tower, from its weights (``vision_model.`` removed); ``heads`` 0 =
    width / 64 (the weights do not tell the head count; ViT-L/14's heads are 64 wide)."""
    from transformers import CLIPVisionConfig

    try:
        patch = vision["embeddings.patch_embedding.weight"]
        positions = int(vision["embeddings.position_embedding.weight"].shape[0])
        fc1 = vision["encoder.layers.0.mlp.fc1.weight"]
    except KeyError as e:
        raise FormatError(f"the PhotoMaker vision tower lacks {e}; the file is damaged or not a v1 file.") from e
    layers = {int(m[1]) for k in vision if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    hidden, size = int(patch.shape[0]), int(patch.shape[-1])
    side = math.isqrt(positions - 1)
    heads = int(heads) or hidden // 64
    if side * side != positions - 1 or heads < 1 or hidden % heads:
        raise FormatError(f"the PhotoMaker vision tower has {positions} positions and width {hidden}; not a CLIP ViT.")
    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=int(fc1.shape[0]), num_attention_heads=heads,
                            num_hidden_layers=max(layers) + 1, patch_size=size, image_size=side * size,
                            projection_dim=hidden)  # fmt: skip


def lora_from_release(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release LoRA names (attention-processor ``to_q_lora.down``; or peft ``lora_A``) -> canonical, alpha = rank."""
    out: dict[str, torch.Tensor] = {}
    for k, v in lora.items():
        key = k if k.startswith("unet.") else f"unet.{k}"
        if m := re.fullmatch(r"(unet\..+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight", key):
            out[f"{m[1]}.{_ATTN[m[2]]}.lora_{'A' if m[3] == 'down' else 'B'}.weight"] = v
        elif key.endswith((".lora_A.weight", ".lora_B.weight", ".alpha")):
            out[key] = v
        else:
            raise FormatError(f"PhotoMaker LoRA weight {k!r} is neither an attention-processor LoRA nor a peft one.")
    for k in [k for k in out if k.endswith(".lora_A.weight")]:
        mod = k.removesuffix(".lora_A.weight")
        if f"{mod}.lora_B.weight" not in out:
            raise FormatError(f"PhotoMaker LoRA module {mod} has no up weight; the file is incomplete.")
        out.setdefault(f"{mod}.alpha", torch.tensor(float(out[k].shape[0])))
    return out


def lora_to_release(canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical -> the release's attention-processor names; ``alpha / rank`` is folded into ``up`` (1 when equal)."""
    out = {}
    for k, a in canonical.items():
        if not k.endswith(".lora_A.weight"):
            continue
        mod = k.removesuffix(".lora_A.weight")
        m = re.fullmatch(r"(unet\..+)\.(to_q|to_k|to_v|to_out\.0)", mod)
        if m is None:
            raise IncompatibleError(f"LoRA module {mod} is not an attention projection; the release layout has none.")
        b = canonical[f"{mod}.lora_B.weight"]
        ratio = float(canonical.get(f"{mod}.alpha", torch.tensor(float(a.shape[0])))) / a.shape[0]
        name = f"{m[1]}.processor.{m[2].removesuffix('.0')}_lora"
        out[f"{name}.down.weight"] = a
        out[f"{name}.up.weight"] = b if ratio == 1.0 else b * ratio
    return out


def id_from_release(ide: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Release ``id_encoder`` -> (tailor IDEncoder state, vision tower state without ``vision_model.``)."""
    unknown = [k for k in ide if not k.startswith((VISION, "visual_projection", "fuse_module."))]
    if unknown:
        raise FormatError(f"PhotoMaker id_encoder weight {unknown[0]!r} is not in the v1 layout (a PhotoMaker v2 "
                          f"file?); only v1 files are read.")  # fmt: skip
    vision = {k[len(VISION) :]: v for k, v in ide.items() if k.startswith(VISION) and not k.endswith("position_ids")}
    inverse = {v: k for k, v in _FUSE.items()}
    own = {}
    for k, v in ide.items():
        for rel, mine in inverse.items():
            if k.startswith(rel):
                own[mine + k[len(rel) :]] = v
    if "visual_projection.weight" not in ide:
        raise FormatError("the PhotoMaker id_encoder has no visual_projection; the file is incomplete.")
    rows = [ide["visual_projection.weight"]] + [ide[k] for k in ("visual_projection_2.weight",) if k in ide]
    own["visual_projection.weight"] = torch.cat(rows) if len(rows) > 1 else rows[0]
    return own, vision


def id_to_release(
    own: dict[str, torch.Tensor], vision: dict[str, torch.Tensor], first_width: int
) -> dict[str, torch.Tensor]:
    """tailor IDEncoder state (its projection reading the pooled output) + tower -> release ``id_encoder``;
    ``first_width`` rows of the projection are ``visual_projection``, the rest ``visual_projection_2``."""
    out = {VISION + k: v for k, v in vision.items()}
    proj = own["visual_projection.weight"]
    out["visual_projection.weight"] = proj[:first_width]
    if proj.shape[0] > first_width:
        out["visual_projection_2.weight"] = proj[first_width:]
    for k, v in own.items():
        for mine, rel in _FUSE.items():
            if k.startswith(mine):
                out[rel + k[len(mine) :]] = v
    return out


def release_state(own, vision, first_width: int, lora_canonical) -> dict[str, torch.Tensor]:
    """The flat release-layout state (``id_encoder.`` / ``lora_weights.`` prefixes), tensors contiguous."""
    out = {f"id_encoder.{k}": v for k, v in id_to_release(own, vision, first_width).items()}
    out.update({f"lora_weights.{k}": v for k, v in lora_to_release(lora_canonical).items()})
    return {k: v.detach().contiguous() for k, v in out.items()}
