"""The README's screenshot of ``tailor ui`` on the world base (docs/ui.png), made in headless Chromium:

    python benchmarks/ui_screenshots.py [--out outputs/ui/showcase]

A LoRA trains on the world subject ``checker_star`` with the base's defaults (120 steps, validation grids every 40)
and is then composed in Generate; it writes ``train-running.png`` (progress, loss plot, first validation grid),
``train.png`` (finished) and ``generate.png`` (the LoRA attached, two prompts x 4 seeds). About 2 minutes on 2 CPUs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = "a photo of a star on grass\na photo of a star on snow"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "outputs/ui/showcase"))
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = tempfile.mkdtemp(prefix="tailor-ui-shots-")
    cmd = [sys.executable, "-m", "tailor", "ui", "--base", "world", "--port", str(port), "--workspace", ws]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    driver = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))  # never a download
    d = webdriver.Chrome(options=opts, service=driver)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api/jobs")
                break
            except OSError:
                time.sleep(0.5)
        d.get(url)

        def until(pred, timeout=900):
            return WebDriverWait(d, timeout, 0.5).until(lambda d: pred(d))

        def fill(element_id: str, value) -> None:
            e = d.find_element(By.ID, element_id)
            e.clear()
            e.send_keys(str(value))

        def shot(name: str) -> None:
            d.execute_script("window.scrollTo(0, 0)")
            d.save_screenshot(str(out / name))

        def text(element_id: str) -> str:
            return d.find_element(By.ID, element_id).text

        until(lambda d: d.find_elements(By.ID, "tt-steps"))
        d.find_element(By.CSS_SELECTOR, "#tabs button[data-tab=train]").click()
        Select(d.find_element(By.ID, "train-subject")).select_by_value("checker_star")
        fill("tt-val_every", 40)
        fill("tt-val_prompts", PROMPTS)
        d.find_element(By.ID, "train-start").click()
        progress = d.find_element(By.ID, "train-progress")
        until(lambda d: "training" in text("train-status") and int(progress.get_attribute("value") or 0) >= 50)
        shot("train-running.png")
        until(lambda d: "done" in text("train-status"))
        shot("train.png")
        d.find_element(By.ID, "train-use").click()
        until(lambda d: d.find_elements(By.CSS_SELECTOR, "#attachments .attachment"))
        fill("prompt", PROMPTS)
        fill("gen-n", 4)
        fill("gen-steps", 20)
        d.find_element(By.ID, "generate").click()
        until(lambda d: "done" in text("generate-status"))
        time.sleep(1)
        shot("generate.png")
    finally:
        d.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(ws, ignore_errors=True)
    print(f"wrote train-running.png, train.png and generate.png to {out}")


if __name__ == "__main__":
    main()
