"""Progress where no progress bar can draw (a pipe, a log file, a CI job): a plain line every N seconds.

``Heartbeat(total, start)`` prints ``training: step 120/500 (24%), loss 0.1234, 3.1 s/step, eta 0:19:40`` to stderr
at most every ``every`` seconds (default 30; ``TAILOR_PROGRESS_SECONDS`` overrides) and once at the last step, so
a run on a non-terminal says it is alive without a line per step.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

DEFAULT_SECONDS = 30.0


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("TAILOR_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


class Heartbeat:
    def __init__(self, total: int, start: int = 0, description: str = "training", every: float | None = None):
        self.total, self.start, self.description = total, start, description
        self.every = interval() if every is None else every
        self.t0 = self.last = time.monotonic()
        self.info = ""
        self.lines = 0

    def tick(self, step: int, info: str | None = None) -> None:
        if info:
            self.info = info
        now = time.monotonic()
        if now - self.last < self.every and step < self.total:
            return
        self.last = now
        done = step - self.start
        per = (now - self.t0) / done if done > 0 else 0.0
        eta = timedelta(seconds=round(per * (self.total - step)))
        pct = 100 * step // max(1, self.total)
        parts = [f"{self.description}: step {step}/{self.total} ({pct}%)"]
        if self.info:
            parts.append(self.info)
        if done > 0:
            parts += [f"{per:.2f} s/step", f"eta {eta}"]
        print(", ".join(parts), file=sys.stderr, flush=True)
        self.lines += 1
