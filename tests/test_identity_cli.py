"""CLI of the identity methods: ``tailor faces analyze``, ``tailor eval identity`` (the oracle's FaceSim, checked on
renders of known identities) and ``tailor generate --instantid / --photomaker / --pulid`` with their references."""

from __future__ import annotations

import json

import pytest

import tailor
import tailor.world as world
from tailor.cli import main
from tailor.core.surface import parse_weight_spec
from tailor.world.cli import write_samples


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def split_spec(text, flag):
    s = parse_weight_spec(text, flag, "=", 5.0)
    return s.path, list(s.refs), s.scale


def test_split_spec():
    assert split_spec("runs/a", "--x") == ("runs/a", [], 1.0)
    assert split_spec("runs/a:0.8", "--x") == ("runs/a", [], 0.8)
    assert split_spec("runs/a=f.png+g.png:0.5", "--x") == ("runs/a", ["f.png", "g.png"], 0.5)
    assert split_spec("runs/a=f.png", "--x") == ("runs/a", ["f.png"], 1.0)
    assert split_spec("C:/runs/a:0.5:0.1:0.9", "--x") == ("C:/runs/a", [], 0.5)  # only trailing numbers are weights
    for bad in ("runs/a:9", "runs/a:nan", "runs/a:0.5:0.9:0.1", "runs/a:0.2:0.8", "runs/a=", ""):
        with pytest.raises(tailor.errors.ConfigError):
            split_spec(bad, "--x")


def test_faces_analyze_json(capsys, tmp_path):
    write_samples(tmp_path / "faces", [world.render_face(1, identity=905)])
    code, out, _ = run(capsys, "faces", "analyze", str(tmp_path / "faces" / "000.png"), "--json")
    face = json.loads(out)["faces"][0]
    assert code == 0 and face["source"] == "world-labels" and len(face["keypoints"]) == 5
    assert face["embedding_dim"] == 64 and face["identity"] == 905
    world.render_object(2).pil().save(tmp_path / "star.png")
    code, out, _ = run(capsys, "faces", "analyze", str(tmp_path / "star.png"), "--json")
    assert code == 0 and json.loads(out)["faces"] == []


def test_eval_identity_separates_identities(capsys, tmp_path):
    write_samples(tmp_path / "gen", [world.render_face(s, identity=920) for s in range(10, 16)])
    world.render_face(99, identity=920).pil().save(tmp_path / "same.png")
    world.render_face(99, identity=930).pil().save(tmp_path / "other.png")
    _, out, _ = run(capsys, "eval", "identity", "--images", str(tmp_path / "gen"), "--reference",
                    str(tmp_path / "same.png"), "--json")  # fmt: skip
    same = json.loads(out)
    _, out, _ = run(capsys, "eval", "identity", "--images", str(tmp_path / "gen"), "--reference",
                    str(tmp_path / "other.png"), "--json")  # fmt: skip
    other = json.loads(out)
    assert same["images"] == 6 and same["facesim"] > other["facesim"] + 0.3
    assert same["same_identity"] >= 0.8 and other["same_identity"] <= 0.2


def test_generate_with_identity_methods(capsys, tmp_path):
    from tailor.core.method import get_spec

    comps = tailor.tiny_components()
    folders = {}
    for name in ("instantid", "photomaker", "pulid"):
        spec = get_spec(name)
        m = spec.method(**spec.test_options)
        m.patch(comps)
        folders[name] = tmp_path / name
        folders[name].mkdir()
        m.save(folders[name])
        m.unpatch()
    write_samples(tmp_path / "refs", [world.render_face(s, identity=940) for s in range(2)])
    face = str(tmp_path / "refs" / "000.png")
    common = ["generate", "--base", "tiny", "-n", "1", "--steps", "2", "--guidance", "3"]
    code, _, err = run(capsys, *common, "--prompt", "a photo of a man img", "--instantid",
                       str(folders["instantid"] / "instantid.safetensors"), "--pulid",
                       f"{folders['pulid'] / 'pulid.safetensors'}:0.5", "--face", face, "--photomaker",
                       f"{folders['photomaker'] / 'photomaker.safetensors'}={tmp_path / 'refs'}", "--out",
                       str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    settings = json.loads((tmp_path / "out" / "generation.json").read_text())["settings"]
    assert [m["method"] for m in settings["methods"]] == ["instantid", "pulid", "photomaker"]
    assert settings["methods"][1]["weight"] == 0.5
    code, _, err = run(capsys, *common, "--prompt", "a man", "--instantid", str(folders["instantid"]), "--out",
                       str(tmp_path / "o2"))  # fmt: skip
    assert code == 2 and "--face" in err
    code, _, err = run(capsys, *common, "--prompt", "a man", "--pulid", "world", "--face", face, "--out",
                       str(tmp_path / "o3"))  # fmt: skip
    assert code == 2 and "pulid" in err  # the world weights are for the world base (or not trained yet)
