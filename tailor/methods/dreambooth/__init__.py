"""dreambooth: subject-driven fine-tuning with a rare-token identifier and prior preservation (Ruiz et al. 2022)."""

import os
import tempfile

from tailor.core.method import MethodSpec
from tailor.core.surface import BenchRow
from tailor.methods.dreambooth.config import DreamBoothConfig
from tailor.methods.dreambooth.method import DreamBoothMethod

#: prior preservation as the world benches run it: 16 class images sampled in 20 steps at guidance 5
PRIOR = {"num_class_images": 16, "class_steps": 20, "class_guidance": 5.0}

SPEC = MethodSpec(
    name="dreambooth",
    method=DreamBoothMethod,
    config=DreamBoothConfig,
    summary="subject-driven fine-tuning: 'a [V] [class]' + prior-preservation loss; full UNet or LoRA",
    paper="Ruiz et al. 2022 (DreamBooth)",
    builds_on=("finetune", "lora"),
    subject_fields={"token": "identifier", "class": "class_word"},
    bench=(
        BenchRow(
            "personalize",
            "dreambooth_lora",
            120,
            5e-3,
            PRIOR,
            batch_size=2,
            note="paper LoRA lr 1e-4 x ~1000 steps on SD; prior weight 1, 16 class images, batch 2 instance + 2 class",
        ),
        BenchRow(
            "personalize",
            "dreambooth_lora_te",
            120,
            5e-3,
            {**PRIOR, "train_text_encoder": True},
            batch_size=2,
            note="DreamBooth-LoRA with LoRA in the text encoder too (the identifier's embedding is untrained on the "
            "world tokenizer, so a frozen text encoder gives the UNet almost nothing to bind to)",
        ),
        BenchRow(
            "personalize",
            "dreambooth",
            120,
            1e-4,
            {**PRIOR, "lora_rank": 0},
            batch_size=2,
            note="full UNet; paper lr 5e-6 x ~1000 steps on SD; prior loss weight 1, 16 class images",
            default=False,
        ),
    ),
    test_options={
        "num_class_images": 2,
        "class_steps": 1,
        "class_dir": os.path.join(tempfile.gettempdir(), "tailor-test-class-images"),
    },
)

__all__ = ["SPEC", "DreamBoothConfig", "DreamBoothMethod"]
