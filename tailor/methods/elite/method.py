"""ELITE (Wei et al., ICCV 2023): a reference image -> words in the text encoder's input (global mapper) + masked
patch tokens in a gated extra cross-attention (local mapper); one forward pass per new subject, no tuning.

**Global mapper** (:class:`~tailor.methods.elite.modules.Mapper`): features of several layers of a frozen CLIP vision
tower through one MLP each -> one word per layer; the words replace the placeholder (``S``) in the text encoder's
input (:class:`~tailor.core.placeholder.WordInjection`: all words in training, word ``token_index`` at sampling,
as the official ``inference_global.py`` with ``--token_index 0``). Trainable copies of every ``attn2.to_k`` /
``to_v`` replace the base's for the text tokens while ELITE is attached. Loss: eps-MSE + ``reg_global`` x mean |words|.

**Local mapper**: the reference's masked patch tokens (per patch: mean over layers of class + patch MLPs, zero outside
the object) in an extra cross-attention per layer (an :class:`~tailor.core.attention.ImageBranch`, ``to_k_local`` /
``to_v_local`` initialised from the base's), whose output is multiplied by the placeholder word's cross-attention map
of the same layer and call (the :class:`~tailor.core.attention_store.AttentionStore`, computed with the overridden
keys), normalised by its maximum (``gate="max"``, official) or its part above its mean over max - mean
(``gate="mean"``: the world weights, whose flat low-resolution maps open m / max m over most of the frame), times
lambda. The global mapper is frozen; loss: eps-MSE inside the target's object
mask + ``reg_local`` x mean |V_local|; only word 0 is injected. [deviation] the official gates each head with its own
map and normalises by the maximum over the whole batch; tailor gates with the head-averaged map (the store's) and
normalises per image (the same for one image); the unconditional rows get no local attention, as in the official.

Training (``tailor train elite --stage global|local --data world:pair``): each item's reference is another view of
the same world instance (another scene, pose, scale, light; a photo) and the caption names the instance by the
placeholder (``a photo of a S on grass``); other data uses the item itself as its reference (the official's
OpenImages recipe) with the template captions. Files: ``elite.safetensors`` with ``global_mapper.*`` and (local
stage) ``local_mapper.*`` keys, each the official layout (:mod:`tailor.methods.elite.formats`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.attention import ImageBranch, attach_branch, detach_branch
from tailor.core.attention_store import AttentionStore
from tailor.core.components import load_image_encoder
from tailor.core.io import PICKLE_SUFFIXES, read_metadata
from tailor.core.method import ARTIFACT_FORMAT, Method, load_module_state
from tailor.core.prompts import encode_prompts
from tailor.errors import ConfigError, FormatError, IncompatibleError, InputError
from tailor.methods.elite import formats
from tailor.methods.elite.config import ELITEConfig
from tailor.methods.elite.data import PairViews, reference_tensors
from tailor.methods.elite.modules import (
    KVOverride,
    Mapper,
    WordInjection,
    add_kv_copies,
    box_crop,
    clip_input,
    expand_prompt,
    layer_features,
    patch_mask,
    placeholder_id,
    vision_layers,
    with_placeholder,
)

log = logging.getLogger("tailor")


class ELITEMethod(Method):
    """Attach with ``pipe.attach(method, elite_image=IMG[, mask=MASK, lambda=0.8])`` and a prompt holding the
    placeholder (``a photo of a S on snow``); with ``class_word="star"`` a prompt without the placeholder gets it in
    place of its first ``star`` (what the benches pass)."""

    name = "elite"
    text_context = "edits"  # it changes the prompt's word embeddings
    config_cls = ELITEConfig
    trains_text_encoder = True  # the prompt embeddings depend on the mapper: never cache them
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, config: ELITEConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.global_mapper: Mapper | None = None
        self.local_mapper: Mapper | None = None
        self.branch: ImageBranch | None = None
        self.encoder = self.processor = None
        self.layers: list[str] = []
        self._injection: WordInjection | None = None
        self._kv: KVOverride | None = None
        self.store: AttentionStore | None = None
        self._words: torch.Tensor | None = None  # the words of the last training batch (norm penalty)
        self._gate_rows: torch.Tensor | None = None  # (UNet rows, tokens): where each row's placeholder sits
        self._fallback: Any = None  # a training item's reference, for the trainer's sample grids
        self._lam = float(self.config.llambda)

    @property
    def has_local(self) -> bool:
        return self.config.stage == "local"

    def modules(self) -> list[nn.Module]:
        if not self._built:
            return []
        return [self.global_mapper] + ([self.local_mapper, self.branch] if self.has_local else [])

    # ------------------------------------------------------------------ build / attach
    def build(self, components) -> None:
        c = self.config
        if components.is_sdxl:
            raise IncompatibleError("ELITE is built for SD1.x-style bases (one text encoder); this base is SDXL.")
        self.encoder, self.processor = load_image_encoder(c.image_encoder, components.device)
        vc = self.encoder.config
        self.feature_layers = vision_layers(int(vc.num_hidden_layers), list(c.vision_layers))
        self.grid = int(vc.image_size) // int(vc.patch_size)
        dim_in, dim_out = int(vc.hidden_size), int(components.text_encoder.config.hidden_size)
        n = len(self.feature_layers)
        self.global_mapper = Mapper(dim_in, dim_out, c.mapper_width, n)
        if c.word_init == "token":
            emb = components.text_encoder.get_input_embeddings().weight
            self.global_mapper.rescale_output(float(emb.detach().float().norm(dim=1).mean()))
        self.layers = add_kv_copies(self.global_mapper, components.unet)
        if self.has_local:
            self.local_mapper = Mapper(dim_in, dim_out, c.mapper_width, n)
            self.branch = ImageBranch(components.unet)  # to_k_local / to_v_local start from the base's, as official
            own = {n.removesuffix(".processor") for n in self.branch.layer_names}
            if own != set(self.layers):
                raise IncompatibleError("this UNet's cross-attention processors and attn2 modules differ.")
            if not any(k.startswith("global_mapper.") for k in self._pending_state or {}):
                self._load_global(c.global_mapper)
        for m in (self.global_mapper, self.local_mapper, self.branch):
            if m is not None:
                m.eval()
        self.token_id = placeholder_id(components.tokenizer, c.placeholder)

    def _load_global(self, source: str) -> None:
        """The local stage's frozen global mapper, from a trained global stage."""
        if not str(source).strip():
            raise ConfigError("the local stage trains on a trained global stage; pass --global-mapper PATH (a "
                              "`tailor train elite --stage global` output or an elite file).")  # fmt: skip
        from tailor.core.artifacts import load

        other = load(source)
        if other.name != self.name:
            raise IncompatibleError(f"global_mapper {source} is a {other.name} file, not an ELITE one.")
        state = {k: v for k, v in other.state_dict().items() if k.startswith("global_mapper.")}
        if not state:
            raise FormatError(f"global_mapper {source} holds no global mapper weights; pass a global-stage output.")
        self._load_part("global_mapper", state, str(source))

    def attach(self, components) -> None:
        if self._kv is not None:  # attached already (the trainer patched it; a pipeline attaches it again)
            return
        emb = components.text_encoder.get_input_embeddings()
        self._injection = WordInjection(emb, self.token_id, "the ELITE placeholder words")
        self._kv = KVOverride(components.unet, self.global_mapper, self.layers)
        if self.has_local:
            attach_branch(components.unet, self.branch)
            self.store = AttentionStore(layers=self.layers).attach(components.unet)
        self.set_scale(self.scale)

    def detach(self, components) -> None:
        for part in (self._injection, self._kv, self.store):
            if part is not None:
                part.remove() if not isinstance(part, AttentionStore) else part.detach()
        self._injection = self._kv = self.store = None
        if self.branch is not None:
            detach_branch(components.unet, self.branch)

    def set_scale(self, scale: float) -> None:
        """The attachment weight multiplies lambda; 0 (outside start/end) turns the K/V copies and the local
        attention off (training: lambda 1, as the official trains)."""
        self.scale = float(scale)
        if self._kv is not None:
            self._kv.active = self.scale > 0
        if self.branch is not None:
            self.branch.scale = 1.0 if self.branch.training else self.scale * self._lam

    def trainable_parameters(self) -> list[nn.Parameter]:
        train = [self.local_mapper, self.branch] if self.has_local else [self.global_mapper]
        for m in self.modules():
            m.requires_grad_(any(m is t for t in train))
        return [p for m in train for p in m.parameters()]

    # ------------------------------------------------------------------ features
    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        return clip_input(images, self.processor)

    def global_words(self, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, n, width)``: the global mapper's words for references in [-1, 1] and their object masks."""
        crop = box_crop(ref, mask, self.config.box_pad)
        feats = layer_features(self.encoder, self._pixels(crop), self.feature_layers)
        p = next(self.global_mapper.parameters())
        return self.global_mapper.words([f.to(p) for f in feats])

    def local_tokens(self, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, patches, width)``: the local mapper's tokens of the object (black ground), zero outside its mask."""
        obj = torch.where(mask > 0.5, ref, torch.full_like(ref, -1.0))
        feats = layer_features(self.encoder, self._pixels(obj), self.feature_layers)
        p = next(self.local_mapper.parameters())
        return self.local_mapper.patches([f.to(p) for f in feats]) * patch_mask(mask, self.grid).to(p)

    # ------------------------------------------------------------------ encode
    def encode(self, cond, inputs: dict[str, Any]):
        training = "pixel_values" in inputs
        if training:
            ref, mask = inputs["ref_pixel_values"], inputs["ref_mask"]
        else:
            image = inputs.get("elite_image", self._fallback)
            if image is None:
                raise InputError("elite needs a reference image: attach it with elite_image=IMAGE (CLI: --elite "
                                 "MODEL=IMG).")  # fmt: skip
            lam = inputs.get("lambda")
            self._lam = self._check_lambda(lam) if lam is not None else float(self.config.llambda)
            ref, mask = reference_tensors(image, inputs.get("mask"))
        device = cond.encoder_hidden_states.device
        ref, mask = ref.to(device), mask.to(device)
        b = cond.batch_size
        if ref.shape[0] == 1 and b > 1:
            ref, mask = ref.expand(b, -1, -1, -1), mask.expand(b, -1, -1, -1)
        words_all = self.global_words(ref, mask) if self.config.stage == "global" and training else None
        if words_all is None:
            with torch.no_grad():
                words_all = self.global_words(ref, mask)
        words = self._chosen_words(words_all, training)
        self._words = words_all if training else None
        prompts = list(cond.prompts) or [""] * b
        if not training and inputs.get("class_word"):
            prompts = [with_placeholder(p, str(inputs["class_word"]), self.config.placeholder) for p in prompts]
        rows, texts, positions = [], [], []
        for i, prompt in enumerate(prompts):
            got = expand_prompt(self.components.tokenizer, prompt, self.config.placeholder, words.shape[1])
            if got is None:
                if not training:
                    raise InputError(f"the prompt {prompt!r} lacks ELITE's placeholder word "
                                     f"{self.config.placeholder!r}; write it where the subject goes, e.g. 'a photo "
                                     f"of a {self.config.placeholder} on grass'.")  # fmt: skip
                texts.append(prompt)
                positions.append(None)
                continue
            texts.append(got[0])
            positions.append(got[1])
            rows.append((i, got[1], words[i]))
        with self._injection.rows(rows), torch.set_grad_enabled(torch.is_grad_enabled() and training):
            hidden = encode_prompts(self.components, texts, cfg=False).encoder_hidden_states
        h = cond.encoder_hidden_states
        hidden = hidden.to(h.dtype)
        cond.encoder_hidden_states = torch.cat([h[: h.shape[0] - b], hidden]) if cond.cfg else hidden
        if self.has_local:
            self._set_local(ref, mask, positions, cond)
        return cond

    def _chosen_words(self, words: torch.Tensor, training: bool) -> torch.Tensor:
        """All words in global training; else word ``token_index`` (-1: all; the local stage trains with word 0)."""
        if training:
            return words if self.config.stage == "global" else words[:, :1]
        i = self.config.token_index
        if i >= words.shape[1]:
            raise ConfigError(f"token_index {i} is past this mapper's {words.shape[1]} words; use 0 .. "
                              f"{words.shape[1] - 1} or -1.")  # fmt: skip
        return words if i == -1 else words[:, i : i + 1]

    def _check_lambda(self, value) -> float:
        try:
            lam = float(value)
        except (TypeError, ValueError):
            lam = float("nan")
        if not 0.0 <= lam <= 5.0:
            raise InputError(f"--elite-lambda {value!r} must be a number in [0, 5] (official 0.8).")
        return lam

    def _set_local(self, ref, mask, positions: list[int | None], cond) -> None:
        tokens = self.local_tokens(ref, mask)
        b = cond.batch_size
        rows = cond.encoder_hidden_states.shape[0]
        gate_rows = torch.zeros(rows, cond.encoder_hidden_states.shape[1])
        for i, pos in enumerate(positions):
            if pos is not None:
                gate_rows[rows - b + i, pos] = 1.0  # conditional rows only: the unconditional get no local branch
        self._gate_rows = gate_rows
        if cond.cfg:
            tokens = torch.cat([torch.zeros_like(tokens), tokens])
        self.branch.tokens = None
        self.branch.regions = [(tokens, self._gate)]
        self.store.reset()

    def _gate(self, processor_name: str, out: torch.Tensor) -> torch.Tensor | None:
        """(rows, hw, 1): the placeholder's attention in this layer and call over its maximum (0 for other rows)."""
        probs = self.store.current.get(processor_name.removesuffix(".processor"))
        if probs is None or self._gate_rows is None:
            return None
        maps = torch.einsum("bst,bt->bs", probs, self._gate_rows.to(probs))
        return gate_map(maps, self.config.gate).unsqueeze(-1)

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        data = PairViews(dataset, self.config.placeholder)
        if len(data):
            item = data[0]
            self._fallback = (item["ref_pixel_values"], item["ref_mask"])
        return data

    def loss(self, pred, target, state, weights):
        err = (pred.float() - target.float()).pow(2)
        logs = {}
        if self.has_local:  # eps-MSE inside the target's object mask (the whole image where it has none)
            m = torch.nn.functional.interpolate(state.inputs["mask"].float(), size=err.shape[-2:], mode="nearest")
            m = m.to(err).expand_as(err)
            empty = m.sum(dim=(1, 2, 3)) == 0
            m = torch.where(empty.view(-1, 1, 1, 1), torch.ones_like(m), m)
            per = (err * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))
        else:
            per = err.mean(dim=(1, 2, 3))
        if weights is not None:
            per = per * weights
        mse = per.mean()
        if self.has_local:
            tokens = self.branch.regions[0][0]
            values = [v(tokens.to(v.weight)).abs().mean() for v in self.branch.to_v_ip]
            reg = self.config.reg_local * torch.stack(values).mean()
        else:
            reg = self.config.reg_global * self._words.abs().mean()
        logs = {"mse": float(mse.detach()), "reg": float(reg.detach())}
        return mse + reg, logs

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built:
            return dict(self._pending_state or {})
        out = {f"global_mapper.{k}": v for k, v in self.global_mapper.state_dict().items()}
        if self.has_local:
            out.update({f"local_mapper.{k}": v for k, v in self.local_official().items()})
        return out

    def local_official(self) -> dict[str, torch.Tensor]:
        """The local mapper in the official layout: its MLPs + ``<layer>_to_k/_to_v.weight`` (the branch)."""
        out = dict(self.local_mapper.state_dict())
        out.update(formats.branch_to_official(self.branch))
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        src = self.source_file or "the ELITE weights"
        self._load_part("global_mapper", {k: v for k, v in state.items() if k.startswith("global_mapper.")}, src)
        if self.has_local:
            self._load_part("local_mapper", {k: v for k, v in state.items() if k.startswith("local_mapper.")}, src)

    def _load_part(self, part: str, state: dict[str, torch.Tensor], source: str) -> None:
        sub = {k[len(part) + 1 :]: v for k, v in state.items()}
        if not sub:
            raise FormatError(f"{source} has no {part} weights; the file is incomplete.")
        if part == "global_mapper":
            load_module_state(self.global_mapper, sub, f"{source} {part}")
            return
        mlp, kv = formats.split_kv(sub)
        load_module_state(self.local_mapper, mlp, f"{source} {part}")
        formats.branch_from_official(self.branch, kv, f"{source} {part}")

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim the official ``global_mapper.pt`` / ``local_mapper.pt`` files."""
        return formats.sniff(path)

    @classmethod
    def from_file(cls, path: str | Path, image_encoder: str | None = None) -> ELITEMethod:
        """A tailor ``elite.safetensors``, or an official ``global_mapper.pt`` (with ``local_mapper.pt`` beside it,
        when present, the local mapper too) or ``local_mapper.pt`` (with its ``global_mapper.pt``); official files
        read CLIP ViT-L/14 features: name that tower's folder as ``image_encoder``."""
        path = Path(path)
        meta = read_metadata(path) if path.suffix not in PICKLE_SUFFIXES else {}
        if meta.get("format") == ARTIFACT_FORMAT:
            return super().from_file(path)  # type: ignore[return-value]
        state, options = formats.read_official(path)
        options.pop("_dim_in")
        if image_encoder is not None:
            options["image_encoder"] = image_encoder
        method = cls(cls.config_cls(**options))
        method.load_state_dict(state)
        method.source_file = str(path)
        return method


def gate_map(maps: torch.Tensor, how: str = "max") -> torch.Tensor:
    """``(rows, hw)`` placeholder maps -> gates in [0, 1]: ``max`` m / max m (official); ``mean`` the part of m
    above its mean, over max - mean; ``minmax`` (m - min) / (max - min). A row of zeros stays zero."""
    top = maps.amax(dim=1, keepdim=True)
    if how == "max":
        return maps / top.clamp_min(1e-8)
    low = maps.mean(dim=1, keepdim=True) if how == "mean" else maps.amin(dim=1, keepdim=True)
    return (maps - low).clamp_min(0) / (top - low).clamp_min(1e-8)
