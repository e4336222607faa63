"""dreambooth: subject-driven fine-tuning with a rare-token identifier and prior preservation (Ruiz et al. 2022)."""

import os
import tempfile

from tailor.core.method import MethodSpec
from tailor.methods.dreambooth.config import DreamBoothConfig
from tailor.methods.dreambooth.method import DreamBoothMethod

SPEC = MethodSpec(
    name="dreambooth",
    method=DreamBoothMethod,
    config=DreamBoothConfig,
    summary="subject-driven fine-tuning: 'a [V] [class]' + prior-preservation loss; full UNet or LoRA",
    paper="Ruiz et al. 2022 (DreamBooth)",
    builds_on=("finetune", "lora"),
    subject_fields={"token": "identifier", "class": "class_word"},
    test_options={
        "num_class_images": 2,
        "class_steps": 1,
        "class_dir": os.path.join(tempfile.gettempdir(), "tailor-test-class-images"),
    },
)

__all__ = ["SPEC", "DreamBoothConfig", "DreamBoothMethod"]
