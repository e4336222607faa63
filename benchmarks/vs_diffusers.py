"""Training speed and memory: tailor vs diffusers' example scripts, interleaved A/B runs on this machine (issue #8).

    python benchmarks/vs_diffusers.py --diffusers-examples /work/diffusers-src [--jobs dreambooth_lora,...]
        [--steps 40] [--warmup 5] [--repeats 3] [--batch-size 2] [--threads 1] [--out outputs/bench/vs_diffusers]
        [--baseline /path/to/another/tailor/checkout]

``--diffusers-examples`` is a diffusers source checkout (or its ``examples/`` folder) kept outside this repository;
none of its code is copied here. Jobs, each on the shipped world base (``tailor world path``), 64 px, fp32
(``--mixed_precision no``), the same batch size, steps, learning rate and data on both sides:

* ``dreambooth_lora`` / ``dreambooth_lora_prior``: ``tailor train dreambooth --lora-rank 4`` vs
  ``examples/dreambooth/train_dreambooth_lora.py --rank 4``, on 6 renders of the world subject ``checker_star``;
  ``_prior`` adds prior preservation on the same 8 class images (made once by tailor's frozen base, then handed to
  the script as ``--class_data_dir``). The script runs twice: plain and with its ``--pre_compute_text_embeddings``.
* ``textual_inversion``: ``tailor train textual_inversion`` vs ``examples/textual_inversion/textual_inversion.py``
  (token ``<s*>`` initialised from ``star``, object templates on both sides: ``--templates object`` overrides the
  world base's recommended ``caption``; DreamBooth passes the script's class guidance 7.5 the same way).
* ``controlnet``: ``tailor train controlnet`` (canny) vs ``examples/controlnet/train_controlnet.py`` on 16 world
  renders; the script reads a parquet dataset (``datasets``) with the canny maps tailor's extractor made, and starts
  from a ``ControlNetModel.from_unet`` folder with the world VAE's hint widths (its default hint encoder downsamples
  by 8, the world VAE by 4), passed as ``--controlnet_model_name_or_path``. Both drop 50% of the captions.

tailor runs with its caches (``--cache-latents``, and ``--cache-text`` where the text encoder is frozen), its best
settings for the job. Every variant of a job runs ``--repeats`` times, interleaved with every other round reversed
(A B C C B A A B C ...), each a fresh process through ``benchmarks/step_timer.py``: a global optimizer-step hook
stamps the end of every step, so ``s/step``
= (end of the last step - end of step ``warmup``) / (steps - warmup) on both sides, i.e. start-up, model loading, class
images and the first ``warmup`` steps are left out. ``img/s`` = instance images per second (batch / s_per_step; prior
rows are extra); ``CPU s/step`` is the same over the child's CPU time, less disturbed by other processes on a shared
machine. Peak RSS = the child's ``VmHWM`` (its own peak; ``ru_maxrss`` would include this launcher's, kept across
exec). The table gives medians over repeats and the ratio script / tailor (> 1: tailor is faster / smaller).
``--baseline DIR`` adds a ``tailor@baseline`` variant, the same tailor command with ``DIR`` (e.g. ``git archive`` of an
earlier commit) first on its ``PYTHONPATH``, interleaved with the rest: a paired before / after of tailor itself.

The scripts import torchvision, which has no CPU build here: ``benchmarks/shims/torchvision`` (a small stand-in of
the transforms they use) goes on their ``sys.path`` after diffusers and transformers have decided torchvision is
absent (``$BENCH_SHIMS``, see ``step_timer.py``). ``train_controlnet.py`` also needs ``datasets``; put it on
``--extra-pythonpath`` (e.g. ``pip install --target /work/bench-deps datasets``) if it is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
JOBS = ("dreambooth_lora", "dreambooth_lora_prior", "textual_inversion", "controlnet")
NUM_CLASS_IMAGES = 8
CN_IMAGES = 16


# --------------------------------------------------------------------- data shared by both sides
def prepare(data: Path, base: str, jobs: list[str], resolution: int) -> dict[str, Path]:
    """Instance renders, class images (tailor's frozen base) and the ControlNet folder + parquet, made once."""
    import numpy as np
    import torch
    from PIL import Image

    torch.manual_seed(0)
    paths = {"instance": data / "instance"}
    if not paths["instance"].is_dir():
        from tailor.world import render_subject

        tmp = data / "instance.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(6):  # = tailor world subject --name checker_star -n 6 --seed 0
            Image.fromarray(render_subject("checker_star", i, size=resolution).image).save(tmp / f"{i:03d}.png")
        tmp.rename(paths["instance"])
    if "dreambooth_lora_prior" in jobs:
        paths["class"] = class_images(data, base, resolution)
    if "controlnet" in jobs:
        paths["cn_images"], paths["cn_parquet"] = data / "cn_images", data / "cn_parquet"
        paths["cn_init"] = data / "cn_init"
        if not paths["cn_parquet"].is_dir():
            from tailor.conditions import extract
            from tailor.world import WorldDataset

            folder, canny = paths["cn_images"], data / "cn_canny"
            folder.mkdir(parents=True, exist_ok=True)
            canny.mkdir(parents=True, exist_ok=True)
            rows = []
            ds = WorldDataset(kind="objects", size=resolution, seed=0, length=CN_IMAGES)
            for i in range(CN_IMAGES):
                item = ds[i]
                arr = (item["pixel_values"].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i:03d}.png")
                edges = extract("canny", arr)
                edges = edges if edges.ndim == 2 else edges[..., 0]
                Image.fromarray(edges).convert("RGB").save(canny / f"{i:03d}.png")
                rows.append({"file_name": f"{i:03d}.png", "text": item["caption"]})
            # tailor reads the images + metadata.jsonl (and extracts canny itself); the script reads the parquet
            (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            _write_parquet(folder, canny, rows, paths["cn_parquet"])
        if not paths["cn_init"].is_dir():
            from diffusers import ControlNetModel, UNet2DConditionModel

            from tailor.core.control import hint_channels

            unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
            vae_factor = 2 ** (len(json.loads(Path(base, "vae", "config.json").read_text())["block_out_channels"]) - 1)
            cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint_channels(vae_factor))
            cn.save_pretrained(paths["cn_init"])
    return paths


def _write_parquet(folder: Path, canny: Path, rows: list[dict], out: Path) -> None:
    """A parquet file that ``datasets.load_dataset(out)`` reads as Image / Image / string columns (pyarrow directly:
    datasets' own writer hashes its features with dill, which fails on this pyarrow's types)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

    def images(d: Path) -> pa.Array:
        return pa.array([{"bytes": (d / r["file_name"]).read_bytes(), "path": r["file_name"]} for r in rows], struct)

    table = pa.table({"image": images(folder), "conditioning_image": images(canny), "text": [r["text"] for r in rows]})
    feats = {"image": {"_type": "Image"}, "conditioning_image": {"_type": "Image"},
             "text": {"dtype": "string", "_type": "Value"}}  # fmt: skip
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": feats}})})
    (out / "train").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "train" / "data.parquet")


def class_images(data: Path, base: str, resolution: int) -> Path:
    """``a star`` images by tailor's frozen base (DreamBooth's own class-image code), shared with the script."""
    folder = data / "class"
    if folder.is_dir():
        return folder
    from tailor.core.components import load_components
    from tailor.methods.dreambooth import DreamBoothConfig, DreamBoothMethod

    cfg = DreamBoothConfig(class_word="star", identifier="sks", lora_rank=4, num_class_images=NUM_CLASS_IMAGES,
                           class_steps=10, class_dir=str(data / "class_cache"))  # fmt: skip
    method = DreamBoothMethod(cfg)
    method.patch(load_components(base))
    made = method.ensure_class_images(resolution)
    shutil.copytree(made, folder, ignore=shutil.ignore_patterns("*.json"))
    return folder


# --------------------------------------------------------------------- commands
def commands(job: str, paths: dict[str, Path], a, runs: Path, examples: Path) -> dict[str, list[str]]:
    """Variant name -> argv after ``step_timer.py RESULT``; tailor's first."""
    base, n, bsz, res = a.base, str(a.steps), str(a.batch_size), str(a.resolution)
    common_t = ["--base", base, "--steps", n, "--batch-size", bsz, "--resolution", res, "--seed", "0",
                "--log-every", n, "--mixed-precision", "no", "--cache-latents"]  # fmt: skip
    common_d = ["--pretrained_model_name_or_path", base, "--resolution", res, "--train_batch_size", bsz,
                "--max_train_steps", n, "--lr_scheduler", "constant", "--lr_warmup_steps", "0", "--mixed_precision",
                "no", "--seed", "0", "--checkpointing_steps", "1000000", "--report_to", "all"]  # fmt: skip
    inst = str(paths["instance"])
    if job.startswith("dreambooth_lora"):
        prior = job.endswith("_prior")
        t = ["-m", "tailor", "train", "dreambooth", *common_t, "--cache-text", "--lora-rank", "4", "--lr", "1e-4",
             "--images", inst, "--token", "sks", "--class", "star", "--out", "{out}"]  # fmt: skip
        d = [str(examples / "dreambooth" / "train_dreambooth_lora.py"), *common_d, "--rank", "4",
             "--learning_rate", "1e-4", "--instance_data_dir", inst, "--instance_prompt", "a sks star",
             "--center_crop", "--output_dir", "{out}"]  # fmt: skip
        if prior:
            cls = str(paths["class"])
            # tailor's class cache already holds these images (same spec as class_images): nothing is generated
            t += ["--with-prior-preservation", "--num-class-images", str(NUM_CLASS_IMAGES), "--class-steps", "10",
                  "--class-guidance", "7.5",
                  "--class-dir", str(paths["class"].parent / "class_cache")]  # fmt: skip
            d += ["--with_prior_preservation", "--class_data_dir", cls, "--class_prompt", "a star",
                  "--num_class_images", str(NUM_CLASS_IMAGES), "--prior_loss_weight", "1.0"]  # fmt: skip
        else:
            t += ["--no-with-prior-preservation"]
        return {"tailor": t, "diffusers": d, "diffusers+precompute": [*d, "--pre_compute_text_embeddings"]}
    if job == "textual_inversion":
        t = ["-m", "tailor", "train", "textual_inversion", *common_t, "--lr", "5e-4", "--images", inst,
             "--token", "<s*>", "--class", "star", "--templates", "object", "--out", "{out}"]  # fmt: skip
        d = [str(examples / "textual_inversion" / "textual_inversion.py"), *common_d, "--learning_rate", "5e-4",
             "--train_data_dir", inst, "--learnable_property", "object", "--placeholder_token", "<s*>",
             "--initializer_token", "star", "--center_crop", "--save_steps", "1000000",
             "--output_dir", "{out}"]  # fmt: skip
        return {"tailor": t, "diffusers": d}
    if job == "controlnet":
        t = ["-m", "tailor", "train", "controlnet", *common_t, "--cache-text", "--lr", "1e-5", "--data",
             str(paths["cn_images"]), "--condition", "canny", "--empty-prompts", "0.5", "--out", "{out}"]  # fmt: skip
        d = [str(examples / "controlnet" / "train_controlnet.py"), *common_d, "--learning_rate", "1e-5",
             "--train_data_dir", str(paths["cn_parquet"]), "--controlnet_model_name_or_path", str(paths["cn_init"]),
             "--proportion_empty_prompts", "0.5", "--cache_dir", str(runs / "hf_cache"),
             "--output_dir", "{out}"]  # fmt: skip
        return {"tailor": t, "diffusers": d}
    raise SystemExit(f"unknown job {job!r}; pick from {', '.join(JOBS)}")


def run_one(argv: list[str], out: Path, env: dict[str, str], log: Path) -> dict:
    """One child process; its step stamps, peak RSS and wall time."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    result = out / "steps.json"
    argv = [a.replace("{out}", str(out / "run")) for a in argv]
    cmd = [sys.executable, str(HERE / "step_timer.py"), str(result), *argv]
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=out)
        _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0 or not result.is_file():
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}\n  see {log}")
    stamps = json.loads(result.read_text())
    # the child's own VmHWM: wait4's ru_maxrss would start from this (parent) process's peak, kept across exec
    return {"ends": stamps["step_ends"], "cpu": stamps["step_cpu"], "peak_rss_mb": stamps["peak_rss_mb"],
            "wall_s": wall}  # fmt: skip


def summarize(runs: list[dict], warmup: int, batch: int) -> dict:
    def rate(stamps: list[float]) -> float:
        return (stamps[-1] - stamps[warmup - 1]) / (len(stamps) - warmup)

    per = [rate(r["ends"]) for r in runs]
    s = statistics.median(per)
    return {
        "s_per_step": s,
        "cpu_s_per_step": statistics.median(rate(r["cpu"]) for r in runs),
        "img_per_s": batch / s,
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
        "s_per_step_runs": per,
        "rss_runs": [r["peak_rss_mb"] for r in runs],
        "steps": len(runs[0]["ends"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--diffusers-examples", required=True, help="a diffusers checkout or its examples/ folder")
    ap.add_argument("--jobs", default=",".join(JOBS))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base", default=None, help="a diffusers StableDiffusionPipeline folder (default: the world)")
    ap.add_argument("--extra-pythonpath", default="", help="prepended to the scripts' PYTHONPATH (e.g. datasets)")
    ap.add_argument("--out", default="outputs/bench/vs_diffusers")
    ap.add_argument("--compile", action="store_true", help="also run tailor with --compile (torch.compile the UNet)")
    ap.add_argument("--baseline", default=None, help="another tailor checkout, run as variant tailor@baseline (A/B)")
    a = ap.parse_args()
    examples = Path(a.diffusers_examples)
    examples = examples / "examples" if (examples / "examples").is_dir() else examples
    if not (examples / "dreambooth").is_dir():
        raise SystemExit(f"{examples} has no dreambooth/ folder: pass a diffusers checkout or its examples/.")
    if a.base is None:
        from tailor.world.zoo import base_path

        a.base = str(base_path())
    if a.extra_pythonpath:
        sys.path[:0] = a.extra_pythonpath.split(os.pathsep)
    out = Path(a.out).resolve()
    jobs = [j for j in a.jobs.split(",") if j]
    paths = prepare(out / "data", a.base, jobs, a.resolution)

    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
           "BENCH_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    tailor_pp = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    script_pp = os.pathsep.join(p for p in (a.extra_pythonpath, tailor_pp) if p)
    report = {"settings": {k: v for k, v in vars(a).items()}, "load": os.getloadavg(), "jobs": {}}
    for job in jobs:
        variants = commands(job, paths, a, out / "runs", examples)
        if a.compile:  # the compile itself falls in the untimed warm-up steps; its seconds are in the run's log
            variants = {"tailor": variants["tailor"], "tailor+compile": [*variants["tailor"], "--compile"],
                        **{v: c for v, c in variants.items() if v != "tailor"}}  # fmt: skip
        if a.baseline:  # the same tailor command on another checkout, interleaved with the rest
            variants = {"tailor": variants["tailor"], "tailor@baseline": variants["tailor"],
                        **{v: c for v, c in variants.items() if v != "tailor"}}  # fmt: skip
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(a.repeats):
            order = list(variants.items())
            # interleaved, every other round reversed (A B C C B A ...): no variant always runs first after another
            for v, argv in order[::-1] if r % 2 else order:
                ours = v.startswith("tailor")
                e = {**env, "PYTHONPATH": tailor_pp if ours else script_pp}
                if v == "tailor@baseline":
                    e["PYTHONPATH"] = os.pathsep.join(p for p in (a.baseline, env.get("PYTHONPATH", "")) if p)
                if not ours:
                    e["BENCH_SHIMS"] = str(HERE / "shims")
                run_dir = out / "runs" / job / f"{v}-{r}"
                res = run_one(argv, run_dir, e, out / "runs" / job / f"{v}-{r}.log")
                results[v].append(res)
                print(f"{job:22s} {v:22s} #{r}  {summarize([res], a.warmup, a.batch_size)['s_per_step']:.4f} s/step"
                      f"  {res['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
        summary = {v: summarize(rs, a.warmup, a.batch_size) for v, rs in results.items()}
        t, tc = summary["tailor"], summary.get("tailor+compile")
        if "tailor@baseline" in summary:  # > 1: this checkout is faster than the baseline
            b = summary["tailor@baseline"]
            b["speedup_vs_baseline"] = b["s_per_step"] / t["s_per_step"]
            b["cpu_speedup_vs_baseline"] = b["cpu_s_per_step"] / t["cpu_s_per_step"]
        for v, s in summary.items():
            if not v.startswith("tailor"):
                s["speedup_tailor"] = s["s_per_step"] / t["s_per_step"]
                s["cpu_speedup_tailor"] = s["cpu_s_per_step"] / t["cpu_s_per_step"]
                s["rss_ratio_tailor"] = t["peak_rss_mb"] / s["peak_rss_mb"]
                if tc is not None:
                    s["speedup_tailor_compile"] = s["s_per_step"] / tc["s_per_step"]
                    s["cpu_speedup_tailor_compile"] = s["cpu_s_per_step"] / tc["cpu_s_per_step"]
        report["jobs"][job] = {"variants": summary, "commands": {v: " ".join(c) for v, c in variants.items()}}
    report["load_after"] = os.getloadavg()
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(table(report))


def table(report: dict) -> str:
    lines = ["| job | side | s/step | CPU s/step | img/s | peak RSS MB | script/tailor (CPU) | tailor/script RSS "
             "| script/tailor+compile (CPU) |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for job, j in report["jobs"].items():
        for v, s in j["variants"].items():
            ratio = f"{s['speedup_tailor']:.2f}x ({s['cpu_speedup_tailor']:.2f}x)" if "speedup_tailor" in s else ""
            if "speedup_vs_baseline" in s:
                ratio = f"baseline/tailor {s['speedup_vs_baseline']:.2f}x ({s['cpu_speedup_vs_baseline']:.2f}x)"
            rss = f"{s['rss_ratio_tailor']:.2f}" if "rss_ratio_tailor" in s else ""
            comp = (f"{s['speedup_tailor_compile']:.2f}x ({s['cpu_speedup_tailor_compile']:.2f}x)"
                    if "speedup_tailor_compile" in s else "")  # fmt: skip
            lines.append(f"| {job} | {v} | {s['s_per_step']:.4f} | {s['cpu_s_per_step']:.4f} | {s['img_per_s']:.1f} | "
                         f"{s['peak_rss_mb']:.0f} | {ratio} | {rss} | {comp} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
