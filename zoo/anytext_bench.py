"""The glyph bench (issue #23 item 4): AnyText vs a ControlNet trained on glyph renders vs the base, on fresh world
glyph renders (photo style, seeds never trained on).

Per eval render: its caption (``a sign that says "CAT" on brick``), its text and the line's axis-aligned box.
AnyText gets ``text`` / ``text_box``; the ControlNet (canny, trained on the same data and schedule: the paper's
ControlNet row, canny of the rendered glyphs) gets the line's text drawn in the box as world edges (the training
condition's text part); the base gets the caption alone. Scores: Sen.ACC and NED of the OCR oracle's reading
(:mod:`tailor.world.zoo.ocr`; no method reads it), and an FID-like Frechet distance to the renders in world-CLIP
image space (:func:`tailor.eval.world.frechet_distance`). Cost: trainable parameters, training s/step and peak RSS
(``benchmarks/step_timer.py``: 8 steps of batch 8 in a fresh process, the first 2 dropped) and sampling s/step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

EVAL_SEED = 910_000
STEPS, GUIDANCE = 20, 7.5
#: AnyText runs by bench row: the method, the paper's ablation without the OCR perceptual loss, and session 17's
#: continuations: ``run`` + 800 steps of cubic training timesteps, that + 800 more at lr 5e-4, and + 800 more; the
#: control: ``run-cubic`` + 800 at lr 5e-4 with uniform timesteps (each benched if trained); session 19's
#: ``run-fast3``: the shipped file (``--init anytext``) + 1,600 more at lr 5e-4, cubic
RUN_FOLDERS = {"anytext": "run", "noocr": "run-noocr", "cubic": "run-cubic", "fast": "run-fast", "fast2": "run-fast2",
               "fast-uniform": "run-fast-uniform", "noocr-cubic": "run-noocr-cubic", "noocr-fast": "run-noocr-fast",
               "noocr-fast2": "run-noocr-fast2", "fast3": "run-fast3"}  # fmt: skip
#: the glyph ControlNet baseline's runs by bench row: session 18 gave it AnyText's whole recipe (1,500 uniform steps
#: at lr 1e-4, + 800 cubic, + 800 cubic at lr 5e-4, + 800 more)
CONTROLNET_FOLDERS = {"controlnet": "controlnet", "controlnet-cubic": "controlnet-cubic",
                      "controlnet-fast": "controlnet-fast", "controlnet-fast2": "controlnet-fast2"}  # fmt: skip
#: bench rows in contact-sheet order (``shipped``: the shipped world AnyText, benched without its run folder)
SHEET_ORDER = ("anytext", "cubic", "fast", "fast2", "shipped", "fast3", "fast-uniform", "noocr", "noocr-fast2",
               "controlnet", "controlnet-fast2", "base")  # fmt: skip


def eval_set(n: int, size: int = 64):
    """(renders, captions, texts, boxes) of ``n`` fresh photo glyph renders."""
    from tailor.world.glyphs import render_glyph

    renders, captions, texts, boxes = [], [], [], []
    for i in range(n):
        s = render_glyph(EVAL_SEED + i, size=size, style="photo")
        poly = np.asarray(s.attrs["lines"][0]["polygon"])
        x0, y0 = np.clip(np.floor(poly.min(0)), 0, size)
        x1, y1 = np.clip(np.ceil(poly.max(0)), 0, size)
        renders.append(s.pil())
        captions.append(s.caption)
        texts.append(s.attrs["text"])
        boxes.append(f"{int(x0)},{int(y0)},{int(x1)},{int(y1)}")
    return renders, captions, texts, boxes


def glyph_edges(text: str, box: str, size: int) -> np.ndarray:
    """The text drawn in the box as world edges (uint8 HxWx3): the ControlNet baseline's condition."""
    from tailor.methods.anytext.glyphs import glyph_image, parse_lines
    from tailor.world.draw import edges_from_labels

    cov = glyph_image(parse_lines([text], [box], size, size), size, size, scale=1)
    edges = edges_from_labels((cov >= 0.5).astype(np.uint8) * 3)
    e = (edges > 0).astype(np.uint8) * 255
    return np.repeat(e[..., None], 3, axis=2)


def _generate(pipe, captions, per_image_inputs, seed: int = 0):
    images, t0, c0 = [], time.perf_counter(), time.process_time()
    for i, cap in enumerate(captions):
        if pipe.attachments:
            pipe.attachments[0].inputs = per_image_inputs[i]
        images += pipe.generate(cap, n=1, seed=seed + i, steps=STEPS, guidance=GUIDANCE).images
    n = len(captions) * STEPS
    return images, {
        "sampling_s_per_step": (time.perf_counter() - t0) / n,
        "sampling_cpu_s_per_step": (time.process_time() - c0) / n,
    }


def scores(images, renders, texts) -> dict:
    from tailor.eval.world import frechet_distance
    from tailor.world.zoo.ocr import load_ocr, ocr_scores
    from tailor.world.zoo.oracles import to_unit
    from tailor.world.zoo.scorer import clip_image_embeds

    read = load_ocr().read(to_unit([np.asarray(im) for im in images]))
    s = ocr_scores(read, texts)
    fid = frechet_distance(clip_image_embeds(images), clip_image_embeds(renders))
    return {"sen_acc": s["sen_acc"], "ned": s["ned"], "fid_like": fid, "n": s["n"], "read": read[:16]}


def train_cost(runs: Path, which: str, recognizer: Path | None) -> dict:
    """s/step (wall and CPU) and peak RSS of 8 training steps of batch 8 in a fresh process."""
    out, res = runs / "anytext" / f"cost-{which}", runs / "anytext" / f"cost-{which}.json"
    opts = ["--recognizer", str(recognizer)] if which == "anytext" else ["--condition", "canny"]
    cmd = [sys.executable, "benchmarks/step_timer.py", str(res), "-m", "tailor", "train", which, "--base", "world",
           "--data", "world:glyph:all", "--steps", "8", "--batch-size", "8", "--checkpoint-every", "0",
           "--out", str(out), *opts]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    r = json.loads(res.read_text())
    ends, cpu = r["step_ends"], r["step_cpu"]
    return {"train_s_per_step": (ends[-1] - ends[1]) / (len(ends) - 2),
            "train_cpu_s_per_step": (cpu[-1] - cpu[1]) / (len(cpu) - 2), "peak_rss_mb": r["peak_rss_mb"]}  # fmt: skip


def _model_rows(runs: Path, which: str, comps, renders, captions, texts, boxes, size: int):
    """Generate and score one model (``base``, ``anytext``, ``controlnet``); cached in ``bench_<which>.json`` +
    ``bench_<which>/`` (so the models may be run at different times)."""
    from PIL import Image

    import tailor
    from tailor.core.artifacts import load

    cache, folder = runs / "anytext" / f"bench_{which}.json", runs / "anytext" / f"bench_{which}"
    n = len(captions)
    if cache.is_file() and json.loads(cache.read_text()).get("n") == n:
        return json.loads(cache.read_text()), [Image.open(folder / f"{i:03d}.png").copy() for i in range(n)]
    pipe, inputs, params = tailor.Pipeline(comps), None, 0
    if which in RUN_FOLDERS or which == "shipped":
        method = load(runs / "anytext" / RUN_FOLDERS[which] if which in RUN_FOLDERS else "anytext")
        inputs = [{"text": t, "text_box": [b]} for t, b in zip(texts, boxes)]
    elif which in CONTROLNET_FOLDERS:
        method = load(runs / "anytext" / CONTROLNET_FOLDERS[which])
        inputs = [{"image": glyph_edges(t, b, size)} for t, b in zip(texts, boxes)]
    if inputs is not None:
        pipe.attach(method, **inputs[0])
        params = sum(p.numel() for p in method.trainable_parameters())
    images, timing = _generate(pipe, captions, inputs)
    pipe.detach()
    row = scores(images, renders, texts) | timing | {"trainable_params": params}
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(folder / f"{i:03d}.png")
    cache.write_text(json.dumps(row | {"n": n}))
    return row, images


def run_bench(runs: str | Path, n: int = 96, size: int = 64, cost: bool = True, only: tuple[str, ...] = ()) -> dict:
    from PIL import Image

    import tailor
    from tailor.bench.common import contact_sheet

    torch.set_num_threads(1)
    runs = Path(runs)
    renders, captions, texts, boxes = eval_set(n, size)
    comps = tailor.load_components("world")
    rows, images = {}, {}
    models = ["base", "anytext" if (runs / "anytext" / "run" / "tailor.json").is_file() else "shipped"]
    optional = list(CONTROLNET_FOLDERS.items()) + [(k, v) for k, v in RUN_FOLDERS.items() if k != "anytext"]
    for which, folder in optional:
        here = runs / "anytext"
        if (here / folder / "tailor.json").is_file() or (here / f"bench_{which}.json").is_file():
            models.append(which)  # trained (or benched) in this RUNS; else export keeps the shipped row
    for which in only or models:
        rows[which], images[which] = _model_rows(runs, which, comps, renders, captions, texts, boxes, size)
    if only:
        return {"rows": rows}
    rows["renders"] = scores(renders, renders, texts)
    rec = runs / "anytext" / "recognizer.safetensors"
    for which in [m for m in ("anytext", "controlnet") if m in rows] if cost else ():
        try:
            rows[which] |= train_cost(runs, which, rec)
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as e:
            rows[which]["train_cost_error"] = str(e)[:200]
    conds = [Image.fromarray(glyph_edges(t, b, size)) for t, b in zip(texts[:12], boxes[:12])]
    sheet_rows = [("renders", renders[:12]), ("glyph", conds)]
    sheet_rows += [(k, images[k][:12]) for k in SHEET_ORDER if k in images]
    sheet = contact_sheet(sheet_rows, runs / "anytext" / "bench.png", scale=3)
    result = {"rows": rows, "settings": {"n": n, "size": size, "steps": STEPS, "guidance": GUIDANCE,
              "eval_seed": EVAL_SEED}, "texts": texts[:12], "captions": captions[:12],
              "sheet_rows": [k for k, _ in sheet_rows], "contact_sheet": str(sheet)}  # fmt: skip
    (runs / "anytext" / "bench.json").write_text(json.dumps(result, indent=1))
    return result


def export(runs: str | Path, weights: str | Path | None = None, row: str = "anytext") -> Path:
    """The trained AnyText of bench row ``row`` (a :data:`RUN_FOLDERS` key; recognizer included) as float16 into
    ``weights/adapters/anytext/``; in the file's bench rows it is ``anytext`` (the row it replaces becomes
    ``anytext-<that run folder>``)."""
    from tailor.core.artifacts import resolve_artifact
    from tailor.core.io import atomic_dir, load_tensors, read_metadata, save_tensors, write_json
    from tailor.world.zoo import WEIGHTS

    if row not in RUN_FOLDERS:
        raise ValueError(f"row {row!r} is not a bench row; use one of {', '.join(RUN_FOLDERS)}.")
    src = Path(runs) / "anytext" / RUN_FOLDERS[row]
    artifact = resolve_artifact(src)
    meta = read_metadata(artifact) | {"base": "world"}
    config = json.loads(meta["config"]) | {"recognizer": "world"}  # the shipped file carries its own recognizer
    meta["config"] = json.dumps(config)
    dst = Path(weights or WEIGHTS) / "adapters" / "anytext"
    with atomic_dir(dst) as tmp:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_tensors(artifact).items()}
        save_tensors(tmp / "anytext.safetensors", tensors, meta)
        bench = Path(runs) / "anytext" / "bench.json"
        rows = json.loads(bench.read_text())["rows"] if bench.is_file() else None
        if rows is not None and row != "anytext" and row in rows:
            rows = {("anytext-" + RUN_FOLDERS["anytext"] if k == "anytext" else k): v for k, v in rows.items()}
            cost = {
                k: v for k, v in rows["anytext-" + RUN_FOLDERS["anytext"]].items() if k.startswith(("train_", "peak"))
            }
            rows["anytext"] = rows.pop(row) | cost | {"run": RUN_FOLDERS[row]}  # the same method: the same cost
        if rows is not None and (dst / "tailor.json").is_file():
            # baselines not re-benched here keep the shipped rows, marked (not the ablation: it is of the old model)
            old = json.loads((dst / "tailor.json").read_text()).get("zoo", {}).get("bench") or {}
            mark = {"benched": "earlier (the previous shipped file)"}
            rows |= {k: old[k] | mark for k in ("base", "controlnet") if k in old and k not in rows}
        info = {"recipe": "zoo/anytext.py", "bench": rows}
        write_json(tmp / "tailor.json", {"artifact": "anytext.safetensors", "zoo": info})
    return dst


def merge_rows(runs: str | Path, rows: tuple[str, ...], weights: str | Path | None = None) -> Path:
    """Write bench rows benched in ``RUNS`` (``bench_<row>.json``, e.g. a baseline retrained after the shipped file)
    into the shipped AnyText's ``tailor.json`` rows, the weights untouched; a row benched as ``shipped`` is the
    shipped model itself and only checks that it reproduces the file's ``anytext`` row."""
    from tailor.core.io import write_json
    from tailor.world.zoo import WEIGHTS

    info = Path(weights or WEIGHTS) / "adapters" / "anytext" / "tailor.json"
    meta = json.loads(info.read_text())
    bench = meta["zoo"]["bench"]
    for row in rows:
        new = json.loads((Path(runs) / "anytext" / f"bench_{row}.json").read_text())
        new.pop("read", None)
        if row == "shipped":
            if abs(new["ned"] - bench["anytext"]["ned"]) > 1e-9:
                raise ValueError(f"the shipped model benched NED {new['ned']}, not its file's")
            continue
        bench[row] = {k: v for k, v in bench.get(row, {}).items() if k.startswith(("train_", "peak"))} | new
        bench[row].pop("benched", None)
    write_json(info, meta)
    return info
