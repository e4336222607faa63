"""Options of Character-Adapter (Ma et al. 2024, *Character-Adapter: Prompt-Guided Region Control for High-Fidelity
Character Customization*): the IP-Adapter every region goes through, the region words and how regions are cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tailor.core.config import Config, option


@dataclass
class CharacterAdapterConfig(Config):
    """Training-free: an IP-Adapter's projections read each region of the reference on its own; region outputs are
    gated by where their words attend in the image being generated."""

    paper: ClassVar[str] = "Ma et al. 2024, Character-Adapter (arXiv:2406.16537)"

    ip_adapter: str = option(
        "world", "the IP-Adapter every region uses (training folder, file or shipped name; untrained:ENCODER builds "
        "a fresh one, for tests)"
    )  # fmt: skip
    regions: list[str] = option(
        [], "region words: segmenter classes to cut from the reference, each a word of the prompt (empty: every "
        "class the segmenter finds in the reference)"
    )  # fmt: skip
    segmenter: str = option(
        "segmenter_scenes", "the segmenter that cuts the regions: a world oracle name (segmenter_scenes: trained on "
        "one-object renders and multi-object scenes; segmenter: the first, one-object renders only) or its file"
    )  # fmt: skip
    exclusive: bool = option(True, "each latent pixel takes only the region whose word attends to it most")
    min_area: float = option(0.01, "smallest fraction of the reference a found region must cover")

    def validate(self) -> None:
        self.check(bool(str(self.ip_adapter).strip()), "ip_adapter is empty; pass 'world' or an IP-Adapter file.")
        self.check(bool(str(self.segmenter).strip()), "segmenter is empty; pass 'segmenter_scenes' or a file.")
        self.check(0.0 <= self.min_area < 1.0, f"min_area must lie in [0, 1); got {self.min_area}.")
