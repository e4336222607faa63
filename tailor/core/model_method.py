"""The base of methods that wrap one diffusers/torch model fed a condition image (ControlNet, T2I-Adapter,
ControlNeXt): the model's weights, files and diffusers folders, so each method keeps only its own step.

File keys are the model's own keys under the method name (DESIGN.md #8); weights loaded before the method is built
wait as pending state. The metadata carry the condition kind and the model config (so a file rebuilds its model
without the base), and ``save`` also writes ``<out>/<name>/`` with the model's ``save_pretrained``, the folder the
ecosystem's ``from_pretrained`` loads. ``from_diffusers_folder`` reads such folders back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tailor.core.conditioning import StepState
from tailor.core.config import Config
from tailor.core.control import condition_tensor, control_batch
from tailor.core.io import atomic_dir, load_tensors, read_metadata
from tailor.core.method import ARTIFACT_FORMAT, Method, load_module_state
from tailor.errors import FormatError

#: the weight file of a diffusers model folder
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"


class SingleModelMethod(Method):
    """A method whose weights are one model, held in the attribute named by ``model_attr``."""

    #: the attribute holding the model (None until built)
    model_attr: ClassVar[str] = "model"
    #: the model's name in messages ("ControlNet")
    label: ClassVar[str] = ""
    #: the ``_class_name`` in the model's diffusers ``config.json`` ("" = no diffusers folders)
    diffusers_class: ClassVar[str] = ""

    def __init__(self, config: Config | None = None, **overrides):
        super().__init__(config, **overrides)
        setattr(self, self.model_attr, None)
        self.model_config: dict[str, Any] | None = None  # from a loaded file; None = derive from the base
        self.source = ""  # the file this method was loaded from (for error messages)
        self._seed = 0  # the training run's seed (for per-sample draws such as caption dropout)
        self._condition_cache: tuple | None = None
        self._batch_cache: tuple | None = None

    @property
    def wrapped_model(self) -> nn.Module | None:
        return getattr(self, self.model_attr)

    def modules(self) -> list[nn.Module]:
        model = self.wrapped_model
        return [] if model is None else [model]

    # ------------------------------------------------------------------ the condition image
    def batch_condition(self, batch: dict[str, Any]) -> torch.Tensor:
        """The condition of a training batch that carries none (e.g. a validation set): made from its images by a
        subclass that knows the condition kinds (:class:`tailor.conditions.method.ConditionedModelMethod`)."""
        raise FormatError(
            f"the training batch has no condition image for {self.label or self.name}; wrap the data so that every "
            f"item carries one."
        )

    def condition_image(self, state: StepState) -> torch.Tensor | None:
        """The condition for this UNet call: the batch's (training) or the attachment's ``image`` at the latents'
        pixel size (sampling; converted once per image and size), not yet spread over the batch; None = no image."""
        if state.training:
            cond = state.inputs.get("condition")
            return self.batch_condition(state.inputs) if cond is None else cond
        src = state.inputs.get("image", state.inputs.get("condition"))
        if src is None:
            return None
        f = self.components.vae_scale_factor
        h, w = state.latents.shape[-2] * f, state.latents.shape[-1] * f
        key = (id(src), h, w)
        if self._condition_cache is None or self._condition_cache[0] != key:
            # keep src alive so its id stays unique
            self._condition_cache = (key, condition_tensor(src, h, w, f), src)
        return self._condition_cache[1]

    def condition_batch(self, image: torch.Tensor, state: StepState, cond_only: bool = False) -> torch.Tensor:
        """``control_batch`` of this call's condition; when sampling, made once per image, batch, CFG layout, device
        and dtype and reused at every step (the condition does not change during a run, as in diffusers' pipelines,
        which prepare it once); in training the batch's own condition every step."""
        if state.training:
            return control_batch(image, state, cond_only=cond_only)
        lat = state.latents
        key = (id(image), state.cond.batch_size, state.cond.cfg, cond_only, lat.device, lat.dtype)
        if self._batch_cache is None or self._batch_cache[0] != key:
            # keep image alive so its id stays unique
            self._batch_cache = (key, control_batch(image, state, cond_only=cond_only), image)
        return self._batch_cache[1]

    # ------------------------------------------------------------------ weights and files
    def state_dict(self) -> dict[str, torch.Tensor]:
        model = self.wrapped_model
        if model is None:
            return dict(self._pending_state or {})
        return {f"{self.name}.{k}": v for k, v in model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Tailor keys or the model's plain keys; kept pending until the method is built."""
        prefix = f"{self.name}."
        if not any(k.startswith(prefix) for k in state):  # the model's own (diffusers / official) keys
            state = {prefix + k: v for k, v in state.items()}
        if not self._built:
            self._pending_state = dict(state)
            return
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        load_module_state(self.wrapped_model, sub, f"{self.label} {self.source}".strip())

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["condition"] = self.config.condition
        model = self.wrapped_model
        if model is not None:
            meta["model_config"] = {k: v for k, v in model.config.items() if not k.startswith("_")}
        return meta

    def save(self, out_dir: str | Path) -> Path:
        """``<name>.safetensors`` (tailor metadata) and ``<name>/`` (the model's ``save_pretrained`` folder)."""
        path = super().save(out_dir)
        model = self.wrapped_model
        if model is not None:
            with atomic_dir(Path(out_dir) / self.name) as tmp:
                model.save_pretrained(tmp)
        return path

    # ------------------------------------------------------------------ diffusers folders
    @classmethod
    def folder_config(cls, folder: Path, model_config: dict[str, Any]) -> Config:
        """The method config for a diffusers folder of the model (override: what the model config implies)."""
        return cls.config_cls()

    @classmethod
    def from_diffusers_folder(cls, path: str | Path) -> SingleModelMethod | None:
        """The method for a diffusers folder of the model (given the folder or a file in it); None when ``path`` is
        not in one, or when the folder's weight file is a tailor file (read that as one)."""
        folder = diffusers_folder(path, cls.diffusers_class)
        if folder is None:
            return None
        weights = folder / DIFFUSERS_WEIGHTS
        if not weights.is_file():
            raise FormatError(f"{folder} has no {DIFFUSERS_WEIGHTS}; re-save the {cls.label}.")
        if read_metadata(weights).get("format") == ARTIFACT_FORMAT:
            return None
        model_config = read_config(folder, cls.label)
        method = cls(cls.folder_config(folder, model_config))
        method.model_config, method.source = model_config, str(folder)
        method.load_state_dict(load_tensors(weights))
        return method


def diffusers_folder(path: str | Path, class_name: str) -> Path | None:
    """The diffusers folder of a ``class_name`` model (given the folder or a file in it), else None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    try:
        found = json.loads((folder / "config.json").read_text()).get("_class_name", "")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return folder if class_name and found == class_name else None


def read_config(folder: Path, label: str) -> dict[str, Any]:
    """A diffusers folder's ``config.json``."""
    try:
        return json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise FormatError(f"{folder / 'config.json'} is not a readable {label} config ({e}).") from e
