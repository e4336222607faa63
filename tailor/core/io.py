"""Files: safetensors with self-describing metadata, safe legacy loading, atomic writes.

Conventions (DESIGN.md #6, #11): every artifact tailor writes is a ``.safetensors`` file whose
metadata names the ``method``, its ``config`` (JSON) and the ``base`` it was trained on, so
``tailor.load(path)`` can find the method. Pickled ``.pt/.bin/.ckpt`` files are read only through
``torch.load(weights_only=True)``, which refuses any pickle that would run code. Writes go to a
temporary name first and are renamed into place, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tailor.core.fsguard import dir_mode, file_mode
from tailor.errors import FormatError, InputError, UnsafeFileError

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, file_mode())  # mkstemp makes 0600; the file gets the user's umask like any other
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # again: a writer may have replaced the file (safetensors writes its own 0600 temp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it onto ``path`` only if the block succeeds.

    An existing ``path`` is replaced: it is moved aside first and removed after the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(dir_mode())  # mkdtemp makes 0700
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None):
    """Save ``tensors`` as safetensors; metadata values that are not strings are stored as JSON."""
    meta = {
        k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in (metadata or {}).items()
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path} is not a readable .safetensors file ({e}); re-export or re-download it.") from e


def load_tensors(path: str | os.PathLike, check: bool = True) -> dict[str, torch.Tensor]:
    """Load a weight file: safetensors directly, pickles only without code execution.

    With ``check`` (the default) a flat mapping is refused if it holds non-float tensors or NaN / inf values;
    callers that read integer buffers on purpose (model zoo files) pass ``check=False``."""
    path = _existing(path)
    if path.suffix in PICKLE_SUFFIXES:
        data = safe_torch_load(path)
    else:
        try:
            data = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise FormatError(f"{path} is not a readable .safetensors file ({e}); re-export or re-download it.") from e
    if check and isinstance(data, dict):
        check_weights(data, path)
    return data


def check_weights(tensors: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse weights that would load but poison every output: non-float tensors (integer scalars such as a kohya
    ``alpha`` pass) and NaN / inf values."""
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            continue
        if not value.is_floating_point() and value.numel() != 1:
            raise FormatError(
                f"{path}: tensor {key} has dtype {str(value.dtype).removeprefix('torch.')}, not a float type; the "
                f"file is not a weight file tailor can use — re-export it."
            )
        if not bool(torch.isfinite(value).all()):
            raise FormatError(
                f"{path}: tensor {key} holds NaN or infinite values (the training diverged or the file is "
                f"damaged); use an earlier checkpoint or re-export it."
            )


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; a pickle that runs code is refused."""
    path = _existing(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            raise UnsafeFileError(
                f"{path} is a pickle that needs code execution to load; tailor refuses it — convert it to "
                f".safetensors in a trusted environment."
            ) from e
        raise FormatError(f"{path} is not a readable PyTorch file ({type(e).__name__}); re-export it.") from e


def check_pickle(path: str | os.PathLike) -> None:
    """Refuse a pickle that would need code execution, without loading its tensors (for loaders outside tailor,
    such as diffusers' single-file loader, whose ``torch.load`` settings tailor does not control)."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    path = _existing(path)
    try:
        unsafe = get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not torch's zip container (a legacy pickle, or not a pickle at all): load it safely
        safe_torch_load(path)
        return
    if unsafe:
        raise UnsafeFileError(
            f"{path} is a pickle that needs code execution to load ({', '.join(unsafe[:3])}); tailor refuses it — "
            f"convert it to .safetensors in a trusted environment."
        )


def meta_json(meta: dict[str, str], key: str, default: Any = None) -> Any:
    """Decode one JSON-encoded metadata value."""
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        return meta[key]


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a weight file; pass the file inside it.")
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty (0 bytes); re-export or re-download it.")
    return path
