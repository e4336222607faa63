"""ODGEN's first stage (Zhu et al. 2024, section 3.1): the base fine-tuned on the target domain's real images, both
whole scenes and each annotated object's crop, so the objects it generates for the image list look like the domain's.

Data: ``coco:DIR`` (:mod:`tailor.synth.real_data`), a real detection folder's whole scenes and square box crops,
captioned as synthesis prompts its objects.

:func:`finetune` trains a small LoRA (rank 4 on the UNet's attention) on them (``tailor synth --finetune STEPS``);
``tailor synth --lora FILE`` bakes a trained one into the base before synthesis, so both the objects of the image list
and the UNet under the ODGEN ControlNet come from the fine-tuned base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tailor.errors import ConfigError
from tailor.synth.real_data import PREFIX

#: the LoRA of ``--finetune``: rank, learning rate, batch (AdamW, constant after 20 warm-up steps)
RANK, LR, BATCH, WARMUP = 4, 5e-4, 8, 20
FINETUNE_DIR = "finetune"


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"--finetune must be a number of training steps, at least 1; got {steps}.")
    return steps


def finetune(real: str | Path, out: str | Path, steps: int, base: str = "world", seed: int = 0) -> Path:
    """Train (or resume, or reuse when done) the LoRA of ODGEN's first stage on ``real``'s scenes and crops into
    ``out``; returns ``out`` (its ``lora.safetensors``). Progress goes to the training loop's log."""
    import tailor
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    steps, out = check_steps(steps), Path(out)
    record = out / "tailor.json"
    if (out / "lora.safetensors").is_file() and record.is_file():
        if json.loads(record.read_text()).get("steps") == steps:
            return out
    cfg = TrainConfig(base=base, out=str(out), data=f"{PREFIX}{Path(real).resolve()}", steps=steps,
                      batch_size=BATCH, lr=LR, lr_scheduler="constant", warmup_steps=min(WARMUP, steps - 1),
                      seed=seed, checkpoint_every=100, keep_checkpoints=1, log_every=10,
                      resume="latest" if list_checkpoints(out) else None)  # fmt: skip
    tailor.train(tailor.get_spec("lora").method(rank=RANK), cfg)
    return out


def bake_lora(components, lora: str | Path) -> None:
    """Fuse the LoRA ``lora`` (a file or a training ``--out`` folder) into ``components`` for good."""
    import tailor
    from tailor.compose import load_kind
    from tailor.core.lora import bake

    method = load_kind(str(lora), "lora")
    tailor.Pipeline(components).attach(method, weight=1.0)  # resolves the weights against this base
    bake([method.lora], [1.0])
