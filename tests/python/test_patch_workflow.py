"""Edit -> patch -> verify -> apply -> Python reads the baked model: exactly the intended
elements changed, the base untouched. Single files and sharded models."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from helpers import read_raw, sha256

RNG = np.random.default_rng(7)


@pytest.fixture
def model(tmp_path):
    tensors = {
        "w.f32": RNG.standard_normal((6, 8)).astype(np.float32),
        "w.bf16": RNG.standard_normal((4, 5)).astype(ml_dtypes.bfloat16),
        "w.i8": RNG.integers(-100, 100, size=(3, 4), dtype=np.int8),
        "w.f8": (RNG.standard_normal(16)).astype(ml_dtypes.float8_e4m3fn),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "np"})
    return path, tensors


def load_np(path, name, like):
    """Reads one tensor of a baked file: numpy for standard dtypes, raw bytes otherwise."""
    raw = read_raw(path)[name]
    return np.frombuffer(raw[2], dtype=like.dtype).reshape(raw[1])


def test_edit_verify_apply_changes_exactly_the_edited_elements(ts, model, tmp_path):
    path, tensors = model
    base_hash = sha256(path)
    patch = tmp_path / "edits.json"
    ts("edit", path, "--patch", patch, "--set", "w.f32[2,3]=1.5", "--scale", "w.bf16[1,:]=-2", "--note", "first")
    ts("edit", path, "--patch", patch, "--hex", "w.f32[0,0]=0000803f", "--add", "w.i8[2,1:3]=5", "--zero", "w.f8[3:5]")
    doc = json.loads(patch.read_text())
    assert doc["format"] == "tensor-surgeon-patch" and doc["version"] == 1
    assert doc["note"] == "first"
    assert doc["base"][0]["file"] == "model.safetensors"
    entry = next(e for e in doc["entries"] if e["tensor"] == "w.f32" and e["offset"] == (2 * 8 + 3) * 4)
    assert entry["original"] == tensors["w.f32"][2:3, 3].tobytes().hex()
    assert entry["patched"] == np.float32(1.5).tobytes().hex()

    assert "ok: " in ts("verify", path, patch).out
    baked = tmp_path / "baked.safetensors"
    ts("apply", path, patch, "--out", baked)
    assert sha256(path) == base_hash, "the base file is never written"

    want = {k: v.copy() for k, v in tensors.items()}
    want["w.f32"][2, 3] = 1.5
    want["w.f32"][0, 0] = 1.0
    want["w.bf16"][1, :] = (want["w.bf16"][1, :].astype(np.float32) * -2).astype(ml_dtypes.bfloat16)
    want["w.i8"][2, 1:3] += 5
    want["w.f8"][3:5] = 0
    with safe_open(str(baked), framework="np") as f:
        assert f.metadata() == {"format": "np"}
        np.testing.assert_array_equal(f.get_tensor("w.f32"), want["w.f32"])
        np.testing.assert_array_equal(f.get_tensor("w.i8"), want["w.i8"])
    for name in ["w.bf16", "w.f8"]:
        got = load_np(baked, name, want[name])
        assert got.tobytes() == want[name].tobytes(), name

    # Every other byte of the file is the base's.
    base_bytes, baked_bytes = path.read_bytes(), baked.read_bytes()
    assert len(base_bytes) == len(baked_bytes)
    differing = sum(a != b for a, b in zip(base_bytes, baked_bytes))
    changed = sum(len(bytes.fromhex(e["patched"])) for e in doc["entries"])
    assert 0 < differing <= changed


def test_invert_and_combine(ts, model, tmp_path):
    path, _ = model
    a, b, ab, inv = (tmp_path / n for n in ["a.json", "b.json", "ab.json", "inv.json"])
    ts("edit", path, "--patch", a, "--set", "w.f32[0,0]=2")
    ts("edit", path, "--patch", b, "--set", "w.f32[1,1]=3")
    ts("combine", a, b, "--out", ab)
    baked = tmp_path / "ab.safetensors"
    ts("apply", path, ab, "--out", baked)
    with safe_open(str(baked), framework="np") as f:
        w = f.get_tensor("w.f32")
    assert (w[0, 0], w[1, 1]) == (2.0, 3.0)

    # The inverse of ab applied to the baked file gives back the base, byte for byte.
    ts("invert", ab, "--out", inv)
    restored = tmp_path / "restored.safetensors"
    ts("apply", baked, inv, "--out", restored)
    assert sha256(restored) == sha256(path)

    # Two patches writing different values to the same element conflict; nothing is written.
    c = tmp_path / "c.json"
    ts("edit", path, "--patch", c, "--set", "w.f32[0,0]=5")
    r = ts("combine", a, c, "--out", tmp_path / "ac.json", check=False)
    assert r.code == 1 and "conflict" in r.err
    # 2.0 is 00 00 00 40 and 5.0 is 00 00 a0 40: they differ in byte 2 alone.
    assert "conflict: w.f32 bytes 2..3: one patch writes 00 and the other a0" in r.out, r.out
    assert not (tmp_path / "ac.json").exists()


def test_verify_lists_conflicts_and_apply_writes_nothing(ts, model, tmp_path):
    path, tensors = model
    patch = tmp_path / "p.json"
    ts("edit", path, "--patch", patch, "--set", "w.f32[0,0]=2", "--set", "w.f32[5,7]=4")
    doc = json.loads(patch.read_text())
    for e in doc["entries"]:
        e["original"] = "ff" * (len(e["original"]) // 2)
    patch.write_text(json.dumps(doc))
    r = ts("verify", path, patch, "--json", check=False)
    assert r.code == 1
    report = r.json()
    assert report["ok"] is False and len(report["conflicts"]) == 2
    assert report["conflicts"][0]["kind"] == "mismatch"
    out = tmp_path / "never.safetensors"
    r = ts("apply", path, patch, "--out", out, check=False)
    assert r.code == 1 and "2 conflict(s)" in r.err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temp file left"


@pytest.mark.parametrize(
    "edit,message",
    [
        (["--set", "w.i8[0,0]=300"], "300 is out of range for I8 (it holds -128 to 127)"),
        (["--set", "w.i8[0,0]=0.5"], "0.5 is not a whole number"),
        (["--set", "w.f8[0]=1000"], "1000 is out of range for F8_E4M3 (it holds -448 to 448)"),
        (["--set", "w.f32[0,0]=abc"], '"abc" is not a number'),
        (["--hex", "w.f32[0,0]=00"], "is not 4 bytes for F32"),
        (["--set", "w.f32[9,0]=1"], "index 9 out of bounds for dim 0 of size 6"),
        (["--set", "nope[0]=1"], 'no tensor named "nope"'),
        (["--set", "w.f32 0 0 = 1"], "did you mean \"w.f32\"?"),
    ],
)
def test_bad_edits_are_one_line_errors_and_write_nothing(ts, model, tmp_path, edit, message):
    path, _ = model
    patch = tmp_path / "p.json"
    r = ts("edit", path, "--patch", patch, *edit, check=False)
    assert r.code == 1
    assert message in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not patch.exists()


def test_saturate_and_round_opt_in(ts, model, tmp_path):
    path, _ = model
    patch = tmp_path / "p.json"
    ts("edit", path, "--patch", patch, "--set", "w.i8[0,0]=300", "--set", "w.i8[0,1]=2.5", "--saturate", "--round")
    got = ts("slice", path, "w.i8", "0,0:2", "--json").json()
    baked = tmp_path / "b.safetensors"
    ts("apply", path, patch, "--out", baked)
    got = ts("slice", baked, "w.i8", "0,0:2", "--json").json()
    assert got["values"] == [127, 2]


def write_sharded(d, tensors_by_shard):
    weight_map = {}
    for i, (fname, tensors) in enumerate(tensors_by_shard.items()):
        save_file(tensors, str(d / fname), metadata={"format": "np"})
        weight_map.update({k: fname for k in tensors})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


def test_sharded_model_is_one_model(ts, tmp_path):
    src = tmp_path / "sharded"
    src.mkdir()
    shards = {
        "model-00001-of-00002.safetensors": {"a": RNG.standard_normal((4, 4)).astype(np.float32), "b": np.arange(6, dtype=np.int16)},
        "model-00002-of-00002.safetensors": {"c": RNG.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)},
    }
    write_sharded(src, shards)
    listed = ts("inspect", src, "--json").json()["tensors"]
    assert {t["name"]: t["file"] for t in listed} == {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}
    # Opening the index file itself works the same.
    assert ts("inspect", src / "model.safetensors.index.json", "--json").json()["tensors"] == listed
    got = ts("slice", src, "c", "1", "--json").json()
    assert got["hex"] == [v.tobytes().hex() for v in shards["model-00002-of-00002.safetensors"]["c"][1]]

    patch = tmp_path / "p.json"
    ts("edit", src, "--patch", patch, "--set", "c[1,2]=0.5", "--set", "b[0]=-7")
    doc = json.loads(patch.read_text())
    assert [f["file"] for f in doc["base"]] == sorted(shards)
    out = tmp_path / "baked"
    written = ts("apply", src, patch, "--out", out).out.split()
    assert len(written) == 3
    assert (out / "model.safetensors.index.json").read_text() == (src / "model.safetensors.index.json").read_text()
    with safe_open(str(out / "model-00001-of-00002.safetensors"), framework="np") as f:
        np.testing.assert_array_equal(f.get_tensor("a"), shards["model-00001-of-00002.safetensors"]["a"])
        assert list(f.get_tensor("b")) == [-7, 1, 2, 3, 4, 5]
    c = np.frombuffer(read_raw(out / "model-00002-of-00002.safetensors")["c"][2], dtype=ml_dtypes.bfloat16).reshape(2, 3)
    want = shards["model-00002-of-00002.safetensors"]["c"].copy()
    want[1, 2] = 0.5
    assert c.tobytes() == want.tobytes()
    # The baked folder opens as a model again.
    assert ts("slice", out, "b", "0", "--json").json()["values"] == [-7]
