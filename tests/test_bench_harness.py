"""The inference benchmark's step clock (benchmarks/inference_overhead.py) on a deterministic fake clock."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def overhead(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("inference_overhead_under_test", BENCH / "inference_overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("inference_overhead_under_test", None)


class Ticking(nn.Module):
    """A module whose call takes ``cost`` seconds of the fake clock."""

    def __init__(self, clock: list[float], cost: float):
        super().__init__()
        self.clock, self.cost = clock, cost

    def forward(self, x):
        self.clock[0] += self.cost
        return x


def test_step_clock_separates_unet_inner_module_and_outside_time(overhead, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(overhead, "_now", lambda: (now[0], now[0] / 2))  # CPU time: half the wall time
    unet, controlnet = Ticking(now, 0.040), Ticking(now, 0.015)
    clock = overhead.StepClock(unet)
    clock.inner(controlnet)

    def sample():
        x = torch.zeros(1)
        controlnet(x)  # before the first UNet call: not inside any gap
        for _ in range(5):
            unet(x)
            now[0] += 0.002  # the pipeline's own work (scheduler step, guidance)
            controlnet(x)  # the next step's ControlNet: inside the gap, not outside time

    r = clock.run(sample)
    assert r["wall"] == pytest.approx(0.057)
    assert r["cpu"] == pytest.approx(0.0285)
    assert r["outside_wall"] == pytest.approx(0.002)
    assert r["outside_cpu"] == pytest.approx(0.001)


def test_summary_outside_overhead_is_over_the_reference_step(overhead):
    t = [{"wall": 0.05, "cpu": 0.05, "outside_wall": 0.0012, "outside_cpu": 0.0012}] * 3
    d = [{"wall": 0.04, "cpu": 0.04, "outside_wall": 0.0010, "outside_cpu": 0.0010}] * 3
    r = overhead.summarise(t, d)
    assert r["overhead"] == pytest.approx(0.25)
    assert r["outside_overhead"] == pytest.approx(0.0002 / 0.04)


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen: list[tuple[float, float]] = []

    def forward(self, x, scale=1.0):
        self.seen.append((float(x.sum()), scale))
        return x * scale


def test_replay_captures_the_first_call_and_alternates_calls(overhead):
    ours, theirs = Counting(), Counting()
    ro, rt = overhead.Replay(ours), overhead.Replay(theirs)
    x = torch.ones(3)
    ours(x, scale=2.0)
    theirs(x * 2, scale=3.0)
    x.add_(10)  # the captured inputs are copies
    ours(x)  # a later call is not the one replayed
    ours.seen.clear()
    theirs.seen.clear()
    r = overhead.Replay.paired(ro, rt, calls=4)
    assert ours.seen == [(3.0, 2.0)] * 4 and theirs.seen == [(6.0, 3.0)] * 4
    assert set(r) == {"unet_tailor_ms", "unet_diffusers_ms", "unet_overhead"}
    ours(x)
    assert len(ours.seen) == 5  # still callable; the capture hook is gone
    assert ro.captured[0][0].sum() == 3.0
