"""Generate flags from the registry's :class:`~tailor.core.surface.GenerateInput` declarations, and the attachments
their values name.

One value grammar for every flag (:func:`~tailor.core.surface.parse_weight_spec`): ``PATH[=REF[+REF...]][:weight
[:start:end]]``. ``PATH`` may be a bare shipped name (``world``, ``canny``): a file or folder of that name wins, then
the method-specific shipped weights (``--instantid world``), then the world zoo's adapters (``--control canny:IMG``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor.core.method import Method, MethodSpec, get_spec, registry
from tailor.core.surface import GenerateInput, Input, InputOption, parse_weight_spec
from tailor.errors import ConfigError, IncompatibleError, InputError


@dataclass(frozen=True)
class Flag:
    """A generate flag and the registered methods that declared it (in registry order)."""

    name: str
    decl: GenerateInput
    methods: tuple[str, ...]

    @property
    def dest(self) -> str:
        """The flag's Python name (``--ip-adapter`` -> ``ip_adapter``)."""
        return self.name.lstrip("-").replace("-", "_")

    @property
    def what(self) -> str:
        """The methods it takes, for messages (``controlnet, t2i_adapter or controlnext``)."""
        names = list(self.methods)
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def generate_flags(specs: Iterable[MethodSpec] | None = None) -> dict[str, Flag]:
    """Every declared generate flag (sorted by flag); methods sharing a flag must declare the same input."""
    found: dict[str, Flag] = {}
    for spec in registry().values() if specs is None else specs:
        decl = spec.generate
        if decl is None:
            continue
        if not decl.flag.startswith("--"):
            raise RuntimeError(f"method {spec.name} declares generate flag {decl.flag!r}; flags start with '--'.")
        seen = found.get(decl.flag)
        if seen is None:
            found[decl.flag] = Flag(decl.flag, decl, (spec.name,))
        elif (seen.decl.input, seen.decl.ref_sep) != (decl.input, decl.ref_sep):
            raise RuntimeError(f"methods {seen.methods[0]} and {spec.name} declare {decl.flag} with different inputs.")
        else:
            found[decl.flag] = Flag(decl.flag, seen.decl, (*seen.methods, spec.name))
    return dict(sorted(found.items()))


def shared_inputs(flags: dict[str, Flag]) -> dict[str, Input]:
    """The shared reference flags (``--face``, ``--ip-image``, ``--id-images``) and the input each supplies."""
    return {f.decl.input.flag: f.decl.input for f in flags.values() if f.decl.input and f.decl.input.flag}


def input_options(flags: dict[str, Flag]) -> dict[str, InputOption]:
    """The one-value option flags (``--face-embedder``) of the declared inputs."""
    return {o.flag: o for f in flags.values() if f.decl.input for o in f.decl.input.options}


def flag_of(method_name: str) -> str | None:
    """The generate flag that takes ``method_name``'s files (None: only ``--apply``)."""
    decl = get_spec(method_name).generate
    return decl.flag if decl is not None else None


def _shipped(methods: tuple[str, ...], name: str) -> Path | None:
    """Method-specific shipped weights a bare name stands for (``--instantid world``), or None."""
    from tailor.core.resources import resolve

    for m in methods:
        found = resolve(f"artifact:{m}", name)
        if found is not None:
            return Path(found)
    return None


def load_for(path: str, flag: Flag) -> Method:
    """The method ``path`` names, which must be one of ``flag``'s; one sentence otherwise."""
    from tailor.core.artifacts import load

    p = Path(path)
    if not p.exists() and len(p.parts) == 1 and not p.suffix:
        p = _shipped(flag.methods, path) or p
    if p.is_dir() and not (p / "tailor.json").is_file():  # an official folder a method claims (InstantID's)
        for name in flag.methods:
            cls = get_spec(name).method
            if cls.sniff(p, {}):
                return cls.from_file(p)
    method = load(p)
    if method.name not in flag.methods and p.is_dir():  # e.g. DreamBooth-LoRA's folder also holds lora.safetensors
        own = next((p / f"{m}.safetensors" for m in flag.methods if (p / f"{m}.safetensors").is_file()), None)
        if own is not None:
            method = load(own)
    if method.name not in flag.methods:
        other = flag_of(method.name)
        hint = f"pass it with {other}" if other else "pass it with --apply"
        raise IncompatibleError(f"{flag.name} {path} is a {method.name} file, not a {flag.what} file; {hint}.")
    return method


def load_kind(path: str, name: str) -> Method:
    """The ``name`` method ``path`` names (e.g. a LoRA file for ``tailor lora fuse``); one sentence otherwise."""
    decl = get_spec(name).generate
    flag = decl.flag if decl is not None and decl.flag else "--apply"
    return load_for(path, Flag(flag, decl or GenerateInput(flag, ""), (name,)))


def reference_value(inp: Input, refs: list[str], method: Method, size: tuple[int, int], ready: bool) -> Any:
    """The attachment input ``inp`` from the given reference paths (images loaded, condition maps made)."""
    from tailor.compose.references import condition_image, load_images

    if inp.kind == "paths":
        return refs[0] if len(refs) == 1 else list(refs)
    if inp.kind == "images":
        return load_images(refs)
    if len(refs) != 1:
        raise ConfigError(f"{method.name} takes one condition image; got {len(refs)} ({'+'.join(refs)}).")
    return condition_image(method.config.condition, refs[0], size, ready)


def _pending_refs(flag: Flag, values: list[str], shared: dict[str, list[str]]) -> list[str]:
    """The shared flag's values this flag's attachments take, checked for index pairing."""
    inp = flag.decl.input
    if inp is None or inp.flag is None:
        return []
    pending = list(shared.get(inp.flag) or [])
    if inp.pairing == "index":
        bare = sum(1 for v in values if "=" not in v)
        if bare != len(pending):
            raise ConfigError(
                f"{bare} {flag.name} value(s) without a reference but {len(pending)} {inp.flag} value(s); give one "
                f"{inp.flag} per {flag.name} (paired in order) or write {flag.name} PATH=IMG[:scale]."
            )
    return pending


def split_refs(path: str) -> list[str]:
    """``IMG[+IMG...]`` (a path that exists is one reference even when its name holds a '+')."""
    return [path] if Path(path).exists() else [r for r in path.split("+") if r]


def attach_training_free(pipe, flag: Flag, values: list[str], options: dict[str, Any], size) -> None:
    """``--reference-only IMG[+IMG...][:weight[:start:end]]``: a training-free method built from its config with
    ``options``, its reference input read from the value itself."""
    decl, spec_ = flag.decl, get_spec(flag.methods[0])
    for value in values:
        spec = parse_weight_spec(value, flag.name, None, decl.max_weight)
        method = spec_.method(**options)
        inputs = {}
        if decl.input is not None:
            inputs[decl.input.name] = reference_value(decl.input, split_refs(spec.path), method, size, False)
        pipe.attach(method, weight=spec.scale, start=spec.start, end=spec.end, **inputs)


def attach_flag_values(
    pipe,
    flag: Flag,
    values: list[str],
    shared: dict[str, list[str]] | None = None,
    ready: bool = False,
    size: tuple[int, int] | None = None,
    options: dict[str, Any] | None = None,
    config_options: dict[str, Any] | None = None,
) -> None:
    """Load and attach every value of ``flag`` with its references (from the value or the shared flag), the given
    values of its input's option flags (``options``: flag -> value) and of the flag's declared config options
    (``config_options``: field -> value, ``decl.options``)."""
    decl, inp = flag.decl, flag.decl.input
    size = size or (pipe.components.default_size,) * 2
    if get_spec(flag.methods[0]).method.training_free:
        attach_training_free(pipe, flag, values, dict(config_options or {}), size)
        return
    if config_options and not decl.options:
        raise ConfigError(f"{flag.name} takes no {decl.option_flag(next(iter(config_options)))}; drop it.")
    pending = _pending_refs(flag, values, shared or {})
    paired = iter(pending)
    for value in values:
        spec = parse_weight_spec(value, flag.name, decl.ref_sep if inp else None, decl.max_weight)
        weight, inputs = spec.weight, {}
        if inp is not None:
            refs = list(spec.refs)
            if not refs and inp.pairing == "index" and inp.flag:
                ref = parse_weight_spec(next(paired), inp.flag, None, decl.max_weight)
                refs, weight = [r for r in ref.path.split("+") if r], ref.weight if ref.weight is not None else weight
            elif not refs:
                refs = pending
            if not refs and not inp.optional:
                via = f"{inp.flag} IMG or " if inp.flag else ""
                raise InputError(f"{flag.name} {spec.path} needs reference inputs; pass {via}{flag.name} PATH=IMG.")
            method = load_for(spec.path, flag)
            if refs:
                inputs[inp.name] = reference_value(inp, refs, method, size, ready)
            given = {o: (options or {}).get(o.flag) for o in inp.options}
            inputs.update({o.name: list(v) if o.multiple else v for o, v in given.items() if v})
        else:
            method = load_for(spec.path, flag)
        if config_options:  # the flag's declared options (``<flag>-<field>``) over the file's config
            method.config = method.config.replace(**config_options)
        pipe.attach(method, weight=1.0 if weight is None else weight, start=spec.start, end=spec.end, **inputs)


def apply_values(pipe, values: list[str], size: tuple[int, int] | None = None) -> None:
    """``--apply PATH[=REF...][:weight[:start:end]]``: any trained artifact; ``=REF`` gives the inputs its method
    declares (a control image, reference images)."""
    from tailor.core.artifacts import load

    size = size or (pipe.components.default_size,) * 2
    for value in values:
        spec = parse_weight_spec(value, "--apply", "=")
        method = load(spec.path)
        decl = get_spec(method.name).generate
        inputs = {}
        if spec.refs:
            if decl is None or decl.input is None:
                raise ConfigError(f"--apply {value!r}: {method.name} takes no reference inputs; drop the '=...'.")
            inputs[decl.input.name] = reference_value(decl.input, list(spec.refs), method, size, False)
        pipe.attach(method, weight=spec.scale, start=spec.start, end=spec.end, **inputs)
