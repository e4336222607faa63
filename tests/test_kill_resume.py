"""Kill + resume for every registered method: a run killed mid-step and resumed with ``--resume latest`` ends
with the same trainable weights as an uninterrupted run of the same seed (max abs diff <= 1e-6).

The kill lands in the second micro-step of an accumulated optimizer step, with EMA and a warmup + linear LR
schedule on, so accumulation position, optimizer, scheduler, EMA and data order all have to be restored. The real
thing (``python -m tailor train`` SIGKILLed at a random step) is the slow test in ``test_kill_resume_cli.py``.
"""

from __future__ import annotations

import pytest
from reliability import TRAINABLE, SimulatedKill, crash_in_loss, max_abs_diff, method_options

import tailor
from tailor.core.method import registry
from tailor.core.training import TrainConfig, train
from tailor.core.training.checkpoint import find_resume, list_checkpoints

STEPS, CKPT_EVERY, KILL_STEP = 3, 2, 2  # the kill lands in step 3 (0-based 2), after the step-2 checkpoint


def config(out, **kw) -> TrainConfig:
    opts = dict(
        base="tiny", out=str(out), steps=STEPS, batch_size=1, grad_accum=2, resolution=32, lr=1e-3, seed=3,
        ema=True, ema_decay=0.5, lr_scheduler="linear", warmup_steps=1, checkpoint_every=CKPT_EVERY, log_every=1,
    )  # fmt: skip
    opts.update(kw)
    return TrainConfig(**opts)


@pytest.mark.parametrize("name", TRAINABLE)
def test_killed_run_resumes_to_the_same_weights(name, tmp_path):
    spec = registry()[name]
    options = method_options(spec, tmp_path)

    full = spec.method(**options)
    train(full, config(tmp_path / "full"), tailor.tiny_components())

    killed = crash_in_loss(spec.method(**options), step=KILL_STEP, micro=1)
    with pytest.raises(SimulatedKill):
        train(killed, config(tmp_path / "run"), tailor.tiny_components())
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [CKPT_EVERY]
    at_kill = find_resume(tmp_path / "run", "latest").method_state

    resumed = spec.method(**options)
    result = train(resumed, config(tmp_path / "run", resume="latest"), tailor.tiny_components())
    assert result.steps == STEPS
    diff = max_abs_diff(full.state_dict(), resumed.state_dict())
    print(f"{name}: killed in step {KILL_STEP + 1} micro-step 2, resumed at {CKPT_EVERY}: max abs diff {diff:.3g}")
    assert diff <= 1e-6
    assert resumed.training_state() == full.training_state()  # counters beside the weights (A1111's step)
    # teeth: the resumed run did train past the checkpoint it started from
    assert max_abs_diff(at_kill, resumed.state_dict()) > 0
