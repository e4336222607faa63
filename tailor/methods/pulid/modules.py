"""PuLID's training losses (Guo et al. 2024), written against recorded cross-attention features.

Contrastive alignment: the UNet runs twice on the same noisy latents and prompt, with the ID (``id``) and without it
(``t``, text only). In every cross-attention layer, ``Q`` are the UNet's queries (``to_q`` outputs) and ``K`` the text
keys (``to_k`` outputs). The semantic term compares how the text tokens read the image features,
``softmax(K Q^T / sqrt(d)) Q`` of both paths; the layout term compares ``Q`` directly. Both are mean squared
differences averaged over layers; the text-only path is the target (no gradient).

ID loss: ``1 - cos(face_emb(reference), face_emb(image))`` for an image sampled in a few DDIM steps from pure noise
with the ID attached, decoded by the VAE and scored by the conditioning face embedder, gradients through the chain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Recorder:
    """Forward hooks on the cross-attention layers' ``to_q`` / ``to_k``: the features of one UNet call."""

    def __init__(self, unet, layer_names: list[str]):
        self.q: list[torch.Tensor] = []
        self.k: list[torch.Tensor] = []
        self.on = False
        self.handles = []
        for name in layer_names:
            attn = unet.get_submodule(name.removesuffix(".processor"))
            self.handles.append(attn.to_q.register_forward_hook(self._hook("q")))
            self.handles.append(attn.to_k.register_forward_hook(self._hook("k")))

    def _hook(self, which: str):
        def hook(module, args, out):
            if self.on:
                getattr(self, which).append(out)

        return hook

    def start(self) -> None:
        self.q, self.k, self.on = [], [], True

    def take(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        q, k = self.q, self.k
        self.q, self.k, self.on = [], [], False
        return q, k

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B, N, d) -> (B, h, N, d / h), as attention splits its heads."""
    return x.view(x.shape[0], x.shape[1], h, x.shape[-1] // h).transpose(1, 2)


def semantic_and_layout(q_id, k_id, q_t, k_t, heads: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(semantic, layout) alignment losses over layers; ``heads`` per layer split the features as attention does."""
    sem, lay = [], []
    for qi, ki, qt, kt, h in zip(q_id, k_id, q_t, k_t, heads):
        d = qi.shape[-1]
        qi_, ki_, qt_, kt_ = (_heads(x, h) for x in (qi, ki, qt.detach(), kt.detach()))
        scale = (d // h) ** -0.5
        read_id = torch.softmax(ki_ @ qi_.transpose(-1, -2) * scale, dim=-1) @ qi_  # (B, h, L, d/h)
        read_t = torch.softmax(kt_ @ qt_.transpose(-1, -2) * scale, dim=-1) @ qt_
        sem.append(F.mse_loss(read_id.float(), read_t.float()))
        lay.append(F.mse_loss(qi.float(), qt.detach().float()))
    return torch.stack(sem).mean(), torch.stack(lay).mean()


def id_cosine_loss(emb: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(emb.float(), reference.float().to(emb.device), dim=-1)).mean()
