"""ELITE's official files (csyxwei/ELITE): ``global_mapper.pt`` and ``local_mapper.pt``, each a plain
``torch.save`` of the mapper's ``state_dict`` (read here with ``weights_only=True``; never unpickled with code).

**Layout** (both files; ``i`` = 0..4 for the five CLIP layers, ``<layer>`` = a UNet cross-attention module path with
dots as underscores, e.g. ``down_blocks_1_attentions_0_transformer_blocks_0_attn2``)::

    mapping_{i}.{0,3,6}.{weight,bias}         class-token MLP: Linear(1024,1024), Linear(1024,1024), Linear(1024,768)
    mapping_{i}.{1,4}.{weight,bias}           its two LayerNorms
    mapping_patch_{i}.*                       the patch-token MLP, same shapes
    <layer>_to_k.weight, <layer>_to_v.weight  global: the trainable to_k_global / to_v_global copies of attn2;
                                              local: to_k_local / to_v_local of the extra cross-attention

The two files share one layout (the mappers differ in how they combine the MLPs, not in their weights); which is
which is read from the file name (``local`` in it: the local mapper). tailor's ``elite.safetensors`` holds the same
keys under ``global_mapper.`` / ``local_mapper.``. :func:`write_official` writes both files from a model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tailor.core.io import PICKLE_SUFFIXES, safe_torch_load
from tailor.errors import FormatError, IncompatibleError, InputError
from tailor.methods.elite.modules import NUM_WORDS, mapper_sizes, official_name

PARTS = ("global_mapper", "local_mapper")
_MLP = re.compile(r"^mapping(_patch)?_\d+\.\d+\.(weight|bias)$")
_KV = re.compile(r"^(.+)_to_([kv])\.weight$")


def is_official(keys) -> bool:
    keys = list(keys)
    return bool(keys) and "mapping_0.0.weight" in keys and all(_MLP.match(k) or _KV.match(k) for k in keys)


def sniff(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix not in PICKLE_SUFFIXES:
        return False
    try:
        data = safe_torch_load(path)
    except Exception:  # unreadable: not ours to claim; tailor.load reports it
        return False
    return isinstance(data, dict) and is_official(data)


def _read(path: Path) -> dict[str, torch.Tensor]:
    data = safe_torch_load(path)
    if not (isinstance(data, dict) and all(torch.is_tensor(v) for v in data.values()) and is_official(data)):
        raise FormatError(f"{path} is not an official ELITE mapper (mapping_{{i}}.* and <layer>_to_k.weight keys).")
    return data


def part_of(path: Path) -> str:
    return "local_mapper" if "local" in path.name else "global_mapper"


def read_official(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """An official file and its partner beside it -> (prefixed state, config options). ``local_mapper.pt`` needs
    its ``global_mapper.pt`` in the same folder; ``global_mapper.pt`` takes ``local_mapper.pt`` when present."""
    path = Path(path)
    part = part_of(path)
    files = {part: path}
    partner = path.with_name("global_mapper.pt" if part == "local_mapper" else "local_mapper.pt")
    if partner.is_file():
        files[part_of(partner)] = partner
    elif part == "local_mapper":
        raise InputError(f"{path} is an ELITE local mapper; its global_mapper.pt must lie beside it (ELITE samples "
                         f"with both).")  # fmt: skip
    state = {}
    for name, f in files.items():
        state.update({f"{name}.{k}": v for k, v in _read(f).items()})
    dim_in, width, _, n = mapper_sizes({k.split(".", 1)[1]: v for k, v in state.items()
                                        if k.startswith("global_mapper.")})  # fmt: skip
    options = {"stage": "local" if "local_mapper" in files else "global", "mapper_width": width}
    if n != NUM_WORDS:
        raise FormatError(f"{path} has {n} mapper pairs; official files have {NUM_WORDS}.")
    return state, options | {"_dim_in": dim_in}


def split_kv(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the MLP keys, the ``<layer>_to_k/v.weight`` keys)."""
    mlp = {k: v for k, v in state.items() if _MLP.match(k)}
    return mlp, {k: v for k, v in state.items() if k not in mlp}


def branch_to_official(branch) -> dict[str, torch.Tensor]:
    out = {}
    for i, name in enumerate(branch.layer_names):
        layer = name.removesuffix(".processor")
        out[f"{official_name(layer, 'to_k')}.weight"] = branch.to_k_ip[i].weight
        out[f"{official_name(layer, 'to_v')}.weight"] = branch.to_v_ip[i].weight
    return out


def branch_from_official(branch, kv: dict[str, torch.Tensor], what: str) -> None:
    own = branch_to_official(branch)
    missing = sorted(set(own) - set(kv))
    if missing:
        raise FormatError(f"{what} lacks {len(missing)} key/value weights (e.g. {missing[0]}); the file is incomplete "
                          f"or made for another UNet.")  # fmt: skip
    for k, v in own.items():
        if kv[k].shape != v.shape:
            raise IncompatibleError(f"{what} weight {k} has shape {tuple(kv[k].shape)} but this base needs "
                                    f"{tuple(v.shape)}; it was trained for another base model.")  # fmt: skip
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(kv[k])


def write_official(state: dict[str, torch.Tensor], folder: str | Path) -> list[Path]:
    """``global_mapper.pt`` (and ``local_mapper.pt`` when the state has a local mapper) into ``folder``, readable by
    the official scripts' ``torch.load`` and by ``weights_only=True``."""
    from tailor.core.io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for part in PARTS:
        sub = {k[len(part) + 1 :]: v.detach().cpu().contiguous() for k, v in state.items() if k.startswith(part + ".")}
        if not sub:
            continue
        path = folder / f"{part}.pt"
        with atomic_path(path) as tmp:
            torch.save(sub, tmp)
        out.append(path)
    return out
