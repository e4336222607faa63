"""The file system at the edge: OS errors as one sentence, output folders tailor may write, file modes.

* :func:`describe_oserror` turns any ``OSError`` on a path into one sentence naming the path and the fix, by errno;
  the CLI's ``main`` sends every uncaught ``OSError`` through it (:func:`from_oserror`), exit 2.
* :func:`check_out` refuses an ``--out`` that is a file, a folder tailor did not make (one that holds files but
  none of tailor's own records), or a folder equal to / inside an input folder.
* :func:`file_mode` / :func:`dir_mode`: the modes a new file / folder gets under the user's umask (``mkstemp`` and
  ``mkdtemp`` create 0600 / 0700, which atomic writes then fix).
* :data:`NOT_DATA`: the files tailor writes for a person in an image folder, which no image-folder reader counts.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from tailor.errors import EnvironmentFault

#: files tailor writes beside images for a person to read; never training data, never an eval pair
NOT_DATA = frozenset({"grid.png", "generation.json", "labels.json", "loss.png"})

#: names whose presence marks a folder as one tailor wrote (a training run, a generation, a fused pipeline, world
#: renders, a bench run)
TAILOR_RECORDS = frozenset(
    {"tailor.json", "log.jsonl", "checkpoints", "generation.json", "tailor-pipeline.json", ".tailor.lock",
     "labels.json", "tailor-bench.json", "generation.parts"}
)  # fmt: skip

_FIX = {
    errno.EEXIST: "it already exists; remove it or pick another path",
    errno.ENOTDIR: "a part of it is a file, not a folder; pick a path under a folder",
    errno.EISDIR: "it is a folder where a file is expected; pass a file path",
    errno.EROFS: "the file system is read-only; pick a writable location",
    errno.ENOSPC: "the disk is full; free space (the last complete checkpoint is kept) and run again",
    errno.EDQUOT: "the disk quota is exceeded; free space and run again",
    errno.ELOOP: "it is a symbolic link loop; fix or remove the link",
    errno.EACCES: "permission denied; fix its permissions or pick another path",
    errno.EPERM: "the operation is not permitted; fix its permissions or pick another path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENAMETOOLONG: "the name is too long; pick a shorter path",
    errno.ENOTEMPTY: "the folder is not empty; remove its files or pick another path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
    errno.EXDEV: "it lies on another file system than its destination; pick a path on the same disk",
    errno.EIO: "the disk reported an I/O error; check the disk and run again",
    errno.EBUSY: "it is in use; close what holds it and run again",
}


def describe_oserror(e: OSError) -> str:
    """``"<path>: <what happened>; <fix>."`` for an ``OSError`` (both paths of a rename when it has two)."""
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    if len(paths) == 2 and Path(paths[0]).name.startswith(".") and paths[0].endswith(".tmp"):
        paths = paths[1:]  # the rename of tailor's temporary file: the destination is what the user named
    where = " -> ".join(paths) or "a file tailor uses"
    fix = _FIX.get(e.errno or -1)
    if e.errno == errno.EEXIST and paths and Path(paths[-1]).is_file():
        fix = "it is an existing file where a folder is needed; pick another path (the file is kept)"
    if fix is None:
        reason = e.strerror or e.__class__.__name__
        fix = f"{reason[:1].lower() + reason[1:]}; check the path and the disk"
    return f"{where}: {fix}."


# --------------------------------------------------------------------- modes
_umask_lock = threading.Lock()


def umask() -> int:
    """The process umask (read by setting and restoring it, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


# --------------------------------------------------------------------- output folders
def is_tailor_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in TAILOR_RECORDS)


def check_out(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), what: str = "--out") -> Path:
    """Refuse an output folder tailor must not write into; returns it as a ``Path``.

    Refused: a path that is a file (or a link to one); a folder that holds files but none of tailor's records
    (:data:`TAILOR_RECORDS`), so a user's folder is never mixed with, or overwritten by, tailor's files; a folder
    equal to or inside one of ``inputs`` (the training images would gain tailor's files)."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise EnvironmentFault(f"{what} {out} is a broken symbolic link; remove it or pick another folder.")
    if out.exists() and not out.is_dir():
        raise EnvironmentFault(f"{what} {out} is a file, not a folder; pick a new folder name (the file is kept).")
    if out.is_dir() and any(out.iterdir()) and not is_tailor_folder(out):
        raise EnvironmentFault(
            f"{what} {out} is a folder tailor did not write (it holds other files); pick an empty or new folder."
        )
    resolved = out.resolve()
    for src in inputs:
        if src is None or not str(src).strip() or not Path(src).is_dir():
            continue
        src_resolved = Path(src).resolve()
        if resolved == src_resolved or src_resolved in resolved.parents:
            raise EnvironmentFault(
                f"{what} {out} is inside the input folder {src}; tailor's files would mix with the inputs — "
                f"pick an output folder outside it."
            )
    return out


def check_new_target(path: str | os.PathLike, marker: str, what: str = "--out") -> Path:
    """A destination folder that tailor will create or replace as a whole (``lora fuse --out``): refused when it
    is a file, or a non-empty folder without ``marker`` (the record of the same command's earlier output)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise EnvironmentFault(f"{what} {path} is an existing file; pick a new folder name (the file is kept).")
        if any(path.iterdir()) and not (path / marker).is_file():
            raise EnvironmentFault(
                f"{what} {path} is a folder this command did not write; pick a new folder name (the folder is kept)."
            )
    return path


def from_oserror(e: OSError) -> EnvironmentFault:
    """One sentence naming the path and the fix for an ``OSError`` no command caught."""
    return EnvironmentFault(describe_oserror(e))
