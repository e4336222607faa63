"""The method contract, ``MethodSpec`` and the registry.

A method is a subclass of :class:`Method` with a :class:`~tailor.core.config.Config` dataclass. The pipeline and
the trainer call its hooks; a method never forks the denoising loop or the training loop:

``patch(components)``      build the method's modules (sized from the base) and attach them (LoRA layers,
                           attention processors, hypernetworks); ``unpatch()`` undoes it.
``encode(cond, inputs)``   add tokens / embeddings to the prompt conditioning (TI vectors, ID embeddings,
                           image-prompt tokens); ``inputs`` is the attachment's inputs or the training batch.
``step_kwargs(state)``     per-step extras (ControlNet / T2I residuals); the pipeline scales residuals by the
                           attachment weight and honours start/end fractions.
``before_unet(state)``     runs right before each UNet call, after every attachment's scale is set (a reference
                           pass that fills a :class:`~tailor.core.reference_bank.ReferenceBank`).
``set_scale(s)``           for methods that act inside the UNet (LoRA, IP-Adapter, hypernetworks): the pipeline
                           calls it before every UNet call with the attachment weight, or 0 outside start/end.
``trainable_parameters()``, ``sample_timesteps(...)``, ``loss(...)`` (default: weighted epsilon/v MSE),
``state_dict()`` / ``load_state_dict()``, ``save(dir)`` / ``Method.from_file(path)``.

Registration is declarative: ``tailor/methods/<name>/__init__.py`` exports ``SPEC = MethodSpec(...)`` and
:func:`registry` discovers every folder.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from tailor.core.conditioning import Conditioning, StepExtras, StepState
from tailor.core.config import Config
from tailor.core.io import meta_json, read_metadata, save_tensors
from tailor.core.surface import BenchRow, GenerateInput
from tailor.errors import ConfigError, FormatError, IncompatibleError, TailorError

if TYPE_CHECKING:
    from tailor.core.components import Components

ARTIFACT_FORMAT = "tailor"


@dataclass(frozen=True)
class MethodSpec:
    """What a method folder registers: its name, classes, one-line summary and paper, and what it declares for the
    user surface (:mod:`tailor.core.surface`): generation inputs and bench rows."""

    name: str
    method: type[Method]
    config: type[Config]
    summary: str
    paper: str = ""
    builds_on: tuple[str, ...] = field(default_factory=tuple)  # other registered methods it composes
    #: options that make the method quick on the tiny test base (conformance tests)
    test_options: dict[str, Any] = field(default_factory=dict)
    #: components -> attachment inputs a sampling run needs (e.g. a control image); None if none
    example_inputs: Callable[[Any], dict[str, Any]] | None = None
    #: config fields that ``tailor train --token/--class`` set ({"token": "identifier", "class": "class_word"});
    #: a word with no field here goes into the fallback caption ``a {token} {class}`` instead
    subject_fields: dict[str, str] = field(default_factory=dict)
    #: how ``tailor generate`` (and the UI) takes the method's files and reference inputs; None: ``--apply`` only
    generate: GenerateInput | None = None
    #: rows the method adds to the world benches (how they train it)
    bench: tuple[BenchRow, ...] = ()


class Method:
    """Base class of every method. Subclasses set ``name`` and ``config_cls`` (the registry checks both)."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[Config]] = Config
    #: True for a method that acts at sampling time only (reference-only attention): nothing to train or save
    training_free: ClassVar[bool] = False
    #: True when the method changes what the text encoder produces (so text embeddings cannot be cached)
    trains_text_encoder: ClassVar[bool] = False
    #: what the method does with the UNet's text context: "" (nothing, or works on whatever context there is),
    #: "edits" (re-encodes the prompt or edits its word embeddings / reads its words' attention), "replaces" (puts
    #: a context of its own in place of the prompt's, e.g. AnyDoor's ID tokens); the pipeline refuses an "edits"
    #: method beside a "replaces" one (:func:`tailor.core.pipeline.check_text_context`)
    text_context: ClassVar[str] = ""
    #: True for a method that widens the UNet's ``conv_in`` with input channels of its own layout (inpainting,
    #: IC-Light, try-on): two such methods cannot share one UNet, and the pipeline says so
    widens_input: ClassVar[bool] = False
    #: the registered method a composed method is built on (:class:`ComposedMethod`); None for a plain method
    inner: Method | None = None
    #: the file this method was loaded from (``tailor.load`` sets it), named in errors; None when built in memory
    source_file: str | None = None
    #: extra UNet input channels this method's ``step_kwargs`` supplies (it widened ``conv_in`` by that many,
    #: :mod:`tailor.core.input_channels`); the pipeline feeds zeros there outside the method's start/end window
    input_channels: int = 0

    def __init__(self, config: Config | None = None, **overrides: Any):
        if config is None:
            config = self.config_cls.from_dict(overrides, source=f"{self.name} options")
        elif overrides:
            config = config.replace(**overrides)
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"{self.name} needs a {self.config_cls.__name__}, got {type(config).__name__}.")
        self.config = config
        self.components: Components | None = None
        self.scale = 1.0
        self._pending_state: dict[str, torch.Tensor] | None = None
        self._built = False

    # ----------------------------------------------------------------- attach / detach
    def patch(self, components: Components) -> None:
        """Build (once) the method's modules for ``components``, load pending weights, attach them."""
        if self.components is not None and self.components is not components:
            raise RuntimeError(f"{self.name} is already attached to another base; call unpatch() first.")
        self.components = components
        try:
            if not self._built:
                self.build(components)
                self._built = True
                for m in self.modules():
                    m.to(device=components.device)
            if self._pending_state is not None:
                state, self._pending_state = self._pending_state, None
                self.load_state_dict(state)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as e:
            source = self.source_file
            if source is None or isinstance(e, TailorError):
                raise
            self.components = None
            raise FormatError(
                f"{source} describes a {self.name} model this base cannot build or load ({type(e).__name__}: "
                f"{str(e)[:200]}); the file is damaged or made for another base — use one made for this base."
            ) from e
        self.attach(components)

    def unpatch(self) -> None:
        if self.components is not None:
            self.detach(self.components)
        self.components = None

    def build(self, components: Components) -> None:
        """Create the method's own modules, sized from the base (override)."""

    def attach(self, components: Components) -> None:
        """Insert the built modules into the base (processors, layers) (override)."""

    def detach(self, components: Components) -> None:
        """Undo :meth:`attach` (override)."""

    def modules(self) -> list[nn.Module]:
        """The method's own modules (moved to the base's device, put in train mode by the trainer)."""
        return []

    # ----------------------------------------------------------------- hooks
    def encode(self, cond: Conditioning, inputs: dict[str, Any]) -> Conditioning:
        return cond

    def step_kwargs(self, state: StepState) -> StepExtras | None:
        return None

    def before_unet(self, state: StepState) -> None:
        """Called right before each UNet call while the attachment is active, after every attachment's
        ``set_scale`` (override; e.g. run a reference pass)."""

    def set_scale(self, scale: float) -> None:
        self.scale = scale

    def guide(self, state: StepState, uncond: torch.Tensor, text: torch.Tensor, guidance: float):
        """Classifier-free guidance of this step's ``[uncond, text]`` predictions, or None for the plain
        ``uncond + guidance (text - uncond)`` (override; StoryGen's 3-way image / text guidance). The first active
        attachment that returns a tensor decides."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (override to give some weights their own learning rate, e.g. a text
        encoder's); every trainable parameter in exactly one group."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def sample_timesteps(self, batch_size: int, num_train_timesteps: int, generator: torch.Generator) -> torch.Tensor:
        """Training timesteps; uniform by default (T2I-Adapter overrides with cubic sampling). ``tailor train
        --timestep-sampling uniform|cubic`` replaces this for any method."""
        from tailor.core.training.noise import uniform_timesteps

        return uniform_timesteps(batch_size, num_train_timesteps, generator)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, state: StepState, weights: torch.Tensor | None):
        """Weighted MSE between prediction and target; returns ``(loss, logs)``. Override for extra terms."""
        per_sample = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
        if weights is not None:
            per_sample = per_sample * weights
        loss = per_sample.mean()
        return loss, {"mse": float(loss.detach())}

    def training_state(self) -> dict[str, Any]:
        """JSON-able counters beside the weights that a resumed run must restore (e.g. A1111's micro-step count);
        the trainer stores them in each checkpoint's ``trainer.json``."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned (override both together)."""

    # ----------------------------------------------------------------- trainer hooks
    #: the learning rate ``tailor train`` uses when no ``--lr`` is given (a class attribute or a property)
    default_lr: ClassVar[float] = 1e-4

    def wrap_dataset(self, dataset: Any, config: Any) -> Any:
        """The training dataset this method trains on, given the data's dataset and the ``TrainConfig``."""
        return dataset

    def expand_batch(
        self, batch: dict[str, Any], keys: list, positions: list[int]
    ) -> tuple[dict[str, Any], list, list[int]]:
        """A micro-batch as the rows the UNet sees, with their cache keys and positions (DreamBooth: + class rows)."""
        return batch, keys, positions

    # ----------------------------------------------------------------- weights and files
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable/saved tensors, keys prefixed with the method name (DESIGN.md #8)."""
        out = {}
        for i, m in enumerate(self.modules()):
            for k, v in m.state_dict().items():
                out[f"{self.name}.{i}.{k}"] = v
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        mods = self.modules()
        for i, m in enumerate(mods):
            prefix = f"{self.name}.{i}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            load_module_state(m, sub, self.name)

    def metadata(self) -> dict[str, Any]:
        base = getattr(self.components, "source", None) if self.components is not None else None
        return {"format": ARTIFACT_FORMAT, "method": self.name, "config": self.config.to_dict(), "base": base or ""}

    def save(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<name>.safetensors`` with self-describing metadata; returns the file."""
        path = Path(out_dir) / f"{self.name}.safetensors"
        save_tensors(path, self.state_dict(), self.metadata())
        return path

    @classmethod
    def sniff(cls, path: Path, metadata: dict[str, str]) -> bool:
        """Whether ``path`` (a file without tailor metadata; ``metadata`` its safetensors metadata) is a community
        file of this method, which :meth:`from_file` then reads; ``tailor.load`` asks every method (default: no)."""
        return False

    @classmethod
    def from_file(cls, path: str | Path) -> Method:
        """Load a file written by :meth:`save` (weights are applied when the method is patched)."""
        from tailor.core.io import load_tensors

        meta = read_metadata(path)
        config = cls.config_cls.from_dict(meta_json(meta, "config", {}), source=str(path))
        method = cls(config)
        method.load_state_dict(load_tensors(path))
        return method


class ComposedMethod(Method):
    """A method built on another registered method, ``self.inner`` (made through the registry, DESIGN.md #4): its
    modules are the inner method's and its file keys are the inner method's keys under this method's name."""

    inner: Method

    def modules(self) -> list[nn.Module]:
        return self.inner.modules()

    def training_state(self) -> dict[str, Any]:
        return self.inner.training_state()

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.inner.load_training_state(state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{self.name}.{k}": v for k, v in self.inner.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """This method's keys, or the inner method's own."""
        prefix = f"{self.name}."
        self.inner.load_state_dict({k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()})


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict`` with one-sentence errors for missing keys and other base sizes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise FormatError(f"{what} weights lack {len(missing)} tensors (e.g. {missing[0]}); the file is incomplete.")
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise IncompatibleError(
                f"{what} weight {k} has shape {tuple(v.shape)} but this base needs {tuple(own[k].shape)}; "
                f"it was trained for another base model — use a file made for this one."
            )
    module.load_state_dict({k: v for k, v in state.items() if k in own})


# --------------------------------------------------------------------- registry
@cache
def method_names() -> tuple[str, ...]:
    """The ``tailor/methods/<name>`` folders, sorted (found without importing any of them)."""
    import tailor.methods as pkg

    infos = pkgutil.iter_modules(pkg.__path__)
    return tuple(sorted(i.name for i in infos if i.ispkg and not i.name.startswith("_")))


@cache
def _load_spec(name: str) -> MethodSpec:
    """Import one method folder (and the methods it builds on) and check its ``SPEC``."""
    module = importlib.import_module(f"tailor.methods.{name}")
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, MethodSpec):
        raise RuntimeError(f"tailor/methods/{name}/__init__.py must export SPEC = MethodSpec(...)")
    if spec.name != name or spec.method.name != name or spec.method.config_cls is not spec.config:
        raise RuntimeError(f"tailor/methods/{name}: folder, SPEC.name, Method.name and config must agree")
    for dep in spec.builds_on:
        if dep not in method_names():
            raise RuntimeError(f"method {name} builds on unknown method {dep}")
        _load_spec(dep)
    return spec


def registry() -> dict[str, MethodSpec]:
    """Every ``tailor/methods/<name>`` folder's ``SPEC`` (each must export one), by name. This imports every
    method; :func:`get_spec` imports only the one asked for (a training process need not carry the others)."""
    return {name: _load_spec(name) for name in method_names()}


def get_spec(name: str) -> MethodSpec:
    key = name.replace("-", "_")
    if key not in method_names():
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(method_names())}.")
    return _load_spec(key)


def iter_methods() -> Iterable[MethodSpec]:
    return registry().values()
