"""storygen (Intelligent Grimm's context module): the attn3 path, official keys, 3-way guidance, training, --story."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.conditioning import Conditioning, StepState
from tailor.core.pipeline import Pipeline, call_unet, unet_kwargs
from tailor.core.reference_bank import run_reference_pass
from tailor.methods.storygen import StoryGenMethod, formats, three_way

PROMPT = "a photo of a red star jumping on snow"


def frame(seed: int, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def randomize(method: StoryGenMethod, seed: int = 0, std: float = 0.3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def gen(comps, method=None, guidance=3.0, steps=2, **inputs):
    pipe = Pipeline(comps)
    if method is not None:
        pipe.attach(method, **inputs)
    out = pipe.generate(PROMPT, n=1, seed=0, steps=steps, guidance=guidance).array
    pipe.detach()
    return out


def test_zero_attn3_is_the_base_exactly():
    comps = tailor.tiny_components()
    plain = gen(comps)
    inputs = {"frames": [frame(1), frame(2)], "frame_prompts": ["a photo of a star", "a photo of a star far away"]}
    out = gen(comps, StoryGenMethod(image_guidance=1.0), **inputs)
    assert np.abs(out - plain).max() == 0
    # 3-way: eps_u comes from its own (batch-1) UNet call, so equal up to float rounding
    out = gen(comps, StoryGenMethod(image_guidance=3.5), **inputs)
    assert np.abs(out - plain).max() < 2e-6
    m = StoryGenMethod()
    m.patch(comps)
    randomize(m)
    m.unpatch()
    changed = gen(comps, m, **inputs)
    assert np.abs(changed - plain).max() > 1e-4, "a trained attn3 must change the image"
    assert np.abs(gen(comps) - plain).max() == 0, "detach restores the base"
    assert np.abs(gen(comps, m) - plain).max() == 0, "frame 1 (no previous frames) is plain text-to-image"


def test_attn3_reads_norm4_and_the_bank():
    """out = attn1(x) + w * attn3(norm4(x), [f_1; f_2]) in every block (checked on one block by hand)."""
    comps = tailor.tiny_components()
    m = StoryGenMethod()
    m.patch(comps)
    randomize(m)
    block, mod = m.blocks[0], m.net[0]
    proc = comps.unet.attn_processors[block + ".attn1.processor"]
    attn1 = dict(comps.unet.named_modules())[block + ".attn1"]
    x = torch.randn(2, 16, attn1.query_dim if hasattr(attn1, "query_dim") else mod.norm4.normalized_shape[0])
    feats = torch.randn(2, 16, x.shape[-1])
    m.bank.features[block + ".attn1.processor"] = feats
    m.bank.mode, m.bank.groups = "read", 1
    m.set_scale(0.5)
    got = proc(attn1, x)
    a3 = mod.attn3
    q = a3.to_q(mod.norm4(x))
    k, v = a3.to_k(feats), a3.to_v(feats)
    h = a3.heads

    def split(t):
        return t.view(2, -1, h, t.shape[-1] // h).transpose(1, 2)

    o = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // h) ** 0.5, -1) @ split(v)
    o = a3.to_out[0](o.transpose(1, 2).reshape(2, -1, q.shape[-1]))
    want = proc.base(attn1, x) + 0.5 * o
    assert torch.allclose(got, want, atol=1e-5)
    m.unpatch()


def test_official_keys_round_trip(tmp_path):
    from safetensors.torch import save_file

    comps = tailor.tiny_components()
    m = StoryGenMethod()
    m.patch(comps)
    randomize(m, 3)
    official = formats.to_official(m.state_dict())
    assert all(".transformer_blocks." in k and (".attn3." in k or ".norm4." in k) for k in official)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn3.to_q.weight" in official
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn3.to_out.0.bias" in official
    assert "down_blocks.0.attentions.0.transformer_blocks.0.norm4.weight" in official
    unet = {k: v.clone().contiguous() for k, v in comps.unet.state_dict().items()}  # a whole official UNet file
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({**unet, **{k: v.contiguous() for k, v in official.items()}}, str(path))
    assert StoryGenMethod.sniff(path, {})
    loaded = tailor.load(path)
    assert isinstance(loaded, StoryGenMethod)
    loaded.patch(tailor.tiny_components())
    assert set(loaded.state_dict()) == set(m.state_dict())
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in m.state_dict().items())
    with pytest.raises(tailor.errors.FormatError, match="attn3"):
        formats.from_official(unet)
    m.unpatch()


def test_three_way_guidance_matches_the_paper():
    """eps = eps_u + s_img (eps_img - eps_u) + s_txt (eps_all - eps_img), eps_u from a grey image's latent noised
    like the frames, with the empty prompt; checked against an independent computation of the three rows."""
    comps = tailor.tiny_components()
    m = StoryGenMethod(image_guidance=2.5)
    frames, prompts = [frame(1), frame(2)], ["a photo of a star", "a photo of a star far away"]
    pipe = Pipeline(comps).attach(m, frames=frames, frame_prompts=prompts)
    randomize(m, 1)
    from tailor.core.prompts import encode_prompts
    from tailor.core.samplers import make_scheduler

    cond = encode_prompts(comps, [PROMPT], cfg=True, height=32, width=32)
    sched = make_scheduler("ddim", comps.scheduler)
    sched.set_timesteps(4)
    t = sched.timesteps[1]
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    model_in = torch.cat([x, x])
    state = StepState(model_in, t, cond, step=1, num_steps=4, fraction=0.25, scheduler=sched)
    pred = call_unet(comps.unet, model_in, t, cond, unet_kwargs(pipe.attachments, state))
    eps_img, eps_all = pred.chunk(2)
    got = m.guide(state, eps_img, eps_all, 7.5)

    # the unconditional row, by hand: official rule t_ref = t // 10 * (n - i), one noise, a grey (zero) image
    from diffusers import DDPMScheduler

    ddpm = DDPMScheduler.from_config(comps.scheduler.config)
    n = 2
    t_ref = torch.tensor([int(t) // 10 * (n - i) for i in range(n)])
    noise = torch.randn((4, 16, 16), generator=torch.Generator().manual_seed(0 + 1))
    with torch.no_grad():
        zero = comps.vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mean * comps.vae.config.scaling_factor
    xz = ddpm.add_noise(zero.repeat(n, 1, 1, 1), noise.expand(n, -1, -1, -1), t_ref)
    run_reference_pass([m.bank], comps.unet, xz, t_ref, cond.encoder_hidden_states[:1].repeat(n, 1, 1), groups=n)
    with torch.no_grad():
        eps_u = call_unet(comps.unet, x, t, Conditioning(cond.encoder_hidden_states[:1], 1), {})
    want = eps_u + 2.5 * (eps_img - eps_u) + 7.5 * (eps_all - eps_img)
    assert torch.allclose(got, want, atol=1e-5)
    assert (eps_u - eps_img).abs().max() > 1e-5, "the grey image must differ from the frames"
    # the official pipeline's expression
    assert torch.allclose(three_way(eps_u, eps_img, eps_all, 2.5, 7.5),
                          eps_u + 2.5 * (eps_img - eps_u) + 7.5 * (eps_all - eps_img))  # fmt: skip
    # s_img = 1: plain guidance of the two image rows, no extra row
    m.config = m.config.replace(image_guidance=1.0)
    assert m.guide(state, eps_img, eps_all, 7.5) is None
    pipe.detach()


def test_training_reduces_loss_and_trains_only_attn3():
    """Steps of the trainer's own objective on one batch of story frames lower its loss; the UNet stays frozen."""
    from tailor.core.training import TrainConfig
    from tailor.core.training.data import collate
    from tailor.core.training.objective import Objective
    from tailor.methods.storygen.data import StoryFrames

    comps = tailor.tiny_components()
    unet = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    m = StoryGenMethod()
    m.patch(comps)
    cfg = TrainConfig(base="tiny", data="world", steps=1, batch_size=2, resolution=32, caption_dropout=0.0)
    data = m.wrap_dataset(list(range(4)), cfg)
    assert isinstance(data, StoryFrames)
    batch = collate([data[0], data[1]])
    assert batch["ref_pixel_values"].shape == (2, 3, 3, 32, 32) and min(batch["ref_count"].tolist()) >= 1
    obj = Objective(comps, m, cfg, 32)
    opt = torch.optim.Adam(m.trainable_parameters(), lr=3e-3)

    def loss():
        return obj.loss(batch, [(0, 0), (0, 1)], [0, 1], 0, 0, 1, dropout=False)[0]

    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert after < before * 0.98, (before, after)
    assert all(torch.equal(v, comps.unet.state_dict()[k]) for k, v in unet.items())
    assert {id(p) for p in m.trainable_parameters()} == {id(p) for p in m.net.parameters()}
    m.unpatch()


def test_masked_mse_is_the_official_one():
    m = StoryGenMethod()
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, :32] = 1.0
    state = StepState(pred, torch.zeros(2), None, training=True, inputs={"loss_mask": mask})
    got, _ = m.loss(pred, target, state, None)
    keep = 1 - torch.nn.functional.interpolate(mask, scale_factor=1 / 8, mode="bilinear", align_corners=False)
    want = torch.nn.functional.mse_loss(pred * keep, target * keep)
    assert torch.allclose(got, want, atol=1e-6)


def test_story_cli_writes_frames(tmp_path):
    from tailor.cli.generate import generate
    from tailor.core.training import TrainConfig, train

    m = StoryGenMethod(frames_per_story=2)
    train(m, TrainConfig(base="tiny", data="world", out=str(tmp_path / "sg"), steps=1, batch_size=1, resolution=32,
                         lr=1e-3), components=tailor.tiny_components())  # fmt: skip
    story = tmp_path / "story.txt"
    story.write_text("a photo of a red star on grass\na photo of the red star jumping on snow\n"
                     "a photo of the red star far away on sand\n")  # fmt: skip
    out = tmp_path / "out"
    generate(base="tiny", story=str(story), storygen=[str(tmp_path / "sg")], out=str(out), steps=2, seed=0)
    files = sorted(p.name for p in out.glob("0*.png"))
    assert files == ["000.png", "001.png", "002.png"]
    import json

    record = json.loads((out / "generation.json").read_text())
    assert [r["prompt"] for r in record["images"]] == story.read_text().splitlines()
    assert (out / "grid.png").is_file()


def test_story_file_with_one_line_is_refused(tmp_path, capsys):
    from tailor.cli import main

    story = tmp_path / "story.txt"
    story.write_text("a photo of a red star\n")
    code = main(["generate", "--base", "tiny", "--story", str(story), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "one prompt" in err and "at least two lines" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_more_frames_than_kept_drops_the_oldest_once(caplog):
    comps = tailor.tiny_components()
    m = StoryGenMethod(max_frames=2)
    frames = [frame(i) for i in range(4)]
    prompts = [f"a photo of a star {i}" for i in range(4)]
    m.patch(comps)
    randomize(m)
    m.unpatch()
    with caplog.at_level(logging.WARNING, logger="tailor"):
        four = gen(comps, m, steps=3, frames=frames, frame_prompts=prompts)
    warnings = [r for r in caplog.records if "oldest are dropped" in r.getMessage()]
    assert len(warnings) == 1
    last_two = gen(comps, m, steps=3, frames=frames[2:], frame_prompts=prompts[2:])
    assert np.abs(four - last_two).max() == 0


def test_frames_of_another_size_are_resized_said_once(caplog):
    """A previous frame of another size is resized to the output (one warning per story), and gives the image the
    same frame resized beforehand gives; the frames are VAE-encoded once, not every step."""
    comps = tailor.tiny_components()
    m = StoryGenMethod()
    m.patch(comps)
    randomize(m)
    m.unpatch()
    big = [frame(1, 48), frame(2, 48)]
    prompts = ["a photo of a star", "a photo of a star far away"]
    calls = []
    encode = m.encode_frames
    m.encode_frames = lambda x: calls.append(x.shape[0]) or encode(x)
    with caplog.at_level(logging.WARNING, logger="tailor"):
        got = gen(comps, m, steps=3, frames=big, frame_prompts=prompts)
        again = gen(comps, m, steps=3, frames=big, frame_prompts=prompts)
    said = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert len(said) == 1 and "48x48" in said[0] and "32x32" in said[0]
    assert calls.count(2) == 2, calls  # once per generation (an attachment), not once per step
    small = [im.resize((32, 32), Image.BICUBIC) for im in big]
    assert np.abs(gen(comps, m, steps=3, frames=small, frame_prompts=prompts) - got).max() < 1e-5
    assert np.abs(got - again).max() == 0


@pytest.mark.parametrize("other", ["lora", "ip_adapter", "controlnet", "t2i_adapter"])
def test_composes_with_other_methods(other):
    """StoryGen's extra eps_u row runs the unconditional rows again with the other method's per-row extras (ControlNet
    / T2I residuals, image-prompt tokens): an untrained (zero) context module beside another method is that method
    alone; a trained one changes the image and the other method still acts."""
    from tailor.core.method import get_spec

    comps = tailor.tiny_components()
    spec = get_spec(other)
    m = spec.method(**spec.test_options)
    inputs = spec.example_inputs(comps) if spec.example_inputs else {}
    frames = {"frames": [frame(1), frame(2)], "frame_prompts": ["a photo of a star", "a photo of a star far away"]}
    pipe = Pipeline(comps).attach(m, weight=1.0, **inputs)
    with torch.no_grad():  # zero-initialised outputs (LoRA up, ControlNet zero convs) get values so the method acts
        for p in m.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    alone = pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
    pipe.attach(StoryGenMethod(image_guidance=3.5), **frames)
    zero = pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
    pipe.detach()
    assert np.abs(zero - alone).max() < 1e-5, "a zero context module must leave the other method's image alone"
    sg = StoryGenMethod(image_guidance=3.5)
    sg.patch(comps)
    randomize(sg)
    sg.unpatch()
    pipe = Pipeline(comps).attach(m, weight=1.0, **inputs).attach(sg, **frames)
    both = pipe.generate(PROMPT, n=1, seed=0, steps=3, guidance=3.0).array
    pipe.detach()
    story_only = gen(comps, sg, steps=3, **frames)
    assert np.isfinite(both).all()
    assert np.abs(both - alone).max() > 1e-4 and np.abs(both - story_only).max() > 1e-4


def test_shipped_world_weights_make_a_story(tmp_path, caplog):
    """``--storygen world`` loads the shipped context module; a four-frame story keeps 3 frames (the oldest dropped,
    said once) and frames 2..4 differ from the base's image of the same prompt and seed."""
    from tailor.cli.generate import generate
    from tailor.world.zoo import shipped_adapters

    if "storygen" not in shipped_adapters():
        pytest.skip("the world StoryGen weights are not trained yet")
    from tailor.core.io import load_tensors
    from tailor.world.zoo import adapter_path

    assert tailor.load("storygen").name == "storygen"
    out = load_tensors(adapter_path("storygen") / "storygen.safetensors")
    assert all(float(v.abs().max()) > 0 for k, v in out.items() if "to_out.0.weight" in k)  # trained off zero
    lines = ["a photo of the man smiling on grass", "a photo of the man far away on snow",
             "a photo of the man turned to the left on sand", "a photo of the man close up on water",
             "a photo of the man smiling on wood"]  # fmt: skip
    story = tmp_path / "story.txt"
    story.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="tailor"):
        generate(base="world", story=str(story), storygen=["world"], out=str(tmp_path / "s"), steps=4, seed=0)
    assert sum("oldest are dropped" in r.getMessage() for r in caplog.records) == 1
    frames = [np.asarray(Image.open(tmp_path / "s" / f"{i:03d}.png")) for i in range(5)]
    plain = tailor.Pipeline(tailor.load_components("world")).generate(lines[-1], n=1, seed=0, steps=4)
    assert np.abs(frames[-1].astype(int) - np.asarray(plain.images[0]).astype(int)).max() > 8
