"""Running the model through the real web server: bad requests and their status codes, a model
that cannot run, a continuation streamed as server-sent events, probe files beside the patches,
and an edit made through the web API checked against the numpy reference reading the baked file."""

import json
import time
import urllib.parse

import numpy as np
import pytest

from conftest import run
from reference import Llama, softmax
from server import Server

PROMPT = "The capital of France is"
EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def llm(smollm2, tmp_path_factory):
    work = tmp_path_factory.mktemp("llm")
    s = Server(smollm2, "--patches", str(work / "patches"), "--out-dir", str(work / "out")).start()
    s.work = work
    yield s
    s.stop()


def run_request(prompt=PROMPT, top_k=10, target=None, generate=0):
    return {"request": {"prompt": prompt, "top_k": top_k, "target": target, "generate": generate}}


def events(server, prompt, tokens):
    """The server-sent events of a streamed continuation: [(event, data)]."""
    q = urllib.parse.urlencode({"prompt": prompt, "tokens": tokens})
    status, headers, body = server.exchange("GET", f"/api/generate?{q}")
    assert status == 200, body
    assert headers["content-type"].startswith("text/event-stream")
    out = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line and not line.startswith(":"))
        if "event" in fields:
            out.append((fields["event"].strip(), fields.get("data", "").strip()))
    return out


def test_a_model_that_cannot_run_says_why(tmp_path):
    run("demo", "--out", tmp_path / "demo")
    s = Server(tmp_path / "demo").start()
    try:
        info = s.call("GET", "/api/run/info")
        assert info["family"] is None
        assert "config.json" in info["reason"] and "Llama-family" in info["reason"]
        status, body = s.call("POST", "/api/run", run_request(), ok=False)
        assert status == 400 and "config.json" in body
        status, body = s.request("GET", "/api/generate?prompt=hi&tokens=3")
        assert status == 400 and "config.json" in body
    finally:
        s.stop()


@pytest.mark.parametrize(
    "body, message",
    [
        (run_request(top_k=0), "top-k must be 1..=100"),
        (run_request(generate=100_000), "at most 512 tokens"),
        (run_request(prompt=""), "the prompt is empty"),
        (run_request(target=" Paris France"), "name one token"),
        (run_request(target="#999999"), "not a token id below 49152"),
    ],
)
def test_bad_run_requests_are_400_with_a_message(llm, body, message):
    status, payload = llm.call("POST", "/api/run", body, ok=False)
    assert status == 400, payload
    assert message in payload


def test_a_streamed_continuation_equals_the_cli_and_ends_with_done(llm, smollm2):
    got = events(llm, PROMPT, 6)
    tokens = [json.loads(d) for e, d in got if e == "token"]
    assert got[-1][0] == "done"
    assert [t["side"] for t in tokens] == ["base"] * 6  # nothing edited: one side
    assert [t["count"] for t in tokens] == list(range(1, 7))
    want = run("run", smollm2 / "model.safetensors", "--prompt", PROMPT, "--generate", "6", "--json").json()
    assert [t["id"] for t in tokens] == want["base"]["continuation"]["ids"]
    assert "".join(t["token"] for t in tokens) == want["base"]["continuation"]["text"]


def test_probe_files_live_beside_the_patches_and_are_not_patches(llm):
    probes = {"version": 1, "probes": [{"prompt": PROMPT, "target": " Paris", "kind": "expect"}]}
    path = llm.call("POST", "/api/probes/save", {"name": "capital", "probes": probes})
    assert path.endswith("capital.probes.json")
    assert llm.call("GET", "/api/probes") == ["capital.probes.json"]
    assert llm.call("GET", "/api/probes/load?name=capital") == probes
    assert "capital.probes.json" not in llm.call("GET", "/api/saved_patches")
    status, body = llm.call("POST", "/api/probes/save", {"name": "../escape", "probes": probes}, ok=False)
    assert status == 400 and "plain file name" in body
    table = llm.call("POST", "/api/run/probes", {"probes": probes})
    row = table["rows"][0]
    assert row["base_prob"] == pytest.approx(row["edited_prob"]) and row["kl"] == 0
    assert row["base_prob"] > 0.5 and row["base_top"] == " Paris"


def test_an_edit_through_the_web_api_runs_as_the_baked_file_does(llm, smollm2):
    hits = llm.call("GET", "/api/tokens/search?" + urllib.parse.urlencode({"q": " Paris"}))
    paris = hits[0]["id"]
    hits = llm.call("GET", "/api/tokens/search?" + urllib.parse.urlencode({"q": " Rome"}))
    rome = hits[0]["id"]
    llm.call("POST", "/api/region", {"request": {"tensor": EMBED, "spec": "", "region": {"op": "swap_rows", "a": paris, "b": rome}}})
    try:
        out = llm.call("POST", "/api/run", run_request(target=" Paris", generate=4))
        llm.call("POST", "/api/bake", {"file_name": "swapped.safetensors"})
        deadline = time.time() + 120
        while (st := llm.call("GET", "/api/bake_status"))["running"] and time.time() < deadline:
            time.sleep(0.2)
        assert st["error"] is None and st["done"] == st["total"], st
        baked = st["written"][0]
        ref = Llama(smollm2, weights=baked)
        ids = [t["id"] for t in out["prompt_tokens"]]
        probs = softmax(ref.next_token_logits(ids))
        edited = out["edited"]
        want = list(np.argsort(-probs, kind="stable")[:10])
        assert [t["id"] for t in edited["top"]][:3] == want[:3]
        for t in edited["top"]:
            assert t["prob"] == pytest.approx(float(probs[t["id"]]), abs=0.01)
        assert edited["target"]["prob"] == pytest.approx(float(probs[paris]), abs=0.01)
        assert edited["target"]["prob"] < out["base"]["target"]["prob"] / 2
        assert out["base"]["top"][0]["token"] == " Paris"
        assert out["kl"] > 0.1
    finally:
        llm.call("POST", "/api/undo", {})
