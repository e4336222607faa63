"""The official PuLID release's ID encoders and file layout (Guo et al. 2024, ToTheBeginning/PuLID), read by tailor.

Files (flat keys; ``pulid_v1.bin`` a plain state-dict pickle, ``pulid_v1.1.safetensors``)::

    id_adapter.*                                  the ID encoder (below)
    id_adapter_attn_layers.<j>.id_to_k.weight     [block width, cross-attention width], bias-free; j = the index of
    id_adapter_attn_layers.<j>.id_to_v.weight     the cross-attention processor in ``unet.attn_processors`` order

**v1** (``pulid/encoders.py`` ``IDEncoder``): ``body`` = MLP(1280 -> h1 -> h2 -> 5 x 2048) on the ID condition (512-d
antelopev2 ArcFace embedding ++ the unit-normalised 768-d EVA02-CLIP-L embedding), plus for each of 5 EVA-CLIP ViT
hidden states ``mapping_i``(CLS token) + mean over patches of ``mapping_patch_i``(patch tokens): 5 + 5 = 10 tokens.
Each MLP is Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear (indices 0, 1, 3, 4, 6 carry weights).

**v1.1** (``pulid/encoders_transformer.py`` ``IDFormer``): 32 learned ``latents`` (1024 wide) ++ 5 ID tokens from
``id_embedding_mapping`` (MLP 1280 -> 5 x 1024); for each ViT hidden state i, two Perceiver layers (``layers.<l>.0``:
``norm1`` on the context, ``norm2`` on the latents, ``to_q``, ``to_kv`` over [context, latents], ``to_out``, heads of
64; ``layers.<l>.1``: LayerNorm, Linear x4, GELU, Linear, bias-free) attend to [ID tokens, ``mapping_i``(ViT
features)];
the first 32 latents times ``proj_out`` [1024, 2048] are the 32 ID tokens.

The attention is decoupled cross-attention, ``out = Attn(Q, K_text, V_text) + id_scale * Attn(Q, id_to_k(T),
id_to_v(T))``, which is tailor's :class:`~tailor.core.attention.ImageBranch` (``to_k_ip`` / ``to_v_ip``); the release's
``NUM_ZERO`` zero tokens appended to T are the ``num_zero`` option (its ``ORTHO`` variants are not implemented).
Every size is read from the weights. The EVA-CLIP tower and antelopev2 are not part of the file: tailor takes their
outputs as ``id_features`` (``{"id_cond": (B, 1280), "vit_hidden": [5 x (B, N, 1024)]}``), computed with the
official code.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from tailor.errors import FormatError

ENCODER, ATTN = "id_adapter.", "id_adapter_attn_layers."
DIM_HEAD = 64  # IDFormer's head width (the release's default)


def mlp(d_in: int, h1: int, h2: int, d_out: int) -> nn.Sequential:
    """The release's MLP: Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear."""
    return nn.Sequential(nn.Linear(d_in, h1), nn.LayerNorm(h1), nn.LeakyReLU(), nn.Linear(h1, h2), nn.LayerNorm(h2),
                         nn.LeakyReLU(), nn.Linear(h2, d_out))  # fmt: skip


def _mlp_sizes(state: dict[str, torch.Tensor], name: str) -> tuple[int, int, int, int]:
    try:
        a, b, c = (state[f"{name}.{i}.weight"] for i in (0, 3, 6))
    except KeyError as e:
        raise FormatError(f"the PuLID file's {name} MLP lacks {e}; the file is damaged.") from e
    return int(a.shape[1]), int(a.shape[0]), int(b.shape[0]), int(c.shape[0])


def _vit_count(state: dict[str, torch.Tensor]) -> int:
    found = {int(m[1]) for k in state if (m := re.match(r"mapping_(\d+)\.", k))}
    if not found or found != set(range(len(found))):
        raise FormatError("the PuLID file has no mapping_0 ... mapping_N for the ViT features; the file is damaged.")
    return len(found)


class IDEncoderV1(nn.Module):
    """PuLID v1's ID encoder: ``body`` on the ID condition -> ``num_token`` tokens, plus one token per ViT layer."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        d_in, h1, h2, out = _mlp_sizes(state, "body")
        self.num_vit = _vit_count(state)
        vit, m1, m2, self.context_dim = _mlp_sizes(state, "mapping_0")
        if out % self.context_dim:
            raise FormatError(f"PuLID v1 body output {out} is not a multiple of the token width {self.context_dim}.")
        self.num_token = out // self.context_dim
        self.body = mlp(d_in, h1, h2, out)
        for i in range(self.num_vit):
            setattr(self, f"mapping_{i}", mlp(vit, m1, m2, self.context_dim))
            setattr(self, f"mapping_patch_{i}", mlp(vit, m1, m2, self.context_dim))
        self.id_dim, self.vit_dim = d_in, vit

    def forward(self, id_cond: torch.Tensor, vit_hidden: list[torch.Tensor]) -> torch.Tensor:
        x = self.body(id_cond).reshape(-1, self.num_token, self.context_dim)
        per_layer = [getattr(self, f"mapping_{i}")(h[:, :1]) + getattr(self, f"mapping_patch_{i}")(h[:, 1:]).mean(
            dim=1, keepdim=True) for i, h in enumerate(vit_hidden)]  # fmt: skip
        return torch.cat([x, *per_layer], dim=1)


class PerceiverLayer(nn.Module):
    """IDFormer's attention: the latents attend to [context, latents] (``norm1`` / ``norm2``; heads of 64)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.heads = inner // DIM_HEAD
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context, latents = self.norm1(context), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([context, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.view(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        weight = torch.softmax((q @ k.transpose(-2, -1) * DIM_HEAD**-0.5).float(), dim=-1).to(q.dtype)
        return self.to_out((weight @ v).transpose(1, 2).reshape(b, n, -1))


class IDFormer(nn.Module):
    """PuLID v1.1's ID encoder (see the module docstring); sizes from the file's weights."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        try:
            latents, proj_out = state["latents"], state["proj_out"]
            inner = int(state["layers.0.0.to_q.weight"].shape[0])
            ff = int(state["layers.0.1.1.weight"].shape[0])
        except KeyError as e:
            raise FormatError(f"the PuLID v1.1 IDFormer lacks {e}; the file is damaged.") from e
        self.num_queries, dim = int(latents.shape[1]), int(latents.shape[2])
        depth = len({int(m[1]) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
        self.num_vit = _vit_count(state)
        if depth % self.num_vit or inner % DIM_HEAD:
            raise FormatError(f"the PuLID IDFormer has {depth} layers for {self.num_vit} ViT features and {inner} "
                              f"attention channels; the release's layout has a multiple of each.")  # fmt: skip
        self.per_vit = depth // self.num_vit
        vit, m1, m2, _ = _mlp_sizes(state, "mapping_0")
        d_in, i1, i2, out = _mlp_sizes(state, "id_embedding_mapping")
        self.dim, self.num_id_token = dim, out // dim
        self.latents = nn.Parameter(torch.zeros(1, self.num_queries, dim))
        self.proj_out = nn.Parameter(torch.zeros(dim, int(proj_out.shape[1])))
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverLayer(dim, inner), nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff, bias=False),
                                                                      nn.GELU(), nn.Linear(ff, dim, bias=False))])
            for _ in range(depth)
        )  # fmt: skip
        for i in range(self.num_vit):
            setattr(self, f"mapping_{i}", mlp(vit, m1, m2, dim))
        self.id_embedding_mapping = mlp(d_in, i1, i2, out)
        self.id_dim, self.vit_dim, self.context_dim = d_in, vit, int(proj_out.shape[1])

    def forward(self, id_cond: torch.Tensor, vit_hidden: list[torch.Tensor]) -> torch.Tensor:
        images = id_cond.shape[1] if id_cond.ndim == 3 else 1  # several reference images: their ID tokens side by side
        latents = self.latents.repeat(id_cond.shape[0], 1, 1)
        ids = self.id_embedding_mapping(id_cond).reshape(-1, self.num_id_token * images, self.dim)
        latents = torch.cat([latents, ids], dim=1)
        for i in range(self.num_vit):
            context = torch.cat([ids, getattr(self, f"mapping_{i}")(vit_hidden[i])], dim=1)
            for attn, ff in self.layers[i * self.per_vit : (i + 1) * self.per_vit]:
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, : self.num_queries] @ self.proj_out


# --------------------------------------------------------------------- file layout
def version(state: dict) -> str | None:
    """``v1.1`` (IDFormer), ``v1`` (MLP IDEncoder) or None, from flat release keys (the values are not read)."""
    if not state or not all(k.startswith((ENCODER, ATTN)) for k in state):
        return None
    if f"{ENCODER}latents" in state:
        return "v1.1"
    if f"{ENCODER}body.0.weight" in state:
        return "v1"
    return None


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(ENCODER) :]: v for k, v in state.items() if k.startswith(ENCODER)}


def build_encoder(state: dict[str, torch.Tensor], which: str) -> nn.Module:
    """The release's ID encoder sized from flat release ``state``."""
    own = encoder_state(state)
    return IDFormer(own) if which == "v1.1" else IDEncoderV1(own)


def branch_from_release(state: dict[str, torch.Tensor], indices: list[int]) -> dict[str, torch.Tensor]:
    """``id_adapter_attn_layers.<j>.id_to_{k,v}`` -> an ImageBranch state; ``indices`` = each branch layer's j."""
    found = sorted({int(m[1]) for k in state if (m := re.match(r"id_adapter_attn_layers\.(\d+)\.", k))})
    if found != sorted(indices):
        raise FormatError(f"the PuLID file has attention weights at processors {found[:6]}... but this base's "
                          f"cross-attention ones are {sorted(indices)[:6]}...; use one for this base.")  # fmt: skip
    out = {}
    for n, j in enumerate(indices):
        out[f"to_k_ip.{n}.weight"] = state[f"{ATTN}{j}.id_to_k.weight"]
        out[f"to_v_ip.{n}.weight"] = state[f"{ATTN}{j}.id_to_v.weight"]
    return out


def branch_to_release(branch, indices: list[int]) -> dict[str, torch.Tensor]:
    out = {}
    for n, j in enumerate(indices):
        out[f"{ATTN}{j}.id_to_k.weight"] = branch.to_k_ip[n].weight.detach()
        out[f"{ATTN}{j}.id_to_v.weight"] = branch.to_v_ip[n].weight.detach()
    return out


def processor_indices(unet, layer_names: list[str]) -> list[int]:
    """Each cross-attention layer's index in ``unet.attn_processors`` (the release's ``nn.ModuleList`` of them)."""
    order = list(unet.attn_processors)
    return [order.index(name) for name in layer_names]


def check_features(features, encoder: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``id_features`` -> (id_cond (B, D), ViT hidden states), checked against the encoder's widths."""
    from tailor.errors import InputError

    if not isinstance(features, dict) or "id_cond" not in features or "vit_hidden" not in features:
        raise InputError("a PuLID release model reads id_features={'id_cond': (1, 1280) tensor, 'vit_hidden': [5 "
                         "(1, N, 1024) tensors]} (antelopev2 + EVA-CLIP outputs from the official code), not a face "
                         "image; compute them with the release's pipeline.get_id_embedding.")  # fmt: skip
    cond, hidden = torch.as_tensor(features["id_cond"]).float(), [torch.as_tensor(h).float() for h in
                                                                  features["vit_hidden"]]  # fmt: skip
    if cond.ndim == 1:
        cond = cond[None]
    if (
        cond.shape[-1] != encoder.id_dim
        or len(hidden) != encoder.num_vit
        or any(h.ndim != 3 or h.shape[-1] != encoder.vit_dim for h in hidden)
    ):
        raise InputError(f"id_features must hold id_cond of width {encoder.id_dim} and {encoder.num_vit} ViT hidden "
                         f"states (B, N, {encoder.vit_dim}); got {tuple(cond.shape)} and "
                         f"{[tuple(h.shape) for h in hidden]}.")  # fmt: skip
    return cond, hidden
