"""LoRA (Hu et al. 2021): layer numerics, scales, composition, fuse, merge, and interop with diffusers' own loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tailor
from tailor.core.lora import LoRA
from tailor.core.lora_math import merge
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import FormatError, IncompatibleError
from tailor.methods.lora import LoRAMethod
from tailor.methods.lora.method import merge_files

PROMPT = "a red star"
GEN = dict(n=1, seed=0, steps=2, guidance=3.0)
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
K2 = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
TE_Q = "text_model.encoder.layers.0.self_attn.q_proj"


def randomize(method: LoRAMethod, seed: int, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.lora.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def attached_random(comps, seed, weight=1.0, **opts) -> tuple[Pipeline, LoRAMethod]:
    m = LoRAMethod(**{"rank": 2, "alpha": 3.0, **opts})
    pipe = Pipeline(comps).attach(m, weight=weight)
    randomize(m, seed)
    return pipe, m


def gen(pipe) -> np.ndarray:
    return pipe.generate(PROMPT, **GEN).array


def diffusers_image(comps) -> np.ndarray:
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", comps.scheduler)
    g = [torch.Generator().manual_seed(0)]
    return pipe([PROMPT], generator=g, num_inference_steps=2, guidance_scale=3.0, output_type="np").images


# --------------------------------------------------------------------- numerics
def test_layer_equals_hand_formula(tiny):
    lora = LoRA("t", {f"unet.{Q}": (2, 3.0), "unet.down_blocks.0.resnets.0.conv1": (3, 1.5)})
    lora.attach(tiny)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lora.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    lora.set_scale(0.7)
    layer = lora.layers[f"unet.{Q}"]
    w, a, b = layer.get_base_layer().weight, layer.lora_A["t"].weight, layer.lora_B["t"].weight
    x = torch.randn(2, 5, w.shape[1], generator=g)
    want = x @ w.T + 0.7 * (3.0 / 2) * (x @ a.T @ b.T)
    assert torch.allclose(layer(x), want, atol=1e-5)
    conv = lora.layers["unet.down_blocks.0.resnets.0.conv1"]
    base = conv.get_base_layer()
    xc = torch.randn(1, base.in_channels, 8, 8, generator=g)
    ca, cb = conv.lora_A["t"].weight, conv.lora_B["t"].weight  # (r, in, 3, 3), (out, r, 1, 1)
    branch = torch.nn.functional.conv2d(torch.nn.functional.conv2d(xc, ca, padding=1), cb)
    assert torch.allclose(conv(xc), base(xc) + 0.7 * (1.5 / 3) * branch, atol=1e-5)
    lora.detach()


def test_dropout_follows_train_mode(tiny):
    lora = LoRA("d", {f"unet.{Q}": (2, 2.0)}, dropout=0.5)
    lora.attach(tiny, trainable=True)
    with torch.no_grad():
        for p in lora.parameters():
            p.fill_(0.5)
    layer, x = lora.layers[f"unet.{Q}"], torch.randn(1, 8, 32)
    for m in lora.modules():
        m.train()
    assert not torch.equal(layer(x), layer(x))  # the trainer's m.train() reaches the dropout
    for m in lora.modules():
        m.eval()
    assert torch.equal(layer(x), layer(x))
    lora.detach()


def test_scale_zero_is_base_exactly_and_detach_restores_bits(tiny):
    reference = {k: v.clone() for k, v in tiny.unet.state_dict().items()}
    base = gen(Pipeline(tiny))
    pipe, m = attached_random(tiny, 1, weight=0.0, train_text_encoder=True, targets=["attention", "ff", "conv"])
    assert np.abs(gen(pipe) - base).max() == 0
    pipe.attachments[0].weight = 1.0
    assert np.abs(gen(pipe) - base).max() > 1e-3
    pipe.detach()
    assert not any("lora" in n for n, _ in tiny.unet.named_modules())
    assert not any("lora" in n for n, _ in tiny.text_encoder.named_modules())
    assert not hasattr(tiny.unet, "peft_config")
    after = tiny.unet.state_dict()
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in reference)
    assert np.abs(gen(Pipeline(tiny)) - base).max() == 0


def test_two_loras_compose_and_equal_fusing_both(tiny):
    pipe, a = attached_random(tiny, 1, weight=0.7)
    only_a = gen(pipe)
    b = LoRAMethod(rank=3, targets=["attention", "ff"])
    pipe.attach(b, weight=0.5)
    randomize(b, 2)
    both = gen(pipe)
    assert np.abs(only_a - both).max() > 1e-3
    a.fuse(0.7)
    b.fuse(0.5)
    fused = gen(pipe)
    assert a.lora.fused and np.abs(fused - both).max() <= 1e-5
    a.unfuse()  # any order: the base weights come back exactly with the last unfuse
    assert np.abs(gen(pipe) - both).max() <= 1e-5
    b.unfuse()
    assert np.abs(gen(pipe) - both).max() == 0
    pipe.detach()
    assert np.abs(gen(Pipeline(tiny)) - gen(Pipeline(tailor.tiny_components()))).max() == 0


def test_merge_concat_is_exact_and_svd_full_rank_matches(tiny, tmp_path):
    pipe, a = attached_random(tiny, 1, weight=0.7)
    b = LoRAMethod(rank=3, alpha=1.0)
    pipe.attach(b, weight=0.4)
    randomize(b, 2)
    both = gen(pipe)
    sa, sb = a.canonical_state(), b.canonical_state()
    pipe.detach()
    cat = merge([sa, sb], [0.7, 0.4])
    assert cat[f"unet.{Q}.lora_A.weight"].shape[0] == 5 and float(cat[f"unet.{Q}.alpha"]) == 5
    for state in (cat, merge([sa, sb], [0.7, 0.4], mode="svd", rank=5)):
        m = LoRAMethod()
        m.load_state_dict(state)
        assert np.abs(gen(Pipeline(tiny).attach(m)) - both).max() <= 1e-5
        m.unpatch()
    # files: merge_files writes a loadable LoRA
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    out = merge_files(
        [tmp_path / "a" / "lora.safetensors", tmp_path / "b" / "lora_kohya.safetensors"],
        tmp_path / "merged.safetensors",
        weights=[0.7, 0.4],
        components=tiny,
    )
    merged = tailor.load(out)
    assert np.abs(gen(Pipeline(tiny).attach(merged)) - both).max() <= 1e-5


# --------------------------------------------------------------------- files and interop
def test_our_file_loads_in_diffusers_with_the_same_image(tmp_path):
    _, m = attached_random(tailor.tiny_components(), 3, train_text_encoder=True)
    m.save(tmp_path)
    ours = gen(Pipeline(tailor.tiny_components()).attach(tailor.load(tmp_path / "lora.safetensors")))
    comps = tailor.tiny_components()
    plain = diffusers_image(comps)
    comps.diffusers_pipeline().load_lora_weights(str(tmp_path / "lora.safetensors"))
    theirs = diffusers_image(comps)
    assert np.abs(theirs - plain).max() > 1e-3  # the LoRA (alpha 3 != rank 2) did something
    assert np.abs(ours - theirs).max() <= 1e-4


def kohya_dict(seed: int = 0, alpha: float | None = 2.0) -> dict[str, torch.Tensor]:
    """A kohya/A1111 file written by hand: rank 4, every module with ``alpha`` (2 -> scale 0.5) or none (= rank)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (din, dout) in {
        "lora_unet_" + Q.replace(".", "_"): (32, 32),
        "lora_unet_" + K2.replace(".", "_"): (64, 64),
        "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0": (32, 32),
        "lora_te_" + TE_Q.replace(".", "_"): (64, 64),
        # diffusers' kohya text-encoder conversion only recognises a file that has an out_proj key
        "lora_te_" + TE_Q.replace(".", "_").replace("q_proj", "out_proj"): (64, 64),
    }.items():
        out[f"{name}.lora_down.weight"] = torch.randn(4, din, generator=g) * 0.3
        out[f"{name}.lora_up.weight"] = torch.randn(dout, 4, generator=g) * 0.3
        if alpha is not None:
            out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


@pytest.mark.parametrize("alpha", [2.0, None])
def test_hand_built_kohya_file_loads_in_ours_and_diffusers_alike(tmp_path, alpha):
    path = tmp_path / "subject.safetensors"
    save_file(kohya_dict(alpha=alpha), str(path), metadata={"ss_network_dim": "4"})
    m = tailor.load(path)  # no tailor metadata: claimed by LoRAMethod.sniff
    assert isinstance(m, LoRAMethod)
    ours = gen(Pipeline(tailor.tiny_components()).attach(m))
    assert float(m.canonical_state()[f"unet.{Q}.alpha"]) == (alpha or 4)
    comps = tailor.tiny_components()
    comps.diffusers_pipeline().load_lora_weights(str(path))
    theirs = diffusers_image(comps)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(ours - gen(Pipeline(tailor.tiny_components()))).max() > 1e-3


def test_kohya_missing_alpha_means_rank_per_module(tmp_path):
    # sd-scripts: a module without .alpha has alpha = rank. (diffusers' loader instead gives such a module the file's
    # most common alpha when other modules have one; we follow kohya.)
    d = kohya_dict(alpha=2.0)
    del d["lora_unet_" + Q.replace(".", "_") + ".alpha"]
    save_file(d, str(tmp_path / "mixed.safetensors"))
    m = tailor.load(tmp_path / "mixed.safetensors")
    Pipeline(tailor.tiny_components()).attach(m)
    state = m.canonical_state()
    assert float(state[f"unet.{Q}.alpha"]) == 4.0 and float(state[f"unet.{K2}.alpha"]) == 2.0
    assert float(state[f"text_encoder.{TE_Q}.alpha"]) == 2.0


def test_our_kohya_file_round_trips_and_peft_files_are_sniffed(tmp_path):
    _, m = attached_random(tailor.tiny_components(), 4, train_text_encoder=True)
    m.save(tmp_path)
    keys = load_file(str(tmp_path / "lora_kohya.safetensors"))
    assert f"lora_unet_{Q.replace('.', '_')}.alpha" in keys and any(k.startswith("lora_te_") for k in keys)
    back = tailor.load(tmp_path / "lora_kohya.safetensors")
    img = gen(Pipeline(tailor.tiny_components()).attach(back))
    state = back.canonical_state()
    want = m.canonical_state()
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)
    assert np.abs(img - gen(Pipeline(tailor.tiny_components()).attach(tailor.load(tmp_path)))).max() == 0
    # a bare peft/diffusers file (no metadata at all): alpha = rank
    bare = {k: v for k, v in load_file(str(tmp_path / "lora.safetensors")).items()}
    save_file(bare, str(tmp_path / "bare.safetensors"))
    plain = tailor.load(tmp_path / "bare.safetensors")
    assert isinstance(plain, LoRAMethod)
    Pipeline(tailor.tiny_components()).attach(plain)
    assert float(plain.canonical_state()[f"unet.{Q}.alpha"]) == 2.0


def test_lora_for_another_base_size_and_truncated_file(tmp_path):
    _, m = attached_random(tailor.tiny_components(cross_attention_dim=32), 5)
    m.save(tmp_path)
    other = tailor.load(tmp_path / "lora.safetensors")
    with pytest.raises(IncompatibleError) as e:
        Pipeline(tailor.tiny_components()).attach(other)
    assert "(2, 32)" in str(e.value) and "(2, 64)" in str(e.value)
    data = (tmp_path / "lora.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        tailor.load(tmp_path / "cut.safetensors")


# --------------------------------------------------------------------- composition in generate
def test_prompt_tags_parse_and_attach(tmp_path):
    from tailor.compose import apply_prompt_tags, parse_prompt_tags
    from tailor.core.surface import parse_weight_spec

    assert parse_prompt_tags("a star <lora:style:0.6>, on grass <lora:sub> <lyco:x:1>") == (
        "a star, on grass <lyco:x:1>",
        [("lora", "style", 0.6), ("lora", "sub", 1.0)],
    )
    assert parse_prompt_tags("a <hypernet:h:0.5> star", ("lora", "hypernet"))[1] == [("hypernet", "h", 0.5)]
    assert parse_weight_spec("C:/x/a.safetensors:0.5", "--lora", None).weight == 0.5
    assert parse_weight_spec("C:/x/a.safetensors:0.5", "--lora", None).path == "C:/x/a.safetensors"
    assert parse_weight_spec("dir/a.safetensors", "--lora", None).scale == 1.0
    _, m = attached_random(tailor.tiny_components(), 6)
    m.save(tmp_path / "loras" / "style")
    (tmp_path / "loras" / "style" / "lora.safetensors").rename(tmp_path / "loras" / "style.safetensors")
    pipe = Pipeline(tailor.tiny_components())
    prompts = apply_prompt_tags(pipe, ["a red star <lora:style:0.6>"], tmp_path / "loras")
    assert prompts == ["a red star"] and pipe.attachments[0].weight == 0.6
    direct = Pipeline(tailor.tiny_components()).attach(
        tailor.load(tmp_path / "loras" / "style.safetensors"), weight=0.6
    )
    assert np.abs(gen(pipe) - gen(direct)).max() == 0
    with pytest.raises(tailor.errors.InputError, match="no lora named 'nope'"):
        apply_prompt_tags(Pipeline(tailor.tiny_components()), ["x <lora:nope:1>"], tmp_path / "loras")
    with pytest.raises(tailor.errors.ConfigError, match="--lora-dir"):
        apply_prompt_tags(Pipeline(tailor.tiny_components()), ["x <lora:style>"], None)


def test_generate_flags_compose_and_check_kinds(tmp_path):
    import json

    from tailor.cli.generate import generate
    from tailor.compose.tags import find_by_name as find_embeddings
    from tailor.core.io import save_tensors

    _, m = attached_random(tailor.tiny_components(), 7)
    m.save(tmp_path / "a")
    kw = dict(base="tiny", n=1, steps=2, guidance=3.0, seed=0)
    generate(
        prompt=[PROMPT + " <lora:lora:0.5>"],
        lora=[f"{tmp_path / 'a' / 'lora_kohya.safetensors'}:0.8"],
        lora_dir=tmp_path / "a",
        out=tmp_path / "out",
        **kw,
    )
    info = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert info["images"][0]["prompt"] == PROMPT
    assert [(x["method"], x["weight"]) for x in info["settings"]["methods"]] == [("lora", 0.8), ("lora", 0.5)]
    other = tmp_path / "finetune.safetensors"
    save_tensors(other, {}, {"format": "tailor", "method": "finetune", "config": {}, "base": ""})
    with pytest.raises(IncompatibleError, match="is a finetune file, not a lora file; pass it with --apply"):
        generate(prompt=[PROMPT], lora=[str(other)], out=tmp_path / "bad", **kw)
    with pytest.raises(IncompatibleError, match="not a textual_inversion file; pass it with --lora"):
        generate(prompt=[PROMPT], embedding=[str(tmp_path / "a" / "lora.safetensors")], out=tmp_path / "bad", **kw)
    (tmp_path / "emb").mkdir()
    for name in ("cat-toy", "cat", "style_x"):
        (tmp_path / "emb" / f"{name}.pt").write_bytes(b"")
    assert [p.stem for p in find_embeddings(["a cat-toy on a table, style_x"], tmp_path / "emb")] == [
        "cat-toy",
        "style_x",
    ]


def test_embedding_dir_loads_an_embedding_named_by_its_file(tmp_path):
    from safetensors.torch import save_file as save

    from tailor.compose import apply_name_matches
    from tailor.core.method import registry

    if "textual_inversion" not in registry():
        pytest.skip("the textual_inversion method is not registered")
    (tmp_path / "emb").mkdir()
    save(
        {"emb_params": torch.randn(1, 64, generator=torch.Generator().manual_seed(0))},
        str(tmp_path / "emb" / "mytok.safetensors"),
    )  # A1111 embedding: the token is the file name
    pipe = Pipeline(tailor.tiny_components())
    found = apply_name_matches(pipe, ["a mytok star"], {"--embedding": tmp_path / "emb"})
    assert [p.name for p in found] == ["mytok.safetensors"]
    assert [a.method.name for a in pipe.attachments] == ["textual_inversion"]
    with_emb = pipe.generate("a mytok star", **GEN).array
    pipe.detach()
    assert np.abs(with_emb - Pipeline(tailor.tiny_components()).generate("a mytok star", **GEN).array).max() > 1e-4


def test_sdxl_two_text_encoders_round_trip_and_load_in_diffusers(tmp_path):
    comps = tailor.tiny_components(sdxl=True)
    _, m = attached_random(comps, 8, train_text_encoder=True)
    ours = Pipeline(comps).generate(PROMPT, **GEN).array  # the attachment stays on the base
    m.save(tmp_path)
    assert {k.split(".")[0] for k in m.canonical_state()} == {"unet", "text_encoder", "text_encoder_2"}
    keys = load_file(str(tmp_path / "lora_kohya.safetensors"))
    assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    back = tailor.load(tmp_path / "lora_kohya.safetensors")
    assert (
        np.abs(Pipeline(tailor.tiny_components(sdxl=True)).attach(back).generate(PROMPT, **GEN).array - ours).max()
        == 0
    )
    fresh = tailor.tiny_components(sdxl=True)
    pipe = fresh.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", fresh.scheduler)
    pipe.load_lora_weights(str(tmp_path / "lora.safetensors"))
    g = [torch.Generator().manual_seed(0)]
    theirs = pipe([PROMPT], generator=g, num_inference_steps=2, guidance_scale=3.0, output_type="np").images
    assert np.abs(theirs - ours).max() <= 1e-4


def test_a_layer_with_no_active_adapter_runs_its_base_layer_only(tiny):
    import copy

    pipe, m = attached_random(tiny, 1, weight=0.7)
    key, layer = next(iter(m.lora.layers.items()))
    name = m.lora.name
    calls = []
    hook = layer.lora_A[name].register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 5, layer.get_base_layer().in_features)
    with torch.no_grad():
        active = layer(x)
        assert calls and "forward" not in layer.__dict__
        m.fuse()
        calls.clear()
        fused = layer(x)
        assert not calls and "forward" in layer.__dict__
        assert torch.allclose(fused, active, atol=1e-5)
        assert torch.equal(fused, layer.get_base_layer()(x))
        twin = copy.deepcopy(layer)  # the bypass follows the copy, not the original
        assert twin.forward.__self__ is twin
        twin.get_base_layer().weight.zero_()
        assert twin(x).abs().max() == 0 and torch.equal(layer(x), fused) and not calls
        layer.set_adapter([name])  # an adapter switched on behind tailor's back (e.g. another loader): peft's path
        assert torch.allclose(layer(x), fused, atol=1e-6) and calls  # its scaling is 0 while fused
        layer.set_adapter([])
        m.unfuse()
        calls.clear()
        assert torch.allclose(layer(x), active, atol=1e-6) and calls and "forward" not in layer.__dict__
    assert not any(k.startswith("forward") for k in layer.state_dict())
    hook.remove()
    pipe.detach()
