"""Unusual but usable input trains and generates, each oddity reported in one warning line: CMYK, 16-bit, palette
and alpha images, a 1x1 and a large image, a file name that is not UTF-8, a prompt longer than the tokenizer's limit.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image

from tailor.cli import main as cli


def test_odd_images_train_with_warnings(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(data / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16)).save(data / "deep.png")
    rgb.convert("P").save(data / "palette.png")
    rgb.convert("RGBA").save(data / "alpha.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(data / "dot.png")
    Image.new("RGB", (3000, 2000), (10, 200, 10)).save(data / "large.png")
    odd = os.fsdecode(b"caf\xe9.png")  # latin-1 bytes: not valid UTF-8
    rgb.save(data / odd)
    for p in list(data.iterdir()):
        p.with_suffix(".txt").write_text("a photo of a thing")
    out = tmp_path / "out"
    argv = ["train", "finetune", "--base", "tiny", "--data", str(data), "--steps", "4", "--batch-size", "2",
            "--resolution", "32", "--out", str(out)]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="tailor"):
        assert cli(argv) == 0
    text = caplog.text
    for name in ("cmyk.jpg", "deep.png", "palette.png", "alpha.png"):
        assert f"converted {name}" in text, text
    assert "upscaled" in text and "dot.png" in text
    assert (out / "finetune.safetensors").is_file()


def test_long_prompt_is_truncated_with_a_warning(tmp_path, caplog):
    out = tmp_path / "gen"
    prompt = " ".join(["a red striped star on grass"] * 40)
    with caplog.at_level(logging.WARNING, logger="tailor"):
        assert cli(["generate", "--base", "tiny", "-p", prompt, "-n", "1", "--steps", "1", "--out", str(out)]) == 0
    assert "truncated" in caplog.text
    assert (out / "000.png").is_file()
