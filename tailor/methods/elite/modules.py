"""ELITE's building blocks (Wei et al., ICCV 2023, *ELITE: Encoding Visual Concepts into Textual Embeddings for
Customized Text-to-Image Generation*; official code csyxwei/ELITE ``train_global.py`` / ``train_local.py``).

- :class:`Mapper`: one MLP per chosen CLIP vision layer for the class token (``mapping_{i}``) and one for the patch
  tokens (``mapping_patch_{i}``), each ``Linear -> LayerNorm -> LeakyReLU -> Linear -> LayerNorm -> LeakyReLU ->
  Linear`` (the official ``nn.Sequential`` indices 0..6, so state-dict keys are the official ones). The *global*
  mapper gives one word per layer: ``mapping_i(cls) + mean_p mapping_patch_i(patch_p)``; the *local* mapper gives one
  token per patch: ``mean_i [mapping_i(cls) + mapping_patch_i(patch_p)]``.
- :func:`vision_layers`: which hidden states feed the mappers. The official reads CLIP ViT-L/14 (24 layers):
  ``[last_hidden_state, hidden_states[4], [8], [12], [16]]``; a tower with ``L`` layers reads the same fractions of
  its depth (``round(k * L / 24)``, at least 1).
- :class:`~tailor.core.placeholder.WordInjection` (core, shared with PhotoVerse): a forward hook on the text
  encoder's token embedding that puts the mapper's words at the placeholder's positions (the official replaces the
  placeholder by the words and shifts the rest right; tailor writes the placeholder word once per injected word, so
  the tokenizer does the shifting and every base prompt encoder — clip skip, truncation — runs unchanged).
- :class:`KVOverride`: the trainable copies of every ``attn2.to_k`` / ``to_v`` (``to_k_global`` / ``to_v_global``)
  used in place of the base's for every text token of every row while ELITE is active, as the official's
  cross-attention does; forward hooks on the base projections, so any attention processor (IP-Adapter's decoupled
  one, the attention store) sees the overridden keys.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.placeholder import WordInjection, find_word  # noqa: F401  (WordInjection: ELITE's API)
from tailor.errors import ConfigError, InputError

OFFICIAL_DEPTH = 24  # CLIP ViT-L/14, the official image encoder
OFFICIAL_LAYERS = (4, 8, 12, 16)  # its hidden_states beside the last hidden state
NUM_WORDS = 5


def mlp(dim_in: int, width: int, dim_out: int) -> nn.Sequential:
    layers = [nn.Linear(dim_in, width), nn.LayerNorm(width), nn.LeakyReLU()]
    layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.LeakyReLU(), nn.Linear(width, dim_out)]
    return nn.Sequential(*layers)


class Mapper(nn.Module):
    """``n`` (class-token MLP, patch-token MLP) pairs; see the module docstring. Extra modules (the K/V copies) are
    added to it by name, as the official mapper holds them."""

    def __init__(self, dim_in: int, dim_out: int, width: int = 1024, n: int = NUM_WORDS):
        super().__init__()
        self.n = n
        for i in range(n):
            self.add_module(f"mapping_{i}", mlp(dim_in, width, dim_out))
            self.add_module(f"mapping_patch_{i}", mlp(dim_in, width, dim_out))

    @torch.no_grad()
    def rescale_output(self, norm: float, seed: int = 0) -> None:
        """Scale every MLP's last Linear so the words of random unit features have mean norm ``norm`` (the base's
        token embeddings'): with the default init they start ~20x larger than any token, far outside what the
        text encoder was trained on, which a few thousand steps (not the official 10^5) do not undo."""
        dim_in = self.mapping_0[0].in_features
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            feats = [torch.randn(8, 17, dim_in) for _ in range(self.n)]
        now = float(self.words(feats).norm(dim=-1).mean())
        for i in range(self.n):
            for head in (f"mapping_{i}", f"mapping_patch_{i}"):
                last = getattr(self, head)[6]
                last.weight.mul_(norm / now)
                last.bias.mul_(norm / now)

    def words(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Global mapper: ``(B, n, dim_out)``, one word per layer (class-token MLP + mean of the patch MLP)."""
        out = [getattr(self, f"mapping_{i}")(f[:, :1]) + getattr(self, f"mapping_patch_{i}")(f[:, 1:]).mean(1, True)
               for i, f in enumerate(features)]  # fmt: skip
        return torch.cat(out, dim=1)

    def patches(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Local mapper: ``(B, patches, dim_out)``, per patch the mean over layers of class + patch MLPs."""
        out = [getattr(self, f"mapping_{i}")(f[:, :1]) + getattr(self, f"mapping_patch_{i}")(f[:, 1:])
               for i, f in enumerate(features)]  # fmt: skip
        return torch.stack(out).mean(0)


def official_name(layer: str, which: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2`` -> ``down_blocks_1_..._attn2_to_k`` (the official
    ``f'{_name.replace(".", "_")}_to_k'``)."""
    return f"{layer.replace('.', '_')}_{which}"


def cross_layers(unet) -> list[str]:
    """The UNet's ``attn2`` modules (cross-attention), in module order."""
    found = []
    for n, m in unet.named_modules():
        if n.endswith("attn2") and getattr(m, "is_cross_attention", False) and "motion_modules" not in n:
            found.append(n)
    return found


def add_kv_copies(mapper: Mapper, unet) -> list[str]:
    """Add bias-free copies of every ``attn2.to_k`` / ``to_v`` to ``mapper`` under the official names; returns the
    layers."""
    layers = cross_layers(unet)
    if not layers:
        raise ConfigError("this UNet has no cross-attention layers; ELITE cannot attach.")
    for name in layers:
        attn = unet.get_submodule(name)
        for which in ("to_k", "to_v"):
            base = getattr(attn, which)
            copy = nn.Linear(base.in_features, base.out_features, bias=False)
            with torch.no_grad():
                copy.weight.copy_(base.weight)
            mapper.add_module(official_name(name, which), copy.to(base.weight.device))
    return layers


_KEY = re.compile(r"^(mapping(?:_patch)?)_(\d+)\.(\d+)\.(weight|bias)$")


def mapper_sizes(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """(dim_in, width, dim_out, n) of a mapper's weights (official or tailor), read from their shapes."""
    try:
        first, last = state["mapping_0.0.weight"], state["mapping_0.6.weight"]
    except KeyError as e:
        raise InputError(f"the ELITE mapper weights lack {e}; the file is not an ELITE mapper.") from None
    n = 1 + max(int(m[2]) for k in state if (m := _KEY.match(k)))
    return int(first.shape[1]), int(first.shape[0]), int(last.shape[0]), n


# --------------------------------------------------------------------- image features
def vision_layers(depth: int, spec: list[int]) -> list[int]:
    """Hidden-state indices the mappers read (``-1`` = the last hidden state), the official fractions of the depth
    unless ``spec`` names them."""
    if spec:
        bad = [i for i in spec if i != -1 and not 0 <= i <= depth]
        if bad:
            raise ConfigError(f"vision_layers {bad[0]} is outside this image encoder's 0..{depth} (or -1 = last).")
        return list(spec)
    return [-1] + [max(1, round(k * depth / OFFICIAL_DEPTH)) for k in OFFICIAL_LAYERS]


@torch.no_grad()
def layer_features(encoder, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """The chosen hidden states ``(B, 1 + patches, width)`` of a frozen CLIP vision tower (``last_hidden_state`` for
    -1, before the post-layernorm, as the official's ``image_features[0]``)."""
    out = encoder(pixels.to(device=encoder.device, dtype=encoder.dtype), output_hidden_states=True)
    return [(out.last_hidden_state if i == -1 else out.hidden_states[i]).float() for i in layers]


def crop_size(processor) -> tuple[int, int]:
    size = processor.crop_size
    return (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)


def clip_input(pixel_values: torch.Tensor, processor) -> torch.Tensor:
    """Images in [-1, 1] ``(B, 3, H, W)`` -> the encoder's input (bilinear resize, as the official's
    ``F.interpolate(..., (224, 224), mode='bilinear')``, then CLIP mean / std)."""
    h, w = crop_size(processor)
    x = (pixel_values.float() + 1) / 2
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    mean = torch.tensor(processor.image_mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(processor.image_std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def patch_mask(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, 1, H, W)`` object masks -> ``(B, grid * grid, 1)`` at the patch grid (nearest; official 16x16)."""
    return F.interpolate(mask.float(), size=(grid, grid), mode="nearest")[:, 0].reshape(mask.shape[0], -1, 1)


def box_crop(pixel_values: torch.Tensor, mask: torch.Tensor, pad: float = 0.1) -> torch.Tensor:
    """Each image cropped to its mask's box grown by ``pad`` of the side (the official trains the global mapper on
    the object's box plus 10 px), resized back to the image size; an empty mask keeps the whole image."""
    out = []
    size = pixel_values.shape[-2:]
    for img, m in zip(pixel_values, mask):
        ys, xs = torch.nonzero(m[0] > 0.5, as_tuple=True)
        if ys.numel() == 0:
            out.append(img)
            continue
        p = int(round(pad * size[0]))
        y0, y1 = max(0, int(ys.min()) - p), min(size[0], int(ys.max()) + 1 + p)
        x0, x1 = max(0, int(xs.min()) - p), min(size[1], int(xs.max()) + 1 + p)
        crop = img[None, :, y0:y1, x0:x1]
        out.append(F.interpolate(crop, size=tuple(size), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


# --------------------------------------------------------------------- the prompt
def placeholder_id(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ConfigError(f"placeholder {word!r} is {len(ids)} tokens of this base's tokenizer; ELITE needs a word "
                          f"that is one token (the official 'S').")  # fmt: skip
    return ids[0]


def with_placeholder(prompt: str, class_word: str, placeholder: str) -> str:
    """``prompt`` with its first whole-word ``class_word`` replaced by ``placeholder``, unless it already holds the
    placeholder (or lacks the class word)."""
    if find_word(prompt, placeholder) is not None:
        return prompt
    m = find_word(prompt, class_word)
    return prompt if m is None else prompt[: m.start()] + placeholder + prompt[m.end() :]


def expand_prompt(tokenizer, prompt: str, word: str, k: int) -> tuple[str, int] | None:
    """``prompt`` with its first ``word`` written ``k`` times and the token position of the first copy (after the
    start token), or None when ``word`` is not in the prompt."""
    from tailor.core.tokenizers import expand_placeholders

    m = find_word(prompt, word)
    if m is None:
        return None
    prefix = expand_placeholders(tokenizer, prompt[: m.start()])
    pos = 1 + len(tokenizer(prefix, add_special_tokens=False).input_ids)
    return prompt[: m.start()] + " ".join([word] * k) + prompt[m.end() :], pos


class KVOverride:
    """``attn2.to_k`` / ``to_v`` outputs replaced by the mapper's copies while ``active``."""

    def __init__(self, unet, mapper: Mapper, layers: list[str]):
        self.active = True
        self.handles = []
        for name in layers:
            attn = unet.get_submodule(name)
            for which in ("to_k", "to_v"):
                copy = getattr(mapper, official_name(name, which))
                self.handles.append(getattr(attn, which).register_forward_hook(self._hook(copy)))

    def _hook(self, copy: nn.Linear):
        def hook(module, args, output):
            if not self.active:
                return output
            x = args[0]
            return copy(x.to(copy.weight.dtype)).to(output.dtype)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
