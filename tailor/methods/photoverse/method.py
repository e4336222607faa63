"""PhotoVerse (Chen et al. 2023, arXiv:2309.05793): one face photo -> a dual-branch condition, no test-time tuning.

**Text branch**: the class tokens of every layer of a frozen CLIP vision tower (the paper's multi-layer features)
-> the text adapter -> a pseudo-word written into the text encoder's input at the placeholder (``a photo of a S
woman``; :class:`~tailor.core.placeholder.WordInjection`). **Image branch**: the same features -> the image adapter
-> ``image_tokens`` tokens in a parallel image cross-attention (:class:`~tailor.core.attention.ImageBranch`, added
to the text attention). **LoRA on the cross-attention K / V**: core LoRA on every ``attn2.to_k`` / ``to_v`` (text
branch) and the image branch's K / V = those base weights + their own LoRA
(:class:`~tailor.methods.photoverse.modules.LowRankKV`). Trained: both adapters and both LoRAs; UNet, text encoder,
vision tower, VAE and face embedder frozen.

Loss: eps/v-MSE + ``face_loss`` x (1 - cos) between the *conditioning* face embedder's embeddings of the predicted
clean image (``x0`` from the prediction, decoded by the VAE) and of the reference + ``reg_word`` x mean |pseudo-word|
+ ``reg_values`` x mean |image-branch values|. The FaceSim oracle is an evaluator only and is never called here.

Sampling: ``pipe.attach(method, face=IMG)`` (several faces: mean features) and a prompt holding the placeholder, or
``class_word="woman"`` to put it before that word; no face in the image or no placeholder in the prompt: one
sentence. The unconditional rows get neither the pseudo-word (their prompt is empty) nor the image branch (gated to
0), so guidance pushes towards both. ``tune_steps`` > 0 (not the paper's): before sampling, that many steps of the
two LoRAs on the reference(s) with the same loss, through the trainer's micro-step (:class:`Objective`); the weights
are restored when the references change and at detach; ``adapt_seconds`` records the time.

File: ``photoverse.safetensors`` (:mod:`tailor.methods.photoverse.formats`; no official release to match).
"""

from __future__ import annotations

import itertools
import time
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.attention import ImageBranch, attach_branch, detach_branch, is_attached
from tailor.core.image_encoder import load_image_encoder
from tailor.core.latents import vae_decode
from tailor.core.lora import LoRA
from tailor.core.method import Method, load_module_state
from tailor.core.placeholder import WordInjection, insert_before, placeholder_id, placeholder_position
from tailor.core.prompts import encode_prompts
from tailor.errors import IncompatibleError, InputError
from tailor.methods.photoverse import formats
from tailor.methods.photoverse.config import PhotoVerseConfig
from tailor.methods.photoverse.data import ReferenceViews
from tailor.methods.photoverse.modules import (
    Adapters,
    LowRankKV,
    class_features,
    clip_input,
    face_id_loss,
    predicted_clean,
    vision_layers,
)

_ids = itertools.count()


class PhotoVerseMethod(Method):
    """Attach with ``pipe.attach(method, face=IMG)`` and a prompt like ``a photo of a S woman on snow`` (or
    ``class_word="woman"``)."""

    name = "photoverse"
    text_context = "edits"  # it changes the prompt's word embeddings
    config_cls = PhotoVerseConfig
    trains_text_encoder = True  # the prompt embeddings hold the pseudo-word: never cache them
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, config: PhotoVerseConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.adapters: Adapters | None = None
        self.branch: ImageBranch | None = None
        self.lora: LoRA | None = None
        self.encoder = self.processor = None
        self._injection: WordInjection | None = None
        self._words: torch.Tensor | None = None  # the training batch's pseudo-words (regularisation)
        self._ref_emb: torch.Tensor | None = None  # the training batch's reference face embeddings
        self._ref: tuple | None = None  # (attachment inputs, features (1, F), face embeddings, images)
        self._untuned: dict[str, torch.Tensor] | None = None  # the LoRAs before test-time tuning
        self._fallback: Any = None
        self.adapt_seconds = self.adapt_cpu_seconds = 0.0

    def modules(self) -> list[nn.Module]:
        if not self._built:
            return []
        lora = self.lora.modules() if self.lora.components is not None else []
        return [self.adapters, self.branch, *lora]

    # ------------------------------------------------------------------ build / attach
    def build(self, components) -> None:
        c = self.config
        if components.is_sdxl:
            raise IncompatibleError("PhotoVerse is built for SD1.x-style bases (one text encoder); this base is SDXL.")
        self.encoder, self.processor = load_image_encoder(c.image_encoder, components.device)
        vc = self.encoder.config
        self.layers = vision_layers(int(vc.num_hidden_layers), list(c.vision_layers))
        dim_in = len(self.layers) * int(vc.hidden_size)
        text_dim = int(components.text_encoder.config.hidden_size)
        cad = int(components.cross_attention_dim)
        self.adapters = Adapters(dim_in, c.adapter_width, text_dim, cad, c.image_tokens).eval()
        unet = components.unet
        self.branch = ImageBranch(unet, init_from_base=False).eval()
        paths = [n.removesuffix(".processor") for n in self.branch.layer_names]
        k, v = [], []
        for path in paths:
            attn = unet.get_submodule(path)
            k.append(LowRankKV(_base_layer(attn.to_k), c.rank, c.lora_alpha))
            v.append(LowRankKV(_base_layer(attn.to_v), c.rank, c.lora_alpha))
        self.branch.to_k_ip, self.branch.to_v_ip = nn.ModuleList(k), nn.ModuleList(v)
        specs = {f"unet.{p}.{w}": (c.rank, c.lora_alpha) for p in paths for w in ("to_k", "to_v")}
        self.lora = LoRA(f"tailor_photoverse_{next(_ids)}", specs)
        self.token_id = placeholder_id(components.tokenizer, c.placeholder, "PhotoVerse")

    def attach(self, components) -> None:
        self.lora.attach(components)
        pending = getattr(self, "_pending_lora", None)
        if pending is not None:  # weights survive detach / re-attach
            self.lora.load_state_dict(pending)
            self._pending_lora = None
        if self._injection is None:
            emb = components.text_encoder.get_input_embeddings()
            self._injection = WordInjection(emb, self.token_id, "PhotoVerse's placeholder")
        if not is_attached(components.unet, self.branch):
            attach_branch(components.unet, self.branch)
        self.set_scale(self.scale)

    def detach(self, components) -> None:
        self._restore()
        detach_branch(components.unet, self.branch)
        if self._injection is not None:
            self._injection.remove()
            self._injection = None
        self._pending_lora = self.lora.state_dict()
        self.lora.detach()
        self._ref = None

    def set_scale(self, scale: float) -> None:
        """The weight scales the LoRAs and the image cross-attention (times ``image_scale``; 1 in training)."""
        self.scale = float(scale)
        if self.lora is not None and self.lora.components is not None:
            self.lora.set_scale(self.scale)
        if self.branch is not None:
            self.branch.scale = 1.0 if self.branch.training else self.scale * float(self.config.image_scale)

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [*self.adapters.parameters(), *self.branch.parameters(), *self.lora.parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    # ------------------------------------------------------------------ features
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, F)`` multi-layer class tokens of reference images in [-1, 1] (frozen tower)."""
        with torch.no_grad():
            return class_features(self.encoder, clip_input(images, self.processor), self.layers)

    def _face_embed(self, images01: torch.Tensor) -> torch.Tensor:
        """The *conditioning* face embedder (never the oracle) on images in [0, 1]."""
        from tailor.faces.embedders import face_embedder, is_world

        name = self.config.face_embedder
        return face_embedder(None if is_world(name) else name).embed(images01.float())

    # ------------------------------------------------------------------ encode
    def encode(self, cond, inputs: dict[str, Any]):
        if "pixel_values" in inputs:
            return self._encode_batch(cond, inputs)
        feats = self._reference(inputs)
        if self.config.tune_steps > 0 and self._ref[4] is False:
            self._tune(inputs)
        with torch.no_grad():
            p = next(self.adapters.parameters())
            words, tokens = self.adapters(feats.to(p))
        b = cond.batch_size
        prompts = list(cond.prompts) or [""] * b
        if inputs.get("class_word"):
            prompts = [insert_before(q, str(inputs["class_word"]), self.config.placeholder) for q in prompts]
        hidden = self._encode_text(prompts, words.expand(b, -1), strict=True)
        h = cond.encoder_hidden_states
        cond.encoder_hidden_states = torch.cat([h[: h.shape[0] - b], hidden.to(h.dtype)]) if cond.cfg else hidden
        tokens = tokens.expand(b, -1, -1)
        self.branch.tokens = None
        self.branch.regions = [(torch.cat([tokens, tokens]) if cond.cfg else tokens, self._gate(b, cond.cfg))]
        return cond

    def _gate(self, b: int, cfg: bool):
        rows = torch.tensor([0.0] * b + [1.0] * b if cfg else [1.0] * b).view(-1, 1, 1)
        return lambda name, hidden_states: rows  # the unconditional rows get no image branch

    def _encode_text(self, prompts: list[str], words: torch.Tensor, strict: bool) -> torch.Tensor:
        """The prompts' embeddings with each row's word at its placeholder (rows without it: as they are)."""
        rows = []
        for i, prompt in enumerate(prompts):
            pos = placeholder_position(self.components.tokenizer, prompt, self.config.placeholder)
            if pos is None and strict:
                ph = self.config.placeholder
                raise InputError(f"the prompt {prompt!r} lacks PhotoVerse's placeholder {ph!r}; write it before the "
                                 f"class word, e.g. 'a photo of a {ph} woman on snow'.")  # fmt: skip
            if pos is not None:
                rows.append((i, pos, words[i]))
        with self._injection.rows(rows):
            return encode_prompts(self.components, prompts, cfg=False).encoder_hidden_states

    def _encode_batch(self, cond, inputs: dict[str, Any]):
        """Training: the reference (``id_pixel_values``) -> words and tokens; its face embedding for the loss."""
        ref = inputs.get("id_pixel_values", inputs["pixel_values"]).to(cond.encoder_hidden_states.device)
        feats = self.features(ref)
        p = next(self.adapters.parameters())
        words, tokens = self.adapters(feats.to(p))
        self._words = words
        if self.config.face_loss > 0 and torch.is_grad_enabled():
            with torch.no_grad():
                self._ref_emb = self._face_embed((ref.float().clamp(-1, 1) + 1) / 2)
        hidden = self._encode_text(list(cond.prompts), words, strict=False)
        cond.encoder_hidden_states = hidden.to(cond.encoder_hidden_states.dtype)
        self.branch.regions = None
        self.branch.tokens = tokens
        return cond

    def _reference(self, inputs: dict[str, Any]) -> torch.Tensor:
        """``(1, F)`` mean features of the reference faces, checked to hold a face; cached per attachment inputs."""
        if self._ref is not None and self._ref[0] is inputs:
            return self._ref[1]
        from tailor.faces.inputs import as_list, reference_faces

        source = inputs.get("face")
        if source is None and self._fallback is not None:
            images = [self._fallback]
        elif source is None:
            raise InputError("photoverse needs a reference face; attach it with face=IMG (tailor generate "
                             "--photoverse MODEL --face IMG).")  # fmt: skip
        else:
            images = as_list(source)
            emb = self.config.face_embedder
            # one sentence for an image without a face (the face analysis' check); the embedding feeds the tuning
            reference_faces(images, "auto", None if emb in ("", "world") else emb, _width(emb))
        ref = torch.stack([_to_tensor(x, int(self.components.default_size)) for x in images])
        feats = self.features(ref.to(self.components.device)).mean(0, keepdim=True)
        self._restore()
        self._ref = (inputs, feats, None, ref, False)
        return feats

    # ------------------------------------------------------------------ test-time tuning
    def _tune(self, inputs: dict[str, Any]) -> None:
        """``tune_steps`` steps of both LoRAs on the reference(s): the training loss through the trainer's micro-step
        (reference = target, caption ``a photo of a S <class>``); the untuned weights are kept for :meth:`_restore`."""
        from tailor.core.training import TrainConfig
        from tailor.core.training.objective import Objective

        c, comps = self.config, self.components
        t0, c0 = time.perf_counter(), time.process_time()
        self._untuned = {
            **self.lora.state_dict(),
            **{f"branch.{k}": v.clone() for k, v in self.branch.state_dict().items()},
        }
        size = int(comps.default_size)
        ref = self._ref[3].to(comps.device)
        cls = inputs.get("class_word")
        caption = f"a photo of a {c.placeholder} {cls}" if cls else f"a photo of a {c.placeholder}"
        params = [*self.branch.parameters(), *self.lora.parameters()]
        frozen = [p for m in (comps.unet, comps.text_encoder, comps.vae) for p in m.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        adapters = [p.requires_grad for p in self.adapters.parameters()]
        self.adapters.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=c.tune_lr, weight_decay=0.0)
        objective = Objective(comps, self, TrainConfig(seed=0), size)
        scale = self.branch.scale
        self.branch.scale = 1.0
        try:
            for step in range(c.tune_steps):
                with torch.enable_grad():  # sampling runs under no_grad
                    self._tune_step(objective, opt, ref, caption, step)
        finally:
            self.branch.scale = scale
            for p in params:
                p.requires_grad_(False)
            for p in frozen:
                p.requires_grad_(True)
            for p, g in zip(self.adapters.parameters(), adapters):
                p.requires_grad_(g)
            self._words = self._ref_emb = None
        self._ref = (*self._ref[:4], True)
        self.adapt_seconds, self.adapt_cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    def _tune_step(self, objective, opt, ref: torch.Tensor, caption: str, step: int) -> None:
        c = self.config
        rows = [(step * c.tune_batch + i) % ref.shape[0] for i in range(c.tune_batch)]
        batch = {"pixel_values": ref[rows], "id_pixel_values": ref[rows], "caption": [caption] * c.tune_batch}
        positions = [step * c.tune_batch + i for i in range(c.tune_batch)]
        loss, _ = objective.loss(batch, [(0, i) for i in positions], positions, 7, step, c.tune_steps, False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def _restore(self) -> None:
        """Put back the LoRAs as they were before the last test-time tuning."""
        if self._untuned is None:
            return
        state, self._untuned = self._untuned, None
        self.lora.load_state_dict({k: v for k, v in state.items() if not k.startswith("branch.")})
        load_module_state(self.branch, {k[7:]: v for k, v in state.items() if k.startswith("branch.")}, "photoverse")

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        data = ReferenceViews(dataset, self.config.placeholder)
        if len(data):
            self._fallback = data[0]["id_pixel_values"]
        return data

    def loss(self, pred, target, state, weights):
        """MSE + ``face_loss`` x face-ID loss on the predicted clean image + the two regularisations."""
        total, logs = super().loss(pred, target, state, weights)
        c = self.config
        if not state.training or self._words is None:
            return total, logs
        if c.face_loss > 0 and self._ref_emb is not None:
            comps = self.components
            sched = comps.scheduler
            ptype = sched.config.get("prediction_type", "epsilon")
            x0 = predicted_clean(state.latents, pred, state.timestep, _alphas(sched), ptype)
            image = (vae_decode(comps.vae, x0.to(comps.vae.dtype)).float() / 2 + 0.5).clamp(0, 1)
            face = face_id_loss(self._face_embed(image), self._ref_emb)
            total = total + c.face_loss * face
            logs["face"] = float(face.detach())
        word = self._words.abs().mean()
        tokens = self.branch.tokens
        values = torch.stack([v(tokens).abs().mean() for v in self.branch.to_v_ip]).mean()
        total = total + c.reg_word * word + c.reg_values * values
        logs.update(word=float(word.detach()), values=float(values.detach()))
        return total, logs

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built:
            return dict(self._pending_state or {})
        self._restore()  # a tuned model saves its trained weights, not one reference's
        lora = self.lora.state_dict() if self.lora.components is not None else getattr(self, "_pending_lora", {})
        return formats.to_file(self.adapters.state_dict(), self.branch.state_dict(), lora)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        adapters, branch, lora = formats.from_file(state, self.source_file or "the PhotoVerse weights")
        load_module_state(self.adapters, adapters, "photoverse adapters")
        load_module_state(self.branch, branch, "photoverse image branch")
        if self.lora.components is not None:
            self.lora.load_state_dict(lora)
        else:
            self._pending_lora = lora


def _base_layer(module: nn.Module) -> nn.Linear:
    """The plain Linear under a peft LoRA wrapper (another LoRA attached first), or the module itself."""
    return module.get_base_layer() if hasattr(module, "get_base_layer") else module


def _alphas(scheduler) -> torch.Tensor:
    from diffusers import DDPMScheduler

    if getattr(scheduler, "alphas_cumprod", None) is not None:
        return scheduler.alphas_cumprod
    return DDPMScheduler.from_config(scheduler.config).alphas_cumprod


def _width(embedder: str) -> int:
    from tailor.faces.embedders import face_embedder, is_world

    return face_embedder(None if is_world(embedder) else embedder).dim


def _to_tensor(image, size: int) -> torch.Tensor:
    """A reference (path, PIL image, 3xHxW tensor in [-1, 1]) -> 3 x size x size in [-1, 1]."""
    import numpy as np
    from PIL import Image

    from tailor.core.images import load_image

    if isinstance(image, torch.Tensor):
        x = image.float()
        return (
            torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear")[0]
            if x.shape[-1] != size
            else x
        )
    pil = load_image(image) if not isinstance(image, Image.Image) else image.convert("RGB")
    arr = np.asarray(pil.resize((size, size), Image.BICUBIC), np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1
