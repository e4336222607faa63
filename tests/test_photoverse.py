"""PhotoVerse (Chen et al. 2023): the loss terms against their formulas (x0 against diffusers' DDPMScheduler, the
face-ID loss through the conditioning embedder only: the FaceSim oracle is never called), the word injection, the
image branch's low-rank K / V, the file round trip, bad inputs, a tiny train / generate and the test-time tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tailor
import tailor.world as world
from tailor.core.pipeline import Pipeline
from tailor.errors import FormatError, InputError
from tailor.methods.photoverse import PhotoVerseMethod, formats
from tailor.methods.photoverse.modules import LowRankKV, clip_input, face_id_loss, predicted_clean

OPTS = {"image_encoder": "tiny", "adapter_width": 16, "image_tokens": 2, "placeholder": "a"}  # tiny: "a" is 1 token
PROMPT = "a photo of a red star"


def face(seed: int = 3, identity: int = 901, size: int = 32) -> Image.Image:
    return world.render_face(seed, identity=identity, size=size).pil()


def generate(method, comps=None, prompt=PROMPT, **inputs):
    inputs.setdefault("face", face())
    pipe = Pipeline(comps or tailor.tiny_components()).attach(method, **inputs)
    try:
        return pipe.generate(prompt, n=1, seed=0, steps=2, guidance=3.0).array
    finally:
        pipe.detach()


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1) / 127.5 - 1


# --------------------------------------------------------------------- formulas
@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_predicted_clean_matches_diffusers(ptype):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type=ptype, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x, pred = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 400, 999])
    ours = predicted_clean(x, pred, t, sched.alphas_cumprod, ptype)
    for i in range(3):
        ref = sched.step(pred[i : i + 1], int(t[i]), x[i : i + 1], generator=g).pred_original_sample
        assert torch.allclose(ours[i : i + 1], ref, atol=1e-5)


def test_face_id_loss_and_low_rank_kv():
    a, b = torch.randn(4, 16), torch.randn(4, 16)
    ref = 1 - (a / a.norm(dim=1, keepdim=True) * b / b.norm(dim=1, keepdim=True)).sum(1)
    assert torch.allclose(face_id_loss(a, b), ref.mean(), atol=1e-6)
    assert float(face_id_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    base = torch.nn.Linear(8, 6, bias=False)
    kv = LowRankKV(base, rank=2, alpha=4.0)
    x = torch.randn(5, 8)
    assert torch.equal(kv(x), base(x))  # B starts at zero: the branch starts as the base's K / V
    torch.nn.init.normal_(kv.lora_B.weight)
    want = x @ base.weight.T + 2.0 * (x @ kv.lora_A.weight.T @ kv.lora_B.weight.T)
    assert torch.allclose(kv(x), want, atol=1e-5)
    assert set(kv.state_dict()) == {"lora_A.weight", "lora_B.weight"}  # the base weight is never saved


def test_word_injection_and_placeholder_rules():
    from tailor.core.placeholder import WordInjection, insert_before, placeholder_position

    assert insert_before("a sketch of a woman on grass", "woman", "S") == "a sketch of a S woman on grass"
    assert insert_before("a S woman", "woman", "S") == "a S woman"
    assert insert_before("a womanly cat", "woman", "S") == "a womanly cat"
    comps = tailor.tiny_components()
    tok, emb = comps.tokenizer, comps.text_encoder.get_input_embeddings()
    pos = placeholder_position(tok, "the red a star", "a")
    ids = torch.tensor([tok("the red a star", padding="max_length", max_length=tok.model_max_length).input_ids])
    word = torch.randn(emb.weight.shape[1])
    inj = WordInjection(emb, int(ids[0, pos]))
    with inj.rows([(0, pos, word)]):
        out = emb(ids)
    inj.remove()
    plain = emb(ids)
    assert torch.equal(out[0, pos], word) and torch.equal(out[0, :pos], plain[0, :pos])
    assert torch.equal(out[0, pos + 1 :], plain[0, pos + 1 :])


def test_loss_terms_numerically_and_oracle_never_called(monkeypatch):
    """One micro-step: the loss is MSE + face x (1 - cos) + word x mean|word| + values x mean|V|, each term recomputed
    here; the face embeddings come from the conditioning embedder and the oracle is never touched."""
    from diffusers import DDPMScheduler

    import tailor.eval.identity as ident
    import tailor.faces.embedders as emb_mod
    import tailor.world.zoo.oracles as oracles
    from tailor.core.training import TrainConfig
    from tailor.core.training.objective import Objective

    def never(*a, **k):
        raise AssertionError("the FaceSim oracle was called")

    monkeypatch.setattr(oracles, "load_oracle", never)
    monkeypatch.setattr(ident, "face_embeddings", never)
    calls = []
    real = emb_mod.face_embedder

    def spy(spec=None):
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(emb_mod, "face_embedder", spy)
    comps = tailor.tiny_components()
    m = PhotoVerseMethod(**OPTS, face_loss=0.5, reg_word=0.3, reg_values=0.2)
    m.patch(comps)
    seen = {}
    loss_fn = m.loss

    def keep(pred, target, state, weights):
        seen.update(pred=pred.detach(), target=target, state=state)
        return loss_fn(pred, target, state, weights)

    m.loss = keep
    ref = torch.stack([_tensor(face(s, 900 + s)) for s in (1, 2)])
    target_images = torch.stack([_tensor(face(s + 10, 900 + s)) for s in (1, 2)])
    batch = {"pixel_values": target_images, "id_pixel_values": ref, "caption": [PROMPT, "the red star"]}
    obj = Objective(comps, m, TrainConfig(base="tiny", seed=0), 32)
    loss, logs = obj.loss(batch, [(0, 0), (0, 1)], [0, 1], 0, 0, 1, dropout=False)
    assert calls, "the conditioning face embedder was not used"
    st = seen["state"]
    mse = (seen["pred"].float() - seen["target"].float()).pow(2).mean()
    cfg = dict(comps.scheduler.config, clip_sample=False, thresholding=False)
    sched = DDPMScheduler.from_config(cfg)
    rows = [sched.step(seen["pred"][i : i + 1], int(st.timestep[i]), st.latents[i : i + 1]) for i in range(2)]
    x0 = torch.cat([r.pred_original_sample for r in rows])
    from tailor.core.latents import vae_decode

    with torch.no_grad():
        image = (vae_decode(comps.vae, x0).float() / 2 + 0.5).clamp(0, 1)
        embedder = real(None)
        gen, refe = embedder.embed(image), embedder.embed((ref + 1) / 2)
        face_term = (1 - F.cosine_similarity(gen, refe, dim=-1)).mean()
        p = next(m.encoder.parameters())
        feats = torch.cat([h[:, 0] for h in m.encoder(clip_input(ref, m.processor).to(p), output_hidden_states=True)
                           .hidden_states[1:]], -1)  # fmt: skip
        word = m.adapters.text(feats).abs().mean()
        tokens = m.adapters(feats)[1]
        values = torch.stack([v(tokens).abs().mean() for v in m.branch.to_v_ip]).mean()
    want = mse + 0.5 * face_term + 0.3 * word + 0.2 * values
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-4, abs=1e-5)
    assert logs["face"] == pytest.approx(float(face_term), rel=1e-4)
    loss.backward()  # gradients reach both adapters and the image branch's LoRA
    assert m.adapters.text.fc2.weight.grad is not None and m.adapters.image.fc2.weight.grad is not None
    assert m.branch.to_k_ip[0].lora_A.weight.grad is not None
    m.unpatch()


# --------------------------------------------------------------------- files
def test_file_round_trip_reproduces_and_refuses_foreign_files(tmp_path):
    from tailor.core.io import load_tensors, save_tensors

    comps = tailor.tiny_components()
    m = PhotoVerseMethod(**OPTS)
    m.patch(comps)
    with torch.no_grad():  # non-trivial weights everywhere
        for p in [*m.adapters.parameters(), *m.branch.parameters(), *m.lora.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    state = m.state_dict()
    assert {k.split(".")[0] for k in state} == {"adapters", "image_branch", "unet"}
    assert all(".attn2.to_" in k for k in state if k.startswith("unet."))
    path = m.save(tmp_path / "m")
    before = generate(m, comps)
    m.unpatch()
    loaded = tailor.load(path)
    assert loaded.name == "photoverse"
    after = generate(loaded, comps)
    assert np.allclose(before, after, atol=1e-6)
    back = loaded.state_dict()
    assert all(torch.equal(state[k], back[k]) for k in state)
    bad = dict(load_tensors(path), **{"other.weight": torch.zeros(1)})
    save_tensors(tmp_path / "bad.safetensors", bad, {})
    with pytest.raises(FormatError, match="not a PhotoVerse key"):
        formats.from_file(bad, "bad.safetensors")
    with pytest.raises(FormatError, match="no PhotoVerse adapters"):
        formats.from_file({k: v for k, v in state.items() if not k.startswith("adapters.")}, "x")


# --------------------------------------------------------------------- bad input
def test_bad_inputs_one_sentence(tmp_path, capsys):
    from tailor.cli import main

    with pytest.raises(InputError, match="lacks PhotoVerse's placeholder"):
        generate(PhotoVerseMethod(**OPTS), prompt="the red star")
    blank = Image.fromarray(np.full((32, 32, 3), 128, np.uint8))
    with pytest.raises(InputError, match="no face found"):
        generate(PhotoVerseMethod(**OPTS), face=blank)
    m = PhotoVerseMethod(**OPTS)
    m.patch(tailor.tiny_components())
    art = m.save(tmp_path / "m")
    face().save(tmp_path / "face.png")
    blank.save(tmp_path / "blank.png")
    base = ["generate", "--base", "tiny", "-n", "1", "--steps", "1", "--out", str(tmp_path / "o")]
    code = main([*base, "-p", "the red star", "--photoverse", str(art), "--face", str(tmp_path / "face.png")])
    err = capsys.readouterr().err
    assert code == 2 and "placeholder" in err and "Traceback" not in err and "\n" not in err.strip()
    code = main([*base, "-p", PROMPT, "--photoverse", str(art), "--face", str(tmp_path / "blank.png")])
    err = capsys.readouterr().err
    assert code == 2 and "blank.png" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    code = main([*base, "-p", PROMPT, "--photoverse", str(art), "--face", str(tmp_path / "face.png")])
    assert code == 0 and (tmp_path / "o" / "000.png").is_file()


def test_cli_tune_steps_flag_tunes(tmp_path, monkeypatch):
    """``--photoverse-tune-steps N`` reaches the attached method's config and runs the test-time tuning."""
    from tailor.cli import main

    m = PhotoVerseMethod(**OPTS)
    m.patch(tailor.tiny_components())
    art = m.save(tmp_path / "m")
    face().save(tmp_path / "face.png")
    seen = []
    real = PhotoVerseMethod._tune
    monkeypatch.setattr(PhotoVerseMethod, "_tune", lambda self, inputs: (seen.append(self.config.tune_steps),
                                                                         real(self, inputs))[1])  # fmt: skip
    base = ["generate", "--base", "tiny", "-n", "1", "--steps", "1", "-p", PROMPT, "--photoverse", str(art),
            "--face", str(tmp_path / "face.png")]  # fmt: skip
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0 and seen == []
    assert main([*base, "--out", str(tmp_path / "tuned"), "--photoverse-tune-steps", "2"]) == 0 and seen == [2]


# --------------------------------------------------------------------- train / generate / tune
def test_tiny_train_generate_and_test_time_tuning(tmp_path):
    from tailor.core.training import TrainConfig, train

    comps = tailor.tiny_components()
    m = PhotoVerseMethod(**OPTS, face_loss=0.1)
    fresh = PhotoVerseMethod(**OPTS)
    fresh.patch(tailor.tiny_components())
    start = fresh.state_dict()
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "t"), steps=2, batch_size=2, resolution=32, lr=1e-2,
                      data="world:faces")  # fmt: skip
    train(m, cfg, components=tailor.tiny_components())  # training leaves its method attached to its components
    assert '"face"' in (tmp_path / "t" / "log.jsonl").read_text()
    trained = tailor.load(tmp_path / "t")
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    assert any(not torch.equal(start[k], state[k]) for k in start if k.startswith("adapters."))
    plain = generate(trained, comps)
    assert np.isfinite(plain).all()
    tuned = tailor.load(tmp_path / "t")
    tuned.config = tuned.config.replace(tune_steps=2, tune_batch=2, tune_lr=0.05)
    out = generate(tuned, comps)
    assert tuned.adapt_seconds > 0 and not np.allclose(out, plain)
    after = tuned.state_dict()  # detach restored the untuned LoRAs
    assert all(torch.equal(state[k], after[k].to(state[k].dtype)) for k in state)


# --------------------------------------------------------------------- shipped world weights
def test_shipped_world_weights_load_by_name_within_budget():
    from tailor.compose.flags import load_kind
    from tailor.core.io import load_tensors
    from tailor.world.zoo import WEIGHTS

    folder = WEIGHTS / "adapters" / "photoverse"
    if not (folder / "tailor.json").is_file():
        pytest.skip("the world PhotoVerse weights are not trained yet")
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 2**20  # the 1 MB budget
    tensors = load_tensors(folder / "photoverse.safetensors")
    assert {v.dtype for v in tensors.values()} == {torch.float16}
    for name in ("photoverse", "world"):
        assert load_kind(name, "photoverse").name == "photoverse"
    comps = tailor.load_components("world")
    m = load_kind("photoverse", "photoverse")
    out = generate(m, comps, prompt="a photo of a S man on snow", face=face(size=64))
    assert np.isfinite(out).all() and out.shape == (1, 64, 64, 3)
