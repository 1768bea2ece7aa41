"""Tensor statistics, histograms and the scan, checked against numpy on files numpy wrote."""

import time
import urllib.parse

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import run
from server import Server

QS = [0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999]
N = 200_003  # several 65,536-element chunks and a partial one


def sample(dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.int8:
        x = rng.integers(-128, 128, N).astype(np.int8)
        x[:1000] = 0
        return x
    x = (rng.standard_normal(N) * 3).astype(np.float64)
    x[:500] = 0.0
    x[500:600] = -0.0
    x[600:610] = np.nan
    x[610:615] = np.inf
    x[615:618] = -np.inf
    tiny = {np.float32: 1e-40, np.float16: 1e-6, ml_dtypes.bfloat16: 1e-40}[dtype]
    x[700:720] = tiny  # subnormal in that dtype
    return x.astype(dtype)


def expected(x):
    v = x.astype(np.float64)
    fin = v[np.isfinite(v)]
    return {
        "count": v.size,
        "finite": fin.size,
        "nan": int(np.isnan(v).sum()),
        "pos_inf": int(np.isposinf(v).sum()),
        "neg_inf": int(np.isneginf(v).sum()),
        "zero": int((v == 0).sum()),
        "min": fin.min(),
        "max": fin.max(),
        "mean": fin.mean(),
        "std": fin.std(),
        "mean_abs": np.abs(fin).mean(),
        "max_abs": np.abs(fin).max(),
        "quantiles": np.percentile(fin, [q * 100 for q in QS]),
    }, fin


def subnormals(x):
    if x.dtype == np.int8:
        return 0
    info = ml_dtypes.finfo(x.dtype) if x.dtype == ml_dtypes.bfloat16 else np.finfo(x.dtype)
    a = np.abs(x.astype(np.float64))
    return int(((a > 0) & (a < float(info.smallest_normal))).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int8], ids=["F32", "F16", "BF16", "I8"])
def test_stats_and_histograms_match_numpy(tmp_path, dtype):
    x = sample(dtype)
    path = tmp_path / "m.safetensors"
    save_file({"x": x.reshape(1, -1)}, str(path))
    got = run("stats", path, "x", "--json").json()
    s = got["summary"]
    want, fin = expected(x)
    for key in ["count", "finite", "nan", "pos_inf", "neg_inf", "zero"]:
        assert s[key] == want[key], key
    assert s["subnormal"] == subnormals(x)
    assert s["sparsity"] == pytest.approx(want["zero"] / want["count"])
    for key in ["min", "max", "max_abs"]:
        assert s[key] == want[key], key
    scale = want["mean_abs"]
    assert abs(s["mean"] - want["mean"]) <= 1e-12 * scale
    for key in ["std", "mean_abs"]:
        assert s[key] == pytest.approx(want[key], rel=1e-12), key
    assert [q["q"] for q in s["quantiles"]] == QS
    np.testing.assert_allclose([q["value"] for q in s["quantiles"]], want["quantiles"], rtol=1e-12, atol=0)
    # Histograms: numpy's bins over the finite range, any bin count; specials beside.
    for bins in [256, 7]:
        h = got["histogram"] if bins == 256 else run("stats", path, "x", "--json", "--bins", bins).json()["histogram"]
        counts, edges = np.histogram(fin, bins=bins, range=(fin.min(), fin.max()))
        assert h["counts"] == counts.tolist(), bins
        assert (h["lo"], h["hi"]) == (edges[0], edges[-1])
        assert (h["nan"], h["pos_inf"], h["neg_inf"]) == (want["nan"], want["pos_inf"], want["neg_inf"])


def test_f64_and_i32_take_the_wide_path(tmp_path):
    rng = np.random.default_rng(5)
    a = rng.standard_normal(N) * 1e3
    b = rng.integers(-(2**31), 2**31 - 1, N, dtype=np.int64).astype(np.int32)
    path = tmp_path / "m.safetensors"
    save_file({"a": a, "b": b}, str(path))
    for name, x in [("a", a), ("b", b)]:
        s = run("stats", path, name, "--json").json()["summary"]
        v = x.astype(np.float64)
        np.testing.assert_allclose([q["value"] for q in s["quantiles"]], np.percentile(v, [q * 100 for q in QS]), rtol=1e-12)
        assert (s["min"], s["max"]) == (v.min(), v.max())
        assert s["std"] == pytest.approx(v.std(), rel=1e-12)


def test_edge_cases_constant_and_all_nan(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"c": np.full(100, 2.5, np.float32), "n": np.full(10, np.nan, np.float32)}, str(path))
    c = run("stats", path, "c", "--json").json()
    assert c["summary"]["std"] == 0 and c["summary"]["quantiles"][4]["value"] == 2.5
    counts, edges = np.histogram(np.full(100, 2.5), bins=256)
    assert c["histogram"]["counts"] == counts.tolist() and c["histogram"]["lo"] == edges[0]
    n = run("stats", path, "n", "--json").json()
    assert n["summary"]["nan"] == 10 and n["summary"]["finite"] == 0
    assert n["summary"]["mean"] is None and n["summary"]["quantiles"] == [] and n["histogram"] is None
    flags = {r["tensor"]: [f["flag"] for f in r["flags"]] for r in run("scan", path, "--json").json()["rows"]}
    assert flags == {"c": ["constant"], "n": ["nan"]}
    r = run("stats", path, "nope", check=False)
    assert r.code == 1 and r.err.startswith("error: no tensor named") and r.err.count("\n") == 1
    r = run("stats", path, "c", "--bins", "0", check=False)
    assert r.code == 1 and "--bins" in r.err


def test_edits_change_the_statistics(tmp_path):
    x = np.arange(1000, dtype=np.float32)
    path = tmp_path / "m.safetensors"
    save_file({"x": x}, str(path))
    patch = tmp_path / "p.json"
    run("edit", path, "--patch", patch, "--set", "x[0]=nan", "--set", "x[999]=-5")
    s = run("stats", path, "x", "--patch", patch, "--json").json()["summary"]
    v = x.astype(np.float64)
    v[999] = -5
    fin = v[1:]
    assert s["nan"] == 1 and s["min"] == -5 and s["max"] == 998
    assert s["mean"] == pytest.approx(fin.mean(), rel=1e-12)
    assert run("stats", path, "x", "--json").json()["summary"]["nan"] == 0, "the base is unchanged"


def test_scan_of_the_demo_flags_its_planted_problems(tmp_path):
    run("demo", "--out", tmp_path / "demo")
    scan = run("scan", tmp_path / "demo", "--json").json()
    flagged = {r["tensor"]: sorted(f["flag"] for f in r["flags"]) for r in scan["rows"] if r["flags"]}
    assert flagged == {
        "model.layers.3.post_attention_layernorm.weight": ["inf", "nan"],
        "model.layers.2.self_attn.o_proj.weight": ["outlier"],
    }
    group = next(g for g in scan["groups"] if g["pattern"] == "model.layers.*.self_attn.o_proj.weight")
    assert [m[0] for m in group["members"]] == [0, 1, 2, 3]
    assert group["outliers"] == ["model.layers.2.self_attn.o_proj.weight"]
    text = run("scan", tmp_path / "demo").out
    assert "54 tensors scanned, 2 flagged" in text and "<- outlier" in text


def test_http_stats_histogram_and_scan(tmp_path):
    run("demo", "--out", tmp_path / "demo")
    s = Server(tmp_path / "demo").start()
    try:
        name = "model.layers.3.post_attention_layernorm.weight"
        q = urllib.parse.urlencode({"tensor": name})
        before = s.call("GET", f"/api/stats?{q}")
        assert before == run("stats", tmp_path / "demo", name, "--json").json()
        s.edit(name, "5", {"op": "set", "value": "1"})  # the planted NaN
        after = s.call("GET", f"/api/stats?{q}")
        assert after["summary"]["nan"] == 0 and after["version"] > before["version"]
        s.call("POST", "/api/undo", {})
        assert s.call("GET", f"/api/stats?{q}")["summary"]["nan"] == 1
        h = s.call("GET", "/api/histogram?" + urllib.parse.urlencode({"tensor": name, "bins": 4, "lo": 0.9, "hi": 1.1}))
        assert len(h["counts"]) == 4 and h["below"] + h["above"] + sum(h["counts"]) == 125
        for bad, message in [({"bins": 0}, "bins must be"), ({"bins": 4, "lo": 2, "hi": 1}, "lo <= hi")]:
            status, body = s.call("GET", "/api/histogram?" + urllib.parse.urlencode({"tensor": name, **bad}), ok=False)
            assert status == 500 and message in body
        s.call("POST", "/api/scan", {})
        for _ in range(200):
            st = s.call("GET", "/api/scan_status?since=0")
            if st["complete"]:
                break
            time.sleep(0.05)
        assert st["complete"] and st["tensors_done"] == 54 and len(st["rows"]) == 54
        assert st["bytes_done"] == st["bytes_total"]
        assert any(g["outliers"] for g in st["groups"])
        assert len(s.call("GET", "/api/scan_status?since=50")["rows"]) == 4
    finally:
        s.stop()
