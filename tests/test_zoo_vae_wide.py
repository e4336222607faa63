"""The wide-VAE recipe (world v2 item 3): the teacher grown into a wider, deeper VAE that computes the same function
(so its latents are the teacher's and the shipped base keeps working), its decoder trained alone, and the VAE
evaluation (PSNR per kind, oracles after the round trip)."""

from __future__ import annotations

import pytest
import torch

from zoo.data import mixed_samples, to_batch


def _teacher(channels=(16, 32), groups=4):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    n = len(channels)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=32,
        scaling_factor=0.7,
    )
    for p in vae.parameters():  # not the zero-initialised biases of a fresh model: every weight matters
        p.data.add_(0.05 * torch.randn_like(p))
    return vae.eval()


@pytest.mark.parametrize("channels, layers", [((32, 64), 1), ((32, 64), 2), ((48, 96), 3)])
def test_grown_vae_computes_the_teachers_function(channels, layers):
    from zoo.vae_wide import grow_vae

    teacher = _teacher()
    student = grow_vae(teacher, channels, layers).eval()
    assert tuple(student.config.block_out_channels) == channels and student.config.layers_per_block == layers
    assert student.config.scaling_factor == 0.7
    assert sum(p.numel() for p in student.parameters()) > 2 * sum(p.numel() for p in teacher.parameters())
    x = to_batch(mixed_samples(3, 5, 0, 32))
    with torch.no_grad():
        pt, ps = teacher.encode(x).latent_dist, student.encode(x).latent_dist
        torch.testing.assert_close(ps.mean, pt.mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ps.logvar, pt.logvar, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            student.decode(pt.mean).sample, teacher.decode(pt.mean).sample, atol=1e-5, rtol=1e-4
        )
    # the new channels are live: their incoming weights are random, so training can move them
    conv = student.decoder.up_blocks[0].resnets[0].conv1.weight
    assert conv[teacher.decoder.up_blocks[0].resnets[0].conv1.weight.shape[0] :].abs().sum() > 0


def test_grow_refuses_widths_that_break_the_groups():
    from zoo.vae_wide import grow_vae

    with pytest.raises(ValueError, match="multiple"):
        grow_vae(_teacher(), (32, 48), 1)
    with pytest.raises(ValueError, match="layers"):
        grow_vae(_teacher(), (32, 64), 0)


def test_wide_recipe_trains_the_decoder_only_and_resumes(tmp_path):
    from diffusers import AutoencoderKL

    from zoo.vae_wide import decoder_loss, grow_vae, latent_agreement, train_wide_vae

    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = to_batch(mixed_samples(4, 3, 0, 32, kinds={"objects": 1.0, "glyph": 1.0}))
    torch.manual_seed(0)
    _, first = decoder_loss(grow_vae(teacher, (32, 64), 1), teacher, x)
    out = str(tmp_path / "wide")
    kw = {"batch_size": 4, "lr": 2e-3, "size": 32, "channels": (32, 64), "layers": 1}
    train_wide_vae(out, teacher, steps=3, **kw)
    student = train_wide_vae(out, teacher, steps=12, **kw)  # resumes at step 3
    torch.manual_seed(0)
    _, last = decoder_loss(student, teacher, x)
    assert last["mse"] < first["mse"]
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # the teacher stays frozen
    grown = grow_vae(teacher, (32, 64), 1, seed=7)
    for key, v in student.state_dict().items():  # the encoder never trained
        if key.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(v, grown.state_dict()[key]), key
    assert latent_agreement(student, teacher, n=4, size=32)["latent_rel_err_max"] < 1e-4
    student.save_pretrained(str(tmp_path / "final"))
    again = AutoencoderKL.from_pretrained(str(tmp_path / "final"), local_files_only=True)
    assert tuple(again.config.block_out_channels) == (32, 64)


def test_vae_mix_renders_every_kind():
    from zoo.data import VAE_MIX, all_renderers

    assert set(VAE_MIX) == set(all_renderers())
    assert {"glyph", "light", "pair", "relation", "story"} <= set(VAE_MIX)
    samples = mixed_samples(12, 1, 0, 32, kinds=VAE_MIX)
    assert len(samples) == 12 and samples[0].image.shape == (32, 32, 3)
    assert [s.caption for s in samples] == [s.caption for s in mixed_samples(12, 1, 0, 32, kinds=VAE_MIX)]


def test_vae_eval_scores_each_kind_and_the_oracles_after_the_round_trip(tmp_path):
    from zoo.vae_eval import comparison_grid, evaluate, psnr

    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert psnr(x, x) > 100 and abs(psnr(x, -x) - -10 * torch.log10((x**2).mean()).item()) < 1e-3

    class Identity(torch.nn.Module):  # a perfect VAE: latents are the image, decode gives it back
        def encode(self, x):
            mode = lambda: x  # noqa: E731
            return type("E", (), {"latent_dist": type("D", (), {"mode": staticmethod(mode)})})()

        def decode(self, z):
            return type("O", (), {"sample": z})()

    perfect, teacher = Identity(), _teacher()
    res = evaluate({"perfect": perfect, "tiny": teacher}, n=4, kinds=["objects", "glyph", "faces"])
    assert res["perfect"]["psnr"]["objects"] > 45 and res["tiny"]["psnr"]["all"] < 30
    assert set(res["tiny"]["psnr"]) == {"objects", "glyph", "faces", "all"}
    # the oracles read the perfect round trip as they read the renders themselves
    assert res["perfect"]["attributes"]["shape"] == res["perfect"]["attributes"]["raw_shape"]
    assert res["perfect"]["ocr"]["sen_acc"] == res["perfect"]["ocr"]["clean_sen_acc"]
    grid = comparison_grid(res, per_kind=2, scale=1)
    assert grid.size == (64 * 2 * 3, 64 * 3)


def test_stage_grows_the_shipped_vae_in_a_bare_run_folder(tmp_path, monkeypatch):
    from tailor.world.zoo import WEIGHTS
    from zoo import recipe

    runs = tmp_path / "runs"
    assert recipe.wide_teacher_dir(runs) == WEIGHTS / "base" / "vae"
    (runs / "vae" / "final").mkdir(parents=True)
    (runs / "vae" / "final" / "config.json").write_text("{}")
    assert recipe.wide_teacher_dir(runs) == runs / "vae" / "final"


def test_export_prefers_the_wide_vae(tmp_path):
    from zoo.recipe import decoder_dir, vae_dir

    runs = tmp_path / "runs"
    assert decoder_dir(runs) == vae_dir(runs)
    for sub in ("vae_decoder", "vae_wide"):
        (runs / sub / "final").mkdir(parents=True)
        (runs / sub / "final" / "config.json").write_text("{}")
        assert decoder_dir(runs) == runs / sub / "final"


def test_batch_renderer_processes_give_the_same_batches():
    from zoo.data import VAE_MIX, BatchRenderer

    here = BatchRenderer(5, 3, 32, VAE_MIX)
    pool = BatchRenderer(5, 3, 32, VAE_MIX, workers=2)
    try:
        for step in (0, 1, 4):
            assert torch.equal(pool(step), here(step))
        assert torch.equal(here(1), to_batch(mixed_samples(5, 3, 1, 32, VAE_MIX)))
    finally:
        pool.close()


def test_export_replaces_only_the_bases_vae(tmp_path):
    import json

    from zoo.export import export_vae
    from zoo.vae_wide import grow_vae

    base = tmp_path / "base"
    (base / "unet").mkdir(parents=True)
    (base / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "AutoencoderKL"]}))
    (base / "unet" / "keep.txt").write_text("unet")
    grow_vae(_teacher(), (32, 64), 1).save_pretrained(str(tmp_path / "wide"))
    export_vae(tmp_path / "wide", base)
    assert (base / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((base / "vae" / "config.json").read_text())["block_out_channels"] == [32, 64]
    assert (base / "unet" / "keep.txt").read_text() == "unet"
    with pytest.raises(FileNotFoundError):
        export_vae(tmp_path / "wide", tmp_path / "nothing")


def test_vae_eval_command_names_a_bad_folder(tmp_path, capsys):
    from zoo.cli import main

    code = main(["vae-eval", "--vae", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--vae" in err and "config.json" in err and len(err.strip().splitlines()) == 1
