"""Contact sheet of two or more ``tailor bench identity`` runs: per held-out identity (one row each), the first
reference photo, then each run's first-seed image of every prompt (photo/snow, sketch/grass, watercolor/brick,
cartoon/water), upscaled 2x (nearest).

    python benchmarks/identity_sheet.py OUT.png old=outputs/bench/identity_old/images/instantid \
        new=outputs/bench/identity_new/images/instantid [--identities 800,825,...] [--prompts 4] [--seeds 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", help="LABEL=FOLDER of a row's images (FOLDER/<identity>/img_NNN.png)")
    ap.add_argument("--identities", default="800,825,850,875,900,925,950,975")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    a = ap.parse_args()
    from tailor.bench.identity import references

    runs = [r.split("=", 1) for r in a.runs]
    ids = [int(i) for i in a.identities.split(",")]
    tile, gap, head = 128, 8, 16
    cols = 1 + len(runs) * a.prompts
    width = cols * tile + len(runs) * gap
    sheet = Image.new("RGB", (width, head + len(ids) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), "reference", fill="black")
    for r, (label, _) in enumerate(runs):
        draw.text((tile + r * (a.prompts * tile + gap) + gap + 4, 2), label, fill="black")
    for row, identity in enumerate(ids):
        y = head + row * tile
        sheet.paste(references(identity, 1, 64)[0].resize((tile, tile), Image.NEAREST), (0, y))
        for r, (_, folder) in enumerate(runs):
            for p in range(a.prompts):
                img = Image.open(Path(folder) / str(identity) / f"img_{p * a.seeds:03d}.png").convert("RGB")
                x = tile + r * (a.prompts * tile + gap) + gap + p * tile
                sheet.paste(img.resize((tile, tile), Image.NEAREST), (x, y))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
