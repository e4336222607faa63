"""Training data: image folders with captions, registered sources (world data), the seeded sample order, batching
and caches.

Sources (``TrainConfig.data``): a folder of images whose captions come from same-stem ``.txt`` files or a
``metadata.jsonl`` (``file_name`` + ``text``), or a registered ``data`` resource (:mod:`tailor.core.resources`): the
world package registers ``world`` / ``world:<kind>[:<styles>][:ids=A-B]`` / ``world-subject:<name or spec>``
(:mod:`tailor.world.sources`); ``caption`` overrides all.

Order: sample ``p`` of the run (a global position) reads item ``perm_e[p mod N]`` of the epoch ``e = p // N``, where
``perm_e`` is a permutation seeded by ``(seed, e)``; a resumed run therefore sees exactly the same items.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from tailor.core import resources
from tailor.core.images import MAX_PIXELS, list_images, load_image, to_tensor
from tailor.core.training.noise import STREAM_DATA, STREAM_SPLIT, generator
from tailor.errors import InputError

log = logging.getLogger("tailor")


# --------------------------------------------------------------------- folders
def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic) and crop the centre square."""
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def read_captions(folder: Path, files: list[Path], fixed: str | None, fallback: str | None = None) -> list[str]:
    """One caption per image: ``fixed``, else ``metadata.jsonl``, else the same-stem ``.txt`` file (kohya-style),
    else ``fallback``."""
    if fixed is not None:
        return [fixed] * len(files)
    meta: dict[str, str] = {}
    meta_path = folder / "metadata.jsonl"
    if meta_path.is_file():
        for n, line in enumerate(_read_caption(meta_path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                meta[str(row["file_name"])] = str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{meta_path} line {n} is not a JSON object with file_name and text.") from None
            if not (folder / str(row["file_name"])).is_file():  # hardening: a row naming no image is an error
                raise InputError(f"{meta_path} line {n} names {row['file_name']!r}, which is not in {folder}; fix it.")
    captions = []
    for f in files:
        if f.name in meta:
            captions.append(meta[f.name])
        elif f.with_suffix(".txt").is_file():
            captions.append(_read_caption(f.with_suffix(".txt")))
        elif fallback is not None:
            captions.append(fallback)
        else:
            raise InputError(
                f"image {f} has no caption: add {f.with_suffix('.txt').name}, a metadata.jsonl, "
                f"or pass a fixed --caption."
            )
    return captions


def _read_caption(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as e:
        raise InputError(f"caption file {path} is not UTF-8 text (byte {e.start}); re-save it as UTF-8.") from None


def check_header(path: Path) -> tuple[int, int]:
    """Fail before training, not hours into it, on a file that is not an image (reads the header only)."""
    if path.stat().st_size == 0:
        raise InputError(f"image {path} is empty (0 bytes); replace or remove it.")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InputError(
                    f"image {path} is {img.width}x{img.height}, too large to load (a decompression bomb?); downscale "
                    f"it below {MAX_PIXELS // 1_000_000} megapixels or remove it."
                )
            size = img.size
            img.verify()  # chunk checksums and structure, without decoding the pixels
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path} is not a readable image ({e.__class__.__name__}); replace or remove it.") from e
    return size


#: bytes of decoded, cropped 8-bit images a :class:`FolderDataset` keeps in memory: a DreamBooth subject with its
#: class images, or a small LoRA / TI set, is read and decoded from disk once, not every step (~0.5 ms an image at
#: 64 px, several ms at 512 px); 128 MiB = ~170 images at 512 px, the rest are decoded on every access
DECODED_CACHE_BYTES = 128 * 2**20


class KeptItems:
    """Per-index values made once and kept, up to ``budget`` bytes in all; past it a value is made on every access
    (for deterministic datasets: the value is the same either way)."""

    def __init__(self, budget: int):
        self.budget, self.used, self.items = budget, 0, {}

    def get(self, i: int, make: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
        value = self.items.get(i)
        if value is None:
            value = make()
            n = nbytes(value)
            if self.used + n <= self.budget:
                self.items[i] = value
                self.used += n
        return value


class FolderDataset(Dataset):
    """Images of a folder (centre-cropped to ``size``) with their captions.

    Items are deterministic (no random augmentation), so the decoded crops are kept, up to ``cache_bytes``
    (default :data:`DECODED_CACHE_BYTES`; 0 = decode on every access): the tensors are the same either way."""

    def __init__(
        self,
        folder: str | Path,
        size: int,
        caption: str | None = None,
        default_caption: str | None = None,
        cache_bytes: int | None = None,
    ):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        self.captions = read_captions(self.folder, self.files, caption, default_caption)
        small = [f.name for f in self.files if min(check_header(f)) < size]
        if small:
            log.warning("%d image(s) smaller than %d px are upscaled (e.g. %s)", len(small), size, small[0])
        self.size = size
        self._decoded = KeptItems(DECODED_CACHE_BYTES if cache_bytes is None else cache_bytes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self._decoded.get(
            i,
            lambda: center_crop_resize(load_image(self.files[i]), self.size),
            lambda im: im.width * im.height * len(im.getbands()),
        )
        return {"pixel_values": to_tensor(img), "caption": self.captions[i]}


class CaptionOverride(Dataset):
    """Another dataset with every caption replaced by one fixed caption."""

    def __init__(self, dataset: Dataset, caption: str):
        self.dataset, self.caption = dataset, caption

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "caption": self.caption}


# --------------------------------------------------------------------- entry point
def build_datasets(
    data: str,
    size: int,
    seed: int,
    caption: str | None = None,
    val_fraction: float = 0.0,
    default_caption: str | None = None,
) -> tuple[Dataset, Dataset | None]:
    """(training set, held-out set or None) for a ``TrainConfig.data`` source."""
    source = str(data)
    folder = Path(source)
    # a registered source (``world:faces``: the world package's) unless the data is a path with a folder part
    factory = None if len(folder.parts) > 1 and folder.is_dir() else resources.resolve("data", source)
    if factory is not None:
        train, val = factory(size, seed, val_fraction > 0)
        if caption is not None:
            train = CaptionOverride(train, caption)
            val = None if val is None else CaptionOverride(val, caption)
        return train, val
    if not folder.is_dir():
        raise InputError(
            f"training data {source!r} is neither an existing image folder nor one of {resources.choices('data')}; "
            f"check the path."
        )
    full = FolderDataset(folder, size, caption, default_caption)
    if val_fraction <= 0:
        return full, None
    n = len(full)
    n_val = max(1, round(val_fraction * n))
    if n - n_val < 1:
        raise InputError(
            f"{folder} has {n} images: too few to hold out {val_fraction:.0%}; add images or lower val_fraction."
        )
    order = torch.randperm(n, generator=generator(seed, STREAM_SPLIT)).tolist()
    return Subset(full, sorted(order[n_val:])), Subset(full, sorted(order[:n_val]))


# --------------------------------------------------------------------- order and batches
class SampleOrder:
    """Global sample position -> dataset index, through a seeded permutation per epoch."""

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise InputError("the training data holds no items; add images.")
        self.size, self.seed = size, seed
        self._perms: dict[int, list[int]] = {}

    def index(self, position: int) -> int:
        epoch, k = divmod(position, self.size)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = torch.randperm(self.size, generator=generator(self.seed, STREAM_DATA, epoch)).tolist()
            self._perms = {epoch: perm}  # positions only move forward: keep one epoch
        return perm[k]


def micro_positions(micro: int, batch_size: int, rank: int, num_processes: int) -> list[int]:
    """Global positions of this process's samples in global micro-step ``micro``."""
    start = micro * batch_size * num_processes + rank * batch_size
    return list(range(start, start + batch_size))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-shaped tensors; keep everything else (captions, attrs) as lists."""
    out: dict[str, Any] = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


class _Batches(torch.utils.data.Sampler):
    def __init__(self, index_lists: list[list[int]]):
        self.index_lists = index_lists

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.index_lists)

    def __len__(self) -> int:
        return len(self.index_lists)


def iterate_batches(dataset: Dataset, index_lists: list[list[int]], num_workers: int = 0) -> Iterator[dict]:
    """Collated batches of the given index lists, in order (optionally through DataLoader workers)."""
    if num_workers == 0:
        for idx in index_lists:
            yield collate([dataset[i] for i in idx])
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_Batches(index_lists),
        num_workers=num_workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    yield from loader
