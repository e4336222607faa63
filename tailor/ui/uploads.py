"""Uploads: a file from the page is checked as the CLI would read it, and only then written into the workspace.

Images go through :func:`tailor.core.images.load_image` (the loader every command uses: a broken, empty, huge or
non-image file gets its one-sentence error, naming the uploaded name), weight files through the safetensors header
reader (no pickle is ever loaded), captions must be UTF-8 text. A refused upload leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from tailor.errors import InputError, TailorError
from tailor.ui.paths import Workspace

MAX_BYTES = 64 * 1024 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
OTHER_SUFFIXES = {".safetensors", ".txt", ".json", ".yaml"}


def too_large(name: str) -> InputError:
    return InputError(f"{name} is larger than {MAX_BYTES >> 20} MB; downscale it or copy it into the workspace.")


def _check(path: Path, name: str) -> None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from tailor.core.images import load_image

        load_image(path)
    elif suffix == ".safetensors":
        from tailor.core.io import read_metadata

        read_metadata(path)
    else:
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{name} is not UTF-8 text; save it as UTF-8.") from e


def save(ws: Workspace, folder: str, name: str, data: bytes) -> str:
    """Check ``data`` (the file ``name``) and write it to ``folder/name`` in the workspace; the relative path."""
    name = str(name).strip()
    if not name or name.startswith(".") or not re.fullmatch(r"[\w.\- ()+]+", name):
        raise InputError(f"upload name {name!r} is not a plain file name; rename the file (letters, digits, .-_).")
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES | OTHER_SUFFIXES:
        allowed = ", ".join(sorted(IMAGE_SUFFIXES | OTHER_SUFFIXES))
        raise InputError(f"{name}: tailor's UI takes {allowed} files; convert it to one of them.")
    if len(data) > MAX_BYTES:
        raise too_large(name)
    dest_dir = ws.path(folder, "upload folder")
    dest = ws.path(f"{ws.relative(dest_dir)}/{name}", "upload")
    ws.ui_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=ws.ui_dir))
    try:
        tmp = tmp_dir / name
        tmp.write_bytes(data)
        try:
            _check(tmp, name)
        except TailorError as e:  # the loader's sentence, naming the uploaded file instead of the check copy
            raise type(e)(str(e).replace(str(tmp), name)) from None
        dest_dir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ws.relative(dest)
