"""Config coercion/validation, safetensors metadata, safe pickle loading, atomic writes, image loading."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from tailor.core.config import Config, load_yaml, option
from tailor.core.images import load_image, make_grid, to_tensor
from tailor.core.io import atomic_dir, atomic_path, load_tensors, read_metadata, safe_torch_load, save_tensors
from tailor.errors import ConfigError, FormatError, InputError, UnsafeFileError


@dataclass
class Demo(Config):
    rank: int = option(4, "rank")
    alpha: float | None = option(None, "alpha")
    train_text: bool = option(False, "train text")
    targets: list[str] = option(["to_k", "to_v"], "targets")
    mode: str = option("a", "mode", choices=("a", "b"))

    def validate(self):
        self.check(self.rank > 0, f"rank must be positive; got {self.rank}.")


def test_config_coercion_and_errors(tmp_path):
    c = Demo.from_dict({"rank": "8", "alpha": 2, "train-text": "yes", "targets": "to_q,to_k"})
    assert (c.rank, c.alpha, c.train_text, c.targets) == (8, 2.0, True, ["to_q", "to_k"])
    assert Demo.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown option 'rnak'"):
        Demo.from_dict({"rnak": 3})
    with pytest.raises(ConfigError, match="must be an integer"):
        Demo.from_dict({"rank": "four"})
    with pytest.raises(ConfigError, match="must be an integer"):
        Demo.from_dict({"rank": 2.5})
    with pytest.raises(ConfigError, match="rank must be positive"):
        Demo(rank=-1)
    with pytest.raises(ConfigError, match="not one of"):
        Demo(mode="c")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_safetensors_metadata_roundtrip(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.ones(2, 3)}, {"method": "x", "config": {"rank": 4}})
    assert read_metadata(path)["method"] == "x"
    assert read_metadata(path)["config"] == '{"rank": 4}'
    assert torch.equal(load_tensors(path)["a"], torch.ones(2, 3))
    trunc = tmp_path / "t.safetensors"
    trunc.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FormatError, match="t.safetensors"):
        load_tensors(trunc)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        load_tensors(tmp_path / "empty.safetensors")


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
def test_pickle_with_code_is_refused(tmp_path, suffix):
    marker = tmp_path / "pwned"
    evil = tmp_path / f"evil{suffix}"
    evil.write_bytes(pickle.dumps({"w": Payload(str(marker))}))
    with pytest.raises(UnsafeFileError, match="refuses"):
        safe_torch_load(evil)
    assert not marker.exists()
    good = tmp_path / f"good{suffix}"
    torch.save({"w": torch.zeros(2)}, good)
    assert torch.equal(load_tensors(good)["w"], torch.zeros(2))


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    d = tmp_path / "ckpt"
    with pytest.raises(RuntimeError):
        with atomic_dir(d) as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError("killed")
    assert not d.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(d) as tmp:
        (tmp / "a").write_text("x")
    assert (d / "a").read_text() == "x"


def test_image_loading(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="text.png is not a readable image"):
        load_image(tmp_path / "text.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.png"):
        load_image(tmp_path / "trunc.png")
    Image.new("CMYK", (8, 8)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "alpha.png")
    Image.new("I;16", (8, 8), 4000).save(tmp_path / "deep.png")
    for name in ("cmyk.jpg", "alpha.png", "deep.png"):
        assert load_image(tmp_path / name).mode == "RGB"
    assert load_image(tmp_path / "alpha.png").getpixel((0, 0)) == (255, 255, 255)
    t = to_tensor(load_image(tmp_path / "ok.png"), size=16)
    assert t.shape == (3, 16, 16) and t[0].min() == 1.0 and t[1].max() == -1.0
    grid = make_grid([Image.new("RGB", (8, 8))] * 5, cols=3)
    assert grid.size == (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)
