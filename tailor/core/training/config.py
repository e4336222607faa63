"""``TrainConfig``: every option of the one training loop (the CLI builds ``tailor train`` flags from it).

Counts are in optimizer steps (``steps``, ``checkpoint_every``, ``val_every``, ``log_every``); ``batch_size`` is per
process, so one optimizer step sees ``batch_size * grad_accum * num_processes`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailor.core.config import Config, option

#: options that fix which samples, noise and timesteps a step sees; a resume must not change them
RESUME_INVARIANTS = (
    "data",
    "caption",
    "resolution",
    "batch_size",
    "grad_accum",
    "seed",
    "caption_dropout",
    "noise_offset",
    "timestep_sampling",
    "val_fraction",
)


@dataclass
class TrainConfig(Config):
    """Options of :func:`tailor.core.training.train`, shared by every method."""

    base: str = option("world", "base model: 'world', 'tiny', a diffusers folder or a .safetensors checkpoint")
    base_config: str | None = option(None, "diffusers config folder for a single-file base checkpoint")
    out: str = option("outputs/train", "output folder (artifact, checkpoints, logs, samples)")
    data: str = option(
        "world",
        "training data: 'world', 'world:objects|faces|scenes|mixed[:all|photo+sketch+...]' (styles; default photo), "
        "'world-subject:<name or spec>', 'coco:DIR' (a detection folder's whole images and box crops), or a folder "
        "of images with captions in same-stem .txt files or a metadata.jsonl (file_name, text)",
    )
    caption: str | None = option(None, "one caption for every image (overrides the data's captions)")
    default_caption: str | None = option(None, "caption of folder images that have no .txt / metadata.jsonl caption")
    resolution: int | None = option(None, "training image size in pixels (default: the base's default size)")
    steps: int = option(500, "number of optimizer steps")
    batch_size: int = option(4, "images per micro-step and process")
    grad_accum: int = option(1, "micro-steps accumulated per optimizer step")
    lr: float | None = option(None, "learning rate (default: the method's default_lr)")
    lr_scheduler: str = option(
        "constant",
        "learning-rate schedule (constant becomes constant_with_warmup when warmup_steps > 0)",
        choices=("constant", "linear", "cosine", "constant_with_warmup"),
    )
    warmup_steps: int = option(0, "linear learning-rate warmup, in optimizer steps")
    weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this value (0 = no clipping)")
    seed: int = option(0, "seed of data order, noise, timesteps and caption dropout")
    checkpoint_every: int = option(0, "save a resumable checkpoint every N optimizer steps (0 = only at the end)")
    keep_checkpoints: int = option(3, "keep the newest N checkpoints (0 = keep all)")
    resume: str | None = option(None, "resume from 'latest' (newest complete checkpoint in out) or a checkpoint")
    mixed_precision: str = option("no", "autocast precision (fp16 needs a GPU)", choices=("no", "fp16", "bf16"))
    gradient_checkpointing: bool = option(False, "trade compute for memory in the UNet (and a trained text encoder)")
    compile: bool = option(
        False,
        "torch.compile the UNet and the method's own diffusers models (inductor; needs a C++ compiler on the CPU): a "
        "one-off compile (minutes cold, seconds from inductor's on-disk cache), then faster steps and a higher peak "
        "RSS (benchmarks/compile_probe.py)",
    )
    cache_latents: bool = option(False, "encode each image with the VAE once and reuse its latent distribution")
    cache_text: bool = option(False, "encode each caption once (only when the method does not train the text encoder)")
    ema: bool = option(False, "keep an exponential moving average of the trained weights and save it")
    ema_decay: float = option(0.999, "EMA decay")
    min_snr_gamma: float | None = option(None, "min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5.0")
    noise_offset: float = option(0.0, "add this much per-channel offset noise (e.g. 0.05)")
    prediction_type: str | None = option(None, "epsilon or v_prediction (default: the base scheduler's)")
    caption_dropout: float = option(0.0, "probability of training a sample with an empty caption")
    timestep_sampling: str = option(
        "method",
        "training timesteps: method (the method's own: uniform, cubic for T2I-Adapter), uniform, or cubic "
        "t = (1 - u^3) T (more of the large t where a sample gets its layout; T2I-Adapter's sampling)",
        choices=("method", "uniform", "cubic"),
    )
    val_every: int = option(0, "save a sample grid (and validation loss) every N optimizer steps (0 = never)")
    val_prompts: list[str] = option([], "prompts of the sample grid (default: two captions from the data)")
    val_steps: int = option(20, "sampler steps of the sample grid")
    val_guidance: float = option(5.0, "guidance scale of the sample grid")
    val_fraction: float = option(
        0.0, "hold out this fraction of a folder dataset (or a fixed set of world items) for validation loss"
    )
    skip_nan_steps: int = option(
        0, "skip up to N optimizer steps whose loss is NaN or infinite (no update, counted) before stopping"
    )
    log_every: int = option(10, "write a log line every N optimizer steps")
    num_workers: int = option(0, "data-loading worker processes")

    def validate(self) -> None:
        c = self.check
        c(self.steps >= 1, f"steps must be at least 1; got {self.steps}.")
        c(self.batch_size >= 1, f"batch_size must be at least 1; got {self.batch_size}.")
        c(self.grad_accum >= 1, f"grad_accum must be at least 1; got {self.grad_accum}.")
        c(self.lr is None or self.lr > 0, f"lr must be positive; got {self.lr}.")
        c(self.warmup_steps >= 0, f"warmup_steps must be 0 or more; got {self.warmup_steps}.")
        c(self.weight_decay >= 0, f"weight_decay must be 0 or more; got {self.weight_decay}.")
        c(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "adam_beta1 and adam_beta2 must lie in [0, 1).")
        c(self.adam_epsilon > 0, f"adam_epsilon must be positive; got {self.adam_epsilon}.")
        c(self.max_grad_norm >= 0, f"max_grad_norm must be 0 (off) or positive; got {self.max_grad_norm}.")
        c(self.seed >= 0, f"seed must be 0 or more; got {self.seed}.")
        c(self.checkpoint_every >= 0, f"checkpoint_every must be 0 (at the end) or more; got {self.checkpoint_every}.")
        c(self.keep_checkpoints >= 0, f"keep_checkpoints must be 0 (keep all) or more; got {self.keep_checkpoints}.")
        c(self.resolution is None or self.resolution >= 8, f"resolution must be 8 or more; got {self.resolution}.")
        c(0 < self.ema_decay < 1, f"ema_decay must lie in (0, 1); got {self.ema_decay}.")
        c(
            self.min_snr_gamma is None or self.min_snr_gamma > 0,
            f"min_snr_gamma must be positive; got {self.min_snr_gamma}.",
        )
        c(self.noise_offset >= 0, f"noise_offset must be 0 or more; got {self.noise_offset}.")
        c(
            self.prediction_type in (None, "epsilon", "v_prediction"),
            f"prediction_type must be epsilon or v_prediction; got {self.prediction_type!r}.",
        )
        c(0 <= self.caption_dropout <= 1, f"caption_dropout must lie in [0, 1]; got {self.caption_dropout}.")
        c(self.val_every >= 0, f"val_every must be 0 (never) or more; got {self.val_every}.")
        c(self.val_steps >= 1, f"val_steps must be at least 1; got {self.val_steps}.")
        c(0 <= self.val_fraction < 1, f"val_fraction must lie in [0, 1); got {self.val_fraction}.")
        c(self.skip_nan_steps >= 0, f"skip_nan_steps must be 0 or more; got {self.skip_nan_steps}.")
        c(self.log_every >= 1, f"log_every must be at least 1; got {self.log_every}.")
        c(self.num_workers >= 0, f"num_workers must be 0 or more; got {self.num_workers}.")
        c(bool(str(self.data).strip()), "data is empty; pass 'world' or a folder of images.")
        c(bool(str(self.out).strip()), "out is empty; pass an output folder.")
        c(self.resume is None or bool(str(self.resume).strip()), "resume is empty; pass 'latest' or a checkpoint.")
