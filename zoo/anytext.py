"""Recipe of the shipped world AnyText (Tuo et al. 2023) and of its glyph bench (issue #23, items 3 and 4).

Stages (each resumable, under ``RUNS/anytext/``):

1. ``recognizer``: the method's own line recognizer (:class:`tailor.methods.anytext.modules.LineRecognizer`), on
   fresh batches from ``(seed, step)``, a curriculum (:data:`CURRICULUM`, :func:`recognizer_phase`): first
   ``align`` steps of a framewise cross-entropy on clean line renders of lexicon words and short random strings,
   whose per-column targets come from the renderer's known layout (each character at the column of its centre,
   blank elsewhere: :func:`frame_targets`); then CTC on batches of a third clean line renders (what the text
   embedding reads; up to ``short`` characters, then up to ``longest``) and line crops of world glyph renders (64
   and 128 px, every style, uniformly random strings) of which a quarter went through the world base's VAE and a
   third of the others are blurred / down-up sampled / noised (what the OCR perceptual loss sees in decoded
   predictions). CTC alone sits on its plateau here: it emits the characters at the zero-padded edge column
   (which sees no ink) with a uniform guess and keeps the ink columns blank; the aligned start puts the reading at
   the ink columns, and CTC then leaves the plateau within ~100 steps. It is not the OCR oracle and never sees it.
2. ``anytext``: ``tailor.train`` of the ``anytext`` method on ``world:glyph:all`` with that recognizer.
3. ``controlnet``: the glyph bench's ControlNet baseline, a canny ControlNet trained on the same data with the
   same schedule (the paper's ControlNet row: canny of the rendered glyphs as the condition).
4. ``bench``: Sen.ACC / NED (OCR oracle) and an FID-like distance for AnyText vs the ControlNet vs the base.
5. ``diagnose`` / ``diagnose-sampling``: where the words are lost (:mod:`zoo.anytext_diagnose`).

``python -m zoo.anytext recognizer|recognizer-eval|anytext|controlnet|noocr|bench|diagnose|diagnose-sampling|export
--runs RUNS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("tailor")

RECOGNIZER_STEPS = 800
RECOGNIZER_BATCH = 48
RECOGNIZER_LR = 1e-3
#: the recognizer's curriculum (steps are global): framewise CE on clean lines of at most ``align_longest``
#: characters (half lexicon words) until ``align``; CTC with clean lines of at most ``short`` characters until
#: ``longer``, then of at most ``longest``
CURRICULUM = {"align": 100, "align_longest": 6, "longer": 300, "short": 6, "longest": 10}
#: the training schedule of the method and of the ControlNet baseline (the same data, steps and batch). Session 16's
#: AnyText ran 1,500 steps at ~1.15 s/step (load ~5); the shipped one (session 17) continues it: 800 steps with
#: cubic timesteps, then 1,600 at lr 5e-4 (``--init``, ``--timesteps``, ``--lr``; docs/anytext.md); session 18 gave
#: the ControlNet baseline and the no-OCR-loss ablation the same four stages (the ``controlnet`` / ``noocr`` stages
#: take the same flags; the ControlNet's cubic timesteps come from the trainer's ``timestep_sampling``)
STEPS, BATCH, LR = 1500, 8, 1e-4
DATA = "world:glyph:all"
OPTIONS = {"recognizer": None}  # filled with the stage-1 file
NOOCR = "run-noocr"  # the ablation's run folder (ocr_loss_weight=0)


def _texts(rng: np.random.Generator, n: int, longest: int, words: float = 0.0) -> list[str]:
    """``n`` uniformly random strings of 1 to ``longest`` characters; a ``words`` share are lexicon words instead
    (those of at most ``longest`` characters)."""
    from tailor.world.font import CHARSET
    from tailor.world.glyphs import LEXICON

    lexicon = [w for w in LEXICON if len(w) <= longest]
    lengths = rng.integers(1, longest + 1, size=n)
    out = []
    for k in lengths:
        if words and lexicon and rng.random() < words:
            out.append(lexicon[int(rng.integers(len(lexicon)))])
        else:
            out.append("".join(CHARSET[j] for j in rng.integers(len(CHARSET), size=k)))
    return out


def recognizer_phase(step: int, curriculum: dict | None = None) -> tuple[str, int]:
    """(``"align"`` or ``"ctc"``, the longest clean line) of the curriculum at ``step``."""
    c = curriculum or CURRICULUM
    if step < c["align"]:
        return "align", c["align_longest"]
    return "ctc", c["short"] if step < c["longer"] else c["longest"]


def frame_targets(texts: list[str], steps: int, width: int | None = None, height: int | None = None) -> torch.Tensor:
    """(N, steps) framewise classes of clean line renders (:func:`~tailor.methods.anytext.glyphs.line_image`): each
    character's class (1 + its charset index) at the column holding its centre, blank (0) elsewhere and for spaces.
    The layout is the renderer's: the text fitted by ``fit_cell`` and centred, characters ``ADVANCE`` cells apart."""
    from tailor.methods.anytext.glyphs import LINE_H, LINE_W, fit_cell
    from tailor.world.font import ADVANCE, CHARSET, GLYPH_W, text_width

    width, height = width or LINE_W, height or LINE_H
    out = torch.zeros(len(texts), steps, dtype=torch.long)
    for i, t in enumerate(texts):
        cell = fit_cell(t, width, height)
        left = (width - (text_width(t) + 1.0) * cell) / 2.0 + cell / 2.0  # the first character's left edge
        for j, ch in enumerate(t):
            if ch != " ":
                centre = left + (j * ADVANCE + GLYPH_W / 2.0) * cell
                out[i, min(steps - 1, int(centre * steps / width))] = CHARSET.index(ch) + 1
    return out


def clean_batch(n: int, seed: int, step: int, longest: int, words: float = 0.5):
    """(images (n, 3, LINE_H, LINE_W), texts): clean line renders (the align phase's batches)."""
    from tailor.methods.anytext.glyphs import line_image
    from tailor.world.vocab import make_rng

    texts = _texts(make_rng(seed, step, 6), n, longest, words)
    return torch.from_numpy(np.stack([line_image(t) for t in texts]))[:, None].repeat(1, 3, 1, 1), texts


def recognizer_batch(n: int, seed: int, step: int, vae=None, longest: int = 10):
    """(images (n, 3, LINE_H, LINE_W) in [0, 1], texts): clean line renders (1 to ``longest`` characters) and
    crops of world glyph renders."""
    from tailor.methods.anytext.glyphs import line_image, lines_of_attrs
    from tailor.methods.anytext.modules import crop_lines
    from tailor.world.glyphs import max_chars, render_glyph
    from tailor.world.vocab import STYLES, derive_seed, make_rng
    from zoo.ocr import degrade, vae_round_trip

    rng = make_rng(seed, step, 5)
    n_clean = n // 3
    texts = _texts(rng, n_clean, longest)
    clean = [torch.from_numpy(line_image(t)) for t in texts]
    clean_x = torch.stack(clean)[:, None].repeat(1, 3, 1, 1)
    crops, crop_texts = [], []
    styles = list(STYLES)
    for size in (64, 128):
        k = (n - n_clean) // 2 if size == 64 else n - n_clean - (n - n_clean) // 2
        fits = min(max_chars(size, s) for s in ("sign", "plate", "object"))
        words = _texts(rng, k, fits)
        samples = []
        for i, w in enumerate(words):
            st = "photo" if rng.random() < 0.6 else styles[int(rng.integers(len(styles)))]
            samples.append(render_glyph(derive_seed(seed, step, size, i), text=w, style=st, size=size))
        imgs = [s.image for s in samples]
        cut = round(0.25 * k) if vae is not None else 0
        x = torch.from_numpy(np.stack(imgs[:cut] + degrade(imgs[cut:], rng, 0.35))).permute(0, 3, 1, 2).float() / 255
        if cut:
            x[:cut] = vae_round_trip(vae, x[:cut])
        polys = torch.tensor(np.stack([lines_of_attrs(s.attrs)[0].polygon for s in samples]), dtype=torch.float32)
        crops.append(crop_lines(x, polys, torch.arange(k)))
        crop_texts += [s.attrs["text"] for s in samples]
    return torch.cat([clean_x, *crops]), texts + crop_texts


def train_recognizer(runs: str | Path, steps: int = RECOGNIZER_STEPS, seed: int = 51) -> Path:
    """Stage 1; returns the recognizer file (``RUNS/anytext/recognizer.safetensors``)."""
    from tailor.core.io import save_tensors
    from tailor.methods.anytext.modules import LineRecognizer
    from zoo.loop import LoopConfig, current_device, train_loop
    from zoo.ocr import load_vae

    out = Path(runs) / "anytext"
    torch.manual_seed(seed)
    model = LineRecognizer()
    vae = load_vae()
    dev = current_device()

    def loss_fn(step: int):
        phase, longest = recognizer_phase(step)
        if phase == "align":
            x, texts = clean_batch(RECOGNIZER_BATCH, seed, step, longest)
            feats, logp = model(x.to(dev))
            loss = F.nll_loss(logp.permute(1, 2, 0), frame_targets(texts, logp.shape[0]).to(dev))
        else:
            x, texts = recognizer_batch(RECOGNIZER_BATCH, seed, step, vae, longest)
            feats, logp = model(x.to(dev))
            targets, lengths = model.targets(texts)
            t = torch.full((len(texts),), logp.shape[0], dtype=torch.long)
            loss = F.ctc_loss(logp, targets, t, lengths, blank=0, zero_infinity=True)
        acc = float(np.mean([a == b for a, b in zip(model.decode(logp.detach()), texts)]))
        return loss, {"acc": acc, "ctc": float(phase == "ctc")}

    cfg = LoopConfig(out=str(out / "recognizer"), steps=steps, lr=RECOGNIZER_LR, seed=seed, log_every=25,
                     checkpoint_every=100)  # fmt: skip
    train_loop(model, loss_fn, cfg, name="anytext-recognizer")
    metrics = evaluate_recognizer(model, vae)
    print("anytext recognizer:", json.dumps(metrics), flush=True)
    path = out / "recognizer.safetensors"
    save_tensors(path, {k: v.contiguous() for k, v in model.state_dict().items()},
                 {"kind": "anytext-recognizer", "metrics": json.dumps(metrics)})  # fmt: skip
    return path


@torch.no_grad()
def evaluate_recognizer(model, vae=None, n: int = 240, seed: int = 77_001) -> dict[str, float]:
    """Exact-line accuracy on fresh clean lines and crops (seeds never trained on)."""
    model.eval()
    x, texts = recognizer_batch(n, seed, 0, vae)
    read = model.read(x)
    k = n // 3
    ok = [a == b for a, b in zip(read, texts)]
    res = {"clean_acc": float(np.mean(ok[:k])), "crop_acc": float(np.mean(ok[k:])), "n": n}
    # clean lines by length (uniformly random strings): the world draws lines of at most 6 characters
    x, texts = clean_batch(600, seed + 1, 0, CURRICULUM["longest"], words=0.0)
    ok, lengths = np.array([a == b for a, b in zip(model.read(x), texts)]), np.array([len(t) for t in texts])
    res["clean_acc_by_length"] = {int(n): round(float(ok[lengths == n].mean()), 3) for n in np.unique(lengths)}
    return res


# --------------------------------------------------------------------- diffusion stages
def train_config(out: Path, steps: int = STEPS, batch: int = BATCH, **kw):
    from tailor.core.training import TrainConfig
    from tailor.core.training.checkpoint import list_checkpoints

    kw.setdefault("lr", LR)
    return TrainConfig(base="world", out=str(out), data=DATA, steps=steps, batch_size=batch,
                       lr_scheduler="constant", warmup_steps=50, seed=0, checkpoint_every=100, keep_checkpoints=2,
                       resume="latest" if list_checkpoints(out) else None, log_every=10, **kw)  # fmt: skip


def train_run(runs: str | Path, name: str, steps: int = STEPS, folder: str = "run", init: str | None = None,
              lr: float = LR, timestep_sampling: str = "method", **options):  # fmt: skip
    """``tailor.train`` of method ``name`` (``anytext`` or the baseline's ``controlnet``) into ``RUNS/anytext/FOLDER``;
    ``init``: a run folder (under ``RUNS/anytext/``) or file whose weights it starts from (AnyText's recognizer
    included), with ``options`` replacing its config's; ``timestep_sampling``: the trainer's (``cubic`` gives the
    ControlNet AnyText's ``timesteps=cubic``)."""
    import tailor
    from tailor.core.artifacts import load

    if init is not None:
        src = Path(runs) / "anytext" / init
        method = load(src if src.exists() else init)
        method.config = method.config.replace(**options)
    elif name == "anytext":
        rec = Path(runs) / "anytext" / "recognizer.safetensors"  # else the shipped file's (float16) recognizer
        method = tailor.get_spec("anytext").method(recognizer=str(rec) if rec.is_file() else "world", **options)
    else:  # the paper's ControlNet row: canny of the rendered glyphs
        method = tailor.get_spec("controlnet").method(condition="canny", **options)
    out = Path(runs) / "anytext" / folder
    return tailor.train(method, train_config(out, steps, lr=lr, timestep_sampling=timestep_sampling))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.anytext", description=__doc__.splitlines()[0])
    stages = ("recognizer", "recognizer-eval", "anytext", "controlnet", "noocr", "bench", "diagnose",
              "diagnose-sampling", "export", "rows")  # fmt: skip
    p.add_argument("stage", choices=stages)
    p.add_argument("--runs", default="outputs/zoo_runs")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n", type=int, default=64, help="bench: images per model")
    p.add_argument("--folder", default="run", help="anytext|controlnet|noocr: the run folder under RUNS/anytext/")
    p.add_argument("--init", default=None, help="anytext|controlnet|noocr: start from this run folder's weights")
    p.add_argument("--lr", type=float, default=LR, help="training: learning rate (constant after 50 warmup steps)")
    p.add_argument("--timesteps", default=None, choices=("uniform", "cubic"), help="training: timesteps")
    from zoo.anytext_bench import RUN_FOLDERS

    p.add_argument(
        "--row",
        default="anytext",
        choices=tuple(RUN_FOLDERS),
        help="export: the bench row whose run is shipped (anytext, cubic, ...)",
    )
    p.add_argument(
        "--only",
        default="",
        help="bench: comma-separated models to run now (base, controlnet, anytext); "
        "rows: the bench rows to write into the shipped file's tailor.json",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    if args.stage == "recognizer":
        train_recognizer(args.runs, args.steps or RECOGNIZER_STEPS)
    elif args.stage == "recognizer-eval":  # the trained recognizer on fresh lines
        from tailor.core.io import load_tensors
        from tailor.methods.anytext.modules import LineRecognizer
        from zoo.ocr import load_vae

        model = LineRecognizer()
        model.load_state_dict(load_tensors(Path(args.runs) / "anytext" / "recognizer.safetensors"))
        print(json.dumps(evaluate_recognizer(model, load_vae())), flush=True)
    elif args.stage == "anytext":
        opts = {"timesteps": args.timesteps} if args.timesteps else {}
        train_run(args.runs, "anytext", args.steps or STEPS, folder=args.folder, init=args.init, lr=args.lr, **opts)
    elif args.stage == "controlnet":  # the same --timesteps, through the trainer's timestep_sampling
        folder = "controlnet" if args.folder == "run" else args.folder
        train_run(args.runs, "controlnet", args.steps or STEPS, folder=folder, init=args.init, lr=args.lr,
                  timestep_sampling=args.timesteps or "method")  # fmt: skip
    elif args.stage == "noocr":  # the paper's ablation: no OCR perceptual loss, the same schedule
        folder = NOOCR if args.folder == "run" else args.folder
        opts = {"timesteps": args.timesteps} if args.timesteps else {}
        if args.init is None:
            opts["ocr_loss_weight"] = 0.0
        train_run(args.runs, "anytext", args.steps or STEPS, folder=folder, init=args.init, lr=args.lr, **opts)
    elif args.stage == "diagnose":  # where the words are lost: VAE ceiling, one-call x0 along t
        from zoo.anytext_diagnose import run as diagnose

        models = tuple(m for m in args.only.split(",") if m) or ("base", "anytext")
        print(json.dumps(diagnose(args.runs, n=args.n, models=models)["x0"], indent=1))
    elif args.stage == "diagnose-sampling":  # guidance, control weight, steps, starts from an image
        from zoo.anytext_diagnose import sampling

        sampling(args.runs, n=args.n, folder=args.folder)
    elif args.stage == "bench":
        from zoo.anytext_bench import run_bench

        only = tuple(m for m in args.only.split(",") if m)
        print(json.dumps(run_bench(args.runs, n=args.n, only=only), indent=1))
    elif args.stage == "rows":  # bench rows of this RUNS into the shipped file's tailor.json (weights untouched)
        from zoo.anytext_bench import merge_rows

        print(merge_rows(args.runs, tuple(m for m in args.only.split(",") if m)))
    else:
        from zoo.anytext_bench import export

        print(export(args.runs, row=args.row))
    print(f"{args.stage}: {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
