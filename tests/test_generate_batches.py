"""``tailor generate`` over several prompts: prompt by prompt, resumable, split over processes by ``accelerate
launch`` with the merged folder equal to a one-process run's byte for byte (issue #24, item 2)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tailor.cli import main
from tailor.cli.generate import generate
from tailor.errors import ConfigError

from helpers import accelerate_launch

PROMPTS = ["a photo of a red star", "a photo of a blue circle", "a photo of a green heart"]
ARGS = dict(base="tiny", n=2, steps=2, guidance=3.0)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _prompts_file(tmp_path: Path) -> Path:
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(PROMPTS) + "\n")
    return f


def test_prompts_are_made_one_by_one_with_the_seeds_and_names_of_one_call(tmp_path):
    import tailor

    out = tmp_path / "out"
    generate(prompts=str(_prompts_file(tmp_path)), out=str(out), **ARGS)
    record = json.loads((out / "generation.json").read_text())
    assert [r["file"] for r in record["images"]] == [f"{i:03d}.png" for i in range(6)]
    assert [r["seed"] for r in record["images"]] == list(range(6)) and record["settings"]["seed"] == 0
    assert [r["prompt"] for r in record["images"]] == [p for p in PROMPTS for _ in range(2)]
    assert not (out / "generation.parts").exists() and (out / "grid.png").is_file()
    # image 3 (prompt 1, second image) is what the pipeline gives that prompt with seed 3
    pipe = tailor.Pipeline(tailor.load_components("tiny"))
    one = pipe.generate([PROMPTS[1]], n=2, seed=2, steps=2, guidance=3.0).images[1]
    from PIL import Image

    assert list(Image.open(out / "003.png").convert("RGB").getdata()) == list(one.convert("RGB").getdata())


def test_a_stopped_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    import tailor.core.pipeline as P

    whole, part = tmp_path / "whole", tmp_path / "part"
    prompts = str(_prompts_file(tmp_path))
    generate(prompts=prompts, out=str(whole), **ARGS)
    real, calls = P.Pipeline.generate, []

    def stop_at_third(self, texts, config=None, **kw):
        calls.append(texts[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, texts, config, **kw)

    monkeypatch.setattr(P.Pipeline, "generate", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        generate(prompts=prompts, out=str(part), **ARGS)
    assert sorted(p.name for p in (part / "generation.parts").iterdir()) == ["000000.json", "000001.json"]
    calls.clear()

    def counted(self, texts, config=None, **kw):
        calls.append(texts[0])
        return real(self, texts, config, **kw)

    monkeypatch.setattr(P.Pipeline, "generate", counted)
    generate(prompts=prompts, out=str(part), **ARGS)
    assert calls == [PROMPTS[2]]  # only the prompt that was not done
    assert _files(part) == _files(whole)
    calls.clear()
    generate(prompts=prompts, out=str(part), **{**ARGS, "steps": 3})  # other settings: everything made again
    assert calls == PROMPTS


def test_story_and_attention_refuse_several_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="run in one process"):
        generate(prompt=["a photo of a red star"], save_attention=["star"], out=str(tmp_path / "o"), **ARGS)


def test_two_processes_merge_to_the_one_process_output(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    args = ["generate", "--prompts", str(_prompts_file(tmp_path)), "--base", "tiny", "-n", "2", "--steps", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*args, "--out", str(one)]) == 0
    launch = accelerate_launch(2)
    proc = subprocess.run([*launch, "-m", "tailor", *args, "--out", str(two)], env=env, capture_output=True,
                          text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "process 1/2" in proc.stdout + proc.stderr  # the work really was split
    assert _files(one) == _files(two)
