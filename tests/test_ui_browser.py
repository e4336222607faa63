"""The web UI in a real browser (headless Chromium driven by Selenium): ``tailor ui --base tiny`` on a free port;
generate, train a few steps and watch progress, compose the result in Generate, upload a broken image and see the
CLI's error, try a path outside the workspace and see it refused. Screenshots go to ``outputs/ui/``.

``TAILOR_UI_TEST_BASE=world`` runs it on the shipped world base (more sampling steps; screenshots in
``outputs/ui/world/``), for pictures a person can judge.

Skipped (with the reason) when Chromium, its driver or Selenium is not installed (``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("TAILOR_UI_TEST_BASE", "tiny")
SHOTS = ROOT / "outputs" / "ui" / ("" if BASE == "tiny" else BASE)
STEPS = 4 if BASE == "tiny" else 20
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "Chromium or chromedriver is not installed (apt-get install chromium chromium-driver)", allow_module_level=True
    )
pytest.importorskip("uvicorn", reason="the ui extra is not installed (pip install '.[ui]')")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ui") / "workspace"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tailor", "ui", "--base", BASE, "--port", str(port), "--workspace", str(ws)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/api/jobs", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("tailor ui exited: " + proc.stdout.read())
            time.sleep(0.5)
    yield url, ws
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver, pred, timeout=120):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: pred(d))


def fill(driver, element_id: str, value) -> None:
    e = driver.find_element(By.ID, element_id)
    e.clear()
    e.send_keys(str(value))


def loaded_images(driver, css: str) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length", css
    )


def tab(driver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#tabs button[data-tab={name}]").click()


def test_the_whole_workflow_in_a_browser(server, browser, tmp_path):
    url, ws = server
    d = browser
    d.get(url)
    wait(d, lambda d: d.find_elements(By.ID, "gen-steps"))

    # generate: an image in the gallery, generation.json beside it, the equivalent command
    fill(d, "prompt", "a red star on grass")
    fill(d, "gen-n", 2)
    fill(d, "gen-steps", STEPS)
    d.find_element(By.ID, "show-command").click()
    wait(d, lambda d: f"tailor generate --base {BASE}" in d.find_element(By.ID, "command").text)
    d.find_element(By.ID, "generate").click()
    wait(d, lambda d: loaded_images(d, "#gallery img") == 2)
    assert "done" in d.find_element(By.ID, "generate-status").text
    record = json.loads(next(ws.glob("generate/*/generation.json")).read_text())
    assert record["settings"]["steps"] == STEPS and len(record["images"]) == 2
    shot(d, "generate")

    # train a few steps on a world subject: progress, loss plot, validation samples, a usable result
    tab(d, "train")
    Select(d.find_element(By.ID, "train-method")).select_by_value("lora")
    wait(d, lambda d: d.find_elements(By.ID, "tt-steps"))
    for name, value in {"steps": 6, "batch_size": 1, "log_every": 1, "val_every": 3, "val_steps": STEPS // 2}.items():
        fill(d, f"tt-{name}", value)
    d.find_element(By.ID, "train-start").click()
    wait(
        d,
        lambda d: (
            "running" in d.find_element(By.ID, "train-status").text
            or "done" in d.find_element(By.ID, "train-status").text
        ),
    )
    t0 = time.perf_counter()
    urllib.request.urlopen(url + "/api/info", timeout=10).read()  # the page stays responsive while a job runs
    assert time.perf_counter() - t0 < 5
    wait(d, lambda d: "done" in d.find_element(By.ID, "train-status").text, timeout=180)
    wait(
        d, lambda d: loaded_images(d, "#samples img") == 2 and d.find_elements(By.CSS_SELECTOR, "#loss-plot polyline")
    )
    assert d.find_element(By.ID, "train-progress").get_attribute("value") == "6"
    shot(d, "train")

    # compose it in Generate: one click adds the trained LoRA as an attachment
    use = d.find_element(By.ID, "train-use")
    wait(d, lambda d: use.is_enabled())
    use.click()
    row = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .attachment"))[0]
    assert row.get_attribute("data-flag") == "--lora"
    row.find_element(By.CLASS_NAME, "a-weight").send_keys("0.8")
    fill(d, "gen-n", 1)
    d.find_element(By.ID, "generate").click()
    wait(d, lambda d: "--lora train/lora/" in d.find_element(By.ID, "command").text)
    wait(
        d, lambda d: loaded_images(d, "#gallery img") == 1 and "done" in d.find_element(By.ID, "generate-status").text
    )
    latest = sorted(ws.glob("generate/*/generation.json"))[-1]
    assert "lora" in json.dumps(json.loads(latest.read_text())["settings"])
    shot(d, "compose")

    # stop a longer training, then resume it from its last checkpoint
    tab(d, "train")
    for name, value in {"steps": 60, "val_every": 0, "checkpoint_every": 10, "log_every": 10}.items():
        fill(d, f"tt-{name}", value)
    d.find_element(By.ID, "train-start").click()
    progress = d.find_element(By.ID, "train-progress")
    wait(d, lambda d: int(progress.get_attribute("value") or 0) >= 15 and progress.get_attribute("max") == "60")
    d.find_element(By.ID, "train-stop").click()
    wait(d, lambda d: "cancelled" in d.find_element(By.ID, "train-status").text)
    d.find_element(By.ID, "train-resume").click()
    wait(d, lambda d: "--resume latest" in d.find_element(By.ID, "train-command-line").text)
    wait(d, lambda d: "done" in d.find_element(By.ID, "train-status").text, timeout=180)
    assert progress.get_attribute("value") == "60"
    folder = d.find_element(By.ID, "train-command-line").text.split("--out ")[1].split()[0]
    assert (ws / folder / "lora.safetensors").is_file() and (ws / folder / "checkpoints").is_dir()

    # a broken upload: the CLI's one-sentence error in the page, nothing written
    from PIL import Image

    good = [tmp_path / f"subject-{i}.png" for i in range(2)]
    for i, path in enumerate(good):
        Image.new("RGB", (64, 64), (200, 40 * i, 40)).save(path)
    d.find_element(By.ID, "train-upload").send_keys("\n".join(str(p) for p in good))
    wait(d, lambda d: d.find_element(By.ID, "train-uploaded").text.startswith("2 images in uploads/lora-"))
    assert d.find_element(By.CSS_SELECTOR, "input[name=data][value=images]").is_selected()
    assert len(list(ws.glob("uploads/lora-*/subject-*.png"))) == 2
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    d.find_element(By.ID, "train-upload").send_keys(str(broken))
    error = wait(d, lambda d: d.find_element(By.ID, "train-error").text)
    assert error == "broken.png is not a readable image (UnidentifiedImageError); replace or re-save it."
    assert not list(ws.glob("uploads/**/broken.png"))
    shot(d, "broken-upload")

    # a path outside the workspace is refused
    tab(d, "evaluate")
    Select(d.find_element(By.ID, "evaluate-command")).select_by_value("eval world")
    fill(d, "evaluate-opt-images", "../../etc")
    d.find_element(By.ID, "evaluate-run").click()
    error = wait(d, lambda d: d.find_element(By.ID, "evaluate-error").text)
    assert "outside the workspace" in error
    shot(d, "outside-workspace")

    # evaluate the first generation: scores as a table, the scored images as a contact sheet
    first = sorted(ws.glob("generate/*/generation.json"))[0].parent.relative_to(ws).as_posix()
    fill(d, "evaluate-opt-images", first)
    d.find_element(By.ID, "evaluate-run").click()
    wait(d, lambda d: "done" in d.find_element(By.ID, "evaluate-status").text)
    wait(d, lambda d: "accuracy.shape" in d.find_element(By.ID, "evaluate-table").text)
    assert not d.find_element(By.ID, "evaluate-error").text
    wait(d, lambda d: loaded_images(d, "div#evaluate-images img") >= 2)
    shot(d, "evaluate")

    # convert the trained LoRA to the diffusers layout; the queue lists every job with its command line
    tab(d, "convert")
    Select(d.find_element(By.ID, "convert-command")).select_by_value("convert lora")
    for name, value in {"src": folder, "dst": "converted/lora-diffusers.safetensors", "to": "diffusers"}.items():
        fill(d, f"convert-opt-{name}", value)
    d.find_element(By.ID, "convert-run").click()
    wait(d, lambda d: "done" in d.find_element(By.ID, "convert-status").text)
    assert (ws / "converted/lora-diffusers.safetensors").is_file()
    tab(d, "jobs")
    # 7 jobs: 2 generations, 3 trainings (one stopped, one resumed), an evaluation, a conversion; newest first
    rows = wait(
        d, lambda d: d.execute_script("return [...document.querySelectorAll('#jobs tr')].map(r => r.innerText)")
    )
    assert len(rows) == 1 + 7 and "tailor convert lora" in rows[1] and "cancelled" in rows[4]
    d.execute_script("document.querySelectorAll('#jobs tr')[1].click()")  # the table redraws: click in the page
    wait(d, lambda d: "[exit 0" in d.find_element(By.ID, "job-log").text)
    shot(d, "jobs")
