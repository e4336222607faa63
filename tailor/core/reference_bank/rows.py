"""Which UNet call is running and which rows it holds: the context the reference bank's hooks read.

A reference pass (:func:`writing`) marks its call as not a sampling call (:func:`in_reference_pass`) and says which
sampling row each of its rows stands for (:func:`pass_rows`); a fused call (:func:`fused_rows`) runs ``n`` reference
rows in front of the sampling batch (:func:`prefix_rows`); a guidance hook's call on some rows of the batch says which
(:func:`batch_rows`). Banks written with fewer rows than the reading call are repeated in CFG order
(:func:`match_rows`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch

_PASS: contextvars.ContextVar[bool] = contextvars.ContextVar("tailor_reference_pass", default=False)
#: during a reference pass (or a fused call): which row of the sampling batch each UNet row stands for (or None)
_ROWS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("tailor_reference_rows", default=None)
#: during a fused call: how many reference rows run in front of the sampling batch
_PREFIX: contextvars.ContextVar[int] = contextvars.ContextVar("tailor_reference_prefix", default=0)
#: during a reference pass: the banks writing in it
_WRITING: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("tailor_banks", default=())


class _PassDone(Exception):
    """Raised inside a reference pass once every writing bank has what it reads: the rest of the UNet is skipped."""


def in_reference_pass() -> bool:
    """True while :func:`reference_pass` runs a UNet (hooks that record or read sampling calls skip it)."""
    return _PASS.get()


def current_rows() -> torch.Tensor | None:
    """The sampling batch's row each row of the UNet call now running stands for (None: the batch itself)."""
    return _ROWS.get()


def pass_rows(x: torch.Tensor) -> torch.Tensor:
    """Per-row inputs of the sampling batch (image-prompt tokens) as the rows of the reference pass now running
    (unchanged outside a pass, or when the pass did not say which rows it stands for)."""
    rows = _ROWS.get()
    return x if rows is None else x[rows.to(x.device)]


def prefix_rows() -> int:
    """How many reference rows run in front of the sampling batch in the UNet call now running (0: none)."""
    return _PREFIX.get()


def match_rows(x: torch.Tensor, rows: int, what: str = "reference features") -> torch.Tensor:
    """``x`` repeated to ``rows`` rows (``[a, b] -> [a, b, a, b]``: the CFG halves stay in order)."""
    if x.shape[0] == rows:
        return x
    if rows % x.shape[0]:
        raise RuntimeError(f"{what} have {x.shape[0]} rows but the UNet batch has {rows}; run the reference pass "
                           f"for this batch.")  # fmt: skip
    return x.repeat(rows // x.shape[0], *([1] * (x.ndim - 1)))


def maybe_stop() -> None:
    """Stop the pass once every bank writing in it is done (the UNet's remaining layers would change nothing)."""
    banks = _WRITING.get()
    if banks and all(b.mode == "done" for b in banks):
        raise _PassDone


@contextlib.contextmanager
def writing(banks: tuple[Any, ...], rows: torch.Tensor | None) -> Iterator[None]:
    """The context of a reference pass: ``banks`` write, ``rows`` as :func:`pass_rows`; a :func:`maybe_stop` inside
    ends the pass quietly."""
    tokens = _PASS.set(True), _ROWS.set(rows), _WRITING.set(tuple(banks))
    try:
        yield
    except _PassDone:
        pass
    finally:
        _PASS.reset(tokens[0])
        _ROWS.reset(tokens[1])
        _WRITING.reset(tokens[2])


@contextlib.contextmanager
def fused_rows(prefix: int, rows: torch.Tensor) -> Iterator[None]:
    """The context of a fused call: ``prefix`` reference rows in front, ``rows`` as :func:`pass_rows`."""
    tokens = _PREFIX.set(prefix), _ROWS.set(rows)
    try:
        yield
    finally:
        _PREFIX.reset(tokens[0])
        _ROWS.reset(tokens[1])


@contextlib.contextmanager
def batch_rows(rows: torch.Tensor) -> Iterator[None]:
    """Run a UNet call on some rows of the sampling batch (a guidance hook's extra row, e.g. StoryGen's
    unconditional one): per-row inputs of other methods (image-prompt tokens) follow them (:func:`pass_rows`)."""
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)
