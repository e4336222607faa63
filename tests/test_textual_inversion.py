"""Textual Inversion (Gal et al. 2022): placeholder rows only, init word, multi-vector tokens, exact unpatch, the four
file forms, diffusers' own ``load_textual_inversion`` on our file, A1111 files, SDXL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tailor
from tailor.core.components import tiny_components
from tailor.core.pipeline import Pipeline
from tailor.core.prompts import tokenize
from tailor.core.training import TrainConfig, train
from tailor.errors import ConfigError, IncompatibleError
from tailor.methods.textual_inversion import TextualInversionMethod as TI

PROMPT = "a photo of <s*> on grass"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ti_data")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("a red thing\n")
    return folder


def fit(method, comps, data, out, steps=2):
    cfg = TrainConfig(base="tiny", out=str(out), data=str(data), steps=steps, batch_size=1, resolution=32, lr=5e-2)
    return train(method, cfg, components=comps)


def gen(comps, method=None, prompt=PROMPT):
    pipe = Pipeline(comps)
    if method is not None:
        pipe.attach(method)
    out = pipe.generate(prompt, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    return out


def table(te) -> torch.Tensor:
    return te.get_input_embeddings().weight.detach().clone()


def test_only_new_rows_train_and_unpatch_restores_exactly(data, tmp_path):
    comps = tiny_components()
    rows, n_tok = table(comps.text_encoder), len(comps.tokenizer)
    te_state = {k: v.clone() for k, v in comps.text_encoder.state_dict().items()}
    tok = comps.tokenizer
    plain = gen(comps)
    method = TI(token="<s*>", init_word="red", num_vectors=2)
    init = None

    def grab(m):
        nonlocal init
        init = m.vectors["clip_l"].detach().clone()

    method.patch(comps)
    grab(method)
    assert [p.shape for p in method.trainable_parameters()] == [torch.Size([2, 64])]
    fit(method, comps, data, tmp_path / "run")
    # every base row is bit-identical while attached; the placeholder ids look up the trained vectors
    assert torch.equal(table(comps.text_encoder), rows)
    ids = torch.arange(len(comps.tokenizer))[None]
    looked_up = comps.text_encoder.get_input_embeddings()(ids)[0]
    new_ids = comps.tokenizer.convert_tokens_to_ids(["<s*>", "<s*>_1"])
    assert torch.equal(looked_up[:n_tok], rows[:n_tok])
    assert torch.equal(looked_up[new_ids], method.vectors["clip_l"].detach())
    assert (method.vectors["clip_l"].detach() - init).abs().max() > 0, "training must move the new vectors"
    assert gen(comps, prompt=PROMPT).shape == plain.shape
    method.unpatch()
    assert comps.tokenizer is tok and len(comps.tokenizer) == n_tok
    assert all(torch.equal(v, te_state[k]) for k, v in comps.text_encoder.state_dict().items())
    assert np.abs(gen(comps) - plain).max() == 0


def test_init_word_and_multi_vector_expansion():
    comps = tiny_components()
    method = TI(token="<s*>", init_word="red", num_vectors=2)
    method.patch(comps)
    word = comps.tokenizer("red", add_special_tokens=False).input_ids  # three byte tokens r, e, d</w>
    emb = comps.text_encoder.get_input_embeddings().weight
    # A1111: vector i is the init word's token i * k // n
    assert torch.equal(method.vectors["clip_l"].detach(), emb[[word[0], word[1]]].detach())
    ids = tokenize(comps.tokenizer, ["a <s*> cat"], comps.device)[0].tolist()
    new = comps.tokenizer.convert_tokens_to_ids(["<s*>", "<s*>_1"])
    at = ids.index(new[0])
    assert ids[at : at + 2] == new and ids.count(new[0]) == 1
    method.unpatch()
    with pytest.raises(ConfigError, match="init_word"):
        TI(init_word="   ").patch(tiny_components())
    with pytest.raises(ConfigError, match="token"):
        TI(token="two words")


def test_all_file_forms_round_trip(tmp_path):
    comps = tiny_components()
    method = TI(token="<cat-toy>", init_word="cat", num_vectors=3)
    method.patch(comps)
    with torch.no_grad():
        method.vectors["clip_l"].normal_()
    expected = method.vectors["clip_l"].detach().clone()
    out = gen(comps, prompt="a <cat-toy> photo")  # the attached method acts on every prompt of this base
    method.save(tmp_path)
    method.unpatch()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cat-toy.pt", "learned_embeds.safetensors", "textual_inversion.safetensors"]
    raw = torch.load(tmp_path / "cat-toy.pt", weights_only=True)
    assert raw["string_to_token"] == {"*": 265} and raw["name"] == "<cat-toy>"
    assert {"step", "sd_checkpoint", "sd_checkpoint_name"} <= set(raw)
    assert torch.equal(raw["string_to_param"]["*"], expected)
    from safetensors.torch import load_file, save_file

    save_file({"emb_params": expected}, str(tmp_path / "kohya.safetensors"))
    forms = {
        "textual_inversion.safetensors": "<cat-toy>",
        "learned_embeds.safetensors": "<cat-toy>",
        "cat-toy.pt": "cat-toy",
        "kohya.safetensors": "kohya",
    }
    for name, token in forms.items():
        loaded = tailor.load(tmp_path / name)
        assert isinstance(loaded, TI) and loaded.config.token == token and loaded.config.num_vectors == 3
        assert torch.equal(loaded.state_dict()["textual_inversion.clip_l"], expected)
        again = gen(tiny_components(), loaded, prompt=f"a {token} photo")
        assert np.abs(again - out).max() == 0, name
    assert list(load_file(str(tmp_path / "learned_embeds.safetensors"))) == ["<cat-toy>"]


def test_diffusers_load_textual_inversion_gives_our_image(tmp_path):
    comps = tiny_components()
    method = TI(token="<s*>", init_word="star", num_vectors=2)
    method.patch(comps)
    with torch.no_grad():
        method.vectors["clip_l"].normal_()
    method.save(tmp_path)
    method.unpatch()
    ours = gen(tiny_components(), tailor.load(tmp_path / "learned_embeds.safetensors"))

    ref_comps = tiny_components()
    pipe = ref_comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(str(tmp_path / "learned_embeds.safetensors"))
    ref = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, guidance_scale=3.0,
               output_type="np").images  # fmt: skip
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.abs(ours - gen(tiny_components(), prompt=PROMPT)).max() > 1e-3, "the embedding must matter"
    # the A1111 .pt we write loads in diffusers too (the token is given, as for any A1111 file)
    pipe = tiny_components().diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(str(tmp_path / "s_.pt"), token="<s*>")
    ref = pipe(PROMPT, generator=[torch.Generator().manual_seed(0)], num_inference_steps=2, guidance_scale=3.0,
               output_type="np").images  # fmt: skip
    assert np.abs(ours - ref).max() <= 1e-4


def test_hand_built_a1111_pt_loads(tmp_path):
    vec = torch.randn(2, 64)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "x", "step": 500,
                "sd_checkpoint": "abcd1234", "sd_checkpoint_name": "v1-5"}, tmp_path / "my style.pt")  # fmt: skip
    method = tailor.load(tmp_path / "my style.pt")
    assert isinstance(method, TI) and method.config.token == "my_style"
    comps = tiny_components()
    Pipeline(comps).attach(method).generate("in my_style", steps=1)
    assert torch.equal(method.vectors["clip_l"].detach(), vec)
    # an embedding of another width is refused with both widths named
    torch.save({"string_to_param": {"*": torch.randn(1, 768)}}, tmp_path / "sd15.pt")
    with pytest.raises(IncompatibleError, match="768.*64"):
        tailor.load(tmp_path / "sd15.pt").patch(tiny_components())


def test_sdxl_both_encoders_train_save_reload(data, tmp_path):
    comps = tiny_components(sdxl=True)
    rows = (table(comps.text_encoder), table(comps.text_encoder_2))
    method = TI(token="<s*>", init_word="red")
    method.patch(comps)
    assert {k: tuple(v.shape) for k, v in method.vectors.items()} == {"clip_l": (1, 24), "clip_g": (1, 40)}
    fit(method, comps, data, tmp_path / "run", steps=1)
    trained = gen(comps, prompt=PROMPT)  # attached: the trainer patched nothing new
    assert torch.equal(table(comps.text_encoder), rows[0]) and torch.equal(table(comps.text_encoder_2), rows[1])
    method.unpatch()
    assert len(comps.tokenizer) == len(comps.tokenizer_2) == 514
    names = sorted(p.name for p in (tmp_path / "run").glob("*.safetensors"))
    assert names == ["learned_embeds.safetensors", "learned_embeds_2.safetensors", "s_.safetensors",
                     "textual_inversion.safetensors"]  # fmt: skip
    for f in ("run", "run/s_.safetensors", "run/learned_embeds.safetensors"):
        loaded = tailor.load(tmp_path / f)
        token = loaded.config.token
        out = gen(tiny_components(sdxl=True), loaded, prompt=PROMPT.replace("<s*>", token))
        assert np.abs(out - trained).max() == 0  # same vectors under either token name
    sdxl_file, sd = tailor.load(tmp_path / "run" / "s_.safetensors"), tiny_components()
    with pytest.raises(IncompatibleError, match="SDXL"):
        sdxl_file.patch(sd)
    assert sdxl_file.components is None and len(sd.tokenizer) == 514
    sdxl_file.patch(tiny_components(sdxl=True))  # the refused method still holds its vectors


def test_two_embeddings_at_once_then_detach_restores():
    comps = tiny_components()
    tok, plain = comps.tokenizer, gen(comps, prompt="<a*> and <b*>")
    a, b = TI(token="<a*>", init_word="red"), TI(token="<b*>", init_word="blue", num_vectors=2)
    pipe = Pipeline(comps).attach(a).attach(b)
    ids = tokenize(comps.tokenizer, ["<a*> and <b*>"], comps.device)[0].tolist()
    assert set(comps.tokenizer.convert_tokens_to_ids(["<a*>", "<b*>", "<b*>_1"])) <= set(ids)
    both = pipe.generate("<a*> and <b*>", seed=0, steps=2, guidance=3.0).array
    assert np.abs(both - plain).max() > 0
    pipe.detach()
    assert comps.tokenizer is tok and len(tok) == 514
    assert np.abs(gen(comps, prompt="<a*> and <b*>") - plain).max() == 0
