"""``tailor.load``: find the method a saved artifact names and load it.

An artifact is a file written by ``Method.save`` (safetensors whose metadata names the method) or a training
``--out`` folder (its ``tailor.json`` names the artifact file), or the bare name of an adapter shipped with the world
zoo (``canny``, ``world``, ...: a registered ``artifact`` resource, :mod:`tailor.core.resources`) when no file or
folder of that name exists. Community formats are recognised by the method that owns them: :meth:`Method.sniff`
claims a file without tailor metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

from tailor.core import resources
from tailor.core.io import read_metadata
from tailor.core.method import ARTIFACT_FORMAT, Method, get_spec, method_names, registry
from tailor.errors import FormatError, InputError

#: a training checkpoint (``OUT/checkpoints/step-N``): the method's tensors and the run's record beside them
CHECKPOINT_WEIGHTS, CHECKPOINT_INFO = "method.safetensors", "trainer.json"


def resolve_artifact(path: str | Path) -> Path:
    """The weight file a path names: the file itself, or the artifact recorded in a training folder."""
    path = Path(path)
    if not path.exists():
        path = shipped_name(path)
    if path.is_file():
        return path
    if (path / CHECKPOINT_INFO).is_file() and (path / CHECKPOINT_WEIGHTS).is_file():  # a checkpoints/step-N folder
        return path / CHECKPOINT_WEIGHTS
    manifest = path / "tailor.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text())
            return path / info["artifact"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise FormatError(f"{manifest} is damaged ({e.__class__.__name__}); re-run the training's save.") from e
    found = sorted(p for p in path.glob("*.safetensors") if _is_tailor_file(p))
    diffusers_weights = path / "diffusion_pytorch_model.safetensors"  # a diffusers model folder (sniffed on load)
    if not found and (path / "config.json").is_file() and diffusers_weights.is_file():
        return diffusers_weights
    if len(found) != 1:
        raise InputError(f"{path} holds {len(found)} tailor weight files; pass the file you mean.")
    return found[0]


def shipped_name(path: Path) -> Path:
    """The folder a bare name (no folder, no suffix) names as a registered ``artifact`` resource (a shipped adapter:
    :mod:`tailor.core.resources`); a user path always wins."""
    if len(path.parts) != 1 or path.suffix:
        raise InputError(f"{path} does not exist; pass a training --out folder or a weight file inside it.")
    found = resources.resolve("artifact", str(path))
    if found is None:
        raise InputError(
            f"{str(path)!r} is neither an existing file or folder nor a shipped adapter; pass a path or one of "
            f"{resources.choices('artifact')}."
        )
    return Path(found)


def _is_tailor_file(path: Path) -> bool:
    try:
        return read_metadata(path).get("format") == ARTIFACT_FORMAT
    except FormatError:
        return False


def _named(method: Method, file: Path) -> Method:
    method.source_file = str(file)  # named in errors raised when the weights meet a base (Pipeline.attach)
    if method.inner is not None:  # a composed method builds its inner one from the same file
        _named(method.inner, file)
    return method


def _method_class(name: str, where: str) -> type[Method]:
    """The registered method class ``name`` names; ``where`` ("FILE was written by") opens the error otherwise."""
    if name.replace("-", "_") not in method_names():
        raise FormatError(
            f"{where} method {name!r}, which this tailor does not have (it has {', '.join(method_names())}); update "
            f"tailor or pass another file."
        )
    return get_spec(name).method


def load(path: str | Path) -> Method:
    """Load the method and weights a saved artifact names (weights apply when the method is attached)."""
    file = resolve_artifact(path)
    meta = read_metadata(file) if file.suffix == ".safetensors" else {}
    if meta.get("format") == ARTIFACT_FORMAT and "method" in meta:
        return _named(_method_class(meta["method"], f"{file} was written by").from_file(file), file)
    if file.name == CHECKPOINT_WEIGHTS and (file.parent / CHECKPOINT_INFO).is_file():
        return _named(from_checkpoint(file), file)
    for spec in registry().values():
        if spec.method.sniff(file, meta):
            return _named(spec.method.from_file(file), file)
    raise FormatError(
        f"{file} names no tailor method and matches no known community format; "
        f"pass a file written by `tailor train` or a supported format."
    )


def from_checkpoint(file: Path) -> Method:
    """The method of a training checkpoint's ``method.safetensors``, built from the ``method`` and
    ``method_config`` its ``trainer.json`` records (the file itself carries no method metadata), with the raw
    trained weights of that step (an ``--ema`` run's averaged weights are applied only by the final save)."""
    from tailor.core.io import load_tensors

    info_path = file.parent / CHECKPOINT_INFO
    try:
        info = json.loads(info_path.read_text())
        name, config = str(info["method"]), info.get("method_config") or {}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise FormatError(f"{info_path} is damaged ({e.__class__.__name__}); load another checkpoint.") from e
    cls = _method_class(name, f"{info_path} names")
    method = cls(cls.config_cls.from_dict(config, source=str(info_path)))
    method.load_state_dict(load_tensors(file))
    return method
