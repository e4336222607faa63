"""ControlNet++ (Li et al. 2024): one-step x0, a reward whose gradient reaches the ControlNet, files, init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tailor
from tailor.conditions import sobel_hf, soft_hf
from tailor.core.conditioning import Conditioning, StepState
from tailor.errors import ConfigError
from tailor.methods.controlnet_pp import ControlNetPPMethod
from tailor.methods.controlnet_pp.method import predicted_x0


def test_predicted_x0_inverts_the_forward_process(tiny):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(tiny.scheduler.config)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 150, 900])
    noisy = sched.add_noise(x0, noise, t)
    assert torch.allclose(predicted_x0(noisy, noise, sched.alphas_cumprod, t, "epsilon"), x0, atol=1e-3)
    v = sched.get_velocity(x0, noise, t)
    assert torch.allclose(predicted_x0(noisy, v, sched.alphas_cumprod, t, "v_prediction"), x0, atol=1e-4)


def test_soft_hf_matches_sobel_hf():
    from tailor.world import render_object

    img = render_object(0, size=64).image
    soft = soft_hf(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    assert np.abs(soft - sobel_hf(img)[..., 0] / 255).max() < 0.02  # uint8 rounding of grey and output


def _state(tiny, m, t):
    g = torch.Generator().manual_seed(1)
    lat = torch.randn(2, 4, 16, 16, generator=g)
    cond = Conditioning(torch.randn(2, 77, 64, generator=g), batch_size=2)
    inputs = {"condition": torch.rand(2, 3, 32, 32, generator=g)}
    return StepState(lat, torch.tensor(t), cond, training=True, inputs=inputs)


def test_reward_gradient_reaches_only_the_controlnet(tiny):
    m = ControlNetPPMethod(condition="hf", reward_weight=1.0)
    m.patch(tiny)
    state = _state(tiny, m, [100, 900])
    extra = m.step_kwargs(state)
    pred = tiny.unet(
        state.latents,
        state.timestep,
        encoder_hidden_states=state.cond.encoder_hidden_states,
        down_block_additional_residuals=extra.down_block_additional_residuals,
        mid_block_additional_residual=extra.mid_block_additional_residual,
    ).sample
    loss, logs = m.loss(pred, torch.zeros_like(pred), state, None)
    assert "reward" in logs and logs["reward"] > 0
    r, sel = m.reward(pred, state)
    assert sel.tolist() == [True, False]  # only t <= 200
    r.backward()
    grads = [p.grad for p in m.inner.controlnet.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in tiny.unet.parameters()) and all(p.grad is None for p in tiny.vae.parameters())
    none, _ = m.reward(pred.detach(), _state(tiny, m, [500, 900]))
    assert none is None  # no small timestep in the batch: no reward term


def test_init_from_a_controlnet_and_files(tiny, tmp_path):
    from diffusers import ControlNetModel

    cn = tailor.get_spec("controlnet").method(condition="hf")
    cn.patch(tiny)
    with torch.no_grad():
        for p in cn.controlnet.parameters():
            p.add_(0.01)
    cn.save(tmp_path / "cn")
    with pytest.raises(ConfigError, match="condition"):
        ControlNetPPMethod(init=str(tmp_path / "cn"), condition="canny")
    m = ControlNetPPMethod(init=str(tmp_path / "cn"), condition="hf")
    m.patch(tailor.tiny_components())
    ref = cn.controlnet.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in m.inner.controlnet.state_dict().items())
    m.save(tmp_path / "pp")
    back = tailor.load(tmp_path / "pp" / "controlnet_pp.safetensors")
    assert isinstance(back, ControlNetPPMethod)
    back.patch(tailor.tiny_components())
    assert all(torch.equal(v, ref[k]) for k, v in back.inner.controlnet.state_dict().items())
    folder = ControlNetModel.from_pretrained(tmp_path / "pp" / "controlnet")
    assert all(torch.equal(v, ref[k]) for k, v in folder.state_dict().items())
