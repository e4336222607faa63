"""``tailor bench story``: one subject across the frames of a story (issue #22; Intelligent Grimm, Liu et al. 2024).

Held-out world stories (:func:`tailor.world.stories.render_story`, seeds never used in training; objects and faces
alternate, faces of the held-out identities 800-999) give each frame's prompt. Every row makes frame 1 from its
prompt alone (the same image for every row: same seed, no condition), then frames 2..N from their prompts plus what
the row's method reads:

- ``none``: nothing (the base with the frame prompt: what the text alone keeps of the subject);
- the rows methods declare with ``BenchRow("story", ...)``: StoryGen's context module with its shipped ``world``
  weights (every earlier frame, up to ``max_frames``, the paper's auto-regressive setting); the IP-Adapter (shipped
  ``world``, frame 1 as the image prompt at the paper's text+image scale 0.5); reference-only attention (frame 1 as
  the reference, weight 1). ``--model KEY=PATH`` swaps a trained row's weights;
- ``real``: the rendered story itself (the oracles' level for the same subject across these prompts).

Scores on frames 2..N (frame 1 is shared): story consistency = the instance oracle's cosine of each frame to frame 1
(and, on face stories, the FaceSim oracle's), per-frame prompt accuracy = the attribute oracle's accuracy on what
each frame's prompt names (shape, colour, pattern, background, style), and the rate of frames with all of it right.
Costs: trainable parameters, training s/step and peak RSS (a short ``tailor train`` run of the row's recipe in a
child process; the shipped run's rate is in ``results.json``), sampling s/step with one previous frame / reference
and its ratio to the plain base's step (CPU time, interleaved with the base; StoryGen also with 3 frames).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.bench import common as C
from tailor.bench.image_prompt import step_cost, step_seconds
from tailor.errors import InputError

STORY_SEED = 910_000  # story j renders with seed STORY_SEED + j (training stories use derive_seed(seed, i))
FACE_IDENTITIES = range(800, 1000)  # held out of the FaceSim oracle, the base and the identity weights
#: how a trained row's training step is timed: method -> (data, config fields passed on as ``tailor train`` flags)
TRAIN_TIMING = {
    "storygen": ("world:story", ()),
    "ip_adapter": ("world:objects:all", ("image_encoder",)),
}
QUICK = dict(stories=2, frames=2, sample_steps=2, timing_rounds=1, train_steps=2, train_batch=1)


def story_rows() -> dict:
    """Rows methods declare for this bench: key -> (MethodSpec, BenchRow)."""
    return C.declared_rows("story")


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/story")
    models: dict[str, str] = field(default_factory=dict)  # row key -> weights (default: the shipped "world")
    rows: tuple[str, ...] | None = None  # declared rows to run (None: every one)
    stories: int = 16
    frames: int = 4
    sample_steps: int = 20
    guidance: float = 5.0
    ip_scale: float = 0.5
    baseline: bool = True
    timing_rounds: int = 3
    train_steps: int = 20  # steps of the training-cost run of each trained row (0: skip)
    train_batch: int = 8

    def check(self) -> None:
        declared = story_rows()
        names = {spec.name for spec, _ in declared.values()}
        for key in [*(self.rows or ()), *(k for k in self.models if k not in names)]:
            if key not in declared:
                raise InputError(f"story row {key!r} is not declared; pick from {', '.join(declared)}.")
        if min(self.stories, self.sample_steps) < 1 or not 2 <= self.frames <= 16:
            raise InputError("--stories and --sample-steps must be >= 1 and --frames from 2 to 16.")


def held_out_story(j: int, frames: int, size: int) -> list:
    from tailor.world.stories import render_story

    ident = FACE_IDENTITIES[(j // 2) * 25 % len(FACE_IDENTITIES)]
    kw = {"subject": "object"} if j % 2 == 0 else {"subject": "face", "identity": ident}
    return render_story(STORY_SEED + j, frames=frames, size=size, **kw)


def load_row(key: str, spec, row, s: Settings):
    """The row's method: training-free ones from the row's options; trained ones from ``--model KEY=PATH`` (the
    row's key or its method's name) or the shipped ``world`` weights, with the row's options on top."""
    return C.load_row("story", key, spec, row, s.models.get(key, s.models.get(spec.name, "world")))


def attach(pipe, method, frames: list, prompts: list[str], s: Settings) -> None:
    """A method that reads previous frames gets all of them with their prompts; any other gets frame 1 as the input
    its ``GenerateInput`` declares (the IP-Adapter at the text+image scale)."""
    from tailor.core.method import get_spec

    if getattr(method, "story_frames", False):
        pipe.attach(method, frames=list(frames), frame_prompts=list(prompts))
        return
    decl = get_spec(method.name).generate
    weight = s.ip_scale if method.name == "ip_adapter" else 1.0
    pipe.attach(method, weight=weight, **{decl.input.name: [frames[0]]})


def frame_seed(story: int, frame: int) -> int:
    """Frame ``k`` of story ``j`` starts from seed ``1000 j + k``: other noise per frame, so that what the frames
    share comes from the method, not from one starting noise (``tailor generate --story`` reuses ``--seed``)."""
    return 1000 * story + frame


def make_story(pipe, method, prompts: list[str], first, story: int, s: Settings) -> list:
    """Frames 2..N of one story after the shared ``first`` frame."""
    frames = [first]
    for k in range(1, len(prompts)):
        if method is not None:
            attach(pipe, method, frames, prompts[:k], s)
        frames += C.generate(pipe, [prompts[k]], 1, s.sample_steps, s.guidance, seed=frame_seed(story, k))
        if method is not None:
            pipe.detach()
    return frames


def score_story(frames: list, prompts: list[str], face: bool) -> dict[str, Any]:
    from tailor.eval.world import world_scores

    emb = C.instance_embeds(frames)
    out: dict[str, Any] = {"consistency": float((emb[1:] @ emb[0]).mean())}
    acc = world_scores(frames[1:], prompts[1:])
    out["prompt_acc"] = float(np.mean(list(acc["accuracy"].values())))
    out["all_correct"] = acc["all_correct"]
    if face:
        from tailor.eval.identity import identity_scores

        out["facesim"] = identity_scores(frames[1:], frames[:1])["facesim"]
    return out


def different_subject_level(stories: list[list]) -> float:
    """Instance cosine of frame 1 of each real story to frames 2..N of the other stories of its subject kind: the
    oracle's level for *different* subjects in these settings (consistency near it = no subject kept)."""
    embs = [C.instance_embeds(f) for f in stories]
    vals = [float((embs[b][1:] @ embs[a][0]).mean()) for a in range(len(embs)) for b in range(len(embs))
            if a != b and a % 2 == b % 2]  # fmt: skip
    return float(np.mean(vals)) if vals else float("nan")


def train_cost(method, s: Settings, work: Path) -> dict[str, Any]:
    """Training s/step (steady state: after the first logged window) and peak RSS of a short ``tailor train`` run
    of ``method`` (with the loaded method's image encoder and the like) on the bench's base, in a child process (its
    own ``ru_maxrss``)."""
    data, fields = TRAIN_TIMING[method.name]
    extra = [a for f in fields for a in (f"--{f.replace('_', '-')}", str(getattr(method.config, f)))]
    method = method.name
    out = work / f"train-{method}"
    log_every = max(1, s.train_steps // 4)
    args = ["train", method, "--base", s.base, "--data", data, "--steps", str(s.train_steps), "--batch-size",
            str(s.train_batch), "--out", str(out), "--log-every", str(log_every), "--checkpoint-every", "100000",
            *extra]  # fmt: skip
    code = ("import json, resource, sys, torch; torch.set_num_threads(1); from tailor.cli import main; "
            "rc = main(sys.argv[1:]); print(json.dumps({'rc': rc, 'maxrss_kb': "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")  # fmt: skip
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    if run.returncode or not lines or json.loads(lines[-1]).get("rc"):
        raise InputError(f"the training-cost run of {method} failed: {run.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines() if ln.strip()]
    rates = [r["it_s"] for r in rows if r.get("it_s")]
    steady = rates[1:] or rates
    return {
        "train_s_per_step": float(1.0 / np.median(steady)) if steady else None,
        "train_peak_rss_mb": json.loads(lines[-1])["maxrss_kb"] / 1024,
        "train_batch": s.train_batch,
        "train_run_seconds": round(time.perf_counter() - t0, 1),
    }


COLUMNS = [
    ("method", "method", ""),
    ("consistency", "consistency (instance, to frame 1)", ".3f"),
    ("consistency_object", "objects", ".3f"),
    ("consistency_face", "faces", ".3f"),
    ("facesim", "FaceSim to frame 1 (faces)", ".3f"),
    ("prompt_acc", "prompt acc", ".3f"),
    ("all_correct", "all named right", ".3f"),
    ("trainable_params", "trainable params", ",d"),
    ("train_s_per_step", "train s/step (b8)", ".2f"),
    ("train_peak_rss_mb", "train peak RSS MB", ".0f"),
    ("step_seconds", "sampling s/step", ".3f"),
    ("step_cost", "vs base step", ".2f"),
]


def run(s: Settings) -> dict[str, Any]:
    from tailor.core.progress import make_progress

    bench = C.start_rows(s, "story", load_row)
    root, t0, pipe, size, methods = bench.root, bench.t0, bench.pipe, bench.size, bench.methods
    stories = [held_out_story(j, s.frames, size) for j in range(s.stories)]
    prompts = [[f.caption for f in st] for st in stories]
    real = [[f.pil() for f in st] for st in stories]
    firsts = [C.generate(pipe, [p[0]], 1, s.sample_steps, s.guidance, seed=frame_seed(j, 0))[0]
              for j, p in enumerate(prompts)]  # fmt: skip
    keys = [*(["none"] if s.baseline else []), *methods]
    rows, sheet = [], []
    base_step = step_seconds(pipe, prompts[0][1], s.guidance)
    with make_progress() as progress, tempfile.TemporaryDirectory(dir=root) as work:
        task = progress.add_task("story", total=len(keys) * s.stories, info="")
        for key in keys:
            method = methods.get(key)
            per = []
            for j in range(s.stories):
                progress.update(task, info=f"{key} / story {j}")
                frames = make_story(pipe, method, prompts[j], firsts[j], j, s)
                C.save_images(frames, root / "images" / key / f"story_{j:02d}", "frame")
                per.append(score_story(frames, prompts[j], j % 2 == 1))
                if j < 4:
                    sheet.append((f"{key} / story {j}", frames))
                progress.advance(task)
            row = summarize(key, per)
            row |= costs(pipe, key, method, prompts[0], firsts[0], real[0], base_step, s, Path(work))
            rows.append(row)
    per_real = [score_story(f, p, j % 2 == 1) for j, (f, p) in enumerate(zip(real, prompts))]
    rows.append(summarize("real", per_real))
    sheet += [(f"real / story {j}", real[j]) for j in range(min(4, s.stories))]
    C.contact_sheet(sheet, root / "grid.png")
    extra = {
        "grid_rows": [name for name, _ in sheet],
        "different_subject_level": different_subject_level(real),
        "stories": [{"seed": STORY_SEED + j, "prompts": p} for j, p in enumerate(prompts)],
    }
    shipped = shipped_training({k: m for k, m in methods.items() if k not in s.models and m.name not in s.models})
    return C.finish(root, "story", s, rows, C.Table(COLUMNS, rows), t0, before_rows=extra,
                    after_rows={"shipped_training": shipped})  # fmt: skip


def summarize(key: str, per: list[dict]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": key}
    for k in ("consistency", "prompt_acc", "all_correct", "facesim"):
        row[k] = C.mean_of(per, k)
    row["consistency_object"] = C.mean_of(per[0::2], "consistency")
    row["consistency_face"] = C.mean_of(per[1::2], "consistency")
    row["consistency_sd"] = float(np.std([p["consistency"] for p in per]))
    return row


def costs(pipe, key, method, prompts, first, real, base_step, s: Settings, work: Path) -> dict[str, Any]:
    """Trainable parameters, training cost (trained rows), sampling s/step with one previous frame / reference and
    its ratio to the base's (interleaved); StoryGen also with three previous frames."""
    if method is None:
        return {"trainable_params": 0, "step_seconds": base_step, "step_cost": 1.0}
    out: dict[str, Any] = {"trainable_params": count_params(method)}
    prompt = prompts[1]

    def on(frames=(first,)):
        attach(pipe, method, list(frames), list(prompts[: len(frames)]), s)

    out["step_seconds"], out["step_cost"] = step_cost(pipe, on, pipe.detach, prompt, s.guidance, s.timing_rounds)
    if getattr(method, "story_frames", False) and len(real) >= 3:
        three = [first, *real[1:3]]
        out["step_seconds_3"], out["step_cost_3"] = step_cost(
            pipe, lambda: on(three), pipe.detach, prompts[min(3, len(prompts) - 1)], s.guidance, s.timing_rounds
        )
    if not method.training_free and s.train_steps > 0 and method.name in TRAIN_TIMING:
        out |= train_cost(method, s, work)
    return out


def count_params(method) -> int:
    """The parameters of the method's own modules (built on the base by its first attachment): what training
    trains; 0 for a training-free method."""
    return 0 if method.training_free else int(sum(p.numel() for m in method.modules() for p in m.parameters()))


def shipped_training(methods: dict) -> dict[str, Any]:
    """The shipped weights' own training record (steps, seconds) where the zoo wrote one."""
    from tailor.core.resources import resolve

    out = {}
    for key, m in methods.items():
        if m.training_free:
            continue
        folder = resolve(f"artifact:{m.name}", "world") or resolve("artifact", "world")
        rec = Path(folder) / "tailor.json" if folder else None
        if rec is not None and rec.is_file():
            out[key] = json.loads(rec.read_text()).get("zoo")
    return out
