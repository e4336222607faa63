"""The UI's worker process: imports tailor once, loads the base once (so its modules and files are warm), then runs
each job's command lines with ``tailor.cli.main`` — the CLI's own code path — one job at a time.

Protocol (``python -m tailor.ui.worker BASE`` in the workspace folder): one JSON line per job on stdin,
``{"id", "commands": [[arg, ...], ...], "log": PATH, "progress": PATH}``; on its stdout one ``{"ready": true}``
line once warm, then ``{"id", "rc"}`` per finished job. While a job runs, file descriptors 1 and 2 point at the
job's log and ``TAILOR_PROGRESS_FILE`` at its progress file (:func:`tailor.core.progress.report`). A job is
cancelled by killing this process; the server starts a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time


def warm(base: str) -> None:
    """Import what a generation and a training import, and load the base once (each job loads it again from the
    page cache: methods patch the loaded modules in place, so jobs never share a loaded model)."""
    from tailor.cli import main  # noqa: F401
    from tailor.cli.generate import make_generate_command
    from tailor.core.components import load_components
    from tailor.core.progress import quiet_libraries
    from tailor.core.training import train  # noqa: F401

    quiet_libraries()
    make_generate_command()  # imports every method's declaration
    load_components(base)


@contextlib.contextmanager
def redirected(path: str):
    """File descriptors 1 and 2 (and so every print, log line and library message) into ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_job(job: dict) -> int:
    from tailor.cli import main

    os.environ["TAILOR_PROGRESS_FILE"] = job["progress"]
    rc = 0
    try:
        with redirected(job["log"]):
            for args in job["commands"]:
                print("$ " + shlex.join(["tailor", *args]), flush=True)
                t0 = time.perf_counter()
                try:
                    rc = main(list(args))
                except SystemExit as e:  # a command that exits by itself
                    rc = e.code if isinstance(e.code, int) else 1
                except Exception as e:  # a bug, not a user error: keep the worker alive, show the traceback
                    import traceback

                    traceback.print_exc()
                    print(f"error: {e.__class__.__name__}: {e}", file=sys.stderr, flush=True)
                    rc = 1
                print(f"[exit {rc} after {time.perf_counter() - t0:.2f} s]", flush=True)
                if rc:
                    break
    finally:
        os.environ.pop("TAILOR_PROGRESS_FILE", None)
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    control = os.fdopen(os.dup(1), "w", buffering=1)  # the server's channel, kept apart from the jobs' output
    from tailor.errors import TailorError

    try:
        warm(argv[0] if argv else "world")
    except TailorError as e:  # e.g. a --base that does not load: the jobs' error names it
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    control.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        job = json.loads(line)
        rc = run_job(job)
        control.write(json.dumps({"id": job["id"], "rc": rc}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
