"""The compact patch form and `diff`: diff -> apply reproduces the other model byte for byte,
the per-tensor report matches numpy, compact and JSON forms bake identically, and damaged
compact patches are refused with one line."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import read_raw, sha256
from test_patch_workflow import write_sharded

RNG = np.random.default_rng(11)
MAGIC = b"\x89TSP\r\n\x1a\n"


def base_tensors():
    return {
        "a.f32": RNG.standard_normal((64, 32)).astype(np.float32),
        "b.bf16": RNG.standard_normal((16, 24)).astype(ml_dtypes.bfloat16),
        "c.i8": RNG.integers(-100, 100, size=(10, 10), dtype=np.int8),
        "d.f16": RNG.standard_normal(50).astype(np.float16),
        "e.same": RNG.standard_normal((8, 8)).astype(np.float32),
    }


def changed(tensors):
    """A fine-tune-like other model: one tensor changed everywhere, others in places."""
    other = {k: v.copy() for k, v in tensors.items()}
    other["a.f32"] = (other["a.f32"] + RNG.standard_normal((64, 32)).astype(np.float32) * 0.01).astype(np.float32)
    other["b.bf16"][3, 5:9] = (other["b.bf16"][3, 5:9].astype(np.float32) * 3).astype(ml_dtypes.bfloat16)
    other["c.i8"][[0, 4, 9], [1, 2, 3]] += 7
    other["d.f16"][-1] = 0.25
    return other


def as_f64(arr):
    return np.asarray(arr).astype(np.float64)


@pytest.fixture
def pair(tmp_path):
    base = base_tensors()
    other = changed(base)
    bp, op = tmp_path / "base.safetensors", tmp_path / "other.safetensors"
    save_file(base, str(bp), metadata={"format": "np"})
    save_file(other, str(op), metadata={"format": "np"})
    return bp, op, base, other


@pytest.mark.parametrize("form", ["auto", "json", "compact"])
def test_diff_then_apply_reproduces_the_other_model(ts, pair, tmp_path, form):
    bp, op, _, _ = pair
    patch = tmp_path / "d.patch"
    ts("diff", bp, op, "--out", patch, "--format", form)
    assert patch.read_bytes().startswith(MAGIC) == (form == "compact")
    assert "ok: " in ts("verify", bp, patch).out
    baked = tmp_path / "baked.safetensors"
    ts("apply", bp, patch, "--out", baked)
    assert sha256(baked) == sha256(op)


def test_diff_of_sharded_models(ts, tmp_path):
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    t = base_tensors()
    o = changed(t)
    split = lambda d: {names[0]: {k: d[k] for k in ["a.f32", "b.bf16"]}, names[1]: {k: d[k] for k in ["c.i8", "d.f16", "e.same"]}}
    base, other = tmp_path / "base", tmp_path / "other"
    for d, tensors in [(base, t), (other, o)]:
        d.mkdir()
        write_sharded(d, split(tensors))
    patch = tmp_path / "d.patch"
    report = ts("diff", base / "model.safetensors.index.json", other, "--out", patch, "--json").json()
    assert report["changed_tensors"] == 4
    out = tmp_path / "baked"
    ts("apply", base, patch, "--out", out)
    for n in names:
        assert sha256(out / n) == sha256(other / n), n


def test_diff_of_a_model_with_itself_is_empty(ts, pair, tmp_path):
    bp, _, _, _ = pair
    patch = tmp_path / "none.json"
    r = ts("diff", bp, bp, "--out", patch)
    assert "nothing changed" in r.out
    assert json.loads(patch.read_text())["entries"] == []
    report = ts("diff", bp, bp, "--out", patch, "--json").json()
    assert report["entries"] == 0 and report["changed_tensors"] == 0
    assert all(t["changed"] == 0 and t["rel_l2"] == 0 for t in report["tensors"])


def test_report_matches_numpy(ts, pair, tmp_path):
    bp, op, base, other = pair
    report = ts("diff", bp, op, "--out", tmp_path / "d.patch", "--json").json()
    got = {t["name"]: t for t in report["tensors"]}
    assert set(got) == set(base)
    for name in base:
        a, b = as_f64(base[name]), as_f64(other[name])
        d = b - a
        changed = int(np.count_nonzero(a != b))
        t = got[name]
        assert t["changed"] == changed, name
        assert t["elements"] == a.size, name
        assert t["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(a), rel=1e-9, abs=1e-15), name
        assert t["max_abs_delta"] == pytest.approx(np.abs(d).max(), rel=1e-12), name
    text = ts("diff", bp, op, "--out", tmp_path / "d.patch").out
    assert "4 of 5 tensors changed" in text
    assert "e.same" not in text


def test_mismatched_tensors_are_listed_and_left_out(ts, pair, tmp_path):
    bp, _, base, _ = pair
    other = dict(base)
    other["d.f16"] = base["d.f16"].astype(np.float32)
    other["extra"] = np.zeros(3, dtype=np.float32)
    del other["c.i8"]
    op = tmp_path / "odd.safetensors"
    save_file(other, str(op))
    r = ts("diff", bp, op, "--out", tmp_path / "p", "--json")
    assert "3 tensors are not compared" in r.err
    reasons = {t["name"]: t["reason"] for t in r.json()["not_compared"]}
    assert reasons == {"c.i8": "only in BASE", "d.f16": "F16 [50] in BASE, F32 [50] in OTHER", "extra": "only in OTHER"}
    assert "not compared: c.i8 (only in BASE)" in ts("diff", bp, op, "--out", tmp_path / "p").out


def edit(ts, model, patch, form):
    ts("edit", model, "--patch", patch, "--format", form, "--scale", "a.f32[2:40,:]=1.1", "--set", "b.bf16[0,0]=2", "--zero", "c.i8[3]")


def test_compact_and_json_forms_bake_identically(ts, pair, tmp_path):
    bp, _, _, _ = pair
    j, c = tmp_path / "p.json", tmp_path / "p.tsp"
    edit(ts, bp, j, "json")
    edit(ts, bp, c, "compact")
    assert j.read_text().startswith("{") and c.read_bytes().startswith(MAGIC)
    assert len(c.read_bytes()) < len(j.read_bytes())
    assert ts("verify", bp, c, "--json").json()["entries"] == len(json.loads(j.read_text())["entries"])
    bj, bc = tmp_path / "j.safetensors", tmp_path / "c.safetensors"
    ts("apply", bp, j, "--out", bj)
    ts("apply", bp, c, "--out", bc)
    assert sha256(bj) == sha256(bc) != sha256(bp)

    # Invert needs no model to stay compact; the inverse restores the base from the bake.
    inv = tmp_path / "inv.tsp"
    ts("invert", c, "--out", inv)
    restored = tmp_path / "restored.safetensors"
    ts("apply", bc, inv, "--out", restored)
    assert sha256(restored) == sha256(bp)
    # As JSON it needs the model the patch applies to.
    r = ts("invert", c, "--out", tmp_path / "inv.json", "--format", "json", check=False)
    assert r.code == 1 and "--model" in r.err and len(r.err.strip().splitlines()) == 1
    ts("invert", c, "--out", tmp_path / "inv.json", "--format", "json", "--model", bp)
    assert json.loads((tmp_path / "inv.json").read_text())["entries"] == [
        {**e, "original": e["patched"], "patched": e["original"]} for e in json.loads(j.read_text())["entries"]
    ]


def test_combine_with_compact_inputs(ts, pair, tmp_path):
    bp, _, base, _ = pair
    first, second = tmp_path / "first.tsp", tmp_path / "second.json"
    ts("edit", bp, "--patch", first, "--format", "compact", "--scale", "a.f32=2")
    r = ts("combine", first, second, "--out", tmp_path / "x", check=False)
    assert r.code == 1  # the second file does not exist yet
    # A second patch made on the first one's result (a sequence), as JSON.
    step = tmp_path / "step.safetensors"
    ts("apply", bp, first, "--out", step)
    ts("edit", step, "--patch", second, "--set", "a.f32[0,0]=7", "--set", "e.same[1,1]=3")
    r = ts("combine", first, second, "--out", tmp_path / "both", check=False)
    assert r.code == 1 and "needs the base model: add --model" in r.err
    both = tmp_path / "both"
    ts("combine", first, second, "--out", both, "--model", bp, "--format", "compact")
    baked = tmp_path / "both.safetensors"
    ts("apply", bp, both, "--out", baked)
    want = base["a.f32"] * 2
    want[0, 0] = 7
    got = read_raw(baked)
    assert np.frombuffer(got["a.f32"][2], dtype=np.float32).reshape(64, 32).tobytes() == want.tobytes()
    assert np.frombuffer(got["e.same"][2], dtype=np.float32)[9] == 3
    # The compact second patch works the same way round.
    second_c = tmp_path / "second.tsp"
    ts("edit", step, "--patch", second_c, "--format", "compact", "--set", "a.f32[0,0]=7", "--set", "e.same[1,1]=3")
    ts("combine", first, second_c, "--out", tmp_path / "both2.json", "--model", bp, "--format", "json")
    baked2 = tmp_path / "both2.safetensors"
    ts("apply", bp, tmp_path / "both2.json", "--out", baked2)
    assert sha256(baked2) == sha256(baked)


def damage(good: bytes):
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x40
    checksum = bytearray(good)
    checksum[40] ^= 1
    version = bytearray(good)
    version[8] = 9
    return {
        "bad magic": (b"\x88" + good[1:], "neither JSON nor the compact form"),
        "truncated header": (good[:20], "truncated: the header needs 60 bytes"),
        "truncated body": (good[:-10], "truncated: the compressed body needs"),
        "flipped body byte": (bytes(flipped), "checksum mismatch"),
        "flipped checksum byte": (bytes(checksum), "checksum mismatch"),
        "trailing bytes": (good + b"\0\0", "2 unexpected byte(s) after the compressed body"),
        "unknown version": (bytes(version), "compact patch version 9 is not supported"),
    }


@pytest.mark.parametrize("case", list(damage(b"x" * 100)))
def test_damaged_compact_patches_are_refused(ts, pair, tmp_path, case):
    bp, op, _, _ = pair
    good = tmp_path / "good.tsp"
    ts("diff", bp, op, "--out", good, "--format", "compact")
    data, message = damage(good.read_bytes())[case]
    bad = tmp_path / "bad.tsp"
    bad.write_bytes(data)
    out = tmp_path / "never.safetensors"
    for args in [("verify", bp, bad), ("apply", bp, bad, "--out", out), ("invert", bad, "--out", tmp_path / "i"), ("combine", bad, good, "--out", tmp_path / "c", "--model", bp)]:
        r = ts(*args, check=False)
        assert r.code == 1, (case, args[0])
        assert message in r.err, (case, args[0], r.err)
        assert len(r.err.strip().splitlines()) == 1, r.err
    assert not out.exists()


def test_whole_tensor_scale_is_written_compact_automatically(ts, tmp_path):
    big = RNG.standard_normal((512, 512)).astype(np.float32)
    model = tmp_path / "big.safetensors"
    save_file({"big": big, "small": np.ones(4, dtype=np.float32)}, str(model))
    patch = tmp_path / "scale.patch"
    r = ts("edit", model, "--patch", patch, "--scale", "big=0.5")
    assert "in compact form" in r.out
    data = patch.read_bytes()
    assert data.startswith(MAGIC)
    assert len(data) < big.nbytes // 4, "half of every exponent byte and no mantissa changes"
    baked = tmp_path / "baked.safetensors"
    ts("apply", model, patch, "--out", baked)
    assert np.frombuffer(read_raw(baked)["big"][2], dtype=np.float32).reshape(512, 512).tobytes() == (big * np.float32(0.5)).tobytes()
    # A small edit still writes readable JSON.
    small = tmp_path / "small.patch"
    ts("edit", model, "--patch", small, "--set", "small[0]=2")
    assert json.loads(small.read_text())["entries"][0]["patched"] == "00000040"


def test_origins_survive_the_compact_form(ts, tmp_path):
    big = RNG.standard_normal((512, 512)).astype(np.float32)
    model = tmp_path / "big.safetensors"
    save_file({"big": big}, str(model))
    patch = tmp_path / "scale.patch"
    ts("edit", model, "--patch", patch, "--scale", "big[0:256]=0.5")  # compact: above 1 MB of JSON
    assert patch.read_bytes().startswith(MAGIC)
    # Extending a compact patch keeps it compact and keeps each run's origin.
    ts("edit", model, "--patch", patch, "--set", "big[300,0]=7")
    back = tmp_path / "back.json"
    ts("invert", patch, "--out", back, "--format", "json", "--model", model)
    entries = json.loads(back.read_text())["entries"]
    assert entries and all(e.get("origin", {}).get("source") == "cli" for e in entries)
    assert any(e["offset"] == 300 * 512 * 4 for e in entries), "the later --set is in the patch"
