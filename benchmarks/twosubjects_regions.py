"""Contact sheet of ``tailor bench twosubjects`` regions: for the first references, each world segmenter's label map,
the exact masks and the two region crops Character-Adapter's IP-Adapter reads (cut by ``segmenter_scenes``).

    python benchmarks/twosubjects_regions.py outputs/bench/two-and/regions.png [--cases 8]

Rows: reference, ``segmenter`` (first) label map, ``segmenter_scenes`` label map, exact masks, crop of object 1,
crop of object 2 (white: no region of that shape). Colours: the condition palette by class id.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SEGMENTERS = ("segmenter", "segmenter_scenes")


def main() -> None:
    from tailor.bench import common as C
    from tailor.bench.twosubjects import held_out_case
    from tailor.conditions.extract import palette
    from tailor.methods.character_adapter.method import region_crop
    from tailor.world.zoo.oracles import load_oracle, to_unit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", type=int, default=8)
    args = ap.parse_args()
    pal = palette(16).astype(np.uint8)
    segs = {n: load_oracle(n) for n in SEGMENTERS}
    classes = list(segs["segmenter_scenes"].classes)
    rows: dict[str, list] = {k: [] for k in ("reference", *SEGMENTERS, "exact", "crop 1", "crop 2")}
    for j in range(args.cases):
        sample, _ = held_out_case(j, 64)
        img = Image.fromarray(sample.image)
        rows["reference"].append(img)
        labels = {}
        for n, m in segs.items():
            with torch.no_grad():
                labels[n] = m(to_unit([img])).argmax(1)[0].numpy()
            rows[n].append(Image.fromarray(pal[labels[n]]))
        exact = np.zeros(sample.mask.shape, np.int64)
        for o in sample.objects:
            exact[o["mask"]] = classes.index(o["shape"])
        rows["exact"].append(Image.fromarray(pal[exact]))
        for k, o in zip(("crop 1", "crop 2"), sample.objects):
            mask = labels["segmenter_scenes"] == classes.index(o["shape"])
            rows[k].append(
                region_crop(img, mask).resize((64, 64)) if mask.any() else Image.new("RGB", (64, 64), "white")
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    C.contact_sheet(list(rows.items()), args.out)
    print(f"rows {list(rows)} -> {args.out}")


if __name__ == "__main__":
    main()
