"""Control-GPT (Zhang et al. 2023, "Controllable Text-to-Image Generation with GPT-4"): a planner turns the prompt
into a layout program, whose sketch drives a ControlNet that also reads grounding tokens {object name, position}.

- Planner (:mod:`tailor.synth.plan`): the built-in rule planner over the world's relation grammar, or any language
  model behind an OpenAI-compatible chat-completions URL (``planner_url``); a user's ``--layout FILE.json`` skips
  planning. Every program is validated the same way (boxes inside the image and not empty, known classes, at most
  ``max_objects``, relations holding on the boxes).
- Sketch: each object's outline from the world's shape vocabulary drawn in its box (the paper's TikZ sketch; in
  training the objects' true outlines, as the paper draws instance-mask polygons).
- ControlNet: diffusers' ``ControlNetModel.from_unet`` fed the sketch; its cross-attention context is the prompt's
  embeddings followed by ``max_objects`` grounding tokens (:class:`~.modules.GroundingNet`: the object name's pooled
  text-encoder embedding + Fourier features of its box -> MLP; padding slots get learned null features). The UNet
  keeps the plain prompt; the ControlNet's residuals carry the layout, as in the paper (Fig. 2). Training: eps/v
  MSE on the ControlNet and the grounding MLP (UNet and text encoder frozen), 50% empty captions.

Files: ``controlgpt.safetensors`` with ``controlgpt.control.<diffusers ControlNet key>`` and
``controlgpt.grounding.*``; the metadata carry the config and the ControlNet's model config.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.components import module_dtype
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.control import control_batch, drop_captions, swap_captions
from tailor.core.control_groups import GroupedControlMethod
from tailor.errors import ConfigError
from tailor.methods.controlgpt.config import ControlGPTConfig
from tailor.methods.controlgpt.data import STREAM_PLAIN, ControlGPTDataset
from tailor.methods.controlgpt.modules import GroundingNet

GROUPS = ("control", "grounding")
PLANNER_KEY_ENV = "TAILOR_PLANNER_API_KEY"  # a bearer key for --planner-url, read from the environment only


class ControlGPTMethod(GroupedControlMethod):
    """Attach with ``layout=FILE.json or dict`` or ``plan=PROMPT`` (optionally ``planner_url``, ``planner_model``);
    with neither, each prompt is planned by the rule planner."""

    name = "controlgpt"
    config_cls = ControlGPTConfig
    default_lr: ClassVar[float] = 1e-4
    groups: ClassVar[tuple[str, ...]] = GROUPS

    def __init__(self, config: ControlGPTConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.grounding: GroundingNet | None = None
        self._names: dict[str, torch.Tensor] = {}
        self._seed = 0
        self._programs: tuple | None = None
        self._sampling: tuple | None = None

    # ------------------------------------------------------------------ build
    def build(self, components) -> None:
        self.build_control(components)
        c, unet = self.config, components.unet
        text_dim = int(components.text_encoder.config.hidden_size)
        cad = int(unet.config.cross_attention_dim)
        self.grounding = GroundingNet(text_dim, cad, c.fourier_freqs, c.grounding_width).to(unet.dtype)
        self._names = {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        mods = [self.control] + ([self.grounding] if self.config.grounding else [])
        return [p for m in mods if m is not None for p in m.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ data
    def wrap_dataset(self, dataset, config):
        self._seed = int(config.seed)
        c = self.config
        return ControlGPTDataset(dataset, self._seed, c.max_objects, c.pattern_dropout)

    def expand_batch(self, batch, keys, positions):
        """ControlNet's empty prompts (``empty_prompts``), else the class-only caption with probability
        ``plain_prompts``, drawn per sample position (resumable); the grounding tokens stay."""
        out = drop_captions(batch, positions, self._seed, self.config.empty_prompts)
        out = swap_captions(out, positions, self._seed, STREAM_PLAIN, self.config.plain_prompts,
                            "controlgpt_plain_caption")  # fmt: skip
        return out, keys, positions

    # ------------------------------------------------------------------ grounding tokens
    def name_embeddings(self, names: list[str]) -> torch.Tensor:
        """(len(names), text_dim): each name's mean token embedding in the frozen text encoder's embedding table.

        GLIGEN feeds the phrase's pooled text-encoder output; the world text encoder's outputs hardly separate
        colours (hidden states of "red star" / "green star" differ by 0.18 at norm 5.3, the token embeddings by 1.8
        at norm 1.1), so the names are read from its input embeddings, which do (cached per name)."""
        c = self.components
        todo = sorted({n for n in names if n not in self._names})
        if todo:
            table = c.text_encoder.get_input_embeddings()
            special = {c.tokenizer.bos_token_id, c.tokenizer.eos_token_id, c.tokenizer.pad_token_id}
            with torch.no_grad():
                for n in todo:
                    ids = [t for t in c.tokenizer(n).input_ids if t not in special] or [c.tokenizer.eos_token_id]
                    emb = table(torch.tensor(ids, device=table.weight.device))
                    self._names[n] = emb.float().mean(0).cpu()
        return torch.stack([self._names[n] for n in names])

    def grounding_tokens(self, rows: list[list[str]], boxes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, max_objects, cad) tokens of each row's names (in order) with their boxes (B, max_objects, 4)."""
        n = self.config.max_objects
        dim = int(self.components.text_encoder.config.hidden_size)
        flat = [name for row in rows for name in row[:n]]
        names = torch.zeros(len(rows), n, dim)
        if flat:
            emb, k = self.name_embeddings(flat), 0
            for r, row in enumerate(rows):
                for j in range(min(len(row), n)):
                    names[r, j] = emb[k]
                    k += 1
        dev = next(self.grounding.parameters()).device
        return self.grounding(names.to(dev), boxes.to(dev), mask.to(dev))

    # ------------------------------------------------------------------ sampling inputs -> programs
    def programs(self, inputs: dict[str, Any], prompts: list[str], size: int) -> list[dict[str, Any]]:
        """One validated layout program per prompt: the attachment's ``layout`` or ``plan``, else each prompt planned
        by the rule planner (cached per inputs, prompts and size)."""
        from tailor.synth.plan import get_planner, read_layout, validate_layout

        key = (id(inputs), tuple(prompts), size)
        if self._programs is not None and self._programs[0] == key:
            return self._programs[1]
        layout, plan = inputs.get("layout"), inputs.get("plan")
        if isinstance(layout, (list, tuple)):
            if len(layout) != 1:
                raise ConfigError(f"controlgpt takes one --layout file; got {len(layout)}.")
            layout = layout[0]
        if layout is not None and plan is not None:
            raise ConfigError("--layout gives the layout and --plan asks a planner for one; pass only one of them.")
        if layout is not None:
            program = validate_layout(layout, "the layout", size) if isinstance(layout, dict) else read_layout(
                layout, size)  # fmt: skip
            found = [program] * len(prompts)
        else:
            planner = get_planner(inputs.get("planner_url"), inputs.get("planner_model") or "gpt-4",
                                  os.environ.get(PLANNER_KEY_ENV))  # fmt: skip
            texts = [str(plan)] * len(prompts) if plan is not None else prompts
            cache: dict[str, dict[str, Any]] = {}
            for t in texts:
                if t not in cache:
                    cache[t] = planner.plan(t, size=size)
            found = [cache[t] for t in texts]
        for p in found:
            if len(p["objects"]) > self.config.max_objects:
                raise ConfigError(
                    f"the layout has {len(p['objects'])} objects; this controlgpt model takes at most "
                    f"{self.config.max_objects}."
                )
        self._programs = (key, found, inputs)  # keep the inputs alive so their id stays unique
        return found

    def _sampling_condition(self, state: StepState) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(sketch batch, grounding tokens or None), both over the UNet batch (both CFG halves), made once per run."""
        from tailor.synth.plan import phrase, sketch_image

        f, lat, cond = self.components.vae_scale_factor, state.latents, state.cond
        h, w = lat.shape[-2] * f, lat.shape[-1] * f
        if h != w:
            raise ConfigError(f"controlgpt draws square layouts; give --width equal to --height (got {w}x{h}).")
        b = cond.batch_size
        prompts = list(cond.prompts) if len(cond.prompts) == b else [""] * b
        key = (id(state.inputs), tuple(prompts), h, cond.cfg, lat.device, lat.dtype)
        if self._sampling is not None and self._sampling[0] == key:
            return self._sampling[1]
        progs = self.programs(state.inputs, prompts, h)
        sketch = torch.stack([torch.from_numpy(sketch_image(p["objects"], h)).permute(2, 0, 1).float() / 255
                              for p in progs])  # fmt: skip
        sketch = control_batch(sketch, state)
        tokens = None
        if self.config.grounding:
            n = self.config.max_objects
            boxes, mask = torch.zeros(b, n, 4), torch.zeros(b, n)
            for r, p in enumerate(progs):
                for j, o in enumerate(p["objects"][:n]):
                    boxes[r, j], mask[r, j] = torch.tensor(o["box"]) / h, 1
            with torch.no_grad():
                tokens = cond.expand(self.grounding_tokens([[phrase(o) for o in p["objects"]] for p in progs], boxes,
                                                           mask))  # fmt: skip
                if cond.cfg and self.config.grounding_guidance:  # the unconditional half: no objects named
                    tokens[:b] = self.grounding_tokens([[] for _ in progs], boxes, torch.zeros_like(mask))
        self._sampling = (key, (sketch, tokens), state.inputs)
        return sketch, tokens

    # ------------------------------------------------------------------ the step
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        cond = state.cond
        if state.training:
            x = state.inputs
            sketch = x["controlgpt_sketch"].to(state.latents)
            tokens = None
            if self.config.grounding:
                rows = [s.split("\n") if s else [] for s in x["controlgpt_names"]]
                tokens = cond.expand(self.grounding_tokens(rows, x["controlgpt_boxes"], x["controlgpt_mask"]))
        else:
            sketch, tokens = self._sampling_condition(state)  # tokens over both CFG halves
        hidden = cond.encoder_hidden_states
        if tokens is not None:
            hidden = torch.cat([hidden, tokens.to(hidden.dtype)], dim=1)
        cn = self.control
        dtype = module_dtype(cn)
        down, mid = cn(
            state.latents.to(dtype),
            state.timestep,
            encoder_hidden_states=hidden.to(dtype),
            controlnet_cond=sketch.to(dtype),
            conditioning_scale=float(self.config.conditioning_scale),
            return_dict=False,
        )
        return StepExtras(down_block_additional_residuals=list(down), mid_block_additional_residual=mid)
