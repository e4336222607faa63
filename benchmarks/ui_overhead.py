"""What does a generation started from the web UI cost next to the same ``tailor generate`` as one process? (issue #25)

    python benchmarks/ui_overhead.py [--base world] [--n 2] [--steps 20] [--runs 5] [--json]

Starts ``tailor ui`` on a free port in a temporary workspace, waits for its worker to be warm, then alternates
(A B A B ...) a generation through the page's HTTP API (POST /api/generate, then polling the job every 50 ms until
it is done: what the page does, at a finer poll) with the same command line run as a fresh process
(``python -m tailor generate ...``). Reports the median wall seconds of each, their ratio, the seconds the command
itself ran inside the worker (so what the page's request, queue and polling add), the worst latency of
GET /api/jobs while jobs ran (the page stays responsive), and the resident memory of the server and its worker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def ui_generation(url: str, form: dict, lag: list[float]) -> tuple[float, float]:
    """(wall seconds from the request to the page seeing "done", seconds the command itself ran in the worker)."""
    t0 = time.perf_counter()
    job = _post(url + "/api/generate", form)["job"]
    while True:
        t = time.perf_counter()
        state = _get(f"{url}/api/jobs/{job['id']}")["job"]["state"]
        lag.append(time.perf_counter() - t)
        if state not in ("queued", "running"):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if state != "done":
        raise SystemExit(f"the UI job ended {state}; see its log in the workspace's .tailor-ui/jobs/{job['id']}")
    log = _get(f"{url}/api/jobs/{job['id']}")["log"]
    inside = float(re.search(r"\[exit 0 after ([0-9.]+) s\]", log).group(1))
    return wall, inside


def cli_generation(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tailor", *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="world")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="tailor-ui-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tailor", "ui", "--base", a.base, "--port", str(port), "--workspace", str(ws)]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                _get(url + "/api/jobs")
                break
            except OSError:
                time.sleep(0.2)
        form = {"prompt": "a red star on grass", "settings": {"n": a.n, "steps": a.steps, "seed": 0}}
        lag: list[float] = []
        ui_generation(url, form, lag)  # warm-up: waits for the worker's start, then one job
        ui_t, cli_t, inside = [], [], []
        for i in range(a.runs):
            wall, ran = ui_generation(url, form, lag)
            ui_t.append(wall)
            inside.append(ran)
            args = ["generate", "--base", a.base, "-p", form["prompt"], "-n", str(a.n), "--steps", str(a.steps)]
            cli_t.append(cli_generation([*args, "--seed", "0", "--out", f"cli/{i}"], ws))
        worker = children(server.pid)
        result = {
            "base": a.base,
            "n": a.n,
            "steps": a.steps,
            "runs": a.runs,
            "ui_seconds": statistics.median(ui_t),
            "cli_seconds": statistics.median(cli_t),
            "ratio_ui_over_cli": statistics.median(u / c for u, c in zip(ui_t, cli_t)),
            "command_in_worker_seconds": statistics.median(inside),
            "ui_overhead_seconds": statistics.median(u - r for u, r in zip(ui_t, inside)),
            "worst_poll_latency_ms": 1000 * max(lag),
            "server_rss_mb": rss_mb(server.pid),
            "worker_rss_mb": rss_mb(worker[0]) if worker else None,
            "cli_command": shlex.join(["tailor", *args, "--seed", "0"]),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(ws, ignore_errors=True)
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"generation from the page (warm worker): {result['ui_seconds']:.2f} s median of {a.runs}")
    print(f"`{result['cli_command']}` as one process: {result['cli_seconds']:.2f} s")
    print(f"ratio page / process: {result['ratio_ui_over_cli']:.3f}  (target <= 1.05)")
    print(
        f"of the page's time, the command ran {result['command_in_worker_seconds']:.2f} s in the worker; request, "
        f"queue and polling added {result['ui_overhead_seconds']:.2f} s"
    )
    print(f"worst GET /api/jobs latency while jobs ran: {result['worst_poll_latency_ms']:.0f} ms")
    print(f"resident memory: server {result['server_rss_mb']:.0f} MB, worker {result['worker_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
