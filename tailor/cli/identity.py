"""``tailor generate`` flags of the identity methods (InstantID, Wang et al. 2024; PhotoMaker, Li et al. 2023; PuLID,
Guo et al. 2024), designed like ``--ip-adapter`` (``tailor/cli/ip_adapter.py``):

* ``--instantid PATH[=IMG[+IMG2...]][:scale]`` and ``--pulid PATH[=IMG...][:scale]``: the reference face(s) in the
  value, or else every ``--face IMG`` (repeatable; several faces average their embeddings);
* ``--photomaker PATH[=DIR_OR_IMG[+IMG...]][:scale]``: the reference images in the value, or else ``--id-images``
  (a folder or image, repeatable).

``PATH`` is a training ``--out`` folder or weight file (an official InstantID folder with ``ip-adapter.bin`` and
``ControlNetModel/`` too), or ``world``: the method's weights shipped with the world zoo (trained on the world base,
:func:`tailor.world.zoo.identity_adapter`; a file or folder named ``world`` wins).
"""

from __future__ import annotations

from pathlib import Path

from tailor.errors import ConfigError, InputError

MAX_SCALE = 5.0
KINDS = {"instantid": "--instantid", "photomaker": "--photomaker", "pulid": "--pulid"}


def split_spec(spec: str, flag: str) -> tuple[str, list[str], float]:
    """``PATH[=A+B][:scale]`` -> (path, [A, B], scale)."""
    path, _, rest = spec.partition("=")
    scale = 1.0
    target = rest if rest else path
    head, sep, last = target.rpartition(":")
    if sep and head:
        try:
            scale = float(last)
            target = head
        except ValueError:
            pass
    if rest:
        rest = target
    else:
        path = target
    if not 0.0 <= scale <= MAX_SCALE:
        raise ConfigError(f"{flag} {spec!r}: scale {scale:g} is outside [0, {MAX_SCALE:g}]; use e.g. PATH:0.8.")
    return path, [p for p in rest.split("+") if p], scale


def load_identity(path: str, kind: str):
    """The method in ``path``; ``world`` (when no such file or folder exists) is the method's shipped weights."""
    from tailor.core.method import get_spec

    p = Path(path)
    if path == "world" and not p.exists():
        from tailor.world.zoo import identity_adapter

        p = path = identity_adapter(kind)
    if not p.exists():
        raise InputError(f"{KINDS[kind]} {path} does not exist; pass a training --out folder or a weight file.")
    if kind == "instantid" and p.is_dir() and (p / "ControlNetModel").is_dir() and not (p / "tailor.json").is_file():
        return get_spec("instantid").method.from_file(p)  # an official InstantID folder
    from tailor.core.prompt_tags import load_kind

    return load_kind(path, kind)


def attach_identity(pipe, instantid, photomaker, pulid, faces, id_images) -> None:
    """Attach every identity method with its references (InputError when one has none)."""
    for kind, specs, fallback, key in (
        ("instantid", instantid, faces, "face"),
        ("pulid", pulid, faces, "face"),
        ("photomaker", photomaker, id_images, "id_images"),
    ):
        for spec in specs or []:
            path, refs, scale = split_spec(spec, KINDS[kind])
            refs = refs or list(fallback or [])
            if not refs:
                need = "--face IMG" if key == "face" else "--id-images DIR"
                raise InputError(
                    f"{KINDS[kind]} {path} needs reference images; pass {need} or {KINDS[kind]} PATH=IMG."
                )
            if key == "id_images" and len(refs) == 1:
                refs = refs[0]  # a folder or one image
            pipe.attach(load_identity(path, kind), weight=scale, **{key: refs})
