"""SIGKILL while checkpoints are being written: the newest checkpoint that resume finds is always complete.

Fast: a forked writer kills itself (SIGKILL, so no ``finally`` runs) at a random line of the checkpoint code
(``save_checkpoint`` / ``atomic_dir`` / ``atomic_path`` / pruning), 24 times. Slow: a subprocess writing checkpoints
in a loop is SIGKILLed after a random delay, 60 times (``make reliability``). After every kill, every ``step-N``
folder loads, and ``resume latest`` returns the newest completed save (or the one whose rename had just landed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tailor.core.training import checkpoint as ckpt_mod
from tailor.core.training.checkpoint import find_resume, list_checkpoints, load_checkpoint, save_checkpoint

KEEP = 2


def payload(step: int) -> tuple[dict, dict, dict, dict]:
    g = torch.Generator().manual_seed(step)
    state = {f"w{i}": torch.randn(64, 256, generator=g) for i in range(8)}
    optim = {"optimizer": {"state": {0: {"exp_avg": torch.randn(64, generator=g)}}, "param_groups": []},
             "scheduler": {"last_epoch": step}, "scaler": None}  # fmt: skip
    return {"method": "finetune", "config": {"seed": 0}}, state, optim, {k: v * 0.5 for k, v in state.items()}


def save(out: Path, step: int) -> None:
    info, state, optim, ema = payload(step)
    save_checkpoint(out, step, info, state, optim, ema, KEEP)


def check_after_kill(out: Path, completed: int) -> int:
    """Every step folder loads; resume picks the newest; it is ``completed`` or the save that was under way."""
    steps = []
    for step, path in list_checkpoints(out):
        c = load_checkpoint(path)  # raises if a step-N folder is incomplete or corrupt
        assert c.step == step and torch.equal(c.method_state["w0"], payload(step)[1]["w0"])
        steps.append(step)
    latest = find_resume(out, "latest").step
    assert latest == max(steps)
    assert latest in (completed, completed + 1), (latest, completed)
    return latest


def _lines_of_one_save(tmp: Path) -> int:
    counter = [0]
    files = {ckpt_mod.__file__, sys.modules["tailor.core.io"].__file__}

    def trace(frame, event, arg):
        if frame.f_code.co_filename in files:
            counter[0] += 1
            return trace
        return None

    save(tmp / "probe", 1)
    save(tmp / "probe", 2)
    sys.settrace(trace)
    try:
        save(tmp / "probe", 3)  # with pruning: the steady state
    finally:
        sys.settrace(None)
    return counter[0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_at_random_lines_of_the_checkpoint_writer(tmp_path):
    total = _lines_of_one_save(tmp_path)
    assert total > 30
    rng = random.Random(0)
    files = {ckpt_mod.__file__, sys.modules["tailor.core.io"].__file__}
    out, completed, outcomes = tmp_path / "run", 0, set()
    for _ in range(24):
        target, step = rng.randrange(total), completed + 1
        pid = os.fork()
        if pid == 0:  # the child: count traced lines, SIGKILL itself at line `target` of this save
            seen = [0]

            def trace(frame, event, arg, seen=seen, target=target):
                if frame.f_code.co_filename in files:
                    seen[0] += 1
                    if seen[0] >= target:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return trace
                return None

            if completed == 0:
                save(out, step)  # the first save completes: kills hit a folder that has checkpoints
                os._exit(0)
            sys.settrace(trace)
            save(out, step)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        if completed == 0:
            assert not killed
            completed = 1
            continue
        latest = check_after_kill(out, completed)
        outcomes.add(latest == step)
        completed = latest
        ckpt_mod.remove_stale(out)  # what a resumed run does first
    assert outcomes == {True, False}, "kills landed both before and after the rename"


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_checkpoint_kill import save
from pathlib import Path
out, step = Path(sys.argv[1]), int(sys.argv[2])
while True:
    save(out, step)
    print(step, flush=True)
    step += 1
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes(tmp_path):
    out, rng, completed = tmp_path / "run", random.Random(1), 0
    script = WRITER.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    kills, mid_write = 60, 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", script, str(out), str(completed + 1)], stdout=subprocess.PIPE,
                                env=env, text=True)  # fmt: skip
        first = proc.stdout.readline()  # one save done: the kill hits a run that has checkpoints
        assert first.strip(), "the writer died before its first checkpoint"
        t0 = time.perf_counter()
        proc.stdout.readline()
        per_save = time.perf_counter() - t0
        time.sleep(rng.uniform(0, per_save))  # a random moment of the next save
        proc.send_signal(signal.SIGKILL)
        rest = proc.communicate()[0].split()
        done = int(rest[-1]) if rest else int(first) + 1
        latest = check_after_kill(out, done)
        mid_write += latest == done and any(p.name.startswith(".step-") for p in (out / "checkpoints").iterdir())
        completed = latest
        ckpt_mod.remove_stale(out)
    print(f"{kills} SIGKILLs during checkpoint writes; {mid_write} left an unfinished temporary folder behind")
    assert mid_write > 0
