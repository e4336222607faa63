"""Options of ELITE (Wei et al., ICCV 2023, *ELITE: Encoding Visual Concepts into Textual Embeddings for Customized
Text-to-Image Generation*): the image encoder and its layers, the mappers' width, the placeholder word, the two
training stages and the local mapper's lambda."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option

STAGES = ("global", "local")
GATES = ("max", "mean", "minmax")


@dataclass
class ELITEConfig(Config):
    """Official defaults: 5 words from CLIP layers [last, 4, 8, 12, 16] (the same fractions of a smaller tower's
    depth), MLP width 1024, placeholder ``S``, only the first word at sampling (``token_index`` 0), lambda 0.8; the
    global stage's loss adds 0.01 x mean |words|, the local stage's 1e-4 x mean |V_local| to a masked MSE."""

    paper: ClassVar[str] = "Wei et al., ICCV 2023, ELITE (arXiv:2302.13848)"

    stage: str = option("global", "training stage: 'global' (mapper -> words, K/V copies) or 'local' (patch tokens)")
    global_mapper: str = option(
        "", "local stage: the trained global stage to start from (a training --out folder, an elite file or 'world')"
    )
    image_encoder: str = option(
        "world", "CLIPVisionModelWithProjection: 'world' (the zoo's vision tower), 'tiny' (tests) or a local folder"
    )
    vision_layers: list[int] = option([], "hidden states the mappers read (-1 = last); default: the official depths")
    mapper_width: int = option(1024, "hidden width of each mapper MLP (official 1024)")
    placeholder: str = option("S", "the placeholder word the image's word(s) replace in the prompt (one token)")
    token_index: int = option(0, "which global word is injected at sampling (-1: all of them, the official 'full')")
    llambda: float = option(0.8, "local mapper: weight of the gated local attention (official inference 0.8)")
    gate: str = option(
        "max",
        "local mapper's gate from the placeholder's attention map m: 'max' (m / max m, official) or 'mean' "
        "(max(m - mean m, 0) / (max m - mean m): only where the placeholder stands out of its own mean; the world "
        "weights) or 'minmax' ((m - min m) / (max m - min m))",
    )
    reg_global: float = option(0.01, "global stage: weight of the mean |word| penalty")
    reg_local: float = option(1e-4, "local stage: weight of the mean |local value| penalty")
    word_init: str = option(
        "official",
        "init of the global MLPs' last layers: 'official' (PyTorch's default: words start ~20x the norm of a token "
        "embedding) or 'token' (scaled down to the base's token-embedding norm)",
    )
    box_pad: float = option(0.1, "the global mapper reads the reference cropped to its mask's box grown by this")

    def validate(self) -> None:
        c = self.check
        c(self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}; got {self.stage!r}.")
        c(bool(str(self.image_encoder).strip()), "image_encoder is empty; pass 'world' or an image-encoder folder.")
        c(self.mapper_width >= 1, f"mapper_width must be positive; got {self.mapper_width}.")
        c(bool(self.placeholder.strip()) and " " not in self.placeholder.strip(),
          f"placeholder must be one word; got {self.placeholder!r}.")  # fmt: skip
        c(self.token_index >= -1, f"token_index must be -1 (all words) or a word index; got {self.token_index}.")
        c(0.0 <= self.llambda <= 5.0, f"llambda must lie in [0, 5]; got {self.llambda}.")
        c(self.gate in GATES, f"gate must be one of {', '.join(GATES)}; got {self.gate!r}.")
        c(self.reg_global >= 0 and self.reg_local >= 0, "reg_global and reg_local must not be negative.")
        c(self.word_init in ("token", "official"), f"word_init must be 'token' or 'official'; got {self.word_init!r}.")
        c(0.0 <= self.box_pad <= 1.0, f"box_pad must lie in [0, 1]; got {self.box_pad}.")
