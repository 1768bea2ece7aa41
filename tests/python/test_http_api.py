"""The HTTP API of the real server: every endpoint, bad inputs, Host/Origin checks,
read-only mode, and edits surviving a kill -9."""

import json
import time
import urllib.parse

import numpy as np
import pytest

from conftest import run
from helpers import sha256
from safetensors.numpy import save_file
from server import Server

W = "model.embed_tokens.weight"
Q = "model.layers.0.mlp.up_proj.weight"  # I8


@pytest.fixture
def server(demo):
    s = Server(demo).start()
    yield s
    s.stop()


def cell(server, tensor, index):
    q = urllib.parse.urlencode({"tensor": tensor, "index": ",".join(map(str, index))})
    return server.call("GET", f"/api/cell?{q}")


def test_model_summary_and_cells_match_the_cli(server, demo):
    m = server.call("GET", "/api/model")
    listed = run("inspect", demo, "--json").json()
    assert [t["name"] for t in m["tensors"]] == [t["name"] for t in listed["tensors"]]
    assert dict(m["metadata"]) == listed["metadata"]
    c = cell(server, W, [3, 5])
    want = run("slice", demo, W, "3,5", "--json").json()
    assert c["hex"] == want["hex"][0]
    assert np.float32(c["value"]) == np.float32(want["values"][0]), "shortest text that round-trips in F32"


def test_edit_undo_redo(server, demo):
    s = server.edit(W, "1,2", {"op": "set", "value": "2.5"})
    assert s["total_elements"] == 1 and s["can_undo"] and not s["can_redo"]
    assert s["entries"][0]["new_value"] == "2.5" and s["entries"][0]["index"] == [1, 2]
    assert cell(server, W, [1, 2])["value"] == "2.5"
    s = server.edit(W, "0:2,0:3", {"op": "scale", "factor": 2})
    assert s["total_elements"] == 6
    assert cell(server, W, [1, 2])["value"] == "5"
    s = server.call("POST", "/api/undo", {})
    assert cell(server, W, [1, 2])["value"] == "2.5" and s["can_redo"]
    server.call("POST", "/api/redo", {})
    assert cell(server, W, [1, 2])["value"] == "5"
    # The base file is never written.
    assert run("slice", demo, W, "1,2", "--json").json()["values"][0] != 5


@pytest.mark.parametrize(
    "tensor,spec,op,status,message",
    [
        (W, "0,0", {"op": "set", "value": "abc"}, 400, '"abc" is not a number'),
        (Q, "0,0", {"op": "set", "value": "300"}, 400, "300 is out of range for I8 (it holds -128 to 127)"),
        (Q, "0,0", {"op": "set", "value": "0.5"}, 400, "0.5 is not a whole number"),
        (W, "0,0", {"op": "hex", "hex": "0000"}, 400, "is not 4 bytes for F32"),
        (W, "0,0", {"op": "hex", "hex": "zzzzzzzz"}, 400, "is not 4 bytes for F32"),
        (W, "9999,0", {"op": "zero"}, 400, "index 9999 out of bounds for dim 0 of size 2048"),
        (W, "0,,1", {"op": "zero"}, 400, "cannot read slice"),
        ("nope", "0", {"op": "zero"}, 404, 'no tensor named "nope"'),
    ],
)
def test_bad_edits_are_rejected_with_a_message_and_change_nothing(server, tensor, spec, op, status, message):
    got, body = server.call("POST", "/api/edit", {"request": {"tensor": tensor, "spec": spec, "op": op}}, ok=False)
    assert got == status, body
    assert message in body
    assert server.call("GET", "/api/session")["total_elements"] == 0


def test_malformed_requests(server):
    status, _ = server.call("POST", "/api/edit", None, headers={"Content-Type": "application/json"}, ok=False)
    assert status >= 400
    status, body = server.call("POST", "/api/edit", {"request": {"tensor": W}}, ok=False)
    assert status >= 400 and "missing field" in body
    status, body = server.call("GET", "/api/cell?tensor=model.embed_tokens.weight&index=1,x", ok=False)
    assert status == 400 and "not a list of whole numbers" in body
    status, body = server.call("GET", "/api/cell?tensor=model.embed_tokens.weight&index=1", ok=False)
    assert status == 400 and "has 2 dims" in body


def test_host_and_origin_checks(server):
    port = server.port
    status, _ = server.call("GET", "/api/model", headers={"Host": f"evil.example:{port}"}, ok=False)
    assert status == 403, "DNS rebinding: a foreign Host is refused"
    assert server.call("GET", "/api/model", headers={"Host": f"localhost:{port}"})
    body = {"request": {"tensor": W, "spec": "0,0", "op": {"op": "zero"}}}
    status, text = server.call("POST", "/api/edit", body, headers={"Origin": "http://evil.example"}, ok=False)
    assert status == 403 and "may not change this model" in text
    status, _ = server.call("POST", "/api/edit", body, headers={"Sec-Fetch-Site": "cross-site"}, ok=False)
    assert status == 403
    assert server.call("GET", "/api/session")["total_elements"] == 0
    assert server.call("POST", "/api/edit", body, headers={"Origin": f"http://127.0.0.1:{port}"})["total_elements"] == 1


def test_read_only_disables_edits(demo):
    s = Server(demo, "--read-only").start()
    try:
        assert s.call("GET", "/api/model")["read_only"] is True
        status, body = s.call("POST", "/api/edit", {"request": {"tensor": W, "spec": "0,0", "op": {"op": "zero"}}}, ok=False)
        assert status == 403 and "--read-only" in body
        status, _ = s.call("POST", "/api/undo", {}, ok=False)
        assert status == 403
    finally:
        s.stop()


def test_save_download_load_and_bake(server, demo, tmp_path):
    server.edit(W, "2,2", {"op": "set", "value": "-1"})
    path = server.call("POST", "/api/save_patch", {"name": "mine", "note": "from a test"})
    doc = json.loads(open(path).read())
    assert path.endswith("mine.json") and doc["note"] == "from a test"
    assert doc["entries"][0]["patched"] == "000080bf"
    status, text = server.request("GET", "/api/patch/download")
    assert status == 200 and json.loads(text)["entries"] == doc["entries"]
    status, body = server.call("POST", "/api/save_patch", {"name": "../escape", "note": ""}, ok=False)
    assert status == 400 and "not a plain file name" in body

    # Loading a patch whose originals do not match lists the conflicts and applies nothing.
    bad = dict(doc, entries=[dict(doc["entries"][0], original="ffffffff")])
    out = server.call("POST", "/api/load_patch", {"text": json.dumps(bad)})
    assert out["applied"] is False and "patch expects ffffffff" in out["conflicts"][0]
    # A clean patch (made against the base) applies as one step.
    server.call("POST", "/api/undo", {})
    assert server.call("POST", "/api/load_patch", {"text": json.dumps(doc)})["applied"] is True
    assert cell(server, W, [2, 2])["value"] == "-1"

    st = server.bake("out")
    assert st["error"] is None and st["done"] == st["total"]
    baked = st["written"][0]
    assert baked.endswith("baked/out.safetensors")
    assert run("slice", baked, W, "2,2", "--json").json()["values"] == [-1]


def test_a_journal_is_not_replayed_onto_other_weights(demo):
    """A retrained checkpoint keeps the header and size: the journal must not apply to it."""
    s = Server(demo).start()
    for i in range(20):
        s.edit(W, f"0,{i}", {"op": "set", "value": str(i + 100)})
    s.kill9()
    # Same header, same size, every element of the edited tensor one ulp away.
    path = demo / "model.safetensors"
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    begin, end = json.loads(raw[8 : 8 + header_len])[W]["data_offsets"]
    start = 8 + header_len
    w = np.frombuffer(raw, dtype=np.uint32, count=(end - begin) // 4, offset=start + begin) ^ 1
    raw[start + begin : start + end] = w.tobytes()
    size = path.stat().st_size
    path.unlink()  # a new file, as a trainer writes one (never rewrite a mapped file in place)
    path.write_bytes(bytes(raw))
    assert path.stat().st_size == size
    s2 = Server(demo).start()
    try:
        session = s2.call("GET", "/api/session")
        assert session["steps"] == [] and session["total_elements"] == 0, "nothing replayed"
        warnings = s2.call("GET", "/api/model")["warnings"]
        assert any("other weights" in w and "nothing was replayed" in w for w in warnings), warnings
        assert cell(s2, W, [0, 3])["value"] != "103"
        kept = list((demo / "patches").glob("*.does-not-fit-model.*"))
        assert len(kept) == 1, "the journal is kept aside, not deleted"
        # The new session edits and survives a restart as usual.
        s2.edit(W, "1,1", {"op": "set", "value": "5"})
    finally:
        s2.kill9()
    s3 = Server(demo).start()
    try:
        assert len(s3.call("GET", "/api/session")["steps"]) == 1
    finally:
        s3.stop()


def test_edits_survive_kill_9(demo):
    s = Server(demo).start()
    s.edit(W, "0,0", {"op": "set", "value": "7"})
    s.edit(W, "0,1", {"op": "set", "value": "8"})
    s.edit(W, "0,2", {"op": "set", "value": "9"})
    s.call("POST", "/api/undo", {})
    before = s.call("GET", "/api/session")
    s.kill9()
    s2 = Server(demo).start()
    try:
        after = s2.call("GET", "/api/session")
        assert after["steps"] == before["steps"] and len(after["steps"]) == 2
        assert after["entries"] == before["entries"]
        assert after["can_redo"] is True
        assert cell(s2, W, [0, 1])["value"] == "8"
        s2.call("POST", "/api/undo", {})
        assert cell(s2, W, [0, 1])["value"] != "8"
        assert cell(s2, W, [0, 0])["value"] == "7"
    finally:
        s2.stop()


def test_kill_9_during_a_bake_leaves_the_base_and_the_target_name_untouched(tmp_path):
    """A bake streams into a temporary file and renames it: killed halfway, nothing is at the
    target name, the base is as it was, and the next server's bake works."""
    folder = tmp_path / "big"
    folder.mkdir()
    tensors = {f"w{i}": np.full((1024, 1024), i + 0.5, dtype=np.float32) for i in range(192)}  # 768 MiB
    save_file(tensors, str(folder / "model.safetensors"))
    base_sum = sha256(folder / "model.safetensors")
    s = Server(folder).start()
    killed_at = None
    try:
        s.edit("w0", "0,0", {"op": "set", "value": "2"})
        s.call("POST", "/api/bake", {"file_name": "out"})
        deadline = time.time() + 60
        while time.time() < deadline:
            st = s.call("GET", "/api/bake_status")
            if 0 < st["done"] < st["total"]:
                killed_at = st["done"] / st["total"]
                break
            assert st["running"], f"the bake finished before it could be interrupted: {st}"
            time.sleep(0.005)
    finally:
        s.kill9()
    assert killed_at is not None, "the bake never reported progress"
    assert not (folder / "baked" / "out.safetensors").exists(), "nothing at the target name"
    assert sha256(folder / "model.safetensors") == base_sum, "the base is untouched"
    s2 = Server(folder).start()
    try:
        s2.call("POST", "/api/bake", {"file_name": "out"})
        deadline = time.time() + 120
        while (st := s2.call("GET", "/api/bake_status"))["running"] and time.time() < deadline:
            time.sleep(0.05)
        assert st["error"] is None and st["written"], st
    finally:
        s2.stop()
    baked = folder / "baked" / "out.safetensors"
    assert run("slice", baked, "w0", "0,0", "--json").json()["values"] == [2.0], "the edit survived the crash and is baked"
    assert run("slice", baked, "w5", "3,4", "--json").json()["values"] == [float(tensors["w5"][3, 4])]


def test_edits_over_the_step_cap_are_413_and_change_nothing(demo):
    s = Server(demo, "--max-edit-bytes", "1000").start()
    try:
        # The whole embedding (2048 x 128 F32, 1 MiB) in one step: refused, nothing changes.
        status, body = s.call("POST", "/api/edit", {"request": {"tensor": W, "spec": "", "op": {"op": "scale", "factor": 2}}}, ok=False)
        assert status == 413, body
        assert "more than the 1000 B one step may" in body
        # A region step is measured by what it changes: two rows of 512 bytes are over the cap,
        # one row is not.
        swap = {"request": {"tensor": W, "spec": "", "region": {"op": "swap_rows", "a": 1, "b": 2}}}
        status, body = s.call("POST", "/api/region", swap, ok=False)
        assert status == 413 and "swap rows of model.embed_tokens.weight would change 1.0 KiB" in body, body
        assert s.call("GET", "/api/session")["steps"] == []
        s.edit(W, "3,0:8", {"op": "set", "value": "1"})
        assert len(s.call("GET", "/api/session")["steps"]) == 1
        # Comparing with a model that differs in the whole embedding: refused before any copy.
        for name, spec in [("far", ""), ("near", "5,0:4")]:
            run("edit", demo, "--patch", demo / f"{name}.json", "--scale", f"{W}[{spec}]=2")
            run("apply", demo, demo / f"{name}.json", "--out", demo / f"{name}.safetensors")
        status, body = s.call("POST", "/api/compare", {"other": str(demo / "far.safetensors")}, ok=False)
        assert status == 413 and "the difference to" in body and "1000 B" in body, body
        assert s.call("GET", "/api/session")["layers"] == []
        # A small difference loads as a layer, with exactly the differing bytes.
        out = s.call("POST", "/api/compare", {"other": str(demo / "near.safetensors")})
        changed = [r for r in out["rows"] if r["changed"]]
        assert [(r["tensor"], r["changed"]) for r in changed] == [(W, 4)]
        assert len(s.call("GET", "/api/session")["layers"]) == 1
    finally:
        s.stop()


def test_session_changes_are_long_polled(server):
    import threading

    v = server.call("GET", "/api/session")["version"]
    # A version the page has not seen: answered at once.
    assert server.call("GET", f"/api/session/changed?since={v + 5}") == v
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("v", server.call("GET", f"/api/session/changed?since={v}")))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "nothing changed: the request waits"
    server.edit(W, "0,0", {"op": "set", "value": "2"})
    waiter.join(5)
    assert got["v"] == v + 1
