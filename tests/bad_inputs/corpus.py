"""Bad inputs, each written into a fresh folder with the CLI arguments that feed it to tailor.

A case returns ``(argv, name)``: ``tailor <argv>`` must exit with status 2, print one line naming ``name`` (the file,
folder or option at fault) and leave nothing in its ``--out``. Files for another base come from every registered
method (patched onto a tiny base with other widths and saved), so a method added later is covered without edits.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tailor.core.method import registry

Case = Callable[[Path, Path], tuple[list[str], str]]  # (work dir, out dir) -> (argv, name in the message)
CASES: dict[str, Case] = {}
TRAIN = ["--base", "tiny", "--steps", "1", "--batch-size", "1", "--resolution", "32"]


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def png_bytes(size=(12, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def data_dir(d: Path, bad_name: str, bad_bytes: bytes) -> Path:
    """A training folder of two good captioned images and one bad file."""
    folder = d / "data"
    folder.mkdir()
    for i in range(2):
        (folder / f"ok{i}.png").write_bytes(png_bytes())
        (folder / f"ok{i}.txt").write_text("a photo of a star")
    (folder / bad_name).write_bytes(bad_bytes)
    (folder / (Path(bad_name).stem + ".txt")).write_text("a photo of a star")
    return folder


def train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "finetune", *TRAIN, "--data", str(data), "--out", str(out), *extra]


def generate(out: Path, *extra: str) -> list[str]:
    return ["generate", "--base", "tiny", "-p", "a star", "-n", "1", "--steps", "1", "--out", str(out), *extra]


# --------------------------------------------------------------------- training images
@case
def zero_byte_png(d, out):
    return train(data_dir(d, "empty.png", b""), out), "empty.png"


@case
def truncated_png(d, out):
    return train(data_dir(d, "cut.png", png_bytes((64, 64))[:60]), out), "cut.png"


@case
def truncated_jpeg(d, out):
    return train(data_dir(d, "cut.jpg", jpeg_bytes((64, 64))[:300]), out), "cut.jpg"


@case
def text_named_png(d, out):
    return train(data_dir(d, "notes.png", b"just some text, not an image\n"), out), "notes.png"


@case
def decompression_bomb(d, out):
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, format="PNG")  # 144 Mpx in a few kB
    return train(data_dir(d, "bomb.png", buf.getvalue()), out), "bomb.png"


@case
def empty_folder(d, out):
    (d / "nothing").mkdir()
    return train(d / "nothing", out), "nothing"


@case
def missing_folder(d, out):
    return train(d / "not-there", out), "not-there"


@case
def caption_not_utf8(d, out):
    folder = data_dir(d, "x.png", png_bytes())
    (folder / "x.txt").write_bytes(b"\xff\xfe caf\xe9 \x80")
    return train(folder, out), "x.txt"


@case
def bad_metadata_jsonl(d, out):
    folder = d / "meta"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes())
    (folder / "metadata.jsonl").write_text('{"file_name": "a.png", "text": \n')
    return train(folder, out), "metadata.jsonl"


# --------------------------------------------------------------------- training options and config files
@case
def negative_steps(d, out):
    return ["train", "lora", "--base", "tiny", "--steps", "-3", "--out", str(out)], "steps"


@case
def config_unknown_key(d, out):
    (d / "run.yaml").write_text("steps: 2\nlearning_rat: 0.1\n")
    return ["train", "lora", "--base", "tiny", "--config", str(d / "run.yaml"), "--out", str(out)], "run.yaml"


@case
def config_wrong_type(d, out):
    (d / "typed.yaml").write_text("steps: many\n")
    return ["train", "lora", "--base", "tiny", "--config", str(d / "typed.yaml"), "--out", str(out)], "typed.yaml"


@case
def config_not_a_mapping(d, out):
    (d / "list.yaml").write_text("- steps\n- 3\n")
    return ["train", "lora", "--base", "tiny", "--config", str(d / "list.yaml"), "--out", str(out)], "list.yaml"


@case
def config_broken_yaml(d, out):
    (d / "broken.yaml").write_text("steps: [1, 2\n")
    return ["train", "lora", "--base", "tiny", "--config", str(d / "broken.yaml"), "--out", str(out)], "broken.yaml"


@case
def resume_corrupt_checkpoint(d, out):
    ckpt = d / "step-000004"
    ckpt.mkdir()
    (ckpt / "trainer.json").write_text("{not json")
    return ["train", "lora", *TRAIN, "--resume", str(ckpt), "--out", str(out)], "step-000004"


# --------------------------------------------------------------------- weight files
def tiny_file(d: Path, name: str, tensors: dict, meta: dict | None = None) -> Path:
    path = d / name
    save_file(tensors, str(path), metadata=meta)
    return path


def lora_meta() -> dict:
    return {"format": "tailor", "method": "lora", "config": json.dumps({"rank": 2}), "base": "tiny"}


@case
def zero_byte_safetensors(d, out):
    (d / "zero.safetensors").write_bytes(b"")
    return generate(out, "--apply", str(d / "zero.safetensors")), "zero.safetensors"


@case
def truncated_safetensors(d, out):
    full = tiny_file(d, "full.safetensors", {"w": torch.ones(64, 64)}, lora_meta()).read_bytes()
    (d / "cut.safetensors").write_bytes(full[: len(full) // 2])
    return generate(out, "--apply", str(d / "cut.safetensors")), "cut.safetensors"


@case
def huge_header_safetensors(d, out):
    (d / "hdr.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    return generate(out, "--apply", str(d / "hdr.safetensors")), "hdr.safetensors"


@case
def unknown_method(d, out):
    meta = {**lora_meta(), "method": "telepathy"}
    path = tiny_file(d, "odd.safetensors", {"w": torch.ones(2)}, meta)
    return generate(out, "--apply", str(path)), "odd.safetensors"


@case
def no_known_format(d, out):
    return generate(out, "--apply", str(tiny_file(d, "anon.safetensors", {"w": torch.ones(2)}))), "anon.safetensors"


@case
def damaged_manifest(d, out):
    (d / "run").mkdir()
    (d / "run" / "tailor.json").write_text("{oops")
    return generate(out, "--apply", str(d / "run")), "tailor.json"


@case
def embedding_not_a_lora(d, out):
    emb = tiny_file(d, "emb.safetensors", {"emb_params": torch.zeros(1, 64)})
    return generate(out, "--lora", str(emb)), "emb.safetensors"


@case
def prompts_not_utf8(d, out):
    (d / "prompts.txt").write_bytes(b"a \xff\xfe star\n")
    return ["generate", "--base", "tiny", "--prompts", str(d / "prompts.txt"), "--out", str(out)], "prompts.txt"


@case
def missing_base(d, out):
    return ["generate", "--base", str(d / "nobase"), "-p", "x", "--out", str(out)], "nobase"


@case
def base_folder_without_model(d, out):
    (d / "model").mkdir()
    return ["generate", "--base", str(d / "model"), "-p", "x", "--out", str(out)], "model"


OTHER_BASES = ({"cross_attention_dim": 32}, {"cross_attention_dim": 48}, {"sdxl": True})


def _method_file(spec, d: Path, mutate=None, base_kw: dict | None = None, options: dict | None = None) -> Path:
    """``spec``'s artifact built on a tiny base (``base_kw`` changes its widths), tensors optionally mutated."""
    import tailor
    from tailor.core.io import read_metadata

    own = {k: v for k, v in spec.test_options.items() if not k.endswith("_dir")}
    method = spec.method(**{**own, **(options or {})})
    method.patch(tailor.tiny_components(**(base_kw or {})))
    path = Path(method.save(d / f"made-{spec.name}-{len(list(d.iterdir()))}"))
    if mutate is not None:
        save_file(mutate(load_file(str(path))), str(path), metadata=read_metadata(path))
    return path


def _shapes(path: Path) -> dict:
    return {k: tuple(v.shape) for k, v in load_file(str(path)).items()}


def other_base_file(spec, d: Path) -> Path | None:
    """``spec``'s file for the first other tiny base whose tensors do not fit the plain tiny base, else None."""
    own = _shapes(_method_file(spec, d))
    for kw in OTHER_BASES:
        try:
            path = _method_file(spec, d, base_kw=kw)
        except Exception:  # the method does not run on that base at all
            continue
        theirs = _shapes(path)
        if set(own) - set(theirs) or any(theirs[k] != v for k, v in own.items() if k in theirs):
            return path
    return None


def _other_base(name: str) -> Case:
    def build(d, out):
        path = other_base_file(registry()[name], d)
        if path is None:
            pytest.skip(f"{name} files carry no base-specific shapes")
        return generate(out, "--apply", str(path)), path.name

    build.__name__ = f"other_base_{name}"
    return build


@case
def hypernetwork_for_other_widths(d, out):
    path = _method_file(registry()["hypernetwork"], d, base_kw={"cross_attention_dim": 48}, options={"widths": [48]})
    return generate(out, "--hypernetwork", str(path)), path.name


@case
def control_image_truncated(d, out):
    model = _method_file(registry()["controlnet"], d)
    (d / "edge.png").write_bytes(png_bytes((64, 64))[:50])
    return generate(out, "--control", f"{model}:{d / 'edge.png'}"), "edge.png"


@case
def ip_image_is_text(d, out):
    model = _method_file(registry()["ip_adapter"], d)
    (d / "face.png").write_text("hello")
    return generate(out, "--ip-adapter", f"{model}={d / 'face.png'}"), "face.png"


def _nan_weights(name: str) -> Case:
    def build(d, out):
        def poison(t):
            k = next(k for k, v in t.items() if v.is_floating_point() and v.numel() > 1)
            t[k] = t[k].clone()
            t[k].view(-1)[0] = float("nan")
            return t

        path = _method_file(registry()[name], d, mutate=poison)
        return generate(out, "--apply", str(path)), path.name

    build.__name__ = f"nan_weights_{name}"
    return build


def _wrong_dtype(name: str) -> Case:
    def build(d, out):
        def to_int(t):
            return {k: (v * 100).to(torch.int64) if v.is_floating_point() else v for k, v in t.items()}

        path = _method_file(registry()[name], d, mutate=to_int)
        return generate(out, "--apply", str(path)), path.name

    build.__name__ = f"wrong_dtype_{name}"
    return build


for _name in sorted(registry()):
    CASES[f"other_base_{_name}"] = _other_base(_name)
for _name in ("lora", "textual_inversion", "hypernetwork"):
    CASES[f"nan_weights_{_name}"] = _nan_weights(_name)
    CASES[f"wrong_dtype_{_name}"] = _wrong_dtype(_name)

from bad_inputs import edge  # noqa: E402,F401  (registers issue 18's cases: environment, NaN / bounds, YAML keys)
