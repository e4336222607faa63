"""AnyText (Tuo et al. 2023, ICLR 2024): text rendering through an auxiliary latent module in a ControlNet and a
text-embedding module in the text encoder's input, trained with an OCR perceptual loss.

- ControlNet: diffusers' ``ControlNetModel.from_unet`` whose hint encoder is replaced by :class:`AuxiliaryLatent`
  (glyph image, position mask, masked-image latent -> zero-initialised fuse conv). At every UNet call
  ``step_kwargs`` runs it and returns the residuals (scaled by ``conditioning_scale`` x the attachment weight).
- Text embedding: each line's own render -> the method's frozen :class:`LineRecognizer`'s neck features ->
  :class:`TextEmbedding` (zero-initialised Linear + LayerNorm) -> replaces the placeholder token's embedding at the
  text encoder's input (``*``, or the line's quoted text in the prompt: ``a sign that says "CAT"``). The text
  encoder stays frozen; the gradient flows through it to the projection (the official ``configure_optimizers``
  trains the ControlNet and the embedding manager only).
- Loss: epsilon (or v) MSE + ``ocr_loss_weight`` x the OCR perceptual loss: the predicted clean latents decoded
  by the VAE, every line cut out of it and out of the ground-truth image, MSE between the recognizer's features of
  the two, weighted by alpha-bar_t (``step_weight``), per sample (official ``ldm/models/diffusion/ddpm.py``).

Files: ``anytext.safetensors`` with keys ``anytext.control.<diffusers ControlNet key>``, ``anytext.embedding.*`` and
``anytext.recognizer.*``; the official checkpoint's ``control_model.*`` / ``embedding_manager.proj.*`` are read and
written by :mod:`.formats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.components import module_dtype
from tailor.core.conditioning import Conditioning, StepExtras, StepState
from tailor.core.control import controlnet_from_unet, hint_channels
from tailor.core.io import load_tensors, read_metadata, save_tensors
from tailor.core.latents import scale_latents, vae_decode
from tailor.core.method import Method, load_module_state
from tailor.core.training.noise import cubic_timesteps
from tailor.errors import ConfigError, FormatError, IncompatibleError, InputError
from tailor.methods.anytext import formats
from tailor.methods.anytext.config import AnyTextConfig
from tailor.methods.anytext.data import AnyTextDataset, line_tensors
from tailor.methods.anytext.glyphs import PLACEHOLDER, glyph_image, parse_lines, placeholder_prompt, position_mask
from tailor.methods.anytext.modules import AuxiliaryLatent, LineRecognizer, TextEmbedding, crop_lines, pack
from tailor.world.font import check_text

GROUPS = ("control", "embedding", "recognizer")


class AnyTextMethod(Method):
    """Attach with ``text=WORD or [WORDS]`` and ``text_box="x0,y0,x1,y1" or [...]`` (one box per line, pixels)."""

    name = "anytext"
    text_context = "edits"  # it changes the prompt's word embeddings
    config_cls = AnyTextConfig
    trains_text_encoder: ClassVar[bool] = True  # the prompt embeddings depend on the method: never cached
    default_lr: ClassVar[float] = 1e-4

    def __init__(self, config: AnyTextConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.control: nn.Module | None = None
        self.embedding: TextEmbedding | None = None
        self.recognizer: LineRecognizer | None = None
        self._official: dict[str, torch.Tensor] | None = None
        self._placeholder_id: int | None = None
        self._cache: tuple | None = None

    # ------------------------------------------------------------------ build
    def build(self, components) -> None:

        if components.is_sdxl:
            raise IncompatibleError("anytext supports SD1.x / SD2-style bases (one CLIP text encoder); not SDXL.")
        unet, f = components.unet, components.vae_scale_factor
        self._placeholder_id = self._placeholder(components.tokenizer)
        latent = int(components.vae.config.latent_channels)
        control = controlnet_from_unet(unet, latent, conditioning_embedding_out_channels=hint_channels(f))
        control.controlnet_cond_embedding = AuxiliaryLatent(
            f, int(components.vae.config.latent_channels), int(unet.config.block_out_channels[0]),
            self.config.glyph_scale,
        )  # fmt: skip
        self.control = control.to(dtype=unet.dtype)
        self.recognizer = LineRecognizer().requires_grad_(False).eval()
        self._load_recognizer()
        hidden = int(components.text_encoder.config.hidden_size)
        self.embedding = TextEmbedding(self.recognizer.feature_dim, hidden)
        if self._official is not None:
            official, self._official = self._official, None
            self._pending_state = formats.from_official(official, self, unet) | (self._pending_state or {})

    def _placeholder(self, tokenizer) -> int:
        ids = tokenizer(PLACEHOLDER, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise IncompatibleError(
                f"this base's tokenizer splits the placeholder {PLACEHOLDER!r} into {len(ids)} tokens; anytext needs "
                f"a base whose tokenizer keeps it one token (CLIP's does)."
            )
        return int(ids[0])

    def _load_recognizer(self) -> None:
        """The recognizer's weights from ``config.recognizer`` (a file's ``anytext.recognizer.*`` keys win later)."""
        src = self.config.recognizer
        if src == "random" or (
            self._pending_state and any(k.startswith("anytext.recognizer.") for k in self._pending_state)
        ):
            return
        path = Path(src)
        if src == "world" and not path.exists():
            from tailor.methods.anytext import shipped

            path = shipped.folder() / "anytext.safetensors"
            if not path.is_file():
                raise InputError(
                    "anytext's recognizer=world needs the shipped world AnyText weights, which are missing; pass "
                    "--recognizer FILE (a recognizer trained by `python -m zoo.anytext recognizer`)."
                )
        state = load_tensors(path)
        prefix = "anytext.recognizer."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        load_module_state(self.recognizer, {k: v.float() for k, v in state.items()}, f"anytext recognizer {path}")

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.control, self.embedding, self.recognizer) if m is not None]

    def trainable_parameters(self) -> list[nn.Parameter]:
        mods = [self.control] + ([self.embedding] if self.config.text_embedding else [])
        return [p for m in mods if m is not None for p in m.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ data
    def wrap_dataset(self, dataset, config):
        c = self.config
        return AnyTextDataset(dataset, int(config.seed), c.glyph_scale, c.max_lines, c.masked_image_prob)

    def sample_timesteps(self, batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
        """Uniform (paper), or cubic ``t = (1 - u^3) T`` with ``timesteps=cubic``."""
        if self.config.timesteps != "cubic":
            return super().sample_timesteps(batch_size, num_train_timesteps, generator)
        return cubic_timesteps(batch_size, num_train_timesteps, generator)

    # ------------------------------------------------------------------ the text embedding
    def _line_embeddings(self, lines: torch.Tensor) -> torch.Tensor:
        """(N, 3, LINE_H, LINE_W) line renders -> (N, hidden) token embeddings."""
        rec = self.recognizer
        with torch.no_grad():
            feats = rec.features(lines.to(next(rec.parameters()).device, torch.float32))
        return self.embedding(feats.to(next(self.embedding.parameters()).dtype))

    def encode(self, cond: Conditioning, inputs: dict[str, Any]) -> Conditioning:
        if not self.config.text_embedding:
            return cond
        training = "pixel_values" in inputs
        if training:
            n = [int(k) for k in inputs["anytext_n"]]
            texts = [t.split("\n") if k else [] for t, k in zip(inputs["anytext_texts"], n)]
            flat = torch.cat([inputs["anytext_lines"][i, :k] for i, k in enumerate(n)]) if sum(n) else None
        else:
            words = inputs.get("text")
            if words is None:
                raise InputError("anytext needs its text lines; pass --text WORD --text-box x0,y0,x1,y1.")
            words = [check_text(str(w), "--text") for w in ([words] if isinstance(words, str) else list(words))]
            texts = [words] * cond.batch_size
            flat = line_tensors(words, len(words)).repeat(cond.batch_size, 1, 1, 1)
        if flat is None:
            return cond
        emb = self._line_embeddings(flat)
        b = cond.batch_size
        rows = cond.prompts[:b] if len(cond.prompts) >= b else list(cond.prompts)
        hidden = self._encode_rows(rows, texts, emb, strict=not training)
        if hidden is None:
            return cond
        old = cond.encoder_hidden_states
        hidden = hidden.to(old.dtype)
        cond.encoder_hidden_states = torch.cat([old[:b], hidden]) if cond.cfg else hidden
        return cond

    def _encode_rows(self, prompts: list[str], texts: list[list[str]], emb: torch.Tensor, strict: bool):
        """Re-encode each prompt with its lines' embeddings at its placeholders (in order); None if none has one."""
        c = self.components
        tok, te = c.tokenizer, c.text_encoder
        ids, where, k = [], [], 0
        for r, (prompt, lines) in enumerate(zip(prompts, texts)):
            text, _ = placeholder_prompt(prompt, lines)
            row = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
            pos = [j for j, t in enumerate(row) if t == self._placeholder_id]
            if strict and len(pos) != len(lines) and (pos or self.config.missing_placeholder == "error"):
                what = "no placeholder" if not pos else f"{len(pos)} placeholder(s)"
                raise InputError(
                    f"the prompt {prompt!r} has {what} for {len(lines)} --text line(s); write each line's place as "
                    f'{PLACEHOLDER} or its quoted text, e.g. a sign that says "{lines[0]}".'
                )
            for j, p in enumerate(pos[: len(lines)]):
                where.append((r, p, k + j))
            k += len(lines)
            ids.append(row)
        if not where:
            return None
        ids_t = torch.tensor(ids, device=c.device)
        emb_layer = te.get_input_embeddings()

        def replace(module, args, out):
            out = out.clone()
            for r, p, j in where:
                out[r, p] = emb[j].to(out.dtype)
            return out

        handle = emb_layer.register_forward_hook(replace)
        try:
            return te(ids_t)[0]
        finally:
            handle.remove()

    # ------------------------------------------------------------------ the step
    def _masked_latents(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.components.vae
        with torch.no_grad():
            mean = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean
        return scale_latents(vae.config, mean.float())

    def _sampling_condition(self, state: StepState) -> torch.Tensor:
        """The packed condition of a sampling run (made once per inputs, size, batch, device and dtype)."""
        f, gs = self.components.vae_scale_factor, self.config.glyph_scale
        lat = state.latents
        h, w = lat.shape[-2] * f, lat.shape[-1] * f
        key = (id(state.inputs), h, w, state.cond.batch_size, state.cond.cfg, lat.device, lat.dtype)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        lines = parse_lines(state.inputs.get("text"), state.inputs.get("text_box"), w, h)
        glyphs = torch.from_numpy(glyph_image(lines, h, w, gs))[None, None]
        positions = torch.from_numpy(position_mask(lines, h, w))[None, None]
        masked = self._masked_latents(torch.zeros(1, 3, h, w))
        packed = pack(glyphs, positions, masked.cpu(), f, gs).repeat(state.cond.batch_size, 1, 1, 1)
        packed = state.cond.expand(packed).to(lat.device, lat.dtype)
        self._cache = (key, packed, state.inputs)  # keep the inputs alive so their id stays unique
        return packed

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        f, gs = self.components.vae_scale_factor, self.config.glyph_scale
        if state.training:
            x = state.inputs
            masked = self._masked_latents(x["anytext_masked"])
            packed = pack(x["anytext_glyphs"], x["anytext_positions"], masked, f, gs).to(state.latents)
        else:
            packed = self._sampling_condition(state)
        cn, cond = self.control, state.cond
        dtype = module_dtype(cn)
        down, mid = cn(
            state.latents.to(dtype),
            state.timestep,
            encoder_hidden_states=cond.encoder_hidden_states.to(dtype),
            controlnet_cond=packed.to(dtype),
            conditioning_scale=float(self.config.conditioning_scale),
            return_dict=False,
        )
        return StepExtras(down_block_additional_residuals=list(down), mid_block_additional_residual=mid)

    # ------------------------------------------------------------------ the loss
    def loss(self, pred: torch.Tensor, target: torch.Tensor, state: StepState, weights: torch.Tensor | None):
        per_sample = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
        if weights is not None:
            per_sample = per_sample * weights
        logs = {"mse": float(per_sample.mean().detach())}
        x = state.inputs
        n = x.get("anytext_n")
        if self.config.ocr_loss_weight > 0 and n is not None and int(n.sum()):
            ocr = self.ocr_loss(pred, state)
            logs["ocr"] = float(ocr.mean().detach())
            per_sample = per_sample + ocr
        return per_sample.mean(), logs

    def predicted_x0(self, pred: torch.Tensor, state: StepState) -> torch.Tensor:
        sched = self.components.scheduler
        ab = sched.alphas_cumprod.to(pred.device, torch.float32)[state.timestep.long()].view(-1, 1, 1, 1)
        xt, kind = state.latents.float(), sched.config.get("prediction_type", "epsilon")
        if kind == "epsilon":
            return (xt - (1 - ab).sqrt() * pred.float()) / ab.sqrt()
        if kind == "v_prediction":
            return ab.sqrt() * xt - (1 - ab).sqrt() * pred.float()
        return pred.float()

    def predicted_image(self, pred: torch.Tensor, state: StepState) -> torch.Tensor:
        """The predicted clean image (N, 3, H, W) in [0, 1], decoded with gradient (official ``use_vae_upsample``).
        ``vae_decode`` takes diffusion latents (it unscales them itself)."""
        vae = self.components.vae
        return (vae_decode(vae, self.predicted_x0(pred, state).to(vae.dtype)).float().clamp(-1, 1) + 1) / 2

    def ocr_loss(self, pred: torch.Tensor, state: StepState) -> torch.Tensor:
        """Per sample: ``ocr_loss_weight`` x [alpha-bar_t] x mean over its lines of the MSE between the recognizer
        features of the line cut from the decoded predicted clean image and from the ground truth."""
        x = state.inputs
        image = self.predicted_image(pred, state)
        truth = (x["pixel_values"].float().clamp(-1, 1) + 1) / 2
        n = x["anytext_n"].long()
        rows = torch.repeat_interleave(torch.arange(len(n), device=n.device), n)
        polys = torch.cat([x["anytext_polygons"][i, :k] for i, k in enumerate(n.tolist())])
        rec = self.recognizer
        f_pred = rec.features(crop_lines(image, polys, rows))
        with torch.no_grad():
            f_true = rec.features(crop_lines(truth.to(image.device), polys, rows))
        per_line = (f_pred - f_true).pow(2).mean(dim=(1, 2))
        per_sample = torch.zeros(len(n), device=per_line.device).index_add(0, rows.to(per_line.device), per_line)
        per_sample = per_sample / n.clamp_min(1).to(per_sample)
        if self.config.step_weight:
            ab = self.components.scheduler.alphas_cumprod.to(per_sample.device, torch.float32)
            per_sample = per_sample * ab[state.timestep.long()]
        return per_sample * self.config.ocr_loss_weight

    # ------------------------------------------------------------------ weights and files
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built:
            return dict(self._pending_state or {})
        out = {}
        for group in GROUPS:
            for k, v in getattr(self, group).state_dict().items():
                out[f"{self.name}.{group}.{k}"] = v
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Tailor keys, or the official checkpoint's ``control_model.*`` / ``embedding_manager.*`` (converted once
        the base gives the ControlNet's layout)."""
        if formats.is_official(state):
            self._official = dict(state)
            if not self._built:
                return
            state = formats.from_official(self._official, self, self.components.unet)
            self._official = None
        if not self._built:
            self._pending_state = dict(state)
            return
        for group in GROUPS:
            prefix = f"{self.name}.{group}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if group == "recognizer" and not sub:
                continue  # an official file carries no recognizer: the configured one stays
            module = getattr(self, group)
            own = module.state_dict()
            sub = {k: v.to(own[k].dtype) if k in own else v for k, v in sub.items()}
            load_module_state(module, sub, f"anytext {group} {self.source_file or ''}".strip())

    def metadata(self) -> dict[str, Any]:
        return super().metadata() | {"placeholder": PLACEHOLDER}

    def save_official(self, path: str | Path) -> Path:
        """The ControlNet and embedding projection in the official checkpoint's key layout (safetensors)."""
        path = Path(path)
        save_tensors(path, formats.to_official(self), {"format": "anytext-official"})
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> AnyTextMethod:
        """A tailor file or an official-layout file (``control_model.glyph_block.*`` ...)."""
        meta = read_metadata(path) if Path(path).suffix == ".safetensors" else {}
        tensors = load_tensors(path)
        if formats.is_official(tensors):
            method = cls()
        elif meta.get("format") == "tailor":
            from tailor.core.io import meta_json

            method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)))
        else:
            raise FormatError(f"{path} is neither a tailor anytext file nor an official AnyText checkpoint.")
        method.source_file = str(path)
        method.load_state_dict(tensors)
        return method

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        path = Path(path)
        if path.suffix != ".safetensors":
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return formats.is_official(dict.fromkeys(f.keys()))
        except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
            return False

    def check_inputs(self, inputs: dict[str, Any], width: int, height: int) -> None:
        """The attachment's text lines checked against an output size (one sentence on bad input)."""
        if inputs.get("text") is None:
            raise ConfigError("anytext needs --text WORD --text-box x0,y0,x1,y1 (one box per line).")
        parse_lines(inputs.get("text"), inputs.get("text_box"), width, height)
