"""Property-based fuzzing of every weight-file loader: only ``TailorError`` (or success), never another exception.

Targets: the files each registered method saves (tailor safetensors plus its community files: kohya / diffusers
LoRA, A1111 / diffusers embeddings, A1111 hypernetwork ``.pt``, ControlNet / T2I / ControlNeXt / IP-Adapter
weights), read by ``tailor.load`` and attached to a tiny base, and by the format readers. Inputs: arbitrary bytes,
byte-mutated valid files, and valid safetensors / torch containers whose tensors have wrong shapes and dtypes.

Targets: arbitrary bytes, and one per registered method (its saved files, mutated). Profiles (``TAILOR_FUZZ``):
``ci`` (default: 25 examples per target, the fast suite) and ``long`` (``make fuzz``: 1,000 per target).
``TAILOR_FUZZ_COUNTS=FILE`` appends per-target example counts as JSON lines.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import tailor
from tailor.core.io import read_metadata
from tailor.core.method import registry
from tailor.errors import TailorError
from tailor.methods.hypernetwork import formats as hn
from tailor.methods.ip_adapter import formats as ip
from tailor.methods.lora import formats as lora
from tailor.methods.textual_inversion import formats as ti

PROFILE = os.environ.get("TAILOR_FUZZ", "ci")
EXAMPLES = {"ci": 25, "long": 1000}[PROFILE]
settings.register_profile(
    "tailor", max_examples=EXAMPLES, deadline=None, derandomize=PROFILE == "ci",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)  # fmt: skip
FUZZ = settings.get_profile("tailor")
DTYPES = [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int32, torch.int64, torch.bool, torch.uint8]
SUFFIXES = [".safetensors", ".pt", ".bin", ".ckpt"]
READERS = (ti.read, hn.read, ip.read, lora.read_file)
ROOT = Path(tempfile.mkdtemp(prefix="tailor-fuzz-"))
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)


def _seed_files() -> dict[str, Path]:
    """Every weight file each registered method writes when saved from a tiny base (its diffusers model folder
    included, a full pipeline folder not), plus the community layouts it reads: ``{"<method>/<file>": path}``."""
    files = {}
    for name, spec in sorted(registry().items()):
        if spec.method.training_free:  # nothing to save, nothing to load
            continue
        options = {k: v for k, v in spec.test_options.items() if not k.endswith("_dir")}
        method = spec.method(**options)
        method.patch(tailor.tiny_components())
        method.save(ROOT / name)
        _community_files(ROOT / name)
        for p in sorted((ROOT / name).rglob("*")):
            if p.suffix in SUFFIXES and p.is_file() and "pipeline" not in p.relative_to(ROOT / name).parts:
                files[f"{name}/{p.relative_to(ROOT / name)}"] = p
    return files


def _community_files(folder: Path) -> None:
    """Files in the layouts other tools write, derived from what tailor saved: the official IP-Adapter ``.bin`` and
    metadata-less ``.safetensors``, A1111's embedding ``.safetensors``, the original ``control_model.*`` ControlNet."""
    from tailor.methods.controlnet import formats as cn

    if (folder / "ip_adapter.safetensors").is_file():
        flat = load_file(str(folder / "ip_adapter.safetensors"))
        save_file(flat, str(folder / "official.safetensors"))
        nested = {part: {k[len(part) + 1 :]: v for k, v in flat.items() if k.startswith(part + ".")}
                  for part in ("image_proj", "ip_adapter")}  # fmt: skip
        torch.save(nested, folder / "official.bin")
    if (folder / "learned_embeds.safetensors").is_file():
        vec = next(iter(load_file(str(folder / "learned_embeds.safetensors")).values()))
        ti.write_a1111_safetensors(folder / "a1111.safetensors", {"clip_l": vec.reshape(-1, vec.shape[-1])})
    weights = folder / "controlnet" / "diffusion_pytorch_model.safetensors"
    if folder.name == "controlnet" and weights.is_file():
        save_file(cn.original_from_diffusers(load_file(str(weights)), 1), str(folder / "original.safetensors"))


SEEDS = _seed_files()
COMPS = tailor.tiny_components()
COUNTS: dict[str, int] = {}


def check(target: str, path: Path) -> None:
    """Every loader on ``path``: success or a TailorError; attaching what loads must not crash either."""
    COUNTS[target] = COUNTS.get(target, 0) + 1
    for read in READERS:
        try:
            read(path)
        except TailorError:
            pass
    try:
        method = tailor.load(path)
    except TailorError:
        return
    pipe = tailor.Pipeline(COMPS)
    try:
        pipe.attach(method)
    except TailorError:
        return
    finally:
        pipe.detach()


def _write(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix, dir=ROOT)
    os.write(fd, data)
    os.close(fd)
    return Path(name)


@pytest.fixture(scope="module", autouse=True)
def _counts():
    yield
    if os.environ.get("TAILOR_FUZZ_COUNTS"):
        with open(os.environ["TAILOR_FUZZ_COUNTS"], "a") as f:
            f.write(json.dumps({"profile": PROFILE, "counts": COUNTS}) + "\n")


# --------------------------------------------------------------------- arbitrary bytes
@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(SUFFIXES))
def test_arbitrary_bytes(data, suffix):
    path = _write(data, suffix)
    try:
        check("arbitrary-bytes", path)
    finally:
        path.unlink()


# --------------------------------------------------------------------- mutated valid files
flips = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=8)
mutation = st.one_of(
    st.tuples(st.just("flip"), flips),
    st.tuples(st.just("cut"), st.integers(0, 1 << 30)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 1 << 30), st.binary(min_size=1, max_size=64))),
)


def mutate(raw: bytes, how) -> bytes:
    kind, arg = how
    buf = bytearray(raw)
    if kind == "flip":
        head = min(len(buf), 4096)  # the header and first tensors, where structure lives
        for pos, val in arg:
            buf[pos % head] = val
    elif kind == "cut":
        del buf[arg % max(len(buf), 1) :]
    else:
        pos, extra = arg
        buf[pos % max(len(buf), 1) : pos % max(len(buf), 1)] = extra
    return bytes(buf)


def reshape(dims: list[int], dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(dims, dtype=torch.float32).to(dtype)


def retensor(path0: Path, changes, drop) -> Path:
    """``path0`` rewritten as a valid container whose tensors got other shapes / dtypes (and maybe one dropped)."""
    if path0.suffix != ".safetensors":
        path = ROOT / f"c{sum(COUNTS.values())}{path0.suffix}"
        torch.save(_mutate_container(torch.load(path0, weights_only=True), changes, drop), path)
        return path
    new = load_file(str(path0))
    keys = sorted(new)
    for pos, dims, dtype in changes:
        new[keys[pos % len(keys)]] = reshape(dims, dtype)
    if drop and len(keys) > 1:
        del new[keys[changes[0][0] % len(keys)]]
    path = ROOT / f"c{sum(COUNTS.values())}.safetensors"
    save_file(new, str(path), metadata=read_metadata(path0))
    return path


change = st.tuples(st.integers(0, 1 << 30), st.lists(st.integers(0, 9), max_size=4), st.sampled_from(DTYPES))
edit = st.one_of(
    st.tuples(st.just("bytes"), mutation),
    st.tuples(st.just("tensors"), st.tuples(st.lists(change, min_size=1, max_size=4), st.booleans())),
)


@pytest.mark.parametrize("method", sorted({k.split("/")[0] for k in SEEDS}))
def test_mutated_files(method):
    """A valid file of ``method`` (one of those it writes), mutated bytewise or re-saved with wrong tensors."""
    seeds = sorted(k for k in SEEDS if k.startswith(f"{method}/"))

    @FUZZ
    @given(seed=st.sampled_from(seeds), how=edit)
    def run(seed, how):
        path0 = SEEDS[seed]
        if how[0] == "bytes":
            path = _write(mutate(path0.read_bytes(), how[1]), path0.suffix)
        else:
            path = retensor(path0, *how[1])
        try:
            check(method, path)
        finally:
            path.unlink()

    run()


def _mutate_container(obj, changes, drop):
    """The pickled structure with some tensors reshaped / retyped and, maybe, one entry replaced by a string."""
    leaves = []

    def walk(x, setter):
        if isinstance(x, torch.Tensor):
            leaves.append(setter)
        elif isinstance(x, dict):
            for k in list(x):
                walk(x[k], lambda v, d=x, k=k: d.__setitem__(k, v))
        elif isinstance(x, list):
            for i in range(len(x)):
                walk(x[i], lambda v, lst=x, i=i: lst.__setitem__(i, v))

    import copy

    data = copy.deepcopy(obj)
    walk(data, None)
    for pos, dims, dtype in changes:
        if leaves:
            leaves[pos % len(leaves)](reshape(dims, dtype))
    if drop and leaves:
        leaves[changes[0][0] % len(leaves)]("not a tensor")
    return data
