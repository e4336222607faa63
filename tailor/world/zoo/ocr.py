"""The OCR oracle: reads the one line of world-font text in an image (evaluation only; no method reads it).

A small CRNN-style recognizer (Shi et al. 2016, without the recurrent layer): a convolutional stack keeps 32
columns of a 64-pixel image, attention-pools every column over its height (the text may sit anywhere), mixes
neighbouring columns with 1-D convolutions and predicts per column one of blank + :data:`tailor.world.font.CHARSET`;
it is trained with CTC (Graves et al. 2006) and read with greedy CTC decoding (repeats merged, blanks dropped). An
image without text reads as ``""``. Scores are AnyText's (Tuo et al. 2023): Sen.ACC (share of lines read exactly)
and NED (1 - edit distance / longer length, averaged).

Shipped as ``weights/ocr/ocr.safetensors`` (float16, config in the metadata); its recipe is the source
checkout's ``zoo/ocr.py`` (``python -m zoo ocr``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tailor.core.io import load_tensors, read_metadata
from tailor.errors import FormatError, InputError
from tailor.world.font import CHARSET

OCR_FILE = "ocr.safetensors"
OCR_DIR = Path(__file__).parent / "weights" / "ocr"


def _conv(cin: int, cout: int, stride=1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class OCRNet(nn.Module):
    """Image (N, 3, H, W) in [0, 1] -> per-column log-probabilities (T=32, N, 1 + len(charset)); index 0 = blank."""

    def __init__(self, charset: str = CHARSET, width: int = 32, size: int = 64, seq_kernel: int = 5):
        super().__init__()
        self.config = {"kind": "ocr", "charset": charset, "width": width, "size": size, "seq_kernel": seq_kernel}
        self.charset, self.size = charset, size
        w = width
        self.convs = nn.Sequential(
            _conv(3, w),  # 64 x 64: glyph cells are 3 px, so the first layer keeps full resolution
            _conv(w, 2 * w, 2),  # 32 x 32
            _conv(2 * w, 2 * w),
            _conv(2 * w, 3 * w, (2, 1)),  # 16 x 32
            _conv(3 * w, 4 * w, (2, 1)),  # 8 x 32
            _conv(4 * w, 4 * w),
        )
        self.score = nn.Conv2d(4 * w, 1, 1)  # where along each column the text is
        k = seq_kernel  # the columns a character spans (6 cells of 3 px = 9 columns) need context on both sides
        self.seq = nn.Sequential(
            nn.Conv1d(4 * w, 4 * w, k, 1, k // 2), nn.SiLU(), nn.Conv1d(4 * w, 4 * w, k, 1, k // 2), nn.SiLU()
        )
        self.head = nn.Conv1d(4 * w, 1 + len(charset), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        f = self.convs((x - 0.5) / 0.5)
        a = self.score(f).softmax(dim=2)
        col = (f * a).sum(dim=2)  # (N, C, T)
        return self.head(self.seq(col) + col).permute(2, 0, 1).log_softmax(-1)

    def decode(self, logp: torch.Tensor) -> list[str]:
        """Greedy CTC decoding of ``forward``'s output."""
        best = logp.argmax(-1).t().tolist()
        out = []
        for row in best:
            chars, prev = [], 0
            for k in row:
                if k and k != prev:
                    chars.append(self.charset[k - 1])
                prev = k
            out.append("".join(chars))
        return out

    @torch.no_grad()
    def read(self, x: torch.Tensor, batch: int = 128) -> list[str]:
        """The text of each image (``x``: (N, 3, H, W) in [0, 1])."""
        return [t for i in range(0, len(x), batch) for t in self.decode(self(x[i : i + batch].float()))]

    def encode_targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CTC targets: concatenated class indices and lengths (spaces are not read)."""
        idx = [[self.charset.index(c) + 1 for c in t if c != " "] for t in texts]
        return torch.tensor([k for r in idx for k in r], dtype=torch.long), torch.tensor([len(r) for r in idx])


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_scores(pred: list[str], truth: list[str]) -> dict[str, float]:
    """AnyText's Sen.ACC (exact line matches) and NED (1 - normalised edit distance), spaces ignored."""
    p = [s.replace(" ", "").upper() for s in pred]
    t = [s.replace(" ", "").upper() for s in truth]
    ned = [1.0 - edit_distance(a, b) / max(len(a), len(b), 1) for a, b in zip(p, t)]
    acc = [a == b for a, b in zip(p, t)]
    return {"sen_acc": sum(acc) / max(1, len(acc)), "ned": sum(ned) / max(1, len(ned)), "n": len(acc)}


def load_ocr(path: str | Path | None = None) -> OCRNet:
    """The shipped OCR oracle (or the file at ``path``), in eval mode."""
    from tailor.world.zoo import NOT_TRAINED

    path = Path(path) if path is not None else OCR_DIR / OCR_FILE
    if not path.is_file():
        raise InputError(f"{NOT_TRAINED} (the OCR oracle {path} is missing; `python -m zoo ocr` trains it).")
    meta = read_metadata(path)
    config = json.loads(meta.get("config", "{}"))
    if config.get("kind") != "ocr":
        raise FormatError(f"{path} is not a world OCR oracle file; re-run `python -m zoo ocr` from a source checkout.")
    with torch.random.fork_rng(devices=[]):
        model = OCRNet(config["charset"], config["width"], config["size"], config.get("seq_kernel", 3))
    state = load_tensors(path, check=False)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()
