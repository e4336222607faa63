"""The installed package without the source checkout: a wheel built from this tree holds the shipped weights and
none of the zoo's training recipes; installed outside the repository it generates from the world base offline, and
``tailor world train-zoo`` says in one sentence where the recipes live (issue #17, item 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (  # one file of every kind of shipped weights
    "tailor/world/zoo/weights/base/model_index.json",
    "tailor/world/zoo/weights/base/unet/diffusion_pytorch_model.safetensors",
    "tailor/world/zoo/weights/base/vae/diffusion_pytorch_model.safetensors",
    "tailor/world/zoo/weights/base/text_encoder/model.safetensors",
    "tailor/world/zoo/weights/clip/model.safetensors",
    "tailor/world/zoo/weights/clip_vision/model.safetensors",
    "tailor/world/zoo/weights/oracles/attributes.safetensors",
    "tailor/world/zoo/weights/faces/embedder.safetensors",
    "tailor/world/zoo/weights/adapters/canny/tailor.json",
    "tailor/ui/static/index.html",  # and the web UI's page
    "tailor/ui/static/app.js",
)
RECIPES = ("recipe", "oracle_recipes", "unet", "adapters", "words", "vae", "export", "loop", "tokenizer", "data")


def _copy_tree(dst: Path) -> None:
    """What a source checkout holds for packaging (the recipes and benchmarks too, so that leaving them out of the
    wheel is the packaging's doing)."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("tailor", "zoo", "benchmarks"):
        shutil.copytree(ROOT / name, dst / name, ignore=skip)


def _python(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_ships_the_weights_not_the_recipes_and_generates_offline(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel offline needs setuptools in this environment")
    if not (ROOT / SHIPPED[0]).is_file():
        pytest.skip("the world base is not in this checkout")
    src, dist, site, work = (tmp_path / d for d in ("src", "dist", "site", "work"))
    for d in (src, work):
        d.mkdir()
    _copy_tree(src)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names
    assert not [n for n in names if n.startswith(("zoo/", "tests/", "benchmarks/"))]
    assert not {f"tailor/world/zoo/{r}.py" for r in RECIPES} & names and "tailor/faces/recipe.py" not in names
    assert {"tailor/world/zoo/oracles.py", "tailor/world/zoo/clip.py", "tailor/world/zoo/scorer.py"} <= names

    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    where = _python(["-c", "import tailor; print(tailor.__file__)"], work, site)
    assert Path(where.stdout.strip()).is_relative_to(site), where  # the installed copy, not this checkout

    out = work / "out"
    args = "-m tailor generate --base world -n 1 --steps 2 --out".split() + [str(out), "-p", "a photo of a red star"]
    gen = _python(args, work, site)
    assert gen.returncode == 0, gen.stderr
    assert (out / "000.png").is_file() and (out / "generation.json").is_file()

    zoo = _python(["-m", "tailor", "world", "train-zoo", "--help"], work, site)
    lines = zoo.stderr.strip().splitlines()
    assert zoo.returncode == 2 and len(lines) == 1, zoo.stderr
    assert "zoo/" in lines[0] and "python -m zoo train" in lines[0] and "Traceback" not in zoo.stderr
