"""PhotoVerse's training items and its shipped world weights.

:class:`ReferenceViews`: each world face (``--data world:faces``) gets ``id_pixel_values``, another render of the same
identity (other pose, light, background, style: :class:`tailor.faces.inputs.SameIdentityDataset`), as the one
reference the adapters read and the face-ID loss compares with, and its caption names the face by the placeholder
before the class word (``a woman, on wood, photo`` -> ``a S woman, on wood, photo``). Items without a class word keep
their caption and are their own reference (the pseudo-word is then not injected).

:func:`shipped`: ``--photoverse world`` / ``--photoverse photoverse`` -> ``weights/adapters/photoverse``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from tailor.core.placeholder import insert_before
from tailor.errors import InputError

NAMES = ("world", "photoverse")


class ReferenceViews(Dataset):
    def __init__(self, dataset: Dataset, placeholder: str):
        from tailor.faces.inputs import SameIdentityDataset

        self.dataset, self.placeholder = SameIdentityDataset(dataset), placeholder

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[i])
        item.setdefault("id_pixel_values", item["pixel_values"])
        attrs = item.get("attrs") if isinstance(item.get("attrs"), dict) else {}
        cls = attrs.get("cls")
        if cls:
            item["caption"] = insert_before(str(item["caption"]), str(cls), self.placeholder)
        return item


def shipped(name: str) -> Path | None:
    """``world`` / ``photoverse`` -> the folder of the world PhotoVerse weights."""
    if name not in NAMES:
        return None
    from tailor.world.zoo import WEIGHTS

    folder = WEIGHTS / "adapters" / "photoverse"
    if not (folder / "tailor.json").is_file():
        raise InputError("the world PhotoVerse weights are not in this install; train them with `python -m "
                         "zoo.photoverse train RUNS`, then `... export RUNS`, or pass a trained model.")  # fmt: skip
    return folder


def shipped_names() -> list[str]:
    return list(NAMES)
