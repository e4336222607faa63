"""AnyText (Tuo et al. 2023): glyph layout against the world renderer, the packed condition, the official module
shapes and key layout, the placeholder embedding, the OCR perceptual loss, generation inputs and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import ConfigError, FormatError, InputError
from tailor.methods.anytext import formats
from tailor.methods.anytext.glyphs import (
    LINE_H,
    LINE_W,
    TextLine,
    glyph_image,
    line_image,
    lines_of_attrs,
    parse_lines,
    placeholder_prompt,
    position_mask,
)
from tailor.methods.anytext.method import AnyTextMethod
from tailor.methods.anytext.modules import AuxiliaryLatent, crop_lines, pack

PROMPT = 'a sign that says "AB"'
INPUTS = {"text": "AB", "text_box": ["1,1,31,15"]}


def _method(comps=None, **kw):
    comps = comps or tailor.tiny_components()
    m = AnyTextMethod(recognizer="random", **kw)
    torch.manual_seed(0)
    m.patch(comps)
    return m, comps


def _generate(comps, method, prompt=PROMPT, **inputs):
    pipe = Pipeline(comps).attach(method, **(inputs or INPUTS))
    out = pipe.generate(prompt, n=1, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    return out


# --------------------------------------------------------------------- glyphs
def test_glyph_image_redraws_the_world_render_from_its_polygon():
    from tailor.world.glyphs import render_glyph

    for seed in range(6):
        s = render_glyph(seed, size=64)
        lines = lines_of_attrs(s.attrs)
        mine = glyph_image(lines, 64, 64, scale=1)
        world = s.extras["glyphs"] / 255.0
        inter = np.minimum(mine, world).sum() / np.maximum(mine, world).sum()
        assert inter > 0.9, (seed, s.attrs["text"], inter)
        pos = position_mask(lines, 64, 64)
        assert (world[pos == 0] < 0.5).all()  # every ink pixel lies inside the line's frame
        big = glyph_image(lines, 64, 64, scale=2)
        assert big.shape == (128, 128) and abs(big.mean() - mine.mean()) < 0.25 * mine.mean()


def test_line_image_and_crop_are_the_same_frame():
    img = line_image("CAT")
    assert img.shape == (LINE_H, LINE_W) and img.max() == pytest.approx(1.0)
    # an axis-aligned frame of exactly LINE_W x LINE_H pixels: the crop is the image slice itself
    x = torch.rand(2, 3, 40, 120)
    a, b = 6.5, 4.5  # pixel edges (centres at integers): the frame covers pixels 7.. and 5..
    poly = torch.tensor([[[a, b], [a + LINE_W, b], [a + LINE_W, b + LINE_H], [a, b + LINE_H]]])
    crop = crop_lines(x.requires_grad_(), poly, torch.tensor([1]))
    assert torch.allclose(crop[0], x[1, :, 5 : 5 + LINE_H, 7 : 7 + LINE_W], atol=1e-5)
    crop.sum().backward()
    assert x.grad[1, :, 5 : 5 + LINE_H, 7 : 7 + LINE_W].abs().min() > 0 and x.grad[0].abs().max() == 0


def test_pack_unpacks_exactly_and_stems_reach_the_latent_size():
    aux = AuxiliaryLatent(vae_factor=4, latent_channels=4, out_channels=32, glyph_scale=2)
    g, p, lat = torch.rand(2, 1, 128, 128), (torch.rand(2, 1, 64, 64) > 0.5).float(), torch.randn(2, 4, 16, 16)
    packed = pack(g, p, lat, 4, 2)
    a, b, c = aux.unpack(packed)
    assert torch.equal(a, g) and torch.equal(b, p) and torch.equal(c, lat)
    assert aux.glyph_block(g).shape[-2:] == (16, 16) and aux.position_block(p).shape[-2:] == (16, 16)
    assert aux(packed).abs().max() == 0  # zero-initialised fuse conv


def test_sd15_modules_match_the_official_shapes():
    """AnyText on SD1.5 (8x VAE, 320 first width): the official glyph/position/fuse/proj tensors."""
    aux = AuxiliaryLatent(vae_factor=8, latent_channels=4, out_channels=320, glyph_scale=2)
    shapes = {f"control_model.{k}": tuple(v.shape) for k, v in aux.state_dict().items()}
    assert shapes["control_model.glyph_block.0.weight"] == (8, 1, 3, 3)
    assert shapes["control_model.glyph_block.14.weight"] == (96, 96, 3, 3)
    assert shapes["control_model.glyph_block.16.weight"] == (256, 96, 3, 3)
    assert shapes["control_model.position_block.12.weight"] == (64, 32, 3, 3)
    assert shapes["control_model.fuse_block.weight"] == (320, 324, 3, 3)
    assert sorted({int(k.split(".")[2]) for k in shapes if ".glyph_block." in k}) == list(range(0, 17, 2))
    assert sorted({int(k.split(".")[2]) for k in shapes if ".position_block." in k}) == list(range(0, 13, 2))


# --------------------------------------------------------------------- the text embedding
def test_placeholder_prompt():
    assert placeholder_prompt('a sign that says "cat" on brick', ["CAT"]) == ("a sign that says * on brick", 1)
    assert placeholder_prompt('"DOG" and "CAT"', ["CAT"]) == ('"DOG" and *', 1)
    assert placeholder_prompt("a sign on brick", ["CAT"])[1] == 0


def test_line_embedding_replaces_the_placeholder_token_at_the_encoder_input():
    m, comps = _method()
    te = comps.text_encoder
    star = te.get_input_embeddings().weight[m._placeholder_id].detach()
    with torch.no_grad():
        m.embedding.proj[1].bias.copy_(star)  # zero Linear -> LayerNorm(0) = bias: the '*' embedding itself
        hidden = m._encode_rows([PROMPT], [["AB"]], m._line_embeddings(torch.rand(1, 3, LINE_H, LINE_W)), True)
        plain = tailor.core.prompts.encode_text(comps, ["a sign that says *"])[0]
        assert torch.allclose(hidden, plain, atol=1e-6)
        m.embedding.proj[1].bias.add_(torch.linspace(-1, 1, star.numel()))  # (a constant would be normalised away)
        moved = m._encode_rows([PROMPT], [["AB"]], m._line_embeddings(torch.rand(1, 3, LINE_H, LINE_W)), True)
    assert (moved - plain).abs().max() > 1e-3


def test_fresh_method_is_the_base_and_training_changes_it():
    comps = tailor.tiny_components()
    plain = Pipeline(comps).generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    m, _ = _method(comps, text_embedding=False)
    assert np.abs(_generate(comps, m) - plain).max() < 1e-6  # zero-initialised fuse conv and zero convs
    with torch.no_grad():
        m.control.controlnet_cond_embedding.fuse_block.weight.normal_(0, 0.1)
        for z in m.control.controlnet_down_blocks:
            z.weight.normal_(0, 0.1)
    a = _generate(comps, m)
    b = _generate(comps, m, text="BA", text_box=["1,17,31,31"])
    assert np.abs(a - plain).max() > 1e-3 and np.abs(a - b).max() > 1e-4  # the glyphs and their place matter


# --------------------------------------------------------------------- the loss
def test_predicted_x0_matches_the_scheduler():
    from diffusers import DDIMScheduler

    m, comps = _method()
    sched = DDIMScheduler.from_config(comps.scheduler.config)
    sched.set_timesteps(10)
    t = sched.timesteps[3]
    xt, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    state = tailor.core.conditioning.StepState(xt, torch.tensor([int(t)]), None)
    ref = sched.step(eps, t, xt).pred_original_sample
    assert torch.allclose(m.predicted_x0(eps, state), ref, atol=1e-5)


def test_predicted_image_decodes_the_clean_latents_once():
    # the OCR loss reads the decoded x0: with the true noise as the prediction it must be the clean image's decode
    # (diffusion latents are unscaled once, by vae_decode; unscaling twice gave a 1/scaling_factor brighter image)
    from tailor.core.latents import vae_decode

    m, comps = _method()
    assert abs(comps.vae.config.scaling_factor - 1.0) > 0.05  # else a double unscaling would not show
    z0, eps = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    t = torch.tensor([300])
    ab = comps.scheduler.alphas_cumprod[300]
    xt = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    state = tailor.core.conditioning.StepState(xt, t, None, training=True)
    with torch.no_grad():
        ref = (vae_decode(comps.vae, z0).float().clamp(-1, 1) + 1) / 2
        assert torch.allclose(m.predicted_image(eps, state), ref, atol=1e-4)


def test_cubic_timesteps_favour_large_t():
    uniform = AnyTextMethod(recognizer="random")
    cubic = AnyTextMethod(recognizer="random", timesteps="cubic")
    a = uniform.sample_timesteps(4000, 1000, torch.Generator().manual_seed(0)).float()
    b = cubic.sample_timesteps(4000, 1000, torch.Generator().manual_seed(0)).float()
    assert 0 <= b.min() and b.max() <= 999 and b.dtype == a.dtype
    assert abs(a.mean().item() - 500) < 25 and abs(b.mean().item() - 750) < 25  # E[1 - u^3] = 3/4
    assert (b >= 500).float().mean().item() == pytest.approx(0.5 ** (1 / 3), abs=0.03)  # P(u^3 <= 1/2)
    with pytest.raises(ConfigError):
        AnyTextMethod(recognizer="random", timesteps="square")


def test_ocr_loss_is_weighted_by_the_option_and_alpha_bar():
    m, comps = _method()
    for p in m.recognizer.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    lines = [TextLine("AB", np.array([[1.0, 1.0], [31.0, 1.0], [31.0, 15.0], [1.0, 15.0]]))]
    polys = torch.zeros(1, 4, 4, 2)
    polys[0, 0] = torch.tensor(lines[0].polygon)
    inputs = {"pixel_values": torch.rand(1, 3, 32, 32) * 2 - 1, "anytext_n": torch.tensor([1]),
              "anytext_polygons": polys}  # fmt: skip
    state = tailor.core.conditioning.StepState(torch.randn(1, 4, 16, 16), torch.tensor([400]), None, training=True,
                                               inputs=inputs)  # fmt: skip
    pred = torch.randn(1, 4, 16, 16)
    base = m.ocr_loss(pred, state)
    m.config = m.config.replace(ocr_loss_weight=0.006)
    assert torch.allclose(m.ocr_loss(pred, state), 2 * base) and base.item() > 0
    m.config = m.config.replace(step_weight=False)
    ab = comps.scheduler.alphas_cumprod[400]
    assert torch.allclose(m.ocr_loss(pred, state) * ab, 2 * base, rtol=1e-5)
    total, logs = m.loss(pred, pred + 1.0, state, None)
    assert total.item() == pytest.approx(1.0 + m.ocr_loss(pred, state).item(), rel=1e-5) and "ocr" in logs


def test_training_items_carry_the_lines():
    from tailor.methods.anytext.data import AnyTextDataset
    from tailor.world.dataset import WorldDataset

    data = AnyTextDataset(WorldDataset("glyph", size=64, length=4), seed=0, glyph_scale=2, max_lines=3,
                          masked_image_prob=1.0)  # fmt: skip
    item = data[1]
    assert item["anytext_glyphs"].shape == (1, 128, 128) and item["anytext_positions"].shape == (1, 64, 64)
    assert int(item["anytext_n"]) == 1 and item["anytext_texts"] == item["attrs"]["text"]
    assert item["anytext_lines"][1:].abs().max() == 0 and item["anytext_lines"][0].max() == pytest.approx(1.0)
    pos = item["anytext_positions"]
    assert (item["anytext_masked"] * pos).abs().max() == 0
    assert torch.equal(item["anytext_masked"] * (1 - pos), item["pixel_values"] * (1 - pos))


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "texts, boxes, needle",
    [
        (["C@T"], ["1,1,20,10"], "lacks"),
        (["AB"], ["1,1,40,10"], "outside"),
        (["AB", "CD"], ["1,1,20,10", "10,5,30,15"], "overlaps"),
        (["AB", "CD"], ["1,1,20,10"], "one box per line"),
        (["AB"], ["1,1,20"], "x0,y0,x1,y1"),
        (["AB"], ["5,5,2,9"], "empty"),
    ],
)
def test_bad_lines_are_one_sentence(texts, boxes, needle):
    with pytest.raises((InputError, ConfigError)) as e:
        parse_lines(texts, boxes, 32, 32)
    msg = str(e.value)
    assert needle in msg and msg.count(". ") == 0 and msg.endswith(".")


def test_missing_placeholder_is_refused_or_skipped():
    m, comps = _method()
    with pytest.raises(InputError, match="no placeholder"):
        _generate(comps, m, prompt="a sign on brick")
    m.config = m.config.replace(missing_placeholder="skip")
    assert np.isfinite(_generate(comps, m, prompt="a sign on brick")).all()


# --------------------------------------------------------------------- files
def test_official_layout_round_trip_and_random_official_file(tmp_path):
    m, comps = _method()
    with torch.no_grad():
        for p in m.control.parameters():
            p.normal_(0, 0.02)
        for p in m.embedding.parameters():
            p.normal_(0, 0.02)
    official = formats.to_official(m)
    assert {"control_model.fuse_block.weight", "embedding_manager.proj.0.weight", "embedding_manager.proj.1.bias",
            "control_model.zero_convs.0.0.weight", "control_model.middle_block_out.0.bias",
            "control_model.input_blocks.0.0.weight", "control_model.time_embed.0.weight"} <= set(official)  # fmt: skip
    assert any(k.startswith("control_model.glyph_block.") for k in official)
    # a random-weight file in the official layout (plus the parts of a full checkpoint that are not ours)
    g = torch.Generator().manual_seed(3)
    rand = {k: torch.randn(v.shape, generator=g) for k, v in official.items()}
    rand["model.diffusion_model.out.2.weight"] = torch.zeros(1)
    path = tmp_path / "anytext_official.safetensors"
    from safetensors.torch import save_file

    save_file(rand, str(path))
    loaded = tailor.load(path)
    assert isinstance(loaded, AnyTextMethod)
    if not _world_shipped():  # an official file brings no recognizer: recognizer=world needs the shipped one
        with pytest.raises(InputError, match="recognizer"):
            AnyTextMethod.from_file(path).patch(tailor.tiny_components())
    loaded.config = loaded.config.replace(recognizer="random")
    loaded.patch(tailor.tiny_components())
    state = loaded.state_dict()
    names = formats.official_names(loaded, loaded.components.unet)
    assert all(torch.equal(state[new].float(), rand[old]) for new, old in names.items())
    assert torch.equal(
        loaded.control.controlnet_cond_embedding.fuse_block.weight, rand["control_model.fuse_block.weight"]
    )
    assert torch.equal(loaded.embedding.proj[0].weight, rand["embedding_manager.proj.0.weight"])
    # a file without the fuse block: one sentence naming the group
    broken = {k: v for k, v in rand.items() if "fuse_block" not in k}
    save_file(broken, str(tmp_path / "broken.safetensors"))
    broken = AnyTextMethod.from_file(tmp_path / "broken.safetensors")
    broken.config = broken.config.replace(recognizer="random")
    with pytest.raises(FormatError, match="fuse_block"):
        broken.patch(tailor.tiny_components())


def _world_shipped() -> bool:
    from tailor.methods.anytext import shipped

    return (shipped.folder() / "tailor.json").is_file()


def test_save_reload_reproduces(tmp_path):
    m, comps = _method()
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.normal_(0, 0.05)
    a = _generate(comps, m)
    m.save(tmp_path)
    again = tailor.load(tmp_path / "anytext.safetensors")
    assert isinstance(again, AnyTextMethod) and again.config.recognizer == "random"
    assert np.abs(_generate(tailor.tiny_components(), again) - a).max() == 0


def test_cli_generate_and_bad_input(capsys, tmp_path):
    from tailor.cli import main

    m, _ = _method()
    m.save(tmp_path / "w")
    out = tmp_path / "gen"
    args = ["generate", "--base", "tiny", "-p", PROMPT, "--steps", "2", "--anytext", str(tmp_path / "w")]
    assert main([*args, "--text", "AB", "--text-box", "1,1,31,15", "--out", str(out)]) == 0
    assert (out / "generation.json").is_file()
    code = main([*args, "--text", "AB", "--text-box", "1,1,40,15", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "outside" in err and "Traceback" not in err
    assert main([*args, "--text", "A?", "--text-box", "1,1,20,15", "--out", str(tmp_path / "bad2")]) == 2
    assert "lacks" in capsys.readouterr().err
    assert main(["generate", "--base", "tiny", "-p", "x", "--text", "AB", "--out", str(tmp_path / "b3")]) == 2
    assert "--anytext" in capsys.readouterr().err


def test_generate_flags_declare_text_and_boxes():
    from tailor.compose import generate_flags, input_options, shared_inputs

    flags = generate_flags()
    assert flags["--anytext"].methods == ("anytext",)
    assert shared_inputs(flags)["--text"].name == "text"
    box = input_options(flags)["--text-box"]
    assert box.name == "text_box" and box.multiple
