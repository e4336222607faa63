"""Base v2 (zoo/v2.py, issue #20 items 3, 4 and 6): the alias, the time split between its stages, the step plans,
the VAE loss terms, and every stage run and resumed on the CPU at tiny sizes, the export loaded by ``tailor generate``
and the eval table written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from zoo import v2


def test_base_v2_alias_expands_in_order_and_unknown_stages_are_refused():
    from tailor.errors import ConfigError
    from zoo.cli import stage_list

    assert stage_list("base-v2") == ("vae-v2", "unet-v2", "export-v2", "eval-v2")
    assert stage_list("vae-v2,export") == ("vae-v2", "export")
    with pytest.raises(ConfigError, match="unknown stage 'base-v3'"):
        stage_list("base-v3")


def test_time_split_gives_each_training_stage_its_share_after_the_fixed_reserves():
    split = v2.split_budget(500.0, env={})
    assert split["export-v2"] == 15 and split["eval-v2"] == 60
    assert split["vae-v2"] == pytest.approx((500 - 75) * 0.33)
    assert split["unet-v2"] == pytest.approx((500 - 75) * 0.67)
    assert sum(split.values()) == pytest.approx(500)
    # a fixed VAE budget: the UNet gets the rest; a late start shrinks what is left, never below the minimum
    split = v2.split_budget(500.0, env={"ZOO_V2_VAE_S": "100"})
    assert split["vae-v2"] == 100 and split["unet-v2"] == pytest.approx(500 - 100 - 75)
    env = {"ZOO_V2_DEADLINE": "1000"}
    assert v2.stage_seconds("unet-v2", v2.STAGES, now=800, env=env) == pytest.approx(200 - 75)
    assert v2.stage_seconds("unet-v2", v2.STAGES, now=990, env=env) == v2.MIN_STAGE_S
    assert v2.stage_seconds("unet-v2", ("unet-v2",), now=800, env=env) == pytest.approx(200)  # nothing after it
    assert v2.stage_seconds("vae-v2", v2.STAGES, env={}) is None  # no deadline: the recipe's steps


def test_step_plan_fits_the_budget_checkpoints_each_minute_and_is_kept_on_resume(tmp_path):
    plan = v2.plan_steps(tmp_path / "plan.json", 100.0, 0.25, None, 7, spent_s=10.0)
    assert plan["steps"] == 360 and plan["checkpoint_every"] == 240  # (100 - 10) / 0.25; 60 s / 0.25
    again = v2.plan_steps(tmp_path / "plan.json", 50.0, 1.0, 3, 7)
    assert again == plan  # a resumed run keeps its schedule
    assert v2.plan_steps(tmp_path / "b.json", None, None, None, 7)["steps"] == 7
    assert v2.plan_steps(tmp_path / "c.json", 100.0, 0.5, 5, 7)["steps"] == 5  # --steps wins


def test_multiscale_gradient_loss_matches_its_formula():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)

    def grad_l1(x, y):
        dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
        dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
        return dx.abs().mean() + dy.abs().mean()

    pool = torch.nn.functional.avg_pool2d
    want = grad_l1(a, b) + grad_l1(pool(a, 2), pool(b, 2))
    assert torch.allclose(v2.multiscale_gradient_loss(a, b), want, atol=1e-6)
    assert float(v2.multiscale_gradient_loss(a, a)) == 0.0


def test_pool_batches_are_a_function_of_the_step():
    import numpy as np

    pool = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    batch = v2.pool_batches(pool, 3, 1, torch.device("cpu"))
    assert torch.equal(batch(5), batch(5)) and not torch.equal(batch(5), batch(6))
    assert batch(0).shape == (3, 3, 4, 4) and batch(0).min() >= -1 and batch(0).max() <= 1


@pytest.fixture
def tiny(monkeypatch):
    from zoo import loop

    monkeypatch.setattr(loop, "_device", "cpu")
    monkeypatch.setattr(loop, "CHECKPOINT_EVERY", None)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    for k, val in {"ZOO_V2_IMAGES": "12", "ZOO_V2_EVAL_N": "1", "ZOO_V2_EVAL_PROMPTS": "1",
                   "ZOO_V2_EVAL_STEPS": "2", "ZOO_V2_UNET_BATCH": "2", "ZOO_V2_VAE_BATCH": "2"}.items():  # fmt: skip
        monkeypatch.setenv(k, val)
    monkeypatch.delenv("ZOO_V2_DEADLINE", raising=False)


def test_every_stage_runs_and_resumes_and_the_export_generates(tiny, tmp_path):
    from tailor.cli import main
    from tailor.core.training.checkpoint import list_checkpoints

    runs = tmp_path / "runs"
    small = {"channels": (8, 16, 16), "layers": 1}
    final = v2.stage_vae_v2(runs, steps=2, **small)
    assert (final / "config.json").is_file() and (runs / "v2_pool" / "pool.npy").is_file()
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["latent_channels"] == 4 and len(cfg["block_out_channels"]) == 3  # the shipped contract: 16x16x4
    assert cfg["scaling_factor"] != 1.0
    metrics = json.loads((runs / "vae_v2" / "metrics.json").read_text())
    assert {"shipped", "v2"} <= set(metrics) and "all" in metrics["v2"]["psnr"]
    # resume: a longer schedule goes on from step 2
    shutil.rmtree(final)
    (runs / "vae_v2" / "plan.json").unlink()
    v2.stage_vae_v2(runs, steps=3, **small)
    assert [s for s, _ in list_checkpoints(runs / "vae_v2")][-1] == 3

    v2.stage_unet_v2(runs, steps=2)
    v2.unet_plan(runs).unlink()
    v2.stage_unet_v2(runs, steps=3)  # resumes the trainer's checkpoint 2
    assert [s for s, _ in list_checkpoints(runs / "unet_v2")][-1] == 3
    log = [json.loads(x) for x in (runs / "unet_v2" / "log.jsonl").read_text().splitlines() if x.strip()]
    assert [r["step"] for r in log if "step" in r][-1] == 3

    folder = v2.stage_export_v2(runs, runs / "weights")
    assert folder == runs / "weights" / "base-v2" and (folder / "model_index.json").is_file()
    out = tmp_path / "gen"
    args = ["generate", "-p", 'a sign that says "CAT" on brick', "--base", str(folder), "--steps", "2", "-n", "1"]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "000.png").is_file()

    v2.stage_eval_v2(runs, runs / "weights")
    table = (runs / "eval_v2" / "table.md").read_text()
    assert "| shape |" in table and "base-v2" in table and "shipped" in table and "face found" in table
    result = json.loads((runs / "eval_v2" / "eval.json").read_text())
    assert set(result["prompts"]) == {"attributes", "relations", "ocr", "faces"}
    assert not set(result["prompts"]["relations"]) & v2.pool_captions(runs / "v2_pool")
    assert (runs / "eval_v2" / "samples.png").is_file()

    packed = v2.pack_results(runs, tmp_path / "OUT")
    assert len(packed) <= 6 and all((tmp_path / "OUT" / p).stat().st_size < 16 * 2**20 for p in packed)


def test_export_refuses_the_package_weights(tmp_path):
    from tailor.errors import ConfigError
    from tailor.world.zoo import WEIGHTS

    with pytest.raises(ConfigError, match="never into the package"):
        v2.stage_export_v2(tmp_path, WEIGHTS)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_gpu_script_runs_the_base_v2_alias_on_the_cpu_within_its_minutes(tmp_path):
    """The CPU smoke run of docs/zoo.md ("GPU path: base v2"), ~2-3 minutes: every stage, the split, the packing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runs, out = tmp_path / "runs", tmp_path / "OUT"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH") and not k.startswith("ZOO_")}
    env |= {"PYTHON": sys.executable, "ZOO_DEVICE": "cpu", "ZOO_THREADS": "1", "ZOO_WORKERS": "0",
            "ZOO_V2_IMAGES": "128", "ZOO_V2_VAE_BATCH": "4", "ZOO_V2_UNET_BATCH": "4", "ZOO_V2_EVAL_N": "2",
            "ZOO_V2_EVAL_S": "45", "ZOO_V2_EXPORT_S": "10", "ZOO_RESERVE_S": "10", "OMP_NUM_THREADS": "1",
            "ZOO_WHEELS": str(tmp_path / "no-wheels"), "OUT": str(out)}  # fmt: skip
    done = subprocess.run(["bash", str(root / "zoo" / "gpu.sh"), "base-v2", "4", str(runs)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "planned split (s):" in done.stdout
    summary = json.loads((out / "gpu_summary.json").read_text())
    assert summary["exit"] == 0 and {"vae_v2", "unet_v2"} <= set(summary["runs"])
    back = sorted(p.name for p in out.iterdir())
    assert len(back) <= 8 and "v2_table.md" in back and "base-v2-fp16-1.tar" in back
