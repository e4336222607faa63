"""``tailor bench personalize``: DreamBench at world scale (issue #4) — fine-tuning methods on novel subjects.

Protocol of DreamBooth (Ruiz et al. 2022): each method learns a subject from a few reference images, bound to
``a [V] [class]``; it then generates the subject under 8 prompts x 4 seeds. Scores:

- subject fidelity: DINO-like (instance embedder) and CLIP-I-like (world CLIP) mean cosine to the references,
  subject-attribute accuracy (shape, both colours' body colour, pattern as the attribute oracle reads them);
- prompt fidelity: background accuracy of ``... on <background>`` prompts and CLIP-T-like (world CLIP), both
  measured with the prompt written without [V];
- language drift (DreamBooth section 4.3): the class prompt ``a photo of a [class]`` after training; the fraction
  of samples that the instance embedder calls the subject (mean cosine to the references above a same-subject
  threshold calibrated on real renders, :func:`~tailor.bench.common.drift_calibration`);
- steps, trainable parameters and training seconds per subject.

Methods (each through ``tailor.train`` with its registry config): ``dreambooth_lora`` (DreamBooth-LoRA with prior
preservation), ``dreambooth`` (full UNet), ``lora`` (Hu et al. 2021), ``textual_inversion`` (Gal et al. 2022),
``hypernetwork`` (NovelAI / A1111). Paper learning rates are for SD1.5 with ~1000-5000 steps; the world base is
100x smaller and a subject should train in well under a minute, so the steps are short and the rates scaled up
(:data:`RECIPES`; every value is stated in ``results.json``). The untrained base is the reference row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from tailor.bench import common as C
from tailor.core.surface import BenchRow
from tailor.errors import ConfigError


@dataclass(frozen=True)
class Recipe(BenchRow):
    """A method's declared ``BenchRow`` with the registry name of the method that declared it."""

    method: str = ""


def recipes() -> dict[str, Recipe]:
    """The rows the methods declare for this bench (``BenchRow("personalize", ...)`` in each ``MethodSpec``): world
    recipes, steps x lr chosen so one subject trains in ~10-40 s on one CPU thread."""
    from tailor.core.method import registry

    return {
        row.key: Recipe(**{f.name: getattr(row, f.name) for f in fields(BenchRow)}, method=spec.name)
        for spec in registry().values()
        for row in spec.bench
        if row.bench == "personalize"
    }


def default_methods() -> tuple[str, ...]:
    """The declared rows marked ``default`` (the full-UNet DreamBooth row runs only when asked for)."""
    return tuple(k for k, r in recipes().items() if r.default)


def __getattr__(name: str):
    if name == "RECIPES":  # the registry's rows, read when asked for (a method folder added later has its row)
        return recipes()
    if name == "DEFAULT_METHODS":
        return default_methods()
    raise AttributeError(name)


QUICK = dict(
    subjects=("checker_star",),
    prompts=2,
    seeds=1,
    n_ref=2,
    steps=2,
    sample_steps=2,
    drift_n=2,
    probes=1,
    class_images=2,
)


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/personalize")
    methods: tuple[str, ...] = field(default_factory=default_methods)
    subjects: tuple[str, ...] = C.DEFAULT_SUBJECTS
    prompts: int = 8  # of subject_prompts (7 backgrounds + bare)
    seeds: int = 4
    n_ref: int = 6
    lora_rank: int = 4
    steps: int | None = None  # None = each recipe's steps
    lrs: dict[str, float] = field(default_factory=dict)  # method -> learning rate overriding its recipe's
    sample_steps: int = 20
    guidance: float = 5.0
    drift_n: int = 8
    probes: int = 4  # calibration renders per subject
    class_images: int | None = None  # DreamBooth prior images (None = the recipe's)
    class_steps: int | None = None  # sampler steps of those images (None = the recipe's)
    fresh: bool = False

    def check(self) -> None:
        rows = recipes()
        unknown = [m for m in (*self.methods, *self.lrs) if m not in rows]
        if unknown:
            raise ConfigError(f"unknown method {unknown[0]!r}; pick from {', '.join(rows)}.")
        if not 1 <= self.prompts <= 8:
            raise ConfigError(f"--prompts must lie in 1..8 (the world prompt set has 8); got {self.prompts}.")
        for s in self.subjects:
            C.subject_spec(s)
        if min(self.seeds, self.n_ref, self.drift_n, self.probes, self.lora_rank, self.sample_steps) < 1:
            raise ConfigError("--seeds, --references, --drift-samples, --lora-rank and --sample-steps must be >= 1.")


@cache
def world_words() -> frozenset[str]:
    """Words of the world's captions (its synonyms plus 300 rendered captions: every kind and style)."""
    from tailor.world.zoo.vocabulary import caption_words

    return frozenset(caption_words(n_captions=300))


def identifier_for(components, cls: str) -> str:
    """DreamBooth's rare-token rule on this tokenizer, avoiding the bench's prompt words and every world caption
    word: the world tokenizer holds each caption word as one token, so without this the rule picks a caption word
    with a strong prior (``two``: "a photo of a two star")."""
    from tailor.methods.dreambooth.identifier import pick_identifier, prompt_words

    avoid = prompt_words(*C.subject_prompts(cls), "a of an the")
    word = pick_identifier(components.tokenizer, avoid)
    if len(word) > 1:  # a vocabulary word: make sure it is not one of the world's (a single letter never is)
        word = pick_identifier(components.tokenizer, avoid | world_words())
    return word


def _config_fields(method: str) -> set[str]:
    import dataclasses

    from tailor.core.method import get_spec

    return {f.name for f in dataclasses.fields(get_spec(method).config)}


def method_options(key: str, s: Settings, cls: str, word: str) -> dict[str, Any]:
    """The row's options with the subject filled in: the method's declared subject fields (``token``: the
    identifier unless the row fixes its own placeholder; ``class``: the class word) and the bench's LoRA rank."""
    from tailor.core.method import get_spec

    r = recipes()[key]
    opts = dict(r.options)
    fields = get_spec(r.method).subject_fields
    if "class" in fields:
        opts.setdefault(fields["class"], cls)
    if "token" in fields:
        opts.setdefault(fields["token"], word)
    rank = next((f for f in ("lora_rank", "rank") if f in _config_fields(r.method)), None)
    if rank is not None:
        opts.setdefault(rank, s.lora_rank)
    return opts


def subject_words(key: str, word: str, cls: str) -> str:
    """What stands for the subject in prompts: ``[V] [class]`` (a row with its own placeholder token: that
    token) or the class (base)."""
    if key == "base":
        return cls
    r = recipes()[key]
    from tailor.core.method import get_spec

    token_field = get_spec(r.method).subject_fields.get("token")
    return f"{r.options.get(token_field, word) if token_field else word} {cls}"


def train_subject(key: str, subject: str, s: Settings, root: Path) -> dict[str, Any]:
    """Train ``key`` on the subject's references (cached under ``root/artifacts``); the training record."""
    import tailor

    comps = tailor.load_components(s.base)
    refs = lambda: C.reference_images(subject, s.n_ref, comps.default_size)  # noqa: E731 - rendered on a cache miss
    return train_references(key, subject, refs, C.class_word(subject), s, root, comps)


def train_references(key: str, name: str, refs, cls: str, s: Settings, root: Path, comps) -> dict[str, Any]:
    """Train ``key`` on ``refs()`` (reference images of ``name``, a ``cls``), cached in
    ``root/artifacts/<key>/<name>``; the training record (``word``: the identifier the prompts use)."""
    import tailor

    word = identifier_for(comps, cls)
    r = recipes()[key]
    r = replace(r, lr=s.lrs.get(key, r.lr))
    steps = s.steps or r.steps
    opts = method_options(key, s, cls, word)
    fields = _config_fields(r.method)
    if "class_dir" in fields:  # prior preservation: class images cached beside the bench, sized by the bench
        opts["class_dir"] = str(root / "class_images")
        if s.class_images:
            opts["num_class_images"] = s.class_images
        if s.class_steps:
            opts["class_steps"] = s.class_steps
    size = comps.default_size
    caption = f"a {subject_words(key, word, cls)}"
    settings = dict(base=s.base, method=r.method, opts=opts, steps=steps, lr=r.lr, bs=r.batch_size, n_ref=s.n_ref,
                    subject=name, caption=caption, size=size)  # fmt: skip
    folder = root / "artifacts" / key / name
    if not s.fresh and (rec := C.cached(folder, settings)) is not None:
        return rec
    C.fresh_dir(folder)
    ref_dir = C.write_reference_folder(folder / "refs", refs(), caption)
    method = tailor.get_spec(r.method).method(**opts)
    cfg = tailor.TrainConfig(base=s.base, data=str(ref_dir), resolution=size, steps=steps, batch_size=r.batch_size,
                             lr=r.lr, out=str(folder / "train"), log_every=steps, seed=0)  # fmt: skip
    with C.timer() as t:
        res = tailor.train(method, cfg, components=comps)
    params = sum(p.numel() for p in method.trainable_parameters())
    rec = dict(stamp=C.stamp(settings), artifact="train", seconds=round(t["seconds"], 2),
               cpu_seconds=round(t["cpu_seconds"], 2), steps=steps,
               lr=r.lr, batch_size=r.batch_size, params=params, loss=res.loss, caption=caption, word=word)  # fmt: skip
    from tailor.core.io import write_text

    write_text(folder / "bench.json", json.dumps(rec, indent=2))
    return rec


def artifact_path(root: Path, key: str, subject: str) -> Path:
    """Where :func:`train_subject` trains ``key`` on ``subject`` (relative to the bench folder, so a cache folder
    can move)."""
    return Path(root) / "artifacts" / key / subject / "train"


def evaluate(key: str, subject: str, rec: dict[str, Any] | None, s: Settings, threshold: float, root: Path) -> dict:
    """Generate the prompt set and the drift prompt with the trained artifact (None: the base) and score them."""
    import tailor
    from tailor.eval.world import prompt_scores, subject_scores, world_scores

    comps = tailor.load_components(s.base)
    cls = C.class_word(subject)
    pipe = tailor.Pipeline(comps)
    if rec is not None:
        pipe.attach(tailor.load(artifact_path(root, key, subject)))
    word = rec["word"] if rec else ""
    refs = C.reference_images(subject, s.n_ref, comps.default_size)
    prompts = C.subject_prompts(subject_words(key, word, cls))[: s.prompts]
    clean = C.subject_prompts(cls)[: s.prompts]  # without [V]: what the oracles and world CLIP can read
    images = C.generate(pipe, prompts, s.seeds, s.sample_steps, s.guidance)
    drift_images = C.generate(pipe, [f"a photo of a {cls}"], s.drift_n, s.sample_steps, s.guidance, seed=1000)
    pipe.detach()
    C.save_images(images, root / "images" / key / subject, "img")
    C.save_images(drift_images, root / "images" / key / subject, "drift")
    subj = subject_scores(images, refs)
    per_image = [p for p in clean for _ in range(s.seeds)]
    bg = world_scores(images, per_image)  # background counts only the images whose prompt names one
    drift = C.similarity_to(drift_images, refs)
    return {
        "dino_like": subj["dino_like"],
        "clip_i_like": subj["clip_i_like"],
        "subject_attr_acc": float(np.mean(list(subj["subject_attribute_accuracy"].values()))),
        "subject_all_correct": subj["subject_all_correct"],
        "background_acc": bg["accuracy"].get("background"),
        "clip_t_like": prompt_scores(images, per_image)["clip_t_like"],
        "drift": float(np.mean(drift >= threshold)),
        "drift_similarity": float(drift.mean()),
        "images": images,
    }


COLUMNS = [
    ("method", "method", ""),
    ("dino_like", "DINO-like", ".3f"),
    ("clip_i_like", "CLIP-I-like", ".3f"),
    ("subject_attr_acc", "subject attr acc", ".3f"),
    ("background_acc", "background acc", ".3f"),
    ("clip_t_like", "CLIP-T-like", ".3f"),
    ("drift", "drift", ".3f"),
    ("steps", "steps", "d"),
    ("lr", "lr", "g"),
    ("params", "params", ","),
    ("train_s", "train s/subject", ".1f"),
    ("train_cpu_s", "train CPU s/subject", ".1f"),
]
RECORD_KEYS = ("seconds", "cpu_seconds", "steps", "lr", "params", "loss")
SCORES = ("dino_like", "clip_i_like", "subject_attr_acc", "subject_all_correct", "background_acc", "clip_t_like",
          "drift", "drift_similarity")  # fmt: skip


def summary_row(key: str, results: list[dict], recs: list[dict | None]) -> dict[str, Any]:
    """One table row: scores averaged over subjects, plus the recipe and mean training seconds."""
    row = {"method": key} | {k: C.mean_of(results, k) for k in SCORES}
    if key == "base":
        return row
    r = recipes()[key]
    first = recs[0]
    return row | {"steps": first["steps"], "lr": first["lr"], "params": first["params"], "batch_size": r.batch_size,
                  "train_s": C.mean_of(recs, "seconds"), "train_cpu_s": C.mean_of(recs, "cpu_seconds"),
                  "recipe": r.note}  # fmt: skip


def run(s: Settings) -> dict[str, Any]:
    """The whole bench: calibration, then per method and subject train (or reuse) and evaluate; rows averaged."""
    import tailor
    from tailor.core.progress import make_progress
    from tailor.world import subjects

    root = C.start(s)
    t0, c0 = time.perf_counter(), time.process_time()
    size = tailor.load_components(s.base).default_size
    calib = C.drift_calibration(sorted(subjects()), s.n_ref, s.probes, size)
    keys = ("base", *s.methods)
    rows, per_subject = [], {}
    sheet = [("references", [im for subject in s.subjects for im in C.reference_images(subject, 2, size)])]
    with make_progress() as progress:
        task = progress.add_task("personalize", total=len(keys) * len(s.subjects), info="")
        for key in keys:
            results, recs, tiles = [], [], []
            for subject in s.subjects:
                progress.update(task, info=f"{key} / {subject}")
                rec = None if key == "base" else train_subject(key, subject, s, root)
                res = evaluate(key, subject, rec, s, calib["threshold"], root)
                images = res.pop("images")
                # per subject: the "on snow" prompt and the bare-subject prompt, first seed
                tiles += [images[min(2, s.prompts - 1) * s.seeds], images[-s.seeds]]
                extra = (
                    {k: rec.get(k) for k in ("seconds", "cpu_seconds", "steps", "lr", "params", "loss")} if rec else {}
                )
                per_subject[f"{key}/{subject}"] = res | extra
                results.append(res)
                recs.append(rec)
                progress.advance(task)
            sheet.append((key, tiles))
            rows.append(summary_row(key, results, recs))
    C.contact_sheet(sheet, root / "grid.png")
    table = C.Table(COLUMNS, rows)
    extra = {"drift_calibration": calib}
    return C.finish(root, "personalize", s, rows, table, t0, c0, extra, {"per_subject": per_subject})
