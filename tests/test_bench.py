"""The world benches (``tailor bench``) in their ``--quick`` setting on the tiny base, and the drift calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tailor
from tailor.bench import common as C
from tailor.errors import ConfigError

ROW_KEYS = {"dino_like", "clip_i_like", "subject_attr_acc", "background_acc", "clip_t_like", "drift"}


def test_calibrate_threshold_separable_and_overlapping():
    t, acc = C.calibrate_threshold([0.9, 0.8, 0.7], [0.1, 0.2, 0.3])
    assert acc == 1.0 and 0.3 < t <= 0.7
    t, acc = C.calibrate_threshold([0.9, 0.8, 0.7], [0.1, 0.75, 0.2])
    assert acc == pytest.approx(5 / 6)  # one error either way: 0.75 called same, or 0.7 called different
    assert 0.2 < t <= 0.8
    t, acc = C.calibrate_threshold([0.2], [0.9])  # inverted scores: the best rule still gets one of the two right
    assert acc == 0.5
    with pytest.raises(ConfigError):
        C.calibrate_threshold([], [0.1])


def test_drift_calibration_separates_real_subjects():
    calib = C.drift_calibration(["checker_star", "zebra_heart", "ladybug_circle"], n_ref=3, n_probe=2, size=64)
    assert calib["same_mean"] > calib["different_mean"]
    assert calib["balanced_accuracy"] >= 0.75


def test_personalize_quick_and_cache(tmp_path):
    from tailor.bench import personalize as P

    s = P.Settings(base="tiny", out=tmp_path, methods=("dreambooth_lora", "textual_inversion"), **P.QUICK)
    result = P.run(s)
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["base", "dreambooth_lora", "textual_inversion"]
    for r in rows.values():
        assert ROW_KEYS <= set(r)
        assert 0.0 <= r["drift"] <= 1.0
    assert rows["textual_inversion"]["params"] == 64  # one vector of the tiny text encoder's width
    assert rows["dreambooth_lora"]["steps"] == 2
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "grid.png").is_file()
    record = tmp_path / "artifacts" / "textual_inversion" / "checker_star" / "bench.json"
    before = record.stat().st_mtime_ns
    again = P.run(P.Settings(base="tiny", out=tmp_path, methods=("textual_inversion",), **P.QUICK))
    assert record.stat().st_mtime_ns == before  # reused, not retrained
    assert again["rows"][1]["train_s"] == rows["textual_inversion"]["train_s"]


def test_unknown_method_is_a_config_error(tmp_path):
    from tailor.bench import personalize as P

    with pytest.raises(ConfigError, match="unknown method"):
        P.run(P.Settings(base="tiny", out=tmp_path, methods=("dreambooth_xl",)))
    with pytest.raises(ConfigError, match="unknown method 'lora_xl'"):
        P.run(P.Settings(base="tiny", out=tmp_path, lrs={"lora_xl": 1e-3}))


@pytest.fixture(scope="module")
def tiny_controlnet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cn")
    method = tailor.get_spec("controlnet").method(condition="canny")
    cfg = tailor.TrainConfig(base="tiny", data="world:objects", resolution=32, steps=1, batch_size=1, out=str(out))
    tailor.train(method, cfg)
    return out


def test_control_quick(tmp_path, tiny_controlnet):
    from tailor.bench import control as B

    s = B.Settings(base="tiny", out=tmp_path, models={"mine": str(tiny_controlnet)}, **B.QUICK)
    result = B.run(s)
    none, mine = result["rows"]
    assert none["model"] == "no control" and none["edge_f1"] is not None and none["miou"] is not None
    assert mine["condition"] == "canny" and mine["miou"] is None and 0 <= mine["edge_f1"] <= 1
    assert mine["params"] > 0 and mine["train_s_per_step"] > 0 and mine["sample_s_per_step"] > 0
    assert isinstance(mine["train_cpu_s_per_step"], float) and mine["sample_cpu_s_per_step"] > 0
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "timing.json").is_file()


def test_control_unloadable_model_names_the_flag(tmp_path):
    from tailor.bench import control as B
    from tailor.errors import InputError

    with pytest.raises(InputError, match="--model nope="):
        B.run(B.Settings(base="tiny", out=tmp_path, models={"nope": str(tmp_path / "missing")}))


def test_image_prompt_quick(tmp_path):
    from tailor.bench import image_prompt as B

    ip = tmp_path / "ip"
    method = tailor.get_spec("ip_adapter").method(image_encoder="tiny")
    tailor.train(method, tailor.TrainConfig(base="tiny", data="world:objects", resolution=32, steps=1, batch_size=1,
                                            out=str(ip)))  # fmt: skip
    s = B.Settings(base="tiny", out=tmp_path / "bench", adapters={"ip": str(ip)}, trained=("lora",),
                   artifacts=tmp_path / "cache", **B.QUICK)  # fmt: skip
    result = B.run(s)
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["none", "ip", "reference-attn", "reference-adain+attn", "lora"]
    assert rows["ip"]["seconds_per_subject"] == 0.0 and rows["lora"]["seconds_per_subject"] > 0
    assert rows["none"]["step_cost"] == 1.0 and rows["reference-attn"]["step_cost"] > 0
    for r in rows.values():
        assert {"clip_i_like", "dino_like", "subject_attr_acc", "text_clip_t_like", "text_background_acc"} <= set(r)
    assert (tmp_path / "cache" / "artifacts" / "lora" / "checker_star" / "bench.json").is_file()


def test_cli_json_parses(tmp_path, capsys):
    from tailor.cli import main

    out = tmp_path / "p"
    code = main(["bench", "personalize", "--quick", "--base", "tiny", "--method", "lora", "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    assert result["bench"] == "personalize" and [r["method"] for r in result["rows"]] == ["base", "lora"]
    assert main(["bench", "control", "--base", "tiny", "--model", "broken", "--no-default-models"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_identifier_is_no_world_caption_word():
    from tailor.bench.personalize import identifier_for, world_words

    word = identifier_for(tailor.load_components("world"), "star")
    assert word not in world_words() and word not in {"two", "star", "photo", "on"}
    assert "two" in world_words()  # the word the plain rare-token rule picks on the world tokenizer


@pytest.fixture(scope="module")
def tiny_identity_models(tmp_path_factory) -> dict[str, str]:
    """Untrained identity methods and an IP-Adapter on the tiny base, saved as training folders would be."""
    root = tmp_path_factory.mktemp("id")
    opts = {"instantid": {"resampler_depth": 1}, "photomaker": {"image_encoder": "tiny", "rank": 2},
            "pulid": {"resampler_depth": 1}, "ip_adapter": {"image_encoder": "tiny"},
            "photoverse": {"image_encoder": "tiny", "adapter_width": 16, "placeholder": "a"}}  # fmt: skip
    for name, kw in opts.items():
        method = tailor.get_spec(name).method(**kw)
        method.patch(tailor.tiny_components())
        method.save(root / name)
    return {name: str(root / name) for name in opts}


def test_identity_quick(tmp_path, tiny_identity_models):
    from tailor.bench import identity as B

    models = {k: v for k, v in tiny_identity_models.items() if k in B.KINDS}
    models["photoverse-tune"] = models["photoverse"]  # a row with its own options over the same weights
    s = B.Settings(base="tiny", out=tmp_path, models=models, ip_adapter=tiny_identity_models["ip_adapter"],
                   dreambooth="dreambooth_lora", **B.QUICK)  # fmt: skip
    result = B.run(s)
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["renders", "base", "ip-adapter", "dreambooth", "instantid", "photomaker", "pulid",
                          "photoverse", "photoverse-tune"]  # fmt: skip
    for r in rows.values():
        assert -1.0 <= r["facesim"] <= 1.0 and 0.0 <= r["same_identity"] <= 1.0
        assert r["style_acc"] is not None and r["background_acc"] is not None and r["clip_t_like"] is not None
    assert rows["renders"]["facesim"] > 0.5 and rows["renders"]["same_identity"] == 1.0  # the oracle knows real faces
    assert rows["dreambooth"]["train_s"] > 0 and rows["dreambooth"]["steps"] == 2
    assert all(rows[k]["train_s"] == 0.0 for k in ("base", "ip-adapter", *models) if k != "photoverse-tune")
    assert rows["photoverse-tune"]["train_s"] > 0  # its test-time tuning: the per-subject seconds
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "images" / "pulid" / "800" / "img_000.png").is_file()


def test_identity_bench_refuses_seen_identities_and_unknown_kinds(tmp_path):
    from tailor.bench import identity as B
    from tailor.errors import InputError

    with pytest.raises(InputError, match="800-999"):
        B.run(B.Settings(base="tiny", out=tmp_path, identities=(12,)))
    with pytest.raises(InputError, match="not an identity method"):
        B.run(B.Settings(base="tiny", out=tmp_path, models={"ip_adapter": "world"}))


def test_cache_stamp_changes_with_the_base_weights(tmp_path):
    """A cached bench artifact trained on one base is not reused on another base of the same name."""
    from tailor.bench import common as C

    base = tmp_path / "base"
    (base / "unet").mkdir(parents=True)
    (base / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"one")
    settings = {"base": str(base), "method": "lora"}
    first = C.stamp(settings)
    assert C.stamp(settings) == first and C.stamp({**settings, "method": "ti"}) != first
    C.base_fingerprint.cache_clear()
    (base / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"two")
    assert C.stamp(settings) != first
    assert C.stamp({"base": "tiny"}) == C.stamp({"base": "tiny"})
