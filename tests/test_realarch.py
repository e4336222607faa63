"""Every registered method at real widths (issue 19): SD1.5 and SDXL components of the real classes and widths, depth
reduced (tests/realarch.py), built once per run; each method in its own process: attach -> 1 training step at
128 px -> save -> 2 sampling steps -> reload onto a freshly loaded base -> the same image; the saved files keep the
official shapes where the ecosystem has a layout. Not in the fast suite: ``make realarch`` (marker ``realarch``).

Peak RSS, CPU seconds and wall seconds per method go to ``outputs/realarch/report.json`` and ``report.md``
(``TAILOR_REALARCH_OUT`` to put them elsewhere, ``TAILOR_REALARCH_ROOT`` to reuse built components).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realarch import KINDS, VARIANTS

from tailor.core.method import registry

pytestmark = pytest.mark.realarch
HERE = Path(__file__).resolve().parent
CASES = [(name, kind) for kind in KINDS for name in sorted(registry())]
CASES += [(case, kind) for case, kinds in VARIANTS.items() for kind in kinds]
RECORDS: list[dict] = []

#: cross-attention width and the UNet block widths of each base
CROSS = {"sd15": 768, "sdxl": 2048}
WIDTHS = {"sd15": {320, 640, 1280}, "sdxl": {640, 1280}}  # SDXL's 320 level has no attention


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    given = os.environ.get("TAILOR_REALARCH_ROOT")
    folder = Path(given) if given else tmp_path_factory.mktemp("realarch-root")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, str(HERE / "realarch.py"), "build", str(folder)], capture_output=True,
                         text=True, timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    built = json.loads(out.stdout.strip().splitlines()[-1])
    built["seconds"] = round(time.perf_counter() - t, 1)
    yield folder
    report(built)
    if not given:
        shutil.rmtree(folder, ignore_errors=True)  # 4.7 GB


def report(built: dict) -> None:
    out = Path(os.environ.get("TAILOR_REALARCH_OUT", "outputs/realarch"))
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(RECORDS, key=lambda r: (r["base"], r["method"]))
    (out / "report.json").write_text(json.dumps({"build": built, "runs": rows}, indent=1))
    lines = [
        f"components built in {built['seconds']} s (peak RSS {built['peak_rss_mb']} MB)",
        "",
        "| method | base | result | peak RSS MB | CPU s | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['base']} | {r.get('result', 'ok')} | {r.get('peak_rss_mb', '')} | "
                     f"{r.get('cpu_s', '')} | {r.get('wall_s', '')} |")  # fmt: skip
    total = sum(r.get("wall_s", 0) for r in rows) + built["seconds"]
    cpu = sum(r.get("cpu_s", 0) for r in rows)
    lines += ["", f"total: {round(total)} s wall, {round(cpu)} s CPU over {len(rows)} runs"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def run_method(name: str, kind: str, root: Path, out: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "realarch.py"), "run", name, kind, str(root), str(out)],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    wall = round(time.perf_counter() - t, 1)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REALARCH ")]
    if proc.returncode != 0 or not lines:
        RECORDS.append({"method": name, "base": kind, "result": "FAILED", "wall_s": wall})
        pytest.fail(f"{name} on {kind} failed:\n{proc.stderr[-4000:]}")
    record = json.loads(lines[-1].removeprefix("REALARCH "))
    record["wall_s"] = wall
    RECORDS.append({k: v for k, v in record.items() if k != "shapes"})
    return record


@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_method_at_real_widths(name, kind, root, tmp_path):
    try:
        record = run_method(name, kind, root, tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # a full-UNet run leaves ~5 GB
    assert record["reload_max_diff"] == 0.0, record["reload_max_diff"]
    check = CHECKS.get(name)
    if check is not None:
        check(record["shapes"], kind, record["configs"])


# ---------------------------------------------------------------------------------------- official shapes
# what the ecosystem's own files look like at these widths (shapes = saved safetensors file -> key -> shape;
# configs = saved config.json -> sizes, .pt -> top-level keys)
def one(shapes: dict, *names: str) -> dict[str, list[int]]:
    for n in names:
        if n in shapes:
            return shapes[n]
    raise AssertionError(f"none of {names} saved; got {sorted(shapes)}")


def check_ip_layers(state: dict, kind: str) -> None:
    """``ip_adapter.<2n+1>.to_{k,v}_ip.weight`` [block width, cross-attention width] for every cross-attention."""
    keys = [k for k in state if k.startswith("ip_adapter.") and k.endswith("to_k_ip.weight")]
    assert keys, sorted(state)[:10]
    assert {tuple(state[k]) for k in keys} == {(w, CROSS[kind]) for w in WIDTHS[kind]}
    assert all(int(k.split(".")[1]) % 2 == 1 for k in keys)  # the official odd slots


def check_ip_adapter(shapes, kind, configs):
    """ip-adapter_sd15 (ViT-H, 4 tokens of 768) / ip-adapter_sdxl (ViT-bigG, 4 tokens of 2048)."""
    state = one(shapes, "ip_adapter.safetensors")
    check_ip_layers(state, kind)
    proj = {"sd15": 1024, "sdxl": 1280}[kind]  # ViT-H / ViT-bigG projection widths
    assert state["image_proj.proj.weight"] == [4 * CROSS[kind], proj]


def check_ip_adapter_plus(shapes, kind, configs):
    """ip-adapter-plus_sd15 (resampler 768 wide) / ip-adapter-plus_sdxl_vit-h (1280 wide, 20 heads, under 2048)."""
    state = one(shapes, "ip_adapter.safetensors")
    check_ip_layers(state, kind)
    width = {"sd15": 768, "sdxl": 1280}[kind]
    assert state["image_proj.latents"] == [1, 16, width]
    assert state["image_proj.proj_in.weight"] == [width, 1280]  # ViT-H hidden states
    assert state["image_proj.proj_out.weight"] == [CROSS[kind], width]
    assert state["image_proj.layers.0.0.to_q.weight"] == [width, width]  # heads of 64: 12 / 20


def check_instantid(shapes, kind, configs):
    """The release's pair: ``ip-adapter`` (Resampler over 512-d faces; SDXL 1280 wide) + ``ControlNetModel/``."""
    state = one(shapes, "ip-adapter.safetensors")
    check_ip_layers(state, kind)
    width = {"sd15": 768, "sdxl": 1280}[kind]
    assert state["image_proj.latents"] == [1, 16, width]
    assert state["image_proj.proj_in.weight"] == [width, 512]
    assert state["image_proj.proj_out.weight"] == [CROSS[kind], width]
    assert "ControlNetModel/diffusion_pytorch_model.safetensors" in shapes
    check_controlnet(shapes, kind, configs)  # IdentityNet, the only diffusers folder


def check_pulid(shapes, kind, configs):
    state = one(shapes, "pulid.safetensors")
    check_ip_layers(state, kind)
    assert state["image_proj.proj_in.weight"][1] == 512 and state["image_proj.latents"][1] == 32


def check_controlnet(shapes, kind, configs):
    """A diffusers ControlNet folder: hint encoder 3 -> 16, 16, 32, 32, 96, 96, 256 -> the first block's 320."""
    state = next(v for k, v in shapes.items() if k.endswith("diffusion_pytorch_model.safetensors"))
    hint = [state[f"controlnet_cond_embedding.blocks.{i}.weight"][0] for i in range(6)]
    assert state["controlnet_cond_embedding.conv_in.weight"] == [16, 3, 3, 3]
    assert hint == [16, 32, 32, 96, 96, 256] and state["controlnet_cond_embedding.conv_out.weight"][:2] == [320, 256]
    assert state["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == [640, CROSS[kind]]
    n = {"sd15": 12, "sdxl": 9}[kind]  # zero convs: one per UNet skip (1 layer per block here: 3 per level)
    assert sum(k.startswith("controlnet_down_blocks.") and k.endswith(".weight") for k in state) <= n


def check_t2i_adapter(shapes, kind, configs):
    """diffusers' full adapter (SD1.5: unshuffle 8, (320, 640, 1280, 1280)) / full_adapter_xl (unshuffle 16)."""
    cfg = next(v for k, v in configs.items() if "channels" in v)
    want = {"sd15": ([320, 640, 1280, 1280], "full_adapter"), "sdxl": ([320, 640, 1280, 1280], "full_adapter_xl")}
    assert (cfg["channels"], cfg["adapter_type"]) == want[kind], cfg
    state = next(v for k, v in shapes.items() if k.endswith("diffusion_pytorch_model.safetensors"))
    assert state["adapter.conv_in.weight"] == [320, 3 * {"sd15": 64, "sdxl": 256}[kind], 3, 3]


def check_t2i_light(shapes, kind, configs):
    """diffusers' light adapter (SD1.5 release: (320, 640, 1280), 4 blocks per stage)."""
    cfg = next(v for k, v in configs.items() if "channels" in v)
    assert (cfg["channels"], cfg["adapter_type"], cfg["num_res_blocks"]) == ([320, 640, 1280], "light_adapter", 4)


def check_lora(shapes, kind, configs):
    state = one(shapes, "lora.safetensors")
    k = [s for n, s in state.items() if n.endswith("attn2.to_k.lora_A.weight")]
    assert k and {s[1] for s in k} == {CROSS[kind]}
    kohya = one(shapes, "lora_kohya.safetensors")
    assert any(n.startswith("lora_unet_") and n.endswith(".lora_down.weight") for n in kohya)


def check_textual_inversion(shapes, kind, configs):
    if kind == "sd15":
        state = one(shapes, "learned_embeds.safetensors")
        assert {s[-1] for s in state.values()} == {768}
    else:  # A1111 / ComfyUI SDXL: one vector set per text encoder
        state = next(v for v in shapes.values() if "clip_l" in v)
        assert state["clip_l"][-1] == 768 and state["clip_g"][-1] == 1280


def check_hypernetwork(shapes, kind, configs):
    """A1111's ``.pt``: one MLP pair per context width (SD1.5 768, 320, 640, 1280)."""
    keys = configs["hypernetwork.pt"]["keys"]
    widths = {int(k) for k in keys if k.isdigit()}
    assert widths == WIDTHS[kind] | {CROSS[kind]} | ({320} if kind == "sd15" else set()), keys
    assert "layer_structure" in keys


def check_full_unet(shapes, kind, configs):
    """DreamBooth / fine-tune: a diffusers pipeline folder of the base's sizes."""
    cfg = configs["pipeline/unet/config.json"]
    assert cfg["cross_attention_dim"] == CROSS[kind]
    assert cfg["block_out_channels"] == ([320, 640, 1280, 1280] if kind == "sd15" else [320, 640, 1280])


def check_inpaint(shapes, kind, configs):
    """An inpainting base (SD-inpainting's layout): the pipeline folder's UNet takes 4 + 1 + 4 = 9 channels."""
    check_full_unet(shapes, kind, configs)
    assert configs["pipeline/unet/config.json"]["in_channels"] == 9


def check_ic_light(shapes, kind, configs):
    """iclight_sd15_fbc's layout: offsets over every UNet key, ``conv_in.weight`` [320, 12, 3, 3]."""
    state = one(shapes, "iclight_fbc.safetensors")
    assert state["conv_in.weight"] == [320, 12, 3, 3]
    assert state["conv_in.bias"] == [320] and any(k.startswith("up_blocks.") for k in state)


def check_controlnext(shapes, kind, configs):
    """The official ControlNeXt module (SD1.5 training code), which a first block of 320 gets unscaled: 3 -> 64, 64,
    128 stem, stages 128 -> 128 -> 256, 128-d timestep -> 256, a 1x1 conv to 320; file and folder alike."""
    want = {"embedding.0.weight": [64, 3, 3, 3], "embedding.6.weight": [128, 64, 3, 3],
            "time_embedding.linear_1.weight": [256, 128], "down_res.0.conv1.weight": [128, 128, 3, 3],
            "down_res.1.conv1.weight": [256, 128, 3, 3], "mid_convs.0.0.weight": [256, 256, 3, 3],
            "mid_convs.1.weight": [320, 256, 1, 1]}  # fmt: skip
    file = {k.removeprefix("controlnext."): v for k, v in one(shapes, "controlnext.safetensors").items()}
    folder = one(shapes, "controlnext/diffusion_pytorch_model.safetensors")
    for state in (file, folder):
        assert {k: state.get(k) for k in want} == want
        assert not any(k.startswith("down_res.2.") for k in state)  # two stages for a VAE factor of 8


CHECKS = {
    "controlnet": check_controlnet,
    "controlnet_pp": check_controlnet,
    "controlnext": check_controlnext,
    "dreambooth": check_full_unet,
    "finetune": check_full_unet,
    "hypernetwork": check_hypernetwork,
    "ic_light": check_ic_light,
    "inpaint": check_inpaint,
    "instantid": check_instantid,
    "ip_adapter": check_ip_adapter,
    "ip_adapter:plus": check_ip_adapter_plus,
    "lora": check_lora,
    "pulid": check_pulid,
    "t2i_adapter": check_t2i_adapter,
    "t2i_adapter:light": check_t2i_light,
    "textual_inversion": check_textual_inversion,
}
