"""PhotoMaker (Li et al. 2023): stacked ID embedding. Each reference image -> CLIP image embedding -> fused with the
class word's text embedding (:class:`~tailor.methods.photomaker.modules.IDEncoder`) -> one ID token; N images give N
tokens in place of the class word (``a photo of a man img``: trigger after the class word). LoRA on the UNet
attention (:mod:`tailor.core.lora`). The first ``merge_start`` of the sampling steps use the text-only prompt (trigger
removed), through the ``step_kwargs`` hook's per-step ``encoder_hidden_states`` (no forked pipeline).

Training (eps-MSE): the trigger goes after the item's class word (world faces: ``attrs["cls"]``); the ID image is
``id_pixel_values`` when the data gives one (world faces: another render of the same identity, added by
``wrap_dataset``), else the item itself; items without a class word train the LoRA on their caption alone. Trained:
the ID encoder's projection + fuse MLPs and the LoRA; the CLIP image encoder and the text encoder stay frozen.

Files: ``photomaker.safetensors`` with the release's two parts as key prefixes, ``id_encoder.*`` (projection + fuse;
the vision tower is the named ``image_encoder``) and ``lora_weights.*`` (canonical ``unet.<path>.lora_A/B`` keys).
SD and SDXL layouts (SDXL: both encoders' penultimate states concatenated, the pooled embedding of the ID prompt).
The release's own file (``photomaker-v1.bin`` / ``.safetensors``, its fine-tuned vision tower inside) loads with
``image_encoder="file"`` (``tailor.load`` sets it) and is written back in its layout; :meth:`save_release` writes any
PhotoMaker in that layout (:mod:`tailor.methods.photomaker.formats`).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.components import load_image_encoder
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.io import read_metadata, save_tensors
from tailor.core.lora import LoRA, find_targets
from tailor.core.method import ARTIFACT_FORMAT, Method, load_module_state
from tailor.errors import ConfigError, FormatError, InputError
from tailor.faces.inputs import as_list, clip_pixels
from tailor.methods.photomaker import formats
from tailor.methods.photomaker.config import PhotoMakerConfig
from tailor.methods.photomaker.modules import IDEncoder, id_prompt, with_trigger

_ids = itertools.count()


class PhotoMakerMethod(Method):
    """Attach with ``pipe.attach(method, id_images=[...])`` and a prompt holding ``<class word> img`` (or pass
    ``class_word="man"`` to put the trigger after that word of every prompt)."""

    name = "photomaker"
    text_context = "edits"  # it changes the prompt's word embeddings
    config_cls = PhotoMakerConfig
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, config: PhotoMakerConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.id_encoder: IDEncoder | None = None
        self.lora: LoRA | None = None
        self.encoder = self.processor = None
        self._text_only: torch.Tensor | None = None  # the UNet batch's text-only embeddings (start-merge steps)
        self._added_text_only: dict | None = None  # SDXL: their added_cond_kwargs (pooled text-only embedding)
        self._fallback: Any = None  # a training item's ID image, for the trainer's sample grids

    def modules(self) -> list[nn.Module]:
        if not self._built:
            return []
        return [self.id_encoder, *(self.lora.modules() if self.lora.components is not None else [])]

    # ------------------------------------------------------------------ attach / detach
    def build(self, components) -> None:
        c = self.config
        self._first_width = dim = int(components.text_encoder.config.hidden_size)
        if components.is_sdxl:  # the fused embedding lives in the concatenation of both encoders' states
            dim += int(components.text_encoder_2.config.hidden_size)
        if self.from_release:  # the release's own vision tower; the projections read its pooled output
            self.encoder, self.processor = self._release_tower(components.device)
            image_dim = int(self.encoder.config.hidden_size)
        else:
            self.encoder, self.processor = load_image_encoder(c.image_encoder, components.device)
            image_dim = int(self.encoder.config.projection_dim)
        self.id_encoder = IDEncoder(image_dim, dim).eval()
        specs = {k: (c.rank, c.lora_alpha) for k in find_targets(components, ["attention"])}
        self.lora = LoRA(f"tailor_photomaker_{next(_ids)}", specs)

    @property
    def from_release(self) -> bool:
        """Whether the vision tower comes from the file (the release layout, ``image_encoder="file"``)."""
        return self.config.image_encoder == "file"

    def _release_tower(self, device):
        from transformers import CLIPImageProcessor, CLIPVisionModel

        state = self._pending_state
        if not state or not formats.is_release(state):
            raise ConfigError("image_encoder 'file' takes the vision tower from a PhotoMaker release file; load one "
                              "with tailor.load(path), or name a CLIP image encoder.")  # fmt: skip
        _, vision = formats.id_from_release(formats.split(state)["id_encoder"])
        with torch.device("meta"):  # no random init: the file's weights are loaded right after build
            tower = CLIPVisionModel(formats.vision_config(vision, self.config.vision_heads))
        tower = tower.to_empty(device=device).eval().requires_grad_(False)
        for name, buf in tower.named_buffers():  # not in the file: CLIP's position ids, rebuilt as at init
            if not name.endswith("position_ids"):
                raise FormatError(f"the PhotoMaker vision tower has an unexpected buffer {name}.")
            buf.copy_(torch.arange(buf.shape[-1], device=device).expand_as(buf))
        size = int(tower.config.image_size)  # the release's CLIPImageProcessor(): 224, OpenAI mean / std
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return tower, processor

    def _tower_state(self) -> dict[str, torch.Tensor]:
        """The vision tower's weights under the release's names without ``vision_model.``."""
        tower = self.encoder if self.from_release else self.encoder.vision_model
        return {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}

    def attach(self, components) -> None:
        self.lora.attach(components)
        self.lora.set_scale(self.scale)

    def detach(self, components) -> None:
        self._pending_lora = self.lora.state_dict()
        self.lora.detach()
        self._text_only = None

    def patch(self, components) -> None:
        super().patch(components)
        pending = getattr(self, "_pending_lora", None)
        if pending is not None:  # weights survive detach / re-attach
            self.lora.load_state_dict(pending)
            self._pending_lora = None

    def set_scale(self, scale: float) -> None:
        self.scale = float(scale)
        if self.lora is not None:
            self.lora.set_scale(scale)

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.id_encoder.parameters()) + self.lora.parameters()
        for p in params:
            p.requires_grad_(True)
        return params

    # ------------------------------------------------------------------ encode
    def encode(self, cond, inputs: dict[str, Any]):
        training = "pixel_values" in inputs
        if training:
            prompts, embeds, counts = self._training_prompts(cond, inputs)
        else:
            images = as_list(inputs["id_images"]) if inputs.get("id_images") is not None else self._fallback
            if images is None or len(images) < self.config.min_images:
                got = 0 if images is None else len(images)
                raise InputError(f"photomaker needs at least {self.config.min_images} reference image(s) (id_images); "
                                 f"got {got} — pass more face images of the person.")  # fmt: skip
            emb = self._embed(images)
            prompts = [self._with_class_word(p, inputs.get("class_word")) for p in cond.prompts]
            embeds, counts = [emb] * len(prompts), [len(images)] * len(prompts)
        hidden, text_only, pooled, pooled_text = [], [], [], []
        device = cond.encoder_hidden_states.device
        for prompt, emb, n in zip(prompts, embeds, counts):
            if emb is None:  # training item without a class word: its caption as is
                h, p, _ = self._text_rows(prompt, None, device)
                hidden.append(h[0])
                text_only.append(h[0])
                pooled.append(p)
                pooled_text.append(p)
                continue
            (h, t), (p, pt), pos = self._text_rows(prompt, n, device)
            fused = self.id_encoder(emb.to(h), h[pos])
            mask = torch.zeros(h.shape[0], 1, dtype=torch.bool, device=device)
            mask[pos] = True
            full = torch.zeros_like(h).index_copy(0, torch.tensor(pos, device=device), fused.to(h.dtype))
            hidden.append(torch.where(mask, full, h))
            text_only.append(t)
            pooled.append(p)
            pooled_text.append(pt)
        h = torch.stack(hidden).to(cond.encoder_hidden_states.dtype)
        t = torch.stack(text_only).to(h.dtype)
        b = cond.batch_size
        if cond.cfg:
            uncond = cond.encoder_hidden_states[:b]
            h, t = torch.cat([uncond, h]), torch.cat([uncond, t])
        self._text_only, self._added_text_only = t, None
        cond.encoder_hidden_states = h
        if self.components.is_sdxl:  # SDXL: the pooled embedding of the ID prompt (text-only before the merge step)
            added = cond.added_cond_kwargs
            te_ = added["text_embeds"]
            p, pt = torch.stack(pooled).to(te_), torch.stack(pooled_text).to(te_)
            if cond.cfg:
                p, pt = torch.cat([te_[:b], p]), torch.cat([te_[:b], pt])
            cond.added_cond_kwargs = {**added, "text_embeds": p}
            self._added_text_only = {**added, "text_embeds": pt}
        return cond

    def _text_rows(self, prompt: str, n: int | None, device):
        """Run the (frozen) text encoder(s) on the ID prompt and its text-only twin; SDXL concatenates both
        encoders' penultimate states and takes the second's pooled output. ``n`` None: the prompt as it is."""
        c = self.components
        parts = [(c.tokenizer, c.text_encoder)] + ([(c.tokenizer_2, c.text_encoder_2)] if c.is_sdxl else [])
        states, pooled, pos = [], None, None
        for tok, te in parts:
            if n is None:
                rows = [tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids]
            else:
                ids, p, plain = id_prompt(tok, prompt, self.config.trigger_word, n)
                if pos is not None and p != pos:
                    raise ConfigError("the two SDXL tokenizers split the prompt differently; reword the class word.")
                pos, rows = p, [ids, plain]
            with torch.no_grad():
                out = te(torch.tensor(rows, device=device), output_hidden_states=c.is_sdxl)
            states.append(out.hidden_states[-2] if c.is_sdxl else out[0])
            pooled = out[0] if c.is_sdxl else None
        h = torch.cat(states, dim=-1)
        if n is None:
            return h, None if pooled is None else pooled[0], None
        return (h[0], h[1]), (None, None) if pooled is None else (pooled[0], pooled[1]), pos

    def _with_class_word(self, prompt: str, class_word: str | None) -> str:
        """A prompt without the trigger word gets it after ``class_word`` (the attachment's), when given."""
        trigger = self.config.trigger_word
        if trigger in prompt.split() or not class_word:
            return prompt
        return with_trigger(prompt, class_word, trigger) or prompt

    def _embed(self, images) -> torch.Tensor:
        p = next(self.encoder.parameters())
        px = clip_pixels(images, self.processor).to(p.device, p.dtype)
        with torch.no_grad():
            if self.from_release:  # the release fuses the tower's pooled output (its projections are ours)
                return self.encoder(pixel_values=px).pooler_output.float()
            return self.encoder(px).image_embeds.float()

    def _training_prompts(self, cond, inputs):
        prompts, embeds, counts = [], [], []
        attrs = inputs.get("attrs") or [{}] * cond.batch_size
        id_px = inputs.get("id_pixel_values", inputs["pixel_values"])
        for i, caption in enumerate(cond.prompts):
            a = attrs[i] if isinstance(attrs[i], dict) else {}
            p = with_trigger(caption, a.get("cls") or a.get("shape"), self.config.trigger_word)
            prompts.append(p or caption)
            embeds.append(None if p is None else self._embed([id_px[i]]))
            counts.append(1)
        return prompts, embeds, counts

    # ------------------------------------------------------------------ the step
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        if state.training or self._text_only is None or state.fraction >= self.config.merge_start:
            return None
        return StepExtras(encoder_hidden_states=self._text_only, added_cond_kwargs=self._added_text_only)

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        from tailor.faces.inputs import SameIdentityDataset

        data = SameIdentityDataset(dataset)
        if len(data):
            self._fallback = [data[0].get("id_pixel_values", data[0]["pixel_values"])]
        return data

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built:
            return dict(self._pending_state or {})
        lora = self.lora.state_dict() if self.lora.components is not None else getattr(self, "_pending_lora", {})
        if self.from_release:
            return formats.release_state(self.id_encoder.state_dict(), self._tower_state(), self._first_width, lora)
        out = {f"id_encoder.{k}": v for k, v in self.id_encoder.state_dict().items()}
        out.update({f"lora_weights.{k}": v for k, v in lora.items()})
        return out

    def release_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the release layout; a named tower's projection is folded into the release projections
        (``visual_projection(_2)`` = tailor's projection x the tower's own, exact up to float rounding)."""
        if not self._built:
            raise RuntimeError("attach the PhotoMaker to a base first (Pipeline.attach or patch).")
        if self.from_release:
            return self.state_dict()
        own = dict(self.id_encoder.state_dict())
        with torch.no_grad():
            own["visual_projection.weight"] = own["visual_projection.weight"] @ self.encoder.visual_projection.weight
        lora = self.lora.state_dict() if self.lora.components is not None else getattr(self, "_pending_lora", {})
        return formats.release_state(own, self._tower_state(), self._first_width, lora)

    def save_release(self, path: str | Path) -> Path:
        """Write the release layout (``id_encoder.*`` with the vision tower, ``lora_weights.*``), which the official
        ``load_photomaker_adapter`` and ``tailor.load`` (as ``image_encoder="file"``) read."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise InputError(f"{path}: the release layout is written as .safetensors; change the suffix.")
        heads = int(self.encoder.config.num_attention_heads)  # the weights do not tell it; the metadata does
        config = self.config.replace(image_encoder="file", lora_alpha=float(self.config.rank), vision_heads=heads)
        meta = {**self.metadata(), "config": config.to_dict()}
        save_tensors(path, self.release_state_dict(), meta)
        return path

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        parts = formats.split(state)
        ide, lora = parts["id_encoder"], parts["lora_weights"]
        if self.from_release != formats.is_release(state):
            raise FormatError("PhotoMaker weights in the release layout load with image_encoder 'file' and only then; "
                              "load the file with tailor.load(path).")  # fmt: skip
        if self.from_release:
            ide, vision = formats.id_from_release(ide)
            lora = formats.lora_from_release(lora)
            load_module_state(self.encoder, {_tower_key(self.encoder, k): v for k, v in vision.items()},
                              "photomaker vision tower")  # fmt: skip
        load_module_state(self.id_encoder, ide, "photomaker id_encoder")
        if self.lora.components is not None:
            self.lora.load_state_dict(lora)
        else:
            self._pending_lora = lora

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim the release's files (``photomaker-v1.bin`` / its ``.safetensors`` form)."""
        return formats.sniff(path)

    @classmethod
    def from_file(cls, path: str | Path) -> PhotoMakerMethod:
        """A tailor ``photomaker.safetensors``, or a release file (read with ``image_encoder="file"``; the LoRA's
        rank from its weights, alpha = rank as the release's loader has it)."""
        path = Path(path)
        meta = read_metadata(path) if path.suffix == ".safetensors" else {}
        if meta.get("format") == ARTIFACT_FORMAT:
            return super().from_file(path)  # type: ignore[return-value]
        state = formats.read(path)
        if not formats.is_release(state):
            raise FormatError(f"{path} is neither a tailor PhotoMaker file nor a PhotoMaker release file (no "
                              f"id_encoder.vision_model.* weights).")  # fmt: skip
        lora = formats.lora_from_release(formats.split(state)["lora_weights"])
        ranks = {int(v.shape[0]) for k, v in lora.items() if k.endswith(".lora_A.weight")}
        if len(ranks) != 1:
            raise FormatError(f"{path}: the PhotoMaker LoRA has ranks {sorted(ranks)}; one rank is expected.")
        rank = ranks.pop()
        method = cls(cls.config_cls(image_encoder="file", rank=rank, lora_alpha=float(rank)))
        method.load_state_dict(state)
        return method


def _tower_key(tower, key: str) -> str:
    """A release vision key (no ``vision_model.``) as ``tower`` names it (transformers 5 drops the prefix)."""
    return key if not any(k.startswith("vision_model.") for k in tower.state_dict()) else f"vision_model.{key}"
