"""Bad inputs of issue 18 (hardening), registered into :data:`bad_inputs.corpus.CASES`: the environment (an ``--out``
that is a file, a user's folder, inside the data, under a file, a broken or looping link; a directory as a file
destination), NaN / inf / out-of-range numbers at every edge, duplicated YAML keys, and folders holding tailor's
own files for a person (``grid.png``, ``generation.json``). A case whose ``--out`` must already exist points it at
its own path, so the runner's ``out`` stays empty."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from bad_inputs.corpus import TRAIN, _method_file, case, data_dir, generate, png_bytes, train
from tailor.core.method import registry


def good_data(d: Path) -> Path:
    return data_dir(d, "ok2.png", png_bytes())


def lora_train(out: Path, *extra: str) -> list[str]:
    return ["train", "lora", *TRAIN, "--out", str(out), *extra]


def lora_file(d: Path) -> Path:
    return _method_file(registry()["lora"], d)


# --------------------------------------------------------------------- --out and other paths
@case
def train_out_is_a_file(d, out):
    (d / "taken.txt").write_text("mine")
    return train(good_data(d), d / "taken.txt"), "taken.txt"


@case
def generate_out_is_a_file(d, out):
    (d / "taken.png").write_bytes(png_bytes())
    return generate(d / "taken.png"), "taken.png"


@case
def train_out_is_a_users_folder(d, out):
    (d / "mine").mkdir()
    (d / "mine" / "thesis.tex").write_text("\\begin{document}")
    return train(good_data(d), d / "mine"), "mine"


@case
def generate_out_is_a_users_folder(d, out):
    (d / "photos").mkdir()
    (d / "photos" / "000.png").write_bytes(png_bytes())
    return generate(d / "photos"), "photos"


@case
def train_out_equals_data(d, out):
    data = good_data(d)
    return train(data, data), "data"


@case
def train_out_inside_data(d, out):
    data = good_data(d)
    return train(data, data / "run"), "data"


@case
def train_out_under_a_file(d, out):
    (d / "plain.txt").write_text("x")
    return train(good_data(d), d / "plain.txt" / "run"), "plain.txt"


@case
def generate_out_under_a_file(d, out):
    (d / "plain.txt").write_text("x")
    return generate(d / "plain.txt" / "run"), "plain.txt"


@case
def train_out_broken_link(d, out):
    os.symlink(d / "gone", d / "dangling")
    return train(good_data(d), d / "dangling"), "dangling"


@case
def generate_out_link_loop(d, out):
    os.symlink(d / "loop", d / "loop")
    return generate(d / "loop"), "loop"


@case
def image_link_loop(d, out):
    data = good_data(d)
    os.symlink(data / "spin.png", data / "spin.png")
    (data / "spin.txt").write_text("a star")
    return train(data, out), "symbolic link"


@case
def data_link_loop(d, out):
    os.symlink(d / "ring", d / "ring")
    return train(d / "ring", out), "ring"


@case
def prompts_file_is_a_folder(d, out):
    (d / "prompts").mkdir()
    return ["generate", "--base", "tiny", "--prompts", str(d / "prompts"), "--out", str(out)], "prompts"


@case
def prompts_file_blank(d, out):
    (d / "blank.txt").write_text("\n   \n# only a comment\n")
    return ["generate", "--base", "tiny", "--prompts", str(d / "blank.txt"), "--out", str(out)], "blank.txt"


@case
def config_is_a_folder(d, out):
    (d / "conf").mkdir()
    return lora_train(out, "--config", str(d / "conf")), "conf"


@case
def fuse_out_is_a_file(d, out):
    (d / "keep.safetensors").write_bytes(b"user data")
    return ["lora", "fuse", str(lora_file(d)), "--base", "tiny", "--out", str(d / "keep.safetensors")], "keep"


@case
def fuse_out_is_a_users_folder(d, out):
    (d / "album").mkdir()
    (d / "album" / "a.png").write_bytes(png_bytes())
    return ["lora", "fuse", str(lora_file(d)), "--base", "tiny", "--out", str(d / "album")], "album"


@case
def fuse_out_is_a_training_run(d, out):
    (d / "run").mkdir()
    (d / "run" / "tailor.json").write_text("{}")
    return ["lora", "fuse", str(lora_file(d)), "--base", "tiny", "--out", str(d / "run")], "run"


@case
def convert_dst_is_a_folder(d, out):
    (d / "dest").mkdir()
    (d / "dest" / "x.txt").write_text("x")
    return ["convert", "lora", str(lora_file(d)), str(d / "dest"), "--to", "kohya"], f"{d / 'dest'}: it is a folder"


@case
def merge_out_is_a_folder(d, out):
    (d / "merged").mkdir()
    (d / "merged" / "x.txt").write_text("x")
    f = lora_file(d)
    return ["lora", "merge", str(f), str(f), "--out", str(d / "merged")], "merged"


@case
def merge_out_under_a_file(d, out):
    (d / "plain.txt").write_text("x")
    f = lora_file(d)
    return ["lora", "merge", str(f), str(f), "--out", str(d / "plain.txt" / "m.safetensors")], "existing file"


# --------------------------------------------------------------------- numbers: NaN, inf, bounds
def _train_flag(flag: str, value: str):
    def build(d, out):
        return lora_train(out, flag, value), flag.lstrip("-").replace("-", "_")

    build.__name__ = f"train_{flag.lstrip('-').replace('-', '_')}_{value.replace('-', 'minus_')}"
    return build


for _flag, _value in (
    ("--lr", "nan"),
    ("--lr", "inf"),
    ("--max-grad-norm", "inf"),
    ("--noise-offset", "nan"),
    ("--caption-dropout", "nan"),
    ("--ema-decay", "inf"),
    ("--val-guidance", "nan"),
    ("--min-snr-gamma", "nan"),
    ("--weight-decay", "-inf"),
    ("--adam-epsilon", "nan"),
    ("--dropout", "nan"),
    ("--alpha", "inf"),
    ("--seed", str(2**64)),
    ("--seed", "-1"),
    ("--steps", str(2**64)),
):
    _c = _train_flag(_flag, _value)
    case(_c)


@case
def generate_guidance_nan(d, out):
    return generate(out, "--guidance", "nan"), "guidance"


@case
def generate_eta_inf(d, out):
    return generate(out, "--eta", "inf"), "eta"


@case
def generate_seed_beyond_64_bits(d, out):
    return generate(out, "--seed", str(2**64 + 5)), "seed"


@case
def generate_width_huge(d, out):
    return generate(out, "--width", "100000"), "--allow-large"


@case
def generate_width_not_a_multiple(d, out):
    return generate(out, "--width", "33"), "33"


@case
def generate_width_zero(d, out):
    return generate(out, "--width", "0"), "width"


@case
def generate_zero_images(d, out):
    return generate(out, "-n", "0"), "n="


@case
def apply_weight_nan(d, out):
    return generate(out, "--apply", f"{lora_file(d)}:nan"), "nan"


@case
def apply_weight_inf(d, out):
    return generate(out, "--apply", f"{lora_file(d)}:inf"), "inf"


@case
def apply_weight_not_a_number(d, out):
    return generate(out, "--apply", f"{lora_file(d)}:abc"), "'abc'"


@case
def merge_weight_nan(d, out):
    f = lora_file(d)
    weights = ["--weight", "nan", "--weight", "1"]
    return ["lora", "merge", str(f), str(f), "--out", str(out / "m.safetensors"), *weights], "--weight"


@case
def merge_weight_inf(d, out):
    f = lora_file(d)
    return ["lora", "merge", str(f), "--out", str(out / "m.safetensors"), "--weight", "inf"], "--weight"


# --------------------------------------------------------------------- YAML configs
def _yaml(name: str, text: str, culprit: str):
    def build(d, out):
        (d / f"{name}.yaml").write_text(text)
        return lora_train(out, "--config", str(d / f"{name}.yaml")), culprit

    build.__name__ = f"config_{name}"
    return build


for _name, _text, _culprit in (
    ("duplicate_key", "steps: 2\nlr: 0.001\nsteps: 3\n", "'steps'"),
    ("duplicate_method_key", "rank: 2\nrank: 8\n", "'rank'"),
    ("yaml_nan", "lr: .nan\n", "lr"),
    ("yaml_inf_count", "checkpoint_every: .inf\n", "checkpoint_every"),
    ("huge_seed", "seed: 1.0e+30\n", "seed"),
):
    case(_yaml(_name, _text, _culprit))


# --------------------------------------------------------------------- folders holding tailor's own files
@case
def data_of_only_tailor_outputs(d, out):
    folder = d / "gen"
    folder.mkdir()
    (folder / "grid.png").write_bytes(png_bytes())
    (folder / "loss.png").write_bytes(png_bytes())
    (folder / "generation.json").write_text("{}")
    return train(folder, out), "gen"


@case
def eval_pair_only_grids_match(d, out):
    for name, own in (("made", "a.png"), ("refs", "b.png")):
        (d / name).mkdir()
        (d / name / "grid.png").write_bytes(png_bytes())
        (d / name / own).write_bytes(png_bytes())
    return ["eval", "pair", "--images", str(d / "made"), "--reference", str(d / "refs")], "made"


@case
def metadata_row_names_missing_image(d, out):
    folder = d / "meta"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes())
    (folder / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "a star"}\n{"file_name": "gone.png", "text": "a star"}\n'
    )
    return train(folder, out), "gone.png"


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


@case
def base_folder_with_unsafe_pickle(d, out):
    import tailor

    base = d / "base"
    tailor.tiny_components().save_pipeline(base)
    weights = base / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    torch.save({"conv_in.weight": _RunsCode()}, weights.with_suffix(".bin"))
    return ["generate", "--base", str(base), "-p", "x", "--out", str(out)], "diffusion_pytorch_model.bin"


@case
def eval_identity_reference_without_face(d, out):
    (d / "made").mkdir()
    (d / "made" / "000.png").write_bytes(png_bytes((64, 64)))
    (d / "blank.png").write_bytes(png_bytes((64, 64)))
    return ["eval", "identity", "--images", str(d / "made"), "--reference", str(d / "blank.png")], "blank.png"
