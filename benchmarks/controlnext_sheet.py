"""Contact sheet (condition | no control | old | new) and per-image paired edge F1 of two canny models in a
`tailor bench control` folder: python benchmarks/controlnext_sheet.py BENCH_DIR OLD_NAME NEW_NAME (docs/zoo.md)."""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tailor.bench.control import held_out
from tailor.conditions import from_truth, truth_of_sample
from tailor.core.images import make_grid
from tailor.eval.control import edge_f1_to_map

root, old, new, seeds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], 2
samples = held_out(16, 64)
per_image = [x for x in samples for _ in range(seeds)]


def imgs(name):
    return [Image.open(root / "images" / name / f"img_{i:03d}.png").convert("RGB") for i in range(len(per_image))]


f1 = {}
for name in ("no_control", old, new):
    f1[name] = [
        edge_f1_to_map(im, from_truth("canny", truth_of_sample(s))[..., 0] > 0) for im, s in zip(imgs(name), per_image)
    ]
d = np.array(f1[new]) - np.array(f1[old])
print(json.dumps({k: round(float(np.mean(v)), 4) for k, v in f1.items()}))
print(
    f"paired new - old: mean {d.mean():.4f}, s.e. {d.std(ddof=1) / np.sqrt(len(d)):.4f}, "
    f"new better on {int((d > 0).sum())}/{len(d)}"
)
for k in (old, new):
    v = np.array(f1[k])
    print(f"{k}: s.e. of the mean {v.std(ddof=1) / np.sqrt(len(v)):.4f}")
conds = [Image.fromarray(from_truth("canny", truth_of_sample(s))).convert("RGB") for s in samples[:8]]
rows = [conds] + [imgs(n)[::seeds][:8] for n in ("no_control", old, new)]
grid = make_grid([t for r in rows for t in r], cols=8)
grid.resize((grid.width * 3, grid.height * 3), 0).save(root / "sheet_condition_none_old_new.png")
print("rows: condition | no control | old | new;", root / "sheet_condition_none_old_new.png")
