"""Causal tracing (`trace`) on a real model, SmolLM2-135M: the answer it traces is the model's
own (checked against the numpy reference forward pass), the trace's exact invariants hold,
restoring the subject's last token early in the stack brings the answer back as ROME reports
for GPT-2, and bad requests are refused with a message. The fast trace is checked cell by cell
against a full rerun per cell in the Rust tests (crates/infer/src/trace.rs)."""

import numpy as np
import pytest

from conftest import run
from reference import Llama, softmax

PROMPT = "The capital of France is"
SUBJECT = "France"


@pytest.fixture(scope="module")
def model_path(smollm2):
    return smollm2 / "model.safetensors"


@pytest.fixture(scope="module")
def residual(model_path):
    return run("trace", model_path, "--prompt", PROMPT, "--subject", SUBJECT, "--samples", "3",
               "--kind", "residual", "--json").json()


def test_the_traced_answer_is_the_models_own(residual, smollm2):
    ref = Llama(smollm2)
    ids = ref.encode(PROMPT)
    assert [t["id"] for t in residual["tokens"]] == ids
    probs = softmax(ref.next_token_logits(ids))
    assert residual["target"]["id"] == int(np.argmax(probs))
    assert residual["target"]["token"] == " Paris"
    assert abs(residual["clean"] - float(probs[residual["target"]["id"]])) < 0.01
    start, end = residual["subject"]
    assert "".join(t["token"] for t in residual["tokens"][start:end]).strip() == SUBJECT
    # Only the kinds asked for are there.
    assert "mlp" not in residual and "attention" not in residual
    assert residual["layers"] == 30 and len(residual["residual"]) == 30
    assert all(len(row) == len(ids) for row in residual["residual"])


def test_the_trace_keeps_its_exact_invariants(residual):
    r, clean, corrupted = residual["residual"], residual["clean"], residual["corrupted"]
    start, _ = residual["subject"]
    last = len(residual["tokens"]) - 1
    assert corrupted < clean / 2, "the noise on the subject hides the answer"
    assert r[-1][last] == clean, "the last token's final state restored is the clean run"
    for row in r:
        assert row[:start] == [corrupted] * start, "no noise reaches the tokens before the subject"
    assert r[-1][:last] == [corrupted] * last, "the last layer's other tokens are not read"


def test_the_subjects_last_token_carries_the_answer_early(residual):
    r, clean, corrupted = residual["residual"], residual["clean"], residual["corrupted"]
    _, end = residual["subject"]
    # ROME (GPT-2 XL): restoring the subject's last token in the early layers recovers most of
    # the answer; so does the last token in the late layers.
    early = max(row[end - 1] for row in r[:10])
    assert early > corrupted + 0.5 * (clean - corrupted), (early, corrupted, clean)
    assert r[-2][-1] > corrupted + 0.5 * (clean - corrupted)


def test_bad_requests_are_refused_with_a_message(model_path):
    r = run("trace", model_path, "--prompt", PROMPT, "--subject", "Germany", check=False)
    assert r.code == 1 and '"Germany" does not occur in the prompt' in r.err
    r = run("trace", model_path, "--prompt", PROMPT, "--subject", SUBJECT, "--samples", "0", check=False)
    assert r.code == 1 and "samples must be 1 to" in r.err
