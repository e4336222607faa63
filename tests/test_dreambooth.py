"""DreamBooth (Ruiz et al. 2022): identifier rule, class-image cache, prior loss, full and LoRA variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.conditioning import Conditioning, StepState
from tailor.core.pipeline import Pipeline
from tailor.core.tokenizers import build_clip_tokenizer
from tailor.errors import ConfigError
from tailor.methods.dreambooth import DreamBoothMethod
from tailor.methods.dreambooth.identifier import pick_identifier
from tailor.methods.lora import LoRAMethod


@pytest.fixture
def subject(tmp_path):
    folder = tmp_path / "subject"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("ignored: dreambooth uses the instance prompt")
    return folder


def test_identifier_rule():
    tiny = build_clip_tokenizer()  # bytes only: single letters are the only words
    assert pick_identifier(tiny) == "z"
    assert pick_identifier(tiny, avoid={"z", "y"}) == "x"
    merged = build_clip_tokenizer(merges=[("s", "k"), ("sk", "s</w>"), ("o", "k</w>")])
    assert pick_identifier(merged) == "ok"  # multi-letter first, then the latest merge (highest id = rarest)
    assert pick_identifier(merged, avoid={"ok"}) == "sks"
    assert pick_identifier(merged, avoid={"ok", "sks"}) == "z"
    m = DreamBoothMethod(class_word="z")  # the class word is never the identifier
    assert m.resolve_identifier(tiny) == "y" and m.instance_prompt == "a y z" and m.class_prompt == "a z"
    assert DreamBoothMethod(identifier="sks", class_word="dog").instance_prompt == "a sks dog"
    with pytest.raises(ConfigError):
        DreamBoothMethod(class_word=" ")


def test_class_images_are_cached_and_reused(tiny, tmp_path):
    opts = dict(class_word="star", num_class_images=3, class_steps=1, class_dir=str(tmp_path / "cache"))
    m = DreamBoothMethod(**opts)
    m.patch(tiny)
    folder = m.ensure_class_images()
    assert m.class_images_generated == 3
    files = sorted(folder.glob("*.png"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = DreamBoothMethod(**opts)  # a second run over the same base: nothing is generated
    m.unpatch()
    again.patch(tiny)
    assert again.ensure_class_images() == folder and again.class_images_generated == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # an interrupted cache resumes: only the missing image is made, and it is the same image (seed class_seed + i)
    first = np.asarray(Image.open(files[1]))
    files[1].unlink()
    assert again.ensure_class_images() == folder and again.class_images_generated == 1
    assert np.array_equal(np.asarray(Image.open(files[1])), first)
    # a different count is another cache entry
    other = DreamBoothMethod(**{**opts, "num_class_images": 2})
    again.unpatch()
    other.patch(tiny)
    assert other.ensure_class_images() != folder
    other.unpatch()


def test_prior_loss_is_the_split_mse():
    m = DreamBoothMethod(prior_loss_weight=0.5)
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(4, 4, 2, 2, generator=g), torch.randn(4, 4, 2, 2, generator=g)
    prior = torch.tensor([False, True, True, False])
    state = StepState(
        pred, torch.zeros(4), Conditioning(torch.zeros(4, 1, 8), batch_size=4), training=True, inputs={"prior": prior}
    )
    loss, logs = m.loss(pred, target, state, None)
    inst = ((pred[[0, 3]] - target[[0, 3]]) ** 2).mean()
    cls = ((pred[[1, 2]] - target[[1, 2]]) ** 2).mean()
    assert torch.allclose(loss, inst + 0.5 * cls) and logs["prior_mse"] == pytest.approx(float(cls))
    only_class, _ = m.loss(pred[1:3], target[1:3], StepState(pred, 0, None, inputs={"prior": prior[1:3]}), None)
    assert torch.allclose(only_class, 0.5 * cls)


def test_batches_hold_instance_and_class_rows(tiny, tmp_path, subject):
    from tailor.core.training import TrainConfig
    from tailor.core.training.data import FolderDataset, collate

    m = DreamBoothMethod(
        identifier="sks", class_word="star", num_class_images=3, class_steps=1, class_dir=str(tmp_path / "cache")
    )
    m.patch(tiny)
    ds = m.wrap_dataset(FolderDataset(subject, 32), TrainConfig(data=str(subject), resolution=32))
    assert len(ds) == 3  # max(2 instance, 3 class) pairs
    batch = collate([ds[0], ds[2]])
    rows, keys, positions = m.expand_batch(batch, [(0, 0), (0, 2)], [10, 11])
    assert rows["pixel_values"].shape == (4, 3, 32, 32) and rows["caption"] == ["a sks star"] * 2 + ["a star"] * 2
    assert rows["prior"].tolist() == [False, False, True, True]
    assert torch.equal(rows["pixel_values"][:2], batch["pixel_values"])
    assert keys == [(0, 0), (0, 2), (2, 0), (2, 2)] and positions[:2] == [10, 11] and min(positions[2:]) > 1e12
    m.unpatch()
    plain = DreamBoothMethod(identifier="sks", with_prior_preservation=False)
    plain.patch(tiny)
    ds = plain.wrap_dataset(FolderDataset(subject, 32), TrainConfig(data=str(subject), resolution=32))
    assert len(ds) == 2 and set(ds[0]) == {"pixel_values", "caption"}
    assert plain.expand_batch(collate([ds[0]]), [(0, 0)], [0])[2] == [0]
    plain.unpatch()


def test_lora_variant_trains_and_saves_a_lora_file(tmp_path, subject):
    from tailor.core.training import TrainConfig, train

    m = DreamBoothMethod(
        class_word="star", num_class_images=2, class_steps=1, class_dir=str(tmp_path / "cache"), lora_rank=2
    )
    comps = tailor.tiny_components()
    cfg = TrainConfig(
        base="tiny", data=str(subject), out=str(tmp_path / "run"), steps=2, batch_size=2, resolution=32, lr=1e-2
    )
    result = train(m, cfg, components=comps)
    assert result.artifact.name == "dreambooth.safetensors" and np.isfinite(result.loss)
    import json

    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["prior_mse"] > 0 and r["mse"] > 0 for r in logs if "mse" in r)  # every step saw both kinds
    assert (tmp_path / "run" / "lora_kohya.safetensors").is_file()
    lora = tailor.load(tmp_path / "run" / "lora.safetensors")  # a plain LoRA: --lora takes it
    assert isinstance(lora, LoRAMethod)
    prompt = f"a {m.config.identifier} star"
    args = dict(n=1, seed=0, steps=2, guidance=3.0)
    trained = Pipeline(comps).generate(prompt, **args).array
    m.unpatch()
    again = tailor.load(tmp_path / "run")
    assert isinstance(again, DreamBoothMethod) and again.config.identifier == m.config.identifier == "z"
    fresh = tailor.tiny_components()
    assert np.abs(Pipeline(fresh).attach(again).generate(prompt, **args).array - trained).max() == 0
    assert (
        np.abs(Pipeline(tailor.tiny_components()).attach(lora).generate(prompt, **args).array - trained).max() < 1e-6
    )


@pytest.mark.parametrize("caches", [False, True])
def test_prior_training_is_unchanged_by_the_decoded_image_cache(tmp_path, subject, monkeypatch, caches):
    """The loss trajectory (instance + prior terms) and the trained LoRA are bit-identical whether the folder
    datasets keep their decoded images (the default) or read and decode every image at every step (issue #8)."""
    import json

    from tailor.core.training import TrainConfig, train
    from tailor.core.training import data as training_data

    default = training_data.DECODED_CACHE_BYTES

    def run(name: str, cache_bytes: int):
        monkeypatch.setattr(training_data, "DECODED_CACHE_BYTES", cache_bytes)
        m = DreamBoothMethod(
            class_word="star", num_class_images=3, class_steps=1, class_dir=str(tmp_path / "cache"), lora_rank=2
        )
        cfg = TrainConfig(base="tiny", data=str(subject), out=str(tmp_path / name), steps=5, batch_size=2,
                          resolution=32, lr=1e-2, log_every=1, cache_latents=caches, cache_text=caches)  # fmt: skip
        train(m, cfg, components=tailor.tiny_components())
        logs = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return [(r["loss"], r["mse"], r["prior_mse"]) for r in logs if "mse" in r], m.state_dict()

    before, w_before = run("decode-every-step", 0)
    after, w_after = run("decoded-once", default)
    assert len(before) == 5 and before == after
    assert all(torch.equal(w_before[k], w_after[k]) for k in w_before)


def test_full_variant_saves_a_diffusers_pipeline(tmp_path, subject):
    from tailor.core.training import TrainConfig, train

    m = DreamBoothMethod(class_word="star", with_prior_preservation=False)
    cfg = TrainConfig(
        base="tiny", data=str(subject), out=str(tmp_path / "run"), steps=1, batch_size=1, resolution=32, lr=1e-3
    )
    train(m, cfg, components=tailor.tiny_components())
    assert (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    assert set(m.state_dict()) and all(k.startswith("dreambooth.finetune.unet.") for k in m.state_dict())
