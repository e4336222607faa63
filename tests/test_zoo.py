"""The world zoo: recipes run a couple of steps at tiny sizes and resume; exports load with plain diffusers /
transformers; shipped weights (when trained) load offline and meet the quality bars (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tailor.core.io import load_tensors
from tailor.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def world_tokenizer():
    from zoo.tokenizer import build_world_tokenizer

    return build_world_tokenizer(n_captions=40)


def test_tokenizer_words_are_single_tokens(world_tokenizer):
    from zoo.tokenizer import SPARE_TOKENS, caption_words

    tok = world_tokenizer
    for word in ("red", "striped", "star", "grass", "watercolor", "checkered", "hexagon", "photo"):
        assert len(tok.tokenize(word)) == 1, word
    assert len(tok.tokenize("zqxj")) > 1  # byte fallback, never unknown
    assert tok.convert_tokens_to_ids("<spare_0></w>") != tok.unk_token_id
    assert sum(t.startswith("<spare_") for t in tok.get_vocab()) == SPARE_TOKENS
    assert "a" in caption_words(10)


def test_word_merges_keep_earlier_words():
    from zoo.tokenizer import _bpe, word_merges

    words = ["ear", "bear", "beard", "be"]
    merges = word_merges(words)
    ranks = {m: i for i, m in enumerate(merges)}
    for w in words:
        assert _bpe([*w[:-1], w[-1] + "</w>"], ranks) == [w + "</w>"]


def test_vae_recipe_trains_and_resumes(tmp_path):
    from zoo.loop import list_checkpoints
    from zoo.vae import evaluate_vae, train_vae

    out = str(tmp_path / "vae")
    train_vae(out, steps=2, batch_size=2, size=32, channels=(16, 16))
    assert [s for s, _ in list_checkpoints(out)] == [2]
    vae = train_vae(out, steps=3, batch_size=2, size=32, channels=(16, 16))  # resumes at step 2
    assert [s for s, _ in list_checkpoints(out)] == [2, 3]
    assert vae.config.scaling_factor > 0
    m = evaluate_vae(vae, n=8, size=32)
    assert np.isfinite(m["psnr"])


def test_gradient_loss_is_the_l1_of_finite_differences():
    from zoo.vae import gradient_loss

    x = torch.zeros(1, 3, 8, 8)
    x[..., 2:6, 2:6] = 1.0  # a square
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert gradient_loss(x, x) == 0
    # by hand: the finite differences along one axis of x and of the 3x3 box blur
    dx = (x[..., :, 1:] - x[..., :, :-1] - blurred[..., :, 1:] + blurred[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :] - blurred[..., 1:, :] + blurred[..., :-1, :]).abs().mean()
    assert torch.isclose(gradient_loss(blurred, x), dx + dy)
    assert gradient_loss(blurred, x) > 0.1


def test_decoder_refinement_keeps_the_latents(tmp_path):
    from zoo.data import mixed_samples, to_batch
    from zoo.vae import build_vae, finetune_decoder

    torch.manual_seed(0)
    vae = build_vae(channels=(16, 16), size=32)
    x = to_batch(mixed_samples(2, 5, 0, 32))
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        z0 = vae.encode(x).latent_dist.mean
    finetune_decoder(str(tmp_path / "dec"), vae, steps=2, batch_size=2, size=32)
    with torch.no_grad():
        assert torch.equal(vae.encode(x).latent_dist.mean, z0)
    changed = {k.split(".")[0] for k, v in vae.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"decoder", "post_quant_conv"} or changed == {"decoder"}


def _tiny_runs(tmp_path: Path, tokenizer) -> Path:
    from tailor.core.tokenizers import save_tokenizer
    from zoo.vae import build_vae

    runs = tmp_path / "runs"
    save_tokenizer(tokenizer, runs / "tokenizer")
    torch.manual_seed(0)
    build_vae(channels=(16, 16), size=32).save_pretrained(str(runs / "vae" / "final"))
    return runs


def test_unet_recipe_on_the_trainer_exports_a_diffusers_folder(tmp_path, world_tokenizer):
    from diffusers import StableDiffusionPipeline

    from zoo import recipe

    runs = _tiny_runs(tmp_path, world_tokenizer)
    recipe.stage_unet(runs, steps=2, batch_size=2, n_images=6, checkpoint_every=1, log_every=1)
    assert (runs / "unet" / "checkpoints" / "step-000002" / "ema.safetensors").is_file()
    weights = tmp_path / "weights"
    done = recipe.stage_export(runs, weights)
    assert "base" in done
    pipe = StableDiffusionPipeline.from_pretrained(str(weights / "base"), local_files_only=True)
    assert pipe.unet.config.cross_attention_dim % 64 == 0
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    img = pipe(
        "a photo of a red star on grass",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()
    assert not list((weights / "base").rglob("*.bin"))
    # stored in float16 (the zoo's budget), built and run in float32, equal to the EMA weights up to that rounding
    stored = {f.parent.name: load_tensors(f, check=False) for f in (weights / "base").glob("*/*.safetensors")}
    assert {t.dtype for part in stored.values() for t in part.values()} == {torch.float16}
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32


def test_store_half_rounds_float32_only_and_keeps_metadata(tmp_path):
    from safetensors.torch import load_file, save_file

    from tailor.core.io import read_metadata
    from zoo.export import store_half

    w, ids = torch.randn(4, 5), torch.arange(3)
    save_file({"w": w, "ids": ids, "h": w.half()}, str(tmp_path / "a.safetensors"), metadata={"format": "pt"})
    save_file({"h": w.half()}, str(tmp_path / "b.safetensors"))
    assert store_half(tmp_path) == [tmp_path / "a.safetensors"]  # b holds no float32: left as it is
    t = load_file(str(tmp_path / "a.safetensors"))
    assert t["w"].dtype == torch.float16 and torch.equal(t["w"], w.half()) and not torch.equal(t["w"].float(), w)
    assert torch.equal(t["ids"], ids) and torch.equal(t["h"], w.half())
    assert read_metadata(tmp_path / "a.safetensors") == {"format": "pt"}


def test_faces_continuation_starts_from_the_object_runs_ema_and_is_exported(tmp_path, world_tokenizer):
    from tailor.core.training.checkpoint import find_resume
    from zoo import recipe
    from zoo.export import load_trained_components
    from zoo.unet import FIRST_BASE_IDENTITY, build_components, warm_start

    runs = _tiny_runs(tmp_path, world_tokenizer)
    recipe.stage_unet(runs, steps=3, batch_size=2, n_images=6, checkpoint_every=3, log_every=1)
    ema, _ = load_trained_components(runs / "unet", recipe.vae_dir(runs), recipe.tokenizer_dir(runs))
    live, _ = load_trained_components(runs / "unet", recipe.vae_dir(runs), recipe.tokenizer_dir(runs), use_ema=False)
    fresh = build_components(recipe.vae_dir(runs), recipe.tokenizer_dir(runs))
    warm_start(fresh, runs / "unet", use_ema=True)
    for name, t in fresh.unet.state_dict().items():
        assert torch.equal(t, ema.unet.state_dict()[name])
    w = "conv_in.weight"
    assert not torch.equal(ema.unet.state_dict()[w], live.unet.state_dict()[w])  # the EMA, not the live weights
    assert not any(p.requires_grad for p in fresh.unet.parameters())  # no method left attached

    assert recipe.base_run(runs) == runs / "unet"
    recipe.stage_unet_faces(runs, steps=1, batch_size=2, n_images=6, n_faces=3, checkpoint_every=1, log_every=1)
    assert recipe.base_run(runs) == runs / "unet_faces"
    rows = [json.loads(r) for r in (runs / "data" / "objects_faces" / "metadata.jsonl").read_text().splitlines()]
    faces = [r for r in rows if r["file_name"].startswith("face_")]
    assert len(rows) == 9 and len(faces) == 3 and all("man" in r["text"] or "child" in r["text"] for r in faces)
    assert find_resume(runs / "unet_faces", "latest").step == 1
    recipe.stage_unet_cooldown(runs, steps=3, batch_size=2, checkpoint_every=3, log_every=1, warmup_steps=0)
    assert recipe.base_run(runs) == runs / "unet_cooldown"
    lrs = [json.loads(r)["lr"] for r in (runs / "unet_cooldown" / "log.jsonl").read_text().splitlines()]
    assert lrs[0] == pytest.approx(2e-4) and lrs[-1] < lrs[0] / 3  # the decay phase: cosine from 2e-4 down
    done = recipe.stage_export(runs, tmp_path / "weights")
    zoo = json.loads((Path(done["base"]) / "zoo.json").read_text())
    assert zoo["checkpoint"].startswith(str(runs / "unet_cooldown"))
    assert FIRST_BASE_IDENTITY > 1000


def test_oracles_train_save_and_load(tmp_path):
    from tailor.world.zoo.oracles import load_oracle, to_unit
    from zoo import oracle_recipes as R

    model = R.train_attributes(str(tmp_path / "attr"), steps=2, batch_size=4)
    path = R.export(model, "attributes", tmp_path / "final", {"shape": 0.1})
    loaded = load_oracle(path)
    x = to_unit([s.image for s in R.object_batch(3, 0, 0)])
    with torch.no_grad():
        assert torch.allclose(model(x)["shape"], loaded(x)["shape"], atol=2e-2)  # float16 on disk
    assert set(loaded.predict(x)[0]) == set(R.CLASSES)
    hires = R.train_attributes(str(tmp_path / "hires"), steps=0, batch_size=4, size=128, init=model)
    assert load_oracle(R.export(hires, "attributes", tmp_path / "final2", {})).config["size"] == 128
    for k, v in model.state_dict().items():  # the warm start: the same network, reading a 128-px upsampling
        assert torch.equal(v, hires.state_dict()[k])
    up = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        assert torch.allclose(hires(x)["shape"], hires(up)["shape"], atol=1e-6)
    inst = R.train_instance(str(tmp_path / "inst"), steps=2, batch_subjects=3)
    assert 0 <= R.evaluate_instance(inst)["verification_accuracy"] <= 1
    seg = R.train_segmenter(str(tmp_path / "seg"), steps=1, batch_size=2)
    assert seg(x).shape == (3, len(R.SEG_CLASSES), 64, 64)


def test_segmenter_batches_mix_scenes_with_exact_per_object_labels():
    from zoo import oracle_recipes as R

    batch = R.seg_batch(6, 5, 0, scenes=0.5)
    assert [len(s.objects) for s in batch[:3]] == [1] * 3 and all(len(s.objects) >= 2 for s in batch[3:])
    plain = R.seg_batch(4, 5, 0, scenes=0.0)  # the first segmenter's batches: one-object renders, shape x mask
    assert [s.attrs for s in plain] == [s.attrs for s in R.object_batch(4, 5, 0)]
    for s in plain:
        assert (R.seg_target(s) == s.mask * (1 + R.SHAPES.index(s.attrs["shape"]))).all()
    for s in batch:
        target = R.seg_target(s)
        assert target.shape == s.mask.shape and ((target > 0) == s.mask).all()
    scene = batch[-1]
    for o in scene.objects:  # every object's pixels carry its own shape's class
        assert (R.seg_target(scene)[o["mask"]] == R.SEG_CLASSES.index(o["shape"])).all()
    with pytest.raises(ValueError, match="scenes"):
        R.train_segmenter("unused", steps=0, scenes=1.5)


def test_evaluate_segmenter_reports_one_object_renders_and_scenes():
    from tailor.world.zoo.oracles import Segmenter
    from zoo import oracle_recipes as R

    torch.manual_seed(0)
    out = R.evaluate_segmenter(Segmenter(R.SEG_CLASSES), n=4, n_scenes=3)
    keys = {"pixel_accuracy", "miou", "object_pixel_accuracy"}
    assert keys <= set(out) and set(out["scenes"]) == keys
    assert all(0.0 <= v <= 1.0 for v in [*(out[k] for k in keys), *out["scenes"].values()])
    assert "scenes" not in R.evaluate_segmenter(Segmenter(R.SEG_CLASSES), n=2, n_scenes=0)


def test_object_batch_hard_fraction_draws_the_confusable_pair():
    from zoo import oracle_recipes as R

    plain = R.object_batch(8, 3, 0)
    hard = R.object_batch(8, 3, 0, hard=0.5)
    assert [s.attrs["shape"] for s in hard[:4]] == ["circle", "hexagon", "circle", "hexagon"]
    for a, b in zip(plain[4:], hard[4:]):  # the rest of the batch is the plain batch's
        assert a.attrs == b.attrs


def test_arcface_loss_prefers_the_true_class():
    from tailor.world.zoo.oracles import Embedder

    m = Embedder(dim=8, num_classes=3)
    with torch.no_grad():
        m.centres.copy_(torch.eye(3, 8))
    emb = torch.nn.functional.normalize(torch.eye(3, 8) + 0.01, dim=-1)
    good = m.arcface_loss(emb, torch.tensor([0, 1, 2]))
    bad = m.arcface_loss(emb, torch.tensor([1, 2, 0]))
    assert good < bad


def test_world_clip_recipe_and_vision_export(tmp_path, world_tokenizer):
    from transformers import CLIPVisionModelWithProjection

    from tailor.world.zoo.clip import WorldClip, pixel_values
    from zoo.clip import save_clip, train_clip

    model = train_clip(str(tmp_path / "clip"), world_tokenizer, steps=2, batch_size=4)
    save_clip(model, world_tokenizer, tmp_path / "c", tmp_path / "v")
    vision = CLIPVisionModelWithProjection.from_pretrained(str(tmp_path / "v"), local_files_only=True)
    assert vision.dtype == torch.float32  # float16 on disk, upcast on load
    assert {t.dtype for t in load_tensors(tmp_path / "v" / "model.safetensors").values()} == {torch.float16}
    scorer = WorldClip(tmp_path / "c")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a = torch.nn.functional.normalize(vision(pixel_values=pixel_values(x)).image_embeds, dim=-1)
    assert torch.allclose(a, scorer.image_embeds(x), atol=2e-2)  # the full CLIP is float16 on disk
    assert scorer.text_embeds(["a red star"]).shape == (1, model.config.projection_dim)


def test_base_path_names_the_fix(monkeypatch, tmp_path):
    import tailor.world.zoo as zoo

    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    with pytest.raises(InputError, match="train-zoo"):
        zoo.base_path()


def test_frechet_distance_is_zero_for_the_same_set():
    from tailor.eval.world import frechet_distance

    a = torch.randn(200, 8)
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, a + 1) > 7.9


def test_prompts_for_reads_generation_json(tmp_path):
    from tailor.eval.world import expected_attributes, prompts_for

    files = [tmp_path / "000.png", tmp_path / "001.png"]
    (tmp_path / "generation.json").write_text(
        json.dumps(
            {
                "images": [
                    {"file": "000.png", "prompt": "a photo of a red striped star on grass", "seed": 0},
                    {"file": "001.png", "prompt": "a sketch of a blue circle", "seed": 1},
                ]
            }
        )
    )
    prompts = prompts_for(tmp_path, files)
    assert expected_attributes(prompts[0]) == {
        "shape": "star",
        "color": "red",
        "pattern": "striped",
        "background": "grass",
        "style": "photo",
    }
    with pytest.raises(InputError):
        prompts_for(tmp_path / "nowhere", files)


# --------------------------------------------------------------------- shipped weights
def _shipped(*names: str) -> bool:
    from tailor.world.zoo import WEIGHTS

    return all((WEIGHTS / n).exists() for n in names)


@pytest.mark.skipif(not _shipped("base/model_index.json"), reason="world base not trained yet")
def test_shipped_base_loads_with_plain_diffusers():
    from diffusers import StableDiffusionPipeline

    from tailor.world.zoo import base_path

    pipe = StableDiffusionPipeline.from_pretrained(str(base_path()), local_files_only=True)
    assert pipe.unet.config.cross_attention_dim % 64 == 0
    assert pipe.text_encoder.config.hidden_size == pipe.unet.config.cross_attention_dim


def test_shipped_weights_fit_the_budget():
    from tailor.world.zoo import WEIGHTS

    total = sum(f.stat().st_size for f in WEIGHTS.rglob("*") if f.is_file())
    assert total <= 80e6  # issue 20: the whole shipped zoo (base, CLIP, oracles, faces, adapters; was 60 MB)
    assert not [f for f in WEIGHTS.rglob("*") if f.suffix in (".bin", ".pt", ".ckpt", ".pth")]


@pytest.mark.skipif(not _shipped("oracles/attributes.safetensors"), reason="oracles not trained yet")
def test_shipped_oracles_load():
    from tailor.world.zoo.oracles import load_oracle

    for name in ("attributes", "instance", "segmenter"):
        if _shipped(f"oracles/{name}.safetensors"):
            assert not load_oracle(name).training


@pytest.mark.slow
@pytest.mark.skipif(not _shipped("oracles/attributes.safetensors"), reason="oracles not trained yet")
def test_attribute_oracle_accuracy_on_fresh_photo_renders():
    from tailor.world.zoo.oracles import load_oracle
    from zoo.oracle_recipes import evaluate_attributes

    acc = evaluate_attributes(load_oracle("attributes"), n=300, seed=123_457, styles=("photo",))
    assert min(acc.values()) >= 0.98, acc


def test_world_path_command(capsys):
    from tailor.cli import main

    rc = main(["world", "path"])
    if _shipped("base/model_index.json"):
        assert rc == 0 and capsys.readouterr().out.strip().endswith("base")
    else:
        assert rc == 2


def _world_components(tmp_path: Path, tokenizer):
    from zoo import recipe
    from zoo.unet import build_components

    runs = _tiny_runs(tmp_path, tokenizer)
    return runs, build_components(recipe.vae_dir(runs), recipe.tokenizer_dir(runs))


def _collapse(comps, a: str, b: str) -> None:
    emb = comps.text_encoder.get_input_embeddings().weight
    ia, ib = (comps.tokenizer(w, add_special_tokens=False).input_ids[0] for w in (a, b))
    with torch.no_grad():
        emb[ib] = emb[ia]


def test_collapsed_words_are_found_and_relearned_apart(tmp_path, world_tokenizer):
    from zoo.unet import render_folder
    from zoo.words import PROBE, collapsed_pairs, oversampled_folder, relearn_embeddings, word_distances

    runs, comps = _world_components(tmp_path, world_tokenizer)
    assert collapsed_pairs(comps) == []  # a random text encoder keeps every word apart
    _collapse(comps, "circle", "hexagon")
    assert collapsed_pairs(comps) == [(PROBE, "circle", "hexagon")]
    data = render_folder(runs / "data" / "objects", 48, size=32)
    before_unet = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    before_emb = comps.text_encoder.get_input_embeddings().weight.detach().clone()
    rows = relearn_embeddings(comps, collapsed_pairs(comps), data, tmp_path / "emb", steps=30, batch_size=2, lr=5e-2)
    assert sorted(rows) == ["circle", "hexagon"]
    assert collapsed_pairs(comps) == []
    assert word_distances(comps, ("circle", "hexagon"))[("circle", "hexagon")] > 1.0
    after = comps.text_encoder.get_input_embeddings().weight.detach()
    changed = (after != before_emb).any(dim=1).nonzero().flatten().tolist()
    ids = sorted(comps.tokenizer(w, add_special_tokens=False).input_ids[0] for w in rows)
    assert changed == ids  # only the two words' rows moved
    assert all(torch.equal(v, before_unet[k]) for k, v in comps.unet.state_dict().items())
    assert not any(p.requires_grad for p in comps.text_encoder.parameters())  # frozen again afterwards

    folder = oversampled_folder(tmp_path / "over", data, ("circle", "hexagon"))
    src = [json.loads(r) for r in (data / "metadata.jsonl").read_text().splitlines()]
    out = [json.loads(r) for r in (folder / "metadata.jsonl").read_text().splitlines()]
    extra = [r for r in src if {"circle", "hexagon"} & set(r["text"].replace(":", " ").replace(",", " ").split())]
    assert extra and len(out) == len(src) + len(extra)
    assert all((folder / r["file_name"]).is_file() for r in out)


def test_words_stage_relearns_then_trains_the_unet_with_the_text_encoder_held(tmp_path, world_tokenizer, monkeypatch):
    from zoo import recipe, unet
    from zoo.export import load_trained_components
    from zoo.words import collapsed_pairs

    runs = _tiny_runs(tmp_path, world_tokenizer)
    recipe.stage_unet(runs, steps=1, batch_size=2, n_images=24, checkpoint_every=1, log_every=1)
    recipe.stage_unet_faces(runs, steps=1, batch_size=2, n_faces=2, checkpoint_every=1, log_every=1)
    recipe.stage_unet_cooldown(runs, steps=1, batch_size=2, checkpoint_every=1, log_every=1, warmup_steps=0)
    warm = unet.warm_start

    def collapsing_warm_start(comps, run, use_ema=False):  # the shipped base's defect, made on purpose
        warm(comps, run, use_ema)
        _collapse(comps, "circle", "hexagon")

    monkeypatch.setattr(unet, "warm_start", collapsing_warm_start)
    recipe.stage_unet_words(
        runs, steps=2, batch_size=2, checkpoint_every=2, log_every=1, warmup_steps=0, relearn_steps=20
    )
    record = json.loads((runs / "unet_words" / "words.json").read_text())
    assert record["words"] == ["circle", "hexagon"]
    assert recipe.base_run(runs) == runs / "unet_words"
    rows = (runs / "data" / "objects_faces_words" / "metadata.jsonl").read_text().splitlines()
    assert any(json.loads(r)["file_name"].startswith("x0_") for r in rows)
    comps, _ = load_trained_components(runs / "unet_words", recipe.vae_dir(runs), recipe.tokenizer_dir(runs))
    assert collapsed_pairs(comps) == []  # the exported text encoder keeps the words apart
    probe = unet.build_components(recipe.vae_dir(runs), recipe.tokenizer_dir(runs))
    collapsing_warm_start(probe, runs / "unet_cooldown", use_ema=True)
    te, te0 = comps.text_encoder.state_dict(), probe.text_encoder.state_dict()
    held = [k for k in te if not k.endswith("token_embedding.weight")]
    diff = {k: float((te[k].float() - te0[k].float()).abs().max()) for k in held}
    assert max(diff.values()) == 0, {k: v for k, v in diff.items() if v}  # text_encoder_lr=0: held as re-learned
    assert not all(torch.equal(v, probe.unet.state_dict()[k]) for k, v in comps.unet.state_dict().items())


def test_export_keeps_the_bytes_of_unchanged_files(tmp_path):
    from tailor.core.io import save_tensors
    from zoo.export import keep_unchanged

    old, new = tmp_path / "old", tmp_path / "new"
    t = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3, dtype=torch.float16)}
    save_tensors(old / "same.safetensors", t, {"a": "1", "b": "2"})
    save_tensors(new / "same.safetensors", dict(reversed(t.items())), {"b": "2", "a": "1"})  # other header order
    save_tensors(old / "changed.safetensors", t, {"a": "1"})
    save_tensors(new / "changed.safetensors", {**t, "w": t["w"] + 1}, {"a": "1"})
    save_tensors(old / "meta.safetensors", t, {"a": "1"})
    save_tensors(new / "meta.safetensors", t, {"a": "2"})
    (old / "cfg.json").write_text("{}")
    (new / "cfg.json").write_text("{}")
    (new / "fresh.json").write_text("{}")
    assert keep_unchanged(new, old) == ["cfg.json", "same.safetensors"]
    assert (new / "same.safetensors").read_bytes() == (old / "same.safetensors").read_bytes()
    assert (new / "changed.safetensors").read_bytes() != (old / "changed.safetensors").read_bytes()
    assert (new / "meta.safetensors").read_bytes() != (old / "meta.safetensors").read_bytes()


def test_unet_long_stage_goes_on_from_the_words_run_at_a_constant_lr_with_the_encoder_held(tmp_path, monkeypatch):
    from zoo import recipe

    seen = {}
    monkeypatch.setattr(
        recipe, "_phase", lambda runs, stage, data, steps, **kw: seen.update(stage=stage, data=data, steps=steps, **kw)
    )
    recipe.stage_unet_long(tmp_path, 100, batch_size=16)
    assert seen["stage"] == "unet-long" and seen["steps"] == 100 and seen["batch_size"] == 16
    assert seen["data"] == tmp_path / "data" / "objects_faces_words"
    assert seen["init"] == tmp_path / "unet_words" and seen["init_ema"] and seen["lr"] == 5e-4
    assert seen["lr_scheduler"] == "constant" and seen["method_options"] == {"text_encoder_lr": 0.0}
    assert recipe.DEFAULT_STAGES == recipe.STAGES  # the shipped base comes from unet-long's decay phase
    (tmp_path / "unet_long" / "checkpoints" / "step-000001").mkdir(parents=True)
    assert recipe.base_run(tmp_path) == tmp_path / "unet"  # never the undecayed constant-LR run


def test_unet_long_decay_stage_warm_starts_from_the_newest_long_checkpoint_and_records_it(tmp_path, monkeypatch):
    from zoo import recipe

    seen = {}
    monkeypatch.setattr(
        recipe, "_phase", lambda runs, stage, data, steps, **kw: seen.update(stage=stage, data=data, steps=steps, **kw)
    )
    with pytest.raises(ConfigError, match="run `--only unet-long` there first"):
        recipe.stage_unet_long_decay(tmp_path, 50)
    for step in (200, 400):
        (tmp_path / "unet_long" / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
    recipe.stage_unet_long_decay(tmp_path, 50)
    assert seen["stage"] == "unet-long-decay" and seen["steps"] == 50 and seen["batch_size"] == 16
    newest = tmp_path / "unet_long" / "checkpoints" / "step-000400"
    assert seen["init"] == newest and seen["init_ema"] and seen["lr"] == 2e-4  # that folder, not "the newest" later
    assert seen["lr_scheduler"] == "cosine" and seen["method_options"] == {"text_encoder_lr": 0.0}
    assert seen["data"] == tmp_path / "data" / "objects_faces_words"
    record = json.loads((tmp_path / "unet_long_decay" / "init.json").read_text())
    assert record["step"] == 400 and record["init"].endswith("step-000400") and record["use_ema"]
    assert recipe.STAGES.index("unet-long-decay") == recipe.STAGES.index("unet-long") + 1
    (tmp_path / "unet_words" / "checkpoints" / "step-000001").mkdir(parents=True)
    assert recipe.base_run(tmp_path) == tmp_path / "unet_words"
    (tmp_path / "unet_long_decay" / "checkpoints" / "step-000050").mkdir(parents=True)
    assert recipe.base_run(tmp_path) == tmp_path / "unet_long_decay"  # the base is exported from the decay


@pytest.mark.skipif(not _shipped("oracles/segmenter_scenes.safetensors"), reason="segmenter_scenes not shipped")
def test_seg_scores_name_their_segmenter():
    """The seg controllability score reads with the first segmenter unless told: on real renders the scene segmenter
    reads the shapes (mIoU ~0.9), the first one mostly the background."""
    from PIL import Image

    from tailor.bench.control import held_out, seg_miou
    from tailor.eval.control import SEGMENTER

    samples = held_out(8, 64)
    images = [Image.fromarray(s.image) for s in samples]
    first, scenes = seg_miou(images, samples), seg_miou(images, samples, "segmenter_scenes")
    assert SEGMENTER == "segmenter" and seg_miou(images, samples, SEGMENTER) == first
    assert scenes > 0.8 and first < 0.5, (first, scenes)
