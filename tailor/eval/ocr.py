"""OCR scores by the world OCR oracle (:mod:`tailor.world.zoo.ocr`): Sen.ACC and NED (AnyText, Tuo et al. 2023).

The expected text of each image comes from the folder's ``labels.json`` (``tailor world render --kind glyph``: its
``attrs.text``) or else from each image's prompt (``generation.json`` or ``--prompts``): the first quoted word in it,
as in ``a sign that says "CAT" on brick``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tailor.errors import InputError


def expected_texts(folder: str | Path, files: list[Path], prompts_file: str | Path | None = None) -> list[str]:
    """Each image's expected text (upper case): labels.json first, else the quoted word of its prompt."""
    folder = Path(folder)
    labels = folder / "labels.json"
    if prompts_file is None and labels.is_file():
        try:
            by_file = {r["file"]: r["attrs"]["text"] for r in json.loads(labels.read_text())}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{labels} has no attrs.text per file ({e}); render it with --kind glyph.") from e
        missing = [f.name for f in files if f.name not in by_file]
        if missing:
            raise InputError(f"{labels} lists no text for {missing[0]}; render the folder with --kind glyph.")
        return [by_file[f.name].upper() for f in files]
    if prompts_file is None and not (folder / "generation.json").is_file():
        raise InputError(
            f"{folder} has neither labels.json nor generation.json; pass --prompts FILE with quoted words."
        )
    from tailor.eval.world import prompts_for

    texts = []
    for f, p in zip(files, prompts_for(folder, files, prompts_file)):
        m = re.search(r'"([^"]+)"', p)
        if m is None:
            raise InputError(f"the prompt of {f.name} ({p!r}) quotes no text; write the word in double quotes.")
        texts.append(m.group(1).upper())
    return texts


def ocr_eval(folder: str | Path, prompts_file: str | Path | None = None) -> dict:
    """Sen.ACC / NED of the OCR oracle's reading of every image against its expected text, plus what it read."""
    from tailor.eval.world import read_images
    from tailor.world.zoo.ocr import load_ocr, ocr_scores
    from tailor.world.zoo.oracles import to_unit

    files, images = read_images(folder)
    texts = expected_texts(folder, files, prompts_file)
    read = load_ocr().read(to_unit(images))
    return ocr_scores(read, texts) | {"read": {f.name: r for f, r in zip(files, read)}}
