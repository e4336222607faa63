"""Textual Inversion (Gal et al. 2022, "An Image is Worth One Word"): learn new placeholder token(s) S* in the frozen
text encoder's embedding space; nothing else of the base changes.

``patch`` gives the tokenizer(s) the placeholder tokens (a copy of the base tokenizer, so ``unpatch`` restores the
original object) and hooks the token-embedding module(s) so the new ids look up the trainable vectors (see
``modules.PlaceholderRows``: every other row stays bit-identical). SDXL bases get vectors in both encoders (``clip_l``,
``clip_g``). Multi-vector tokens follow diffusers: ``<s*>`` in a prompt expands to ``<s*> <s*>_1 ...``.

Saved files: ``textual_inversion.safetensors`` (keys ``textual_inversion.clip_l`` / ``.clip_g``, tailor metadata),
``learned_embeds.safetensors`` (diffusers, ``{token: tensor}``; SDXL adds ``learned_embeds_2.safetensors``) and the
A1111 file ``<token>.pt`` (SDXL: ``<token>.safetensors`` with ``clip_l`` + ``clip_g``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from tailor.core.io import PICKLE_SUFFIXES, read_metadata
from tailor.core.method import ARTIFACT_FORMAT, Method
from tailor.errors import ConfigError, FormatError, IncompatibleError
from tailor.methods.textual_inversion import formats
from tailor.methods.textual_inversion.config import TextualInversionConfig
from tailor.methods.textual_inversion.modules import (
    OBJECT_TEMPLATES,
    STYLE_TEMPLATES,
    PlaceholderRows,
    TemplateCaptions,
    init_vectors,
    placeholder_tokens,
)

#: (vector key, text-encoder attribute, tokenizer attribute) of Components
ENCODERS = (("clip_l", "text_encoder", "tokenizer"), ("clip_g", "text_encoder_2", "tokenizer_2"))


class TextualInversionMethod(Method):
    """Train (or load) the vectors of one placeholder token; the base stays frozen."""

    name = "textual_inversion"
    text_context = "edits"  # it changes the prompt's word embeddings
    config_cls = TextualInversionConfig
    trains_text_encoder = True  # the prompt embeddings depend on the trained vectors: never cache them
    default_lr: ClassVar[float] = 5e-3  # the paper's base lr (it scales it by batch size x GPUs)

    def __init__(self, config: TextualInversionConfig | None = None, **overrides):
        super().__init__(config, **overrides)
        self.vectors = nn.ParameterDict()  # clip_l / clip_g -> (num_vectors, width), float32
        self._rows: list[PlaceholderRows] = []
        self._tokenizers: dict[str, object] = {}  # tokenizer attribute -> the tokenizer before attach
        self.step = 0
        self._source_file = "the embedding"  # named in errors about a loaded file

    @property
    def tokens(self) -> list[str]:
        return placeholder_tokens(self.config.token, self.config.num_vectors)

    @staticmethod
    def _encoders(components):
        return [(k, te, tok) for k, te, tok in ENCODERS if getattr(components, te, None) is not None]

    def modules(self) -> list[nn.Module]:
        return [self.vectors] if self._built else []

    # ------------------------------------------------------------------ attach / detach
    def patch(self, components) -> None:
        """``Method.patch``; a failure (bad init word, file for another base) leaves the method detached as before."""
        pending = self._pending_state
        try:
            super().patch(components)
        except Exception:
            if not self._rows:
                self.components, self._built, self._pending_state = None, False, pending
                self.vectors = nn.ParameterDict()
            raise

    def build(self, components) -> None:
        for key, te, tok in self._encoders(components):
            emb = getattr(components, te).get_input_embeddings()
            vec = init_vectors(getattr(components, tok), emb, self.config.init_word, self.config.num_vectors)
            self.vectors[key] = nn.Parameter(vec)

    def attach(self, components) -> None:
        if self._rows:  # already attached to this base (the trainer patched it; a pipeline attaches it again)
            return
        for _, _, tok_attr in self._encoders(components):
            vocab = getattr(components, tok_attr).get_vocab()
            clash = [t for t in self.tokens if t in vocab or f"{t}</w>" in vocab]  # an entry or a whole word
            if clash:
                raise ConfigError(
                    f"token {clash[0]!r} is already in the base's tokenizer (a word or another embedding); pick "
                    f"another --token (an A1111 embedding's token is its file name: rename the file)."
                )
        for key, te_attr, tok_attr in self._encoders(components):
            base_tok = getattr(components, tok_attr)
            tok = copy.deepcopy(base_tok)  # the base tokenizer object itself comes back on detach
            tok.add_tokens(self.tokens)
            ids = tok.convert_tokens_to_ids(self.tokens)
            self._tokenizers[tok_attr] = base_tok
            setattr(components, tok_attr, tok)
            emb = getattr(components, te_attr).get_input_embeddings()
            self._rows.append(PlaceholderRows(emb, ids, self.vectors[key]))

    def detach(self, components) -> None:
        """Remove the hooks (and grown rows) and put the original tokenizer(s) back (LIFO with other embeddings)."""
        for rows in reversed(self._rows):
            rows.remove()
        for attr, tok in self._tokenizers.items():
            setattr(components, attr, tok)
        self._rows, self._tokenizers = [], {}

    # ------------------------------------------------------------------ training
    def wrap_dataset(self, dataset, config):
        """Training captions built around the token (the paper's templates, or the data's own captions)."""
        table = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES, "caption": None}
        return TemplateCaptions(dataset, self.config.token, table[self.config.templates])

    def loss(self, pred, target, state, weights):
        if torch.is_grad_enabled():
            self.step += 1  # micro-steps seen, recorded as A1111's "step"
        return super().loss(pred, target, state, weights)

    def training_state(self) -> dict:
        return {"step": self.step}

    def load_training_state(self, state: dict) -> None:
        self.step = int(state.get("step", self.step))

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self._built and self._pending_state is not None:
            return dict(self._pending_state)
        return {f"{self.name}.{k}": v.detach() for k, v in self.vectors.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self._built:
            self._pending_state = dict(state)
            return
        prefix = f"{self.name}."
        got = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        formats.check_width(got, {k: int(v.shape[-1]) for k, v in self.vectors.items()}, self._source_file)
        for key, v in got.items():
            if v.shape != self.vectors[key].shape:
                raise IncompatibleError(
                    f"{self._source_file} has {v.shape[0]} vectors but this {self.name} was configured for "
                    f"{self.vectors[key].shape[0]}; set num_vectors={v.shape[0]}."
                )
            with torch.no_grad():
                self.vectors[key].copy_(v)

    def exported_vectors(self) -> dict[str, torch.Tensor]:
        """``{"clip_l": (n, d), ["clip_g": (n, d)]}`` on the CPU, float32."""
        prefix = f"{self.name}."
        return {k[len(prefix) :]: v.detach().float().cpu() for k, v in self.state_dict().items()}

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> Path:
        """``textual_inversion.safetensors`` + diffusers ``learned_embeds.safetensors`` + the A1111 file."""
        out = Path(out_dir)
        path = super().save(out)
        vec, token = self.exported_vectors(), self.config.token
        stem = formats.file_stem(token)
        formats.write_diffusers(out / "learned_embeds.safetensors", token, vec["clip_l"])
        if "clip_g" in vec:
            formats.write_diffusers(out / "learned_embeds_2.safetensors", token, vec["clip_g"])
            formats.write_a1111_safetensors(out / f"{stem}.safetensors", vec)
        else:
            source = getattr(self.components, "source", None) if self.components is not None else None
            formats.write_a1111_pt(out / f"{stem}.pt", vec["clip_l"], token, self.step, source or None)
        return path

    @classmethod
    def sniff(cls, path: str | Path, metadata: dict[str, str]) -> bool:
        return formats.sniff(path, metadata)

    @classmethod
    def from_file(cls, path: str | Path) -> TextualInversionMethod:
        """A tailor file, or an A1111 / kohya / SDXL / diffusers embedding (the token: file stem or diffusers key)."""
        path = Path(path)
        meta = read_metadata(path) if path.suffix not in PICKLE_SUFFIXES else {}
        if meta.get("format") == ARTIFACT_FORMAT:
            if meta.get("method") != cls.name:
                raise FormatError(f"{path} holds a {meta.get('method')} artifact, not a textual inversion embedding.")
            return super().from_file(path)  # type: ignore[return-value]
        emb = formats.read(path)
        second = path.with_name("learned_embeds_2.safetensors")  # diffusers' SDXL scripts: one file per encoder
        if path.name == "learned_embeds.safetensors" and second.is_file():
            other = formats.read(second)
            if other.token == emb.token:
                emb.vectors["clip_g"] = other.vectors["clip_l"]
        n = {int(v.shape[0]) for v in emb.vectors.values()}
        if len(n) != 1:
            raise FormatError(
                f"{path} has different vector counts for clip_l and clip_g ({sorted(n)}); it is damaged."
            )
        method = cls(token=emb.token, num_vectors=n.pop())
        method.load_state_dict({f"{cls.name}.{k}": v for k, v in emb.vectors.items()})
        method._source_file = str(path)
        return method
