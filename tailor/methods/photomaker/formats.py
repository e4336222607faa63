"""PhotoMaker files (Li et al. 2023, TencentARC/PhotoMaker): the release's checkpoint is one dict with two parts,
``{"id_encoder": ..., "lora_weights": ...}``; tailor's ``photomaker.safetensors`` keeps them as key prefixes
(``id_encoder.*``: the ID encoder's projection and fuse MLPs; ``lora_weights.*``: canonical ``unet.<path>.lora_A/B``
+ ``alpha``) with tailor metadata. The release's ``id_encoder`` also holds a fine-tuned CLIP ViT-L vision tower and two
projections; reading it is not done yet.
"""

from __future__ import annotations

PARTS = ("id_encoder", "lora_weights")


def split(state: dict) -> dict[str, dict]:
    """Flat prefixed keys -> ``{"id_encoder": {...}, "lora_weights": {...}}`` (the release's nesting)."""
    out: dict[str, dict] = {p: {} for p in PARTS}
    for k, v in state.items():
        part, _, rest = k.partition(".")
        if part in out:
            out[part][rest] = v
    return out
