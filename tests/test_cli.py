"""The CLI: help, methods, generate outputs, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tailor.cli import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_and_methods(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "generate" in out and "train" in out and "world" in out
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "finetune" in out
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "finetune" in out
    code, out, _ = run(capsys, "train", "finetune", "--help")
    assert code == 0 and "--checkpoint-every" in out and "--resume" in out and "--train-text-encoder" in out


def test_generate_writes_pngs_grid_and_sidecar(capsys, tmp_path):
    out = tmp_path / "gen"
    code, _, err = run(
        capsys,
        "generate",
        "--base",
        "tiny",
        "-p",
        "a red star",
        "-p",
        "a blue circle",
        "-n",
        "2",
        "--steps",
        "2",
        "--seed",
        "7",
        "--out",
        str(out),
    )
    assert code == 0, err
    side = json.loads((out / "generation.json").read_text())
    assert [r["seed"] for r in side["images"]] == [7, 8, 9, 10]
    assert [r["prompt"] for r in side["images"]][:2] == ["a red star"] * 2
    assert side["settings"]["steps"] == 2
    assert all((out / r["file"]).is_file() for r in side["images"]) and (out / "grid.png").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "--base", "no/such/folder", "-p", "x"], "no/such/folder"),
        (["generate", "--base", "tiny", "-p", "x", "--apply", "missing_artifact"], "missing_artifact"),
        (["generate", "--base", "tiny", "-p", "x", "--sampler", "warp"], "unknown sampler"),
        (["generate", "--base", "tiny"], "no prompt"),
        (["generate", "--base", "tiny", "-p", "x", "--prompts", "none.txt"], "none.txt"),
        (["train", "finetune", "--base", "tiny", "--steps", "-3"], "steps"),
        (["train", "finetune", "--base", "tiny", "--data", "no_such_dir", "--steps", "1"], "no_such_dir"),
        (["train", "finetune", "--bogus-flag", "1"], "bogus"),
        (["train", "nosuchmethod"], "nosuchmethod"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.png"))


def test_corrupt_training_image_is_reported(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "broken.txt").write_text("a red star")
    code, _, err = run(
        capsys,
        "train",
        "finetune",
        "--base",
        "tiny",
        "--data",
        str(data),
        "--steps",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--resolution",
        "32",
    )
    assert code == 2 and "broken.png" in err
    assert not (tmp_path / "run" / "finetune.safetensors").exists()


def test_yaml_config_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 1\nlearning_rat: 0.1\n")
    code, _, err = run(capsys, "train", "finetune", "--config", str(cfg))
    assert code == 2 and "learning_rat" in err


def test_console_entry_point_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tailor", "generate", "--base", str(tmp_path / "nope"), "-p", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "error" in proc.stderr and "Traceback" not in proc.stderr


def test_building_the_cli_leaves_opencv_unloaded():
    """The world's renderers (and OpenCV, ~16 MB resident) load only for commands that use them (issue #8's RSS)."""
    import subprocess
    import sys

    code = "import sys, tailor.cli; tailor.cli.build(); print('cv2' in sys.modules, 'tailor.world' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_train_command_loads_one_method_and_no_typer(tmp_path):
    """``tailor train <method>`` imports that method's folder only, and not typer (issue #8's RSS): the process is
    stopped where the trainer starts, and what it imported by then is listed."""
    code = (
        "import sys, tailor.core.training as t\n"
        "def stop(method, cfg): print(sorted(m.split('.')[2] for m in sys.modules if m.startswith('tailor.methods.')"
        " and m.count('.') == 2), 'typer' in sys.modules); raise SystemExit(0)\n"
        "t.train = stop\n"
        "from tailor.cli import main\n"
        "main(['train', 'textual-inversion', '--base', 'tiny', '--images', sys.argv[1], '--token', '<s>', "
        "'--class', 'star'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()  # the options line (chosen lr / steps and their sources), then the probe's
    assert lines[0].startswith("training textual_inversion on tiny: lr=") and lines[1] == "['textual_inversion'] False"


def test_registry_loads_every_method_and_get_spec_one():
    from tailor.core.method import get_spec, method_names, registry

    assert list(registry()) == list(method_names()) and "lora" in method_names()
    assert get_spec("t2i-adapter") is registry()["t2i_adapter"]
    with pytest.raises(Exception, match="unknown method 'nope'"):
        get_spec("nope")
