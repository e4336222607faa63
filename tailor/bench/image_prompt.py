"""``tailor bench image_prompt``: image prompts versus per-subject fine-tuning on novel subjects (issue #6).

IP-Adapter and IP-Adapter-Plus (Ye et al. 2023) take one reference render of a novel world subject and need no
training per subject; Textual Inversion (Gal et al. 2022) and LoRA (Hu et al. 2021) are trained on the same
subjects with the personalize bench's recipes and cache (:func:`tailor.bench.personalize.train_subject`), as
IP-Adapter's and PhotoMaker's comparisons do. Scores:

- image only (IP: empty prompt at scale 1.0; TI / LoRA: ``a photo of a [V] [class]``): CLIP-I-like and DINO-like
  mean cosine to the references, subject-attribute accuracy;
- with text (IP: ``a photo of a [class] on <background>`` at scale 0.5, the paper's text+image setting; TI / LoRA:
  ``a photo of a [V] [class] on <background>``): CLIP-T-like (prompt written without [V]) and background accuracy,
  plus CLIP-I-like to show what of the subject survives the text;
- seconds per new subject: training time (IP-Adapter: none);
- sampling cost per step with one reference and a text prompt, relative to the plain base's step (the slope of CPU
  time over the number of steps, so text encoding and decoding do not count).

Rows: ``none`` (the base with the class prompt: what the text alone gives), the IP-Adapters, the training-free rows
methods declare (``BenchRow("image_prompt", ...)`` with ``steps=0``: reference-only attention and AdaIN, one
reference render, weight 1.0 with and without text, empty prompt for image only), the zero-shot rows of trained
encoders (``BenchRow(..., model=NAME)``: ELITE's shipped weights; the first reference with its render's mask when the
method reads one, the class word as its ``class_input``, ``a photo of a [class]`` for image only), then TI / LoRA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.bench import common as C
from tailor.bench import personalize as P
from tailor.errors import InputError

DEFAULT_ADAPTERS = {"ip-adapter": "world", "ip-adapter-plus": "world-plus"}
TEXT_BACKGROUNDS = ("snow", "grass", "water", "brick")
QUICK = dict(subjects=("checker_star",), seeds=1, n_ref=2, backgrounds=("snow",), sample_steps=2, steps=2,
             timing_rounds=1)  # fmt: skip


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/image_prompt")
    adapters: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADAPTERS))
    trained: tuple[str, ...] = ("textual_inversion", "lora")
    artifacts: Path = Path("outputs/bench/personalize")  # the personalize bench's cache, reused when settings match
    subjects: tuple[str, ...] = C.DEFAULT_SUBJECTS
    seeds: int = 4
    n_ref: int = 6
    backgrounds: tuple[str, ...] = TEXT_BACKGROUNDS
    ip_scale_text: float = 0.5
    lora_rank: int = 4
    steps: int | None = None  # training steps of TI / LoRA (None = the personalize recipes')
    sample_steps: int = 20
    guidance: float = 5.0
    fresh: bool = False
    baseline: bool = True  # the "none" row
    free: tuple[str, ...] | None = None  # declared rows (None: every default one)
    timing_rounds: int = 3  # sampling cost: base / method measured in turn this many times (medians)

    def check(self) -> None:
        for m in self.trained:
            if m not in P.RECIPES:
                raise InputError(f"--trained {m!r} is not a personalize method; pick from {', '.join(P.RECIPES)}.")
        for s in self.subjects:
            C.subject_spec(s)
        rows = declared_rows()
        for key in self.free or ():
            if key not in rows:
                raise InputError(f"--reference-row {key!r} is not a declared row; pick from {', '.join(rows)}.")
        if min(self.seeds, self.n_ref, self.sample_steps) < 1 or not self.backgrounds:
            raise InputError("--seeds, --references and --sample-steps must be >= 1 and --background given.")


def reference_mask(subject: str, size: int):
    """The exact mask of the first reference render (:func:`tailor.bench.common.reference_images`)."""
    from tailor.world import render_subject

    return render_subject(subject, C.REFERENCE_SEED, size=size).mask > 0


def declared_rows() -> dict:
    """Training-free and zero-shot rows the methods declare for this bench: key -> (MethodSpec, BenchRow)."""
    from tailor.core.method import registry

    return {r.key: (spec, r) for spec in registry().values() for r in spec.bench if r.bench == "image_prompt"}


def step_seconds(pipe, prompt: str, guidance: float, steps: tuple[int, int] = (2, 8)) -> float:
    """CPU seconds per sampling step of one image (the slope between two step counts, after a warm-up)."""
    pipe.generate(prompt, n=1, seed=0, steps=1, guidance=guidance)
    times = []
    for n in steps:
        with C.timer() as t:
            pipe.generate(prompt, n=1, seed=0, steps=n, guidance=guidance)
        times.append(t["cpu_seconds"])
    return (times[1] - times[0]) / (steps[1] - steps[0])


def step_cost(pipe, on, off, prompt: str, guidance: float, rounds: int = 3) -> tuple[float, float]:
    """(CPU s/step with the method, its ratio to the plain base's step): base and method measured in turn, ``rounds``
    times, medians (the machine may be shared; interleaving keeps both under the same load)."""
    secs, ratios = [], []
    for _ in range(rounds):
        base = step_seconds(pipe, prompt, guidance)
        on()
        with_method = step_seconds(pipe, prompt, guidance)
        off()
        secs.append(with_method)
        ratios.append(with_method / base)
    return float(np.median(secs)), float(np.median(ratios))


def load_adapter(name: str, path: str):
    import tailor

    try:
        method = tailor.load(path)
    except Exception as e:
        raise InputError(
            f"image-prompt adapter {name}={path} cannot be loaded ({e}); pass --adapter {name}=PATH with a "
            f"`tailor train ip_adapter` output folder."
        ) from e
    if method.name != "ip_adapter":
        raise InputError(f"{name}={path} is a {method.name} artifact, not an IP-Adapter; pass an IP-Adapter.")
    return method


def zero_shot(pipe, spec, row, cls: str, ref, mask):
    """``attach(weight)`` for a trained method's zero-shot row: its shipped weights (``row.model``) with the row's
    options over their config, the reference (and its mask, when the method reads a ``mask`` option) and the class
    word as the method's declared inputs."""
    from tailor.compose import load_kind

    method = load_kind(row.model, spec.name)
    if row.options:
        method.config = method.config.replace(**row.options)
    decl = spec.generate
    inputs = {decl.input.name: [ref]}
    if any(o.name == "mask" for o in decl.input.options):
        inputs["mask"] = mask
    if decl.class_input:
        inputs[decl.class_input] = cls

    def attach(w):  # weight 1.0 with and without text, as the training-free rows
        pipe.attach(method, weight=1.0, **inputs)

    return attach


def score(images, refs, prompts: list[str] | None) -> dict[str, Any]:
    from tailor.eval.world import prompt_scores, subject_scores, world_scores

    subj = subject_scores(images, refs)
    out = {"clip_i_like": subj["clip_i_like"], "dino_like": subj["dino_like"]}
    if prompts is None:
        return out | {"subject_attr_acc": float(np.mean(list(subj["subject_attribute_accuracy"].values())))}
    return out | {
        "clip_t_like": prompt_scores(images, prompts)["clip_t_like"],
        "background_acc": world_scores(images, prompts)["accuracy"].get("background"),
    }


def run_subject(pipe, words: str, s: Settings, attach=None, worded: bool = False) -> tuple[list, list]:
    """Image-only and text-prompted images of one subject; ``attach(scale)`` (re)attaches an IP-Adapter; ``worded``:
    the image-only prompt names the subject (a zero-shot encoder that places its words at the class word)."""
    if attach:
        attach(1.0)
    prompt = "" if attach and not worded else f"a photo of a {words}"
    only = C.generate(pipe, [prompt], s.seeds, s.sample_steps, s.guidance)
    if attach:
        pipe.detach()
        attach(s.ip_scale_text)
    text = C.generate(pipe, [f"a photo of a {words} on {bg}" for bg in s.backgrounds], s.seeds, s.sample_steps,
                      s.guidance)  # fmt: skip
    pipe.detach()
    return only, text


COLUMNS = [
    ("method", "method", ""),
    ("clip_i_like", "CLIP-I-like (image only)", ".3f"),
    ("dino_like", "DINO-like (image only)", ".3f"),
    ("subject_attr_acc", "subject attr acc", ".3f"),
    ("text_clip_t_like", "CLIP-T-like (+text)", ".3f"),
    ("text_background_acc", "background acc (+text)", ".3f"),
    ("text_clip_i_like", "CLIP-I-like (+text)", ".3f"),
    ("seconds_per_subject", "s per new subject", ".1f"),
    ("step_cost", "sampling s/step vs base", ".2f"),
]


def run(s: Settings) -> dict[str, Any]:
    import tailor
    from tailor.core.progress import make_progress

    root = C.start(s)
    t0 = time.perf_counter()
    adapters = {name: load_adapter(name, path) for name, path in s.adapters.items()}
    size = tailor.load_components(s.base).default_size
    ps = P.Settings(base=s.base, out=Path(s.artifacts), n_ref=s.n_ref, lora_rank=s.lora_rank, steps=s.steps,
                    fresh=s.fresh)  # fmt: skip
    free = {k: v for k, v in declared_rows().items() if (v[1].default if s.free is None else k in s.free)}
    keys = [*(["none"] if s.baseline else []), *adapters, *free, *s.trained]
    rows, sheet, step_costs = [], [], {}
    with make_progress() as progress:
        task = progress.add_task("image_prompt", total=len(keys) * len(s.subjects), info="")
        for key in keys:
            only_scores, text_scores, seconds, tiles = [], [], [], []
            for subject in s.subjects:
                progress.update(task, info=f"{key} / {subject}")
                cls = C.class_word(subject)
                refs = C.reference_images(subject, s.n_ref, size)
                pipe = tailor.Pipeline(tailor.load_components(s.base))
                attach, words, train_seconds, worded = None, cls, 0.0, False
                if key in adapters:

                    def attach(w, p=pipe, m=adapters[key], r=refs[0]):
                        p.attach(m, weight=w, ip_image=r)
                elif key in free and free[key][1].model is not None:
                    spec, row = free[key]
                    attach = zero_shot(pipe, spec, row, cls, refs[0], reference_mask(subject, size))
                    worded = True
                elif key in free:
                    spec, row = free[key]

                    def attach(w, p=pipe, spec=spec, row=row, r=refs[0]):  # weight 1.0 with and without text
                        p.attach(spec.method(**row.options), weight=1.0, reference=r)
                elif key != "none":
                    rec = P.train_subject(key, subject, ps, Path(s.artifacts))
                    trained = tailor.load(P.artifact_path(Path(s.artifacts), key, subject))
                    words, train_seconds = P.subject_words(key, rec["word"], cls), rec["seconds"]
                if key not in step_costs:  # one reference (or the trained subject) + a text prompt, per step
                    prompt = f"a photo of a {words} on {s.backgrounds[0]}"
                    if key == "none":  # the plain base: the unit
                        step_costs[key] = (step_seconds(pipe, prompt, s.guidance), 1.0)
                    else:
                        on = (
                            (lambda a=attach: a(1.0))
                            if attach is not None
                            else (lambda p=pipe, m=trained: p.attach(m))
                        )
                        step_costs[key] = step_cost(pipe, on, pipe.detach, prompt, s.guidance, s.timing_rounds)
                if attach is None and key != "none":
                    pipe.attach(trained)
                only, text = run_subject(pipe, words, s, attach=attach, worded=worded)
                seconds.append(train_seconds)
                C.save_images(only + text, root / "images" / key / subject, "img")
                clean = [f"a photo of a {cls} on {bg}" for bg in s.backgrounds for _ in range(s.seeds)]
                only_scores.append(score(only, refs, None))
                text_scores.append(score(text, refs, clean))
                tiles += [refs[0], only[0], text[0]]
                progress.advance(task)
            row = {"method": key} | {k: C.mean_of(only_scores, k) for k in only_scores[0]}
            row |= {f"text_{k}": C.mean_of(text_scores, k) for k in text_scores[0]}
            rows.append(row | {"seconds_per_subject": float(np.mean(seconds)), "step_cost": step_costs[key][1],
                               "step_seconds": step_costs[key][0]})  # fmt: skip
            sheet.append((key, tiles))
    C.contact_sheet(sheet, root / "grid.png")
    table = C.Table(COLUMNS, rows)
    extra = {"grid_columns": "per subject: reference, image-only, first text prompt"}
    return C.finish(root, "image_prompt", s, rows, table, t0, before_rows=extra)
