"""``tailor bench relight``: IC-Light (Zhang, Rao, Agrawala, ICLR 2025) on held-out lit world objects (issue #21).

Each held-out scene is one single object on a background rendered by the world (:mod:`tailor.world.light`) under
the light sets ``A``, ``B``, ``AB = A + B`` and ``C`` (:func:`tailor.methods.ic_light.data.triplet_lights`); the
object lit by ``C`` (RGBA, alpha = its mask) is the foreground every model relights to ``A``, ``B`` and ``AB`` (fc:
the prompt names the lights; fbc: the lit background carries them, the prompt names the subject). Scores, against
the exact renders:

- ``psnr`` / ``ssim`` (whole image) and ``psnr_fg`` (object pixels) of the relit image to the exact render;
- ``albedo_drift``: the output divided by the true shading (linear RGB; the shading is the renderer's own, lights on
  a white albedo over the same normals) against the true albedo, on the object where every channel's shading is
  >= 0.05, mean absolute difference in 8-bit sRGB levels (the paper: without consistency, albedo and material drift);
- ``consistency``: ``|lin(out_A) + lin(out_B) - lin(out_AB)|`` on the object, in 8-bit linear levels (light adds
  linearly; the exact renders' own value is the floor that display clipping and sensor noise leave);
- ``light_follow``: does the output follow the light it was asked for? Per scene, with ``d`` the mean squared
  difference over the object's pixels (8-bit sRGB), a hit when ``d(out_A, A) + d(out_B, B) < d(out_A, B) +
  d(out_B, A)`` (a tie, e.g. the same image for both, counts a half): the fraction of hits, 0.5 is chance, 1.0 the
  exact renders; ``light_gap``: the mean ``|out_A - out_B|`` on the object (8-bit levels; the exact renders' value
  is how much A and B really differ there).

Rows: ``exact renders`` (the floors), ``base`` (the untrained base from the fc prompt: IC-Light's zero-initialised
channels), the rows the ``ic_light`` method declares (``BenchRow("relight", ...)``: trained here on ``world:light``
with and without the consistency loss; trainable parameters, training s/step and the training process's peak RSS),
then given or shipped models (``ic-light-fc``, ``ic-light-fbc``). Every model row also gives its sampling CPU s/step
and its ratio to the plain base's step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.bench import common as C
from tailor.errors import InputError

HELDOUT_SEED = 9117  # scene seeds derive_seed(HELDOUT_SEED, i): not the training items' derive_seed(seed, i, attempt)
GEN_SEED = 1000
TARGETS = ("A", "B", "AB")
MIN_SHADING = 0.05
QUICK = dict(scenes=1, sample_steps=2, steps=2, batch_size=1, timing_rounds=1, default_models=False)


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/relight")
    models: dict[str, str] = field(default_factory=dict)  # name -> file, folder or shipped name
    default_models: bool = True  # add the shipped ic-light-fc / ic-light-fbc when present
    rows: tuple[str, ...] | None = None  # declared training rows (None: the default ones)
    steps: int | None = None  # training steps of the declared rows (None: theirs)
    batch_size: int | None = None
    scenes: int = 12
    sample_steps: int = 20
    guidance: float = 5.0
    fresh: bool = False
    timing_rounds: int = 2
    parallel: int = 2  # declared rows training side by side

    def check(self) -> None:
        rows = declared_rows()
        for key in self.rows or ():
            if key not in rows:
                raise InputError(f"--row {key!r} is not a declared relight row; pick from {', '.join(rows)}.")
        if min(self.scenes, self.sample_steps) < 1:
            raise InputError("--scenes and --sample-steps must be >= 1.")


def declared_rows() -> dict:
    """Rows the methods declare for this bench: key -> (MethodSpec, BenchRow)."""
    from tailor.core.method import registry

    return {r.key: (spec, r) for spec in registry().values() for r in spec.bench if r.bench == "relight"}


# --------------------------------------------------------------------- metrics (uint8 HxWx3 images, bool masks)
def linear(img: np.ndarray) -> np.ndarray:
    from tailor.world.light import srgb_to_linear

    return srgb_to_linear(np.asarray(img, np.float64) / 255.0)


def albedo_drift(out: np.ndarray, shading: np.ndarray, albedo: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean |sRGB(lin(out) / shading) - sRGB(albedo)| x 255 over the object's lit pixels (every channel's shading
    >= :data:`MIN_SHADING`); ``shading``/``albedo``: linear HxWx3. None when no pixel qualifies."""
    from tailor.world.light import linear_to_srgb

    keep = np.asarray(mask, bool) & (shading.min(-1) >= MIN_SHADING)
    if not keep.any():
        return None
    est = linear(out)[keep] / shading[keep]
    return float(np.abs(linear_to_srgb(est) - linear_to_srgb(albedo[keep])).mean() * 255.0)


def consistency_error(a: np.ndarray, b: np.ndarray, ab: np.ndarray, mask: np.ndarray) -> float:
    """Mean |lin(a) + lin(b) - lin(ab)| x 255 over the object's pixels and channels."""
    keep = np.asarray(mask, bool)
    return float(np.abs(linear(a) + linear(b) - linear(ab))[keep].mean() * 255.0)


def light_hit(out_a: np.ndarray, out_b: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray, mask: np.ndarray) -> float:
    """1 when the outputs under A and B are nearer their own renders than the swapped ones (object pixels, mean
    squared 8-bit sRGB difference), 0 when nearer the swapped ones, 0.5 on a tie."""

    def d(x, y):
        return float(((np.asarray(x, np.float64) - np.asarray(y, np.float64))[np.asarray(mask, bool)] ** 2).mean())

    own, swapped = d(out_a, ref_a) + d(out_b, ref_b), d(out_a, ref_b) + d(out_b, ref_a)
    return 1.0 if own < swapped else 0.0 if own > swapped else 0.5


def light_gap(out_a: np.ndarray, out_b: np.ndarray, mask: np.ndarray) -> float:
    """Mean |out_A - out_B| over the object's pixels and channels, 8-bit levels."""
    return float(np.abs(np.asarray(out_a, np.float64) - np.asarray(out_b, np.float64))[np.asarray(mask, bool)].mean())


def psnr_masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64))[np.asarray(mask, bool)]
    mse = float((d**2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --------------------------------------------------------------------- held-out scenes
def scene(i: int, size: int) -> dict[str, Any]:
    """Held-out scene ``i``: renders under A, B, AB, C, the foreground (RGBA), its mask, true albedo and shading."""
    from tailor.methods.ic_light.data import foreground_rgba, strip_lights, triplet_lights
    from tailor.world.light import LitScene, render_lit
    from tailor.world.vocab import derive_seed

    seed = derive_seed(HELDOUT_SEED, i)
    lights = triplet_lights(seed)
    r = {k: render_lit(seed, subject="object", lights=v, size=size) for k, v in lights.items()}
    ab = r["AB"]
    lit = LitScene.from_parts(ab.extras["albedo"], [ab.mask])  # one object: the renderer's own normals
    white = LitScene(np.ones_like(lit.albedo), lit.normal, lit.height, lit.fg)
    return {
        "renders": r,
        "foreground": foreground_rgba(r["C"].image, r["C"].mask),
        "mask": ab.mask,
        "albedo": lit.albedo,
        "shading": {k: white.linear(lights[k]) for k in TARGETS},
        "prompt": {k: r[k].caption for k in TARGETS},
        "subject_prompt": {k: strip_lights(r[k].caption, lights[k]) for k in TARGETS},
        "background": {k: r[k].extras["background"] for k in TARGETS},
    }


def score(outs: list[dict[str, np.ndarray]], scenes: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean scores of one row: ``outs[i][target]`` is the relit image of scene ``i``."""
    from tailor.eval.image_metrics import psnr, ssim

    names = ("psnr", "psnr_fg", "ssim", "albedo_drift", "consistency", "light_follow", "light_gap")
    per: dict[str, list[float]] = {k: [] for k in names}
    for out, sc in zip(outs, scenes):
        for k in TARGETS:
            ref = sc["renders"][k].image
            per["psnr"].append(psnr(out[k], ref))
            per["psnr_fg"].append(psnr_masked(out[k], ref, sc["mask"]))
            per["ssim"].append(ssim(out[k], ref))
        drift = albedo_drift(out["AB"], sc["shading"]["AB"], sc["albedo"], sc["mask"])
        if drift is not None:
            per["albedo_drift"].append(drift)
        per["consistency"].append(consistency_error(out["A"], out["B"], out["AB"], sc["mask"]))
        ref = sc["renders"]
        per["light_follow"].append(light_hit(out["A"], out["B"], ref["A"].image, ref["B"].image, sc["mask"]))
        per["light_gap"].append(light_gap(out["A"], out["B"], sc["mask"]))
    finite = {k: [x for x in v if np.isfinite(x)] for k, v in per.items()}
    return {k: (float(np.mean(v)) if v else None) for k, v in finite.items()}


# --------------------------------------------------------------------- models
def relight(pipe, method, sc: dict[str, Any], index: int, s: Settings) -> dict[str, np.ndarray]:
    """The scene's foreground relit to A, B and AB by ``method`` (None: the plain base from the fc prompt)."""
    out = {}
    for k in TARGETS:
        if method is None:
            prompt = sc["prompt"][k]
        elif method.config.mode == "fc":
            pipe.attach(method, foreground=sc["foreground"])
            prompt = sc["prompt"][k]
        else:
            pipe.attach(method, foreground=[sc["foreground"], sc["background"][k]])
            prompt = sc["subject_prompt"][k]
        img = pipe.generate(prompt, n=1, seed=GEN_SEED + index, steps=s.sample_steps, guidance=s.guidance)
        out[k] = np.asarray(img.images[0].convert("RGB"))
        if method is not None:
            pipe.detach()
    return out


TRAIN_SCRIPT = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
import tailor
from tailor.core.training import TrainConfig, train
a = json.loads(sys.argv[1])
method = tailor.get_spec("ic_light").method(**a["options"])
cfg = TrainConfig(**a["config"])
res = train(method, cfg)
n = sum(p.numel() for p in method.trainable_parameters())
print("RESULT " + json.dumps({"seconds": res.seconds, "steps": res.steps, "loss": res.loss, "params": n,
      "cpu_seconds": time.process_time(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def train_rows(declared: dict, s: Settings, root: Path) -> dict[str, dict[str, Any]]:
    """Train the declared rows on ``world:light``, each in its own process (its peak RSS is the training's; the rows
    run side by side, so their wall s/step shares the CPU: the CPU s/step is the comparable number); cached."""
    recs, procs = {}, {}
    for key, (_spec, row) in declared.items():
        if len([p for p, _ in procs.values() if p.poll() is None]) >= s.parallel:  # a shared CPU: a few at a time
            next(p for p, _ in procs.values() if p.poll() is None).wait()
        steps, batch = s.steps or row.steps, s.batch_size or row.batch_size
        folder = root / "train" / key
        config = dict(base=s.base, out=str(folder), data="world:light", steps=steps, batch_size=batch, lr=row.lr,
                      caption_dropout=0.1, warmup_steps=min(50, steps // 4), seed=0, checkpoint_every=100,
                      keep_checkpoints=1, log_every=10)  # fmt: skip
        settings = {"key": key, "options": row.options, "config": {**config, "out": None}}
        recs[key] = None if s.fresh else C.cached(folder, settings)
        if recs[key] is None:
            ckpts = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
            config["resume"] = "latest" if ckpts and not s.fresh else None
            args = json.dumps({"options": row.options, "config": config})
            cmd = [sys.executable, "-c", TRAIN_SCRIPT, args]
            logs = root / "train"  # its output to files beside the run (a waited-on pipe could fill and block)
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"{key}.out", "w") as out, open(logs / f"{key}.err", "w") as err:
                procs[key] = (subprocess.Popen(cmd, stdout=out, stderr=err, text=True), settings)
    for key, (proc, settings) in procs.items():
        proc.wait()
        stdout, stderr = (root / "train" / f"{key}.out").read_text(), (root / "train" / f"{key}.err").read_text()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise InputError(f"training relight row {key} failed: {stderr.strip()[-400:]}")
        rec = json.loads(lines[-1][len("RESULT ") :]) | {"stamp": C.stamp(settings)}
        rec["train_s_per_step"] = rec["seconds"] / max(1, rec["steps"])
        rec["train_cpu_s_per_step"] = rec["cpu_seconds"] / max(1, rec["steps"])
        (root / "train" / key / "bench.json").write_text(json.dumps(rec))
        recs[key] = rec
    return recs


def load_model(name: str, path: str):
    return C.load_artifact("relight model", name, path, "ic_light", "IC-Light", "pass an IC-Light model")


def models(s: Settings) -> dict[str, str]:
    return C.with_shipped(s.models, ("ic-light-fc", "ic-light-fbc"), s.default_models)


def run(s: Settings) -> dict[str, Any]:
    import tailor
    from tailor.bench.image_prompt import step_cost, step_seconds
    from tailor.core.progress import make_progress

    root = C.start(s)
    t0, c0 = time.perf_counter(), time.process_time()
    comps = tailor.load_components(s.base)
    size = comps.default_size
    scenes = [scene(i, size) for i in range(s.scenes)]
    declared = {k: v for k, v in declared_rows().items() if (s.rows is None and v[1].default) or k in (s.rows or ())}
    given = models(s)
    keys = ["exact renders", "base", *declared, *given]
    pipe = tailor.Pipeline(comps)
    prompt = scenes[0]["prompt"]["AB"]
    trained = train_rows(declared, s, root)
    from PIL import Image

    from tailor.methods.ic_light.prepare import foreground_array

    shown = [Image.fromarray(foreground_array(sc["foreground"], size, size)) for sc in scenes[:3]]  # as the UNet sees
    rows, sheet = [], [("foreground", [im for im in shown for _ in TARGETS])]
    with make_progress() as progress:
        task = progress.add_task("relight", total=len(keys), info="")
        for key in keys:
            progress.update(task, info=key)
            row: dict[str, Any] = {"row": key}
            method = None
            if key in declared:
                rec = trained[key]
                method = load_model(key, str(root / "train" / key))
                row |= {"note": declared[key][1].note, "steps": rec["steps"], "trainable_params": rec["params"],
                        "train_s_per_step": rec["train_s_per_step"], "train_peak_rss_mb": rec["peak_rss_mb"],
                        "train_cpu_s_per_step": rec.get("train_cpu_s_per_step")}  # fmt: skip
            elif key in given:
                method = load_model(key, given[key])
            if key == "exact renders":
                outs = [{k: sc["renders"][k].image for k in TARGETS} for sc in scenes]
            else:
                outs = [relight(pipe, method, sc, i, s) for i, sc in enumerate(scenes)]
                if method is None:
                    row |= {"sample_s_per_step": step_seconds(pipe, prompt, s.guidance), "step_cost": 1.0}
                else:
                    sc0 = scenes[0]
                    refs = [sc0["foreground"], sc0["background"]["AB"]] if method.config.mode == "fbc" else None

                    def on(m=method, r=refs or sc0["foreground"]):
                        pipe.attach(m, foreground=r)

                    secs, ratio = step_cost(pipe, on, pipe.detach, prompt, s.guidance, s.timing_rounds)
                    row |= {"sample_s_per_step": secs, "step_cost": ratio}
            sc_row = score(outs, scenes)
            if key == "exact renders":
                sc_row |= {"psnr": None, "psnr_fg": None, "ssim": None}
            rows.append(row | sc_row)
            tiles = [Image.fromarray(o[k]) for o in outs[:3] for k in TARGETS]
            sheet.append((key, tiles))
            C.save_images(tiles, root / "images" / key.replace(" ", "_"), "img")
            progress.advance(task)
    C.contact_sheet(sheet, root / "grid.png", scale=3)
    table = C.Table(
        [
            ("row", "row", ""),
            ("psnr", "PSNR", ".2f"),
            ("psnr_fg", "PSNR fg", ".2f"),
            ("ssim", "SSIM", ".3f"),
            ("albedo_drift", "albedo drift", ".1f"),
            ("consistency", "consistency", ".2f"),
            ("light_follow", "light following", ".2f"),
            ("light_gap", "A-B gap", ".1f"),
            ("trainable_params", "params", ",d"),
            ("train_s_per_step", "train s/step", ".2f"),
            ("train_cpu_s_per_step", "train CPU s/step", ".2f"),
            ("train_peak_rss_mb", "peak RSS MB", ".0f"),
            ("sample_s_per_step", "sample s/step", ".4f"),
            ("step_cost", "x base step", ".2f"),
        ],  # fmt: skip
        rows,
    )
    extra = {"grid": ["foreground", *keys], "targets": list(TARGETS), "heldout_seed": HELDOUT_SEED}
    return C.finish(root, "relight", s, rows, table, t0, c0, after_rows=extra)
