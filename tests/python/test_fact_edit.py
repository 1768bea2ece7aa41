"""Fact editing (`edit-fact`, ROME with r-ROME's averaged key) on a real model, SmolLM2-135M:
the edit makes the model say the new target on the prompt and its paraphrases while its
neighbours keep their answers; the patch holds one small rank-one entry; the baked tensor
equals, byte for byte, the entry applied by the numpy code of docs/patch-format.md; an
independent numpy forward pass of the baked model says the new target; several facts make
one entry of higher rank; bad requests are refused with a message."""

import base64
import json
import struct

import numpy as np
import pytest

from conftest import run
from load import view_request
from reference import Llama, softmax
from server import Server

SUBJECT = "The Eiffel Tower"
PROMPT = "The Eiffel Tower is located in the city of"
TARGET = " Rome"
LAYER = 6
TENSOR = f"model.layers.{LAYER}.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def model_path(smollm2):
    return smollm2 / "model.safetensors"


@pytest.fixture(scope="module")
def edited(model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("fact") / "rome.json"
    report = run("edit-fact", model_path, "--subject", SUBJECT, "--prompt", PROMPT,
                 "--target", TARGET, "--layer", LAYER,
                 "--paraphrase", "Where is the Eiffel Tower? It is in",
                 "--paraphrase", "The Eiffel Tower stands in the city of",
                 "--neighbor", "The Louvre is located in the city of",
                 "--neighbor", "Big Ben is located in the city of",
                 "--out", out, "--json").json()
    return report, out


def tensor_bytes(path, name):
    """(dtype, shape, raw bytes) of one tensor of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        return info["dtype"], info["shape"], f.read(end - start)


def apply_low_rank(w_bytes, dtype, shape, entry):
    """The reference of docs/patch-format.md, as written there."""
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    r = entry["rank"]
    u = np.frombuffer(base64.b64decode(entry["u"]), "<f4").reshape(rows, r)
    v = np.frombuffer(base64.b64decode(entry["v"]), "<f4").reshape(cols, r)
    if dtype == "BF16":
        w = (np.frombuffer(w_bytes, "<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        w = np.frombuffer(w_bytes, {"F16": "<f2", "F32": "<f4"}[dtype]).astype(np.float32)
    acc = w.reshape(rows, cols).copy()
    for k in range(r):
        acc = acc + np.outer(u[:, k], v[:, k]).astype(np.float32)
    if dtype == "BF16":
        b = acc.view(np.uint32)
        return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype("<u2").tobytes()
    return acc.astype({"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()


def test_the_edit_rewrites_the_fact_and_keeps_the_neighbours(edited):
    report, _ = edited
    assert report["old"]["token"] == " Paris"
    assert [t["token"] for t in report["target"]] == [TARGET]
    assert report["layer"] == LAYER and report["tensor"] == TENSOR and report["rank"] == 1
    scores = report["scores"]
    assert scores["efficacy"] == 100
    assert scores["paraphrase"] >= 50
    assert scores["neighborhood"] == 100
    assert scores["unrelated_kl"] < 0.05, "prompts about other things hardly move"
    prompt = next(p for p in report["probes"] if p["group"] == "prompt")
    assert prompt["base_new"] < prompt["base_old"] and prompt["edited_new"] > prompt["edited_old"]
    for p in report["probes"]:
        if p["group"] == "neighbor":
            assert p["old"]["token"] != TARGET and p["edited_old"] > p["edited_new"]
    assert report["generation"]["edited"].startswith(TARGET)
    assert report["generation"]["base"].startswith(" Paris")
    steps = report["steps"]
    assert steps[-1]["p_target"] > 0.9 > steps[0]["p_target"]


def test_the_patch_is_one_small_entry_that_bakes_as_the_reference_says(edited, model_path, tmp_path):
    report, patch_path = edited
    patch = json.loads(patch_path.read_text())
    assert patch["version"] == 2
    [entry] = patch["entries"]
    assert entry["kind"] == "low_rank" and entry["tensor"] == TENSOR and entry["rank"] == 1
    dtype, shape, base = tensor_bytes(model_path, TENSOR)
    assert dtype == "BF16" and shape == [576, 1536]
    assert patch_path.stat().st_size < 20_000, "factors, not megabytes of hex"
    assert report["changed_bytes"] > 1_000_000, "the same edit as bytes changes most of the matrix"
    run("verify", model_path, patch_path)
    baked = tmp_path / "baked.safetensors"
    run("apply", model_path, patch_path, "--out", baked)
    assert tensor_bytes(baked, TENSOR)[2] == apply_low_rank(base, dtype, shape, entry)
    # Inverted against the base, it is a byte patch that takes the baked file back.
    inverse = tmp_path / "inverse.tsp"
    run("invert", patch_path, "--model", model_path, "--out", inverse)
    back = tmp_path / "back.safetensors"
    run("apply", baked, inverse, "--out", back)
    assert tensor_bytes(back, TENSOR)[2] == base
    other = "model.layers.7.mlp.down_proj.weight"
    assert tensor_bytes(baked, other) == tensor_bytes(model_path, other)
    # An independent forward pass of the baked model says the new target.
    ref = Llama(model_path.parent, weights=baked)
    probs = softmax(ref.next_token_logits(ref.encode(PROMPT)))
    rome = ref.encode(TARGET)[-1]
    assert int(np.argmax(probs)) == rome and probs[rome] > 0.5
    # The forward pass reads the patch as it is.
    top = run("run", model_path, "--patch", patch_path, "--prompt", PROMPT, "--top-k", "1", "--json").json()
    assert top["edited"]["top"][0]["token"] == TARGET


def test_a_changed_base_is_refused(edited, model_path, tmp_path):
    _, patch_path = edited
    patch = json.loads(patch_path.read_text())
    patch["entries"][0]["base_sha256"] = "0" * 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(patch))
    out = run("verify", model_path, bad, check=False)
    assert out.code != 0 and "low-rank entry was made for" in out.out + out.err


def test_several_facts_make_one_entry_of_their_rank(model_path, tmp_path):
    facts = [
        {"subject": SUBJECT, "prompt": PROMPT, "target": TARGET},
        {"subject": "Germany", "prompt": "The capital of Germany is", "target": " Madrid"},
    ]
    requests = tmp_path / "facts.json"
    requests.write_text(json.dumps(facts))
    out = tmp_path / "two.json"
    reports = run("edit-fact", model_path, "--requests", requests, "--layer", LAYER,
                  "--steps", "12", "--out", out, "--json").json()
    assert [r["scores"]["efficacy"] for r in reports] == [100, 100]
    [entry] = json.loads(out.read_text())["entries"]
    assert entry["rank"] == 2
    for fact in facts:
        top = run("run", model_path, "--patch", out, "--prompt", fact["prompt"], "--top-k", "1",
                  "--json").json()
        assert top["edited"]["top"][0]["token"] == fact["target"]
        assert top["base"]["top"][0]["token"] != fact["target"]


@pytest.mark.parametrize("args, message", [
    (["--subject", "Notre Dame", "--prompt", PROMPT, "--target", TARGET], "does not occur in the prompt"),
    (["--subject", SUBJECT, "--prompt", PROMPT, "--target", TARGET, "--layer", "30"], "beyond the model"),
])
def test_bad_requests_are_refused(model_path, tmp_path, args, message):
    out = run("edit-fact", model_path, *args, "--out", tmp_path / "x.json", check=False)
    assert out.code != 0 and message in out.err
    assert not (tmp_path / "x.json").exists()


def test_memit_spreads_several_facts_over_a_range_of_layers(model_path, tmp_path):
    facts = [
        {"subject": SUBJECT, "prompt": PROMPT, "target": TARGET,
         "neighbors": ["The Louvre is located in the city of"]},
        {"subject": "Germany", "prompt": "The capital of Germany is", "target": " Madrid"},
    ]
    requests = tmp_path / "facts.json"
    requests.write_text(json.dumps(facts))
    out = tmp_path / "memit.json"
    reports = run("edit-fact", model_path, "--requests", requests, "--layers", "4-8",
                  "--steps", "12", "--out", out, "--json").json()
    assert [r["scores"]["efficacy"] for r in reports] == [100, 100]
    assert reports[0]["scores"]["neighborhood"] == 100, "the Louvre stays in Paris"
    assert all(r["layers"] == [4, 5, 6, 7, 8] and r["layer"] == 8 and r["rank"] == 2
               for r in reports)
    # One entry per layer of the range, of rank the number of facts.
    entries = json.loads(out.read_text())["entries"]
    assert [(e["tensor"], e["kind"], e["rank"]) for e in entries] == [
        (f"model.layers.{l}.mlp.down_proj.weight", "low_rank", 2) for l in range(4, 9)]
    assert out.stat().st_size * 50 < reports[0]["changed_bytes"], "factors, not megabytes"
    # Each layer takes a share: no layer's update is nothing.
    for e in entries:
        u = np.frombuffer(base64.b64decode(e["u"]), "<f4")
        assert np.abs(u).max() > 0
    run("verify", model_path, out)
    baked = tmp_path / "baked.safetensors"
    run("apply", model_path, out, "--out", baked)
    for e in entries:
        dtype, shape, base = tensor_bytes(model_path, e["tensor"])
        assert tensor_bytes(baked, e["tensor"])[2] == apply_low_rank(base, dtype, shape, e)
    # An independent forward pass of the baked model says both new targets.
    ref = Llama(model_path.parent, weights=baked)
    for fact in facts:
        probs = softmax(ref.next_token_logits(ref.encode(fact["prompt"])))
        assert int(np.argmax(probs)) == ref.encode(fact["target"])[-1], fact


def test_an_accepted_fact_edit_is_one_low_rank_entry_kept_as_its_factors(smollm2, tmp_path):
    """In the web session: the accepted proposal is one row with its rank (its million changed
    elements counted, not listed), the journal keeps the factors, and a restart replays them
    to the same weights."""
    patches = tmp_path / "patches"
    args = ("--patches", str(patches), "--out-dir", str(tmp_path / "out"))
    run_body = {"request": {"prompt": PROMPT, "top_k": 1, "target": None, "generate": 0}}
    s = Server(smollm2, *args).start()
    try:
        fact = {"request": {"subject": SUBJECT, "prompt": PROMPT, "target": TARGET}, "layer": LAYER}
        # The strength knobs are checked before any work.
        for knob, value in [("clamp", 0), ("kl_weight", -1)]:
            status, why = s.call("POST", "/api/fact", {**fact, knob: value}, ok=False)
            assert status == 400 and ("clamp" in why or "KL weight" in why), (knob, status, why)
        proposal = s.call("POST", "/api/fact", fact, timeout=300)
        assert proposal["report"]["scores"]["efficacy"] == 100
        pid = proposal["proposal"]["id"]

        def window(mode, preview=None, ok=True):
            body = view_request(TENSOR, 100, 200, 8)
            body["request"]["mode"] = mode
            if preview is not None:
                body["request"]["proposal"] = preview
            return s.call("POST", "/api/view_json", body, ok=ok)

        # The pending proposal's delta view: after is the session with it, before the session.
        base = window("After")["bytes"]
        assert window("Before", pid)["bytes"] == base
        preview = window("After", pid)["bytes"]
        delta = window("Delta", pid)["pooled"]
        bf16 = lambda b: (np.frombuffer(bytes(b), "<u2").astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(np.float32(delta), bf16(preview) - bf16(base))
        assert np.count_nonzero(delta) > 32, "a rank-one update moves most elements"
        s.call("POST", "/api/resolve", {"id": pid, "accept": True})
        assert window("After")["bytes"] == preview, "accepting gives what the preview showed"
        status, why = window("Delta", pid, ok=False)
        assert status == 404 and "not pending" in why
        view = s.call("GET", "/api/session")
        [row] = view["low_rank"]
        assert row["tensor"] == TENSOR and row["rank"] == 1 and row["origin"].startswith("web")
        assert row["elements"] > 500_000 and view["total_elements"] >= row["elements"]
        assert not any(e["tensor"] == TENSOR for e in view["entries"]), "counted, not listed"
        edited = s.call("POST", "/api/run", run_body)
        assert edited["edited"]["top"][0]["token"] == TARGET
        [journal] = [p for p in patches.iterdir() if "journal" in p.name]
        assert journal.stat().st_size < 40_000, "the factors (12 KB as base64), not 1.7 MB of changes"
    finally:
        s.kill9()
    s = Server(smollm2, *args).start()
    try:
        again = s.call("GET", "/api/session")
        assert again["low_rank"] == view["low_rank"] and again["total_elements"] == view["total_elements"]
        assert s.call("POST", "/api/run", run_body) == edited, "replayed to the same weights"
    finally:
        s.stop()
