"""t-SNE and UMAP layouts: quality against the references (openTSNE, umap-learn) on the same
input, planted clusters kept apart, the same seed giving the same layout, clear errors, and row
sets (a selection in a layout) edited over HTTP as one step."""

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from conftest import run
from layouts import knn_accuracy, opentsne, pca50, planted, trustworthiness, umap_learn
from server import Server

# MiniLM's word embedding: the first rows (every row is in the benchmark, benches/layout_bench.py).
MINILM_ROWS = 4000
MINILM_EMBEDDING = "embeddings.word_embeddings.weight"


def layout(path, tensor, method, *extra):
    got = run("project", path, tensor, "--method", method, "--json", *extra).json()
    return np.array(got["points"], dtype=np.float64), got


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    x, labels = planted()
    path = tmp_path_factory.mktemp("planted") / "planted.safetensors"
    save_file({"x": x}, str(path))
    return path, x, labels


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_planted_clusters_stay_apart_and_the_layout_is_trustworthy(clusters, method):
    path, x, labels = clusters
    y, got = layout(path, "x", method)
    assert got["method"] == method and got["n"] == len(x) and y.shape == (len(x), 2)
    assert got["iterations"] == (750 if method == "tsne" else 500)
    assert np.isfinite(got["loss"])
    assert knn_accuracy(y, labels) > 0.95
    reference = opentsne(pca50(x)) if method == "tsne" else umap_learn(pca50(x))
    ours, theirs = trustworthiness(x, y, sample=None), trustworthiness(x, reference, sample=None)
    assert ours >= theirs - 0.02, (ours, theirs)


@pytest.fixture(scope="module")
def minilm_rows(minilm, tmp_path_factory):
    with safe_open(str(minilm / "model.safetensors"), "np") as f:
        x = f.get_tensor(MINILM_EMBEDDING)[:MINILM_ROWS].copy()
    path = tmp_path_factory.mktemp("minilm") / "rows.safetensors"
    save_file({"embedding": x}, str(path))
    return path, x


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_minilm_embedding_is_as_trustworthy_as_the_reference(minilm_rows, method):
    path, x = minilm_rows
    y, got = layout(path, "embedding", method)
    assert got["n"] == MINILM_ROWS
    reference = opentsne(pca50(x)) if method == "tsne" else umap_learn(pca50(x))
    ours, theirs = trustworthiness(x, y), trustworthiness(x, reference)
    assert ours >= theirs - 0.02, (ours, theirs)


def test_trustworthiness_is_scikit_learns():
    from sklearn.manifold import trustworthiness as sk

    x, _ = planted(clusters=4, per=100, dims=16)
    y = pca50(x, dims=2)
    assert abs(trustworthiness(x, y, sample=None) - sk(x, y, n_neighbors=10)) < 1e-9


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_the_same_seed_gives_the_same_layout(clusters, method):
    path, _, _ = clusters
    a, _ = layout(path, "x", method, "--seed", 7, "--iterations", 120, "--dims", 3)
    b, _ = layout(path, "x", method, "--seed", 7, "--iterations", 120, "--dims", 3)
    assert a.shape[1] == 3
    assert np.array_equal(a, b)


def test_umap_seeds_differ_and_a_start_can_be_chosen(clusters):
    path, x, labels = clusters
    a, _ = layout(path, "x", "umap", "--seed", 1, "--iterations", 100)
    b, _ = layout(path, "x", "umap", "--seed", 2, "--iterations", 100)
    assert not np.array_equal(a, b)
    for init in ["pca", "random", "spectral"]:
        y, _ = layout(path, "x", "umap", "--init", init, "--iterations", 200)
        assert knn_accuracy(y, labels) > 0.95, init


def test_bad_layout_parameters_are_clear_errors(tmp_path):
    path = tmp_path / "small.safetensors"
    save_file({"m": np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32), "v": np.zeros(5, np.float32)}, str(path))
    cases = [
        (["m", "--method", "tsne"], "perplexity 30 needs more than 90 points"),
        (["m", "--method", "tsne", "--perplexity", "0"], "perplexity must be 1 to 500"),
        (["m", "--method", "umap", "--min-dist", "2"], "min_dist must be between 0 and 1"),
        (["m", "--method", "umap", "--neighbors", "50"], "UMAP needs 2 to 200 neighbours, at most the 20 points"),
        (["m", "--method", "tsne", "--init", "spectral", "--perplexity", "3"], "t-SNE starts from PCA or at random"),
        (["m", "--method", "umap", "--iterations", "0"], "iterations must be 1 to"),
        (["v", "--method", "umap"], "1-D"),
    ]
    for args, message in cases:
        r = run("project", path, *args, check=False)
        assert r.code != 0 and message in r.err, (args, r.err)


def test_a_row_set_is_edited_as_one_step_over_http(clusters, tmp_path):
    path, x, _ = clusters
    s = Server(path).start()
    try:
        request = {
            "tensor": "x", "spec": {"y_dim": 0, "x_dim": 1, "index": [0, 0], "y": {"start": 0, "stop": len(x), "step": 1},
                                    "x": {"start": 0, "stop": x.shape[1], "step": 1}},
            "columns": False, "dims": 2, "normalize": False, "method": "umap", "params": {"iterations": 50, "seed": 3}}
        got = s.call("POST", "/api/project_json", {"request": request})
        assert got["method"] == "umap" and got["n"] == len(x) and len(got["points"]) == 2 * len(x)
        rows = [3, 4, 5, 17, 400, 1999]
        s.call("POST", "/api/row_set", {"request": {"tensor": "x", "lines": rows, "action": {"op": "zero"}}})
        session = s.call("GET", "/api/session")
        assert len(session["steps"]) == 1 and "zero 6 rows of x" in session["steps"][0], session["steps"]
        patch = json.loads(s.request("GET", "/api/patch/download")[1])
        row_bytes = x.shape[1] * 4
        touched = sorted({(e["offset"] + k) // row_bytes for e in patch["entries"] for k in range(0, len(e["patched"]) // 2, 4)})
        assert touched == rows
        status, body = s.call("POST", "/api/row_set", {"request": {"tensor": "x", "lines": [2000], "action": {"op": "zero"}}}, ok=False)
        assert status == 400 and "row 2000 is outside x (2000 rows)" in body
        s.call("POST", "/api/undo", {})
        assert s.call("GET", "/api/session")["can_undo"] is False

        def rows_after(action, lines):
            s.call("POST", "/api/row_set", {"request": {"tensor": "x", "lines": lines, "action": action}})
            got = json.loads(s.request("GET", "/api/patch/download")[1])
            s.call("POST", "/api/undo", {})
            return got

        # Scale: exactly the factor, on those rows only.
        scaled = rows_after({"op": "scale", "factor": 2.0}, [7, 9])
        after = x.copy()
        for e in scaled["entries"]:
            raw = bytearray(after.tobytes())
            raw[e["offset"] : e["offset"] + len(e["patched"]) // 2] = bytes.fromhex(e["patched"])
            after = np.frombuffer(bytes(raw), dtype=np.float32).reshape(x.shape)
        np.testing.assert_array_equal(after[[7, 9]], x[[7, 9]] * 2)
        np.testing.assert_array_equal(np.delete(after, [7, 9], axis=0), np.delete(x, [7, 9], axis=0))
        # Noise: seeded, so the same seed writes the same bytes; columns work too.
        a = rows_after({"op": "noise", "std": 0.5, "seed": 4}, [1, 2])
        b = rows_after({"op": "noise", "std": 0.5, "seed": 4}, [1, 2])
        assert [e["patched"] for e in a["entries"]] == [e["patched"] for e in b["entries"]]
        s.call("POST", "/api/row_set", {"request": {"tensor": "x", "columns": True, "lines": [0, 63], "action": {"op": "zero"}}})
        assert "zero 2 columns of x" in s.call("GET", "/api/session")["steps"][0]
    finally:
        s.stop()
