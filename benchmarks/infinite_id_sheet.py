"""Contact sheet of an identity-bench run for Infinite-ID (docs/infinite_id.md): one line per (held-out identity,
prompt), the columns the first reference photo, then the first seed's image of each row (default: base |
infinite_id | infinite_id-adain | infinite_id-plain | instantid), labelled on top.

    python benchmarks/infinite_id_sheet.py outputs/bench/identity_infid outputs/infinite_id_sheet.png [ROW,ROW...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROWS = ("base", "infinite_id", "infinite_id-adain", "infinite_id-plain", "instantid")


def sheet(bench: Path, out: Path, rows: tuple[str, ...] = ROWS, identities: int = 4, scale: int = 3) -> Path:
    from tailor.bench.identity import references

    settings = json.loads((bench / "tailor-bench.json").read_text())
    ids, n_prompts, seeds = settings["identities"][:identities], settings["prompts"], settings["seeds"]
    rows = tuple(r for r in rows if (bench / "images" / r).is_dir())
    size = Image.open(bench / "images" / rows[0] / str(ids[0]) / "img_000.png").size
    t = size[0] * scale
    cols = ("reference", *rows)
    head = 14
    grid = Image.new("RGB", (t * len(cols), head + t * len(ids) * n_prompts), "white")
    draw = ImageDraw.Draw(grid)
    for c, name in enumerate(cols):
        draw.text((c * t + 3, 1), name, fill="black")
    for i, identity in enumerate(ids):
        ref = references(identity, 1, size[0])[0]
        for k in range(n_prompts):
            y = head + (i * n_prompts + k) * t
            grid.paste(ref.resize((t, t), Image.NEAREST), (0, y))
            for c, name in enumerate(rows, start=1):
                img = Image.open(bench / "images" / name / str(identity) / f"img_{k * seeds:03d}.png").convert("RGB")
                grid.paste(img.resize((t, t), Image.NEAREST), (c * t, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


if __name__ == "__main__":
    print(sheet(Path(sys.argv[1]), Path(sys.argv[2]), tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else ROWS))
