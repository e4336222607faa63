"""The wide-VAE recipe (world v2 item 3): a wider student on the teacher's latents, so the base keeps working."""

from __future__ import annotations

import torch

from zoo.data import mixed_samples, to_batch


def _teacher(tmp_path):
    from zoo.vae import build_vae

    torch.manual_seed(0)
    vae = build_vae(channels=(16, 16), size=32)
    vae.register_to_config(scaling_factor=0.7)
    return vae.eval()


def test_student_keeps_the_teachers_latent_space_and_is_one_diffusers_vae(tmp_path):
    from diffusers import AutoencoderKL

    from zoo.vae_wide import build_wide_vae, latent_agreement, student_loss, train_wide_vae

    teacher = _teacher(tmp_path)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = build_wide_vae(teacher, channels=(16, 32), layers=1)
    assert student.config.scaling_factor == 0.7 and student.config.latent_channels == teacher.config.latent_channels
    x = to_batch(mixed_samples(4, 3, 0, 32))
    torch.manual_seed(0)
    _, first = student_loss(student, teacher, x)
    out = tmp_path / "wide"
    student = train_wide_vae(str(out), teacher, steps=30, batch_size=4, lr=2e-3, size=32, channels=(16, 32), layers=1)
    torch.manual_seed(0)
    _, last = student_loss(student, teacher, x)
    assert last["enc"] < 0.5 * first["enc"]  # the encoder learns the teacher's posterior
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # the teacher stays frozen
    agree = latent_agreement(student, teacher, n=4, size=32)
    assert 0 <= agree["latent_rel_err"] <= agree["latent_rel_err_max"]
    student.save_pretrained(str(tmp_path / "final"))
    again = AutoencoderKL.from_pretrained(str(tmp_path / "final"), local_files_only=True)
    assert again.config.block_out_channels == [16, 32] or tuple(again.config.block_out_channels) == (16, 32)


def test_export_prefers_the_wide_vae(tmp_path):
    from zoo.recipe import decoder_dir, vae_dir

    runs = tmp_path / "runs"
    assert decoder_dir(runs) == vae_dir(runs)
    for sub in ("vae_decoder", "vae_wide"):
        (runs / sub / "final").mkdir(parents=True)
        (runs / sub / "final" / "config.json").write_text("{}")
        assert decoder_dir(runs) == runs / sub / "final"
