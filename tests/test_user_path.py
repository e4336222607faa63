"""The path a newcomer walks (#17 item 6): typos get click's one-line usage error (exit 2), messages with brackets
print literally, no diffusers/transformers bars unless --verbose, base training defaults, and the CLI gaps
(``eval control``, ``export single-file``, ``convert controlnet``, ``convert embedding`` keeping A1111's fields)."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.cli import main
from tailor.errors import ConfigError, TailorError
from tailor.faces.dlib_backend import INSTALL


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# --------------------------------------------------------------------- typos: one usage line, exit 2
@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["generat"], "Did you mean 'generate'?"),
        (["eval", "control2"], "No such command 'control2'"),
        (["eval", "wrold"], "Did you mean 'world'?"),
        (["world", "rendr"], "Did you mean 'render'?"),
        (["train", "lorra"], "Did you mean 'lora'?"),
        (["train", "lora", "--stpes", "3"], "'--steps'"),
        (["convert", "lora", "a", "b", "--too", "kohya"], "No such option: --too"),
        (["--verbose", "methds"], "Did you mean 'methods'?"),
    ],
)
def test_typos_print_the_usage_error_and_exit_2(capsys, args, hint):
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "Usage: tailor" in err and "Error:" in err and hint in err, err
    assert "Traceback" not in err


# --------------------------------------------------------------------- brackets print literally
@pytest.mark.parametrize(
    "error",
    [
        ConfigError(f"real-photo face analysis needs dlib; {INSTALL}."),
        TailorError("the caption 'a [V] [class]' names [bold]no[/] token; write 'a sks dog'."),
    ],
)
def test_error_messages_keep_their_brackets(capsys, monkeypatch, error):
    def boom():
        raise error

    monkeypatch.setattr("tailor.cli.build", lambda: click.Command("boom", callback=boom))
    code, _, err = run(capsys)
    assert code == error.exit_code == 2
    assert err.strip() == f"error: {error}"


def test_progress_text_is_not_markup():
    from tailor.core.progress import make_progress

    progress = make_progress()
    with progress:
        task = progress.add_task("train [faces] [V]", total=2, info="loss [x]")
        progress.advance(task)
    text = progress.console.export_text() if progress.console.record else ""
    columns = progress.columns
    assert columns[0].markup is False and columns[3].markup is False, text


# --------------------------------------------------------------------- no library bars unless --verbose
@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bases") / "tiny"
    tailor.tiny_components().save_pipeline(folder)
    return folder


BARS = ("Loading pipeline components", "Loading weights", "Loading checkpoint shards")


def test_no_loading_bars_from_the_cli(capfd, tiny_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("TAILOR_VERBOSE", raising=False)
    args = ["generate", "--base", tiny_folder, "-p", "a red star", "-n", "1", "--steps", "1", "--out", tmp_path / "g"]
    assert main([str(a) for a in args]) == 0
    err = capfd.readouterr().err
    assert not any(bar in err for bar in BARS), err


def test_quiet_libraries_is_the_switch(capfd, tiny_folder, monkeypatch):
    from tailor.core.components import load_components
    from tailor.core.progress import quiet_libraries

    monkeypatch.setenv("TAILOR_VERBOSE", "1")
    try:
        quiet_libraries()
        capfd.readouterr()
        load_components(tiny_folder)
        assert "Loading pipeline components" in capfd.readouterr().err  # the bars this test keeps out
    finally:
        monkeypatch.delenv("TAILOR_VERBOSE")
        quiet_libraries()
    load_components(tiny_folder)
    err = capfd.readouterr().err
    assert not any(bar in err for bar in BARS), err


# --------------------------------------------------------------------- tailor eval control
@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """4 held-out world renders with their own canny / seg condition maps, and the maps shifted by one (shuffled)."""
    from tailor.conditions import from_truth
    from tailor.world import render_object

    root = tmp_path_factory.mktemp("control")
    for d in ("img", "canny", "seg", "shuffled_canny", "shuffled_seg"):
        (root / d).mkdir()
    samples = [render_object(900_000 + i, size=64) for i in range(4)]
    for i, s in enumerate(samples):
        other = samples[(i + 1) % 4]
        Image.fromarray(s.image).save(root / "img" / f"{i:03d}.png")
        for kind in ("canny", "seg"):
            Image.fromarray(from_truth(kind, s)).save(root / kind / f"{i:03d}.png")
            Image.fromarray(from_truth(kind, other)).save(root / f"shuffled_{kind}" / f"{i:03d}.png")
    return root


@pytest.mark.parametrize(("kind", "metric", "least"), [("canny", "edge_f1", 0.8), ("seg", "miou", 0.2)])
def test_eval_control_scores_own_conditions_above_shuffled(capsys, renders, kind, metric, least):
    scores = {}
    for cond in (kind, f"shuffled_{kind}"):
        code, out, err = run(capsys, "eval", "control", "--kind", kind, "--images", renders / "img",
                             "--conditions", renders / cond, "--json")  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert result["metric"] == metric and result["pairs"] == 4 and set(result["per_image"]) == {
            "000", "001", "002", "003"
        }  # fmt: skip
        scores[cond] = result["score"]
    assert scores[kind] >= least and scores[kind] > scores[f"shuffled_{kind}"] + 0.05, scores


def test_eval_control_table_and_errors(capsys, renders, tmp_path):
    code, out, _ = run(capsys, "eval", "control", "--kind", "canny", "--images", renders / "img",
                       "--conditions", renders / "canny")  # fmt: skip
    assert code == 0 and "edge_f1" in out and "mean" in out and "(4 pairs, canny)" in out
    (tmp_path / "other").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "other" / "x.png")
    code, _, err = run(capsys, "eval", "control", "--kind", "seg", "--images", renders / "img",
                       "--conditions", tmp_path / "other")  # fmt: skip
    assert code == 2 and "of the same file name" in err and err.count("\n") == 1
    code, _, err = run(capsys, "eval", "control", "--kind", "depth", "--images", renders / "img",
                       "--conditions", renders / "canny")  # fmt: skip
    assert code == 2 and "use canny or seg" in err


def test_label_maps_read_back_from_seg_conditions():
    from tailor.conditions.extract import segmentation_map
    from tailor.eval.control import label_miou, labels_from_seg_map

    labels = np.zeros((16, 16), dtype=np.int64)
    labels[2:9, 3:12], labels[10:, :5] = 4, 8
    seg = segmentation_map(labels)
    assert np.array_equal(labels_from_seg_map(seg), labels)
    noisy = np.clip(seg.astype(int) + 3, 0, 255)  # a re-encoded map still reads back (nearest palette colour)
    assert np.array_equal(labels_from_seg_map(noisy), labels)
    assert label_miou(labels, labels) == 1.0 and label_miou(labels, np.zeros_like(labels)) < 0.5


# --------------------------------------------------------------------- tailor export single-file
def test_export_single_file_round_trips(capsys, tiny_folder, tmp_path):
    out = tmp_path / "tiny.safetensors"
    code, stdout, err = run(capsys, "export", "single-file", out, "--base", tiny_folder)
    assert code == 0 and "single-file checkpoint" in stdout, err
    back = tailor.load_components(out, config=tiny_folder)
    want = tailor.load_components(tiny_folder)
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(back, name).state_dict(), getattr(want, name).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b), name
    code, _, err = run(capsys, "export", "single-file", tmp_path / "x.ckpt", "--base", "tiny")
    assert code == 2 and "change the suffix" in err


# --------------------------------------------------------------------- tailor convert controlnet
def test_convert_controlnet_original_and_back(capsys, tmp_path):
    from safetensors.torch import load_file

    from tailor.methods.controlnet import ControlNetMethod

    m = ControlNetMethod(condition="seg")
    torch.manual_seed(3)
    m.patch(tailor.tiny_components())
    with torch.no_grad():
        for p in m.controlnet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    want = {k: v.clone() for k, v in m.controlnet.state_dict().items()}
    m.save(tmp_path / "train")
    original = tmp_path / "control_seg.safetensors"
    code, _, err = run(capsys, "convert", "controlnet", tmp_path / "train", original, "--to", "original",
                       "--base", "tiny")  # fmt: skip
    assert code == 0, err
    keys = set(load_file(str(original)))
    assert "control_model.middle_block_out.0.weight" in keys and all(k.startswith("control_model.") for k in keys)
    code, _, err = run(capsys, "convert", "controlnet", original, tmp_path / "diffusers", "--to", "diffusers",
                       "--base", "tiny")  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "diffusers" / "tailor.json").read_text())["condition"] == "seg"
    from diffusers import ControlNetModel

    back = ControlNetModel.from_pretrained(str(tmp_path / "diffusers")).state_dict()
    assert set(back) == set(want) and all(torch.equal(back[k], want[k]) for k in want)
    loaded = tailor.load(tmp_path / "diffusers")
    assert loaded.config.condition == "seg"
    code, _, err = run(
        capsys, "convert", "controlnet", tmp_path / "train", tmp_path / "o.safetensors", "--to", "a1111"
    )
    assert code == 2 and "use original or diffusers" in err


# --------------------------------------------------------------------- tailor convert embedding keeps A1111 fields
def test_convert_embedding_to_a1111_keeps_step_and_checkpoint_name(capsys, tmp_path):
    from tailor.methods.textual_inversion import TextualInversionMethod as TI

    comps = tailor.tiny_components()
    comps.source = "models/my-sd15.safetensors"
    method = TI(token="<toy>", init_word="cat")
    method.patch(comps)
    method.step = 1234
    method.save(tmp_path / "train")
    trained = torch.load(tmp_path / "train" / "toy.pt", weights_only=True)
    assert trained["step"] == 1234 and trained["sd_checkpoint_name"] == "models/my-sd15.safetensors"
    for src in (
        tmp_path / "train",
        tmp_path / "train" / "textual_inversion.safetensors",
        tmp_path / "train" / "toy.pt",
    ):
        dst = tmp_path / "out" / "toy2.pt"
        code, _, err = run(capsys, "convert", "embedding", src, dst, "--to", "a1111")
        assert code == 0, err
        raw = torch.load(dst, weights_only=True)
        assert raw["step"] == 1234 and raw["sd_checkpoint_name"] == "models/my-sd15.safetensors", src
        assert torch.equal(raw["string_to_param"]["*"], trained["string_to_param"]["*"])


# --------------------------------------------------------------------- training defaults of the base at hand
def with_defaults(folder, tmp_path, defaults: dict):
    """A copy-free base folder: the tiny base's files linked, plus a ``tailor_defaults.json``."""
    base = tmp_path / "base"
    base.mkdir()
    for p in folder.iterdir():
        (base / p.name).symlink_to(p)
    (base / "tailor_defaults.json").write_text(json.dumps({"_about": "test", **defaults}))
    return base


def test_precedence_flag_over_config_over_base_over_method(tmp_path):
    from tailor.core.training.defaults import BASE, CONFIG, FLAG, base_defaults, resolve_train_options

    (tmp_path / "tailor_defaults.json").write_text(json.dumps({"lora": {"lr": 0.01, "steps": 50, "rank": 2}}))
    values, sources = resolve_train_options("lora", tmp_path, {"steps": 7}, {"lr": 0.003})
    assert values == {"lr": 0.003, "steps": 7, "rank": 2}
    assert sources == {"lr": CONFIG, "steps": FLAG, "rank": BASE}
    assert base_defaults(tmp_path, "hypernetwork") == {} and base_defaults(tmp_path / "nowhere", "lora") == {}
    assert base_defaults("tiny", "lora") == {} and base_defaults(None, "lora") == {}


def test_world_defaults_name_real_methods_and_options():
    """Every method and option the world base recommends exists (a typo would fail every `tailor train`)."""
    import dataclasses

    from tailor.cli.train import split_config
    from tailor.core.method import get_spec
    from tailor.core.training import TrainConfig
    from tailor.core.training.defaults import FILE, read_defaults
    from tailor.world.zoo import base_path

    defaults = read_defaults(base_path() / FILE)
    assert {"lora", "dreambooth", "textual_inversion", "hypernetwork"} <= set(defaults)
    for name, options in defaults.items():
        spec = get_spec(name)
        t, m = split_config(options, TrainConfig, spec.config, FILE)
        assert t["lr"] >= 2 * getattr(spec.method(), "default_lr", 1e-4)  # world-scale rates, not SD1.5's
        assert t["steps"] <= 300 and set(m) <= {f.name for f in dataclasses.fields(spec.config)}


def test_cli_prints_the_chosen_values_and_their_sources(capsys, tiny_folder, tmp_path, monkeypatch):
    from tailor.core.io import read_metadata

    base = with_defaults(tiny_folder, tmp_path, {"lora": {"lr": 0.0123, "steps": 1, "rank": 2, "batch_size": 1}})
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(images / f"{i}.png")
    common = ["train", "lora", "--base", base, "--images", images, "--token", "sks", "--class", "star"]
    code, out, err = run(capsys, *common, "--out", tmp_path / "a")
    assert code == 0, err
    line = out.splitlines()[0]
    assert line.startswith("training lora on ") and "lr=0.0123 (base defaults)" in line, out
    assert "steps=1 (base defaults)" in line and "rank=2 (base defaults)" in line and "tailor_defaults.json" in out
    meta = read_metadata(tmp_path / "a" / "lora.safetensors")
    assert json.loads(meta["config"])["rank"] == 2  # the base's method option reached the method
    # a --config value beats the base, a flag beats both
    (tmp_path / "c.yaml").write_text("lr: 0.002\nrank: 3\n")
    code, out, err = run(capsys, *common, "--config", tmp_path / "c.yaml", "--rank", "1", "--out", tmp_path / "b")
    assert code == 0, err
    assert "lr=0.002 (--config)" in out and "rank=1 (flag)" in out and "steps=1 (base defaults)" in out
    assert json.loads(read_metadata(tmp_path / "b" / "lora.safetensors")["config"])["rank"] == 1
    # a base without the file keeps the method's own defaults (the papers' values)
    code, out, err = run(capsys, *common[:3], tiny_folder, *common[4:], "--steps", "1", "--out", tmp_path / "c")
    assert code == 0, err
    assert "lr=0.0001 (method default)" in out and "steps=1 (flag)" in out and "batch_size=4 (default)" in out


def test_a_bad_defaults_file_names_itself(capsys, tiny_folder, tmp_path):
    base = with_defaults(tiny_folder, tmp_path, {"lora": {"lr": 0.01, "rnak": 2}})
    code, _, err = run(capsys, "train", "lora", "--base", base, "--steps", "1", "--out", tmp_path / "o")
    assert code == 2 and "tailor_defaults.json" in err and "'rnak'" in err


def test_python_api_loads_quietly_and_restores_the_libraries_state(capfd, tiny_folder, monkeypatch):
    from diffusers.utils import logging as diffusers_logging

    from tailor.core.components import load_components

    monkeypatch.delenv("TAILOR_VERBOSE", raising=False)
    diffusers_logging.enable_progress_bar()  # a user's process with the library's defaults
    try:
        capfd.readouterr()
        load_components(tiny_folder)
        err = capfd.readouterr().err
        assert not any(bar in err for bar in BARS), err
        assert diffusers_logging.is_progress_bar_enabled()  # the user's setting is left as it was
    finally:
        from tailor.core.progress import quiet_libraries

        quiet_libraries()
