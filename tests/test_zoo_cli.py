"""The zoo's command line (``python -m zoo``, ``tailor world train-zoo``) and ``zoo/gpu.sh``: options reach the
recipes (device, checkpoint cadence, export folder), user errors are one line with exit 2, and the GPU script runs a
stage (on the CPU here) into a run folder and writes its summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def seen(monkeypatch):
    """Stub the stages: record what each was called with, the device and the accelerate CPU switch at that time."""
    from zoo import loop, recipe

    monkeypatch.setenv("ACCELERATE_USE_CPU", "false")  # restored (unset) afterwards
    monkeypatch.setattr(loop, "_device", None)
    monkeypatch.setattr(loop, "CHECKPOINT_EVERY", None)
    calls = {}

    def stub(name):
        def record(*args, **kw):
            state = {"device": str(loop.current_device()), "every": loop.CHECKPOINT_EVERY}
            calls[name] = {"args": args, "kw": kw, "accelerate_cpu": os.environ.get("ACCELERATE_USE_CPU"), **state}
            return {}

        return record

    for name in ("stage_oracle", "stage_adapters", "stage_unet_long", "stage_export"):
        monkeypatch.setattr(recipe, name, stub(name))
    return calls


def test_device_and_checkpoint_cadence_reach_the_recipes(seen, tmp_path):
    from zoo.cli import run

    args = "train --only oracle,adapters --device cpu --oracles segmenter --adapters canny --checkpoint-every 7"
    run([*args.split(), "--num-workers", "2", "--weights", str(tmp_path / "w"), "--runs", str(tmp_path)])
    assert seen["stage_oracle"]["device"] == "cpu" and seen["stage_oracle"]["accelerate_cpu"] == "true"
    assert seen["stage_oracle"]["every"] == 7  # the small loop's cadence
    assert seen["stage_oracle"]["args"][1] == ("segmenter",)
    adapters = seen["stage_adapters"]
    assert adapters["args"][1] == ("canny",) and adapters["device"] == "cpu"
    assert adapters["kw"]["checkpoint_every"] == 7 and adapters["kw"]["num_workers"] == 2  # the trainer's
    assert adapters["kw"]["weights"] == tmp_path / "w"  # never the package's weights when told otherwise


def test_auto_device_is_cuda_only_with_a_gpu(seen, tmp_path):
    from zoo.cli import run

    run(["train", "--only", "unet-long", "--runs", str(tmp_path), "--steps", "3", "--batch-size", "4"])
    call = seen["stage_unet_long"]
    assert call["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert call["args"] == (tmp_path, 3) and call["kw"] == {"batch_size": 4}


def test_tailor_world_train_zoo_forwards_to_the_recipes(seen, tmp_path, capsys):
    from tailor.cli import main

    assert main(["world", "train-zoo", "--only", "export", "--device", "cpu", "--runs", str(tmp_path)]) == 0
    assert seen["stage_export"]["device"] == "cpu" and seen["stage_export"]["args"] == (tmp_path,)
    assert main(["world", "train-zoo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "tailor world train-zoo" in out and "--device" in out and "--only" in out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--only", "unet,nope"], "unknown stage 'nope'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--only", "adapters", "--adapters", "canny,nope"], "unknown adapter 'nope'"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(seen, args, words, capsys):
    from zoo.cli import main

    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not seen


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_cuda_without_a_gpu_says_so(seen, capsys):
    from zoo.cli import main

    assert main(["train", "--only", "oracle", "--device", "cuda"]) == 2
    assert "--device cpu" in capsys.readouterr().err and not seen


def test_installed_package_without_recipes_says_where_they_are(monkeypatch, capsys):
    import tailor.world.zoo.cli as package_cli
    from tailor.cli import main

    monkeypatch.setattr(package_cli, "find_recipes", lambda: None)
    assert main(["world", "train-zoo", "--only", "unet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "zoo/" in err[0] and "python -m zoo train" in err[0]


def test_train_loop_runs_on_the_chosen_device_and_returns_the_model_home(monkeypatch, tmp_path):
    from zoo import loop

    monkeypatch.setenv("ACCELERATE_USE_CPU", "false")
    monkeypatch.setattr(loop, "_device", None)
    assert loop.set_device("cpu") == "cpu" and loop.current_device() == torch.device("cpu")
    model = torch.nn.Linear(2, 1)
    devices = []

    def loss_fn(step):
        devices.append(next(model.parameters()).device.type)
        x = torch.ones(4, 2, device=loop.current_device())
        return model(x).pow(2).mean(), {}

    loop.train_loop(model, loss_fn, loop.LoopConfig(out=str(tmp_path), steps=2, warmup_steps=1, log_every=1))
    assert devices == ["cpu", "cpu"] and next(model.parameters()).device.type == "cpu" and not model.training


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_gpu_script_runs_a_stage_into_the_run_folder_and_summarises(tmp_path):
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env |= {"PYTHON": sys.executable, "ZOO_DEVICE": "cpu", "ZOO_THREADS": "1", "ZOO_WORKERS": "0",
            "ZOO_RESERVE_S": "5", "ZOO_ARGS": "--oracles segmenter --steps 2", "OMP_NUM_THREADS": "1",
            "ZOO_WHEELS": str(tmp_path / "no-wheels")}  # fmt: skip
    done = subprocess.run(
        ["bash", str(ROOT / "zoo" / "gpu.sh"), "oracle", "3", str(runs)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((runs / "gpu_summary.json").read_text())
    assert summary["stage"] == "oracle" and summary["exit"] == 0 and not summary["stopped_at_budget"]
    assert summary["runs"]["oracles/segmenter"]["newest_checkpoint"] == 2
    assert (runs / "oracles" / "final" / "segmenter.safetensors").is_file() and (runs / "gpu.log").is_file()


def test_from_shipped_seeds_a_run_folder_that_unet_long_goes_on_from(tmp_path):
    from diffusers import UNet2DConditionModel

    from tailor.world.zoo import base_path
    from zoo import recipe
    from zoo.shipped import SHIPPED_WORDS, shipped_dir, stage_from_shipped
    from zoo.unet import build_components, warm_start

    runs = tmp_path / "runs"
    stage_from_shipped(runs, n_images=16, n_faces=2)
    comps = build_components(recipe.vae_dir(runs), recipe.tokenizer_dir(runs))
    fresh = {k: v.clone() for k, v in comps.unet.state_dict().items()}
    warm_start(comps, shipped_dir(runs))
    shipped = UNet2DConditionModel.from_pretrained(str(base_path() / "unet"), local_files_only=True).state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in comps.unet.state_dict().items())
    assert not all(torch.equal(v, fresh[k]) for k, v in comps.unet.state_dict().items())
    rows = (runs / "data" / "objects_faces_words" / "metadata.jsonl").read_text().splitlines()
    assert len(rows) > 18 and any(w in rows[-1] for w in SHIPPED_WORDS)  # the words' images twice
    result = recipe.stage_unet_long(runs, 1, batch_size=2, checkpoint_every=1, log_every=1, warmup_steps=0)
    assert result.steps == 1 and (runs / "unet_long" / "checkpoints" / "step-000001").is_dir()
