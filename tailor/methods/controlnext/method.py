"""ControlNeXt (Peng et al. 2024): a light convolutional control module whose output is added at one point of the
frozen UNet, with cross normalization instead of zero convs.

At every UNet call ``step_kwargs`` runs the module on the condition image and the timestep; a forward hook on the
UNet's first down block then adds ``cross_normalize(control, h) * scale`` to the block's output ``h`` (after its
downsampler; the skip connections it already emitted stay unchanged), exactly where the official code adds it.
The scale is the attachment weight (0 outside start/end) times ``control_scale``. The paper optionally also trains a
small subset of UNet weights; here only the control module trains (combine with ``lora`` for more).

Files: ``controlnext.safetensors`` (keys ``controlnext.<module key>``; tailor metadata names the condition kind and
carries the module config) and ``controlnext/`` (``save_pretrained``). ``tailor.load`` also reads the official
ControlNeXt module files (keys ``embedding.*``, ``down_res.*``, ``mid_convs.*``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from tailor.conditions.method import ConditionedModelMethod
from tailor.core.conditioning import StepExtras, StepState
from tailor.core.control import drop_captions
from tailor.core.io import load_tensors, meta_json, read_metadata
from tailor.core.method import ARTIFACT_FORMAT
from tailor.core.reference_bank import in_reference_pass, prefix_rows
from tailor.errors import FormatError, IncompatibleError
from tailor.methods.controlnext.config import ControlNeXtConfig
from tailor.methods.controlnext.modules import ControlNeXtModel, cross_normalize

_OFFICIAL_KEYS = ("embedding.0.weight", "mid_convs.1.weight")


class ControlNeXtMethod(ConditionedModelMethod):
    """One ControlNeXt module; attach it with ``image=<condition image>`` (path, PIL, uint8 array or tensor)."""

    name = "controlnext"
    config_cls = ControlNeXtConfig
    default_lr: ClassVar[float] = 1e-5
    model_attr = "model"
    label = "ControlNeXt"
    model: ControlNeXtModel | None

    def __init__(self, config: ControlNeXtConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self._hook = None
        self._control: torch.Tensor | None = None

    # ------------------------------------------------------------------ build / attach
    def build(self, components) -> None:
        unet, f = components.unet, components.vae_scale_factor
        if self.model_config is not None:
            cfg = {k: v for k, v in self.model_config.items() if not k.startswith("_")}
            self.model = ControlNeXtModel.from_config(cfg)
        else:
            self.model = ControlNeXtModel.for_base(unet.config.block_out_channels, f)
        width = int(unet.config.block_out_channels[0])
        if int(self.model.config.output_channels) != width:
            raise IncompatibleError(
                f"ControlNeXt {self.source or '(unsaved)'} outputs {self.model.config.output_channels} channels but "
                f"this base's first block has {width}; it was made for another base model — use one made for it."
            )
        self.model.to(dtype=unet.dtype).eval()

    def attach(self, components) -> None:
        if self._hook is None:  # attaching twice must not add the control twice
            self._hook = components.unet.down_blocks[0].register_forward_hook(self._add_control)

    def detach(self, components) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._control = None

    def set_scale(self, scale: float) -> None:
        self.scale = scale
        self._control = None  # computed afresh by step_kwargs when this call is inside the window

    def _add_control(self, module, args, output):
        if in_reference_pass():  # a reference method's own pass over its reference: no control there
            return None
        control, self._control = self._control, None  # one UNet call consumes it
        if control is None or self.scale == 0:
            return None
        hidden, skips = output
        strength = float(self.scale) * float(self.config.control_scale) * float(self.model.scale)
        n = prefix_rows()  # a fused reference pass runs its rows in front of the sampling rows: they get none
        added = hidden[n:] + cross_normalize(control, hidden[n:]) * strength
        return (torch.cat([hidden[:n], added]) if n else added), skips

    # ------------------------------------------------------------------ training data
    def expand_batch(self, batch, keys, positions):
        return drop_captions(batch, positions, self._seed, self.config.empty_prompts), keys, positions

    # ------------------------------------------------------------------ the step
    def step_kwargs(self, state: StepState) -> StepExtras | None:
        image = self.condition_image(state)
        if image is None:
            return None
        if not state.training:
            image = self.condition_batch(image, state)
        m = self.model
        self._control = m(image.to(device=m.device, dtype=m.dtype), state.timestep)
        return None

    # ------------------------------------------------------------------ files
    @classmethod
    def from_file(cls, path: str | Path) -> ControlNeXtMethod:
        meta = read_metadata(path)
        tensors = load_tensors(path)
        if meta.get("format") == ARTIFACT_FORMAT:
            method = cls(cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path)))
            method.model_config = meta_json(meta, "model_config")
        elif all(k in tensors for k in _OFFICIAL_KEYS):
            method = cls()
            try:
                method.model_config = official_config(tensors)
            except (KeyError, IndexError, ValueError) as e:  # a key missing, a tensor of too few dimensions
                raise FormatError(
                    f"{path} looks like an official ControlNeXt module but its tensors do not fit one "
                    f"({type(e).__name__}: {e}); the file is damaged — re-download it."
                ) from e
        else:
            raise FormatError(f"{path} is neither a tailor ControlNeXt file nor an official ControlNeXt module.")
        method.source = str(path)
        method.load_state_dict(tensors)
        return method

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        """Claim official ControlNeXt module files (``embedding.0.weight`` + ``mid_convs.1.weight``)."""
        if Path(path).suffix != ".safetensors":
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
        except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
            return False
        return all(k in keys for k in _OFFICIAL_KEYS)


def official_config(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The module config an official-layout ControlNeXt state dict implies (stages, widths, output channels; the
    release's SD1.5 files give the official widths, files made here for other bases their scaled ones)."""
    stages = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("down_res.")})
    outs = [int(tensors[f"down_res.{i}.conv1.weight"].shape[0]) for i in stages]
    ins = [int(tensors[f"down_res.{i}.conv1.weight"].shape[1]) for i in stages]
    groups = [4, 8, 8, 8][: len(stages)]
    return dict(
        in_channels=ins,
        out_channels=outs,
        groups=groups,
        output_channels=int(tensors["mid_convs.1.weight"].shape[0]),
        time_embed_dim=int(tensors["time_embedding.linear_2.weight"].shape[0]),
        embedding_channels=[int(tensors[f"embedding.{i}.weight"].shape[0]) for i in (0, 6)],
        time_proj_dim=int(tensors["time_embedding.linear_1.weight"].shape[1]),
    )
