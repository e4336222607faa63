"""The page's forms turned into ``tailor`` command lines (what the worker runs and "show command" prints).

Each builder returns ``(commands, out)``: the argument lists and the output folder (relative to the workspace).
"""

from __future__ import annotations

import time
from typing import Any

from tailor.errors import ConfigError
from tailor.ui import catalog
from tailor.ui.forms import argv, attachment_value
from tailor.ui.paths import Workspace


def new_out(ws: Workspace, kind: str) -> str:
    """A fresh output folder ``<kind>/<date-time>[-k]`` (the CLI refuses a folder it did not write)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, k = f"{kind}/{stamp}", 1
    while (ws.root / name).exists():
        k += 1
        name = f"{kind}/{stamp}-{k}"
    return name


def _out(ws: Workspace, form: dict, kind: str) -> str:
    out = str(form.get("out") or "").strip() or new_out(ws, kind)
    ws.path(out, "output folder")
    return out


def generate_args(ws: Workspace, base: str, form: dict[str, Any]) -> tuple[list[list[str]], str]:
    """``form``: ``prompt`` (one prompt per line), ``settings`` and ``other`` (``{option: value}``),
    ``attachments`` (``[{flag, path, refs, weight, start, end}]``, attached in this order), ``out``."""
    prompts = [line.strip() for line in str(form.get("prompt") or "").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("no prompt given; type one in the prompt box (one prompt per line).")
    out = _out(ws, form, "generate")
    cmd = catalog.generate_command()
    values = {**(form.get("settings") or {}), **(form.get("other") or {})}
    names = {p.name for p in cmd.params}
    kinds = {a["flag"] for a in catalog.generate_schema()["attachments"]}
    shipped = {n for names_ in catalog.shipped().values() for n in names_}
    attach: list[str] = []
    for a in form.get("attachments") or []:
        flag = a.get("flag")
        if flag not in kinds:
            raise ConfigError(f"attachment kind {flag!r} is not a generate option; reload the page.")
        attach += [flag, attachment_value(ws, flag, a, shipped)]
    args = ["generate", "--base", base, "--out", out]
    for p in prompts:
        args += ["--prompt", p]
    args += argv(cmd, {k: v for k, v in values.items() if k in names}, ws) + attach
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"tailor generate has no option {unknown[0]!r}; reload the page.")
    return [args], out


def train_args(ws: Workspace, base: str, form: dict[str, Any]) -> tuple[list[list[str]], str]:
    """``form``: ``method``, ``options`` (``{option: value}``), the data as ``images`` (a workspace folder) or
    ``subject`` (a world subject name), ``out``; ``resume`` continues the run in ``out`` from its last checkpoint."""
    from tailor.core.method import method_names

    method = str(form.get("method") or "")
    if method not in method_names():
        raise ConfigError(f"method {method!r} is not registered; pick one of {', '.join(method_names())}.")
    out = _out(ws, form, f"train/{method}")
    options = dict(form.get("options") or {})
    images, subject = str(form.get("images") or "").strip(), str(form.get("subject") or "").strip()
    if images and subject:
        raise ConfigError("give the training images once: an uploaded folder or a world subject, not both.")
    if images:
        ws.path(images, "training images folder")
        options["subject_images"] = images
    elif subject:
        options["data"] = f"world-subject:{subject}"
    if form.get("resume"):
        options["resume"] = "latest"
    cmd = catalog.train_command(method)
    args = ["train", method, "--base", base, "--out", out, *argv(cmd, options, ws)]
    return [args], out


def tool_args(ws: Workspace, form: dict[str, Any]) -> tuple[list[list[str]], str | None]:
    """``form``: ``command`` (``"eval pair"``, ``"lora merge"``, ...) and ``options``; the folder shown with the
    result is the command's ``--out`` / destination, else the image folder it scores (a contact sheet)."""
    group, _, name = str(form.get("command") or "").partition(" ")
    tabs = {g for groups in catalog.TOOL_GROUPS.values() for g in groups}
    if group not in tabs:
        raise ConfigError(f"{form.get('command')!r} is not a command of the Evaluate or Convert tab; reload the page.")
    try:
        cmd = catalog.tool_command(group, name)
    except KeyError:
        raise ConfigError(f"tailor {group} has no command {name!r}; reload the page.") from None
    options = dict(form.get("options") or {})
    args = [group, name, *argv(cmd, options, ws)]
    out = next((str(options[k]) for k in ("out", "dst", "images") if options.get(k)), None)
    return [args], out
