"""Region operations (copy, swap, noise, blend, zero rows/columns, per-row/column scale),
each checked element by element against numpy on the same file: through the CLI (edit ->
apply -> read the baked file) and through the HTTP API."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run
from server import Server

BF16 = ml_dtypes.bfloat16


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {
        "a": rng.standard_normal((16, 12), dtype=np.float32),
        "b": rng.standard_normal((16, 12), dtype=np.float32),
        "h": rng.standard_normal((16, 12)).astype(BF16),
        "q": rng.integers(-100, 100, (16, 12), dtype=np.int8),
        "f64": rng.standard_normal((4, 12)),
        "norm": rng.uniform(0.5, 2.0, 12).astype(np.float32),
        "rows": rng.uniform(-2.0, 2.0, 16).astype(np.float32),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def edited(path, tmp_path, *flags):
    """The model after one `edit` with these flags, as numpy arrays (from the baked file)."""
    patch, out = tmp_path / "p.json", tmp_path / "out.safetensors"
    patch.unlink(missing_ok=True)
    run("edit", path, "--patch", patch, *flags)
    run("apply", path, patch, "--out", out)
    return load_file(str(out))


def f64(x):
    return np.asarray(x, dtype=np.float64)


def test_copy_rows_columns_and_blocks_converting_dtypes(model, tmp_path):
    path, t = model
    got = edited(path, tmp_path, "--copy", "a[3]=b[7]", "--copy", "a[:,0]=b[:,11]", "--copy", "h[2:4,2:6]=a[10:12,0:4]", "--copy", "f64[1]=h[0]")
    want_a = t["a"].copy()
    want_a[3] = t["b"][7]
    want_a[:, 0] = t["b"][:, 11]
    np.testing.assert_array_equal(got["a"], want_a)
    want_h = t["h"].copy()
    want_h[2:4, 2:6] = want_a[10:12, 0:4].astype(BF16)  # F32 -> BF16, rounded to nearest even
    assert got["h"].tobytes() == want_h.tobytes()
    want_f64 = t["f64"].copy()
    want_f64[1] = t["h"][0].astype(np.float64)
    np.testing.assert_array_equal(got["f64"], want_f64)
    # Everything else is untouched.
    for name in ["b", "q", "norm", "rows"]:
        assert got[name].tobytes() == t[name].tobytes(), name


def test_copy_within_a_tensor_reads_the_values_before_the_copy(model, tmp_path):
    path, t = model
    got = edited(path, tmp_path, "--copy", "a[1:5]=a[0:4]")
    want = t["a"].copy()
    want[1:5] = t["a"][0:4]  # numpy reads the right side first, too
    np.testing.assert_array_equal(got["a"], want)


def test_copy_refuses_values_the_target_cannot_hold_and_writes_nothing(model, tmp_path):
    path, t = model
    patch = tmp_path / "p.json"
    big = tmp_path / "big.safetensors"
    save_file({"q": t["q"], "big": np.full((16, 12), 300.0, dtype=np.float32)}, str(big))
    r = run("edit", big, "--patch", patch, "--copy", "q[0]=big[0]", check=False)
    assert r.code == 1 and "element [0, 0] of q" in r.err and "300" in r.err, r.err
    assert not patch.exists()
    r = run("edit", path, "--patch", patch, "--copy", "a[0]=b[0:2]", check=False)
    assert r.code == 1 and "does not fit" in r.err, r.err
    r = run("edit", path, "--patch", patch, "--copy", "a[0]=nope[0]", check=False)
    assert r.code == 1 and "no tensor named" in r.err, r.err


def test_swap_rows_and_columns_in_any_dtype(model, tmp_path):
    path, t = model
    got = edited(path, tmp_path, "--swap-rows", "h=2,9", "--swap-columns", "q=0,11", "--swap-rows", "a=5,5")
    want_h = t["h"].copy()
    want_h[[2, 9]] = want_h[[9, 2]]
    assert got["h"].tobytes() == want_h.tobytes()
    want_q = t["q"].copy()
    want_q[:, [0, 11]] = want_q[:, [11, 0]]
    np.testing.assert_array_equal(got["q"], want_q)
    np.testing.assert_array_equal(got["a"], t["a"])
    r = run("edit", path, "--patch", tmp_path / "x.json", "--swap-rows", "a=0,16", check=False)
    assert r.code == 1 and "row 16 is out of range: a has 16" in r.err, r.err


def test_noise_is_seeded_has_the_std_asked_and_stays_in_the_selection(tmp_path):
    path = tmp_path / "big.safetensors"
    base = np.zeros((200, 100), dtype=np.float32)
    save_file({"w": base}, str(path))
    one = edited(path, tmp_path, "--noise", "w[50:150]=0.02", "--seed", "7")["w"]
    two = edited(path, tmp_path, "--noise", "w[50:150]=0.02", "--seed", "7")["w"]
    other = edited(path, tmp_path, "--noise", "w[50:150]=0.02", "--seed", "8")["w"]
    assert one.tobytes() == two.tobytes()
    assert one.tobytes() != other.tobytes()
    inside = one[50:150].astype(np.float64)
    assert abs(inside.std() - 0.02) < 0.001  # 10,000 draws: the std is within 5%
    assert abs(inside.mean()) < 0.001
    assert not one[:50].any() and not one[150:].any()


def test_blend_matches_numpy(model, tmp_path):
    path, t = model
    got = edited(path, tmp_path, "--blend", "a=b:0.25", "--blend", "f64[0:2]=f64:1")
    want = ((1 - 0.25) * f64(t["a"]) + 0.25 * f64(t["b"])).astype(np.float32)
    np.testing.assert_array_equal(got["a"], want)
    np.testing.assert_array_equal(got["f64"], t["f64"])  # blending with itself changes nothing
    r = run("edit", path, "--patch", tmp_path / "x.json", "--blend", "a=f64:0.5", check=False)
    assert r.code == 1 and "blend needs equal shapes" in r.err, r.err
    r = run("edit", path, "--patch", tmp_path / "x.json", "--blend", "a[0]=b[0]:0.5", check=False)
    assert r.code == 1 and "without [SPEC]" in r.err, r.err


def test_zero_rows_and_columns_ablate(model, tmp_path):
    path, t = model
    got = edited(path, tmp_path, "--zero", "a[4]", "--zero", "h[:,7]")
    want_a = t["a"].copy()
    want_a[4] = 0
    want_h = t["h"].copy()
    want_h[:, 7] = 0
    np.testing.assert_array_equal(got["a"], want_a)
    assert got["h"].tobytes() == want_h.tobytes()


def test_scale_per_row_and_per_column_matches_numpy(model, tmp_path):
    path, t = model
    factors = [0.5 * i - 2 for i in range(16)]
    got = edited(path, tmp_path, "--scale-rows", "a=" + ",".join(map(str, factors)), "--scale-columns", "b=@norm")
    want_a = (f64(t["a"]) * np.array(factors)[:, None]).astype(np.float32)
    want_b = (f64(t["b"]) * f64(t["norm"])[None, :]).astype(np.float32)
    np.testing.assert_array_equal(got["a"], want_a)
    np.testing.assert_array_equal(got["b"], want_b)
    r = run("edit", path, "--patch", tmp_path / "x.json", "--scale-rows", "a=1,2", check=False)
    assert r.code == 1 and "2 factors for 16 rows of a" in r.err, r.err
    r = run("edit", path, "--patch", tmp_path / "x.json", "--scale-rows", "a=@b", check=False)
    assert r.code == 1 and "1-D tensor" in r.err, r.err


def test_region_operations_over_http_match_the_cli(model, tmp_path):
    path, t = model
    s = Server(path).start()
    try:
        def region(tensor, spec, region, ok=True):
            return s.call("POST", "/api/region", {"request": {"tensor": tensor, "spec": spec, "region": region}}, ok=ok)

        region("h", "", {"op": "swap_rows", "a": 2, "b": 9})
        region("a", "3", {"op": "copy", "from": "b", "from_spec": "7"})
        region("b", "", {"op": "scale_columns", "factors": [float(x) for x in t["norm"]]})
        view = region("a", "", {"op": "blend", "with": "rows", "alpha": 0.5}, ok=False)
        assert view[0] >= 400 and "blend needs equal shapes" in view[1]
        session = region("q", "0:2", {"op": "noise", "std": 3.0, "seed": 1}, ok=False)
        assert session[0] >= 400 and "whole number" in session[1]
        patch = json.loads(s.request("GET", "/api/patch/download")[1])
    finally:
        s.stop()
    (tmp_path / "web.json").write_text(json.dumps(patch))
    run("apply", path, tmp_path / "web.json", "--out", tmp_path / "web.safetensors")
    web = load_file(str(tmp_path / "web.safetensors"))
    cli = edited(path, tmp_path, "--swap-rows", "h=2,9", "--copy", "a[3]=b[7]", "--scale-columns", "b=@norm")
    for name in t:
        assert web[name].tobytes() == cli[name].tobytes(), name
    assert {e["origin"]["source"] for e in patch["entries"]} == {"web"}
