"""A pickle that runs code on load (``__reduce__``) is refused by every loader that accepts pickles, and its marker
file never appears: ``tailor.load``, each registered method's ``from_file`` / ``sniff``, the format readers (TI
``.pt``, hypernetwork ``.pt``, LoRA ``.bin/.pt``, IP-Adapter ``.bin``), a single-file ``.ckpt`` base, a training
checkpoint's ``optimizer.pt`` on resume, and the CLI commands that take weight files.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

import tailor
from tailor.cli import main as cli
from tailor.core.io import PICKLE_SUFFIXES, load_tensors, safe_torch_load
from tailor.core.method import registry
from tailor.errors import FormatError, TailorError, UnsafeFileError


class Payload:
    """Unpickling this touches ``marker``: stands in for any code an attacker would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _raw(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _zip(path: Path, obj) -> None:
    torch.save(obj, path)  # torch's zip container, the format of real .pt/.ckpt files


# payloads dressed as the files each loader expects, so the loader gets as far as unpickling
SHAPES = {
    "bare": lambda p: p,
    "ti_a1111": lambda p: {"string_to_param": {"*": p}, "name": "x", "step": 0},
    "hypernetwork": lambda p: {768: [p, p], "name": "x", "activation_func": "linear"},
    "lora": lambda p: {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": p},
    "ip_adapter": lambda p: {"image_proj": {"proj.weight": p}, "ip_adapter": {"1.to_k_ip.weight": p}},
    "ckpt": lambda p: {"state_dict": {"model.diffusion_model.conv_in.weight": p}},
}


def payload_files(tmp: Path) -> list[Path]:
    files = []
    for writer in (_raw, _zip):
        for shape, make in SHAPES.items():
            for suffix in sorted(PICKLE_SUFFIXES):
                f = tmp / f"{shape}-{writer.__name__[1:]}{suffix}"
                writer(f, make(Payload(tmp / "pwned")))
                files.append(f)
    return files


@pytest.fixture
def evil(tmp_path):
    files = payload_files(tmp_path)
    yield files
    assert not (tmp_path / "pwned").exists(), "a pickle payload ran"


def test_the_payload_is_live(tmp_path):
    """Control: the same files do run code under a plain ``torch.load`` (so the refusals below have teeth)."""
    f = payload_files(tmp_path)[-1]
    torch.load(f, weights_only=False)
    assert (tmp_path / "pwned").exists()


def _refused(fn, path, unpickles: bool = True) -> None:
    """``fn(path)`` refuses with a TailorError naming the file (UnsafeFileError for loaders that read pickles;
    loaders of safetensors only may call it unreadable), or a sniffer answers False."""
    try:
        out = fn(path)
    except TailorError as e:
        assert isinstance(e, UnsafeFileError) or not unpickles, f"{fn} on {path.name}: {type(e).__name__}: {e}"
        assert path.name in str(e), f"the message does not name the file: {e}"
        return
    assert out is False, f"{fn} accepted {path.name}"


def test_core_loaders_refuse(evil):
    for f in evil:
        for fn in (load_tensors, safe_torch_load):
            _refused(fn, f)
        _refused(tailor.load, f, unpickles=False)  # may refuse by sniffing before it unpickles


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_method_refuses(name, evil):
    method = registry()[name].method
    for f in evil:
        _refused(method.from_file, f, unpickles=False)
        sniff = getattr(method, "sniff", None)
        if sniff is not None:
            _refused(lambda p, s=sniff: s(p, {}), f, unpickles=False)


def test_format_readers_refuse(evil):
    from tailor.methods.hypernetwork import formats as hn
    from tailor.methods.ip_adapter import formats as ip
    from tailor.methods.lora import formats as lora
    from tailor.methods.textual_inversion import formats as ti

    for f in evil:
        for fn in (ti.read, hn.read, ip.read, lora.read_file):
            _refused(fn, f)
        for fn in (ti.sniff, hn.sniff, ip.sniff):
            _refused(lambda p, s=fn: s(p, {}), f)


def test_single_file_base_refuses(evil, tmp_path):
    config = tmp_path / "tiny-config"
    tailor.tiny_components().save_pipeline(config)
    for f in evil:
        if f.suffix == ".ckpt":
            with pytest.raises(UnsafeFileError, match=f.name):
                tailor.load_components(f, config=config)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, good)
    with pytest.raises(FormatError, match="good.ckpt") as e:  # passes the safety check, fails later as no model
        tailor.load_components(good, config=config)
    assert not isinstance(e.value, UnsafeFileError)


def test_resume_refuses_a_poisoned_checkpoint(evil, tmp_path):
    from tailor.core.training.checkpoint import find_resume, load_checkpoint

    out = tmp_path / "run"
    tailor.train(
        registry()["lora"].method(rank=1), tailor.TrainConfig(base="tiny", out=str(out), steps=1, batch_size=1,
                                                              resolution=32, data="world"), tailor.tiny_components()
    )  # fmt: skip
    ckpt = out / "checkpoints" / "step-000001"
    assert load_checkpoint(ckpt).step == 1
    (ckpt / "optimizer.pt").write_bytes(evil[0].read_bytes())
    with pytest.raises(FormatError, match="optimizer.pt"):
        load_checkpoint(ckpt)
    with pytest.raises(TailorError, match="nothing to resume"):
        find_resume(out, "latest")


def test_cli_refuses(evil, tmp_path, capsys):
    picks = [f for f in evil if f.name.startswith(("bare-zip", "lora-raw"))]
    for f in picks:
        out = tmp_path / f"out-{f.stem}"
        commands = [
            ["generate", "--base", "tiny", "--apply", str(f), "-p", "x", "-n", "1", "--steps", "1", "--out", str(out)],
            ["convert", "lora", str(f), str(out / "x.safetensors"), "--to", "diffusers"],
            ["convert", "embedding", str(f), str(out / "x.safetensors"), "--to", "diffusers"],
            ["lora", "merge", str(f), str(f), "--out", str(out / "m.safetensors")],
        ]
        for argv in commands:
            assert cli(argv) == 2, argv
            assert f.name in capsys.readouterr().err
            assert not out.exists(), f"{argv} left {out}"
