"""The web UI without a browser: the workspace guard, the command builders, the server's API (starlette's
TestClient), the job queue (a stand-in worker) and the progress hook the page reads."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from tailor.errors import TailorError  # noqa: E402
from tailor.ui import catalog, commands  # noqa: E402
from tailor.ui.jobs import Runner  # noqa: E402
from tailor.ui.paths import Workspace  # noqa: E402


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


class FakeRunner:
    """Records submitted jobs (the API tests need no worker)."""

    def __init__(self, ws):
        from tailor.ui.jobs import Job

        self.ws, self.jobs, self.Job = ws, {}, Job

    def submit(self, kind, cmds, out=None, **meta):
        job = self.Job(f"j{len(self.jobs)}", kind, cmds, out, meta)
        self.jobs[job.id] = job
        return job

    def close(self):
        pass


@pytest.fixture
def client(ws):
    from tailor.ui.server import create_app

    runner = FakeRunner(ws)
    with TestClient(create_app(ws.root, "tiny", runner=runner), base_url="http://127.0.0.1:7860") as c:
        c.runner = runner
        yield c


# --------------------------------------------------------------------- the workspace guard
def test_guard_refuses_paths_out_of_the_workspace(ws, tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (ws.root / "link").symlink_to(outside)
    (ws.root / "data").mkdir()
    for bad in ("../secret", "/etc/passwd", "~/x", "data/../../secret", "link", "link/file.png"):
        assert ws.escapes(bad), bad
        with pytest.raises(TailorError, match="outside the workspace"):
            ws.path(bad)
    for good in ("data", "data/a.png", "new/folder", "./data/../data", "."):
        assert not ws.escapes(good), good
        assert ws.path(good).is_relative_to(ws.root)


# --------------------------------------------------------------------- command builders
def test_generate_command_from_the_form(ws):
    (ws.root / "runs/lora").mkdir(parents=True)
    form = {
        "prompt": "a red star\n\n a blue circle ",
        "settings": {"n": "2", "steps": "5", "sampler": "euler"},
        "attachments": [
            {"flag": "--lora", "path": "runs/lora", "weight": "0.8"},
            {"flag": "--control", "path": "canny", "refs": ["edges.png"], "weight": "0.5", "start": "0", "end": ".6"},
            {"flag": "--lora", "path": "runs/lora", "weight": "", "start": "0", "end": "1"},
        ],
        "out": "gen/a",
    }
    (args,), out = commands.generate_args(ws, "tiny", form)
    assert out == "gen/a"
    assert args[:5] == ["generate", "--base", "tiny", "--out", "gen/a"]
    assert args[5:9] == ["--prompt", "a red star", "--prompt", "a blue circle"]
    assert args[-6:] == ["--lora", "runs/lora:0.8", "--control", "canny=edges.png:0.5:0:0.6", "--lora", "runs/lora"]
    assert "-n" in args and args[args.index("--steps") + 1] == "5"
    # the same line the CLI parses: click accepts every option the builder wrote
    cmd = catalog.generate_command()
    ctx = cmd.make_context("generate", list(args[1:]), resilient_parsing=True)
    assert ctx.params["lora"] == ("runs/lora:0.8", "runs/lora") and ctx.params["sampler"] == "euler"


@pytest.mark.parametrize(
    "form, needle",
    [
        ({"prompt": ""}, "no prompt"),
        ({"prompt": "x", "out": "../elsewhere"}, "outside the workspace"),
        ({"prompt": "x", "attachments": [{"flag": "--lora", "path": "/etc/x.safetensors"}]}, "outside the workspace"),
        ({"prompt": "x", "attachments": [{"flag": "--ip-adapter", "path": "world", "refs": ["../a.png"]}]}, "outside"),
        ({"prompt": "x", "attachments": [{"flag": "--nope", "path": "a"}]}, "not a generate option"),
        ({"prompt": "x", "other": {"prompts": "/etc/passwd"}}, "outside the workspace"),
        ({"prompt": "x", "settings": {"bogus": 1}}, "no option 'bogus'"),
    ],
)
def test_generate_form_errors_are_one_sentence(ws, form, needle):
    with pytest.raises(TailorError, match=needle) as e:
        commands.generate_args(ws, "tiny", form)
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_train_and_tool_commands(ws):
    (args,), out = commands.train_args(
        ws, "tiny", {"method": "lora", "options": {"steps": "4", "rank": "2"}, "subject": "checker_star"}
    )
    assert args[:6] == ["train", "lora", "--base", "tiny", "--out", out] and out.startswith("train/lora/")
    assert ["--data", "world-subject:checker_star"] == args[args.index("--data") : args.index("--data") + 2]
    assert args[args.index("--rank") + 1] == "2"
    (args,), _ = commands.train_args(ws, "tiny", {"method": "lora", "images": "up/a", "out": out, "resume": True})
    assert args[args.index("--resume") + 1] == "latest" and args[args.index("--images") + 1] == "up/a"
    for bad, needle in [
        ({"method": "nope"}, "not registered"),
        ({"method": "lora", "images": "../x"}, "outside the workspace"),
        ({"method": "lora", "options": {"resume": "/tmp/ckpt"}}, "outside the workspace"),
    ]:
        with pytest.raises(TailorError, match=needle):
            commands.train_args(ws, "tiny", bad)
    (args,), out = commands.tool_args(ws, {"command": "eval pair", "options": {"images": "a", "reference": "b"}})
    assert args == ["eval", "pair", "--images", "a", "--reference", "b"] and out == "a"
    (args,), _ = commands.tool_args(
        ws, {"command": "convert lora", "options": {"src": "-a", "dst": "b", "to": "kohya"}}
    )
    assert args == ["convert", "lora", "--to", "kohya", "--", "-a", "b"]  # a value is never read as an option
    (args,), out = commands.tool_args(ws, {"command": "lora merge", "options": {"loras": ["a", "b"], "out": "m"}})
    assert args[:2] == ["lora", "merge"] and args[-2:] == ["a", "b"] and out == "m"
    with pytest.raises(TailorError, match="outside the workspace"):
        commands.tool_args(ws, {"command": "eval world", "options": {"images": "../../etc"}})
    with pytest.raises(TailorError, match="not a command"):
        commands.tool_args(ws, {"command": "world render", "options": {}})


# --------------------------------------------------------------------- the server
def test_info_is_built_from_the_registry(client):
    from tailor.compose import generate_flags
    from tailor.core.method import method_names

    info = client.get("/api/info").json()
    assert {k["flag"] for k in info["generate"]["attachments"]} == {*generate_flags(), "--apply"}
    assert [m["name"] for m in info["methods"]] == list(method_names())
    assert {f["name"] for f in info["generate"]["settings"]} >= {"n", "seed", "steps", "guidance", "sampler"}
    assert "canny" in info["shipped"]["--control"] and info["subjects"]
    other = {f["name"]: f for f in info["generate"]["other"]}
    assert other["face"]["upload"] and other["ip_image"]["upload"] and other["prompts"]["upload"]  # reference images
    assert not other["allow_large"]["upload"]
    assert "eval pair" in info["tools"]["evaluate"] and "lora fuse" in info["tools"]["convert"]
    schema = client.get("/api/train-schema?method=textual_inversion").json()
    assert {f["name"] for f in schema["method_options"]} >= {"token", "init_word", "num_vectors"}
    steps = next(f for f in schema["train_options"] if f["name"] == "steps")
    assert steps["default"] == 500 and steps["flag"] == "--steps"


def test_generate_endpoint_queues_and_shows_the_command(client, ws):
    r = client.post("/api/generate", json={"prompt": "a star", "settings": {"n": 1}, "dry": True})
    assert r.status_code == 200 and r.json()["command"].startswith(f"cd {ws.root} && tailor generate --base tiny")
    assert not client.runner.jobs
    r = client.post("/api/generate", json={"prompt": "a star", "out": "../x"})
    assert r.status_code == 400 and "outside the workspace" in r.json()["error"]
    r = client.post("/api/generate", json={"prompt": "a star"})
    assert r.status_code == 200 and client.runner.jobs["j0"].commands[0][0] == "generate"
    for bad in ("[1, 2]", "not json"):
        r = client.post("/api/generate", content=bad, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not a JSON object" in r.json()["error"]


def test_files_stay_in_the_workspace(client, ws, tmp_path):
    (tmp_path / "secret.txt").write_text("no")
    (ws.root / "in.txt").write_text("yes")
    (ws.root / "out-link").symlink_to(tmp_path / "secret.txt")
    assert client.get("/files/in.txt").text == "yes"
    for bad in ("../secret.txt", "out-link", "%2e%2e/secret.txt"):
        r = client.get("/files/" + bad)
        assert r.status_code in (403, 404) and "no" != r.text, bad
    r = client.get("/api/files?folder=..")
    assert r.status_code == 400 and "outside the workspace" in r.json()["error"]


def test_uploads_are_checked_like_the_cli(client, ws):
    import io

    from PIL import Image

    r = client.post("/api/upload?folder=up&name=broken.png", content=b"not an image")
    assert r.status_code == 400
    assert r.json()["error"] == "broken.png is not a readable image (UnidentifiedImageError); replace or re-save it."
    assert not (ws.root / "up").exists() and not list(ws.ui_dir.glob("upload-*"))
    for name, needle in [("../x.png", "not a plain file name"), ("a.pkl", "takes"), ("x.png", "outside")]:
        folder = "../o" if needle == "outside" else "up"
        r = client.post(f"/api/upload?folder={folder}&name={name}", content=b"x")
        assert r.status_code == 400 and needle in r.json()["error"], name
    import pickle

    from tailor.ui import uploads

    r = client.post("/api/upload?folder=up&name=big.png", content=b"0" * (uploads.MAX_BYTES + 1))
    assert r.status_code == 400 and r.json()["error"].startswith("big.png is larger than 64 MB")

    r = client.post("/api/upload?folder=up&name=evil.safetensors", content=pickle.dumps({"a": 1}))
    assert r.status_code == 400 and r.json()["error"].startswith("evil.safetensors is not a readable .safetensors")
    assert not (ws.root / "up").exists()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    r = client.post("/api/upload?folder=up&name=red.png", content=buf.getvalue())
    assert r.status_code == 200 and r.json()["path"] == "up/red.png" and (ws.root / "up/red.png").is_file()


def test_other_sites_cannot_drive_the_server(client):
    r = client.post("/api/generate", json={"prompt": "a"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "another site" in r.json()["error"] and not client.runner.jobs
    r = client.post("/api/upload?folder=up&name=a.txt", content=b"x", headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get("/api/jobs", headers={"host": "evil.example:7860"}).status_code == 400  # DNS rebinding
    r = client.post("/api/generate", json={"prompt": "a"}, headers={"origin": "http://127.0.0.1:7860"})
    assert r.status_code == 200


# --------------------------------------------------------------------- the job queue
STAND_IN = r"""
import json, sys, time
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    seconds = float(job["commands"][0][1])
    open(job["log"], "a").write("$ sleep\n" + ("error: bad input.\n" if seconds < 0 else ""))
    time.sleep(abs(seconds))
    print(json.dumps({"id": job["id"], "rc": 2 if seconds < 0 else 0}), flush=True)
"""


def _wait(pred, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_queue_runs_one_job_at_a_time_and_cancels(ws):
    runner = Runner(ws, "tiny", worker=[sys.executable, "-c", STAND_IN])
    try:
        long = runner.submit("generate", [["sleep", "30"]])
        short = runner.submit("generate", [["sleep", "0.1"]])
        bad = runner.submit("generate", [["sleep", "-0.1"]])
        assert _wait(lambda: long.state == "running")
        assert short.state == "queued"  # one at a time
        first_worker = runner.proc.pid
        runner.cancel(long.id)
        assert _wait(lambda: bad.state in ("done", "failed"))
        assert long.state == "cancelled" and short.state == "done" and short.rc == 0
        assert bad.state == "failed" and bad.rc == 2 and "error: bad input." in runner.log(bad)
        assert runner.proc.pid != first_worker  # a fresh worker after the kill
        queued = runner.submit("generate", [["sleep", "5"]])
        later = runner.submit("generate", [["sleep", "0"]])
        runner.cancel(later.id)
        assert later.state == "cancelled" and later.started is None
        runner.cancel(queued.id)
    finally:
        runner.close()


def test_progress_hook_writes_json_lines(tmp_path, monkeypatch):
    from tailor.core.progress import report, track

    path = tmp_path / "p.jsonl"
    report("sampling", 1, 2)  # unset: nothing
    monkeypatch.setenv("TAILOR_PROGRESS_FILE", str(path))
    assert list(track(range(3), 3, "sampling")) == [0, 1, 2]
    report("training", 5, 10, "loss 0.5")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[:3] == [{"what": "sampling", "step": i, "total": 3} for i in (1, 2, 3)]
    assert lines[3] == {"what": "training", "step": 5, "total": 10, "info": "loss 0.5"}
    monkeypatch.setenv("TAILOR_PROGRESS_FILE", str(tmp_path / "missing-dir" / "p.jsonl"))
    report("sampling", 1, 1)  # an unwritable file never fails the run
    assert not os.path.exists(tmp_path / "missing-dir")


def test_the_real_worker_runs_the_cli(ws):
    """The worker process itself: warm on the tiny base, runs ``tailor generate`` with ``tailor.cli.main``, streams
    progress lines, and a user error ends the job with the CLI's sentence and status 2."""
    runner = Runner(ws, "tiny")
    try:
        good = runner.submit("generate", [["generate", "--base", "tiny", "-p", "a star", "-n", "1", "--steps", "3",
                                           "--out", "gen"]], out="gen")  # fmt: skip
        bad = runner.submit("generate", [["generate", "--base", "tiny", "-p", "x", "--prompts", "missing.txt"]])
        assert _wait(lambda: bad.state in ("done", "failed"), timeout=240), runner.log(good)
        assert (
            good.state == "done"
            and (ws.root / "gen/000.png").is_file()
            and (ws.root / "gen/generation.json").is_file()
        )
        assert runner.progress(good) == {"what": "sampling", "step": 3, "total": 3}
        assert bad.state == "failed" and bad.rc == 2
        assert "error: prompts file missing.txt does not exist; check the path." in runner.log(bad)
    finally:
        runner.close()


def test_a_base_that_does_not_load_fails_jobs_with_its_sentence(ws):
    runner = Runner(ws, "no-such-base")
    try:
        job = runner.submit("generate", [["generate", "--base", "no-such-base", "-p", "x"]])
        assert _wait(lambda: job.state == "failed", timeout=240)
        assert "error: the worker process ended (error: base model 'no-such-base' not found;" in runner.log(job)
    finally:
        runner.close()
