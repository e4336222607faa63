"""Relation scores from the world detector oracle's boxes (VISOR, Gokhale et al. 2022).

Each image comes with what it should show: objects (shape, colour) and relations ``(i, relation, j)``, read from a
``labels.json`` that ``tailor world render --kind relation`` wrote beside the images or parsed from each image's
prompt (:func:`tailor.world.relations.parse_relations`). The detector (:mod:`tailor.world.zoo.detector`) finds
objects; an expected object is *found* when a detection of its shape (and colour, when named) scores at least
``threshold`` (the best such detection is its box). A relation *holds* when both objects are found and their boxes
satisfy :func:`tailor.world.relations.relation_holds` (centres; areas for sizes). Scores:

- ``object_accuracy``: share of images in which every expected object is found (VISOR's OA);
- ``object_recall``: share of expected objects found;
- ``relation_accuracy``: share of relations that hold (VISOR_uncond: a missing object counts as a miss);
- ``relation_accuracy_given_objects``: the same over relations whose two objects are found (VISOR_cond);
- with ground-truth boxes (a render's ``labels.json``): the detector's COCO ``map`` / ``map50`` on these images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tailor.errors import InputError

THRESHOLD = 0.3


def detect(images, threshold: float = 0.01) -> list[list[dict[str, Any]]]:
    """The detector oracle's detections of each image (boxes in the image's pixels)."""
    from tailor.world.zoo.detector import load_detector
    from tailor.world.zoo.oracles import to_unit

    model = load_detector()
    x = to_unit(images)
    return [d for i in range(0, len(x), 128) for d in model.detect(x[i : i + 128], threshold=threshold)]


def expectations_from_labels(folder: str | Path, files: list[Path]) -> list[dict[str, Any]] | None:
    """Per image ``{"objects", "relations", "boxes"}`` from the folder's render ``labels.json`` (None if absent)."""
    path = Path(folder) / "labels.json"
    if not path.is_file():
        return None
    try:
        rows = {r["file"]: r for r in json.loads(path.read_text()) if isinstance(r, dict) and "file" in r}
    except (json.JSONDecodeError, TypeError) as e:
        raise InputError(f"{path} is not a labels.json of `tailor world render` ({e}); pass --prompts instead.") from e
    out = []
    for f in files:
        row = rows.get(f.name)
        if row is None or "relations" not in row.get("attrs", {}):
            raise InputError(
                f"{path} has no relation labels for {f.name}; render with `tailor world render --kind relation` or "
                f"pass --prompts FILE."
            )
        objs = row["objects"]
        out.append(
            {
                "objects": [{"shape": o["shape"], "color": o.get("color")} for o in objs],
                "relations": [(r["subject"], r["relation"], r["object"]) for r in row["attrs"]["relations"]],
                "boxes": [o["box"] for o in objs],
            }
        )
    return out


def expectations_from_prompts(prompts: list[str]) -> list[dict[str, Any]]:
    from tailor.world.relation_text import parse_relations
    from tailor.world.relations import check_relations

    out = []
    for p in prompts:
        parsed = parse_relations(p)
        objs = [{"shape": o["shape"], "color": o["color"]} for o in parsed["objects"]]
        rels = check_relations(parsed["relations"], len(objs)) if parsed["relations"] else []
        out.append({"objects": objs, "relations": rels, "boxes": None})
    return out


def _find(obj: dict[str, Any], dets: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    hits = [
        d
        for d in dets
        if d["class"] == obj["shape"] and d["score"] >= threshold and (obj.get("color") in (None, d["color"]))
    ]
    return max(hits, key=lambda d: d["score"]) if hits else None


def relation_scores(
    expectations: list[dict[str, Any]], detections: list[list[dict[str, Any]]], threshold: float = THRESHOLD
) -> dict[str, Any]:
    """VISOR-style scores of ``detections`` against ``expectations`` (see the module docstring)."""
    from tailor.world.relations import relation_holds

    all_found, found_objects, holds, holds_given = [], [], [], []
    per_relation: dict[str, list[bool]] = {}
    for exp, dets in zip(expectations, detections):
        boxes = [_find(o, dets, threshold) for o in exp["objects"]]
        found_objects += [b is not None for b in boxes]
        all_found.append(all(b is not None for b in boxes))
        for i, rel, j in exp["relations"]:
            ok = boxes[i] is not None and boxes[j] is not None
            hold = ok and relation_holds(rel, boxes[i]["box"], boxes[j]["box"])
            holds.append(hold)
            per_relation.setdefault(rel, []).append(hold)
            if ok:
                holds_given.append(hold)
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731  (None: nothing to judge)
    return {
        "images": len(expectations),
        "object_accuracy": mean(all_found),
        "object_recall": mean(found_objects),
        "relation_accuracy": mean(holds),
        "relation_accuracy_given_objects": mean(holds_given),
        "relations": len(holds),
        "per_relation": {k: mean(v) for k, v in sorted(per_relation.items())},
    }


def evaluate_folder(folder: str | Path, prompts_file: str | Path | None = None) -> dict[str, Any]:
    """Scores of a folder of images: against its render ``labels.json`` (then also the detector's mAP), else against
    ``--prompts FILE`` or the ``generation.json`` of ``tailor generate``."""
    from tailor.eval.detection import coco_map
    from tailor.eval.world import prompts_for, read_images

    files, images = read_images(folder)
    exps = None if prompts_file is not None else expectations_from_labels(folder, files)
    source = "labels.json"
    if exps is None:
        exps, source = expectations_from_prompts(prompts_for(folder, files, prompts_file)), "prompts"
    dets = detect(images)
    result = {"source": source, **relation_scores(exps, dets)}
    if all(e["boxes"] is not None for e in exps):
        gts = [[{"box": b, "class": o["shape"]} for b, o in zip(e["boxes"], e["objects"])] for e in exps]
        m = coco_map(gts, dets)
        result |= {"map": m["map"], "map50": m["map50"]}
    return result
