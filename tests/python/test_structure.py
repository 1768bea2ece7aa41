"""PCA projections and token lookups, checked against numpy on the same files, and the demo
tokenizer against Python's tokenizers."""

import urllib.parse

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from conftest import run
from server import Server

E = "model.embed_tokens.weight"
PARIS = 1000


def structured(n=600, d=48, seed=3):
    """Rows with a clear spectrum (three strong directions) plus noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(d, 3)))[0]
    coords = rng.normal(size=(n, 3)) * np.array([9.0, 4.0, 2.0])
    return (coords @ basis.T + rng.normal(size=(n, d)) * 0.3 + 1.5).astype(np.float32)


def reference(x, k, normalize=False):
    x = x.astype(np.float64)
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    return u[:, :k] * s[:k], vt[:k], s[:k] ** 2 / (len(x) - 1), s[:k] ** 2 / (s**2).sum()


def assert_projection(got, x, k, normalize=False):
    points, comps, var, ratio = reference(x, k, normalize)
    np.testing.assert_allclose(got["explained_variance"], var, rtol=1e-6)
    np.testing.assert_allclose(got["explained_variance_ratio"], ratio, rtol=1e-6)
    gc = np.array(got["components"])
    gp = np.array(got["points"], dtype=np.float64)
    for c in range(k):
        sign = np.sign(gc[c] @ comps[c])
        np.testing.assert_allclose(gc[c] * sign, comps[c], atol=1e-6)
        np.testing.assert_allclose(gp[:, c] * sign, points[:, c], rtol=1e-4, atol=1e-4 * np.abs(points[:, c]).max())
        # scikit-learn's convention: the largest loading is positive.
        assert gc[c][np.argmax(np.abs(gc[c]))] > 0


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_pca_matches_numpy_svd(tmp_path, dtype):
    x = structured()
    stored = x if dtype == "F32" else x.astype(ml_dtypes.bfloat16)
    path = tmp_path / "m.safetensors"
    save_file({"w": stored}, str(path))
    exact = stored.astype(np.float64)
    for k in (2, 3):
        got = run("project", path, "w", "--dims", k, "--json").json()
        assert got["n"] == len(x) and got["dims"] == k and len(got["points"]) == len(x)
        assert_projection(got, exact, k)
    got = run("project", path, "w", "--dims", 3, "--normalize", "--json").json()
    assert_projection(got, exact, 3, normalize=True)
    got = run("project", path, "w", "--dims", 2, "--columns", "--json").json()
    assert_projection(got, exact.T, 2)


def test_projection_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    bad = structured(n=20, d=4)
    bad[3, 1] = np.nan
    save_file({"v": np.ones(8, np.float32), "bad": bad}, str(path))
    r = run("project", path, "v", check=False)
    assert r.code == 1 and "2-D" in r.err
    r = run("project", path, "bad", check=False)
    assert r.code == 1 and "NaN" in r.err


def cosine_ranking(emb, row, k):
    e = emb.astype(np.float64)
    sims = (e @ e[row]) / (np.linalg.norm(e, axis=1) * np.linalg.norm(e[row]))
    sims[row] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [int(i) for i in order], sims[order]


def embedding(demo):
    with safe_open(str(demo / "model.safetensors"), "np") as f:
        return f.get_tensor(E)


def test_demo_tokenizer_is_read_alike_by_python_tokenizers(demo):
    tok = Tokenizer.from_file(str(demo / "tokenizer.json"))
    assert tok.get_vocab_size() == 2048
    assert tok.encode(" Paris").ids == [PARIS]
    hits = run("tokens", demo, "--find", " Paris", "--json").json()
    assert hits[0] == {"id": PARIS, "token": " Paris"}
    r = run("tokens", demo, "--nearest", " Parisian", check=False)
    assert r.code == 1 and "not a token" in r.err


def test_nearest_tokens_match_numpy_and_follow_edits(demo, tmp_path):
    got = run("tokens", demo, "--nearest", " Paris", "--k", "10", "--json").json()
    want, sims = cosine_ranking(embedding(demo), PARIS, 10)
    assert [n["row"] for n in got["neighbors"]] == want
    np.testing.assert_allclose([n["cosine"] for n in got["neighbors"]], sims, rtol=1e-5)
    tok = Tokenizer.from_file(str(demo / "tokenizer.json"))
    # The planted group: every neighbour of " Paris" is another capital.
    assert {tok.id_to_token(r) for r in want[:11]} <= {"▁" + c for c in ["London", "Berlin", "Madrid", "Rome", "Vienna", "Lisbon", "Prague", "Warsaw", "Athens", "Dublin", "Oslo"]}
    # An edit moves " London" onto " Paris": it becomes the nearest, cosine 1.
    paris = embedding(demo)[PARIS]
    patch = tmp_path / "p.json"
    sets = [a for j, v in enumerate(paris) for a in ("--set", f"{E}[1001,{j}]={float(v)!r}")]
    run("edit", demo, "--patch", patch, *sets)
    edited = run("tokens", demo, "--nearest", " Paris", "--k", "3", "--patch", patch, "--json").json()
    assert edited["neighbors"][0]["row"] == 1001
    assert edited["neighbors"][0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    cmp = run("tokens", demo, "--compare", " Paris", " London", "--json").json()
    e = embedding(demo).astype(np.float64)
    assert cmp["l2"] == pytest.approx(np.linalg.norm(e[1001] - e[PARIS]), rel=1e-12)
    assert cmp["cosine"] == pytest.approx(e[1001] @ e[PARIS] / np.linalg.norm(e[1001]) / np.linalg.norm(e[PARIS]), rel=1e-12)


def test_token_endpoints_use_the_session_edits(demo):
    s = Server(demo).start()
    try:
        m = s.call("GET", "/api/model")
        assert m["vocab_size"] == 2048 and m["vocab_tensor"] == E
        hits = s.call("GET", "/api/tokens/search?" + urllib.parse.urlencode({"q": " Paris"}))
        assert hits[0]["id"] == PARIS
        q = urllib.parse.urlencode({"tensor": E, "row": PARIS, "k": 3})
        before = s.call("GET", f"/api/tokens/nearest?{q}")
        assert before["token"] == " Paris" and before["neighbors"][0]["token"].startswith(" ")
        # Zero the nearest neighbour: it drops out (no direction), the next one moves up.
        first = before["neighbors"][0]["row"]
        s.edit(E, f"{first},:", {"op": "zero"})
        after = s.call("GET", f"/api/tokens/nearest?{q}")
        assert first not in [n["row"] for n in after["neighbors"]]
        assert after["neighbors"][0]["row"] == before["neighbors"][1]["row"]
        cell = s.call("GET", "/api/cell?" + urllib.parse.urlencode({"tensor": E, "index": f"{PARIS},0"}))
        assert cell["token"] == " Paris"
        status, body = s.call("GET", "/api/tokens/nearest?" + urllib.parse.urlencode({"tensor": E, "row": 5000, "k": 3}), ok=False)
        assert status == 400 and "out of range" in body
    finally:
        s.stop()


def test_no_tokenizer_is_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": structured(n=10, d=4)}, str(path))
    r = run("tokens", path, "--nearest", "x", check=False)
    assert r.code == 1 and "tokenizer" in r.err
