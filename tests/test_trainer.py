"""The training loop: exact resume, accumulation equivalence, checkpoints, outputs, objective options, errors.

All runs use tiny components (32x32 images, 16x16 latents), batch 2 and a folder of 8 PNGs.
"""

from __future__ import annotations

import json
import logging
import math
import shutil

import pytest
import torch
from PIL import Image

from tailor.core.components import tiny_components
from tailor.core.prompts import encode_prompts
from tailor.core.training import TrainConfig, TrainResult, train
from tailor.core.training.checkpoint import find_resume, list_checkpoints
from tailor.core.training.data import FolderDataset, SampleOrder, build_datasets, center_crop_resize
from tailor.core.training.noise import compute_snr, draw, min_snr_weights, training_target
from tailor.core.training.objective import Objective
from tailor.errors import ConfigError, FormatError, InputError, TrainingError
from tailor.methods.finetune import FinetuneConfig, FinetuneMethod

from helpers import captioned_folder


# --------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 random 40x36 PNGs with same-stem captions."""
    return captioned_folder(tmp_path_factory.mktemp("data"), 8, (40, 36))


class Interrupted(FinetuneMethod):
    """Finetune that crashes (like a killed process) when it reaches step ``stop_at`` (0-based)."""

    stop_at = -1

    def loss(self, pred, target, state, weights):
        if state.step == self.stop_at:
            raise KeyboardInterrupt("simulated crash")
        return super().loss(pred, target, state, weights)


class NanFrom(FinetuneMethod):
    """Finetune whose loss turns NaN from step ``nan_from`` (0-based)."""

    nan_from = 2

    def loss(self, pred, target, state, weights):
        loss, logs = super().loss(pred, target, state, weights)
        return (loss * math.nan if state.step >= self.nan_from else loss), logs


def run(out, data, method=None, **kw) -> tuple[TrainResult, object]:
    comps = tiny_components()
    opts = dict(base="tiny", data=str(data), out=str(out), steps=6, batch_size=2, log_every=2)
    opts.update(kw)
    result = train(method or FinetuneMethod(), TrainConfig(**opts), comps)
    return result, comps


def max_diff(a, b) -> float:
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


# --------------------------------------------------------------------- resume and accumulation
@pytest.mark.parametrize("extra", [{}, {"grad_accum": 2}, {"ema": True}], ids=["plain", "accum2", "ema"])
def test_resume_is_bit_identical(tmp_path, data, extra):
    kw = dict(lr_scheduler="linear", warmup_steps=2, checkpoint_every=3, **extra)
    _, full = run(tmp_path / "a", data, **kw)
    crashing = Interrupted()
    crashing.stop_at = 4
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", data, method=crashing, **kw)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3]
    result, resumed = run(tmp_path / "b", data, resume="latest", **kw)
    assert result.steps == 6
    assert max_diff(full, resumed) <= 1e-6
    records = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]  # the crashed run's records after step 3 are dropped


def test_grad_accumulation_matches_bigger_batch(tmp_path, data):
    # Adam turns float noise in near-zero gradients into +-lr updates; with eps >> |g| it is SGD-like (update ~ g),
    # so the weights compare the accumulated gradients themselves
    sgd_like = dict(steps=2, lr=1.0, adam_epsilon=1.0, weight_decay=0.0)
    _, a = run(tmp_path / "a", data, batch_size=2, grad_accum=2, **sgd_like)
    _, b = run(tmp_path / "b", data, batch_size=4, grad_accum=1, **sgd_like)
    assert max_diff(a, b) <= 1e-5
    _, c = run(tmp_path / "c", data, batch_size=4, grad_accum=1, seed=1, **sgd_like)
    assert max_diff(a, c) > 1e-3  # other samples / noise: the comparison has teeth


# --------------------------------------------------------------------- checkpoints
def test_checkpoints_complete_pruned_and_corrupt_ones_skipped(tmp_path, data, caplog):
    out = tmp_path / "run"
    run(out, data, steps=6, checkpoint_every=2, keep_checkpoints=2)
    ckpts = list_checkpoints(out)
    assert [s for s, _ in ckpts] == [4, 6]
    for _, path in ckpts:
        assert {p.name for p in path.iterdir()} == {"method.safetensors", "optimizer.pt", "trainer.json"}
        state = torch.load(path / "optimizer.pt", weights_only=True)
        assert "optimizer" in state and "scheduler" in state
    # a corrupt newest checkpoint, an unfinished one and a leftover temporary folder
    (out / "checkpoints" / "step-000006" / "method.safetensors").write_bytes(b"garbage")
    (out / "checkpoints" / "step-000008").mkdir()
    (out / "checkpoints" / ".step-000010.abc.tmp").mkdir()
    with caplog.at_level(logging.WARNING, logger="tailor"):
        assert find_resume(out, "latest").step == 4
    assert "skipping checkpoint" in caplog.text
    result, _ = run(out, data, steps=6, checkpoint_every=2, keep_checkpoints=2, resume="latest")
    assert result.steps == 6
    assert not (out / "checkpoints" / ".step-000010.abc.tmp").exists()
    assert (out / "checkpoints" / "step-000006" / "trainer.json").is_file()


def test_resume_errors(tmp_path, data):
    with pytest.raises(InputError, match="nothing to resume"):
        run(tmp_path / "empty", data, resume="latest")
    with pytest.raises(InputError, match="does not exist"):
        run(tmp_path / "empty", data, resume=str(tmp_path / "nope"))
    run(tmp_path / "a", data, steps=3, checkpoint_every=1)
    with pytest.raises(ConfigError, match="batch_size=2, not 4"):
        run(tmp_path / "a", data, steps=4, batch_size=4, resume="latest")
    with pytest.raises(ConfigError, match="past steps=2"):
        run(tmp_path / "a", data, steps=2, resume="latest")
    # a new run in the same folder replaces the earlier run's checkpoints when it saves its first one
    run(tmp_path / "a", data, steps=2, seed=5)
    assert [s for s, _ in list_checkpoints(tmp_path / "a")] == [2]
    assert find_resume(tmp_path / "a", "latest").info["config"]["seed"] == 5


# --------------------------------------------------------------------- outputs
def test_outputs_logs_samples_and_pipeline(tmp_path, data):
    out = tmp_path / "run"
    result, comps = run(out, data, steps=4, val_every=2, val_steps=2, val_fraction=0.25, log_every=1)
    assert result.artifact == out / "finetune.safetensors" and result.artifact.is_file()
    assert result.val_loss is not None and math.isfinite(result.loss)
    meta = json.loads((out / "tailor.json").read_text())
    assert meta == {"method": "finetune", "artifact": "finetune.safetensors", "base": "tiny", "steps": 4}
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "lr", "it_s", "mse"} <= set(records[0]) and "val_loss" in records[1]
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr", "it_s", "val_loss"} <= set(header)
    with Image.open(out / "loss.png") as im:
        im.verify()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step-000002.png", "step-000004.png"]
    assert Image.open(out / "samples" / "step-000004.png").size[0] > 64  # a 2-column grid of 32px images
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())  # flat, as `tailor train finetune --config` reads
    assert saved["lr"] == 1e-4 and saved["resolution"] == 32 and saved["prediction_type"] == "epsilon"
    assert saved["train_text_encoder"] is False and saved["unet_params"] == "all"
    method_keys = {"train_text_encoder", "text_encoder_lr", "unet_params"}
    assert TrainConfig.from_dict({k: v for k, v in saved.items() if k not in method_keys}).val_fraction == 0.25
    # the diffusers folder loads with diffusers alone and holds the trained UNet
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(out / "pipeline"), local_files_only=True)
    ref = comps.unet.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in pipe.unet.state_dict().items())


# --------------------------------------------------------------------- objective options
def test_min_snr_weights_and_v_target_match_formulas():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr as diffusers_snr

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([0, 10, 500, 999])
    snr = compute_snr(sched.alphas_cumprod, t)
    assert torch.allclose(snr, diffusers_snr(sched, t))
    gamma = 5.0
    expect_eps = torch.stack([snr, gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0] / snr
    assert torch.allclose(min_snr_weights(snr, gamma, "epsilon"), expect_eps)
    assert torch.allclose(min_snr_weights(snr, gamma, "v_prediction"), torch.clamp(snr, max=gamma) / (snr + 1))
    assert min_snr_weights(snr, gamma, "epsilon")[0] < 1 and min_snr_weights(snr, gamma, "epsilon")[-1] == 1
    x, n = torch.randn(4, 4, 2, 2), torch.randn(4, 4, 2, 2)
    ac = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = ac.sqrt() * n - (1 - ac).sqrt() * x
    assert torch.allclose(training_target(sched, x, n, t, "v_prediction"), v, atol=1e-6)
    assert training_target(sched, x, n, t, "epsilon") is n


def test_draws_are_per_sample_and_offset_changes_noise():
    def sample_t(b, T, g):
        return torch.randint(0, T, (b,), generator=g)

    a = draw(0, 0, [0, 1, 2, 3], (4, 8, 8), 1000, sample_t)
    b = draw(0, 0, [2, 3], (4, 8, 8), 1000, sample_t)  # the same samples in another batch
    assert torch.equal(a.noise[2:], b.noise) and torch.equal(a.timesteps[2:], b.timesteps)
    c = draw(0, 0, [0, 1, 2, 3], (4, 8, 8), 1000, sample_t, noise_offset=0.1)
    assert torch.equal(a.latent_eps, c.latent_eps)
    delta = c.noise - a.noise
    assert delta.abs().max() > 0 and torch.allclose(
        delta, delta[..., :1, :1].expand_as(delta), atol=1e-6
    )  # per-channel offset
    d = draw(0, 0, list(range(200)), (1, 1, 1), 1000, sample_t, caption_dropout=0.5)
    assert 60 < sum(d.drop_caption) < 140


@pytest.mark.parametrize("choice", ["method", "uniform", "cubic"])
def test_timestep_sampling_option_replaces_the_methods_sampler(tmp_path, data, monkeypatch, choice):
    import tailor.core.training.objective as objective
    from tailor.core.training.noise import cubic_timesteps, uniform_timesteps

    seen = []

    def spy(seed, stream, positions, shape, num_t, sample_timesteps, *a):
        seen.append(sample_timesteps)
        return draw(seed, stream, positions, shape, num_t, sample_timesteps, *a)

    monkeypatch.setattr(objective, "draw", spy)
    method = FinetuneMethod()
    result, _ = run(tmp_path / choice, data, method=method, steps=1, timestep_sampling=choice)
    assert math.isfinite(result.loss) and seen
    expected = {"method": method.sample_timesteps, "uniform": uniform_timesteps, "cubic": cubic_timesteps}[choice]
    assert all(f == expected for f in seen)
    # the cubic law t = (1 - u^3) T: P(t < T/2) = P(u^3 > 1/2) = 1 - 2^(-1/3) ~ 0.206, mean 3/4 T
    t = cubic_timesteps(40_000, 1000, torch.Generator().manual_seed(0)).float()
    assert abs(float((t < 500).float().mean()) - (1 - 2 ** (-1 / 3))) < 0.01 and abs(float(t.mean()) - 749.5) < 5
    if choice == "cubic":  # a resume must not change which timesteps a step sees
        with pytest.raises(ConfigError, match="timestep_sampling"):
            run(tmp_path / choice, data, steps=2, resume="latest", timestep_sampling="uniform")


def test_v_prediction_min_snr_and_offset_train(tmp_path, data):
    result, comps = run(
        tmp_path / "v",
        data,
        steps=2,
        prediction_type="v_prediction",
        min_snr_gamma=5.0,
        noise_offset=0.05,
        caption_dropout=0.5,
    )
    assert math.isfinite(result.loss)
    assert comps.scheduler.config.prediction_type == "v_prediction"  # sampling matches what was trained


def test_caches_give_the_same_loss(tmp_path, data):
    plain, _ = run(tmp_path / "a", data, steps=3, log_every=1)
    cached, _ = run(tmp_path / "b", data, steps=3, log_every=1, cache_latents=True, cache_text=True)
    assert abs(plain.loss - cached.loss) <= 1e-6


@pytest.mark.slow  # inductor compiles the tiny UNet's forward and backward (~1 min cold on one core)
def test_compiled_unet_trains_like_eager(tmp_path, data):
    plain, a = run(tmp_path / "a", data, steps=2, log_every=1)
    compiled, b = run(tmp_path / "b", data, steps=2, log_every=1, compile=True)
    assert abs(plain.loss - compiled.loss) <= 1e-3 * abs(plain.loss)  # inductor reorders float sums
    assert max_diff(a, b) <= 1e-3
    assert b.unet._compiled_call_impl is None  # undone at the end: the components sample eagerly again
    assert set(b.unet.state_dict()) == set(a.unet.state_dict())


def test_compile_covers_the_unet_and_the_methods_own_models():
    from tailor.core.training.loop import _compile
    from tailor.methods.controlnet import ControlNetMethod

    comps = tiny_components()
    method = ControlNetMethod()
    method.patch(comps)
    (net,) = method.modules()
    _compile(comps, method, True)  # nothing compiles until the first call
    assert comps.unet._compiled_call_impl is not None and net._compiled_call_impl is not None
    assert comps.text_encoder._compiled_call_impl is None and comps.vae._compiled_call_impl is None
    _compile(comps, method, False)
    assert comps.unet._compiled_call_impl is None and net._compiled_call_impl is None


# --------------------------------------------------------------------- failures
def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, data):
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match="NaN at step 3"):
        run(out, data, method=NanFrom(), checkpoint_every=2)
    assert [s for s, _ in list_checkpoints(out)] == [2]
    assert find_resume(out, "latest").step == 2
    assert not (out / "finetune.safetensors").exists()
    with pytest.raises(TrainingError, match="lower --lr"):
        run(tmp_path / "huge", data, lr=1e30, max_grad_norm=0.0)


def test_bad_configs():
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        TrainConfig(steps=-5)
    with pytest.raises(ConfigError, match="lr_scheduler"):
        TrainConfig(lr_scheduler="sometimes")
    with pytest.raises(ConfigError, match="prediction_type"):
        TrainConfig(prediction_type="x0")
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_dict({"stepz": 3})
    assert TrainConfig.from_dict({"steps": "7", "val-prompts": "a cat,a dog"}).val_prompts == ["a cat", "a dog"]
    comps = tiny_components()
    with pytest.raises(ConfigError, match="cache_text"):
        train(FinetuneMethod(train_text_encoder=True), TrainConfig(base="tiny", cache_text=True), comps)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16"):
            train(FinetuneMethod(), TrainConfig(base="tiny", mixed_precision="fp16"), comps)


# --------------------------------------------------------------------- data
def test_folder_data_captions_split_and_order(tmp_path, data):
    ds = FolderDataset(data, 32)
    item = ds[0]
    assert item["pixel_values"].shape == (3, 32, 32) and item["caption"] == "a photo of thing 0"
    assert -1 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1
    assert center_crop_resize(Image.new("RGB", (60, 30)), 16).size == (16, 16)
    train_set, val_set = build_datasets(str(data), 32, 0, val_fraction=0.25)
    assert len(train_set) == 6 and len(val_set) == 2
    assert build_datasets(str(data), 32, 0, caption="sks")[0][3]["caption"] == "sks"
    order = SampleOrder(8, seed=0)
    for epoch in range(2):
        assert sorted(order.index(epoch * 8 + k) for k in range(8)) == list(range(8))
    folder = tmp_path / "meta"
    folder.mkdir()
    shutil.copy(data / "img0.png", folder / "x.png")
    shutil.copy(data / "img1.png", folder / "y.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "text": "from metadata"}) + "\n")
    with pytest.raises(InputError, match="y.png has no caption"):
        FolderDataset(folder, 32)
    (folder / "y.txt").write_text("from txt")
    assert FolderDataset(folder, 32).captions == ["from metadata", "from txt"]
    with pytest.raises(InputError, match="neither"):
        build_datasets(str(tmp_path / "missing"), 32, 0)
    (folder / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "z.txt").write_text("broken")
    with pytest.raises(InputError, match="z.png is not a readable image"):
        FolderDataset(folder, 32)  # found before training starts, not when the item comes up


# --------------------------------------------------------------------- the finetune method
def test_finetune_unpatch_restores_base_and_file_reloads(tmp_path, data):
    method = FinetuneMethod(FinetuneConfig(train_text_encoder=True))
    result, comps = run(tmp_path / "ft", data, method=method, steps=2)
    base = tiny_components()
    trained = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    assert max_diff(comps, base) > 0
    assert not torch.equal(
        comps.text_encoder.get_input_embeddings().weight, base.text_encoder.get_input_embeddings().weight
    )
    method.unpatch()
    assert max_diff(comps, base) == 0 and not any(p.requires_grad for p in comps.unet.parameters())
    method.patch(comps)  # the trained weights come back
    assert all(torch.equal(v, trained[k]) for k, v in comps.unet.state_dict().items())
    loaded = FinetuneMethod.from_file(result.artifact)
    assert loaded.config.train_text_encoder
    loaded.patch(base)
    assert all(torch.equal(v, trained[k]) for k, v in base.unet.state_dict().items())
    attn_only = FinetuneMethod(unet_params="cross_attention")
    attn_only.patch(tiny_components())
    names = [n for n, p in attn_only.components.unet.named_parameters() if p.requires_grad]
    assert names and all(".attn2." in n for n in names)


def test_text_encoder_lr_gives_the_text_encoder_its_own_group(tmp_path, data):
    from tailor.errors import ConfigError

    held = FinetuneMethod(FinetuneConfig(train_text_encoder=True, text_encoder_lr=0.0))
    _, comps = run(tmp_path / "held", data, method=held, steps=2)
    base = tiny_components()
    assert max_diff(comps, base) > 0  # the UNet trained ...
    te, te0 = comps.text_encoder.state_dict(), base.text_encoder.state_dict()
    assert all(torch.equal(v, te0[k]) for k, v in te.items())  # ... the text encoder did not
    assert any(k.startswith("finetune.text_encoder.") for k in held.state_dict())  # but is saved with it
    groups = held.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(held.trainable_parameters())
    slow = FinetuneMethod(FinetuneConfig(train_text_encoder=True, text_encoder_lr=1e-5))
    _, comps = run(tmp_path / "slow", data, method=slow, steps=2)
    assert not torch.equal(
        comps.text_encoder.get_input_embeddings().weight, base.text_encoder.get_input_embeddings().weight
    )
    with pytest.raises(ConfigError, match="train_text_encoder"):
        FinetuneConfig(text_encoder_lr=1e-5).validate()


# --------------------------------------------------------------------- world data (when tailor.world is there)
def test_world_data_trains(tmp_path):
    try:
        from tailor.world import WorldDataset  # noqa: F401
    except ImportError:
        pytest.skip("tailor.world.WorldDataset is not available yet")
    train_set, val_set = build_datasets("world:objects", 32, 0, val_fraction=0.1)
    item = train_set[0]
    assert item["pixel_values"].shape == (3, 32, 32) and isinstance(item["caption"], str)
    assert len(val_set) > 0
    result, _ = run(tmp_path / "w", "world:objects", steps=2, val_fraction=0.1, val_every=2, val_steps=1)
    assert math.isfinite(result.loss) and result.val_loss is not None
    with pytest.raises(InputError, match="unknown world data kind"):
        build_datasets("world:planets", 32, 0)


# --------------------------------------------------------------------- the text encoder runs once per caption
class FullBatchText(Objective):
    """The objective before it encoded each distinct caption once: the whole batch through the text encoder."""

    def text(self, captions):
        if self.config.cache_text:
            return super().text(captions)
        with torch.set_grad_enabled(self.method.trains_text_encoder and torch.is_grad_enabled()):
            return encode_prompts(self.components, captions, cfg=False, height=self.resolution, width=self.resolution)


def test_text_encoder_sees_each_distinct_caption_once():
    from tailor.methods.textual_inversion import TextualInversionMethod

    comps = tiny_components()
    method = TextualInversionMethod(token="<s*>", init_word="shape")
    method.patch(comps)
    config = TrainConfig(base="tiny")
    fast, full = Objective(comps, method, config, 32), FullBatchText(comps, method, config, 32)
    seen = []
    hook = comps.text_encoder.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    captions = ["a <s*> here", "the <s*>", "a <s*> here", "a <s*> here"]
    weights = torch.randn(4, 77, comps.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(0))
    grads = []
    for obj in (fast, full):
        with torch.enable_grad():
            cond = obj.text(captions)
            (cond.encoder_hidden_states * weights[:, : cond.encoder_hidden_states.shape[1]]).sum().backward()
        grads.append(method.vectors["clip_l"].grad.clone())
        method.vectors["clip_l"].grad = None
        assert cond.batch_size == 4 and cond.prompts == captions
    hook.remove()
    assert seen == [2, 4]  # two distinct captions, then the whole batch
    assert (grads[0] - grads[1]).abs().max() <= 1e-6 * grads[1].abs().max()
    rows = fast.text(captions).encoder_hidden_states
    assert torch.equal(rows[0], rows[2]) and (rows - full.text(captions).encoder_hidden_states).abs().max() <= 1e-6


@pytest.mark.parametrize("batch_size", [1, 2])
def test_textual_inversion_trains_as_with_the_whole_batch_in_the_text_encoder(tmp_path, data, batch_size, monkeypatch):
    """A few TI steps on repeating captions match the full-batch objective (bit for bit when every caption differs)."""
    from tailor.core.training import loop, objective
    from tailor.methods.textual_inversion import TextualInversionMethod

    encoded = []

    def counting(components, prompts, *args, **kw):
        encoded.append(len(prompts))
        return encode_prompts(components, prompts, *args, **kw)

    monkeypatch.setattr(objective, "encode_prompts", counting)
    init = TextualInversionMethod(token="<s*>", init_word="shape")
    init.patch(tiny_components())
    results = []
    for name, cls in (("fast", Objective), ("full", FullBatchText)):
        monkeypatch.setattr(loop, "Objective", cls)
        method = TextualInversionMethod(token="<s*>", init_word="shape", templates="caption")
        result, _ = run(tmp_path / name, data, method=method, steps=6, batch_size=batch_size, lr=5e-2, log_every=1)
        results.append((result.loss, method.vectors["clip_l"].detach().clone()))
    (loss_a, a), (loss_b, b) = results
    assert (a - init.vectors["clip_l"]).abs().max() > 1e-3  # it trained
    if batch_size == 1:
        assert loss_a == loss_b and torch.equal(a, b)
    else:
        assert 1 in encoded  # the data's 3 captions repeated within a batch of 2 at least once
        assert abs(loss_a - loss_b) <= 1e-6 and (a - b).abs().max() <= 1e-6


# --------------------------------------------------------------------- a checkpoint as an artifact
def test_a_checkpoint_loads_like_the_final_file(tmp_path, data):
    """``tailor.load(OUT/checkpoints/step-N)`` (or its ``method.safetensors``) builds the method the run's
    ``trainer.json`` records, with that step's weights: at the last step, the same tensors as the saved artifact."""
    from tailor.core.artifacts import load
    from tailor.core.io import load_tensors
    from tailor.methods.lora import LoRAConfig, LoRAMethod

    out = tmp_path / "run"
    run(out, data, method=LoRAMethod(LoRAConfig(rank=3, alpha=6.0)), steps=4, checkpoint_every=2, keep_checkpoints=0)
    final = load(out)
    for _, path in list_checkpoints(out):
        for target in (path, path / "method.safetensors"):
            m = load(target)
            assert isinstance(m, LoRAMethod) and m.config.rank == 3 and m.config.alpha == 6.0
            assert m.source_file == str(path / "method.safetensors")
        assert set(load_tensors(path / "method.safetensors")) == set(final.state_dict())
    last = load(list_checkpoints(out)[-1][1])
    assert list_checkpoints(out)[-1][0] == 4
    a, b = last.state_dict(), final.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    first = load(list_checkpoints(out)[0][1]).state_dict()
    assert any(not torch.equal(first[k], b[k]) for k in b), "step 2's weights are not step 4's"

    (list_checkpoints(out)[0][1] / "trainer.json").write_text("{not json")
    with pytest.raises(FormatError, match="trainer.json is damaged"):
        load(list_checkpoints(out)[0][1])
