"""PuLID (Guo et al. 2024): the alignment terms against a written-out formula, the loss override's composition, the
text-only pass on the same latents and prompt, gradients of the ID loss through the fast sampler, determinism, files
and bad inputs — on tiny random models with the shipped world face models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
import tailor.world as world
from tailor.core.conditioning import StepState
from tailor.core.pipeline import Pipeline, call_unet
from tailor.core.prompts import encode_prompts
from tailor.errors import IncompatibleError, InputError
from tailor.methods.pulid import PuLIDMethod
from tailor.methods.pulid import method as pulid_method
from tailor.methods.pulid.modules import semantic_and_layout


def test_alignment_terms_are_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    q_id, q_t = torch.randn(2, 9, 8, generator=g), torch.randn(2, 9, 8, generator=g)
    k = torch.randn(2, 5, 8, generator=g)
    sem, lay = semantic_and_layout([q_id], [k], [q_t], [k], heads=[2])
    want_sem = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)

        def read(q, sl=sl):
            return torch.softmax(k[..., sl] @ q[..., sl].transpose(1, 2) / 2.0, dim=-1) @ q[..., sl]

        want_sem.append(((read(q_id) - read(q_t)) ** 2).mean())
    assert torch.allclose(sem, torch.stack(want_sem).mean(), atol=1e-6)
    assert torch.allclose(lay, ((q_id - q_t) ** 2).mean(), atol=1e-6)
    zero = semantic_and_layout([q_t], [k], [q_t], [k], heads=[2])
    assert float(zero[0]) == 0 and float(zero[1]) == 0


def _training_state(comps, m, seed=0):
    """A training batch through the method's hooks, as the trainer runs it."""
    g = torch.Generator().manual_seed(seed)
    faces = [world.render_face(s, identity=900 + s, size=32) for s in range(2)]
    px = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1).float() / 127.5 - 1 for f in faces])
    emb = torch.stack([m._face_of((px[i : i + 1] + 1) / 2)[0] for i in range(2)]).detach()
    cond = encode_prompts(comps, [f.caption for f in faces], None, cfg=False)
    f = comps.vae_scale_factor
    inputs = {"pixel_values": px, "face_embedding": emb}
    cond = m.encode(cond, inputs)
    noisy = torch.randn(2, 4, 32 // f, 32 // f, generator=g)
    t = torch.tensor([500, 700])
    state = StepState(noisy, t, cond, step=3, num_steps=10, training=True, inputs=inputs)
    pred = call_unet(comps.unet, noisy, t, cond, {})
    return state, pred, torch.randn(pred.shape, generator=g)


def _trained_like(comps, **kw):
    m = PuLIDMethod(num_tokens=4, id_steps=2, **kw)
    m.patch(comps)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in list(m.proj.parameters()) + list(m.branch.parameters()):
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    for mod in m.modules():
        mod.train()
    return m


def test_loss_composition_and_the_text_only_pass(monkeypatch):
    comps = tailor.tiny_components()
    m = _trained_like(comps)
    seen = {}
    real = pulid_method.semantic_and_layout

    def spy(q_id, k_id, q_t, k_t, heads):
        seen.update(q_id=q_id, q_t=q_t, k_id=k_id, k_t=k_t)
        return real(q_id, k_id, q_t, k_t, heads)

    monkeypatch.setattr(pulid_method, "semantic_and_layout", spy)
    state, pred, target = _training_state(comps, m)
    total, logs = m.loss(pred, target, state, None)
    want = logs["mse"] + 0.6 * logs["align_semantic"] + 0.1 * logs["align_layout"] + 1.0 * logs["id_loss"]
    assert abs(float(total.detach()) - want) < 1e-5
    assert logs["align_semantic"] > 0 and logs["align_layout"] > 0 and 0 < logs["id_loss"] < 2
    n = len(m.branch.layer_names)
    assert len(seen["q_id"]) == len(seen["q_t"]) == n
    # the first cross-attention layer sees no ID yet: same latents + prompt give the same queries and keys
    assert torch.allclose(seen["q_id"][0], seen["q_t"][0], atol=1e-6)
    assert torch.allclose(seen["k_id"][-1], seen["k_t"][-1], atol=1e-6)
    assert (seen["q_id"][-1] - seen["q_t"][-1]).abs().amax() > 1e-4  # later layers: the ID changes them
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.proj.parameters() if p.requires_grad)
    m.unpatch()


def test_id_loss_gradients_and_deterministic_fast_sampling():
    comps = tailor.tiny_components()
    m = _trained_like(comps, align_semantic=0.0, align_layout=0.0)
    state, pred, target = _training_state(comps, m)
    a = m._fast_sample(state)
    b = m._fast_sample(state)
    assert torch.equal(a, b) and a.shape == (2, 3, 32, 32)
    total, logs = m.loss(pred.detach(), target, state, None)  # only the ID loss carries gradients now
    assert "align_semantic" not in logs
    total.backward()
    grads = [p.grad.abs().sum() for p in m.branch.parameters() if p.grad is not None]
    assert grads and sum(grads) > 0
    m.unpatch()


def test_sampling_files_and_bad_inputs(tmp_path):
    comps = tailor.tiny_components()
    m = _trained_like(comps)
    m.unpatch()
    for mod in m.modules():
        mod.eval()
    img = world.render_face(3, identity=901).pil()
    kw = dict(n=1, seed=0, steps=3, guidance=3.0)
    want = Pipeline(comps).attach(m, face=img).generate("a photo of a man", **kw).array
    Pipeline(comps).detach()
    base = Pipeline(tailor.tiny_components()).generate("a photo of a man", **kw).array
    assert np.abs(want - base).max() > 1e-3
    m.patch(comps)
    m.save(tmp_path)
    m.unpatch()
    again = tailor.load(tmp_path / "pulid.safetensors")
    got = Pipeline(tailor.tiny_components()).attach(again, face=img).generate("a photo of a man", **kw).array
    assert np.abs(got - want).max() == 0
    with pytest.raises(InputError, match="needs a reference face"):
        Pipeline(tailor.tiny_components()).attach(PuLIDMethod(num_tokens=4)).generate("a man", **kw)
    with pytest.raises(IncompatibleError, match="width 5"):
        Pipeline(tailor.tiny_components()).attach(PuLIDMethod(num_tokens=4), face=np.ones(5, np.float32)).generate(
            "a man", **kw
        )


def test_a_step_down_the_id_loss_gradient_lowers_it():
    """The ID loss's gradient reaches the ID tokens with the right sign: one small step along it lowers the loss on
    the same fast sample (same noise, same prompt)."""
    from tailor.methods.pulid.modules import id_cosine_loss

    comps = tailor.tiny_components()
    m = _trained_like(comps, align_semantic=0.0, align_layout=0.0)
    state, _, _ = _training_state(comps, m)
    m.recorder.take()

    def id_loss():
        m.branch.tokens = m._tokens(state.inputs["face_embedding"])
        return id_cosine_loss(m._face_of(m._fast_sample(state)), state.inputs["face_embedding"])

    params = [p for mod in m.modules() for p in mod.parameters()]
    before = id_loss()
    grads = torch.autograd.grad(before, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p.sub_(1e-2 * g / (sum(float(x.norm() ** 2) for x in grads if x is not None) ** 0.5))
        after = id_loss()
    assert float(after) < float(before) - 1e-5, (float(before), float(after))
    m.unpatch()
