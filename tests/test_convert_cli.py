"""``tailor convert lora|embedding`` and ``tailor lora merge|fuse``: the files they write load in the ecosystem's own
loaders (diffusers) and give the images of the inputs they came from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tailor
from tailor.cli import main
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.methods.lora import LoRAMethod
from tailor.methods.textual_inversion import TextualInversionMethod as TI

PROMPT = "a red star"
GEN = dict(n=1, seed=0, steps=2, guidance=3.0)


def random_lora(comps, seed: int, rank: int = 2, alpha: float = 3.0) -> LoRAMethod:
    m = LoRAMethod(rank=rank, alpha=alpha, train_text_encoder=True)
    Pipeline(comps).attach(m)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.lora.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


def ours(*methods, weights=None) -> np.ndarray:
    pipe = Pipeline(tailor.tiny_components())
    for m, w in zip(methods, weights or [1.0] * len(methods)):
        pipe.attach(m, weight=w)
    return pipe.generate(PROMPT, **GEN).array


def diffusers_image(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler)
    g = [torch.Generator().manual_seed(0)]
    return pipe([PROMPT], generator=g, num_inference_steps=2, guidance_scale=3.0, output_type="np").images


def cli(*args) -> int:
    return main([str(a) for a in args])


def test_convert_lora_both_ways_loads_in_diffusers(tmp_path):
    src = random_lora(tailor.tiny_components(), 1)
    src.save(tmp_path / "train")
    want = ours(tailor.load(tmp_path / "train" / "lora.safetensors"))
    to_kohya = ["convert", "lora", tmp_path / "train", tmp_path / "k.safetensors", "--to", "kohya"]
    assert cli(*to_kohya, "--base", "tiny") == 0
    keys = list(load_file(str(tmp_path / "k.safetensors")))
    assert keys and all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert any(k.endswith(".alpha") for k in keys)
    comps = tailor.tiny_components()
    pipe = comps.diffusers_pipeline()
    pipe.load_lora_weights(str(tmp_path / "k.safetensors"))
    assert np.abs(diffusers_image(pipe) - want).max() <= 1e-4
    # and back: kohya -> diffusers needs the base to resolve the underscored names
    k2d = ["convert", "lora", tmp_path / "k.safetensors", tmp_path / "d.safetensors", "--to", "diffusers"]
    assert cli(*k2d, "--base", "tiny") == 0
    assert np.abs(ours(tailor.load(tmp_path / "d.safetensors")) - want).max() <= 1e-5
    pipe = tailor.tiny_components().diffusers_pipeline()
    pipe.load_lora_weights(str(tmp_path / "d.safetensors"))
    assert np.abs(diffusers_image(pipe) - want).max() <= 1e-4


def test_convert_lora_bad_target_and_missing_file(tmp_path, capsys):
    assert cli("convert", "lora", tmp_path / "none.safetensors", tmp_path / "o.safetensors", "--to", "kohya") == 2
    assert "does not exist" in capsys.readouterr().err
    random_lora(tailor.tiny_components(), 2).save(tmp_path / "a")
    assert cli("convert", "lora", tmp_path / "a", tmp_path / "o.safetensors", "--to", "a1111") == 2
    assert "use kohya or diffusers" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_convert_embedding_to_a1111_and_diffusers(tmp_path):
    comps = tailor.tiny_components()
    method = TI(token="<cat-toy>", init_word="cat", num_vectors=2)
    method.patch(comps)
    with torch.no_grad():
        method.vectors["clip_l"].normal_()
    expected = method.vectors["clip_l"].detach().clone()
    method.save(tmp_path / "train")
    method.unpatch()
    assert cli("convert", "embedding", tmp_path / "train", tmp_path / "toy.pt", "--to", "a1111") == 0
    raw = torch.load(tmp_path / "toy.pt", weights_only=True)
    assert torch.equal(raw["string_to_param"]["*"], expected)
    a1111 = tailor.load(tmp_path / "toy.pt")
    assert a1111.config.token == "toy"  # A1111: the token is the file name
    assert cli("convert", "embedding", tmp_path / "toy.pt", tmp_path / "le.safetensors", "--to", "diffusers") == 0
    assert torch.equal(load_file(str(tmp_path / "le.safetensors"))["toy"], expected)
    pipe = tailor.tiny_components().diffusers_pipeline()
    pipe.load_textual_inversion(str(tmp_path / "le.safetensors"))
    assert "toy" in pipe.tokenizer.get_vocab() or "toy</w>" in pipe.tokenizer.get_vocab()


def test_lora_merge_cli_equals_both_attached(tmp_path):
    a, b = random_lora(tailor.tiny_components(), 3), random_lora(tailor.tiny_components(), 4, rank=3, alpha=1.0)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    la, lb = tailor.load(tmp_path / "a" / "lora.safetensors"), tailor.load(tmp_path / "b" / "lora.safetensors")
    both = ours(la, lb, weights=[0.7, 0.4])
    merged = tmp_path / "m.safetensors"
    kohya_b = tmp_path / "b" / "lora_kohya.safetensors"
    weights = ["--weight", 0.7, "--weight", 0.4]
    assert cli("lora", "merge", tmp_path / "a", kohya_b, *weights, "--out", merged, "--base", "tiny") == 0
    assert np.abs(ours(tailor.load(merged)) - both).max() <= 1e-5
    one_weight = ["--weight", 1.0, "--out", tmp_path / "x.safetensors"]
    assert cli("lora", "merge", tmp_path / "a", tmp_path / "b", *one_weight) == 2


@pytest.mark.parametrize("weight", [1.0, 0.6])
def test_lora_fuse_saves_a_plain_diffusers_folder(tmp_path, weight):
    from diffusers import StableDiffusionPipeline

    random_lora(tailor.tiny_components(), 5).save(tmp_path / "a")
    want = ours(tailor.load(tmp_path / "a" / "lora.safetensors"), weights=[weight])
    assert cli("lora", "fuse", f"{tmp_path / 'a'}:{weight}", "--base", "tiny", "--out", tmp_path / "fused") == 0
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "fused"), safety_checker=None)
    unet_keys = set(pipe.unet.state_dict())
    assert not any("lora" in k or "base_layer" in k for k in unet_keys)
    assert np.abs(diffusers_image(pipe) - want).max() <= 1e-4
    assert np.abs(ours() - want).max() > 1e-3, "the LoRA must matter"
