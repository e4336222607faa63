"""Rich progress bars shared by sampling, training and rendering (quiet when not on a terminal in CI)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def make_progress(*extra_columns) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *extra_columns,
        transient=False,
    )


def track(it: Iterable[T], total: int, description: str) -> Iterator[T]:
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for x in it:
            yield x
            progress.advance(task)
