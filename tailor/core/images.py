"""Image input/output: robust loading with clear errors, tensors, grids and generation outputs."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tailor.errors import InputError

log = logging.getLogger("tailor")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
_warned: set[str] = set()
MAX_PIXELS = 64_000_000  # refuse decompression bombs well before they exhaust memory


def open_image(path: str | Path) -> Image.Image:
    """Open and load an image file in its own mode (alpha kept), refusing a missing, empty, broken or oversized file
    in one sentence; :func:`load_image` converts the result to RGB."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(f"image {path} is a broken or looping symbolic link; fix or remove the link.")
    if not path.is_file():
        raise InputError(f"image {path} does not exist; check the path.")
    if path.stat().st_size == 0:
        raise InputError(f"image {path} is empty (0 bytes); replace it with a real image.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            if img.width * img.height > MAX_PIXELS:
                raise InputError(f"image {path} is {img.width}x{img.height}, too large to load; downscale it first.")
            img.load()
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise InputError(f"{path} is not a readable image ({e.__class__.__name__}); replace or re-save it.") from e
    return img


def image_input(value, what: str) -> Image.Image:
    """A method's image input — a file (through :func:`open_image`), a PIL image or a uint8 array — in its own
    mode, so a foreground's alpha channel survives; ``what`` names the input in the refusal."""
    if isinstance(value, str | Path):
        return open_image(value)
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) and value.ndim in (2, 3):
        return Image.fromarray(value.astype(np.uint8))
    raise InputError(f"{what} must be an image file, a PIL image or a uint8 array; got {type(value).__name__}.")


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB; unusual but usable modes (CMYK, 16-bit, palette, alpha) are converted."""
    path = Path(path)
    img = open_image(path)
    img_mode = img.mode
    if img.mode != "RGB":
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            arr = (arr / max(arr.max(), 1) * 255).astype(np.uint8)
            img = Image.fromarray(arr).convert("RGB")
        elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba).convert("RGB")
        else:
            img = img.convert("RGB")
        if str(path) not in _warned:  # once per file, not once per epoch
            _warned.add(str(path))
            log.warning("converted %s from %s to RGB", path.name, img_mode)
    return img


def to_tensor(img: Image.Image | np.ndarray, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """An RGB image as a float tensor 3xHxW in [-1, 1], optionally resized (bicubic) to ``size``."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if size is not None:
        wh = (size, size) if isinstance(size, int) else (size[1], size[0])
        if img.size != wh:
            img = img.resize(wh, Image.BICUBIC)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_pil(x: torch.Tensor | np.ndarray) -> list[Image.Image]:
    """Images from a float batch in [0, 1] (NHWC numpy or NCHW tensor)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)) for a in x]


def make_grid(images: list[Image.Image], cols: int | None = None, pad: int = 2) -> Image.Image:
    """Tile images into one grid (row-major), ``cols`` defaulting to about sqrt(n)."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    images = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    grid = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), (255, 255, 255))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        grid.paste(im.convert("RGB"), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"image folder {folder} does not exist; check the path.")
    from tailor.core.fsguard import NOT_DATA  # grid.png & co: tailor's files for a person, never data

    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.name not in NOT_DATA
    )
    if not files:
        raise InputError(f"{folder} holds no images (.png/.jpg/.webp); add some or pick another folder.")
    return files
