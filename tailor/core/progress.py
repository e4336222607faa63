"""Rich progress bars shared by sampling, training and rendering (quiet when not on a terminal in CI),
:func:`quiet_libraries`, which keeps diffusers' and transformers' own bars and warnings out of tailor's output, and
:func:`report`, a machine-readable progress line per step for a program watching a run (the web UI).

``TAILOR_PROGRESS_FILE=PATH`` makes every sampling and training step append one JSON line to ``PATH``:
``{"what": "sampling", "step": 3, "total": 20, "info": "loss 0.1234  2.10 it/s"}`` (``info`` only when known).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def verbose() -> bool:
    """Whether the user asked for the libraries' own output: ``tailor --verbose ...`` or ``TAILOR_VERBOSE=1``."""
    return os.environ.get("TAILOR_VERBOSE", "").strip().lower() not in ("", "0", "false", "no", "off")


def quiet_libraries(loud: bool | None = None) -> None:
    """No "Loading pipeline components" / "Loading weights" bars and no info/warning logs from diffusers and
    transformers (tailor prints its own line per long stage), unless ``loud`` (default: :func:`verbose`).

    The one place that decides it: the CLI, ``make demo`` and the benches call it before loading models."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    loud = verbose() if loud is None else loud
    for lib in (diffusers_logging, transformers_logging):
        if loud:
            lib.enable_progress_bar()
            lib.set_verbosity_warning()
        else:
            lib.disable_progress_bar()
            lib.set_verbosity_error()
    action = "default" if loud else "ignore"
    for module in ("diffusers", "transformers", "huggingface_hub"):
        warnings.filterwarnings(action, module=module)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No diffusers / transformers loading bars for the block (unless :func:`verbose`), their previous state restored
    after: ``load_components`` and the image-encoder loader use it, so the Python API is as quiet as the CLI."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libs = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    if verbose():
        libs = []
    for lib in libs:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libs:
            lib.enable_progress_bar()


def make_progress(*extra_columns) -> Progress:
    return Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
        transient=False,
    )


def report(what: str, step: int, total: int, info: str | None = None) -> None:
    """Append ``{"what", "step", "total"[, "info"]}`` to ``$TAILOR_PROGRESS_FILE`` when it is set (else nothing)."""
    path = os.environ.get("TAILOR_PROGRESS_FILE")
    if not path:
        return
    record = {"what": what, "step": step, "total": total, **({"info": info} if info else {})}
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError:  # a watcher's file is never worth failing the run for
        pass


def track(it: Iterable[T], total: int, description: str) -> Iterator[T]:
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for i, x in enumerate(it):
            yield x
            progress.advance(task)
            report(description, i + 1, total)
