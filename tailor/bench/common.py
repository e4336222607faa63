"""Shared parts of the world benches (``tailor bench``): subject and prompt sets, seeds, generation through
:class:`tailor.Pipeline`, the instance-embedder scores, timing, the result table and the files every bench writes.

The benches follow the evaluation protocols of the papers they reproduce at world scale: DreamBooth's DreamBench
(Ruiz et al. 2022: subjects x prompts x seeds, DINO / CLIP-I / CLIP-T), ControlNet / ControlNet++ controllability
(Zhang et al. 2023; Li et al. 2024: edge F1, mIoU) and IP-Adapter's image-prompt scores (Ye et al. 2023). Ground
truth comes from the procedural world and its oracles, so every number is measured, not judged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tailor.errors import ConfigError, InputError

#: built-in world subjects (two colours, subject-only patterns, decals: never in base training), in bench order
DEFAULT_SUBJECTS = ("checker_star", "zebra_heart", "ladybug_circle", "target_square")
#: backgrounds of the prompt set: one prompt per background plus the bare subject = 8 prompts
PROMPT_BACKGROUNDS = ("grass", "sand", "snow", "water", "brick", "wood", "sky")
REFERENCE_SEED = 0  # reference render i of a subject uses seed REFERENCE_SEED + i
PROBE_SEED = 5000  # calibration renders (never references, never training images)
GEN_SEED = 0  # generated image j of a prompt uses seed GEN_SEED + j (tailor's convention: seed + i)


def single_thread() -> None:
    """The benches are timed on one CPU thread (the development machine is shared); the loaders' per-call progress
    bars are silenced (a bench loads the base once per method and subject; it shows its own progress)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(1)
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


# --------------------------------------------------------------------- subjects and prompts
def subject_spec(name: str):
    from tailor.world import SubjectSpec

    try:
        return SubjectSpec.parse(name)
    except ConfigError as e:
        raise ConfigError(f"--subject {name!r} is not a world subject ({e})") from e


def class_word(name: str) -> str:
    return subject_spec(name).class_word


def reference_images(name: str, n: int, size: int, seed: int = REFERENCE_SEED) -> list:
    """``n`` photo renders of the subject (varied pose and background): the few images a user would give."""
    from PIL import Image

    from tailor.world import render_subject

    return [Image.fromarray(render_subject(name, seed + i, size=size).image) for i in range(n)]


def write_reference_folder(folder: Path, images: list, caption: str) -> Path:
    """The references as a training folder (``ref_i.png`` + same-stem ``.txt`` captions)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"ref_{i}.png")
        (folder / f"ref_{i}.txt").write_text(caption)
    return folder


def subject_prompts(subject_words: str, backgrounds: Sequence[str] = PROMPT_BACKGROUNDS) -> list[str]:
    """``a photo of a <subject words> on <background>`` for each background, then the bare subject."""
    return [f"a photo of a {subject_words} on {bg}" for bg in backgrounds] + [f"a photo of a {subject_words}"]


# --------------------------------------------------------------------- generation and scores
def generate(pipe, prompts: list[str], n: int, steps: int, guidance: float, seed: int = GEN_SEED) -> list:
    """``n`` images per prompt (image j of every prompt uses seed ``seed + j``), as PIL images, prompt-major."""
    out = []
    for p in prompts:  # one prompt per call keeps seeds per prompt identical across methods and prompt sets
        out += pipe.generate(p, n=n, seed=seed, steps=steps, guidance=guidance).images
    return out


@cache
def instance_oracle():
    from tailor.world.zoo.oracles import load_oracle

    return load_oracle("instance")


@torch.no_grad()
def instance_embeds(images) -> torch.Tensor:
    """The world's instance embedder (the DINO-like oracle): unit vectors, one per image."""
    from tailor.world.zoo.oracles import to_unit

    model = instance_oracle()
    return torch.cat([model(to_unit(images[i : i + 128])) for i in range(0, len(images), 128)])


def similarity_to(images, references) -> np.ndarray:
    """Each image's mean instance-embedder cosine to the references (the statistic the drift threshold uses)."""
    a, r = instance_embeds(images), instance_embeds(references)
    return (a @ r.t()).mean(dim=1).numpy()


def calibrate_threshold(same: Sequence[float], different: Sequence[float]) -> tuple[float, float]:
    """The threshold with the best balanced same/different accuracy (mean of both hit rates) and that accuracy.

    Candidates are the midpoints between neighbouring sorted scores; ``score >= threshold`` means "same subject";
    among equally good candidates the middle one is taken.
    """
    same, diff = np.asarray(same, float), np.asarray(different, float)
    if not len(same) or not len(diff):
        raise ConfigError("threshold calibration needs at least one same-subject and one different-subject score.")
    values = np.unique(np.concatenate([same, diff]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    accs = np.array([0.5 * (np.mean(same >= t) + np.mean(diff < t)) for t in candidates])
    tied = candidates[np.isclose(accs, accs.max())]
    return float(tied[len(tied) // 2]), float(accs.max())  # the middle of the best thresholds


def drift_calibration(names: Sequence[str], n_ref: int, n_probe: int, size: int) -> dict[str, Any]:
    """Same-subject threshold on real renders: probes (other seeds) vs the references of their own / other subjects."""
    refs = {s: instance_embeds(reference_images(s, n_ref, size)) for s in names}
    probes = {s: instance_embeds(reference_images(s, n_probe, size, seed=PROBE_SEED)) for s in names}
    same, diff = [], []
    for s in names:
        for t in names:
            sims = (probes[s] @ refs[t].t()).mean(dim=1)  # the statistic of similarity_to
            (same if s == t else diff).extend(sims.tolist())
    threshold, acc = calibrate_threshold(same, diff)
    return {
        "threshold": threshold,
        "balanced_accuracy": acc,
        "same_mean": float(np.mean(same)),
        "different_mean": float(np.mean(diff)),
        "subjects": list(names),
    }


def with_shipped(models: dict[str, str], names: Sequence[str], include: bool) -> dict[str, str]:
    """A bench's ``NAME=PATH`` models plus, when ``include``, each of ``names`` the world zoo ships (by its name;
    a model the user gave under that name wins)."""
    out = dict(models)
    if include:
        from tailor.world import zoo

        shipped = zoo.shipped_adapters()
        for name in names:
            if name in shipped:
                out.setdefault(name, name)
    return out


def load_artifact(what: str, name: str, path: str, method: str, expected: str, fix: str):
    """A bench row's model: ``tailor.load(path)``, refused in one sentence when it cannot be loaded or is not a
    ``method`` artifact (``what``: the bench's word for it; ``expected``: the method's name in the message; ``fix``:
    what to pass instead)."""
    import tailor

    try:
        loaded = tailor.load(path)
    except Exception as e:
        raise InputError(f"{what} {name}={path} cannot be loaded ({e}); {fix}.") from e
    if loaded.name != method:
        raise InputError(f"{name}={path} is a {loaded.name} artifact, not {expected}; {fix}.")
    return loaded


# --------------------------------------------------------------------- declared rows
def declared_rows(bench: str) -> dict:
    """Rows methods declare with ``BenchRow(bench, ...)``: key -> (MethodSpec, BenchRow), in registry order with the
    rows of methods that build on others after the rest (the adapters before what builds on them)."""
    from tailor.core.method import registry

    rows = [(r.key, (spec, r)) for spec in registry().values() for r in spec.bench if r.bench == bench]
    return dict(sorted(rows, key=lambda kv: bool(kv[1][0].builds_on)))


def load_row(bench: str, key: str, spec, row, path: str, free_options: dict[str, Any] | None = None):
    """A declared row's method: a training-free one from the row's options (``free_options`` on top); a trained one
    loaded from ``path`` as a ``spec.name`` artifact (one sentence when it cannot be), the row's options on top."""
    if spec.method.training_free:
        return spec.method(**(dict(row.options) | (free_options or {})))
    from tailor.compose import load_kind

    try:
        method = load_kind(path, spec.name)
    except Exception as e:
        raise InputError(f"{bench} row {key}={path} cannot be loaded ({e}); pass --model {key}=PATH with a "
                         f"`tailor train {spec.name}` folder.") from e  # fmt: skip
    if row.options:
        method.config = method.config.replace(**row.options)
    return method


@dataclass
class RowRun:
    """What a bench over declared rows starts from (:func:`start_rows`)."""

    root: Path
    t0: float
    pipe: Any
    size: int
    declared: dict  # the rows to run: key -> (MethodSpec, BenchRow)
    methods: dict  # key -> loaded method


def start_rows(s, bench: str, load) -> RowRun:
    """A bench over the rows methods declare for ``bench``: :func:`start`, the rows ``s.rows`` names (None: the
    default ones), the base's pipeline and each row's method from ``load(key, spec, row, s)``."""
    import tailor

    root = start(s)
    t0 = time.perf_counter()
    declared = {k: v for k, v in declared_rows(bench).items() if (v[1].default if s.rows is None else k in s.rows)}
    comps = tailor.load_components(s.base)
    pipe = tailor.Pipeline(comps)
    methods = {k: load(k, spec, row, s) for k, (spec, row) in declared.items()}
    return RowRun(root, t0, pipe, comps.default_size, declared, methods)


# --------------------------------------------------------------------- timing, cache, files
@contextmanager
def timer() -> Iterator[dict[str, float]]:
    """Wall ``seconds`` and this process's ``cpu_seconds``: on one thread the CPU time is what the wall time would
    be on an otherwise idle machine, so it is the number to compare when other jobs share the cores."""
    box: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - t0
        box["cpu_seconds"] = time.process_time() - c0


def stamp(settings: dict[str, Any]) -> str:
    """Cache key of a trained artifact: its settings plus the base's weights (``base="world"`` names whatever base
    is shipped, so a new base invalidates what was trained on the old one)."""
    if "base" in settings:
        settings = {**settings, "base_weights": base_fingerprint(str(settings["base"]))}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@cache
def base_fingerprint(base: str) -> str:
    """A hash of a base folder's UNet and text-encoder weight files (``world`` = the shipped base); the name itself
    for built-in random bases (``tiny``) and single files' size and time."""
    folder = Path(base)
    if base == "world":
        from tailor.world.zoo import base_path

        folder = base_path()
    if folder.is_file():
        st = folder.stat()
        return f"{st.st_size}-{st.st_mtime_ns}"
    files = sorted(f for part in ("unet", "text_encoder") for f in (folder / part).glob("*.safetensors"))
    if not files:
        return base
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached(folder: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The ``bench.json`` record of a cached artifact trained with exactly these settings, else None."""
    rec = folder / "bench.json"
    if not rec.is_file():
        return None
    try:
        data = json.loads(rec.read_text())
    except json.JSONDecodeError:
        return None
    return data if data.get("stamp") == stamp(settings) else None


def fresh_dir(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def save_images(images: list, folder: Path, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"{prefix}_{i:03d}.png")


def contact_sheet(rows: list[tuple[str, list]], path: Path, scale: int = 2) -> Path:
    """One row of tiles per entry (row labels go to ``results.json``), upscaled ``scale`` times for viewing."""
    from PIL import Image

    from tailor.core.images import make_grid

    cols = max(len(tiles) for _, tiles in rows)
    size = rows[0][1][0].size
    blank = Image.new("RGB", size, "white")
    tiles = [t.resize(size) for _, row in rows for t in list(row) + [blank] * (cols - len(row))]
    grid = make_grid(tiles, cols=cols)
    grid.resize((grid.width * scale, grid.height * scale), 0).save(path)
    return path


def settings_json(s) -> dict[str, Any]:
    """A bench's settings dataclass as JSON-able values (tuples -> lists, paths -> strings)."""
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}


def start(s) -> Path:
    """A bench run's start: one thread, the settings checked, the output folder made (returned)."""
    from tailor.core.io import write_json

    single_thread()
    s.check()
    root = Path(s.out)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "tailor-bench.json", settings_json(s))  # marks the folder as a bench's (rerun, resume)
    return root


def finish(
    root: Path,
    bench: str,
    s,
    rows: list[dict],
    table: Table,
    t0: float,
    c0: float | None = None,
    before_rows: dict[str, Any] | None = None,
    after_rows: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A bench's result: its name, base and settings, its own fields around ``rows``, the wall (and, given ``c0``,
    CPU) seconds since ``t0`` / ``c0`` and the rendered table; written to ``root/results.json`` and returned."""
    result = {"bench": bench, "base": s.base, "settings": settings_json(s), **(before_rows or {}), "rows": rows}
    result |= after_rows or {}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if c0 is not None:
        result["cpu_seconds"] = round(time.process_time() - c0, 1)
    result["table"] = table.render()
    write_results(root, result)
    return result


def write_results(out: Path, result: dict[str, Any]) -> Path:
    from tailor.core.io import write_text

    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(result, indent=2))
    return out / "results.json"


@dataclass
class Table:
    """A result table: ``columns`` (key, header, format) and one dict per row."""

    columns: list[tuple[str, str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> str:
        def cell(row, key, fmt):
            v = row.get(key)
            return "-" if v is None else format(v, fmt) if isinstance(v, (int, float)) else str(v)

        body = [[cell(r, k, f) for k, _, f in self.columns] for r in self.rows]
        heads = [h for _, h, _ in self.columns]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(heads)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(heads), sep, *(line(b) for b in body)])


def mean_of(dicts: list[dict[str, Any]], key: str) -> float | None:
    vals = [d[key] for d in dicts if d.get(key) is not None]
    return float(np.mean(vals)) if vals else None
