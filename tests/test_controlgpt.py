"""Control-GPT (Zhang et al. 2023): the rule planner (relations hold exactly, impossible ones refused), layout-program
validation, the OpenAI-compatible endpoint planner against a local stub server, the sketch, the grounding tokens'
box embedding (GLIGEN's formula), tiny train / save / reload / generate and the CLI."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

import tailor
from tailor.core.pipeline import Pipeline
from tailor.errors import ConfigError, InputError
from tailor.methods.controlgpt.method import ControlGPTMethod
from tailor.methods.controlgpt.modules import fourier_boxes
from tailor.synth.plan import EndpointPlanner, RulePlanner, read_layout, sketch_image, validate_layout
from tailor.world.relations import MARGIN, relation_holds

LAYOUT = {"size": 64, "objects": [{"name": "star", "color": "red", "box": [4, 20, 24, 40]},
                                  {"name": "circle", "color": "blue", "box": [40, 20, 60, 40]}],
          "relations": [{"subject": 0, "relation": "left of", "object": 1}]}  # fmt: skip


# --------------------------------------------------------------------- the rule planner
PROMPTS = [
    "a red star left of a blue circle on grass",
    "a photo of a green triangle above an orange hexagon on snow",
    "a white cross below a black diamond",
    "a pink heart right of a yellow square and a purple circle above the pink heart",
    "a brown hexagon bigger than a red star",
    "a blue square to the left of a green cross, a white star under the blue square",
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_rule_plan_satisfies_every_relation_with_the_world_margin(prompt, seed):
    p = RulePlanner().plan(prompt, size=64, seed=seed)
    assert p["relations"]
    for r in p["relations"]:
        a, b = p["objects"][r["subject"]]["box"], p["objects"][r["object"]]["box"]
        assert relation_holds(r["relation"], a, b)
        if r["relation"] in ("left of", "right of", "above", "below"):
            axis = 0 if "of" in r["relation"] else 1
            gap = abs((a[axis] + a[axis + 2]) - (b[axis] + b[axis + 2])) / 2
            assert gap >= MARGIN * 64 - 0.02  # centres at least 18% of the side apart (boxes rounded to 0.01 px)
    for o in p["objects"]:
        assert 0 <= o["box"][0] < o["box"][2] <= 64 and 0 <= o["box"][1] < o["box"][3] <= 64
    assert p == RulePlanner().plan(prompt, size=64, seed=seed)  # deterministic


@pytest.mark.parametrize(
    "prompt, needle",
    [
        ("a red star left of a blue circle and the blue circle left of the red star", "contradict"),
        (
            "a red star above a blue circle, the blue circle above a green square, "
            "the green square above the red star",
            "contradict",
        ),  # fmt: skip
        ("a red star left of a blue circle, a green square and a white heart", "at most 3"),
        ("a sunny day on the beach", "no object"),
        ("a red star left of the red star", "itself"),
    ],
)
def test_impossible_plans_are_refused_in_one_sentence(prompt, needle):
    with pytest.raises((ConfigError, InputError)) as e:
        RulePlanner().plan(prompt, size=64)
    msg = str(e.value).replace("the most a layout holds is 3", "at most 3")
    assert needle in msg and msg.replace("e.g. ", "").count(". ") == 0


# --------------------------------------------------------------------- layout programs
@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda p: p["objects"][0].update(box=[50, 20, 70, 40]), "outside"),
        (lambda p: p["objects"][0].update(box=[-1, 20, 10, 40]), "outside"),
        (lambda p: p["objects"][0].update(box=[10, 20, 10, 40]), "zero area"),
        (lambda p: p["objects"][0].update(box=[4, 20, 24]), "four"),
        (lambda p: p["objects"].extend([dict(LAYOUT["objects"][0])] * 2), "most a layout holds is 3"),
        (lambda p: p["objects"][0].update(name="dragon"), "unknown class 'dragon'"),
        (lambda p: p["objects"][0].update(color="teal"), "unknown color"),
        (lambda p: p["relations"][0].update(relation="right of"), "contradict"),
        (lambda p: p["relations"][0].update(relation="inside"), "unknown relation"),
        (lambda p: p.update(objects=[]), "no 'objects'"),
    ],
)
def test_bad_layouts_are_one_sentence(change, needle):
    program = json.loads(json.dumps(LAYOUT))
    change(program)
    with pytest.raises(ConfigError) as e:
        validate_layout(program, "--layout x.json")
    assert needle in str(e.value) and "--layout x.json" in str(e.value)


def test_layout_file_is_read_rescaled_and_refused_when_unreadable(tmp_path):
    f = tmp_path / "l.json"
    f.write_text(json.dumps(LAYOUT))
    p = read_layout(f, size=128)
    assert p["size"] == 128 and p["objects"][0]["box"] == [8, 40, 48, 80] and p["objects"][0]["name"] == "star"
    f.write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        read_layout(f)
    with pytest.raises(InputError, match="does not exist"):
        read_layout(tmp_path / "none.json")


def test_sketch_draws_each_outline_inside_its_box_reaching_its_sides():
    img = sketch_image(LAYOUT["objects"], 64)[..., 0]
    on = img > 100  # the 1-px anti-aliased line's strong pixels
    mask = np.zeros_like(on)
    for o in LAYOUT["objects"]:
        x0, y0, x1, y1 = (int(v) for v in o["box"])
        mask[y0:y1, x0:x1] = True
        ys, xs = np.nonzero(on[y0:y1, x0:x1])
        assert xs.min() <= 1 and ys.min() <= 1 and xs.max() >= x1 - x0 - 2 and ys.max() >= y1 - y0 - 2
    assert not on[~mask].any()  # nothing drawn outside the boxes


# --------------------------------------------------------------------- the endpoint planner
class _Stub(BaseHTTPRequestHandler):
    reply: str = ""
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, body, self.headers.get("Authorization")))
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": type(self).reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    _Stub.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _Stub
    server.shutdown()
    server.server_close()


def test_endpoint_planner_reads_a_chat_completion_and_validates_it(stub):
    url, handler = stub
    handler.reply = "Here it is:\n```json\n" + json.dumps(LAYOUT) + "\n```"
    p = EndpointPlanner(url, model="m1", api_key="k").plan("a red star left of a blue circle", size=64)
    assert p["objects"][1]["name"] == "circle" and p["relations"][0]["relation"] == "left of"
    path, body, auth = handler.seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "m1" and auth == "Bearer k"
    assert body["messages"][1]["content"] == "a red star left of a blue circle" and "star" in body["messages"][0][
        "content"]  # fmt: skip
    bad = json.loads(json.dumps(LAYOUT))
    bad["objects"][0]["box"] = [60, 20, 80, 40]
    handler.reply = json.dumps(bad)
    with pytest.raises(ConfigError, match="outside"):
        EndpointPlanner(url).plan("x", size=64)
    handler.reply = "I cannot draw that."
    with pytest.raises(ConfigError, match="rule planner"):
        EndpointPlanner(url).plan("x", size=64)


def test_unreachable_endpoint_is_one_sentence_naming_the_rule_planner():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(InputError) as e:
        EndpointPlanner(f"http://127.0.0.1:{port}/v1", timeout=5).plan("a red star", size=64)
    msg = str(e.value)
    assert "could not be reached" in msg and "rule planner" in msg and msg.count(". ") == 0
    with pytest.raises(ConfigError, match="http"):
        EndpointPlanner("ftp://x")


# --------------------------------------------------------------------- the grounding tokens
def test_fourier_boxes_is_gligens_embedding():
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.9]])
    out = fourier_boxes(boxes, 4)
    ref = []
    for k in range(4):  # GLIGEN FourierEmbedder: per frequency, sin(f x) then cos(f x) of all four coordinates
        f = 100 ** (k / 4)
        ref += [torch.sin(f * boxes), torch.cos(f * boxes)]
    assert torch.allclose(out, torch.cat(ref, -1), atol=1e-6)


def _method(comps=None, **kw):
    comps = comps or tailor.tiny_components()
    m = ControlGPTMethod(**kw)
    torch.manual_seed(0)
    m.patch(comps)
    return m, comps


def _generate(comps, method, prompt="a red star left of a blue circle", **inputs):
    pipe = Pipeline(comps).attach(method, **inputs)
    out = pipe.generate(prompt, n=1, seed=0, steps=2, guidance=3.0).array
    pipe.detach()
    return out


def test_grounding_tokens_reach_the_controlnet_and_padding_is_null():
    m, comps = _method()
    with torch.no_grad():
        for z in [*m.control.controlnet_down_blocks, m.control.controlnet_mid_block]:
            z.weight.normal_(0, 0.1)
    box, mask = torch.tensor([[[0.1, 0.3, 0.4, 0.6], [0, 0, 0, 0], [0, 0, 0, 0]]]), torch.tensor([[1.0, 0, 0]])
    red, green = m.grounding_tokens([["red star"]], box, mask), m.grounding_tokens([["green star"]], box, mask)
    moved = m.grounding_tokens([["red star"]], box + 0.2, mask)
    assert (red[0, 0] - green[0, 0]).abs().max() > 1e-4 and (red[0, 0] - moved[0, 0]).abs().max() > 1e-4
    f = comps.vae_scale_factor
    x, t = torch.randn(1, m.control.config.in_channels, 32 // f, 32 // f), torch.tensor(500)
    text = torch.randn(1, 77, m.control.config.cross_attention_dim)
    sketch = torch.rand(1, 3, 32, 32)

    def residual(tokens):
        with torch.no_grad():
            return m.control(x, t, encoder_hidden_states=torch.cat([text, tokens], 1), controlnet_cond=sketch,
                             return_dict=False)[1]  # fmt: skip

    assert (residual(red) - residual(green)).abs().max() > 1e-6  # the names reach the ControlNet's attention
    # a padded slot is the null token whatever its (ignored) name and box
    other = m.grounding_tokens([["red star", "blue circle"]], torch.rand(1, 3, 4), mask)
    assert torch.equal(red[0, 1:], other[0, 1:]) and torch.equal(red[0, 1], red[0, 2])
    plain = Pipeline(comps).generate("a red star left of a blue circle", n=1, seed=0, steps=2, guidance=3.0).array
    assert np.abs(_generate(comps, m, layout=LAYOUT) - plain).max() > 1e-3  # the sketch ControlNet acts


def test_grounding_guidance_gives_the_unconditional_half_null_tokens():
    """``grounding_guidance``: the ControlNet's context in the unconditional CFG half ends in the null tokens (no
    objects), in the conditional half in the named objects' tokens; off, both halves carry the named tokens."""
    seen = {}
    for on in (False, True):
        m, comps = _method(grounding_guidance=on)
        with torch.no_grad():
            for z in [*m.control.controlnet_down_blocks, m.control.controlnet_mid_block]:
                z.weight.normal_(0, 0.1)
        calls: list[torch.Tensor] = []
        hook = m.control.register_forward_pre_hook(lambda mod, a, kw, seen=calls: seen.append(
            kw["encoder_hidden_states"]), with_kwargs=True)  # fmt: skip
        pipe = Pipeline(comps).attach(m, layout=LAYOUT)
        image = pipe.generate("a red star left of a blue circle", n=1, seed=0, steps=2, guidance=3.0).array
        hook.remove()
        n = m.config.max_objects
        ctx = calls[0][:, -n:].float()
        boxes = torch.zeros(1, n, 4)
        boxes[0, :2] = torch.tensor([o["box"] for o in LAYOUT["objects"]]) / 64
        mask = torch.tensor([[1.0, 1.0, 0.0]])
        with torch.no_grad():
            named = m.grounding_tokens([["red star", "blue circle"]], boxes, mask)[0].float()
            null = m.grounding_tokens([[]], boxes, torch.zeros_like(mask))[0].float()
        assert ctx.shape[0] == 2 and torch.allclose(ctx[1], named, atol=1e-5)
        assert torch.allclose(ctx[0], null if on else named, atol=1e-5)
        assert not torch.allclose(named, null, atol=1e-3)
        pipe.detach()
        seen[on] = image
    assert np.abs(seen[True] - seen[False]).max() > 1e-5  # the guidance changes the picture (tiny: 2 steps, little)


def test_plain_prompts_swap_in_the_class_only_caption():
    """``plain_prompts``: that share of the non-empty captions becomes the scene's caption without colour and pattern
    words (relations kept), drawn per sample position; 0 keeps every caption."""
    from tailor.methods.controlgpt.data import ControlGPTDataset
    from tailor.world.dataset import WorldDataset

    items = [ControlGPTDataset(WorldDataset("relation", size=32, length=4), 0, 3, 0.5)[i] for i in range(4)]
    batch = {"caption": [it["caption"] for it in items],
             "controlgpt_plain_caption": [it["controlgpt_plain_caption"] for it in items]}  # fmt: skip
    for it in items:
        plain = it["controlgpt_plain_caption"]
        colours = {o["color"] for o in it["attrs"]["objects"]}
        assert plain != it["caption"] and not colours & set(plain.split())
    for rate, want in ((0.0, batch["caption"]), (1.0, batch["controlgpt_plain_caption"])):
        m = ControlGPTMethod(empty_prompts=0.0, plain_prompts=rate)
        assert m.expand_batch(batch, [0, 1, 2, 3], [0, 1, 2, 3])[0]["caption"] == want
    half = ControlGPTMethod(empty_prompts=0.0, plain_prompts=0.5).expand_batch(batch, list(range(4)), [0, 1, 2, 3])
    again = ControlGPTMethod(empty_prompts=0.0, plain_prompts=0.5).expand_batch(batch, list(range(4)), [0, 1, 2, 3])
    assert half[0]["caption"] == again[0]["caption"]  # drawn from (seed, stream, position): resumable


def test_tiny_train_save_reload_and_plan_by_prompt(tmp_path):
    from tailor.core.training import TrainConfig

    m = ControlGPTMethod()
    cfg = TrainConfig(base="tiny", out=str(tmp_path / "run"), data="world:relation:photo", steps=2, batch_size=2,
                      lr=1e-3, seed=0, log_every=1)  # fmt: skip
    tailor.train(m, cfg)
    again = tailor.load(tmp_path / "run")
    assert isinstance(again, ControlGPTMethod)
    comps = tailor.tiny_components()
    a = _generate(comps, again)  # planned from the prompt by the rule planner
    b = _generate(tailor.tiny_components(), tailor.load(tmp_path / "run"), plan="a red star left of a blue circle")
    assert np.abs(a - b).max() == 0
    trained = dict(again.state_dict())
    fresh, _ = _method()
    assert any(not torch.equal(trained[k], v) for k, v in fresh.state_dict().items() if "grounding" in k)


def test_cli_plan_layout_and_bad_input(capsys, tmp_path):
    from tailor.cli import main

    m, _ = _method()
    m.save(tmp_path / "w")
    args = ["generate", "--base", "tiny", "--steps", "2", "-n", "1", "--controlgpt", str(tmp_path / "w")]
    out = tmp_path / "gen"
    assert main([*args, "--plan", "a red star left of a blue circle", "--out", str(out)]) == 0
    gen = json.loads((out / "generation.json").read_text())
    assert "a red star left of a blue circle" in json.dumps(gen)
    lay = tmp_path / "l.json"
    lay.write_text(json.dumps(LAYOUT))  # 64-px boxes, rescaled to the output size
    assert main([*args, "-p", "x", "--layout", str(lay), "--out", str(tmp_path / "gen2")]) == 0
    bad = json.loads(json.dumps(LAYOUT))
    bad["objects"][0]["box"] = [0, 0, 0, 10]
    lay.write_text(json.dumps(bad))
    code = main([*args, "-p", "x", "--layout", str(lay), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "zero area" in err and "Traceback" not in err and not (tmp_path / "bad").exists()
    code = main([*args, "--plan", "a star", "--planner-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "b2")])
    err = capsys.readouterr().err
    assert code == 2 and "rule planner" in err and not (tmp_path / "b2").exists()
