"""textual_inversion: new placeholder token(s) S* learned in the frozen text encoder's embedding space (Gal et al.)."""

from tailor.core.method import MethodSpec
from tailor.methods.textual_inversion.config import TextualInversionConfig
from tailor.methods.textual_inversion.method import TextualInversionMethod

SPEC = MethodSpec(
    name="textual_inversion",
    method=TextualInversionMethod,
    config=TextualInversionConfig,
    summary="learn a new placeholder token S* (one or several embedding vectors) for a subject or style",
    paper="Gal et al. 2022 (An Image is Worth One Word)",
    subject_fields={"token": "token", "class": "init_word"},
    # the conformance prompt "a photo of a red star" must use the token for a training step to show
    test_options={"token": "star", "init_word": "shape"},
)

__all__ = ["SPEC", "TextualInversionConfig", "TextualInversionMethod"]
