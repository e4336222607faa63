"""IP-Adapter / IP-Adapter-Plus (Ye et al. 2023): numerics against diffusers' own processor, projections and loader;
several adapters, per-block scales, training, drop draws, files and bad inputs — all on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.attention import DecoupledAttnProcessor
from tailor.core.components import tiny_components, tiny_image_encoder
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, IncompatibleError, InputError
from tailor.methods.ip_adapter import IPAdapterMethod, formats
from tailor.methods.ip_adapter.modules import DROP_BOTH, DROP_IMAGE, DROP_TEXT, NO_DROP, drop_code

PROMPT = "a photo of a red star"


def ref_image(seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 255, (36, 44, 3), dtype=np.uint8))


def adapter(comps, plus=False, seed=0, **kw) -> IPAdapterMethod:
    """An attached-and-detached adapter with random (non-trivial) weights."""
    m = IPAdapterMethod(image_encoder="tiny", plus=plus, **kw)
    m.patch(comps)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(m.proj.parameters()) + list(m.branch.parameters()):
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    m.unpatch()
    return m


def ours(comps, pairs, seed=3, steps=3, guidance=5.0):
    pipe = Pipeline(comps)
    for m, img, w in pairs:
        pipe.attach(m, weight=w, ip_image=img)
    out = pipe.generate(PROMPT, n=1, seed=seed, steps=steps, guidance=guidance).array
    pipe.detach()
    return out


def diffusers_run(comps, folders, images, scale, seed=3, steps=3, guidance=5.0):
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", comps.scheduler)
    names = ["ip_adapter.safetensors"] * len(folders)
    pipe.load_ip_adapter(
        [str(f) for f in folders], subfolder="", weight_name=names, image_encoder_folder="image_encoder"
    )
    pipe.set_ip_adapter_scale(scale)
    out = pipe(PROMPT, generator=[torch.Generator().manual_seed(seed)], num_inference_steps=steps,
               guidance_scale=guidance, ip_adapter_image=images, output_type="np").images  # fmt: skip
    pipe.unload_ip_adapter()
    return out


def save_with_encoder(m, folder):
    m.save(folder)
    tiny_image_encoder().save_pretrained(folder / "image_encoder")
    return folder


# --------------------------------------------------------------------- numerics vs diffusers
def test_processor_matches_diffusers_ip_adapter_processor():
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    comps = tiny_components()
    a, b = adapter(comps, seed=1), adapter(comps, plus=True, seed=2)
    for m in (a, b):
        m.patch(comps)
    name = a.branch.layer_names[0]
    attn = comps.unet.get_submodule(name.removesuffix(".processor"))
    assert isinstance(attn.processor, DecoupledAttnProcessor)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    text = torch.randn(2, 7, 64, generator=g)
    a.branch.tokens, b.branch.tokens = torch.randn(2, 4, 64, generator=g), torch.randn(2, 16, 64, generator=g)
    a.branch.scale, b.branch.scale = 0.7, 0.3
    with torch.no_grad():
        got = attn(hidden, encoder_hidden_states=text)
        ref_proc = IPAdapterAttnProcessor2_0(attn.to_q.in_features, 64, num_tokens=[4, 16], scale=[0.7, 0.3])
        ref_proc.load_state_dict({f"{kind}.{i}.weight": getattr(m.branch, kind)[0].weight
                                  for i, m in enumerate((a, b)) for kind in ("to_k_ip", "to_v_ip")})  # fmt: skip
        base = attn.processor
        attn.set_processor(ref_proc)
        want = attn(hidden, encoder_hidden_states=(text, [a.branch.tokens, b.branch.tokens]))
        attn.set_processor(base)
    assert torch.equal(got, want)


@pytest.mark.parametrize("plus", [False, True])
def test_projection_file_loads_into_diffusers_modules(plus, tmp_path):
    comps = tiny_components()
    m = adapter(comps, plus=plus)
    m.patch(comps)
    proj, _ = formats.split(m.state_dict())
    theirs = comps.unet._convert_ip_adapter_image_proj_to_diffusers(proj, low_cpu_mem_usage=False)
    x = torch.randn(2, 5, 64) if plus else torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(m.proj(x), theirs(x))
    name = "IPAdapterPlusImageProjection" if plus else "ImageProjection"
    assert type(theirs).__name__ == name


@pytest.mark.parametrize("plus, sdxl", [(False, False), (True, False), (True, True)])
def test_diffusers_loader_gives_the_same_image(plus, sdxl, tmp_path):
    comps = tiny_components(sdxl=sdxl)
    m, img = adapter(comps, plus=plus), ref_image(0)
    mine = ours(comps, [(m, img, 0.8)])
    folder = save_with_encoder(m, tmp_path / "ipa")
    theirs = diffusers_run(comps, [folder], img, 0.8)
    assert np.abs(mine - theirs).max() <= 1e-4
    assert np.abs(mine - Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array).max() > 1e-3


def test_two_adapters_at_once_match_diffusers(tmp_path):
    comps = tiny_components()
    a, b = adapter(comps, seed=1), adapter(comps, plus=True, seed=2)
    ia, ib = ref_image(1), ref_image(2)
    mine = ours(comps, [(a, ia, 0.7), (b, ib, 0.3)])
    folders = [save_with_encoder(a, tmp_path / "a"), save_with_encoder(b, tmp_path / "b")]
    theirs = diffusers_run(comps, folders, [ia, ib], [0.7, 0.3])
    assert np.abs(mine - theirs).max() <= 1e-4
    only_a = ours(comps, [(a, ia, 0.7)])
    assert np.abs(mine - only_a).max() > 1e-3


def test_per_block_scale_matches_diffusers_instantstyle(tmp_path):
    comps = tiny_components()
    m, img = adapter(comps), ref_image(0)
    spec = {"up": {"block_1": [0.0, 1.0]}}
    m.set_block_scales(spec)
    m.patch(comps)
    assert m.branch.layer_scales == [0.0, 0.0, 1.0, 0.0]  # down.0, up.1.0, up.1.1, mid (attn_processors order)
    m.unpatch()
    mine = ours(comps, [(m, img, 1.0)])
    theirs = diffusers_run(comps, [save_with_encoder(m, tmp_path / "ipa")], img, spec)
    assert np.abs(mine - theirs).max() <= 1e-4
    m.set_block_scales([0.0, 0.0, 0.0, 0.0])
    assert (
        np.abs(
            ours(comps, [(m, img, 1.0)]) - Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array
        ).max()
        == 0
    )


def test_scale_zero_is_the_base_and_detach_restores_processors():
    comps = tiny_components()
    before = dict(comps.unet.attn_processors)
    base = Pipeline(comps).generate(PROMPT, n=1, seed=3, steps=3, guidance=5.0).array
    m = adapter(comps)
    assert np.abs(ours(comps, [(m, ref_image(0), 0.0)]) - base).max() == 0
    assert all(comps.unet.attn_processors[k] is p for k, p in before.items())
    m.patch(comps)
    procs = comps.unet.attn_processors
    assert [k for k, p in procs.items() if isinstance(p, DecoupledAttnProcessor)] == m.branch.layer_names
    assert all(k.endswith("attn2.processor") for k in m.branch.layer_names)
    assert all(procs[k] is p for k, p in before.items() if k.endswith("attn1.processor"))
    m.unpatch()
    assert all(comps.unet.attn_processors[k] is p for k, p in before.items())


def test_embedding_cache_skips_the_encoder(monkeypatch):
    comps = tiny_components()
    m = adapter(comps)
    calls = []
    import tailor.methods.ip_adapter.method as mod

    real = mod.encode_pixels
    monkeypatch.setattr(mod, "encode_pixels", lambda *a: calls.append(1) or real(*a))
    first = ours(comps, [(m, ref_image(0), 1.0)], steps=1)
    n = len(calls)
    again = ours(comps, [(m, ref_image(0), 1.0)], steps=1)
    assert n >= 1 and len(calls) == n and np.abs(first - again).max() == 0


# --------------------------------------------------------------------- training
def test_training_step_changes_only_the_adapter(tmp_path):
    from tailor.core.training import TrainConfig, train

    comps = tiny_components()
    unet = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    m = IPAdapterMethod(image_encoder="tiny", plus=True)
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), steps=1, batch_size=2, resolution=32, lr=1e-3)
    m.patch(comps)
    start = {k: v.clone() for k, v in m.state_dict().items()}
    enc = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    train(m, cfg, components=comps)
    assert all(torch.equal(v, comps.unet.state_dict()[k]) for k, v in unet.items())
    assert all(torch.equal(v, m.encoder.state_dict()[k]) for k, v in enc.items())
    after = m.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in start.items() if k.startswith("image_proj."))
    assert any(not torch.equal(v, after[k]) for k, v in start.items() if k.startswith("ip_adapter."))
    assert not any(p.requires_grad for p in comps.unet.parameters())


def test_drop_draws_and_their_effect():
    codes = [drop_code(0, p, 0.1, 0.2, 0.3) for p in range(4000)]
    freq = {c: codes.count(c) / len(codes) for c in (NO_DROP, DROP_IMAGE, DROP_TEXT, DROP_BOTH)}
    assert abs(freq[DROP_IMAGE] - 0.2) < 0.03 and abs(freq[DROP_TEXT] - 0.1) < 0.03
    assert abs(freq[DROP_BOTH] - 0.3) < 0.03 and abs(freq[NO_DROP] - 0.4) < 0.03
    assert codes == [drop_code(0, p, 0.1, 0.2, 0.3) for p in range(4000)]  # a pure function of (seed, position)

    from tailor.core.prompts import encode_prompts

    comps = tiny_components()
    m = adapter(comps)
    m.patch(comps)
    cond = encode_prompts(comps, ["a star"] * 4, cfg=False)
    px = torch.rand(4, 3, 32, 32) * 2 - 1
    codes = [NO_DROP, DROP_IMAGE, DROP_TEXT, DROP_BOTH]
    with torch.no_grad():
        out = m.encode(cond, {"pixel_values": px, "caption": ["a star"] * 4, "ip_drop": codes})
        zero_tokens = m.proj(torch.zeros(1, 64))[0]
        empty = encode_prompts(comps, [""], cfg=False).encoder_hidden_states[0]
    tok, hid = m.branch.tokens, out.encoder_hidden_states
    assert torch.allclose(tok[1], zero_tokens) and torch.allclose(tok[3], zero_tokens)
    assert not torch.allclose(tok[0], zero_tokens) and not torch.allclose(tok[2], zero_tokens)
    assert torch.equal(hid[0], cond.encoder_hidden_states[0]) and torch.equal(hid[1], cond.encoder_hidden_states[1])
    assert torch.equal(hid[2], empty) and torch.equal(hid[3], empty)
    m.unpatch()


# --------------------------------------------------------------------- files
def test_official_bin_and_plain_safetensors_load(tmp_path):
    from safetensors.torch import save_file

    comps = tiny_components()
    m, img = adapter(comps, plus=True), ref_image(0)
    want = ours(comps, [(m, img, 1.0)])
    m.patch(comps)
    proj, ip = formats.split(m.state_dict())
    m.unpatch()
    torch.save({"image_proj": proj, "ip_adapter": ip}, tmp_path / "ip-adapter-plus.bin")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "official.safetensors"))
    for name in ("ip-adapter-plus.bin", "official.safetensors"):
        loaded = tailor.load(tmp_path / name)
        assert isinstance(loaded, IPAdapterMethod) and loaded.config.plus and loaded.config.tokens == 16
        loaded = IPAdapterMethod.from_file(tmp_path / name, image_encoder="tiny")
        assert np.abs(ours(comps, [(loaded, img, 1.0)]) - want).max() == 0


# --------------------------------------------------------------------- bad input
def test_bad_inputs(tmp_path):
    comps = tiny_components()
    m = adapter(comps)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(InputError, match="notes.png"):
        ours(comps, [(m, str(not_image), 1.0)], steps=1)
    with pytest.raises(ConfigError, match=r"\[0, 5\]"):
        ours(comps, [(m, ref_image(0), 6.0)], steps=1)
    with pytest.raises(ConfigError, match="scale"):
        IPAdapterMethod(image_encoder="tiny", scale=-1.0)
    path = m.save(tmp_path / "ipa")

    other = tiny_components(cross_attention_dim=32)
    with pytest.raises(IncompatibleError, match=r"64.*32"):
        Pipeline(other).attach(tailor.load(path), ip_image=ref_image(0))
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32,
                                                         intermediate_size=64, num_attention_heads=4,
                                                         num_hidden_layers=1, projection_dim=48))  # fmt: skip
    enc.save_pretrained(tmp_path / "enc48")
    with pytest.raises(IncompatibleError, match=r"64.*48"):
        Pipeline(tiny_components()).attach(IPAdapterMethod.from_file(path, image_encoder=str(tmp_path / "enc48")))


def test_cli_generate_pairs_adapters_and_images(tmp_path, capsys):
    from tailor.cli import main
    from tailor.compose import generate_flags
    from tailor.compose.flags import _pending_refs
    from tailor.core.surface import WeightSpec, parse_weight_spec

    flag = generate_flags()["--ip-adapter"]
    assert parse_weight_spec("b=x.png+y.png:0.5", "--ip-adapter", "=", 5.0) == WeightSpec("b", ("x.png", "y.png"), 0.5)
    assert _pending_refs(flag, ["a", "b=x.png"], {"--ip-image": ["i.png:0.3"]}) == ["i.png:0.3"]
    with pytest.raises(ConfigError):
        _pending_refs(flag, ["a", "b"], {"--ip-image": ["i.png"]})
    with pytest.raises(ConfigError):
        parse_weight_spec("a=i.png:9", "--ip-adapter", "=", 5.0)
    comps = tiny_components()
    path = adapter(comps).save(tmp_path / "ipa")
    ref_image(0).save(tmp_path / "ref.png")
    out = tmp_path / "gen"
    code = main(["generate", "--base", "tiny", "-p", PROMPT, "-n", "1", "--steps", "1", "--out", str(out),
                 "--ip-adapter", str(path), "--ip-image", f"{tmp_path / 'ref.png'}:0.5"])  # fmt: skip
    assert code == 0 and (out / "000.png").is_file()
    code = main(["generate", "--base", "tiny", "-p", PROMPT, "-n", "1", "--steps", "1", "--out", str(out),
                 "--ip-adapter", str(path), "--ip-image", str(tmp_path / "missing.png")])  # fmt: skip
    assert code == 2 and "missing.png" in capsys.readouterr().err


def test_cli_train_plus_through_generated_flags(tmp_path):
    from tailor.cli import main

    out = tmp_path / "run"
    code = main(["train", "ip_adapter", "--plus", "--image-encoder", "tiny", "--base", "tiny", "--steps", "1",
                 "--batch-size", "1", "--resolution", "32", "--out", str(out)])  # fmt: skip
    assert code == 0
    loaded = tailor.load(out)
    assert isinstance(loaded, IPAdapterMethod) and loaded.config.plus and loaded.config.image_encoder == "tiny"
    assert any(k.startswith("image_proj.latents") for k in loaded.state_dict())
