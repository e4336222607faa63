"""The job queue: one job at a time in one warm worker process (:mod:`tailor.ui.worker`), off the request thread.

A job is a list of ``tailor`` command lines. Each keeps its log and progress under
``<workspace>/.tailor-ui/jobs/<id>/``. Cancelling the running job kills the worker and starts a fresh one (the
CLI's writes are atomic and its output folders locked, so a killed command leaves no half-written file).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tailor
from tailor.ui.paths import Workspace

STATES = ("queued", "running", "done", "failed", "cancelled")


@dataclass
class Job:
    id: str
    kind: str  # generate, train, evaluate, convert
    commands: list[list[str]]
    out: str | None = None  # the output folder, relative to the workspace
    meta: dict[str, Any] = field(default_factory=dict)
    state: str = "queued"
    rc: int | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None

    def summary(self) -> dict[str, Any]:
        return asdict(self)


class Runner:
    """Queue + worker. ``submit`` returns at once; a thread feeds the worker one job at a time."""

    def __init__(self, ws: Workspace, base: str, worker: list[str] | None = None):
        """``worker``: the worker's command line (default: this Python running :mod:`tailor.ui.worker` on ``base``;
        tests pass a stand-in)."""
        self.ws, self.base = ws, base
        self.worker = worker or [sys.executable, "-m", "tailor.ui.worker", base]
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self.lock = threading.Condition()
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()
        self.counter = itertools.count(1)
        self.stopping = False
        (ws.ui_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._loop, name="tailor-ui-jobs", daemon=True)
        self.thread.start()
        threading.Thread(target=self._start_worker, daemon=True).start()

    # ------------------------------------------------------------------ public
    def submit(self, kind: str, commands: list[list[str]], out: str | None = None, **meta) -> Job:
        with self.lock:
            job = Job(f"{time.strftime('%H%M%S')}-{next(self.counter):03d}", kind, commands, out, meta)
            self.dir(job).mkdir(parents=True, exist_ok=True)
            self.jobs[job.id] = job
            self.queue.append(job.id)
            self.lock.notify_all()
        return job

    def cancel(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return job
            if job.state == "queued":
                self.queue.remove(job_id)
                job.state, job.ended = "cancelled", time.time()
                return job
            job.state = "cancelled"  # the loop sees the worker die and keeps this state
            if self.proc is not None:
                self.proc.kill()
        return job

    def dir(self, job: Job) -> Path:
        return self.ws.ui_dir / "jobs" / job.id

    def log(self, job: Job, tail: int = 8000) -> str:
        path = self.dir(job) / "log.txt"
        if not path.is_file():
            return ""
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - tail))
            return f.read().decode("utf-8", "replace")

    def progress(self, job: Job) -> dict[str, Any] | None:
        path = self.dir(job) / "progress.jsonl"
        if not path.is_file():
            return None
        lines = path.read_text().splitlines()
        for line in reversed(lines):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        return None

    def close(self) -> None:
        self.stopping = True
        with self.lock:
            self.lock.notify_all()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    # ------------------------------------------------------------------ worker
    def _start_worker(self) -> None:
        self.ready.clear()
        log = open(self.ws.ui_dir / "worker.log", "ab")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.pop("TAILOR_PROGRESS_FILE", None)
        # the worker imports the tailor this server runs (it starts in the workspace, not beside the package)
        package_root = str(Path(tailor.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            self.worker,
            cwd=self.ws.root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
        )
        log.close()
        self.proc = proc
        line = proc.stdout.readline()
        if line.strip().startswith("{"):
            self.ready.set()
        else:
            self.ready.set()  # failed to warm: the job loop reports the worker's log

    def _loop(self) -> None:
        while not self.stopping:
            with self.lock:
                while not self.queue and not self.stopping:
                    self.lock.wait()
            self.ready.wait()  # a job counts as running once a warm worker takes it (cancel may still drop it)
            with self.lock:
                if self.stopping or not self.queue:
                    continue
                job = self.jobs[self.queue.pop(0)]
                job.state, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: Job) -> None:
        proc, rc = self.proc, None
        d = self.dir(job)
        if proc is not None and proc.poll() is None:
            msg = {
                "id": job.id,
                "commands": job.commands,
                "log": str(d / "log.txt"),
                "progress": str(d / "progress.jsonl"),
            }
            try:
                proc.stdin.write(json.dumps(msg) + "\n")
                proc.stdin.flush()
                for line in proc.stdout:
                    reply = json.loads(line)
                    if reply.get("id") == job.id:
                        rc = int(reply["rc"])
                        break
            except (OSError, ValueError):
                rc = None
        with self.lock:
            job.ended, job.rc = time.time(), rc
            if job.state != "cancelled":
                job.state = "done" if rc == 0 else "failed"
            dead = rc is None
        if dead:  # killed (cancel) or crashed: a fresh warm worker for the next job
            if job.state == "failed":
                tail = (self.ws.ui_dir / "worker.log").read_text(errors="replace").strip().splitlines()[-1:]
                with open(d / "log.txt", "a") as f:
                    why = " ".join(tail) or "no message"
                    f.write(f"error: the worker process ended ({why}); see .tailor-ui/worker.log.\n")
            if proc is not None:
                proc.kill()
                proc.wait()
            if not self.stopping:
                self._start_worker()
