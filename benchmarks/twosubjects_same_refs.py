"""Rescore rows of a ``tailor bench twosubjects`` run on the references its ``character-adapter-seg`` row cut (so that
rows scored on all references and the segmenter row compare on the same ones), from the saved images.

    python benchmarks/twosubjects_same_refs.py outputs/bench/two-and [--rows none,ip-adapter,...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image


def main() -> None:
    from tailor.bench import twosubjects as B

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--rows", default="none,ip-adapter,character-adapter,character-adapter-seg")
    args = ap.parse_args()
    result = json.loads((args.run / "results.json").read_text())
    seeds, cases = result["settings"]["seeds"], result["cases"]
    cut = sorted(int(p.name.split("_")[1]) for p in (args.run / "images" / "character-adapter-seg").iterdir())
    refused = [j for j in range(len(cases)) if j not in cut]
    print(json.dumps({"refused": {j: [s["shape"] for s in cases[j]["subjects"]] for j in refused}}))
    for key in args.rows.split(","):
        images, truth = [], []
        for j in cut:
            for i in range(seeds):
                path = args.run / "images" / key / f"case_{j:02d}" / f"img_{i:03d}.png"
                images.append(Image.open(path).convert("RGB"))
                truth.append(cases[j]["subjects"])
        out = B.leakage(B.read_subjects(images, [[t["shape"] for t in tr] for tr in truth]), truth)
        found = round(out["found"] * 2 * len(images))
        leaks = round(out["color_leak"] * found) if found else 0
        print(json.dumps({"row": key, "subjects_found": found, "colour_leaks": leaks} | out))


if __name__ == "__main__":
    main()
