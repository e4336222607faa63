"""Training logs: ``log.jsonl`` + ``log.csv`` (step, loss, lr, it/s, the method's logs, val_loss), a PIL-drawn
``loss.png`` and a rich progress bar (a log line per ``log_every`` steps instead when not on a terminal).

A resumed run keeps the records up to its checkpoint's step and drops the ones the interrupted run wrote after it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailor.core.io import atomic_path, write_text

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("tailor")


class TrainLog:
    """Records of one run, mirrored to ``out/log.jsonl``, ``out/log.csv`` and ``out/loss.png``."""

    def __init__(self, out: str | Path, resume_step: int | None = None):
        self.out = Path(out)
        self.jsonl = self.out / "log.jsonl"
        self.records: list[dict[str, Any]] = []
        if resume_step is not None and self.jsonl.is_file():
            for line in self.jsonl.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the crash that ended the previous run
                if isinstance(rec, dict) and int(rec.get("step", 0)) <= resume_step:
                    self.records.append(rec)
        write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records))

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.write_csv()

    def write_csv(self) -> None:
        columns: list[str] = []
        for r in self.records:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        write_text(self.out / "log.csv", buf.getvalue())

    def plot(self) -> None:
        with atomic_path(self.out / "loss.png") as tmp:
            plot_losses(self.records).save(tmp, format="PNG")


def plot_losses(records: list[dict[str, Any]], size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A line plot of ``loss`` (blue) and ``val_loss`` (orange dots) against ``step``."""
    from PIL import Image, ImageDraw, ImageFont  # here: PIL's drawing and FreeType modules only load when plotting

    w, h = size
    left, right, top, bottom = 64, 16, 28, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    d.text((left, 8), "training loss (blue) / validation loss (orange)", fill="black", font=font)
    series = {
        key: [
            (float(r["step"]), float(r[key]))
            for r in records
            if isinstance(r.get(key), int | float) and math.isfinite(r[key])
        ]
        for key in ("loss", "val_loss")
    }
    points = series["loss"] + series["val_loss"]
    d.rectangle((left, top, w - right, h - bottom), outline="black")
    if not points:
        d.text((left + 10, top + 10), "no losses logged yet", fill="gray", font=font)
        return img
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-3, y1 + abs(y1) * 0.1 + 1e-3
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def xy(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (w - left - right)
        return px, h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)

    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        _, py = xy(x0, yv)
        d.line((left, py, w - right, py), fill=(225, 225, 225))
        d.text((4, py - 6), f"{yv:.4g}", fill="black", font=font)
        xv = x0 + (x1 - x0) * i / 4
        px, _ = xy(xv, y0)
        d.text((px - 10, h - bottom + 6), f"{xv:.0f}", fill="black", font=font)
    d.text((w // 2 - 12, h - 18), "step", fill="black", font=font)
    d.rectangle((left, top, w - right, h - bottom), outline="black")
    loss = [xy(*p) for p in series["loss"]]
    if len(loss) > 1:
        d.line(loss, fill=(31, 119, 180), width=2)
    elif loss:
        d.ellipse((loss[0][0] - 2, loss[0][1] - 2, loss[0][0] + 2, loss[0][1] + 2), fill=(31, 119, 180))
    for px, py in (xy(*p) for p in series["val_loss"]):
        d.ellipse((px - 3, py - 3, px + 3, py + 3), fill=(255, 127, 14))
    return img


class ProgressBar:
    """A rich progress bar on a terminal; nothing but the log lines otherwise."""

    def __init__(self, total: int, start: int, description: str = "training"):
        from rich.console import Console

        self.progress = self.heartbeat = None
        self.description, self.total = description, total
        if not Console().is_terminal:  # a pipe or a file: a plain line every N seconds (tailor.core.heartbeat)
            from tailor.core.heartbeat import Heartbeat

            self.heartbeat = Heartbeat(total, start, description)
        else:
            from tailor.core.progress import make_progress

            self.progress = make_progress()
            self.progress.start()
            self.task = self.progress.add_task(description, total=total, completed=start, info="")

    def update(self, step: int, info: str | None = None) -> None:
        """Advance to ``step``; ``info`` (loss, it/s) replaces the shown text when given."""
        from tailor.core.progress import report

        report(self.description, step, self.total, info)
        if self.progress is not None:
            fields = {} if info is None else {"info": info}
            self.progress.update(self.task, completed=step, **fields)
        elif self.heartbeat is not None:
            self.heartbeat.tick(step, info)

    def line(self, text: str) -> None:
        if self.progress is None:
            log.info(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
