"""Options of Textual Inversion (Gal et al. 2022, "An Image is Worth One Word"): a new placeholder token S* whose
embedding vector(s) are the only trained weights; defaults follow the paper and A1111."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class TextualInversionConfig(Config):
    """The placeholder token, its initialisation and the training captions."""

    paper: ClassVar[str] = (
        "Gal et al. 2022, An Image is Worth One Word: Personalizing Text-to-Image Generation using Textual Inversion"
    )

    token: str = option("<s*>", "placeholder token S* written in prompts (a loaded A1111 file's token is its name)")
    init_word: str = option("*", "word whose token embedding(s) initialise the new vectors (A1111's default '*')")
    num_vectors: int = option(
        1, "vectors per token; the prompt's token expands to <token> <token>_1 ... (multi-vector)"
    )
    templates: str = option(
        "object",
        "training captions: object ('a photo of a {token}', ... the paper's CLIP ImageNet templates), style "
        "('a painting in the style of {token}', ...) or caption (the data's captions, the token prepended unless "
        "present)",
        choices=("object", "style", "caption"),
    )

    def validate(self) -> None:
        c = self.check
        c(
            bool(self.token.strip()) and not any(ch.isspace() for ch in self.token),
            f"token must be one word without spaces; got {self.token!r}.",
        )
        c(
            1 <= self.num_vectors <= 75,
            f"num_vectors must lie in 1..75 (a prompt holds 75 tokens); got {self.num_vectors}.",
        )
