"""What a method declares for the user surface: its generation inputs, prompt tags and bench rows.

A method folder's ``MethodSpec`` carries a :class:`GenerateInput` (how ``tailor generate`` takes its files and
reference images, and the prompt tags that load it) and :class:`BenchRow` s (how a world bench trains and scores it).
``tailor generate``'s flags, ``--apply``, prompt tags, the bench rows and the web UI are built from these
declarations, so a new method touches only its folder. This module holds declarations and the one weight-spec
parser; turning them into attachments (loading files, images, condition maps) happens above core
(:mod:`tailor.compose`).

The one value grammar (every flag, ``--apply`` and the shared reference flags)::

    PATH[=REF[+REF...]][:weight[:start:end]]

``PATH`` is a training ``--out`` folder, a weight file or a shipped name (``world``, ``canny``); ``REF`` s are the
method's reference inputs (images, a folder); ``weight`` scales the method (a ControlNet's conditioning scale, an
IP-Adapter's scale, a LoRA's multiplier) and ``start:end`` are fractions of the sampling schedule. Control flags also
accept the older ``MODEL:IMG[:scale[:start:end]]`` (``ref_sep=":"``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from tailor.errors import ConfigError

InputKind = Literal["paths", "images", "condition"]


@dataclass(frozen=True)
class InputOption:
    """A one-value ``tailor generate`` flag that, when given, goes into the attachment inputs (as ``name=value``) of
    every method reading the :class:`Input` it belongs to (``--face-embedder`` beside ``--face``)."""

    name: str
    flag: str
    help: str = field(default="", compare=False)
    #: repeatable (``--text-box`` once per ``--text`` line): the attachment input is then the list of given values
    multiple: bool = False
    metavar: str = "PATH"
    #: the value is also the prompt when ``tailor generate`` gets no --prompt / --prompts (``--plan TEXT``)
    prompt: bool = False


@dataclass(frozen=True)
class Input:
    """A reference input a method reads at inference, passed to ``Pipeline.attach`` as ``name=value``.

    ``kind`` says how the command line turns the given paths into the value: ``paths`` (passed as given: one path as
    a string, several as a list; the method reads them, e.g. a face image with its ``labels.json``), ``images``
    (a list of PIL images), ``condition`` (one image turned into the method's condition map, sized to the output).
    ``flag`` is a shared flag that supplies the references when a value names none (``--face`` serves InstantID
    and PuLID); ``pairing="index"`` pairs the i-th value of that flag with the i-th attachment (``--ip-image``),
    ``"all"`` gives every attachment all of them. ``ready_flag`` (condition kind): a switch saying the images are
    ready condition maps. ``options``: one-value flags passed to the attachments too (:class:`InputOption`).
    """

    name: str
    kind: InputKind = "images"
    flag: str | None = None
    pairing: Literal["all", "index"] = "all"
    help: str = field(default="", compare=False)  # methods sharing a flag must agree on the rest, not the words
    ready_flag: str | None = None
    options: tuple[InputOption, ...] = ()
    #: the method also runs without references (StoryGen's first frame; ``tailor generate --story`` supplies them)
    optional: bool = False


@dataclass(frozen=True)
class GenerateInput:
    """How ``tailor generate`` takes a method: ``flag PATH[=REF...][:weight[:start:end]]`` (repeatable).

    Several methods may declare one flag (``--control`` takes ControlNet, T2I-Adapter and ControlNeXt files); their
    declarations must then agree on the input. ``tag`` makes A1111 prompt tags ``<tag:name:weight>`` load
    ``<dir_flag folder>/**/name.<ext>``; ``by_name`` makes a prompt word equal to a file stem in the ``dir_flag``
    folder load that file (A1111's embeddings: the token is the file name).
    """

    flag: str
    help: str
    input: Input | None = None
    ref_sep: Literal["=", ":"] = "="
    max_weight: float | None = None
    tag: str | None = None
    dir_flag: str | None = None
    by_name: bool = False
    #: the attachment input that takes the subject's class word, when the method reads one (PhotoMaker's)
    class_input: str | None = None
    #: config fields ``tailor generate`` exposes as ``<flag>-<field>`` (``--reference-only-mode``), applied to every
    #: value of the flag; for a training-free method (``Method.training_free``) the value's ``PATH`` is its reference
    #: input itself: ``--reference-only IMG[+IMG...][:weight[:start:end]]``
    options: tuple[str, ...] = ()

    def option_flag(self, name: str) -> str:
        """The generate flag of config field ``name``."""
        return f"{self.flag}-{name.replace('_', '-')}"

    @property
    def metavar(self) -> str:
        if self.input is None:
            return "PATH[:weight[:start:end]]"
        sep = self.ref_sep
        return f"PATH{sep}REF[+REF...][:weight[:start:end]]" if sep == "=" else "MODEL:IMG[:scale[:start:end]]"


@dataclass(frozen=True)
class BenchRow:
    """A row a method adds to a world bench (``bench``: ``personalize`` today): the key the row is shown and selected
    by, the method options, steps, learning rate and batch size it trains with on the world base."""

    bench: str
    key: str
    steps: int
    lr: float
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 4
    note: str = ""
    default: bool = True  # in the bench's default rows (False: only when asked for, e.g. a slow full fine-tune)
    #: a trained method's zero-shot row (``steps`` 0): the shipped weights it loads by name (``options`` then
    #: override their config, e.g. ELITE's lambda)
    model: str | None = None


@dataclass(frozen=True)
class WeightSpec:
    """A parsed ``PATH[=REF...][:weight[:start:end]]``."""

    path: str
    refs: tuple[str, ...] = ()
    weight: float | None = None  # None: not given (1.0, or what a paired reference flag says)
    start: float = 0.0
    end: float = 1.0

    @property
    def scale(self) -> float:
        return 1.0 if self.weight is None else self.weight


def _peel_numbers(parts: list[str], keep: int) -> list[float]:
    """Pop up to three trailing numbers off ``parts`` (leaving at least ``keep`` parts); returns them in order."""
    nums: list[float] = []
    while len(parts) > keep and len(nums) < 3:
        try:
            value = float(parts[-1])
        except ValueError:
            break
        nums.insert(0, value)
        parts.pop()
    return nums


def parse_weight_spec(
    text: str, what: str, ref_sep: str | None = "=", max_weight: float | None = None, refs_allowed: bool = True
) -> WeightSpec:
    """Parse one value of the grammar in the module docstring; ``what`` names the flag in errors.

    A path may itself hold colons (only trailing numbers are weights). ``ref_sep=":"`` also reads
    ``MODEL:IMG[:nums]``; ``ref_sep=None`` (or ``refs_allowed=False``) takes no references.
    """
    text = str(text)
    if not text.strip():
        raise ConfigError(f"{what} got an empty value; give PATH[:weight[:start:end]].")
    refs: list[str] = []
    if refs_allowed and ref_sep and "=" in text:
        path, _, rest = text.partition("=")
        parts = rest.split(":")
        nums = _peel_numbers(parts, 1)
        refs = [r for r in ":".join(parts).split("+") if r]
        if not refs:
            raise ConfigError(f"{what} {text!r} names no reference after '='; write PATH=IMG[:weight].")
    elif refs_allowed and ref_sep == ":":
        parts = text.split(":")
        nums = _peel_numbers(parts, 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ConfigError(f"{what} {text!r}: give MODEL:IMG, MODEL:IMG:scale or MODEL:IMG:scale:start:end.")
        path, refs = parts[0], [r for r in ":".join(parts[1:]).split("+") if r]
    else:
        parts = text.split(":")
        nums = _peel_numbers(parts, 1)
        path = ":".join(parts)
        head, _, tail = path.rpartition(":")
        if head and not os.path.exists(path) and os.path.exists(head):
            raise ConfigError(f"{what} {text!r}: {tail!r} after ':' is not a number; write e.g. {head}:0.8.")
    if not path:
        raise ConfigError(f"{what} {text!r} names no file; give PATH[:weight[:start:end]].")
    if len(nums) == 2:
        raise ConfigError(f"{what} {text!r}: start:end need a weight first (PATH:weight:start:end).")
    if any(not math.isfinite(v) for v in nums):
        raise ConfigError(f"{what} {text!r}: weight, start and end must be finite numbers.")
    weight = nums[0] if nums else None
    start, end = (nums[1], nums[2]) if len(nums) == 3 else (0.0, 1.0)
    if weight is not None and max_weight is not None and not 0.0 <= weight <= max_weight:
        raise ConfigError(f"{what} {text!r}: weight {weight:g} is outside [0, {max_weight:g}]; use e.g. PATH:0.8.")
    if not 0.0 <= start < end <= 1.0:
        raise ConfigError(f"{what} {text!r}: start/end must satisfy 0 <= start < end <= 1.")
    return WeightSpec(path, tuple(refs), weight, start, end)
