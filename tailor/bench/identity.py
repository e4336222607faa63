"""``tailor bench identity``: identity methods on held-out world faces (issue #7).

Protocol of the identity papers (PhotoMaker, Li et al. 2023; InstantID, Wang et al. 2024; PuLID, Guo et al. 2024):
each held-out identity (world identities 800-999: never seen by the FaceSim oracle, the base or the shipped identity
weights) is given by a few photo renders; each method generates it under prompts that change the style and the
background (``a sketch of a woman on grass``), several seeds each. Scores:

- identity: FaceSim, the mean cosine of the *oracle* face embedder (never the conditioning embedder the methods
  read) between each image and the references, and the share of images above the oracle's same-identity threshold
  (:mod:`tailor.eval.identity`);
- prompt fidelity: style and background accuracy of the attribute oracle, and CLIP-T-like (world CLIP);
- cost: training seconds per new identity (none for the encoder methods), sampling CPU seconds per image.

Rows: ``renders`` (real renders of the identity in the prompt's style and background: the ceiling), ``base`` (no
identity), IP-Adapter ``world`` with the first reference as image prompt (Ye et al. 2023, at the text+image scale),
DreamBooth-LoRA trained on the references per identity (the personalize bench's recipe and cache), and InstantID,
PhotoMaker, PuLID (the shipped ``world`` weights, or ``--model KIND=PATH``). Encoder methods read every reference
(InstantID / PuLID average the embeddings, keypoints from the first; PhotoMaker stacks one ID token per image).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailor.bench import common as C
from tailor.bench import personalize as P
from tailor.errors import InputError


def identity_specs() -> dict[str, tuple]:
    """The rows methods declare for this bench (``BenchRow("identity", ...)``: zero-shot identity encoders), key ->
    (MethodSpec, BenchRow); a row runs the method's shipped ``row.model`` (``world`` unless set) or ``--model
    KEY=PATH``, its ``options`` overriding the loaded config (e.g. Infinite-ID's AdaIN-mean on and off)."""
    from tailor.core.method import registry

    return {r.key: (spec, r) for spec in registry().values() for r in spec.bench if r.bench == "identity"}


def identity_rows(default_only: bool = False) -> tuple[str, ...]:
    """The keys of the declared rows (``default_only``: those a plain run includes)."""
    return tuple(k for k, (_, r) in identity_specs().items() if r.default or not default_only)


def default_models() -> dict[str, str]:
    return {k: identity_specs()[k][1].model or "world" for k in identity_rows(default_only=True)}


def __getattr__(name: str):
    if name == "KINDS":
        return identity_rows()
    if name == "DEFAULT_MODELS":
        return default_models()
    raise AttributeError(name)


HELD_OUT = range(800, 1000)  # identities the oracle, the base and the identity weights never trained on
DEFAULT_IDENTITIES = tuple(range(800, 1000, 25))  # 8 of them
#: (style, background) of each prompt: ``a sketch of a woman on grass``
PROMPT_SET = (("photo", "snow"), ("sketch", "grass"), ("watercolor", "brick"), ("cartoon", "water"),
              ("pixel", "sand"), ("photo", "wood"), ("sketch", "sky"), ("cartoon", "snow"))  # fmt: skip
REFERENCE_SEED = 7000  # reference i of identity k renders with seed derive_seed(REFERENCE_SEED, k, i)
RENDER_SEED = 8000  # the ceiling row's renders
QUICK = dict(identities=(800,), prompts=1, seeds=1, n_ref=2, sample_steps=2, steps=2, class_images=2)


@dataclass
class Settings:
    base: str = "world"
    out: Path = Path("outputs/bench/identity")
    models: dict[str, str] = field(default_factory=default_models)  # row key -> path
    ip_adapter: str | None = "world"  # None: no IP-Adapter row
    dreambooth: str | None = "dreambooth_lora_te"  # a personalize recipe, or None: no DreamBooth row
    identities: tuple[int, ...] = DEFAULT_IDENTITIES
    prompts: int = 4  # of PROMPT_SET
    seeds: int = 2
    n_ref: int = 4
    ip_scale: float = 0.5  # IP-Adapter with a text prompt (the paper's text+image setting)
    lora_rank: int = 4
    steps: int | None = None  # DreamBooth steps (None: the recipe's)
    class_images: int | None = None  # DreamBooth prior images (None: the recipe's)
    sample_steps: int = 20
    guidance: float = 5.0
    fresh: bool = False

    def check(self) -> None:
        kinds = identity_rows()
        unknown = [k for k in self.models if k not in kinds]
        if unknown:
            raise InputError(f"--model {unknown[0]}=...: not an identity method; use one of {', '.join(kinds)}.")
        if self.dreambooth is not None and self.dreambooth not in P.RECIPES:
            raise InputError(f"DreamBooth recipe {self.dreambooth!r} is not one of {', '.join(P.RECIPES)}.")
        outside = [i for i in self.identities if i not in HELD_OUT]
        if outside:
            raise InputError(f"--identity {outside[0]} is not held out; pick one in 800-999 (no model saw them).")
        if not 1 <= self.prompts <= len(PROMPT_SET):
            raise InputError(f"--prompts must lie in 1..{len(PROMPT_SET)}; got {self.prompts}.")
        if min(self.seeds, self.n_ref, self.sample_steps, self.lora_rank) < 1 or not self.identities:
            raise InputError("--seeds, --references, --sample-steps, --lora-rank must be >= 1 and an identity given.")


# --------------------------------------------------------------------- identities and prompts
def class_of(identity: int) -> str:
    from tailor.world.identity import identity_features

    return identity_features(identity)["cls"]


def references(identity: int, n: int, size: int) -> list:
    """``n`` photo renders of the identity (other pose, light, background each): what a user would upload."""
    from tailor.world.faces import render_face
    from tailor.world.vocab import derive_seed

    return [render_face(derive_seed(REFERENCE_SEED, identity, i), identity=identity, size=size).pil()
            for i in range(n)]  # fmt: skip


def prompts(cls: str, n: int, words: str | None = None) -> list[str]:
    """The first ``n`` prompts of the set for class ``cls`` (``words`` stands for the face: ``[V] woman``)."""
    from tailor.world.vocab import STYLES

    return [f"{STYLES[style]} a {words or cls} on {bg}" for style, bg in PROMPT_SET[:n]]


def renders(identity: int, s: Settings, size: int) -> list:
    """The ceiling row: real renders of the identity in each prompt's style and background, ``seeds`` each."""
    from tailor.world.faces import render_face
    from tailor.world.vocab import derive_seed

    return [render_face(derive_seed(RENDER_SEED, identity, k, j), identity=identity, style=style, background=bg,
                        size=size).pil()
            for k, (style, bg) in enumerate(PROMPT_SET[: s.prompts]) for j in range(s.seeds)]  # fmt: skip


# --------------------------------------------------------------------- rows
def load_models(s: Settings) -> dict[str, Any]:
    """The rows' methods: identity methods by kind (``world``: the shipped weights), then the IP-Adapter."""
    import tailor
    from tailor.compose import load_kind

    out, specs = {}, identity_specs()
    for key, path in s.models.items():
        spec, row = specs[key]
        try:
            out[key] = load_kind(path, spec.name)
        except Exception as e:
            raise InputError(
                f"--model {key}={path} cannot be loaded ({e}); pass a `tailor train {spec.name}` folder."
            ) from e
        if row.options:
            out[key].config = out[key].config.replace(**row.options)
    if s.ip_adapter:
        method = tailor.load(s.ip_adapter)
        if method.name != "ip_adapter":
            raise InputError(f"--ip-adapter {s.ip_adapter} is a {method.name} artifact, not an IP-Adapter.")
        out["ip-adapter"] = method
    return out


def attach(pipe, key: str, method, refs: list, cls: str, s: Settings) -> None:
    """Attach a row's method with the references as the input its ``GenerateInput`` declares (the IP-Adapter row:
    the first reference at the text+image scale) and the class word where it takes one."""
    from tailor.core.method import get_spec

    decl = get_spec(method.name).generate
    inputs = {decl.input.name: [refs[0]] if key == "ip-adapter" else list(refs)}
    if decl.class_input:
        inputs[decl.class_input] = cls
    pipe.attach(method, weight=s.ip_scale if key == "ip-adapter" else 1.0, **inputs)


def score(images: list, refs: list, clean: list[str]) -> dict[str, Any]:
    from tailor.eval.identity import identity_scores
    from tailor.eval.world import prompt_scores, world_scores

    ident = identity_scores(images, refs)
    acc = world_scores(images, clean)["accuracy"]
    return {
        "facesim": ident["facesim"],
        "same_identity": ident["same_identity"],
        "style_acc": acc.get("style"),
        "background_acc": acc.get("background"),
        "clip_t_like": prompt_scores(images, clean)["clip_t_like"],
    }


def row_images(key: str, identity: int, refs: list, s: Settings, models: dict, root: Path) -> tuple[list, dict]:
    """The row's images of one identity (prompt-major, ``seeds`` each) and its cost record."""
    import tailor

    cls = class_of(identity)
    comps = tailor.load_components(s.base)
    if key == "renders":
        return renders(identity, s, comps.default_size), {}
    words, cost, trained = cls, {"train_s": 0.0, "train_cpu_s": 0.0}, None
    if key == "dreambooth":
        ps = P.Settings(base=s.base, out=root, n_ref=s.n_ref, lora_rank=s.lora_rank, steps=s.steps,
                        class_images=s.class_images, fresh=s.fresh)  # fmt: skip
        own = tailor.load_components(s.base)  # training leaves its method patched into the components it is given
        rec = P.train_references(s.dreambooth, f"id{identity}", lambda: refs, cls, ps, root, own)
        trained = tailor.load(P.artifact_path(root, s.dreambooth, f"id{identity}"))
        words = P.subject_words(s.dreambooth, rec["word"], cls)
        cost = {"train_s": rec["seconds"], "train_cpu_s": rec["cpu_seconds"], "steps": rec["steps"]}
    pipe = tailor.Pipeline(comps)
    if trained is not None:
        pipe.attach(trained)
    elif key != "base":
        attach(pipe, key, models[key], refs, cls, s)
    method = models.get(key)
    if hasattr(method, "adapt_seconds"):
        method.adapt_seconds = method.adapt_cpu_seconds = 0.0
    with C.timer() as t:
        images = C.generate(pipe, prompts(cls, s.prompts, words), s.seeds, s.sample_steps, s.guidance)
    pipe.detach()
    adapt = float(getattr(method, "adapt_seconds", 0.0) or 0.0)
    if adapt:  # a method that tunes on the references when it first sees them: that time is its per-subject cost
        cost = {**cost, "train_s": adapt, "train_cpu_s": float(method.adapt_cpu_seconds)}
    sample_cpu = t["cpu_seconds"] - float(getattr(method, "adapt_cpu_seconds", 0.0) or 0.0)
    return images, cost | {"sample_cpu_s_per_image": sample_cpu / len(images)}


COLUMNS = [
    ("method", "method", ""),
    ("facesim", "FaceSim (oracle)", ".3f"),
    ("same_identity", "same identity", ".3f"),
    ("style_acc", "style acc", ".3f"),
    ("background_acc", "background acc", ".3f"),
    ("clip_t_like", "CLIP-T-like", ".3f"),
    ("train_s", "train s/identity", ".1f"),
    ("sample_cpu_s_per_image", "sample CPU s/image", ".2f"),
]
SCORES = ("facesim", "same_identity", "style_acc", "background_acc", "clip_t_like")
COSTS = ("train_s", "train_cpu_s", "sample_cpu_s_per_image")


def run(s: Settings) -> dict[str, Any]:
    """Every row over every identity: generate (or render), score against the references, average."""
    import tailor
    from tailor.core.progress import make_progress

    root = C.start(s)
    t0, c0 = time.perf_counter(), time.process_time()
    models = load_models(s)
    keys = ["renders", "base", *(["ip-adapter"] if s.ip_adapter else []),
            *(["dreambooth"] if s.dreambooth else []), *s.models]  # fmt: skip
    size = tailor.load_components(s.base).default_size
    refs = {i: references(i, s.n_ref, size) for i in s.identities}
    shown = s.identities[:3]
    sheet = [("references", [refs[i][k % s.n_ref] for i in shown for k in range(s.prompts)])]
    rows, per_identity = [], {}
    with make_progress() as progress:
        task = progress.add_task("identity", total=len(keys) * len(s.identities), info="")
        for key in keys:
            results, tiles = [], []
            for identity in s.identities:
                progress.update(task, info=f"{key} / {identity}")
                images, cost = row_images(key, identity, refs[identity], s, models, root)
                C.save_images(images, root / "images" / key / str(identity), "img")
                clean = [p for p in prompts(class_of(identity), s.prompts) for _ in range(s.seeds)]
                res = score(images, refs[identity], clean) | cost
                per_identity[f"{key}/{identity}"] = res
                results.append(res)
                if identity in shown:
                    tiles += images[:: s.seeds]  # the first seed of every prompt
                progress.advance(task)
            sheet.append((key, tiles))
            row = {"method": key} | {k: C.mean_of(results, k) for k in (*SCORES, *COSTS)}
            rows.append(row | ({"steps": results[0]["steps"]} if "steps" in results[0] else {}))
    C.contact_sheet(sheet, root / "grid.png")
    table = C.Table(COLUMNS, rows)
    extra = {
        "prompts": [f"{style}/{bg}" for style, bg in PROMPT_SET[: s.prompts]],
        "grid_columns": "per shown identity (first 3): the first seed of each prompt; first row: the references",
    }
    return C.finish(root, "identity", s, rows, table, t0, c0, extra, {"per_identity": per_identity})
