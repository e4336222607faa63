"""Control-GPT's world bench (docs/controlgpt.md): relation and object accuracy (VISOR-style, the shipped detector
oracle, :mod:`tailor.eval.relations`) on held-out two-object relation prompts, for

- ``base``: the plain prompt;
- ``layout``: the shipped layout ControlNet fed the rule planner's boxes (class-coloured rectangles);
- ``controlgpt``: the trained Control-GPT fed the rule planner's sketch and grounding tokens.

Prompts are captions of fresh relation scenes (photo, two objects, seeds 910000+, never rendered in training: the
training items' seeds are derived from the training seed). Each prompt is planned once by the rule planner (seed 0);
every row uses the same seed per prompt, 20 DDIM steps, guidance 7.5. Also times sampling (s/step) per row and
writes a contact sheet: the planned sketch | base | layout ControlNet | Control-GPT.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

STEPS, GUIDANCE, SIZE, FIRST_SEED = 20, 7.5, 64, 910_000


def prompts(n: int) -> list[str]:
    from tailor.world.relations import render_relation_scene

    return [render_relation_scene(FIRST_SEED + i, n_objects=2, style="photo", size=SIZE).caption for i in range(n)]


def run_bench(
    runs: str | Path, n: int = 48, model: str | None = None, sheet_rows: int = 12, grounding_guidance: bool = False
) -> dict[str, Any]:
    """Base, layout ControlNet and Control-GPT rows (+ ``controlgpt-gg``: the same model with ``grounding_guidance``,
    when asked) on ``n`` two-object prompts; ``RUNS/controlgpt/bench.json`` and ``contact_sheet.png``."""
    import torch
    from PIL import Image

    import tailor
    from tailor.conditions import layout_image
    from tailor.core.artifacts import load
    from tailor.eval.relations import detect, expectations_from_prompts, relation_scores
    from tailor.synth.plan import RulePlanner, sketch_image
    from tailor.world.vocab import SHAPES

    torch.set_num_threads(1)
    texts = prompts(n)
    plans = [RulePlanner().plan(t, size=SIZE) for t in texts]
    exps = expectations_from_prompts(texts)
    comps = tailor.load_components("world")
    if model is None:
        trained = Path(runs) / "controlgpt" / "run"
        model = str(trained) if (trained / "tailor.json").is_file() else str(shipped_folder())
    rows: dict[str, list[np.ndarray]] = {}
    timing: dict[str, float] = {}

    def sample(pipe, name, prepare=None):
        out, t0 = [], time.perf_counter()
        for i, t in enumerate(texts):
            if prepare is not None:
                prepare(pipe, i)
            r = pipe.generate(t, n=1, seed=i, steps=STEPS, guidance=GUIDANCE, width=SIZE, height=SIZE)
            out.append(np.asarray(r.images[0].convert("RGB")))
        timing[name] = (time.perf_counter() - t0) / (len(texts) * STEPS)
        rows[name] = out

    sample(tailor.Pipeline(comps), "base")
    lay = tailor.Pipeline(comps).attach(load("layout"), weight=1.0)

    def boxes(pipe, i):
        objs = plans[i]["objects"]
        pipe.attachments[0].inputs["image"] = layout_image(
            [o["box"] for o in objs], [SHAPES.index(o["name"]) + 1 for o in objs], (SIZE, SIZE)
        )

    sample(lay, "layout", boxes)
    lay.detach()
    pipe = tailor.Pipeline(comps).attach(load(model), weight=1.0)

    def layout_of(pipe, i):
        pipe.attachments[0].inputs.clear()
        pipe.attachments[0].inputs["layout"] = plans[i]

    sample(pipe, "controlgpt", layout_of)
    pipe.detach()
    if grounding_guidance:
        guided = load(model)
        guided.config.grounding_guidance = True
        sample(tailor.Pipeline(comps).attach(guided, weight=1.0), "controlgpt-gg", layout_of)
    result: dict[str, Any] = {"prompts": n, "steps": STEPS, "guidance": GUIDANCE, "model": model, "rows": {}}
    shape_only = [
        {"objects": [{"shape": o["shape"]} for o in e["objects"]], "relations": e["relations"]} for e in exps
    ]
    keep = ("object_accuracy", "object_recall", "relation_accuracy", "relation_accuracy_given_objects")
    result["rows_shape_only"] = {}
    for name, images in rows.items():
        dets = detect(np.stack(images))
        s = relation_scores(exps, dets)
        result["rows"][name] = {k: s[k] for k in keep} | {"sampling_s_per_step": round(timing[name], 4)}
        result["rows_shape_only"][name] = {k: relation_scores(shape_only, dets)[k] for k in keep}  # colours ignored
        print(name, json.dumps(result["rows"][name]), json.dumps(result["rows_shape_only"][name]), flush=True)
    out = Path(runs) / "controlgpt"
    out.mkdir(parents=True, exist_ok=True)
    sketches = [sketch_image(p["objects"], SIZE) for p in plans]
    sheet = [np.concatenate([sketches[i], *(rows[r][i] for r in rows)], 1) for i in range(min(sheet_rows, n))]
    cols = 1 + len(rows)
    Image.fromarray(np.concatenate(sheet, 0)).resize((cols * SIZE * 3, len(sheet) * SIZE * 3), Image.NEAREST).save(
        out / "contact_sheet.png"
    )
    (out / "bench.json").write_text(json.dumps(result | {"texts": texts}, indent=1))
    return result


def shipped_folder() -> Path:
    from tailor.methods.controlgpt.shipped import folder

    return folder()


def cost(mode: str, steps: int = 8) -> dict[str, Any]:
    """One measurement in this process (run each mode in a fresh one: peak RSS is per process): ``sample-base``,
    ``sample-controlgpt`` (20-step sampling of 4 prompts, s/step) or ``train-controlnet`` / ``train-controlgpt``
    (``steps`` training steps at batch 8 on ``world:relation:photo`` after 2 warm-up steps, s/step)."""
    import resource
    import tempfile

    import torch

    import tailor
    from tailor.core.artifacts import load
    from tailor.core.training import TrainConfig

    torch.set_num_threads(1)
    out: dict[str, Any] = {"mode": mode}
    if mode.startswith("sample"):
        pipe = tailor.Pipeline(tailor.load_components("world"))
        if mode == "sample-controlgpt":
            pipe.attach(load(str(shipped_folder())), weight=1.0)
        texts = prompts(4)
        pipe.generate(texts[0], n=1, seed=0, steps=2, width=SIZE, height=SIZE)  # warm-up
        t0 = time.perf_counter()
        for i, t in enumerate(texts):
            pipe.generate(t, n=1, seed=i, steps=STEPS, guidance=GUIDANCE, width=SIZE, height=SIZE)
        out["s_per_step"] = (time.perf_counter() - t0) / (len(texts) * STEPS)
    else:
        spec = "controlgpt" if mode == "train-controlgpt" else "controlnet"
        opts = {"init": "layout"} if spec == "controlgpt" else {"condition": "layout"}
        method = tailor.get_spec(spec).method(**opts)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(base="world", out=tmp, data="world:relation:photo", steps=steps + 2, batch_size=8,
                              lr=1e-4, seed=0, log_every=2, checkpoint_every=10_000)  # fmt: skip
            tailor.train(method, cfg)
            logs = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
            rates = [r["it_s"] for r in logs if r.get("it_s") and r["step"] > 2]  # the first window warms up
            out["s_per_step"] = float(np.mean([1 / r for r in rates]))
        out["trainable_params"] = sum(p.numel() for p in method.trainable_parameters())
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(cost(sys.argv[1])))
