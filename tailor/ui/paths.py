"""The workspace guard: every path the UI reads, writes or passes to a command stays inside one folder.

A path given in the page is read relative to the workspace; it is refused with one sentence when it is absolute,
starts with ``~``, or resolves (following symbolic links) to a place outside the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path

from tailor.errors import InputError

#: the UI's own records inside the workspace (job logs, progress, uploads being checked)
UI_DIR = ".tailor-ui"


class Workspace:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def escapes(self, value: str) -> bool:
        """Whether ``value``, read as a path relative to the workspace, points outside it."""
        text = str(value).strip()
        if text.startswith("~") or os.path.isabs(text):
            return True
        target = (self.root / text).resolve()  # follows symbolic links, so a link pointing out is caught
        return target != self.root and self.root not in target.parents

    def path(self, value: str, what: str = "path") -> Path:
        """``value`` as an absolute path inside the workspace, or a one-sentence :class:`InputError`."""
        if not str(value).strip():
            raise InputError(f"{what} is empty; give a path inside the workspace {self.root}.")
        if self.escapes(value):
            raise InputError(
                f"{what} {value!r} is outside the workspace {self.root}; pick a file or folder inside it."
            )
        return (self.root / str(value).strip()).resolve()

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    @property
    def ui_dir(self) -> Path:
        return self.root / UI_DIR
