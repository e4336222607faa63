"""``tailor train <method> --images DIR --token WORD --class NOUN``: the same subject flags on every fine-tuning
method, mapped onto each method's own fields; kohya-style ``.txt`` captions beside images win."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tailor.cli import main
from tailor.core.training.data import FolderDataset
from tailor.world.render import render


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "subject"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(render("a photo of a red striped star on grass", seed=i).image).save(folder / f"{i}.png")
    (folder / "2.txt").write_text("a sks star on snow")
    return folder


def saved_config(out) -> dict:
    return json.loads((out / "tailor.json").read_text())


def test_folder_captions_fall_back_to_the_subject_caption(images):
    ds = FolderDataset(images, 64, default_caption="a sks star")
    assert ds.captions == ["a sks star", "a sks star", "a sks star on snow"]
    with pytest.raises(Exception, match="has no caption"):
        FolderDataset(images, 64)


@pytest.mark.parametrize(
    ("method", "extra", "fields"),
    [
        ("lora", [], {}),
        ("textual_inversion", [], {"token": "sks", "init_word": "star"}),
        (
            "dreambooth",
            ["--lora-rank", "2", "--num-class-images", "1", "--class-steps", "1"],
            {"identifier": "sks", "class_word": "star"},
        ),
    ],
)
def test_subject_flags_are_the_same_on_every_method(images, tmp_path, method, extra, fields):
    out = tmp_path / method
    if method == "dreambooth":
        extra = [*extra, "--class-dir", str(tmp_path / "class")]
    args = ["train", method, "--base", "tiny", "--images", str(images), "--token", "sks", "--class", "star"]
    assert main([*args, "--steps", "1", "--batch-size", "1", "--out", str(out), *extra]) == 0
    from tailor.core.io import read_metadata

    artifact = next(p for p in out.glob("*.safetensors") if read_metadata(p).get("method") == method)
    config = json.loads(read_metadata(artifact)["config"])
    for name, want in fields.items():
        assert config[name] == want
    if method in ("lora", "dreambooth"):  # the training --out folder itself goes to --lora (DreamBooth-LoRA too)
        gen = ["generate", "--base", "tiny", "--lora", f"{out}:0.8", "-p", "a sks star", "-n", "1", "--steps", "1"]
        assert main([*gen, "--out", str(tmp_path / "gen")]) == 0


def test_images_and_data_together_is_an_error(images, tmp_path, capsys):
    args = ["train", "lora", "--base", "tiny", "--images", str(images), "--data", str(images), "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "--images or --data, not both" in capsys.readouterr().err


def test_textual_inversion_token_that_is_already_a_word_is_refused(tmp_path, capsys):
    """``star`` is a whole word of the world tokenizer: a placeholder of that name would shadow it."""
    args = ["train", "textual_inversion", "--base", "world", "--token", "star", "--steps", "1"]
    assert main([*args, "--out", str(tmp_path / "ti")]) == 2
    err = capsys.readouterr().err
    assert "'star' is already in the base's tokenizer" in err
    assert not (tmp_path / "ti" / "textual_inversion.safetensors").exists()
