"""A1111-style composition: ``<tag:name:weight>`` prompt tags and embeddings found by file name.

Which tags exist is declared by the methods (``GenerateInput.tag``): ``<lora:name:0.8>`` attaches
``<--lora-dir>/**/name.safetensors`` with weight 0.8, ``<hypernet:name:0.5>`` a hypernetwork from
``--hypernetwork-dir`` (AUTOMATIC1111's names); the tag is removed from the prompt text. A method with
``GenerateInput.by_name`` loads a file of its ``dir_flag`` folder when a prompt word equals the file's stem
(A1111's embeddings: the token is the file name). Files load through :func:`~tailor.compose.flags.load_for`, so a
file of another kind is refused with one sentence.

Python: ``prompts = apply_prompt_tags(pipe, prompts, {"lora": "loras/"})``; ``tailor generate --lora-dir`` /
``--embedding-dir`` call the same functions.
"""

from __future__ import annotations

import re
from pathlib import Path

from tailor.compose.flags import Flag, generate_flags, load_for
from tailor.errors import ConfigError, InputError

WEIGHT_FILES = (".safetensors", ".pt", ".bin", ".ckpt")


def tag_flags(flags: dict[str, Flag] | None = None) -> dict[str, Flag]:
    """Prompt tag name -> the flag (and methods) it loads."""
    flags = generate_flags() if flags is None else flags
    return {f.decl.tag: f for f in flags.values() if f.decl.tag}


def _tag_pattern(tags) -> re.Pattern:
    names = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
    return re.compile(rf"<({names}):([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>")


def parse_prompt_tags(prompt: str, tags=("lora",)) -> tuple[str, list[tuple[str, str, float]]]:
    """(prompt without the ``<tag:...>`` tags, [(tag, name, weight), ...]); other ``<...>`` text stays."""
    pattern = _tag_pattern(tags)
    found = []
    for m in pattern.finditer(prompt):
        tag, name, weight = m.group(1), m.group(2).strip(), (m.group(3) or "").strip()
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(
                f"prompt tag {m.group(0)!r} has weight {weight!r}, not a number; write <{tag}:{name}:0.8>."
            ) from None
        found.append((tag, name, value))
    clean = re.sub(r"\s{2,}", " ", pattern.sub("", prompt)).strip()
    clean = re.sub(r"\s+([,.;])", r"\1", clean)
    return clean, found


def find_weight_file(folder: str | Path, stem: str, what: str) -> Path:
    """``<folder>/**/<stem>.<suffix>`` (safetensors first); InputError naming the folder when absent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist; check the path.")
    for suffix in WEIGHT_FILES:
        found = sorted(folder.rglob(f"{stem}{suffix}"))
        if found:
            return found[0]
    raise InputError(f"no {what} named {stem!r} in {folder} (looked for {stem}.safetensors); check the name.")


def apply_prompt_tags(pipe, prompts: list[str], dirs: dict[str, str | Path | None] | str | Path | None) -> list[str]:
    """Attach every ``<tag:name:w>`` of ``prompts`` from its folder (``dirs``: tag -> folder; a plain folder means
    the LoRA folder); returns the prompts without the tags. The attached files apply to the whole generation call,
    so one name must carry one weight in all prompts."""
    if not isinstance(dirs, dict):
        dirs = {"lora": dirs}
    by_tag = tag_flags()
    cleaned, wanted = [], {}
    for p in prompts:
        clean, tags = parse_prompt_tags(p, by_tag)
        cleaned.append(clean)
        for tag, name, weight in tags:
            if wanted.get((tag, name), weight) != weight:
                raise ConfigError(
                    f"<{tag}:{name}> has weights {wanted[(tag, name)]} and {weight} in different prompts; the files "
                    f"of one run apply to all its prompts, so use one weight."
                )
            wanted[(tag, name)] = weight
    for (tag, name), weight in wanted.items():
        flag = by_tag[tag]
        folder = dirs.get(tag)
        if folder is None:
            raise ConfigError(f"the prompt uses <{tag}:{name}:...>; pass {flag.decl.dir_flag} with those files.")
        file = find_weight_file(folder, name, flag.what)
        pipe.attach(load_for(str(file), flag), weight=weight)
    return cleaned


def find_by_name(prompts: list[str], folder: str | Path) -> list[Path]:
    """Weight files of ``folder`` whose file stem occurs in a prompt as a word."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"folder {folder} does not exist; check the path.")
    files = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_FILES and p.is_file())
    text = "\n".join(prompts)
    return [f for f in files if re.search(rf"(?<![\w-]){re.escape(f.stem)}(?![\w-])", text)]


def apply_name_matches(pipe, prompts: list[str], dirs: dict[str, str | Path | None]) -> list[Path]:
    """For each ``by_name`` flag with a folder in ``dirs`` (flag -> folder): attach the files the prompts name by
    file name; returns them."""
    attached = []
    for flag in generate_flags().values():
        folder = dirs.get(flag.name)
        if not flag.decl.by_name or folder is None:
            continue
        for f in find_by_name(prompts, folder):
            pipe.attach(load_for(str(f), flag))
            attached.append(f)
    return attached
