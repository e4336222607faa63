"""A1111 hypernetwork files (NovelAI 2022 hypernetworks as stable-diffusion-webui saves them).

Layout of the ``.pt`` (a pickle of plain containers; read only with ``torch.load(weights_only=True)``)::

    {768: (sd_k, sd_v), 320: (...), 640: (...), 1280: (...),       # one MLP pair per context width
     "layer_structure": [1, 2, 1], "activation_func": "linear", "is_layer_norm": False,
     "weight_initialization": "Normal", "use_dropout": False, "dropout_structure": [0, 0, 0],
     "last_layer_dropout": False, "activate_output": False, "name": ..., "step": ..., "sd_checkpoint": ...,
     "sd_checkpoint_name": ..., "optional_info": ...}

where ``sd_k`` / ``sd_v`` are ``HypernetworkModule`` state dicts (``linear.<i>.weight`` / ``.bias``). Missing
options take A1111's load defaults (note ``activate_output`` defaults to True for files that do not say).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from tailor.core.io import PICKLE_SUFFIXES, atomic_path, safe_torch_load
from tailor.errors import FormatError, UnsafeFileError
from tailor.methods.hypernetwork.config import HypernetworkConfig, default_dropout
from tailor.methods.hypernetwork.modules import fix_old_keys

PREFIX = "hypernetwork"
MAX_SNIFF_BYTES = 2 << 30  # a hypernetwork is at most a few hundred MB; never unpickle a whole checkpoint to look


def _pairs(data: dict) -> dict[int, Any]:
    return {k: v for k, v in data.items() if isinstance(k, int) and not isinstance(k, bool)}


def is_a1111(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    pairs = _pairs(data)
    return bool(pairs) and all(
        isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(sd, dict) for sd in v) for v in pairs.values()
    )


def parse(data: Any, path: str | Path) -> tuple[HypernetworkConfig, dict[str, torch.Tensor]]:
    """(config, ``hypernetwork.<width>.<k|v>.linear.<i>.*`` tensors) from a loaded A1111 hypernetwork."""
    if not is_a1111(data):
        raise FormatError(
            f"{path} is not an A1111 hypernetwork (no {{width: (k, v)}} MLP pairs); pass a hypernetwork .pt file."
        )
    layer_structure = [float(x) for x in (data.get("layer_structure") or [1, 2, 1])]
    dropout = data.get("dropout_structure")
    use_dropout = bool(dropout and any(dropout)) or bool(data.get("use_dropout", False))
    last = bool(data.get("last_layer_dropout", False))
    if not dropout:
        dropout = default_dropout(layer_structure, use_dropout, last)
    config = HypernetworkConfig(
        layer_structure=layer_structure,
        activation_func=str(data.get("activation_func") or "linear").lower(),
        weight_initialization=str(data.get("weight_initialization") or "Normal"),
        is_layer_norm=bool(data.get("is_layer_norm", False)),
        use_dropout=use_dropout,
        dropout_structure=[float(p) for p in dropout],
        last_layer_dropout=last,
        activate_output=bool(data.get("activate_output", True)),
        widths=sorted(_pairs(data)),
    )
    state = {}
    for width, (sd_k, sd_v) in _pairs(data).items():
        for which, sd in (("k", sd_k), ("v", sd_v)):
            for key, t in fix_old_keys(dict(sd)).items():
                if not isinstance(t, torch.Tensor):
                    raise FormatError(f"{path}: entry {width}/{which}/{key} is not a tensor; the file is damaged.")
                state[f"{PREFIX}.{width}.{which}.{key}"] = t.detach().float().cpu()
    return config, state


def read(path: str | Path) -> tuple[HypernetworkConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, tensors, extra fields such as name/step) of an A1111 ``.pt``; pickles never run code."""
    data = safe_torch_load(path)
    config, state = parse(data, path)
    extra = {k: data.get(k) for k in ("name", "step", "sd_checkpoint", "sd_checkpoint_name")}
    return config, state, extra


def sniff(path: str | Path, meta: dict[str, str]) -> bool:
    """Whether ``path`` is an A1111 hypernetwork ``.pt`` (a pickle that would run code is refused loudly)."""
    path = Path(path)
    if path.suffix not in PICKLE_SUFFIXES or path.stat().st_size > MAX_SNIFF_BYTES:
        return False
    try:
        return is_a1111(safe_torch_load(path))
    except UnsafeFileError:
        raise
    except FormatError:
        return False


def write_a1111(path: Path, config: HypernetworkConfig, state: dict[str, torch.Tensor], name: str, step: int,
                checkpoint_name: str | None) -> None:  # fmt: skip
    """The A1111 ``.pt`` of ``state`` (our ``hypernetwork.<width>.<k|v>.*`` keys), plain containers only."""
    pairs: dict[int, tuple[OrderedDict, OrderedDict]] = {}
    for width in sorted({int(k.split(".")[1]) for k in state}):
        sds = []
        for which in ("k", "v"):
            prefix = f"{PREFIX}.{width}.{which}."
            sds.append(OrderedDict((k[len(prefix) :], v.detach().cpu().clone().contiguous())
                                   for k, v in state.items() if k.startswith(prefix)))  # fmt: skip
        pairs[width] = (sds[0], sds[1])
    dropout = config.resolved_dropout()
    data: dict[Any, Any] = dict(pairs)
    data.update(
        step=int(step),
        name=name,
        layer_structure=[float(x) for x in config.layer_structure],
        activation_func=config.activation_func,
        is_layer_norm=bool(config.is_layer_norm),
        weight_initialization=config.weight_initialization,
        sd_checkpoint=None,
        sd_checkpoint_name=checkpoint_name,
        activate_output=bool(config.activate_output),
        use_dropout=bool(config.use_dropout or any(dropout)),
        dropout_structure=dropout,
        last_layer_dropout=bool(dropout[-2] != 0) if len(dropout) >= 2 else False,
        optional_info=None,
    )
    with atomic_path(path) as tmp:
        torch.save(data, str(tmp))
