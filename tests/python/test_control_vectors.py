"""Control vectors on SmolLM2-135M: read from paired prompts, written as llama.cpp's GGUF
(`general.architecture = controlvector`, `direction.N` for N >= 1, as gguf-py reads it), and
added to the output of layer N exactly where llama.cpp adds it: an independent numpy forward
pass that adds the vector after block N gives our run's distribution, and one that adds it a
layer early or late does not. The run, the probe table and the trace all see it."""

import json

import numpy as np
import pytest

from conftest import run
from reference import Llama, softmax

gguf = pytest.importorskip("gguf")

POSITIVE = ["I love this, it is wonderful and makes me so happy", "What a beautiful, joyful day",
            "The party was fantastic and everyone smiled", "This gift is delightful, thank you"]
NEGATIVE = ["I hate this, it is awful and makes me so sad", "What a miserable, gloomy day",
            "The party was terrible and everyone cried", "This gift is disappointing, no thanks"]
PROMPT = "Today I feel"
LAYER, STRENGTH = 12, 6.0


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cv")
    (d / "pos.txt").write_text("\n".join(POSITIVE) + "\n")
    (d / "neg.txt").write_text("\n".join(NEGATIVE) + "\n")
    return d


def read_vectors(path) -> dict[int, np.ndarray]:
    reader = gguf.GGUFReader(path)
    fields = {f.name: f for f in reader.fields.values()}
    arch = fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    count = fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == 30
    out = {}
    for t in reader.tensors:
        assert t.name.startswith("direction.") and t.tensor_type == gguf.GGMLQuantizationType.F32
        out[int(t.name.split(".")[1])] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    return out


def test_a_control_vector_is_added_to_the_output_of_its_layer(smollm2, prompts, tmp_path):
    model = smollm2 / "model.safetensors"
    cv = tmp_path / "mean.gguf"
    report = run("control-vector", model, "--positive", prompts / "pos.txt", "--negative", prompts / "neg.txt",
                 "--method", "mean", "--layers", LAYER, "--out", cv, "--json").json()
    assert report["files"] == [str(cv)] and [l["layer"] for l in report["layers"]] == [LAYER]
    vectors = read_vectors(cv)
    assert list(vectors) == [LAYER] and vectors[LAYER].shape == (576,)
    ref = Llama(smollm2)
    # The mean difference of the last hidden states after layer LAYER, as numpy reads it.
    def last_state(text):
        states = {}
        ref.forward(ref.encode(text), until_layer=LAYER, on_layer=lambda i, x, _: states.__setitem__(i, x[-1].copy()))
        return states[LAYER]
    want = np.mean([last_state(p) - last_state(n) for p, n in zip(POSITIVE, NEGATIVE)], axis=0)
    assert np.allclose(vectors[LAYER], want, atol=2e-3 * np.abs(want).max()), np.abs(vectors[LAYER] - want).max()
    ours = run("run", model, "--prompt", PROMPT, "--control-vector", f"{cv}:{STRENGTH}", "--top-k", 5,
               "--json").json()
    ids = [t["id"] for t in ours["prompt_tokens"]]

    def steered(at):
        def hook(i, x, _):
            if i == at:
                x += STRENGTH * vectors[LAYER]
        return softmax(ref.unembed_rows(ref.forward(ids, on_layer=hook)[-1:])[0])

    right, early, late = steered(LAYER), steered(LAYER - 1), steered(LAYER + 1)
    mine = {t["id"]: t["prob"] for t in ours["edited"]["top"]}
    for i, p in mine.items():
        assert abs(right[i] - p) < 5e-3, (i, right[i], p)
    # Off by one layer either way is measurably another distribution.
    for other in (early, late):
        assert max(abs(other[i] - p) for i, p in mine.items()) > 0.02
    # The vector moved the answer (the base column is the model as it is).
    assert ours["kl"] > 0.01


def test_pca_vectors_are_unit_length_for_every_layer_and_every_pass_sees_them(smollm2, prompts, tmp_path):
    model = smollm2 / "model.safetensors"
    cv = tmp_path / "pca.gguf"
    report = run("control-vector", model, "--positive", prompts / "pos.txt", "--negative", prompts / "neg.txt",
                 "--out", cv, "--json").json()
    assert report["method"] == "pca" and report["pairs"] == 4
    # Layer 0 never has one in llama.cpp's files.
    assert [l["layer"] for l in report["layers"]] == list(range(1, 30))
    vectors = read_vectors(cv)
    assert sorted(vectors) == list(range(1, 30))
    for v in vectors.values():
        assert abs(np.linalg.norm(v) - 1) < 1e-4
    # Strength 0 changes nothing; the file loaded twice at half strength is the file once.
    zero = run("run", model, "--prompt", PROMPT, "--control-vector", f"{cv}:0", "--json").json()
    assert zero["kl"] < 1e-9
    once = run("run", model, "--prompt", PROMPT, "--control-vector", f"{cv}:40", "--json").json()
    twice = run("run", model, "--prompt", PROMPT, "--control-vector", f"{cv}:20", "--control-vector",
                f"{cv}:20", "--json").json()
    assert abs(once["kl"] - twice["kl"]) < 1e-4 and once["kl"] > 0.01
    # The probe table and the trace see it too.
    probes = tmp_path / "probes.json"
    probes.write_text(json.dumps({"version": 1, "probes": [{"prompt": PROMPT, "target": " happy", "kind": "expect"}]}))
    rows = run("probe", model, "--probes", probes, "--control-vector", f"{cv}:40", "--json").json()["rows"]
    assert rows[0]["kl"] == pytest.approx(once["kl"], abs=1e-4)
    trace = run("trace", model, "--prompt", "The Eiffel Tower is in", "--subject", "The Eiffel Tower",
                "--target", " Paris", "--kind", "residual", "--samples", 1, "--json").json()
    steered = run("trace", model, "--prompt", "The Eiffel Tower is in", "--subject", "The Eiffel Tower",
                  "--target", " Paris", "--kind", "residual", "--samples", 1, "--control-vector", f"{cv}:40",
                  "--json").json()
    assert steered["clean"] != trace["clean"]
    # A control vector is not a patch: it is refused where one is baked, with why.
    r = run("apply", model, cv, "--out", tmp_path / "x.safetensors", check=False)
    assert r.code != 0 and "control vector" in r.err and "--control-vector" in r.err, r.err
    # One for another model is refused by its width.
    r = run("run", smollm2.parent / "all-minilm-l6-v2" / "model.safetensors", "--sentence", "x",
            "--control-vector", cv, check=False)
    assert r.code != 0
