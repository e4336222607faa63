"""The real kill: ``python -m tailor train <method> --checkpoint-every 1`` SIGKILLed at a random step (after at least
one checkpoint exists), then ``--resume latest`` to the end, for every registered method; the saved artifact equals
an uninterrupted run's to <= 1e-6. Slow (three processes per method): ``make reliability``.
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
import yaml
from reliability import TRAINABLE, max_abs_diff, method_options
from safetensors.torch import load_file

from tailor.core.method import registry

STEPS = 6
ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def command(name: str, config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tailor", "train", name, "--config", str(config), "--out", str(out), *extra]


def write_config(name: str, tmp: Path) -> Path:
    options = {
        "base": "tiny", "steps": STEPS, "batch_size": 1, "grad_accum": 2, "resolution": 32, "lr": 1e-3, "seed": 7,
        "checkpoint_every": 1, "keep_checkpoints": 2, "ema": True, "ema_decay": 0.5, "lr_scheduler": "cosine",
        "warmup_steps": 2, "log_every": 1,
    }  # fmt: skip
    options.update(method_options(registry()[name], tmp))
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(options))
    return path


def kill_at(cmd: list[str], out: Path, step: int, rng: random.Random) -> int:
    """Run ``cmd``, SIGKILL it soon after checkpoint ``step`` appears; returns the newest checkpoint step then."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = out / "checkpoints" / f"step-{step:06d}"
    while not target.is_dir():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before step {step}: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.3))  # a random moment of a later step (or of the next checkpoint write)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    return max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINABLE)
def test_sigkilled_cli_run_resumes_to_the_same_weights(name, tmp_path):
    rng = random.Random(name)
    config = write_config(name, tmp_path)
    subprocess.run(command(name, config, tmp_path / "full"), env=ENV, check=True, capture_output=True)
    kill_step = rng.randint(1, STEPS - 2)
    newest = kill_at(command(name, config, tmp_path / "run"), tmp_path / "run", kill_step, rng)
    assert not (tmp_path / "run" / f"{name}.safetensors").exists()
    done = subprocess.run(command(name, config, tmp_path / "run", "--resume", "latest"), env=ENV, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    full = load_file(str(tmp_path / "full" / f"{name}.safetensors"))
    resumed = load_file(str(tmp_path / "run" / f"{name}.safetensors"))
    diff = max_abs_diff(full, resumed)
    print(f"{name}: killed after checkpoint {kill_step} (newest on disk {newest}), resumed: max abs diff {diff:.3g}")
    assert diff <= 1e-6
