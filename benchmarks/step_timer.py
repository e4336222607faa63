"""Run a training command in this process and record when each optimizer step ends (used by ``vs_diffusers.py``).

    python benchmarks/step_timer.py RESULT.json -m tailor train ...          # a module, like ``python -m``
    python benchmarks/step_timer.py RESULT.json path/to/train_script.py ...  # a script, like ``python script.py``

A global ``torch.optim`` step post-hook appends ``time.perf_counter()`` after every ``optimizer.step()`` (tailor's
AdamW and the one accelerate wraps in diffusers' scripts alike), so both sides are timed by the same clock at the same
point of the loop, without parsing either side's logs. At exit RESULT.json gets the start time, the step end times
(wall clock and this process's CPU time: the latter is less disturbed by other processes on a shared machine) and this
process's peak RSS (``VmHWM``). Threads: ``torch.set_num_threads($BENCH_THREADS)`` (default 1) before the command runs.

``$BENCH_SHIMS`` (a folder, e.g. ``benchmarks/shims``) goes on ``sys.path`` only after diffusers and transformers have
decided that torchvision is absent (both cache the answer), so the shim serves the script's own
``from torchvision import transforms`` and nothing else.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import sys
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def main() -> None:
    result, args = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    t0, ends, cpu = time.perf_counter(), [], []

    def stamp(opt, a, kw) -> None:
        ends.append(time.perf_counter())
        cpu.append(time.process_time())

    register_optimizer_step_post_hook(stamp)

    def write() -> None:
        with open(result, "w") as f:
            json.dump({"t0": t0, "step_ends": ends, "step_cpu": cpu, "peak_rss_mb": peak_rss_mb()}, f)

    atexit.register(write)
    run_command(args)


def peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` (per address space, so it starts afresh at exec; ``ru_maxrss`` keeps the
    launching parent's peak across fork + exec on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_command(args: list[str]) -> None:
    """Run ``-m module ...`` or ``script.py ...`` in this process as ``python`` would (shims first, see above)."""
    shims = os.environ.get("BENCH_SHIMS")
    if shims:
        import diffusers.utils.import_utils  # noqa: F401 - computes its torchvision flag at import
        from transformers.utils.import_utils import is_torchvision_available

        is_torchvision_available()  # lru-cached: False from here on
        sys.path.insert(0, os.path.abspath(shims))
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
