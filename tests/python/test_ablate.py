"""Directional ablation (`ablate`) on a real model, SmolLM2-135M: the patch holds one rank-one
entry for each matrix that writes to the residual stream; in the baked model those matrices
can no longer write along the direction (rᵀW' ≈ 0) while the others are untouched; the
reported behaviour measure (p of a token on the held-out prompts, base and ablated) is what an
independent numpy forward pass finds; bad requests are refused."""

import base64
import json

import numpy as np
import pytest

from conftest import run
from reference import Llama, load_tensors, softmax
from server import Server

FROM = [
    "The capital of France is",
    "The Eiffel Tower is located in the city of",
    "The Louvre museum is in",
    "The French government sits in the city of",
    "The largest city in France is",
    "The river Seine flows through the city of",
]
TO = [
    "The capital of Germany is",
    "The Colosseum is located in the city of",
    "The Prado museum is in",
    "The British government sits in the city of",
    "The largest city in Japan is",
    "The river Thames flows through the city of",
]


@pytest.fixture(scope="module")
def model_path(smollm2):
    return smollm2 / "model.safetensors"


@pytest.fixture(scope="module")
def ablated(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    (tmp / "from.txt").write_text("\n".join(FROM) + "\n")
    (tmp / "to.txt").write_text("\n\n".join(TO))
    out = tmp / "ablate.json"
    report = run("ablate", model_path, "--from", tmp / "from.txt", "--to", tmp / "to.txt",
                 "--layer", "10", "--token", " Paris", "--generate", "6", "--out", out,
                 "--json").json()
    baked = tmp / "baked.safetensors"
    run("apply", model_path, out, "--out", baked)
    return report, json.loads(out.read_text()), baked


def test_every_residual_writer_loses_the_direction(ablated, model_path):
    report, patch, baked = ablated
    entries = patch["entries"]
    assert patch["version"] == 2 and report["entries"] == 60
    names = {e["tensor"] for e in entries}
    assert names == {f"model.layers.{l}.{p}.weight" for l in range(30)
                     for p in ("self_attn.o_proj", "mlp.down_proj")}
    assert all(e["kind"] == "low_rank" and e["rank"] == 1 for e in entries)
    assert report["factor_bytes"] < 500_000 < 50_000_000 < report["changed_bytes"]
    base, after = load_tensors(model_path), load_tensors(baked)
    for e in entries[:: 15]:
        r = -np.frombuffer(base64.b64decode(e["u"]), "<f4")  # u = -strength x r, strength 1
        assert abs(np.linalg.norm(r) - 1) < 1e-4
        w, w2 = base[e["tensor"]], after[e["tensor"]]
        assert np.linalg.norm(r @ w2) < 0.01 * np.linalg.norm(r @ w), e["tensor"]
    for name in ("model.layers.3.self_attn.q_proj.weight", "model.embed_tokens.weight"):
        assert np.array_equal(base[name], after[name])


def test_the_reported_behaviour_is_what_the_model_does(ablated, model_path):
    report, _, baked = ablated
    held = FROM[1::2]
    assert report["held_out"] == len(held) and report["layer"] == 10 and report["strength"] == 1
    assert [c["prompt"] for c in report["continuations"]] == held
    paris = None
    for weights, side in ((None, "base"), (baked, "edited")):
        ref = Llama(model_path.parent, weights=weights)
        paris = paris or ref.encode(" Paris")[-1]
        p = np.mean([softmax(ref.next_token_logits(ref.encode(h)))[paris] for h in held])
        assert abs(p - report["token_prob"][side]) < 0.01, side
    assert report["token_prob"]["base"] > 0.3
    assert report["token_prob"]["edited"] < report["token_prob"]["base"] / 10
    assert report["kl"] > 0


def test_the_web_form_s_ablation_is_the_cli_s_and_loads_as_a_layer(ablated, smollm2, tmp_path):
    """What the Run tab's ablation form posts: the same request gives the CLI's report, saved
    as a patch in the patches folder; loading it as a layer makes the session's edited model
    lose the behaviour, and turning the layer off gives the base back."""
    report, patch, _ = ablated
    s = Server(smollm2, "--patches", str(tmp_path / "patches")).start()
    try:
        request = {"from": FROM, "to": TO, "layer": 10, "strength": 1.0, "embedding": False,
                   "markers": [], "tokens": [" Paris"], "generate": 6}
        body = {"request": request, "search": False, "save_as": "paris"}
        out = s.call("POST", "/api/ablate", body, timeout=600)
        assert out["saved"] == "paris.json"
        web = out["report"]
        for key in ("layer", "strength", "held_out", "entries", "factor_bytes", "changed_bytes"):
            assert web[key] == report[key], key
        for side in ("base", "edited"):
            assert abs(web["token_prob"][side] - report["token_prob"][side]) < 1e-6, side
        assert abs(web["kl"] - report["kl"]) < 1e-6
        saved = json.loads((tmp_path / "patches" / "paris.json").read_text())
        assert [e["tensor"] for e in saved["entries"]] == [e["tensor"] for e in patch["entries"]]
        assert all(e["origin"]["source"] == "web" for e in saved["entries"])
        # The session is unchanged until the patch is loaded as a layer.
        assert s.call("GET", "/api/session", timeout=300)["layers"] == []
        loaded = s.call("POST", "/api/load_saved", {"name": "paris.json"}, timeout=300)
        assert loaded["conflicts"] == []
        view = s.call("GET", "/api/session", timeout=300)
        layers = view["layers"]
        assert [l["name"] for l in layers] == ["paris.json"] and layers[0]["enabled"]
        # Each low-rank entry is a row of its own (its elements counted, not listed), and the
        # journal keeps the factors: well under the tens of megabytes of bytes they change.
        assert [(r["tensor"], r["rank"]) for r in view["low_rank"]] == \
            [(e["tensor"], e["rank"]) for e in saved["entries"]]
        assert view["entries"] == [] and view["total_elements"] > 10_000_000
        [journal] = [p for p in (tmp_path / "patches").iterdir() if "journal" in p.name]
        assert journal.stat().st_size < 2 * len(json.dumps(saved)), journal.stat().st_size
        ran = s.call("POST", "/api/run", {"request": {"prompt": FROM[1], "top_k": 5, "target": " Paris",
                                                      "generate": 0}}, timeout=300)
        assert ran["edited"]["target"]["prob"] < ran["base"]["target"]["prob"] / 10
        # A restart replays the layer from its factors: the same weights.
        s.kill9()
        # Replaying sixty rank-one matrices (32 million elements) before listening takes about
        # 22 s in a dev build on a quiet machine (BENCHMARKS.md): give it room on a busy one.
        s = Server(smollm2, "--patches", str(tmp_path / "patches")).start(within=120)
        again = s.call("GET", "/api/session", timeout=300)
        assert again["low_rank"] == view["low_rank"] and again["layers"] == layers
        assert s.call("POST", "/api/run", {"request": {"prompt": FROM[1], "top_k": 5, "target": " Paris",
                                                       "generate": 0}}, timeout=300) == ran
        s.call("POST", "/api/layer", {"id": layers[0]["id"], "enabled": False}, timeout=300)
        ran = s.call("POST", "/api/run", {"request": {"prompt": FROM[1], "top_k": 5, "target": " Paris",
                                                      "generate": 0}}, timeout=300)
        assert ran["edited"] is None  # no edit is on: the edited model is the base
        # A request the engine refuses is a 400 with its message; nothing is saved.
        status, text = s.call("POST", "/api/ablate", dict(body, request=dict(request, **{"from": FROM[:1]}),
                                                          save_as="bad"), ok=False, timeout=300)
        assert status == 400 and "at least two prompts" in text
        assert not (tmp_path / "patches" / "bad.json").exists()
    finally:
        s.stop()


@pytest.mark.parametrize("args, message", [
    (["--strength", "0"], "not a positive number"),
    (["--search"], "needs a behaviour"),
    (["--layer", "30"], "beyond the model"),
])
def test_bad_requests_are_refused(model_path, tmp_path, args, message):
    (tmp_path / "from.txt").write_text("\n".join(FROM))
    (tmp_path / "to.txt").write_text("\n".join(TO))
    out = run("ablate", model_path, "--from", tmp_path / "from.txt", "--to", tmp_path / "to.txt",
              *args, "--out", tmp_path / "x.json", check=False)
    assert out.code != 0 and message in out.err, out.err
    assert not (tmp_path / "x.json").exists()
