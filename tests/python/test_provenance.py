"""Provenance: every patch entry says who made it (web, cli, agent + hypothesis, patch), and it
survives save -> load, the command line, and a restart; agent proposals change nothing until
accepted."""

import json
import urllib.parse

from conftest import run
from server import Server

W = "model.embed_tokens.weight"


def origins(doc):
    return [(e["tensor"], e["offset"], e.get("origin")) for e in doc["entries"]]


def propose(server, spec, value, hypothesis):
    """An agent proposal through the MCP endpoint."""
    args = {"tensor": W, "spec": spec, "op": {"op": "set", "value": value}, "hypothesis": hypothesis}
    return server.mcp("propose_edit", args)


def test_cli_edits_are_marked_cli(tmp_path):
    run("demo", "--out", tmp_path / "demo")
    patch = tmp_path / "p.json"
    run("edit", tmp_path / "demo", "--patch", patch, "--set", f"{W}[0,0]=1")
    doc = json.loads(patch.read_text())
    assert origins(doc) == [(W, 0, {"source": "cli"})]


def test_provenance_survives_save_load_and_restart(tmp_path):
    run("demo", "--out", tmp_path / "demo")
    cli_patch = tmp_path / "cli.json"
    run("edit", tmp_path / "demo", "--patch", cli_patch, "--set", f"{W}[1,0]=2")
    s = Server(tmp_path / "demo").start()
    try:
        s.edit(W, "0,0", {"op": "set", "value": "1"})
        assert s.call("POST", "/api/load_patch", {"text": cli_patch.read_text()})["applied"]
        p = propose(s, "0,1", "3", "row 0 carries the outlier")
        assert p["status"] == "pending"
        # Pending: reads do not change.
        q = urllib.parse.urlencode({"tensor": W, "index": "0,1"})
        before = s.call("GET", f"/api/cell?{q}")["value"]
        session = s.call("GET", "/api/session")
        assert [x["origin"]["hypothesis"] for x in session["pending"]] == ["row 0 carries the outlier"]
        assert session["total_elements"] == 2
        s.call("POST", "/api/resolve", {"id": p["id"], "accept": True})
        assert s.call("GET", f"/api/cell?{q}")["value"] == "3" != before
        rows = {tuple(e["index"]): e["origin"] for e in s.call("GET", "/api/session")["entries"]}
        assert rows == {(0, 0): "web", (0, 1): "agent: row 0 carries the outlier", (1, 0): "cli"}
        path = s.call("POST", "/api/save_patch", {"name": "mixed", "note": ""})
    finally:
        s.stop()
    saved = json.loads(open(path).read())
    assert origins(saved) == [
        (W, 0, {"source": "web"}),
        (W, 4, {"source": "agent", "hypothesis": "row 0 carries the outlier"}),
        (W, 512, {"source": "cli"}),
    ]
    # A fresh session (no journal) loads the file: the origins come back as they were.
    (tmp_path / "demo" / "patches").rename(tmp_path / "old-patches")
    s = Server(tmp_path / "demo").start()
    try:
        assert s.call("POST", "/api/load_patch", {"text": json.dumps(saved)})["applied"]
        again = json.loads(s.request("GET", "/api/patch/download")[1])
        assert origins(again) == origins(saved)
        # Restart (journal replay) keeps them too.
        s.stop()
        s = Server(tmp_path / "demo").start()
        again = json.loads(s.request("GET", "/api/patch/download")[1])
        assert origins(again) == origins(saved)
    finally:
        s.stop()


def test_rejected_and_pending_proposals(tmp_path):
    run("demo", "--out", tmp_path / "demo")
    s = Server(tmp_path / "demo").start()
    try:
        a = propose(s, "5,5", "9", "first idea")
        b = propose(s, "6,6", "9", "second idea")
        s.call("POST", "/api/resolve", {"id": a["id"], "accept": False})
        assert [p["id"] for p in s.call("GET", "/api/session")["pending"]] == [b["id"]]
        status, body = s.call("POST", "/api/resolve", {"id": a["id"], "accept": True}, ok=False)
        assert status == 404 and f"no pending proposal {a['id']}" in body
        # Pending proposals survive a crash.
        s.kill9()
        s = Server(tmp_path / "demo").start()
        assert [p["origin"]["hypothesis"] for p in s.call("GET", "/api/session")["pending"]] == ["second idea"]
        assert s.call("GET", "/api/session")["total_elements"] == 0
    finally:
        s.stop()
    auto = Server(tmp_path / "demo", "--agent-auto-apply").start()
    try:
        assert propose(auto, "7,7", "4", "apply at once")["status"] == "applied"
        assert auto.call("GET", "/api/session")["entries"][0]["origin"] == "agent: apply at once"
    finally:
        auto.stop()
