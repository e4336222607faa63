"""Export the world base model: a trained UNet + text encoder checkpoint (EMA weights), the world VAE, tokenizer
and scheduler config, as a diffusers ``StableDiffusionPipeline`` folder of safetensors that
``StableDiffusionPipeline.from_pretrained(folder)`` loads offline with no tailor code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tailor.core.io import atomic_dir, write_json


def load_trained_components(
    run: str | Path, vae_dir: str | Path, tokenizer_dir: str | Path, use_ema: bool = True, checkpoint: str = "latest"
):
    """Components with the UNet/text encoder of ``run``'s checkpoint (its EMA shadow when present)."""
    from tailor.core.training.checkpoint import find_resume
    from zoo.unet import build_components

    ck = find_resume(run, checkpoint)
    prediction_type = ck.info.get("resolved", {}).get("prediction_type", "v_prediction")
    comps = build_components(vae_dir, tokenizer_dir, prediction_type=prediction_type)
    load_checkpoint_weights(comps, ck, use_ema)
    comps.freeze()
    return comps, ck


def load_checkpoint_weights(comps, ck, use_ema: bool = True) -> None:
    """Copy a ``finetune`` (UNet + text encoder) checkpoint's weights, or its EMA shadow, into ``comps``."""
    import tailor
    from tailor.core.training.ema import EMA

    method = tailor.get_spec("finetune").method(train_text_encoder=True)
    method.patch(comps)
    method.load_state_dict(ck.method_state)
    if use_ema and ck.ema_state is not None:
        ema = EMA(method.trainable_parameters(), 0.999)
        ema.load_state_dict(ck.ema_state)
        ema.copy_to_params()
    modules = method.named_modules().items()
    trained = {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in modules}
    method.unpatch()  # restores the fresh weights: put the trained ones back as the components' own
    for key, state in trained.items():
        getattr(comps, key).load_state_dict(state)


def export_base(comps, folder: str | Path, info: dict | None = None) -> Path:
    """Write ``comps`` as a diffusers folder (atomically, weights stored in float16) plus ``zoo.json`` describing
    how it was trained."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        comps.save_pretrained(tmp)
        for extra in tmp.rglob("*"):  # ship safetensors only (no pickled duplicates)
            if extra.suffix in (".bin", ".pt", ".ckpt"):
                extra.unlink()
        store_half(tmp)
        write_json(tmp / "zoo.json", info or {})
        keep_unchanged(tmp, folder)
        readable(tmp)
    return folder


def store_half(folder: str | Path) -> list[Path]:
    """Rewrite every safetensors file under ``folder`` with its float32 tensors as float16 (metadata kept): how the
    zoo stores weights (the cap is 80 MB). diffusers and transformers build the model in float32 and upcast the
    stored values on load, so a loaded model differs from the trained one only by float16 rounding (relative
    4.9e-4). Returns the files rewritten."""
    from safetensors.torch import load_file, save_file

    from tailor.core.io import read_metadata

    changed = []
    for f in sorted(Path(folder).rglob("*.safetensors")):
        tensors = load_file(str(f))
        if not any(t.dtype == torch.float32 for t in tensors.values()):
            continue
        half = {k: (t.half() if t.dtype == torch.float32 else t).contiguous() for k, t in tensors.items()}
        save_file(half, str(f), metadata=read_metadata(f) or None)
        changed.append(f)
    return changed


def keep_unchanged(new: Path, old: Path) -> list[str]:
    """Give every file of the folder ``new`` that says what ``old``'s file of the same name says (the same bytes, or
    for safetensors the same tensors and metadata, whose header order may differ) ``old``'s bytes, so re-exporting
    unchanged weights leaves git nothing to commit. Returns the relative paths kept."""
    import filecmp
    import shutil

    kept = []
    for f in sorted(p for p in new.rglob("*") if p.is_file()):
        rel = f.relative_to(new)
        before = old / rel
        if before.is_file() and (filecmp.cmp(f, before, shallow=False) or _same_safetensors(f, before)):
            shutil.copyfile(before, f)
            kept.append(str(rel))
    return kept


def _same_safetensors(a: Path, b: Path) -> bool:
    from tailor.core.io import load_tensors, read_metadata

    if a.suffix != ".safetensors" or b.suffix != ".safetensors":
        return False
    try:
        if read_metadata(a) != read_metadata(b):
            return False
        ta, tb = load_tensors(a, check=False), load_tensors(b, check=False)
    except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
        return False
    return ta.keys() == tb.keys() and all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)


def readable(folder: Path) -> None:
    """Temporary folders/files are created private; shipped weights must be readable by everyone."""
    folder.chmod(0o755)
    for p in folder.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)


def export_vae(vae_dir: str | Path, base: str | Path) -> Path:
    """Replace the VAE of the base folder ``base`` by the AutoencoderKL of ``vae_dir`` (safetensors, atomically),
    leaving the rest of the base as it is: for a decoder trained on the base VAE's own latents (``vae-wide``)."""
    from diffusers import AutoencoderKL

    base = Path(base)
    if not (base / "model_index.json").is_file():
        raise FileNotFoundError(f"{base} is no diffusers base folder (no model_index.json)")
    vae = AutoencoderKL.from_pretrained(str(vae_dir), local_files_only=True).eval()
    with atomic_dir(base / "vae") as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        keep_unchanged(tmp, base / "vae")
        readable(tmp)
    return base / "vae"


def export_checkpoint(run: str | Path, vae_dir: str | Path, tokenizer_dir: str | Path, folder: str | Path) -> Path:
    comps, ck = load_trained_components(run, vae_dir, tokenizer_dir)
    info = {
        "step": ck.step,
        "checkpoint": str(ck.path),
        "loss": ck.info.get("loss"),
        "train": {
            k: ck.info.get("config", {}).get(k)
            for k in ("steps", "batch_size", "lr", "min_snr_gamma", "prediction_type", "ema_decay", "data")
        },
    }
    export_base(comps, folder, info)
    return Path(folder)


def describe(folder: str | Path) -> dict:
    zoo = Path(folder) / "zoo.json"
    return json.loads(zoo.read_text()) if zoo.is_file() else {}
