"""The one training loop (accelerate): every method trains through :func:`train`.

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
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from tailor.core.components import Components, load_components
from tailor.core.io import write_json, write_text
from tailor.core.method import Method
from tailor.core.training.checkpoint import Checkpoint, find_resume, remove_after, remove_stale, save_checkpoint
from tailor.core.training.config import RESUME_INVARIANTS, TrainConfig
from tailor.core.training.data import SampleOrder, build_datasets, iterate_batches, micro_positions
from tailor.core.training.distributed import average_gradients, make_accelerator, mean_logs, mean_over_processes
from tailor.core.training.ema import EMA
from tailor.core.training.logs import ProgressBar, TrainLog
from tailor.core.training.noise import STREAM_TRAIN
from tailor.core.training.objective import Objective
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
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision=fp16 needs a CUDA GPU; on the CPU use bf16 or no.")
    if config.cache_text and method.trains_text_encoder:
        raise ConfigError(f"cache_text cannot be used while {method.name} trains the text encoder; drop --cache-text.")
    accelerator = make_accelerator(config.grad_accum, config.mixed_precision)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    out, steps, accum, bsz = Path(config.out), config.steps, config.grad_accum, config.batch_size
    ckpt = find_resume(out, config.resume) if config.resume else None
    if ckpt is not None:
        _check_resume(ckpt, config, method, world)

    # ---- the base, the method and what it trains
    if components is None:
        components = load_components(config.base, device=accelerator.device, config=config.base_config)
    components.to(accelerator.device)
    res = config.resolution or components.default_size
    if res % components.vae_scale_factor:
        raise ConfigError(f"resolution must be a multiple of {components.vae_scale_factor} for this base; got {res}.")
    objective = _objective(method, config, components, res, accelerator)
    if method.components is not components:
        components.freeze()
        torch.manual_seed(config.seed)  # modules a method builds start from the same random init
        method.patch(components)
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

    # ---- data: every micro-step's samples are known in advance
    train_set, val_set = build_datasets(
        config.data, res, config.seed, config.caption, config.val_fraction, config.default_caption
    )
    prompts = list(config.val_prompts) or (default_prompts(train_set) if config.val_every and main else [])
    if callable(getattr(method, "wrap_dataset", None)):
        train_set = method.wrap_dataset(train_set, config)

    # ---- optimizer, schedule, EMA; restored from the checkpoint when resuming
    lr = config.lr if config.lr is not None else float(getattr(method, "default_lr", 1e-4))
    betas = (config.adam_beta1, config.adam_beta2)
    groups = method.param_groups(lr)
    optimizer = adamw(groups, lr=lr, betas=betas, weight_decay=config.weight_decay, eps=config.adam_epsilon)
    scheduler = _lr_scheduler(config, optimizer)
    scaler = accelerator.scaler  # a GradScaler with fp16, else None
    ema = EMA(params, config.ema_decay) if config.ema else None
    start = 0 if ckpt is None else _restore(ckpt, method, optimizer, scheduler, scaler, ema, steps)

    order = SampleOrder(len(train_set), config.seed)
    plan = []  # (positions, dataset indices) of this process's micro-steps, in order
    for micro in range(start * accum, steps * accum):
        positions = micro_positions(micro, bsz, rank, world)
        plan.append((positions, [order.index(p) for p in positions]))
    batches = iterate_batches(train_set, [idx for _, idx in plan], config.num_workers)

    info = {
        "method": method.name,
        "method_config": method.config.to_dict(),
        "config": config.to_dict(),
        "resolved": {"lr": lr, "resolution": res, "prediction_type": objective.prediction_type},
        "num_processes": world,
    }
    tlog = TrainLog(out, start if ckpt is not None else None) if main else None
    if main:
        remove_stale(out)
    bar = ProgressBar(steps, start) if main else None
    window: dict[str, float] = {}
    window_steps, window_t = 0, time.perf_counter()
    last_loss, last_val, saved_once = math.nan, None, False
    skipped = int(ckpt.info.get("nan_skipped", 0)) if ckpt is not None else 0
    try:
        for step in range(start, steps):
            # ---- micro-steps: forward, loss, backward (gradients accumulate)
            step_loss, step_logs = torch.zeros((), device=accelerator.device), {}
            for micro in range(accum):
                positions, indices = plan[(step - start) * accum + micro]
                keys = [(0, i) for i in indices]
                loss, logs = objective.loss(next(batches), keys, positions, STREAM_TRAIN, step, steps)
                scaled = loss / accum
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                step_loss += loss.detach().float() / accum
                for k, v in logs.items():
                    step_logs[k] = step_logs.get(k, 0.0) + float(v) / accum
            # ---- sync point: check, average, clip, step
            step_loss = mean_over_processes(step_loss, world)
            step_lr = optimizer.param_groups[0]["lr"]
            done = step + 1
            if torch.isfinite(step_loss):
                _optimizer_step(params, optimizer, scheduler, scaler, config.max_grad_norm, world)
                if ema is not None:
                    ema.update()
                for k, v in {**step_logs, "loss": float(step_loss)}.items():
                    window[k] = window.get(k, 0.0) + v
                window_steps += 1
            else:
                kind = "NaN" if torch.isnan(step_loss) else "infinite"
                if skipped >= config.skip_nan_steps:
                    raise TrainingError(
                        f"loss became {kind} at step {done}; lower --lr (now {lr:g}) or --max-grad-norm, turn off "
                        f"mixed precision, or allow --skip-nan-steps (the checkpoints in {out} are kept)."
                    )
                skipped += 1  # no update; the step still counts, so data, schedule and resume stay aligned
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                log.warning("loss became %s at step %d: skipped it (%d of --skip-nan-steps %d)", kind, done,
                            skipped, config.skip_nan_steps)  # fmt: skip

            # ---- logs, validation, checkpoints
            log_due = done % config.log_every == 0 or done == steps
            val_due = config.val_every > 0 and (done % config.val_every == 0 or done == steps)
            if (log_due or val_due) and window_steps:
                totals = mean_logs(window, world, accelerator.device)
                record = {"step": done, "loss": totals.pop("loss") / window_steps, "lr": step_lr}
                record["it_s"] = window_steps / max(time.perf_counter() - window_t, 1e-9)
                record.update({k: v / window_steps for k, v in totals.items()})
                if skipped:
                    record["nan_skipped"] = skipped
                last_loss = record["loss"]
                window, window_steps, window_t = {}, 0, time.perf_counter()
                if val_due and main:
                    with eval_mode(modules, ema):
                        if val_set is not None:
                            last_val = record["val_loss"] = validation_loss(objective, val_set, bsz, done, steps)
                        grid = out / "samples" / f"step-{done:06d}.png"
                        sample_grid(objective, prompts, grid, config.seed, config.val_steps, config.val_guidance)
                if main:
                    tlog.add(record)
                    tlog.plot()
                    text = f"loss {record['loss']:.4f}  {record['it_s']:.2f} it/s"
                    bar.update(done, text)
                    bar.line(f"step {done}/{steps}  {text}")
            elif main:
                bar.update(done)
            if (config.checkpoint_every > 0 and done % config.checkpoint_every == 0) or done == steps:
                if main:
                    if not saved_once and remove_after(out, start):
                        log.warning("removed checkpoints in %s past step %d left by an earlier run", out, start)
                    saved_once = True
                    optim_state = {
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                    }
                    ema_state = ema.state_dict() if ema is not None else None
                    save_checkpoint(
                        out, done, {**info, "loss": last_loss, "nan_skipped": skipped,
                                    "method_training_state": method.training_state()}, method.state_dict(),
                        optim_state, ema_state,
                        config.keep_checkpoints,
                    )  # fmt: skip
                    tlog.plot()
                accelerator.wait_for_everyone()
    finally:
        if bar is not None:
            bar.close()

    # ---- the end: EMA weights, eval mode, artifact and run files
    if ema is not None:
        ema.copy_to_params()
    for m in modules:
        m.eval()
    if config.gradient_checkpointing:
        _gradient_checkpointing(components, method, False)
    if config.compile:
        _compile(components, method, False)  # later sampling needs no new graphs
    artifact = out / f"{method.name}.safetensors"
    if main:
        artifact = _finish(method, config, info, out, steps, tlog)
        if math.isnan(last_loss) and tlog.records:  # resumed at the last step: nothing new was logged
            last_loss = float(tlog.records[-1].get("loss", math.nan))
    accelerator.wait_for_everyone()
    return TrainResult(out, artifact, last_loss, steps, time.perf_counter() - t_start, last_val)


# --------------------------------------------------------------------- pieces
def _optimizer_step(params, optimizer, scheduler, scaler, max_grad_norm: float, world: int) -> None:
    average_gradients(params, world)
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=True)  # torch picks foreach on CUDA only
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def adamw(params: list, **kw) -> torch.optim.AdamW:
    """AdamW over parameters or parameter groups, fused (one kernel over all tensors) where torch has it for the
    parameters' device and dtype; torch only picks the fused or foreach paths by itself on CUDA, and the per-tensor
    loop it uses on the CPU costs ~2 ms per step for the ~100 tensors of a LoRA (measured in
    benchmarks/vs_diffusers.py)."""
    flat = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat)
    if fusable and len({p.device for p in flat}) == 1:
        try:
            return torch.optim.AdamW(params, fused=True, **kw)
        except (RuntimeError, ValueError):  # a dtype / device this torch build cannot fuse
            pass
    return torch.optim.AdamW(params, **kw)


def _restore(ckpt: Checkpoint, method: Method, optimizer, scheduler, scaler, ema: EMA | None, steps: int) -> int:
    """Load a checkpoint's weights and states; returns the step to go on from."""
    if ckpt.step > steps:
        raise ConfigError(f"checkpoint {ckpt.path} is at step {ckpt.step}, past steps={steps}; raise --steps.")
    if ema is not None and ckpt.ema_state is None:
        raise ConfigError(f"checkpoint {ckpt.path} has no EMA weights; resume without --ema or start a new --out.")
    method.load_state_dict(ckpt.method_state)
    method.load_training_state(ckpt.info.get("method_training_state") or {})
    optimizer.load_state_dict(ckpt.optim_state["optimizer"])
    scheduler.load_state_dict(ckpt.optim_state["scheduler"])
    if scaler is not None and ckpt.optim_state.get("scaler"):
        scaler.load_state_dict(ckpt.optim_state["scaler"])
    if ema is not None:
        ema.load_state_dict(ckpt.ema_state)
    log.info("resuming from %s (step %d)", ckpt.path, ckpt.step)
    return ckpt.step


def _objective(method: Method, config: TrainConfig, components: Components, res: int, accelerator) -> Objective:
    from diffusers import DDPMScheduler

    base_pt = components.scheduler.config.get("prediction_type", "epsilon")
    pt = config.prediction_type or base_pt
    if pt != base_pt:
        # the trained model predicts `pt`: sample (validation grid, saved pipeline) with a matching scheduler
        sched = components.scheduler
        components.scheduler = sched.__class__.from_config(sched.config, prediction_type=pt)
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config, prediction_type=pt)
    return Objective(
        components, method, noise_scheduler, pt, res, config.seed, config.noise_offset, config.caption_dropout,
        config.min_snr_gamma, config.cache_latents, config.cache_text, accelerator.autocast,
    )  # fmt: skip


def _lr_scheduler(config: TrainConfig, optimizer):
    from diffusers.optimization import get_scheduler

    name = config.lr_scheduler
    if name == "constant" and config.warmup_steps > 0:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.steps)


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


def _check_resume(ckpt: Checkpoint, config: TrainConfig, method: Method, world: int) -> None:
    info, path = ckpt.info, ckpt.path
    if info.get("method") != method.name:
        raise ConfigError(
            f"checkpoint {path} belongs to method {info.get('method')!r}, not {method.name!r}; resume with the same "
            f"method or pick another --out."
        )
    saved, now = info.get("config", {}), config.to_dict()
    for key in RESUME_INVARIANTS:
        if key in saved and saved[key] != now[key]:
            raise ConfigError(
                f"checkpoint {path} was trained with {key}={saved[key]!r}, not {now[key]!r}; resume with the same "
                f"data, batch and seed, or start a new --out."
            )
    if int(info.get("num_processes", 1)) != world:
        raise ConfigError(
            f"checkpoint {path} was trained on {info.get('num_processes')} processes, not {world}; resume with the "
            f"same number of processes (the global batch must not change)."
        )


def _finish(method: Method, config: TrainConfig, info: dict, out: Path, steps: int, tlog: TrainLog) -> Path:
    """Save the artifact, ``config.yaml`` (resolved options, flat) and ``tailor.json``; redraw the loss plot."""
    artifact = Path(method.save(out))
    # flat, like `tailor train <method> --config FILE` reads it: the run's options with defaults resolved
    options = {**config.to_dict(), **info["resolved"], "resume": None, **method.config.to_dict()}
    header = f"# tailor train {method.name} --config this-file reproduces the run\n"
    write_text(out / "config.yaml", header + yaml.safe_dump(options, sort_keys=False))
    base = getattr(method.components, "source", "") or config.base
    write_json(out / "tailor.json", {"method": method.name, "artifact": artifact.name, "base": base, "steps": steps})
    tlog.plot()
    return artifact
