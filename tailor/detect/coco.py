"""COCO-format detection folders (Lin et al. 2014): read with checks, write atomically, make from world renders.

A folder holds the images and one annotation file (``annotations.json``, or the only ``*.json`` there) with
``images`` (``id``, ``file_name`` relative to the file's folder, ``width``, ``height``), ``annotations`` (``image_id``,
``category_id``, ``bbox`` = ``[x, y, w, h]`` in pixels) and ``categories`` (``id``, ``name``). In memory a set is a
:class:`CocoSet`: per image its file and its objects ``{"box": [x0, y0, x1, y1], "class": name}`` (the form
:func:`tailor.eval.detection.coco_map` reads).

Bad input raises :class:`~tailor.errors.InputError` with one sentence naming the file and the fix: a file that is not
JSON or lacks a section, a box of zero area or outside its image, an annotation of an unknown category or image, a
missing image file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailor.errors import InputError

ANNOTATIONS = "annotations.json"
#: how far (pixels) a box may pass the image border before it counts as outside (float rounding of writers)
BORDER_SLACK = 0.5


@dataclass
class CocoSet:
    """Images (``{"id", "file", "width", "height"}``, ``file`` an absolute path), their objects and the classes."""

    root: Path
    images: list[dict[str, Any]] = field(default_factory=list)
    objects: list[list[dict[str, Any]]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def annotation_file(path: str | Path) -> Path:
    """The annotation file of a COCO folder (``annotations.json`` or its only ``*.json``), or ``path`` itself."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"COCO data {path} does not exist; pass a folder with images and annotations.json.")
    if (path / ANNOTATIONS).is_file():
        return path / ANNOTATIONS
    found = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise InputError(
            f"COCO folder {path} holds {what} JSON files and no annotations.json; name its annotation file "
            f"annotations.json."
        )
    return found[0]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_coco(path: str | Path, check_files: bool = True) -> CocoSet:
    """A COCO folder or annotation file, checked (see the module docstring)."""
    file = annotation_file(path)
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"COCO file {file} is not valid JSON ({e.msg} at line {e.lineno}); fix or rewrite it.") from e
    except UnicodeDecodeError as e:
        raise InputError(f"COCO file {file} is not UTF-8 text; pass a COCO annotation JSON.") from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise InputError(f"COCO file {file} has no 'images' and 'categories' lists; pass a COCO annotation JSON.")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise InputError(f"COCO file {file}: 'annotations' is not a list; pass a COCO annotation JSON.")
    cats: dict[Any, str] = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise InputError(f"COCO file {file} has a category without an id and a name: {c!r}; give each both.")
        if c["id"] in cats or c["name"] in cats.values():
            raise InputError(f"COCO file {file} names category {c['name']!r} (id {c['id']}) twice; keep one.")
        cats[c["id"]] = c["name"]
    out = CocoSet(root=file.parent, classes=list(cats.values()))
    index: dict[Any, int] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise InputError(f"COCO file {file} has an image without an id and a file_name: {im!r}; give each both.")
        w, h = im.get("width"), im.get("height")
        if not (_number(w) and _number(h) and w > 0 and h > 0):
            raise InputError(f"COCO file {file}: image {im['file_name']!r} has no positive width and height.")
        if im["id"] in index:
            raise InputError(f"COCO file {file} lists image id {im['id']} twice; give every image its own id.")
        image_file = (file.parent / im["file_name"]).resolve()
        if check_files and not image_file.is_file():
            raise InputError(f"COCO file {file}: image {im['file_name']!r} does not exist beside it; fix file_name.")
        index[im["id"]] = len(out.images)
        out.images.append({"id": im["id"], "file": image_file, "width": w, "height": h})
        out.objects.append([])
    for a in anns:
        aid = a.get("id", "?") if isinstance(a, dict) else "?"
        if not isinstance(a, dict) or a.get("image_id") not in index:
            raise InputError(f"COCO file {file}: annotation {aid} names no listed image; fix its image_id.")
        if a.get("category_id") not in cats:
            raise InputError(
                f"COCO file {file}: annotation {aid} has unknown category_id {a.get('category_id')!r} (known: "
                f"{', '.join(str(k) for k in cats)}); add the category or fix the annotation."
            )
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise InputError(f"COCO file {file}: annotation {aid} has bbox {box!r}, not [x, y, width, height].")
        x, y, bw, bh = (float(v) for v in box)
        im = out.images[index[a["image_id"]]]
        name = Path(im["file"]).name
        if bw <= 0 or bh <= 0:
            raise InputError(f"COCO file {file}: annotation {aid} on {name} has a zero-area box {box}; fix it.")
        s = BORDER_SLACK
        if x < -s or y < -s or x + bw > im["width"] + s or y + bh > im["height"] + s:
            raise InputError(
                f"COCO file {file}: annotation {aid}'s box {box} lies outside its {im['width']}x{im['height']} image "
                f"{name}; clip it to the image."
            )
        out.objects[index[a["image_id"]]].append({"box": [x, y, x + bw, y + bh], "class": cats[a["category_id"]]})
    return out


def coco_dict(images: list[dict[str, Any]], objects: list[list[dict[str, Any]]], classes: list[str]) -> dict:
    """The COCO JSON of ``images`` (``{"file_name", "width", "height"}`` (+ ``id``)) and their objects."""
    cat = {c: i + 1 for i, c in enumerate(classes)}
    out_images, anns = [], []
    for k, (im, objs) in enumerate(zip(images, objects)):
        iid = im.get("id", k)
        out_images.append({"id": iid, "file_name": im["file_name"], "width": im["width"], "height": im["height"]})
        for o in objs:
            x0, y0, x1, y1 = (float(v) for v in o["box"])
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat[o["class"]],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})  # fmt: skip
    return {"images": out_images, "annotations": anns, "categories": [{"id": i, "name": c} for c, i in cat.items()]}


def write_coco(path: str | Path, images, objects, classes) -> Path:
    """Write the annotation file atomically (a reader never sees half of it)."""
    from tailor.core.io import write_json

    path = Path(path)
    write_json(path, coco_dict(images, objects, classes))
    return path


def world_objects(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of one world render's label record (``objects`` with ``box`` and ``shape``; else its ``box``)."""
    objs = record.get("objects") or []
    if objs:
        return [{"box": list(o["box"]), "class": o["shape"]} for o in objs if o.get("box") and o.get("shape")]
    shape = (record.get("attrs") or {}).get("shape")
    return [{"box": list(record["box"]), "class": shape}] if record.get("box") and shape else []


def read_world_labels(folder: str | Path) -> list[dict[str, Any]]:
    """The records of a ``tailor world render`` folder's ``labels.json``, each with its image file checked."""
    folder = Path(folder)
    labels = folder / "labels.json"
    if not labels.is_file():
        raise InputError(f"{folder} has no labels.json; pass a `tailor world render` folder.")
    try:
        records = json.loads(labels.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{labels} is not valid JSON ({e.msg} at line {e.lineno}); render the folder again.") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) and "file" in r for r in records):
        raise InputError(f"{labels} is not a list of image records with 'file'; render the folder again.")
    for r in records:
        if not (folder / r["file"]).is_file():
            raise InputError(f"{labels} names {r['file']}, which is missing; render the folder again.")
    return records


def coco_from_renders(folder: str | Path, out: str | Path) -> Path:
    """A COCO annotation file ``out`` (``.json``) for a world render folder: ``file_name`` relative to ``out``'s
    folder (the images stay where they are), one category per shape seen, in the world's shape order."""
    import os

    from PIL import Image

    from tailor.world.vocab import SHAPES

    folder, out = Path(folder), Path(out)
    records = read_world_labels(folder)
    images, objects = [], []
    for r in records:
        with Image.open(folder / r["file"]) as im:
            w, h = im.size
        rel = os.path.relpath((folder / r["file"]).resolve(), out.resolve().parent)
        images.append({"file_name": rel, "width": w, "height": h})
        objects.append(world_objects(r))
    seen = {o["class"] for objs in objects for o in objs}
    classes = [s for s in SHAPES if s in seen] + sorted(seen - set(SHAPES))
    return write_coco(out, images, objects, classes)
