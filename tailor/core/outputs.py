"""The guard every writing command puts around its work on ``--out`` (:func:`guarded_out`).

``with guarded_out(train_config, "tailor train lora"): train(...)`` refuses an ``--out`` that is a file, a folder
tailor did not write, or a folder inside the training data (:func:`tailor.core.fsguard.check_out`), then holds the
folder's lock (:func:`tailor.core.locks.output_lock`) for the block. :func:`tailor.core.training.train` holds it
for the whole run, so the Python API is guarded as the CLI is (the lock is re-entrant within a process).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tailor.core.fsguard import check_out
from tailor.core.locks import output_lock


@contextlib.contextmanager
def guarded_out(
    config_or_out: Any, command: str | None = None, inputs: Iterable[str | os.PathLike | None] = ()
) -> Iterator[Path]:
    """Check and lock an output folder for the block; ``config_or_out`` is a path or a config with ``out`` (and
    ``data``, then an input folder too). In a multi-process launch (``accelerate launch``, ``torchrun``) only the
    main process checks and locks: the others share its folder by design."""
    if os.environ.get("RANK", "0") != "0" or os.environ.get("LOCAL_RANK", "0") != "0":
        yield Path(config_or_out if isinstance(config_or_out, str | os.PathLike) else config_or_out.out)
        return
    if isinstance(config_or_out, str | os.PathLike):
        out, inputs = Path(config_or_out), list(inputs)
    else:
        out = Path(config_or_out.out)
        inputs = [*inputs, getattr(config_or_out, "data", None)]
    check_out(out, inputs)
    with output_lock(out, command) as locked:
        yield locked
