"""In-process inference of the product (`run`, `probe`, `activations`) against the numpy
reference forward pass (reference.py) on real models: SmolLM2-135M-Instruct (Llama) and
all-MiniLM-L6-v2 (BERT), prepared by models.py.

The product and the reference read the same BF16 weights and both compute in float32, so they
differ only by summation order: probabilities agree to well within 0.01, and rankings agree
except between tokens whose logits are (nearly) tied. Such ties are allowed to swap; nothing
else is."""

import json
import math

import numpy as np
import pytest

from conftest import run
from reference import Bert, Llama, cosine, softmax

# Logits closer than this in the reference count as a tie: the product may order them either
# way (float32 summation order differs between implementations).
TIE = 1e-2
PROB_TOL = 0.01

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "Once upon a time, there was a little",
    "The chemical symbol for gold is",
    "1, 2, 3, 4, 5,",
]


class Reference:
    """The reference Llama with next-token logits memoised by token sequence: a forward pass
    of 135M parameters takes about half a second, and tests ask for the same ones again."""

    def __init__(self, model: Llama):
        self.model = model
        self.tokenizer = model.tokenizer
        self.memo = {}

    def prefetch(self, seq) -> None:
        """The next-token logits after every prefix of `seq`, from one causal forward pass
        (position t sees tokens 0..t only): a whole greedy continuation checked at once."""
        seq = [int(i) for i in seq]
        if tuple(seq) in self.memo:
            return
        logits = self.model.logits(seq)
        for t in range(len(seq)):
            self.memo.setdefault(tuple(seq[: t + 1]), logits[t])

    def next_logits(self, ids) -> np.ndarray:
        key = tuple(int(i) for i in ids)
        if key not in self.memo:
            self.memo[key] = self.model.next_token_logits(list(key))
        return self.memo[key]

    def probs(self, ids) -> np.ndarray:
        return softmax(self.next_logits(ids))

    def encode(self, text) -> list[int]:
        return self.tokenizer.encode(text).ids

    def token_id(self, text) -> int:
        ids = self.encode(text)
        assert len(ids) == 1, f"{text!r} is not one token: {ids}"
        return ids[0]


@pytest.fixture(scope="module")
def model_path(smollm2):
    return smollm2 / "model.safetensors"


@pytest.fixture(scope="module")
def base(smollm2):
    return Reference(Llama(smollm2))


@pytest.fixture(scope="module")
def swap(smollm2, model_path, base, tmp_path_factory):
    """A patch made with the CLI that swaps the embedding rows of " Paris" and " London" (tied:
    their input and output embeddings), the model baked from it, and the reference on the
    baked file."""
    tmp = tmp_path_factory.mktemp("swap")
    paris, london = base.token_id(" Paris"), base.token_id(" London")
    patch, baked = tmp / "swap.json", tmp / "model.safetensors"
    run("edit", model_path, "--patch", patch, "--format", "json", "--swap-rows", f"model.embed_tokens.weight={paris},{london}")
    run("apply", model_path, patch, "--out", baked)
    return patch, baked, Reference(Llama(smollm2, weights=baked))


def run_json(ts, *args) -> dict:
    return ts(*args, "--json").json()


# --- comparisons ---------------------------------------------------------------------------


def assert_same_ranking(got_ids, ref_logits, label="", tie=TIE):
    """`got_ids` is the reference's top-k in order, up to swaps of entries whose reference
    scores differ by less than `tie`."""
    want = [int(i) for i in np.argsort(-ref_logits, kind="stable")[: len(got_ids)]]
    for rank, (g, w) in enumerate(zip(got_ids, want)):
        if g != w:
            gap = float(ref_logits[w] - ref_logits[g])
            assert gap < tie, f"{label} rank {rank}: got {g}, the reference's is {w} (gap {gap:.4g}); got {got_ids}, want {want}"


def assert_top_matches(top, ref: Reference, ids, k, label=""):
    """A `top` list of the product ({id, token, prob, logit}) against the reference."""
    assert len(top) == k, label
    logits = ref.next_logits(ids)
    probs = softmax(logits)
    assert_same_ranking([t["id"] for t in top], logits, label)
    for t in top:
        assert abs(t["prob"] - probs[t["id"]]) < PROB_TOL, f"{label} token {t['id']}: prob {t['prob']}, reference {probs[t['id']]}"
        assert abs(t["logit"] - logits[t["id"]]) < 5 * TIE, f"{label} token {t['id']}: logit {t['logit']}, reference {logits[t['id']]}"
        assert t["token"] == ref.tokenizer.decode([t["id"]]), label


def assert_same_greedy(got, ref: Reference, ids, n, label=""):
    """Each token of the product's greedy continuation is the reference's argmax after the
    same prefix. At a tie the two may go different ways, and the rest is not compared."""
    assert len(got) == n, label
    seq = list(ids)
    for step, g in enumerate(got):
        logits = ref.next_logits(seq)
        want = int(np.argmax(logits))
        if g != want:
            gap = float(logits[want] - logits[g])
            assert gap < TIE, f"{label} step {step}: got token {g}, the reference's is {want} (logit gap {gap:.4f})"
            return
        seq.append(g)


def check_side(side, ref: Reference, ids, k, n, label):
    """One side ("base" or "edited") of `run`'s answer for a Llama model."""
    ref.prefetch(list(ids) + list(side["continuation"]["ids"][:-1]))
    assert_top_matches(side["top"], ref, ids, k, label)
    cont = side["continuation"]
    assert_same_greedy(cont["ids"], ref, ids, n, label)
    assert cont["text"] == ref.tokenizer.decode(cont["ids"]), label


# --- run: Llama ----------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_run_matches_the_reference(ts, model_path, base, prompt):
    out = run_json(ts, "run", model_path, "--prompt", prompt, "--top-k", 10, "--generate", 8)
    assert out["family"] == "llama"
    ids = base.encode(prompt)  # the tokenizer adds no BOS; neither may the product
    assert [t["id"] for t in out["prompt_tokens"]] == ids
    assert all(isinstance(t["token"], str) for t in out["prompt_tokens"])
    assert out["edited"] is None
    check_side(out["base"], base, ids, 10, 8, f"{prompt!r} base:")


def test_run_target_by_text_and_by_id(ts, model_path, base):
    prompt = "The capital of France is"
    ids = base.encode(prompt)
    probs = base.probs(ids)
    for target, want_id in [(" Paris", base.token_id(" Paris")), (f"#{base.token_id(' London')}", base.token_id(" London"))]:
        out = run_json(ts, "run", model_path, "--prompt", prompt, "--top-k", 5, "--generate", 1, "--target", target)
        got = out["base"]["target"]
        assert got["id"] == want_id, target
        assert got["token"] == base.tokenizer.decode([want_id])
        p = float(probs[want_id])
        assert abs(got["prob"] - p) < PROB_TOL, (target, got, p)
        assert abs(got["log_odds"] - math.log(p / (1 - p))) < 0.05, (target, got, p)
    assert base.tokenizer.decode([int(np.argmax(probs))]) == " Paris"


@pytest.mark.parametrize("prompt", ["The capital of France is", "The largest city in England is"])
def test_run_with_a_patch_matches_the_reference_on_the_baked_model(ts, model_path, base, swap, prompt):
    patch, _baked, edited = swap
    ids = base.encode(prompt)
    out = run_json(ts, "run", model_path, "--prompt", prompt, "--top-k", 10, "--generate", 8, "--patch", patch, "--target", " Paris")
    assert [t["id"] for t in out["prompt_tokens"]] == ids
    check_side(out["base"], base, ids, 10, 8, f"{prompt!r} base:")
    check_side(out["edited"], edited, ids, 10, 8, f"{prompt!r} edited:")
    paris = base.token_id(" Paris")
    for side, ref in [("base", base), ("edited", edited)]:
        assert out[side]["target"]["id"] == paris
        assert abs(out[side]["target"]["prob"] - ref.probs(ids)[paris]) < PROB_TOL, side


def test_the_swap_patch_swaps_paris_and_london(base, swap):
    """The baked model is what the patch says: with tied embeddings and neither token in the
    prompt, the two tokens' next-token probabilities trade places."""
    _patch, _baked, edited = swap
    ids = base.encode("The capital of France is")
    paris, london = base.token_id(" Paris"), base.token_id(" London")
    before, after = base.probs(ids), edited.probs(ids)
    assert after[paris] == pytest.approx(before[london], abs=1e-6)
    assert after[london] == pytest.approx(before[paris], abs=1e-6)


# --- run: BERT -----------------------------------------------------------------------------


def test_run_sentence_embeddings_match_the_reference(ts, minilm):
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    args = [a for s in sentences for a in ("--sentence", s)]
    out = run_json(ts, "run", minilm / "model.safetensors", *args)
    assert out["family"] == "bert"
    assert out["edited"] is None
    got = np.array(out["base"]["embeddings"], dtype=np.float64)
    want = Bert(minilm).embed(sentences)
    assert got.shape == want.shape == (3, 384)
    for i in range(3):
        assert cosine(got[i], want[i]) > 0.9999, (i, cosine(got[i], want[i]))
    np.testing.assert_allclose(np.array(out["base"]["similarity"]), want @ want.T, atol=1e-3)


# --- probe ---------------------------------------------------------------------------------

PROBES = [
    {"prompt": "The capital of France is", "target": " Paris", "kind": "expect"},
    {"prompt": "The capital of France is", "target": " London", "kind": "avoid"},
    {"prompt": "Once upon a time, there was a little", "target": " girl", "kind": "unrelated"},
]


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    path = tmp_path_factory.mktemp("probes") / "probes.json"
    path.write_text(json.dumps({"version": 1, "probes": PROBES}))
    return path


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats."""
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def test_probe_without_a_patch_has_edited_equal_to_base(ts, model_path, base, probes):
    rows = run_json(ts, "probe", model_path, "--probes", probes)["rows"]
    assert [(r["prompt"], r["target"], r["kind"]) for r in rows] == [(p["prompt"], p["target"], p["kind"]) for p in PROBES]
    for row, probe in zip(rows, PROBES):
        want = base.probs(base.encode(probe["prompt"]))[base.token_id(probe["target"])]
        assert abs(row["base_prob"] - want) < PROB_TOL, row
        assert abs(row["edited_prob"] - row["base_prob"]) < 1e-6, row
        assert abs(row["kl"]) < 1e-6, row
        assert row["edited_top"] == row["base_top"], row


def test_probe_with_the_swap_patch_matches_the_reference(ts, model_path, base, swap, probes):
    patch, _baked, edited = swap
    rows = run_json(ts, "probe", model_path, "--probes", probes, "--patch", patch)["rows"]
    assert len(rows) == len(PROBES)
    for row, probe in zip(rows, PROBES):
        ids, target = base.encode(probe["prompt"]), base.token_id(probe["target"])
        p, q = base.probs(ids), edited.probs(ids)
        # None of the prompts holds " Paris" or " London", so KL is the same in both directions
        # here: the swap only trades two output probabilities.
        assert abs(row["base_prob"] - p[target]) < PROB_TOL, row
        assert abs(row["edited_prob"] - q[target]) < PROB_TOL, row
        assert abs(row["kl"] - kl(p, q)) < PROB_TOL, (row, kl(p, q))
    france = rows[0]
    assert france["edited_prob"] < france["base_prob"] / 10, france
    assert rows[2]["kl"] < 0.01, "an unrelated prompt barely moves"


# --- activations ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [0, 17])
def test_activations_match_the_reference(ts, model_path, base, layer):
    prompt = "The capital of France is"
    ids = base.encode(prompt)
    out = run_json(ts, "activations", model_path, "--prompt", prompt, "--layer", layer)
    assert out["layer"] == layer
    assert len(out["tokens"]) == len(ids)

    want = base.model.mlp_activations(ids, layer)
    mlp = out["mlp"]
    assert (mlp["rows"], mlp["cols"]) == want.shape == (len(ids), 1536)
    got = np.array(mlp["values"], dtype=np.float32).reshape(mlp["rows"], mlp["cols"])
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) / scale < 1e-2

    # Neurons by |value| at the last token; near-equal magnitudes may swap.
    last = np.abs(want[-1])
    got_neurons = [n["neuron"] for n in out["top_neurons"][:5]]
    assert_same_ranking(got_neurons, last, f"layer {layer} top neurons:", tie=1e-2 * scale)
    for n in out["top_neurons"][:5]:
        assert abs(n["value"] - want[-1, n["neuron"]]) < 1e-2 * scale, n

    lens = base.model.logit_lens(ids)
    assert [e["layer"] for e in out["logit_lens"]] == list(range(len(lens)))
    for entry, probs in zip(out["logit_lens"], lens):
        top = entry["top"]
        got_id, want_id = top[0]["id"], int(np.argmax(probs))
        if got_id != want_id:  # a tie in probability, within float32 noise
            assert probs[want_id] - probs[got_id] < 1e-3, (entry["layer"], top[0], want_id)
        assert abs(top[0]["prob"] - probs[got_id]) < PROB_TOL, (entry["layer"], top[0])
        assert top[0]["token"] == base.tokenizer.decode([got_id])
