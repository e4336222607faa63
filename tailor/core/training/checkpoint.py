"""Resumable checkpoints: ``<out>/checkpoints/step-000100/`` written atomically, newest ``keep`` kept.

A checkpoint holds what a resumed run needs and nothing else, because every random draw is derived from the
config (see :mod:`tailor.core.training.noise`): the method's tensors (``method.safetensors``), the EMA shadow
(``ema.safetensors``), optimizer / LR-scheduler / grad-scaler state (``optimizer.pt``, plain tensors and
containers that ``torch.load(weights_only=True)`` reads) and ``trainer.json`` (step, config), written last. The
folder is built under a temporary name and renamed into place, so a crash never leaves a half checkpoint behind;
``resume="latest"`` skips incomplete or corrupt ones with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tailor.core.io import atomic_dir, load_tensors, safe_torch_load, save_tensors, write_json
from tailor.errors import FormatError, InputError, TailorError

log = logging.getLogger("tailor")

STEP_DIR = re.compile(r"^step-(\d+)$")
INFO_FILE = "trainer.json"


@dataclass
class Checkpoint:
    path: Path
    step: int
    info: dict[str, Any]
    method_state: dict[str, torch.Tensor]
    optim_state: dict[str, Any]
    ema_state: dict[str, torch.Tensor] | None = field(default=None)


def checkpoints_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished-looking checkpoint folder, oldest first."""
    root = checkpoints_dir(out)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def remove_stale(out: str | Path) -> None:
    """Remove temporary folders that an interrupted save left behind (``.step-*.tmp`` / ``.old-*``)."""
    root = checkpoints_dir(out)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".step-") and p.is_dir():
                log.info("removing unfinished checkpoint folder %s", p)
                shutil.rmtree(p, ignore_errors=True)


def remove_after(out: str | Path, step: int) -> int:
    """Remove checkpoints past ``step`` (an earlier run's, or an abandoned branch's); returns how many."""
    stale = [p for s, p in list_checkpoints(out) if s > step]
    for p in stale:
        discard(p)
    return len(stale)


def save_checkpoint(
    out: str | Path,
    step: int,
    info: dict[str, Any],
    method_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None,
    keep: int,
) -> Path:
    """Write ``step-XXXXXX`` atomically (``trainer.json`` last) and prune to the newest ``keep`` (0 = all)."""
    path = checkpoints_dir(out) / f"step-{step:06d}"
    with atomic_dir(path) as tmp:
        save_tensors(tmp / "method.safetensors", method_state, {"step": str(step)})
        torch.save(optim_state, tmp / "optimizer.pt")
        if ema_state is not None:
            save_tensors(tmp / "ema.safetensors", ema_state)
        write_json(tmp / INFO_FILE, {**info, "step": step})
    if keep > 0:
        for _, old in list_checkpoints(out)[:-keep]:
            discard(old)
    return path


def discard(path: Path) -> None:
    """Remove a checkpoint folder: renamed to a ``.step-*`` temporary name first (one atomic step), so a crash
    during the removal leaves a folder that :func:`remove_stale` cleans up, never a half-deleted ``step-N``."""
    trash = path.with_name(f".{path.name}.trash-{os.getpid()}")
    try:
        os.replace(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a whole checkpoint folder; :class:`FormatError` if it is incomplete or corrupt."""
    path = Path(path)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise FormatError(f"checkpoint {path} has no {INFO_FILE}: it is incomplete; resume from another one.")
    try:
        info = json.loads(info_path.read_text())
        step = int(info["step"])
        method_state = load_tensors(path / "method.safetensors")
        optim_state = safe_torch_load(path / "optimizer.pt")
        ema_path = path / "ema.safetensors"
        ema_state = load_tensors(ema_path, check=False) if ema_path.exists() else None  # holds an int counter
    except (TailorError, json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as e:
        raise FormatError(f"checkpoint {path} is corrupt ({e}); resume from another one.") from e
    if not isinstance(optim_state, dict) or "optimizer" not in optim_state:
        raise FormatError(f"checkpoint {path} has no optimizer state; resume from another one.")
    return Checkpoint(path, step, info, method_state, optim_state, ema_state)


def find_resume(out: str | Path, resume: str) -> Checkpoint:
    """The checkpoint ``resume`` names: ``latest`` (newest complete one in ``out``), a checkpoint or an out folder."""
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise InputError(f"checkpoint {path} does not exist; pass 'latest' or a checkpoints/step-N folder.")
        if (path / INFO_FILE).exists() or STEP_DIR.match(path.name):
            return load_checkpoint(path)
        out = path  # an output folder: its newest checkpoint
    candidates = list_checkpoints(out)
    for _, path in reversed(candidates):
        try:
            return load_checkpoint(path)
        except FormatError as e:
            log.warning("skipping checkpoint: %s", e)
    raise InputError(
        f"nothing to resume: {checkpoints_dir(out)} holds no complete checkpoint; drop --resume to start a new run."
    )
