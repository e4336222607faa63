"""The one training loop (accelerate): every method trains through :func:`train`.

:func:`train` reads as its phases: :func:`_setup` (the base with the method patched in, the data plan, the optimizer;
restored from a checkpoint when resuming), then per optimizer step :func:`_step`, :func:`_log_and_validate` and
:func:`_checkpoint`, and at the end :func:`_finish`. What the phases share is one :class:`_Run`.

Per optimizer step: ``grad_accum`` micro-steps of :class:`~tailor.core.training.objective.Objective` (each process
takes its slice of the global batch), then, at the sync point, gradients of the trainable parameters are averaged
over processes by hand (they may live outside the UNet, so no DDP module wrapping), clipped, stepped, zeroed, and
the EMA is updated. Every random draw derives from ``(seed, sample position)``, so resuming restores only weights,
optimizer, LR scheduler, EMA and the step counter, and reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from tailor.core.components import Components, load_components
from tailor.core.io import write_json, write_text
from tailor.core.method import Method
from tailor.core.outputs import guarded_out
from tailor.core.training.checkpoint import find_resume, remove_after, remove_stale, save_checkpoint
from tailor.core.training.config import TrainConfig
from tailor.core.training.data import SampleOrder, build_datasets, iterate_batches, micro_positions
from tailor.core.training.distributed import make_accelerator, mean_logs, mean_over_processes
from tailor.core.training.ema import EMA
from tailor.core.training.logs import ProgressBar, TrainLog
from tailor.core.training.noise import STREAM_TRAIN
from tailor.core.training.objective import Objective
from tailor.core.training.optim import adamw, lr_scheduler, optimizer_step
from tailor.core.training.resume import check_resume, restore
from tailor.core.training.validate import default_prompts, eval_mode, sample_grid, validation_loss
from tailor.errors import ConfigError, TrainingError

log = logging.getLogger("tailor")


@dataclass
class TrainResult:
    out: Path  # the output folder
    artifact: Path  # the method's saved file
    loss: float  # mean training loss of the last logged window
    steps: int  # optimizer steps done in total
    seconds: float  # wall time of this call
    val_loss: float | None = None  # the last validation loss, if any was computed


def train(method: Method, config: TrainConfig, components: Components | None = None) -> TrainResult:
    """Train ``method`` on ``config.data`` over ``components`` (loaded from ``config.base`` when None)."""
    t_start = time.perf_counter()
    if method.training_free:
        raise ConfigError(f"{method.name} is training-free: there is nothing to train; attach it when generating.")
    with guarded_out(config, f"tailor train {method.name}"):  # one writer per --out, never a user's folder
        run = _setup(method, config, components)
        try:
            for step in range(run.start, config.steps):
                _step(run, step)
                _log_and_validate(run, step + 1)
                _checkpoint(run, step + 1)
        finally:
            if run.bar is not None:
                run.bar.close()
        return _finish(run, t_start)


@dataclass
class _Run:
    """What the phases of one :func:`train` call share: made by :func:`_setup`, then the progress of the loop."""

    method: Method
    config: TrainConfig
    components: Components
    accelerator: Any
    objective: Objective
    params: list[torch.nn.Parameter]  # the trained parameters
    modules: list[torch.nn.Module]  # the method's modules (train mode while training)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # the learning-rate schedule
    scaler: Any  # a GradScaler with fp16, else None
    ema: EMA | None
    lr: float  # the resolved learning rate
    start: int  # the first step of this call (the checkpoint's step when resuming, else 0)
    plan: list[tuple[list[int], list[int]]]  # (positions, dataset indices) of this process's micro-steps, in order
    batches: Iterator[dict]  # the collated batches of ``plan``
    val_set: Any  # held-out items for the validation loss, or None
    prompts: list[str]  # prompts of the sample grid
    info: dict[str, Any]  # what every checkpoint's trainer.json records about the run
    tlog: TrainLog | None  # main process only, like ``bar``
    bar: ProgressBar | None
    skipped: int = 0  # steps skipped for a NaN / infinite loss (restored when resuming)
    # the loop's progress
    step_lr: float = math.nan  # the learning rate of the step just done
    window: dict[str, float] = field(default_factory=dict)  # summed logs since the last log line
    window_steps: int = 0
    window_t: float = field(default_factory=time.perf_counter)
    last_loss: float = math.nan
    last_val: float | None = None
    saved_once: bool = False

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


# --------------------------------------------------------------------- setup
def _setup(method: Method, config: TrainConfig, components: Components | None) -> _Run:
    """Check the options, patch the method into the base, plan the data, make the optimizer (restored if resuming)."""
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision=fp16 needs a CUDA GPU; on the CPU use bf16 or no.")
    if config.cache_text and method.trains_text_encoder:
        raise ConfigError(f"cache_text cannot be used while {method.name} trains the text encoder; drop --cache-text.")
    accelerator = make_accelerator(config.grad_accum, config.mixed_precision)
    out, main = Path(config.out), accelerator.is_main_process
    ckpt = find_resume(out, config.resume) if config.resume else None
    if ckpt is not None:
        check_resume(ckpt, config, method, accelerator.num_processes)
    objective = _patch(method, config, components, accelerator)
    params, modules = _trainable(method, config, objective.components)

    # data: every micro-step's samples are known in advance
    res = objective.resolution
    train_set, val_set = build_datasets(
        config.data, res, config.seed, config.caption, config.val_fraction, config.default_caption
    )
    prompts = list(config.val_prompts) or (default_prompts(train_set) if config.val_every and main else [])
    train_set = method.wrap_dataset(train_set, config)

    # optimizer, schedule, EMA; restored from the checkpoint when resuming
    lr = config.lr if config.lr is not None else float(method.default_lr)
    groups = method.param_groups(lr)
    betas = (config.adam_beta1, config.adam_beta2)
    optimizer = adamw(groups, lr=lr, betas=betas, weight_decay=config.weight_decay, eps=config.adam_epsilon)
    scheduler = lr_scheduler(config, optimizer)
    scaler = accelerator.scaler  # a GradScaler with fp16, else None
    ema = EMA(params, config.ema_decay) if config.ema else None
    start = 0 if ckpt is None else restore(ckpt, method, optimizer, scheduler, scaler, ema, config.steps)

    plan = _plan(len(train_set), config, start, accelerator.process_index, accelerator.num_processes)
    batches = iterate_batches(train_set, [idx for _, idx in plan], config.num_workers)
    info = {
        "method": method.name,
        "method_config": method.config.to_dict(),
        "config": config.to_dict(),
        "resolved": {"lr": lr, "resolution": res, "prediction_type": objective.prediction_type},
        "num_processes": accelerator.num_processes,
    }
    tlog = TrainLog(out, start if ckpt is not None else None) if main else None
    if main:
        remove_stale(out)
    bar = ProgressBar(config.steps, start) if main else None
    skipped = int(ckpt.info.get("nan_skipped", 0)) if ckpt is not None else 0
    return _Run(method, config, objective.components, accelerator, objective, params, modules, optimizer, scheduler,
                scaler, ema, lr, start, plan, batches, val_set, prompts, info, tlog, bar, skipped)  # fmt: skip


def _patch(method: Method, config: TrainConfig, components: Components | None, accelerator) -> Objective:
    """The base on the accelerator's device with ``method`` patched in, and the run's objective over it."""
    if components is None:
        components = load_components(config.base, device=accelerator.device, config=config.base_config)
    components.to(accelerator.device)
    res = config.resolution or components.default_size
    if res % components.vae_scale_factor:
        raise ConfigError(f"resolution must be a multiple of {components.vae_scale_factor} for this base; got {res}.")
    objective = Objective(components, method, config, res, accelerator.autocast)
    sched = components.scheduler
    if objective.prediction_type != sched.config.get("prediction_type", "epsilon"):
        # the trained model predicts another type: sample (validation grid, saved pipeline) with a matching scheduler
        components.scheduler = sched.__class__.from_config(sched.config, prediction_type=objective.prediction_type)
    if method.components is not components:
        components.freeze()
        torch.manual_seed(config.seed)  # modules a method builds start from the same random init
        method.patch(components)
    return objective


def _trainable(method: Method, config: TrainConfig, components: Components) -> tuple[list, list]:
    """The trained parameters and the method's modules, in train mode (checkpointed / compiled as asked)."""
    params = method.trainable_parameters()
    if not params:
        raise TrainingError(f"{method.name} has no trainable parameters; check its options.")
    modules = method.modules()
    for m in modules:
        m.train()
    if config.gradient_checkpointing:
        _gradient_checkpointing(components, method, True)
    if config.compile:
        _compile(components, method, True)
    return params, modules


def _plan(size: int, config: TrainConfig, start: int, rank: int, world: int) -> list[tuple[list[int], list[int]]]:
    """(sample positions, dataset indices) of this process's micro-steps from step ``start`` on."""
    order, accum, bsz = SampleOrder(size, config.seed), config.grad_accum, config.batch_size
    plan = []
    for micro in range(start * accum, config.steps * accum):
        positions = micro_positions(micro, bsz, rank, world)
        plan.append((positions, [order.index(p) for p in positions]))
    return plan


# --------------------------------------------------------------------- one optimizer step
def _step(run: _Run, step: int) -> None:
    """``grad_accum`` micro-steps (forward, loss, backward), then the sync point: check, average, clip, update."""
    accum, steps, scaler = run.config.grad_accum, run.config.steps, run.scaler
    step_loss, step_logs = torch.zeros((), device=run.accelerator.device), {}
    for micro in range(accum):
        positions, indices = run.plan[(step - run.start) * accum + micro]
        keys = [(0, i) for i in indices]
        loss, logs = run.objective.loss(next(run.batches), keys, positions, STREAM_TRAIN, step, steps)
        scaled = loss / accum
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        step_loss += loss.detach().float() / accum
        for k, v in logs.items():
            step_logs[k] = step_logs.get(k, 0.0) + float(v) / accum
    step_loss = mean_over_processes(step_loss, run.world)
    run.step_lr = run.optimizer.param_groups[0]["lr"]
    if not torch.isfinite(step_loss):
        _skip(run, step + 1, "NaN" if torch.isnan(step_loss) else "infinite")
        return
    optimizer_step(run.params, run.optimizer, run.scheduler, scaler, run.config.max_grad_norm, run.world)
    if run.ema is not None:
        run.ema.update()
    for k, v in {**step_logs, "loss": float(step_loss)}.items():
        run.window[k] = run.window.get(k, 0.0) + v
    run.window_steps += 1


def _skip(run: _Run, done: int, kind: str) -> None:
    """A step whose loss is not finite: no update (the step still counts, so data, schedule and resume stay aligned),
    or stop when ``--skip-nan-steps`` is used up."""
    limit = run.config.skip_nan_steps
    if run.skipped >= limit:
        raise TrainingError(
            f"loss became {kind} at step {done}; lower --lr (now {run.lr:g}) or --max-grad-norm, turn off "
            f"mixed precision, or allow --skip-nan-steps (the checkpoints in {run.config.out} are kept)."
        )
    run.skipped += 1
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    log.warning("loss became %s at step %d: skipped it (%d of --skip-nan-steps %d)", kind, done, run.skipped, limit)


# --------------------------------------------------------------------- logs, validation, checkpoints
def _log_and_validate(run: _Run, done: int) -> None:
    """Every ``log_every`` steps a log record of the window since the last one; every ``val_every`` steps also the
    validation loss and a sample grid (main process)."""
    c = run.config
    log_due = done % c.log_every == 0 or done == c.steps
    val_due = c.val_every > 0 and (done % c.val_every == 0 or done == c.steps)
    if not ((log_due or val_due) and run.window_steps):
        if run.bar is not None:
            run.bar.update(done)
        return
    totals = mean_logs(run.window, run.world, run.accelerator.device)
    record = {"step": done, "loss": totals.pop("loss") / run.window_steps, "lr": run.step_lr}
    record["it_s"] = run.window_steps / max(time.perf_counter() - run.window_t, 1e-9)
    record.update({k: v / run.window_steps for k, v in totals.items()})
    if run.skipped:
        record["nan_skipped"] = run.skipped
    run.last_loss = record["loss"]
    run.window, run.window_steps, run.window_t = {}, 0, time.perf_counter()
    if not run.main:
        return
    if val_due:
        with eval_mode(run.modules, run.ema):
            if run.val_set is not None:
                run.last_val = validation_loss(run.objective, run.val_set, c.batch_size, done, c.steps)
                record["val_loss"] = run.last_val
            grid = Path(c.out) / "samples" / f"step-{done:06d}.png"
            sample_grid(run.objective, run.prompts, grid, c.seed, c.val_steps, c.val_guidance)
    run.tlog.add(record)
    run.tlog.plot()
    text = f"loss {record['loss']:.4f}  {record['it_s']:.2f} it/s"
    run.bar.update(done, text)
    run.bar.line(f"step {done}/{c.steps}  {text}")


def _checkpoint(run: _Run, done: int) -> None:
    """A resumable checkpoint every ``checkpoint_every`` steps and at the last (main process; the others wait)."""
    c, out = run.config, Path(run.config.out)
    if not ((c.checkpoint_every > 0 and done % c.checkpoint_every == 0) or done == c.steps):
        return
    if run.main:
        if not run.saved_once and remove_after(out, run.start):
            log.warning("removed checkpoints in %s past step %d left by an earlier run", out, run.start)
        run.saved_once = True
        optim_state = {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        }
        ema_state = run.ema.state_dict() if run.ema is not None else None
        info = {**run.info, "loss": run.last_loss, "nan_skipped": run.skipped,
                "method_training_state": run.method.training_state()}  # fmt: skip
        save_checkpoint(out, done, info, run.method.state_dict(), optim_state, ema_state, c.keep_checkpoints)
        run.tlog.plot()
    run.accelerator.wait_for_everyone()


# --------------------------------------------------------------------- the end
def _finish(run: _Run, t_start: float) -> TrainResult:
    """EMA weights in place, eval mode, no checkpointing / compiling; the artifact and run files (main process)."""
    method, config, components = run.method, run.config, run.components
    if run.ema is not None:
        run.ema.copy_to_params()
    for m in run.modules:
        m.eval()
    if config.gradient_checkpointing:
        _gradient_checkpointing(components, method, False)
    if config.compile:
        _compile(components, method, False)  # later sampling needs no new graphs
    out = Path(config.out)
    artifact, last_loss = out / f"{method.name}.safetensors", run.last_loss
    if run.main:
        artifact = _write_run_files(method, config, run.info, out, run.tlog)
        if math.isnan(last_loss) and run.tlog.records:  # resumed at the last step: nothing new was logged
            last_loss = float(run.tlog.records[-1].get("loss", math.nan))
    run.accelerator.wait_for_everyone()
    return TrainResult(out, artifact, last_loss, config.steps, time.perf_counter() - t_start, run.last_val)


def _write_run_files(method: Method, config: TrainConfig, info: dict, out: Path, tlog: TrainLog) -> Path:
    """Save the artifact, ``config.yaml`` (resolved options, flat) and ``tailor.json``; redraw the loss plot."""
    artifact = Path(method.save(out))
    # flat, like `tailor train <method> --config FILE` reads it: the run's options with defaults resolved
    options = {**config.to_dict(), **info["resolved"], "resume": None, **method.config.to_dict()}
    header = f"# tailor train {method.name} --config this-file reproduces the run\n"
    write_text(out / "config.yaml", header + yaml.safe_dump(options, sort_keys=False))
    base = getattr(method.components, "source", "") or config.base
    write_json(
        out / "tailor.json", {"method": method.name, "artifact": artifact.name, "base": base, "steps": config.steps}
    )
    tlog.plot()
    return artifact


# --------------------------------------------------------------------- model modes
def _compile(components: Components, method: Method, on: bool) -> None:
    """``torch.compile`` in place (``Module.compile()``: same modules, same state-dict keys, the method's processors
    and LoRA layers stay attached) the UNet and the method's own diffusers models (a ControlNet, T2I-Adapter, ...);
    ``on=False`` undoes it."""
    from diffusers import ModelMixin

    base = {id(components.unet), id(components.vae), id(components.text_encoder)}
    models = [components.unet] + [m for m in method.modules() if isinstance(m, ModelMixin) and id(m) not in base]
    for m in models:
        if on:
            m.compile()
        else:
            m._compiled_call_impl = None


def _gradient_checkpointing(components: Components, method: Method, on: bool) -> None:
    unet = components.unet
    if getattr(unet, "_supports_gradient_checkpointing", False):
        unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()
    if method.trains_text_encoder:
        for te in (components.text_encoder, components.text_encoder_2):
            if te is not None and getattr(te, "supports_gradient_checkpointing", False):
                te.gradient_checkpointing_enable() if on else te.gradient_checkpointing_disable()
