"""Where a training step's time goes: torch.profiler (or cProfile) over the optimizer steps of any training command.

    python benchmarks/profile_train.py [--skip 5] [--active 20] [--top 25] -- -m tailor train dreambooth ...
    python benchmarks/profile_train.py --cprofile [--sort tottime] -- -m tailor train textual_inversion ...
    BENCH_SHIMS=benchmarks/shims python benchmarks/profile_train.py -- path/to/train_dreambooth_lora.py ...

Like ``step_timer.py`` it runs the command in this process; a global optimizer-step hook advances the profiler's
schedule (``--skip`` steps waited, one warm-up step, ``--active`` steps recorded), so start-up is left out. Prints the
ops by self CPU time (one thread unless ``$BENCH_THREADS``) and the share of time outside any torch op (Python).
``--cprofile`` records Python functions instead (cProfile from the end of step ``--skip + 1`` to the end of step
``--skip + 1 + --active``) and prints the top functions by ``--sort`` (``tottime`` or ``cumtime``) with the mean
wall time per recorded step.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

import torch
from step_timer import run_command  # this folder is sys.path[0] when run as a script
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip", type=int, default=5)
    ap.add_argument("--active", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default=None, help="torch: self_cpu_time_total (default); cProfile: tottime")
    ap.add_argument("--cprofile", action="store_true", help="profile Python functions (cProfile) instead of ops")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = a.command[1:] if a.command and a.command[0] == "--" else a.command
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    if a.cprofile:
        return python_profile(args, a)
    sched = schedule(wait=a.skip, warmup=1, active=a.active, repeat=1)
    prof = profile(activities=[ProfilerActivity.CPU], schedule=sched, record_shapes=False)
    register_optimizer_step_post_hook(lambda opt, args_, kw: prof.step())
    prof.start()
    try:
        run_command(args)
    except SystemExit:
        pass
    finally:
        prof.stop()
    events = prof.key_averages()
    print(events.table(sort_by=a.sort or "self_cpu_time_total", row_limit=a.top), file=sys.stderr)
    total_self = sum(e.self_cpu_time_total for e in events)
    print(f"recorded {a.active} steps: {total_self / 1e6 / a.active:.4f} s/step inside torch ops", file=sys.stderr)


def python_profile(args: list[str], a) -> None:
    prof, seen, span = cProfile.Profile(), [0], []

    def hook(opt, args_, kw) -> None:
        seen[0] += 1
        if seen[0] == a.skip + 1:
            span.append(time.perf_counter())
            prof.enable()
        elif seen[0] == a.skip + 1 + a.active:
            prof.disable()
            span.append(time.perf_counter())

    register_optimizer_step_post_hook(hook)
    try:
        run_command(args)
    except SystemExit:
        pass
    prof.disable()
    if len(span) < 2:
        raise SystemExit(f"the command ran {seen[0]} steps; --skip + --active + 1 = {a.skip + a.active + 1} needed")
    stats = pstats.Stats(prof, stream=sys.stderr).sort_stats(a.sort or "tottime")
    stats.print_stats(a.top)
    print(f"recorded {a.active} steps: {(span[1] - span[0]) / a.active:.4f} s/step under cProfile", file=sys.stderr)


if __name__ == "__main__":
    main()
