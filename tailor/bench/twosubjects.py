"""``tailor bench twosubjects``: two subjects from one reference image, and how much of each leaks into the other
(issue #22; Character-Adapter, Ma et al. 2024, against IP-Adapter, Ye et al. 2023).

Held-out two-object world scenes (:func:`tailor.world.relations.render_relation_scene`, seeds ``TWO_SEED + j``, never
used in training) are the references: two one-colour objects whose shape, colour and pattern all differ. The prompt
names only the two shapes and the reference's background (``a photo of a star and a heart on grass``): what colour
and pattern each object wears has to come from the image prompt, and from the right part of it.

Rows: ``none`` (the base with the prompt: colours by chance), the rows methods declare with
``BenchRow("twosubjects", ...)`` — the IP-Adapters (shipped ``world`` / ``world-plus``, the whole reference as the
image prompt) and Character-Adapter on each (one set of IP tokens per object region, gated by its shape word's
attention) — at the same weight, then ``reference`` (the references themselves: the oracles' ceiling). A
Character-Adapter row whose options name a ``segmenter`` cuts the two regions with that world segmenter, as
``--character-adapter-regions A --character-adapter-regions B`` does (a reference where it finds no region of a
shape is refused, as the command refuses it: the row is scored on the references it cut, ``refs_cut``); the other
Character-Adapter rows get the render's exact object masks as the method's ``masks`` input. ``results.json`` has
each segmenter's object-pixel accuracy on these references.

Scoring (evaluator-only oracles; no method sees them): the world detector oracle finds each named shape (its best
box of that class scoring >= ``THRESHOLD``); the attribute oracle reads colour and pattern from the box, cropped
square with a margin. Per subject found: *own* = the attribute equals its own reference object's, *leak* = it equals
the other object's. Leakage rate = leaks / subjects found (colour and pattern separately; ``any_leak``: either);
``both_own``: images where both subjects are found with their own colour and pattern. Cost: sampling s/step with the
reference and the prompt, and its ratio to the plain base's step (CPU time, interleaved with the base).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.bench import common as C
from tailor.bench.image_prompt import step_cost, step_seconds
from tailor.errors import InputError

TWO_SEED = 940_000  # reference j renders with seed TWO_SEED + j
THRESHOLD = 0.3  # detector score for a subject to count as found (the relation checker's)
ATTRS = ("color", "pattern")
PHRASINGS = ("and", "relation")
QUICK = dict(cases=2, seeds=1, sample_steps=2, timing_rounds=1)


def twosubject_rows() -> dict:
    """Rows methods declare for this bench: key -> (MethodSpec, BenchRow), the adapters before what builds on them."""
    return C.declared_rows("twosubjects")


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/twosubjects")
    models: dict[str, str] = field(default_factory=dict)  # row key -> weights (IP-Adapter rows: their row's model)
    rows: tuple[str, ...] | None = None  # declared rows to run (None: every default one)
    cases: int = 16
    seeds: int = 2
    sample_steps: int = 20
    guidance: float = 5.0
    weight: float = 1.0  # image-prompt scale of every row
    phrasing: str = "and"  # the prompt: "and" or "relation" (see held_out_case)
    baseline: bool = True
    timing_rounds: int = 3

    def check(self) -> None:
        declared = twosubject_rows()
        for key in [*(self.rows or ()), *self.models]:
            if key not in declared:
                raise InputError(f"twosubjects row {key!r} is not declared; pick from {', '.join(declared)}.")
        if min(self.cases, self.seeds, self.sample_steps) < 1:
            raise InputError("--cases, --seeds and --sample-steps must be >= 1.")
        if self.phrasing not in PHRASINGS:
            raise InputError(f"--phrasing must be one of {', '.join(PHRASINGS)}; got {self.phrasing!r}.")
        if not 0.0 < self.weight <= 5.0:
            raise InputError(f"--weight must lie in (0, 5]; got {self.weight}.")


# --------------------------------------------------------------------- cases
def case_objects(j: int) -> list[dict[str, str]]:
    """The two objects of case ``j``: shape, colour and pattern all differ (seeded by ``j``)."""
    from tailor.world.vocab import COLORS, PATTERNS, SHAPES

    rng = np.random.default_rng(TWO_SEED + j)
    shapes = rng.choice(SHAPES, 2, replace=False)
    colors = rng.choice(list(COLORS), 2, replace=False)
    patterns = rng.choice(PATTERNS, 2, replace=False)
    return [{"shape": str(shapes[i]), "color": str(colors[i]), "pattern": str(patterns[i])} for i in range(2)]


def held_out_case(j: int, size: int, phrasing: str = "and"):
    """Reference render of case ``j`` (a photo) and its prompt naming the two shapes and the background: ``and``
    (``a photo of a star and a heart on grass``) or ``relation`` (the reference's stated relation, as the world's
    relation captions without colours and patterns: ``a photo of a star left of a heart on grass``)."""
    from tailor.world.captions import BG_ON
    from tailor.world.relations import render_relation_scene

    sample = render_relation_scene(TWO_SEED + j, objects=case_objects(j), n_objects=2, style="photo", size=size)
    shapes = [o["shape"] for o in sample.objects]
    rel = sample.attrs["relations"][0]
    a, b = shapes[rel["subject"]], shapes[rel["object"]]
    link = "and" if phrasing == "and" else rel["relation"]
    return sample, f"a photo of {_a(a)} {link} {_a(b)} {BG_ON[sample.attrs['background']]}"


def _a(word: str) -> str:
    from tailor.world.captions import _a as article

    return article(word)


def subjects_of(sample) -> list[dict[str, str]]:
    return [{k: o[k] for k in ("shape", "color", "pattern")} for o in sample.objects]


# --------------------------------------------------------------------- scoring
def box_crop(image, box, margin: float = 0.3):
    """The square around ``box`` (x0, y0, x1, y1) grown by ``margin``, at the attribute oracle's size."""
    from PIL import Image

    x0, y0, x1, y1 = box
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0, 4) * (1 + margin)
    crop = image.crop(
        (int(cx - side / 2), int(cy - side / 2), int(np.ceil(cx + side / 2)), int(np.ceil(cy + side / 2)))
    )
    return crop.resize((64, 64), Image.BICUBIC)


def read_subjects(images, shapes: list[list[str]]) -> list[list[dict[str, Any] | None]]:
    """Per image, per named shape: None when the detector finds no such shape, else the box and the attribute
    oracle's colour and pattern of the box."""
    from tailor.eval.relations import detect
    from tailor.eval.world import predict_attributes

    dets = detect(images)
    found, crops = [], []
    for im, names, ds in zip(images, shapes, dets):
        row = []
        for name in names:
            hits = [d for d in ds if d["class"] == name and d["score"] >= THRESHOLD]
            best = max(hits, key=lambda d: d["score"]) if hits else None
            row.append(best)
            if best is not None:
                crops.append(box_crop(im.convert("RGB"), best["box"]))
        found.append(row)
    preds = iter(predict_attributes(crops) if crops else [])
    return [[None if d is None else {"box": d["box"], **{k: v for k, v in next(preds).items() if k in ATTRS}}
             for d in row] for row in found]  # fmt: skip


def leakage(reads: list[list[dict | None]], truths: list[list[dict[str, str]]]) -> dict[str, Any]:
    """Own / leaked attribute rates over found subjects (see the module docstring), from ``read_subjects``' output
    and each image's two true subjects."""
    own = {k: [] for k in ATTRS}
    leak = {k: [] for k in ATTRS}
    any_leak, found, both_own = [], [], []
    for read, truth in zip(reads, truths):
        ok_image = True
        for i, r in enumerate(read):
            found.append(r is not None)
            if r is None:
                ok_image = False
                continue
            mine, other = truth[i], truth[1 - i]
            for k in ATTRS:
                own[k].append(r[k] == mine[k])
                leak[k].append(r[k] == other[k] and other[k] != mine[k])
            any_leak.append(any(r[k] == other[k] != mine[k] for k in ATTRS))
            ok_image &= all(r[k] == mine[k] for k in ATTRS)
        both_own.append(ok_image)
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731  (None: nothing found to judge)
    out: dict[str, Any] = {"found": mean(found), "any_leak": mean(any_leak), "both_own": mean(both_own)}
    for k in ATTRS:
        out[f"{k}_own"], out[f"{k}_leak"] = mean(own[k]), mean(leak[k])
    return out


SEGMENTERS = ("segmenter", "segmenter_scenes")  # the world segmenters results.json scores on the references


def segmenter_accuracy(samples, name: str = "segmenter") -> float:
    """Share of the references' object pixels the world segmenter ``name`` labels with their object's shape."""
    import torch

    from tailor.world.zoo.oracles import load_oracle, to_unit

    seg = load_oracle(name)
    with torch.no_grad():
        labels = seg(to_unit([s.image for s in samples])).argmax(1).numpy()
    hit = tot = 0
    for lab, s in zip(labels, samples):
        for o in s.objects:
            hit += int((lab[o["mask"]] == seg.classes.index(o["shape"])).sum())
            tot += int(o["mask"].sum())
    return hit / max(tot, 1)


# --------------------------------------------------------------------- rows
def load_row(key: str, spec, row, s: Settings):
    """A declared row's method: trained ones (IP-Adapter) load ``--model KEY=PATH`` or the row's ``model``;
    training-free ones (Character-Adapter) take the row's options (``--model KEY=PATH``: its ``ip_adapter``)."""
    path = s.models.get(key)
    free = {"ip_adapter": path} if path else None
    return C.load_row("twosubjects", key, spec, row, path or row.model or "world", free)


def cut_regions(method, row, sample) -> dict[str, np.ndarray] | None:
    """Region word -> mask of ``sample`` for a method that reads regions (Character-Adapter; None for any other):
    the render's exact object masks, or, for a row whose options name a ``segmenter``, the regions the method cuts
    with it for the two shape words (``{}`` when it refuses the reference: a shape it does not find)."""
    if not callable(getattr(method, "regions", None)):
        return None
    shapes = [o["shape"] for o in sample.objects]
    if "segmenter" not in row.options:
        return {o["shape"]: o["mask"] for o in sample.objects}
    method.config = method.config.replace(regions=shapes)
    try:
        return method.regions(reference_image(sample), {})
    except InputError:
        return {}


def attach(pipe, method, sample, weight: float, masks: dict[str, np.ndarray] | None = None) -> None:
    """The whole reference as the method's declared input; a method that reads region masks gets ``masks``
    (:func:`cut_regions`) under their shape words."""
    from tailor.core.method import get_spec

    decl = get_spec(method.name).generate
    extra = {"masks": masks} if masks else {}
    pipe.attach(method, weight=weight, **{decl.input.name: [reference_image(sample)]}, **extra)


COLUMNS = [
    ("method", "method", ""),
    ("refs_cut", "refs cut", ".3f"),
    ("found", "subjects found", ".3f"),
    ("color_own", "own colour", ".3f"),
    ("color_leak", "colour leak", ".3f"),
    ("pattern_own", "own pattern", ".3f"),
    ("pattern_leak", "pattern leak", ".3f"),
    ("any_leak", "any leak", ".3f"),
    ("both_own", "both own", ".3f"),
    ("step_seconds", "sampling s/step", ".3f"),
    ("step_cost", "vs base step", ".2f"),
]


def run(s: Settings) -> dict[str, Any]:
    from PIL import Image

    from tailor.core.progress import make_progress

    bench = C.start_rows(s, "twosubjects", load_row)
    root, pipe, size, declared, methods = bench.root, bench.pipe, bench.size, bench.declared, bench.methods
    cases = [held_out_case(j, size, s.phrasing) for j in range(s.cases)]
    truths = [subjects_of(sample) for sample, _ in cases]
    keys = [*(["none"] if s.baseline else []), *methods]
    base_step = step_seconds(pipe, cases[0][1], s.guidance)
    blank = Image.new("RGB", (size, size), "white")  # a refused reference's tile
    rows, sheet = [], []
    with make_progress() as progress:
        task = progress.add_task("twosubjects", total=len(keys) * s.cases, info="")
        for key in keys:
            method = methods.get(key)
            row_decl = declared[key][1] if method is not None else None
            images, truth, firsts, cut = [], [], [], []
            for j, (sample, prompt) in enumerate(cases):
                progress.update(task, info=f"{key} / case {j}")
                masks = cut_regions(method, row_decl, sample) if method is not None else None
                progress.advance(task)
                if masks == {}:  # the method refuses this reference
                    firsts.append(blank)
                    continue
                cut.append(j)
                if method is not None:
                    attach(pipe, method, sample, s.weight, masks)
                out = C.generate(pipe, [prompt], s.seeds, s.sample_steps, s.guidance)
                if method is not None:
                    pipe.detach()
                C.save_images(out, root / "images" / key / f"case_{j:02d}", "img")
                images += out
                truth += [truths[j]] * s.seeds
                firsts.append(out[0])
            reads = read_subjects(images, [[t["shape"] for t in tr] for tr in truth]) if images else []
            row = {"method": key} | leakage(reads, truth)
            if callable(getattr(method, "regions", None)):
                row["refs_cut"] = len(cut) / len(cases)
            if method is None:
                row |= {"step_seconds": base_step, "step_cost": 1.0}
            elif cut:
                sample, prompt = cases[cut[0]]
                masks = cut_regions(method, row_decl, sample)
                row["step_seconds"], row["step_cost"] = step_cost(
                    pipe, lambda m=method, c=sample, r=masks: attach(pipe, m, c, s.weight, r), pipe.detach, prompt,
                    s.guidance, s.timing_rounds,
                )  # fmt: skip
            rows.append(row)
            sheet.append((key, firsts[:8]))
    refs = [reference_image(sample) for sample, _ in cases]
    rows.append({"method": "reference"} | leakage(read_subjects(refs, [[t["shape"] for t in tr] for tr in truths]),
                                                  truths))  # fmt: skip
    sheet.insert(0, ("reference", refs[:8]))
    C.contact_sheet(sheet, root / "grid.png")
    extra = {
        "grid_rows": [name for name, _ in sheet],
        "grid_columns": "case 0..7, first seed",
        "segmenter_pixel_accuracy_on_references": {
            name: segmenter_accuracy([sample for sample, _ in cases], name) for name in SEGMENTERS
        },
        "cases": [
            {"seed": TWO_SEED + j, "prompt": p, "subjects": t} for j, ((_, p), t) in enumerate(zip(cases, truths))
        ],
    }
    return C.finish(root, "twosubjects", s, rows, C.Table(COLUMNS, rows), bench.t0, before_rows=extra)


def reference_image(sample):
    from PIL import Image

    return Image.fromarray(sample.image)
