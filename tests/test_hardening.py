"""Issue 18: a full disk mid-run, one writer per output folder, stale locks, file modes, never displacing a user's
file, and tailor's own files never counted as data. (The one-line refusals are cases of tests/bad_inputs.)"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bad_inputs.corpus import _method_file, png_bytes

import tailor.core.io as tio
from tailor.cli import main as cli
from tailor.core.locks import LOCK_NAME, output_lock
from tailor.core.method import registry
from tailor.errors import EnvironmentFault

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "lora", "--base", "tiny", "--steps", "4", "--batch-size", "1", "--resolution", "32"]


def test_disk_full_mid_run_keeps_the_last_checkpoint_resumable(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = tio.save_file

    def full_at_step_3(tensors, path, metadata=None):
        if ".step-000003." in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(tio, "save_file", full_at_step_3)
    argv = [*TRAIN, "--checkpoint-every", "1", "--out", str(out)]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "disk is full" in err and "step-000003" in err, err
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-000001", "step-000002"], ckpts  # no half-written step-3, no temporary folder
    assert not (out / "lora.safetensors").exists() and not (out / LOCK_NAME).exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    monkeypatch.setattr(tio, "save_file", real)
    assert cli([*argv, "--resume", "latest"]) == 0, capsys.readouterr().err
    assert (out / "lora.safetensors").is_file()
    assert json.loads((out / "checkpoints" / "step-000004" / "trainer.json").read_text())["step"] == 4


HOLDER = (
    "import sys, time\nfrom tailor.core.locks import output_lock\n"
    "with output_lock(sys.argv[1], 'tailor train holder'):\n    print('ready', flush=True)\n    time.sleep(120)\n"
)


def test_second_writer_is_refused_and_a_killed_holders_lock_is_cleared(tmp_path, capsys, caplog):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"ready"
        assert cli([*TRAIN, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(out) in err and f"process {holder.pid}" in err and "holder" in err, err
        assert cli(["generate", "--base", "tiny", "-p", "x", "-n", "1", "--steps", "1", "--out", str(out)]) == 2
        assert str(holder.pid) in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).read_text().startswith(f"{holder.pid} ")  # killed: no cleanup ran
    with caplog.at_level(logging.WARNING, logger="tailor"), output_lock(out, "test") as held:
        assert (held / LOCK_NAME).read_text().startswith(f"{os.getpid()} test")
    assert f"process {holder.pid}" in caplog.text and "stale" in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_lock_is_exclusive_in_process_but_reentrant(tmp_path):
    import fcntl

    with output_lock(tmp_path / "o") as out, output_lock(out):  # nested: the same holder
        fd = os.open(out / LOCK_NAME, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert not (tmp_path / "o").exists()  # created by the lock, left empty: removed


def test_lock_refusal_names_folder_and_holder(tmp_path):
    code = HOLDER.replace("time.sleep(120)", "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        with pytest.raises(EnvironmentFault, match=rf"{tmp_path} is in use by process {holder.pid} "):
            with output_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        tio.write_text(tmp_path / "a.txt", "x")
        tio.save_tensors(tmp_path / "w.safetensors", {"w": torch.zeros(2)}, {})  # safetensors writes its own temp
        with tio.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_fuse_never_displaces_a_users_file_and_replaces_its_own_folder(tmp_path, capsys):
    lora = _method_file(registry()["lora"], tmp_path)
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"precious")
    assert cli(["lora", "fuse", str(lora), "--base", "tiny", "--out", str(mine)]) == 2
    assert mine.read_bytes() == b"precious" and not list(tmp_path.glob(".mine.bin*"))
    fused = tmp_path / "fused"
    for _ in range(2):  # the second run replaces the folder the first wrote
        assert cli(["lora", "fuse", str(lora), "--base", "tiny", "--out", str(fused)]) == 0, capsys.readouterr().err
    assert (fused / "model_index.json").is_file() and (fused / "tailor-pipeline.json").is_file()


def test_tailor_outputs_are_not_data_and_eval_pair_counts_real_pairs(tmp_path, capsys):
    from tailor.core.images import list_images

    for name in ("made", "refs"):
        (tmp_path / name).mkdir()
        for f in ("a.png", "grid.png", "loss.png"):
            (tmp_path / name / f).write_bytes(png_bytes())
        (tmp_path / name / "generation.json").write_text("{}")
    assert [p.name for p in list_images(tmp_path / "made")] == ["a.png"]
    made, refs = str(tmp_path / "made"), str(tmp_path / "refs")
    assert cli(["eval", "pair", "--images", made, "--reference", refs, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pairs"] == 1


def test_generate_output_mode_and_rerun_into_own_folder(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["generate", "--base", "tiny", "-p", "x", "-n", "1", "--steps", "1", "--out", str(out)]
    old = os.umask(0o022)
    try:
        assert cli(argv) == 0 and cli(argv) == 0, capsys.readouterr().err  # its own folder: written again
    finally:
        os.umask(old)
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "generation.json", "grid.png"]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())


def test_non_tty_progress_is_a_plain_line_every_n_seconds(capsys, monkeypatch):
    from tailor.core.heartbeat import Heartbeat

    quiet = Heartbeat(5, 0, every=1000.0)
    for step in range(1, 6):
        quiet.tick(step, "loss 0.5")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("training: step 5/5 (100%), loss 0.5, ")  # the last step only
    monkeypatch.setenv("TAILOR_PROGRESS_SECONDS", "0")
    every = Heartbeat(3, 1)
    for step in (2, 3):
        every.tick(step)
    assert [ln.split(",")[0] for ln in capsys.readouterr().err.splitlines()] == [
        "training: step 2/3 (66%)",
        "training: step 3/3 (100%)",
    ]


def test_repeated_warnings_print_once_with_a_count(caplog):
    from tailor.core import warn_once

    log = logging.getLogger("tailor")
    warn_once.install()
    with caplog.at_level(logging.WARNING, logger="tailor"):
        for i in range(4):
            log.warning("%d prompt(s) were truncated, e.g. %r", 1, f"caption {i}", extra={"once": True})
        log.warning("another warning")
        log.warning("another warning")
        warn_once.report()
    texts = [r.getMessage() for r in caplog.records]
    assert texts[:2] == ["1 prompt(s) were truncated, e.g. 'caption 0'", "another warning"]
    assert "repeated 3 more times" in texts[2] and "repeated 1 more time" in texts[3] and len(texts) == 4
    warn_once.install()  # the next command starts afresh
    with caplog.at_level(logging.WARNING, logger="tailor"):
        log.warning("another warning")
    assert caplog.records[-1].getMessage() == "another warning"


def test_dreambooth_class_images_default_under_out(tmp_path):
    import tailor

    spec = registry()["dreambooth"]
    method = spec.method(class_word="star", num_class_images=1, class_steps=1, lora_rank=2)
    method.patch(tailor.tiny_components())
    folder = method.ensure_class_images(out=tmp_path / "run")
    assert folder.parent == tmp_path / "run" / "class_images" and len(list(folder.glob("*.png"))) == 1


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.EEXIST, "already exists"),
        (errno.ENOTDIR, "not a folder"),
        (errno.EISDIR, "is a folder"),
        (errno.EROFS, "read-only"),
        (errno.ENOSPC, "disk is full"),
        (errno.ELOOP, "link loop"),
        (errno.EACCES, "permission denied"),
        (errno.ENAMETOOLONG, "too long"),
        (errno.EPROTO, "check the path"),  # anything else: the OS's reason, the path and a generic fix
    ],
)
def test_every_oserror_becomes_one_sentence_naming_the_path(code, words, capsys, monkeypatch, tmp_path):
    import tailor.cli as tcli

    class Failing:
        def main(self, **kw):
            raise OSError(code, os.strerror(code), str(tmp_path / "x"))

    monkeypatch.setattr(tcli, "build", Failing)  # any command that meets this OSError
    assert tcli.main(["methods"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(tmp_path / "x") in err and words in err, err


def test_python_api_train_is_guarded_like_the_cli(tmp_path):
    import tailor
    from tailor.errors import TailorError

    users = tmp_path / "my_photos"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    method = tailor.get_spec("lora").method(rank=2)
    with pytest.raises(TailorError, match="my_photos"):  # a folder tailor did not write is never written into
        tailor.train(method, tailor.TrainConfig(base="tiny", out=str(users), steps=1, batch_size=1, resolution=32))
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]
    with output_lock(tmp_path / "busy"):  # held by this process: re-entrant, so the same process may train there
        tailor.train(method, tailor.TrainConfig(base="tiny", out=str(tmp_path / "busy"), steps=1, batch_size=1,
                                                resolution=32))  # fmt: skip
    assert (tmp_path / "busy" / "tailor.json").is_file() and not (tmp_path / "busy" / LOCK_NAME).exists()


def test_world_and_bench_commands_keep_out_of_a_users_folder(tmp_path, capsys):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    render = ["world", "render", "--prompt", "a photo of a red star", "-n", "1"]
    assert cli([*render, "--out", str(users)]) == 2 and "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt"]
    assert cli([*render, "--out", str(tmp_path / "r")]) == 0
    assert cli([*render, "--seed", "3", "--out", str(tmp_path / "r")]) == 0  # its own renders: written again
    assert cli(["bench", "control", "--quick", "--base", "tiny", "--out", str(users)]) == 2
    assert "did not write" in capsys.readouterr().err and sorted(p.name for p in users.iterdir()) == ["notes.txt"]
