"""``tailor generate`` flags of IP-Adapter (Ye et al. 2023): which adapter file gets which reference image.

Two spellings, both repeatable:

* ``--ip-adapter PATH --ip-image IMG[:scale]``: the i-th ``--ip-image`` pairs with the i-th ``--ip-adapter``. Each
  flag keeps its own order (click does not keep the order *between* different flags, so pairing is by index, not by
  position on the command line); the counts must match.
* ``--ip-adapter PATH=IMG[+IMG2...][:scale]``: the pair in one value (several ``+``-joined images give one adapter
  several reference images; their tokens concatenate). Such values need no ``--ip-image``.

``scale`` is the attachment weight (default 1.0; the paper uses ~0.5 together with a text prompt), in [0, 5].
"""

from __future__ import annotations

from tailor.core.images import load_image
from tailor.errors import ConfigError

MAX_SCALE = 5.0


def _image_and_scale(spec: str, flag: str) -> tuple[list[str], float]:
    path, sep, last = spec.rpartition(":")
    scale = 1.0
    if sep and path:
        try:
            scale = float(last)
            spec = path
        except ValueError:
            pass
    if not 0.0 <= scale <= MAX_SCALE:
        raise ConfigError(f"{flag} {spec!r}: scale {scale:g} is outside [0, {MAX_SCALE:g}]; use e.g. IMG:0.5.")
    images = [p for p in spec.split("+") if p]
    if not images:
        raise ConfigError(f"{flag} needs an image file; got {spec!r}.")
    return images, scale


def parse_ip_adapters(adapters: list[str] | None, images: list[str] | None) -> list[tuple[str, list[str], float]]:
    """(adapter path, reference image paths, scale) per adapter; raises ConfigError on a mismatched pairing."""
    adapters, images = list(adapters or []), list(images or [])
    plain = [a for a in adapters if "=" not in a]
    if len(plain) != len(images):
        raise ConfigError(
            f"{len(plain)} --ip-adapter file(s) without an image but {len(images)} --ip-image value(s); give one "
            f"--ip-image per --ip-adapter (paired in order) or write --ip-adapter PATH=IMG[:scale]."
        )
    out = []
    pending = iter(images)
    for spec in adapters:
        if "=" in spec:
            path, _, rest = spec.partition("=")
            imgs, scale = _image_and_scale(rest, "--ip-adapter")
        else:
            path = spec
            imgs, scale = _image_and_scale(next(pending), "--ip-image")
        out.append((path, imgs, scale))
    return out


def attach_ip_adapters(pipe, adapters: list[str] | None, images: list[str] | None) -> None:
    """Load each adapter and attach it with its reference image(s) and scale (bad images raise InputError)."""
    from tailor.core.prompt_tags import load_kind

    for path, imgs, scale in parse_ip_adapters(adapters, images):
        refs = [load_image(p) for p in imgs]
        pipe.attach(load_kind(path, "ip_adapter"), weight=scale, ip_image=refs)
