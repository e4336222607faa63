"""Non-finite losses: the run stops with one sentence and keeps its checkpoints, or, with ``skip_nan_steps=N``,
skips up to N bad steps (no update, the step still counts) and resumes exactly across a skip."""

from __future__ import annotations

import json
import logging
import math

import pytest
from reliability import SimulatedKill, crash_in_loss, max_abs_diff, nan_in_loss

import tailor
from tailor.core.training import TrainConfig, train
from tailor.core.training.checkpoint import find_resume
from tailor.errors import ConfigError, TrainingError
from tailor.methods.lora import LoRAMethod

BAD = {1, 3}


def cfg(out, **kw):
    opts = dict(base="tiny", out=str(out), steps=5, batch_size=1, resolution=32, lr=1e-3, checkpoint_every=2,
                log_every=1, lr_scheduler="linear")  # fmt: skip
    opts.update(kw)
    return TrainConfig(**opts)


def test_nan_stops_unless_skipped(tmp_path, caplog):
    with pytest.raises(TrainingError, match="NaN at step 4.*--skip-nan-steps"):
        train(nan_in_loss(LoRAMethod(rank=1), BAD), cfg(tmp_path / "one", skip_nan_steps=1), tailor.tiny_components())
    assert find_resume(tmp_path / "one", "latest").step == 2  # the last good checkpoint is kept
    assert not (tmp_path / "one" / "lora.safetensors").exists()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tailor"):
        m = nan_in_loss(LoRAMethod(rank=1), BAD)
        result = train(m, cfg(tmp_path / "two", skip_nan_steps=2), tailor.tiny_components())
    assert result.steps == 5 and math.isfinite(result.loss)
    assert caplog.text.count("skipped it") == 2
    assert all(v.isfinite().all() for v in m.state_dict().values())
    records = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 3, 5] and records[-1]["nan_skipped"] == 2
    assert all(math.isfinite(r["loss"]) for r in records)
    with pytest.raises(ConfigError, match="skip_nan_steps"):
        TrainConfig(skip_nan_steps=-1)


def test_resume_across_a_skipped_step_is_exact(tmp_path):
    full = nan_in_loss(LoRAMethod(rank=1), BAD)
    train(full, cfg(tmp_path / "full", skip_nan_steps=2), tailor.tiny_components())
    killed = crash_in_loss(nan_in_loss(LoRAMethod(rank=1), BAD), step=4)
    with pytest.raises(SimulatedKill):
        train(killed, cfg(tmp_path / "run", skip_nan_steps=2), tailor.tiny_components())
    assert find_resume(tmp_path / "run", "latest").info["nan_skipped"] == 2  # steps 2 and 4 (1-based) were skipped
    resumed = nan_in_loss(LoRAMethod(rank=1), BAD)
    train(resumed, cfg(tmp_path / "run", skip_nan_steps=2, resume="latest"), tailor.tiny_components())
    assert max_abs_diff(full.state_dict(), resumed.state_dict()) <= 1e-6
    # a resumed run has already used up its skips: a further bad step stops it
    again = nan_in_loss(LoRAMethod(rank=1), {4})
    with pytest.raises(TrainingError, match="NaN at step 5"):
        train(
            again,
            cfg(tmp_path / "run", skip_nan_steps=2, resume=str(tmp_path / "run" / "checkpoints" / "step-000004")),
            tailor.tiny_components(),
        )
