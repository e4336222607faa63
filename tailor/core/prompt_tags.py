"""A1111-style composition helpers: ``<lora:name:weight>`` prompt tags and embeddings found by file name.

``<lora:name:0.8>`` (weight optional, default 1) attaches ``<lora_dir>/**/name.safetensors`` with that weight and is
removed from the prompt text, as in AUTOMATIC1111's webui. A word of the prompt equal to the file stem of an embedding
in ``embedding_dir`` loads that embedding (A1111: an embedding's token is its file name). Files are loaded with
``tailor.load`` (each method claims its own formats), and a file of the wrong kind is refused with one sentence.
Python: ``prompts = apply_prompt_tags(pipe, prompts, lora_dir)``; the CLI's ``tailor generate --lora-dir`` /
``--embedding-dir`` call the same functions.
"""

from __future__ import annotations

import re
from pathlib import Path

from tailor.errors import ConfigError, IncompatibleError, InputError

LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>")
#: the generate flag that takes each kind of file
FLAGS = {
    "lora": "--lora",
    "textual_inversion": "--embedding",
    "hypernetwork": "--hypernetwork",
    "ip_adapter": "--ip-adapter",
    "instantid": "--instantid",
    "photomaker": "--photomaker",
    "pulid": "--pulid",
}
WEIGHT_FILES = (".safetensors", ".pt", ".bin", ".ckpt")


def parse_weighted(spec: str, default: float = 1.0) -> tuple[str, float]:
    """``PATH[:weight]`` -> (path, weight); a path may itself contain colons."""
    path, sep, last = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(last)
        except ValueError:
            pass
    return spec, default


def load_kind(path: str | Path, kind: str):
    """``tailor.load(path)``, refusing a file of another method with one sentence."""
    from tailor.core.artifacts import load

    method = load(path)
    own_file = Path(path) / f"{kind}.safetensors"
    if method.name != kind and own_file.is_file():  # e.g. DreamBooth-LoRA's out folder also holds lora.safetensors
        method = load(own_file)
    if method.name != kind:
        hint = f"pass it with {FLAGS[method.name]}" if method.name in FLAGS else "pass it with --apply"
        raise IncompatibleError(f"{path} is a {method.name} file, not a {kind} file; {hint}.")
    return method


def parse_prompt_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """(prompt without ``<lora:...>`` tags, [(name, weight), ...])."""
    tags = []
    for m in LORA_TAG.finditer(prompt):
        name, weight = m.group(1).strip(), (m.group(2) or "").strip()
        try:
            tags.append((name, float(weight) if weight else 1.0))
        except ValueError:
            raise ConfigError(
                f"prompt tag {m.group(0)!r} has weight {weight!r}, not a number; write <lora:name:0.8>."
            ) from None
    clean = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip()
    clean = re.sub(r"\s+([,.;])", r"\1", clean)
    return clean, tags


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


def apply_prompt_tags(pipe, prompts: list[str], lora_dir: str | Path | None) -> list[str]:
    """Attach every ``<lora:name:w>`` of ``prompts`` from ``lora_dir``; returns the prompts without the tags.

    The attached LoRAs apply to the whole generation call, so one name must carry one weight in all prompts.
    """
    cleaned, wanted = [], {}
    for p in prompts:
        clean, tags = parse_prompt_tags(p)
        cleaned.append(clean)
        for name, weight in tags:
            if name in wanted and wanted[name] != weight:
                raise ConfigError(
                    f"<lora:{name}> has weights {wanted[name]} and {weight} in different prompts; "
                    f"the LoRAs of one run apply to all its prompts, so use one weight."
                )
            wanted[name] = weight
    if wanted and lora_dir is None:
        raise ConfigError(f"the prompt uses <lora:{next(iter(wanted))}:...>; pass --lora-dir with the LoRA files.")
    for name, weight in wanted.items():
        pipe.attach(load_kind(find_weight_file(lora_dir, name, "LoRA"), "lora"), weight=weight)
    return cleaned


def find_embeddings(prompts: list[str], embedding_dir: str | Path) -> list[Path]:
    """Embedding files of ``embedding_dir`` whose file stem occurs in a prompt as a word."""
    folder = Path(embedding_dir)
    if not folder.is_dir():
        raise InputError(f"embedding folder {folder} does not exist; check the path.")
    files = sorted(p for p in folder.rglob("*") if p.suffix in WEIGHT_FILES and p.is_file())
    text = "\n".join(prompts)
    return [f for f in files if re.search(rf"(?<![\w-]){re.escape(f.stem)}(?![\w-])", text)]


def apply_embeddings(pipe, prompts: list[str], embedding_dir: str | Path | None) -> list[Path]:
    """Attach the embeddings the prompts name by file name; returns their files."""
    if embedding_dir is None:
        return []
    files = find_embeddings(prompts, embedding_dir)
    for f in files:
        pipe.attach(load_kind(f, "textual_inversion"))
    return files
