"""ELITE (Wei et al., ICCV 2023): mapper formulas and keys, word injection at the placeholder, the K/V copies, the
gated local attention, the official global_mapper.pt / local_mapper.pt layouts, both training stages, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import ConfigError, InputError
from tailor.methods.elite import ELITEMethod, formats
from tailor.methods.elite.modules import Mapper, expand_prompt, vision_layers

OPTS = {"image_encoder": "tiny", "mapper_width": 16, "placeholder": "a"}  # tiny tokenizer: "a" is one token
PROMPT = "a photo of a red star"


def ref_image(seed: int = 0, size: int = 32) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def official_state(comps, dim_in: int = 64, width: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random mapper state in the official layout, built from the layout's description (not from tailor's code):
    ``mapping_{i}`` / ``mapping_patch_{i}`` Sequentials of Linear, LayerNorm, LeakyReLU, Linear, LayerNorm,
    LeakyReLU, Linear, and ``<attn2 path with _>_to_k/_to_v.weight``."""
    g = torch.Generator().manual_seed(seed)
    out_dim = comps.text_encoder.config.hidden_size
    state = {}
    for i in range(5):
        for head in (f"mapping_{i}", f"mapping_patch_{i}"):
            for idx, (o, n) in {0: (width, dim_in), 3: (width, width), 6: (out_dim, width)}.items():
                state[f"{head}.{idx}.weight"] = torch.randn(o, n, generator=g) * 0.1
                state[f"{head}.{idx}.bias"] = torch.randn(o, generator=g) * 0.1
            for idx in (1, 4):
                state[f"{head}.{idx}.weight"] = 1 + 0.1 * torch.randn(width, generator=g)
                state[f"{head}.{idx}.bias"] = 0.1 * torch.randn(width, generator=g)
    for name, m in comps.unet.named_modules():
        if name.endswith("attn2"):
            for which in ("to_k", "to_v"):
                w = getattr(m, which).weight
                state[f"{name.replace('.', '_')}_{which}.weight"] = torch.randn(w.shape, generator=g) * 0.1
    return state


def generate(method, comps=None, prompt=PROMPT, **inputs):
    pipe = Pipeline(comps or tailor.tiny_components()).attach(method, elite_image=ref_image(), **inputs)
    try:
        return pipe.generate(prompt, n=1, seed=0, steps=2, guidance=3.0).array
    finally:
        pipe.detach()


# --------------------------------------------------------------------- mappers
def test_mapper_formulas_and_official_keys():
    torch.manual_seed(0)
    m = Mapper(6, 5, width=7, n=2)
    keys = set(m.state_dict())
    assert {"mapping_0.0.weight", "mapping_0.1.bias", "mapping_0.3.weight", "mapping_0.4.weight",
            "mapping_0.6.bias", "mapping_patch_1.6.weight"} <= keys  # fmt: skip
    feats = [torch.randn(3, 1 + 4, 6), torch.randn(3, 1 + 4, 6)]
    words = m.words(feats)
    ref = torch.cat(
        [m.mapping_0(f[:, :1]) + m.mapping_patch_0(f[:, 1:]).mean(1, keepdim=True) for f in feats[:1]]
        + [m.mapping_1(feats[1][:, :1]) + m.mapping_patch_1(feats[1][:, 1:]).mean(1, keepdim=True)],
        1,
    )
    assert words.shape == (3, 2, 5) and torch.allclose(words, ref)
    local = m.patches(feats)
    ref = ((m.mapping_0(feats[0][:, :1]) + m.mapping_patch_0(feats[0][:, 1:]))
           + (m.mapping_1(feats[1][:, :1]) + m.mapping_patch_1(feats[1][:, 1:]))) / 2  # fmt: skip
    assert local.shape == (3, 4, 5) and torch.allclose(local, ref, atol=1e-6)
    assert isinstance(m.mapping_0[2], torch.nn.LeakyReLU) and m.mapping_0[1].normalized_shape == (7,)


def test_vision_layers_follow_the_official_fractions():
    assert vision_layers(24, []) == [-1, 4, 8, 12, 16]  # CLIP ViT-L/14: last, 4, 8, 12, 16
    assert vision_layers(4, []) == [-1, 1, 1, 2, 3]
    assert vision_layers(4, [-1, 2]) == [-1, 2]
    with pytest.raises(ConfigError, match="outside"):
        vision_layers(4, [9])


# --------------------------------------------------------------------- the prompt
def test_words_replace_the_placeholder_in_the_text_encoder_input():
    """The official splices k words at the placeholder and shifts the rest right: tailor's prompt (placeholder
    written k times) tokenizes to exactly those ids, and the token-embedding rows there are the words."""
    comps = tailor.tiny_components()
    tok = comps.tokenizer
    text, pos = expand_prompt(tok, "the photo of a red star", "a", 3)
    ids = tok(text).input_ids
    plain = tok("the photo of a red star").input_ids
    a = tok("a", add_special_tokens=False).input_ids[0]
    i = plain.index(a)
    assert pos == i and ids == plain[:i] + [a, a, a] + plain[i + 1 :]  # the official shift
    method = ELITEMethod(**OPTS)
    method.patch(comps)
    seen = {}
    emb = comps.text_encoder.get_input_embeddings()
    cond = tailor.core.prompts.encode_prompts(comps, ["the photo of a red star"], cfg=False)
    plain_h = cond.encoder_hidden_states.clone()
    words = method.global_words(*_ref_tensors())
    h = emb.register_forward_hook(lambda m, a_, out: seen.setdefault("rows", out.detach().clone()))
    out = method.encode(cond, {"elite_image": ref_image()})
    h.remove()
    method.unpatch()
    w0 = words[0, :1]  # token_index 0: the first word only at sampling
    assert torch.allclose(seen["rows"][0, pos], w0[0], atol=1e-6)
    others = [j for j in range(seen["rows"].shape[1]) if j != pos]
    padded = tok("the photo of a red star", padding="max_length", max_length=tok.model_max_length).input_ids
    assert torch.equal(seen["rows"][0, others], emb(torch.tensor(padded))[others])
    assert not torch.allclose(out.encoder_hidden_states, plain_h)


def _ref_tensors():
    from tailor.methods.elite.data import reference_tensors

    return reference_tensors(ref_image())


def test_kv_copies_replace_the_text_keys_and_detach_restores():
    comps = tailor.tiny_components()
    method = ELITEMethod(**OPTS)
    base = generate(ELITEMethod(**OPTS), comps)  # copies equal the base: only the word changes the output
    plain = Pipeline(comps).generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    method.patch(comps)
    layer = next(n for n, _ in comps.unet.named_modules() if n.endswith("attn2"))
    copy = getattr(method.global_mapper, f"{layer.replace('.', '_')}_to_k")
    with torch.no_grad():
        copy.weight.mul_(1.5)
        attn = comps.unet.get_submodule(layer)
        x = torch.randn(1, 3, attn.to_k.in_features)
        assert torch.allclose(attn.to_k(x), copy(x)) and not torch.allclose(attn.to_k.weight @ x[0].T, copy(x)[0].T)
    method.unpatch()
    assert torch.allclose(attn.to_k(x), x @ attn.to_k.weight.T)
    changed = generate(method, comps)
    assert np.abs(changed - base).max() > 0 and np.abs(base - plain).max() > 0
    again = Pipeline(comps).generate(PROMPT, n=1, seed=0, steps=2, guidance=3.0).array
    assert np.abs(again - plain).max() == 0


# --------------------------------------------------------------------- local mapper
def local_method(tmp_path, lam: float = 0.8) -> ELITEMethod:
    comps = tailor.tiny_components()
    g = ELITEMethod(**OPTS)
    g.patch(comps)
    path = g.save(tmp_path / "g")
    g.unpatch()
    return ELITEMethod(**OPTS, stage="local", global_mapper=str(path), llambda=lam)


def test_local_attention_is_gated_by_the_placeholder_map(tmp_path):
    comps = tailor.tiny_components()
    m = local_method(tmp_path)
    with torch.no_grad():
        m.patch(comps)
        for v in m.branch.to_v_ip:
            v.weight.mul_(20)  # make the local branch's effect visible
        m.unpatch()
    off = generate(m, comps, **{"lambda": 0.0})
    on = generate(m, comps, **{"lambda": 0.8})
    more = generate(m, comps, **{"lambda": 2.0})
    assert np.abs(on - off).max() > 0 and np.abs(more - off).max() > np.abs(on - off).max()
    # the gate: the placeholder column of this call's map over its maximum, only on conditional rows
    m.patch(comps)
    probs = torch.rand(2, 16, 77)
    m.store.current["x.attn2"] = probs
    m._gate_rows = torch.zeros(2, 77)
    m._gate_rows[1, 5] = 1.0
    gate = m._gate("x.attn2.processor", None)
    m.unpatch()
    assert gate.shape == (2, 16, 1) and gate[0].abs().max() == 0
    assert torch.allclose(gate[1, :, 0], probs[1, :, 5] / probs[1, :, 5].max())


def test_mean_gate_ignores_a_diffuse_map():
    """The official gate (m / max m) opens the whole frame when the placeholder's map is flat, as on the world base
    (its 4x4 / 8x8 maps): the local attention then paints the reference over the background. The 'mean' gate keeps
    only where the placeholder stands out of its own mean."""
    from tailor.methods.elite.method import gate_map

    flat = 0.02 + 0.001 * torch.linspace(0, 1, 16)[None]
    peaked = torch.full((1, 16), 0.01)
    peaked[0, 5], peaked[0, 6] = 0.2, 0.1
    assert gate_map(flat, "max").min() > 0.9  # the old gate: open everywhere
    assert gate_map(flat, "mean").mean() < 0.5 and gate_map(flat, "mean").max() == pytest.approx(1.0)
    g = gate_map(peaked, "mean")[0]
    assert g[5] == pytest.approx(1.0) and g[6] == pytest.approx((0.1 - peaked.mean()) / (0.2 - peaked.mean()))
    assert (g[[0, 1, 2, 3, 4, 7]] == 0).all()
    assert gate_map(torch.zeros(2, 16), "mean").abs().max() == 0  # unconditional rows stay closed
    assert torch.allclose(gate_map(peaked, "minmax")[0, 6], torch.tensor(0.09 / 0.19))
    with pytest.raises(ConfigError, match="gate"):
        ELITEMethod(gate="soft")


def test_local_stage_needs_a_global_stage():
    with pytest.raises(ConfigError, match="global-mapper"):
        Pipeline(tailor.tiny_components()).attach(ELITEMethod(**OPTS, stage="local"), elite_image=ref_image())


# --------------------------------------------------------------------- official files
def test_official_files_load_and_write_back_exactly(tmp_path):
    comps = tailor.tiny_components()
    g, loc = official_state(comps, seed=1), official_state(comps, seed=2)
    torch.save(g, tmp_path / "global_mapper.pt")
    assert formats.sniff(tmp_path / "global_mapper.pt")
    only_global = tailor.load(tmp_path / "global_mapper.pt")
    assert isinstance(only_global, ELITEMethod) and only_global.config.stage == "global"
    torch.save(loc, tmp_path / "local_mapper.pt")
    method = ELITEMethod.from_file(tmp_path / "local_mapper.pt", image_encoder="tiny")
    assert method.config.stage == "local" and method.config.mapper_width == 8
    out = generate(method, comps, prompt="a photo of a S")  # official files: placeholder "S"
    assert np.isfinite(out).all()
    state = method.state_dict()
    for part, ref in (("global_mapper", g), ("local_mapper", loc)):
        mine = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        assert set(mine) == set(ref) and all(torch.equal(mine[k], ref[k]) for k in ref)
    written = formats.write_official(state, tmp_path / "out")
    assert [p.name for p in written] == ["global_mapper.pt", "local_mapper.pt"]
    back = torch.load(written[1], weights_only=True)
    assert set(back) == set(loc) and all(torch.equal(back[k], loc[k]) for k in loc)
    # the tailor file round trip reproduces the output
    path = method.save(tmp_path / "t")
    assert np.abs(generate(tailor.load(path), comps, prompt="a photo of a S") - out).max() == 0


def test_official_file_errors(tmp_path):
    comps = tailor.tiny_components()
    torch.save(official_state(comps), tmp_path / "local_mapper.pt")
    with pytest.raises(InputError, match="global_mapper.pt must lie beside"):
        ELITEMethod.from_file(tmp_path / "local_mapper.pt")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "global_mapper.pt")
    assert not formats.sniff(tmp_path / "global_mapper.pt")
    state = official_state(comps)
    state.pop(next(k for k in state if k.endswith("_to_v.weight")))
    (tmp_path / "x").mkdir()
    torch.save(state, tmp_path / "x" / "global_mapper.pt")
    with pytest.raises(Exception, match="lack"):
        generate(ELITEMethod.from_file(tmp_path / "x" / "global_mapper.pt", image_encoder="tiny"), comps, "a S")


# --------------------------------------------------------------------- training
def test_both_stages_train_their_own_weights(tmp_path):
    from tailor.core.training import TrainConfig, train

    comps = tailor.tiny_components()
    g = ELITEMethod(**OPTS)
    cfg = dict(base="tiny", steps=2, batch_size=2, resolution=32, lr=1e-3, data="world:pair")
    train(g, TrainConfig(out=str(tmp_path / "g"), **cfg), components=comps)
    first = {k: v.clone() for k, v in g.state_dict().items()}
    log = (tmp_path / "g" / "log.jsonl").read_text()
    assert '"reg"' in log
    loc = ELITEMethod(**OPTS, stage="local", global_mapper=str(tmp_path / "g"))
    train(loc, TrainConfig(out=str(tmp_path / "l"), **cfg), components=tailor.tiny_components())
    after = loc.state_dict()
    glob = [k for k in first if k.startswith("global_mapper.")]
    assert all(torch.equal(first[k], after[k]) for k in glob), "the local stage keeps the global mapper frozen"
    fresh = ELITEMethod(**OPTS, stage="local", global_mapper=str(tmp_path / "g"))
    fresh.patch(tailor.tiny_components())
    assert any(not torch.equal(v, after[k]) for k, v in fresh.state_dict().items() if k.startswith("local_mapper."))
    assert np.isfinite(generate(tailor.load(tmp_path / "l"))).all()


def test_pair_views_name_the_subject_by_the_placeholder():
    from tailor.methods.elite.data import PairViews
    from tailor.world.sources import world_datasets

    data, _ = world_datasets("world:pair", 64, 0, False)
    item = PairViews(data, "S")[0]
    assert " S " in item["caption"] and item["ref_pixel_values"].shape == item["pixel_values"].shape
    assert not torch.equal(item["ref_pixel_values"], item["pixel_values"]) and 0 < item["ref_mask"].mean() < 1


# --------------------------------------------------------------------- bad input
def test_bad_inputs_one_sentence(tmp_path, capsys):
    from tailor.cli import main

    with pytest.raises(InputError, match="lacks ELITE's placeholder"):
        generate(ELITEMethod(**OPTS), prompt="the photo of the red star")
    with pytest.raises(InputError, match="16x16 but the reference image is 32x32"):
        generate(ELITEMethod(**OPTS), mask=np.ones((16, 16), bool))
    with pytest.raises(ConfigError, match="one token"):
        generate(ELITEMethod(**{**OPTS, "placeholder": "star"}))
    path = ELITEMethod(**OPTS)
    path.patch(tailor.tiny_components())
    art = path.save(tmp_path / "m")
    ref_image().save(tmp_path / "ref.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "mask.png")
    base = ["generate", "--base", "tiny", "-n", "1", "--steps", "1", "--out", str(tmp_path / "o")]
    code = main([*base, "-p", "the photo", "--elite", f"{art}={tmp_path / 'ref.png'}"])
    err = capsys.readouterr().err
    assert code == 2 and "placeholder" in err and "Traceback" not in err
    code = main([*base, "-p", PROMPT, "--elite", f"{art}={tmp_path / 'ref.png'}", "--elite-mask",
                 str(tmp_path / "mask.png")])  # fmt: skip
    assert code == 2 and "8x8 but the reference image is 32x32" in capsys.readouterr().err
    code = main([*base, "-p", PROMPT, "--elite", f"{art}={tmp_path / 'ref.png'}", "--elite-lambda", "x"])
    assert code == 2 and "--elite-lambda" in capsys.readouterr().err
    code = main([*base, "-p", PROMPT, "--elite", f"{art}={tmp_path / 'ref.png'}", "--elite-lambda", "0.5"])
    assert code == 0 and (tmp_path / "o" / "000.png").is_file()
    assert not (tmp_path / "o2").exists()


def test_class_word_and_word_init():
    from tailor.methods.elite.modules import with_placeholder

    assert with_placeholder("a photo of a star on snow", "star", "S") == "a photo of a S on snow"
    assert with_placeholder("a S by a star", "star", "S") == "a S by a star"  # already placed
    assert with_placeholder("a photo of a starfish", "star", "S") == "a photo of a starfish"  # whole words only
    comps = tailor.tiny_components()
    token = float(comps.text_encoder.get_input_embeddings().weight.norm(dim=1).mean())
    norms = {}
    for init in ("token", "official"):
        m = ELITEMethod(**OPTS, word_init=init)
        m.patch(comps)
        with torch.no_grad():
            norms[init] = float(m.global_words(*_ref_tensors()).norm(dim=-1).mean())
        m.unpatch()
    assert 0.2 * token < norms["token"] < 5 * token < norms["official"]


def test_bench_zero_shot_row_attaches_with_mask_and_class_word(tmp_path):
    import dataclasses

    from tailor.bench.image_prompt import zero_shot
    from tailor.core.method import get_spec

    comps = tailor.tiny_components()
    m = ELITEMethod(**{**OPTS, "placeholder": "S"})
    m.patch(comps)
    path = m.save(tmp_path / "m")
    m.unpatch()
    spec = get_spec("elite")
    row = dataclasses.replace(next(r for r in spec.bench if r.key == "elite-l0.4"), model=str(path))
    pipe = Pipeline(comps)
    zero_shot(pipe, spec, row, "star", ref_image(), np.ones((32, 32), bool))(1.0)
    (att,) = pipe.attachments
    assert att.method.config.llambda == 0.4 and att.inputs["class_word"] == "star" and "mask" in att.inputs
    out = pipe.generate("a photo of a star on snow", n=1, seed=0, steps=1).array
    assert np.isfinite(out).all()


def test_world_name_resolves_through_the_method_folder(monkeypatch, tmp_path):
    from tailor.core import resources
    from tailor.methods.elite import data

    assert resources.resolve("artifact:elite", "other") is None
    monkeypatch.setattr("tailor.world.zoo.WEIGHTS", tmp_path)
    with pytest.raises(InputError, match="zoo.elite"):
        data.shipped("world")
    (tmp_path / "adapters" / "elite").mkdir(parents=True)
    (tmp_path / "adapters" / "elite" / "tailor.json").write_text("{}")
    assert data.shipped("world") == tmp_path / "adapters" / "elite"


def test_shipped_world_elite_loads_by_name_and_changes_the_image():
    """The world ELITE (``python -m zoo.elite global|local|export``) ships float16 within 3 MB and, attached with a
    reference, changes what the base draws for a prompt with the placeholder."""

    import tailor.world as world
    from tailor.compose.flags import load_kind
    from tailor.core.io import load_tensors
    from tailor.world.zoo import WEIGHTS

    folder = WEIGHTS / "adapters" / "elite"
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 3e6
    assert {v.dtype for v in load_tensors(folder / "elite.safetensors").values()} == {torch.float16}
    m = load_kind("world", "elite")
    assert m.name == "elite"
    pipe = tailor.Pipeline(tailor.load_components("world"))
    kw = dict(n=1, seed=0, steps=4, guidance=5.0)
    plain = pipe.generate("a photo of a S on snow", **kw).array
    ref = world.render("a photo of a red striped star on grass", 3).pil()
    pipe.attach(m, elite_image=[ref])
    out = pipe.generate("a photo of a S on snow", **kw).array
    assert np.isfinite(out).all() and np.abs(out - plain).max() > 1e-2
    # the shipped local stage is trained and sampled with the mean gate: on this base's flat maps the official
    # m / max m leaves the local attention open over much of the frame (the smear docs/elite.md describes)
    from tailor.methods.elite.method import gate_map

    assert m.config.gate == "mean"
    opened = {how: [] for how in ("max", "mean")}
    for probs in m.store.current.values():
        maps = torch.einsum("bst,bt->bs", probs, m._gate_rows.to(probs))[-1:]  # the conditional row
        for how in opened:
            opened[how].append(float(gate_map(maps, how).mean()))
    assert np.mean(opened["mean"]) < 0.2 < np.mean(opened["max"])
    pipe.detach()
