"""One writer per output folder: an advisory ``fcntl`` lock on ``<out>/.tailor.lock`` holding the pid and command.

``with output_lock(out, "tailor train lora"): ...`` creates ``out`` if needed and locks it for the block; a second
writer gets one sentence naming the folder and the process that holds it. The kernel drops an ``flock`` when its
process dies, so a lock file left by a killed run is stale by construction: the next run takes the lock, reports the
dead pid it replaces, and rewrites the file. On release the lock file is removed, and ``out`` too when the block
created it and left it empty (a refused run leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tailor.errors import EnvironmentFault

log = logging.getLogger("tailor")

LOCK_NAME = ".tailor.lock"
_held: set[Path] = set()  # folders this process holds (a nested output_lock on one of them is a no-op)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    pid, _, command = text.partition(" ")
    return f"process {pid} ({command})" if pid.isdigit() else "another process"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(path: Path) -> int:
    """An fd holding the exclusive lock on ``path`` (retrying when the file was replaced under us)."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            folder = path.parent
            raise EnvironmentFault(
                f"{folder} is in use by {_holder(path)}; wait for it to finish or pick another --out."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed the file between our open and flock: lock the new one
    raise EnvironmentFault(f"{path.parent} is being locked and unlocked by other processes; run again.")


def _command() -> str:
    args = " ".join(sys.argv[1:4])
    return f"tailor {args}".strip() if args else "tailor"


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold ``out``'s lock for the block (see the module docstring); yields ``out`` as a ``Path``."""
    out = Path(out)
    key = out.resolve()
    if key in _held:
        yield out
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    try:
        fd = _acquire(path)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    _held.add(key)
    try:
        previous = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        old_pid = previous.partition(" ")[0]
        if old_pid.isdigit() and int(old_pid) != os.getpid() and not _alive(int(old_pid)):
            log.warning("cleared a stale lock in %s left by process %s, which no longer runs", out, old_pid)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command or _command()}\n".encode(), 0)
        yield out
    finally:
        _held.discard(key)
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # closing drops the flock
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only succeeds when empty
