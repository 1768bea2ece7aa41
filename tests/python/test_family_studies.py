"""The studies on the families beyond plain Llama, on real GGUF files: Qwen2.5-Coder-0.5B (`qwen2`,
q/k/v biases, untied output; Q5_0, Q8_0, Q4_K and Q6_K blocks) runs with llama.cpp's tokens and
next token; Gemma 3 270M and Qwen2.5 trace with their exact invariants and take a ROME fact edit
whose baked file llama.cpp answers with; Gemma 3 takes a directional ablation. The logits, the
trace's clean probability and the baked edit are checked against an independent numpy forward
of each family (reference.GgufDecoder, the file dequantized by the `gguf` package). (The
ablation's algebra on a Qwen2 layer is checked exactly in the Rust tests,
crates/infer/src/family_tests.rs.)"""

import numpy as np
import pytest

from conftest import run
from reference import GgufDecoder, softmax
from test_gguf import llama_cpp

_decoders = {}


def numpy_forward(path) -> GgufDecoder:
    """The numpy decoder of a file (dequantized once per file)."""
    if str(path) not in _decoders:
        _decoders[str(path)] = GgufDecoder(path)
    return _decoders[str(path)]


def assert_logits_agree(path, prompt, top_k=20):
    """Our run of `path` against the numpy forward of the same file: the top-k logits to 0.02
    (float32 sums in other orders; the blocks are dequantized exactly by both), the same
    top-1. Returns the prompt's ids and numpy's next-token distribution."""
    got = run("run", path, "--prompt", prompt, "--top-k", top_k, "--json").json()
    ids = [t["id"] for t in got["prompt_tokens"]]
    want = numpy_forward(path).next_token_logits(ids)
    assert got["base"]["top"][0]["id"] == int(np.argmax(want)), (prompt, got["base"]["top"][:3])
    for t in got["base"]["top"]:
        assert abs(t["logit"] - float(want[t["id"]])) < 0.02, (prompt, t, float(want[t["id"]]))
    return ids, softmax(want)

QWEN_PROMPTS = ["The capital of France is", "def fibonacci(n):\n    ", "import numpy as"]


@pytest.fixture(scope="module")
def qwen():
    import models

    return models.qwen25_gguf()


@pytest.fixture(scope="module")
def gemma():
    import models

    return models.gemma3_gguf()


def test_a_qwen2_gguf_runs_with_llama_cpps_tokens_and_next_token(qwen):
    ref = llama_cpp(qwen, prompts=QWEN_PROMPTS, top_k=5)
    for want in ref["prompts"]:
        got = run("run", qwen, "--prompt", want["text"], "--top-k", 40, "--json").json()
        assert [t["id"] for t in got["prompt_tokens"]] == want["ids"], (want["text"], got["prompt_tokens"])
        assert got["base"]["top"][0]["id"] == want["top"][0]["id"], (want["text"], got["base"]["top"][:3], want["top"][:3])
        mine = {t["id"]: t["prob"] for t in got["base"]["top"]}
        for t in want["top"]:
            assert abs(mine.get(t["id"], 0.0) - t["prob"]) <= 0.1, (want["text"], t, mine.get(t["id"]))


@pytest.mark.parametrize("name", ["gemma", "qwen"])
def test_the_trace_keeps_its_exact_invariants(name, request):
    path = request.getfixturevalue(name)
    t = run("trace", path, "--prompt", "The Eiffel Tower is located in the city of", "--subject", "The Eiffel Tower",
            "--samples", "2", "--kind", "residual", "--json").json()
    r, clean, corrupted = t["residual"], t["clean"], t["corrupted"]
    start, end = t["subject"]
    last = len(t["tokens"]) - 1
    assert corrupted < clean, (clean, corrupted)
    # The clean run is the model's own: numpy's probability of the traced answer.
    _, probs = assert_logits_agree(path, "The Eiffel Tower is located in the city of")
    assert abs(clean - probs[t["target"]["id"]]) < 2e-3, (clean, probs[t["target"]["id"]])
    assert r[-1][last] == clean, "the last token's final state restored is the clean run"
    for row in r:
        assert row[:start] == [corrupted] * start, "no noise reaches the tokens before the subject"
    # The cells open the model's own matrices, named by the trace.
    assert t["mlp_tensors"][3] == "blk.3.ffn_down.weight" and t["attention_tensors"][3] == "blk.3.attn_output.weight"


# Qwen2.5 on a dev build: its keys are 4864 wide (the corpus covariance costs minutes) and its
# vocabulary 151,936 tokens (the optimisation's chunks are many at an early layer), so its
# test divides by the identity at a late layer (the same code as the others otherwise).
# Gemma 3 takes the fact through MEMIT over two layers, each writing its share through the
# norm of its MLP output (the ROME optimisation at the last of them is part of it).
@pytest.mark.parametrize("name,where,covariance", [("gemma", ["--layers", "2-3"], "corpus"),
                                                   ("qwen", ["--layer", "18"], "identity")])
def test_a_fact_edit_bakes_into_a_file_llama_cpp_answers_with(name, where, covariance, request, tmp_path):
    path = request.getfixturevalue(name)
    prompt = "The Eiffel Tower is located in the city of"
    patch, out = tmp_path / "fact.json", tmp_path / "fact.gguf"
    report = run("edit-fact", path, "--subject", "The Eiffel Tower", "--prompt", prompt, "--target", " Rome",
                 *where, "--covariance", covariance, "--out", patch, "--json").json()
    layer = where[1].split("-")[-1]
    assert report["tensor"] == f"blk.{layer}.ffn_down.weight"
    assert report["scores"]["efficacy"] == 100, report["scores"]
    run("apply", path, patch, "--out", out)
    theirs = llama_cpp(out, prompts=[prompt], top_k=3)["prompts"][0]
    assert theirs["top"][0]["token"] == " Rome", theirs
    # The numpy forward of the baked file agrees with our run of it, and says " Rome".
    _, probs = assert_logits_agree(out, prompt)
    assert int(np.argmax(probs)) == report["target"][0]["id"], probs.max()


def test_an_ablation_of_gemma_lowers_the_behaviour_it_measures(gemma, tmp_path):
    """Gemma 3 normalises every block's output again: the direction projected out of o_proj
    and down_proj is g * r (see the ablation's module doc), and the behaviour falls."""
    path = gemma
    (tmp_path / "from.txt").write_text("The capital of France is\nThe Eiffel Tower is located in the city of\n"
                                      "The Louvre museum is in\n")
    (tmp_path / "to.txt").write_text("The capital of Germany is\n\nThe Colosseum is located in the city of\n\n"
                                    "The Prado museum is in\n")
    patch = tmp_path / "ablate.tsp"
    report = run("ablate", path, "--from", tmp_path / "from.txt", "--to", tmp_path / "to.txt", "--layer", 6,
                 "--token", " Paris", "--out", patch, "--json").json()
    assert report["token_prob"]["edited"] < report["token_prob"]["base"] / 2, report["token_prob"]
    assert run("verify", path, patch, "--json").json()["ok"]
