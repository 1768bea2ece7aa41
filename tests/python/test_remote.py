"""Remote models: every command and the web app on a model served by nginx (one file) and by
an S3-compatible server (a sharded model), byte for byte against the same model opened
locally; and the faults a network brings (errors, cut connections, a replaced file, a server
that is gone)."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import binary, run
from load import view_request
from remote_servers import FaultyRangeServer, Moto, Nginx, replace_file
from server import Server

E = "model.embed_tokens.weight"
Q = "model.layers.1.self_attn.q_proj.weight"


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli(*args, env=None, check=True):
    """The CLI with the remote cache in the test's own folder."""
    proc = subprocess.run([binary(), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    assert "panicked" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}: {proc.stderr}"
    return proc


@pytest.fixture
def cache_env(tmp_path):
    return dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))


@pytest.fixture
def served(tmp_path):
    """The demo model (one file) in a folder nginx serves."""
    root = tmp_path / "www"
    run("demo", "--out", root / "demo")
    nginx = Nginx(root).start()
    yield nginx, root / "demo"
    nginx.stop()


def sharded(folder: Path, out: Path):
    """The demo model split into two shards with an index, as a hub serves a large model
    (bytes copied as they are: every dtype kept)."""
    raw = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    names = sorted(header, key=lambda t: header[t]["data_offsets"][0])
    half = len(names) // 2
    out.mkdir(parents=True)
    files = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for f, ns in files.items():
        head, data = {"__metadata__": {"format": "pt"}}, bytearray()
        for t in ns:
            a, b = header[t]["data_offsets"]
            head[t] = dict(header[t], data_offsets=[len(data), len(data) + b - a])
            data += raw[8 + n + a : 8 + n + b]
        text = json.dumps(head).encode()
        text += b" " * (-len(text) % 8)
        (out / f).write_bytes(len(text).to_bytes(8, "little") + text + bytes(data))
    index = {"metadata": {"total_size": len(raw) - 8 - n}, "weight_map": {t: f for f, ns in files.items() for t in ns}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(folder / "tokenizer.json", out / "tokenizer.json")
    return out


def same_output(remote, local, url, path):
    """The two outputs are the same once each names its own model (timings aside)."""
    a, b = remote.replace(url, "MODEL"), local.replace(str(path), "MODEL")
    try:
        a, b = json.loads(a), json.loads(b)
    except ValueError:
        return a == b
    untimed = lambda d: {k: v for k, v in d.items() if not k.endswith("_seconds")} if isinstance(d, dict) else d
    return untimed(a) == untimed(b)


READS = [
    ("inspect", "--json"),
    ("inspect",),
    ("slice", E, "3,0:8", "--json"),
    ("slice", Q, "::7,5", "--json"),  # a strided column: element by element
    ("stats", Q, "--json"),
    ("stats", "--json"),
    ("scan", "--json"),
    ("project", E, "--json"),
    ("tokens", "--nearest", " Paris", "--k", "5", "--json"),
]


def test_every_command_reads_a_remote_file_as_the_local_one(served, tmp_path, cache_env):
    nginx, local = served
    url = nginx.url("demo/model.safetensors")
    path = local / "model.safetensors"
    for cmd in READS:
        remote_out = cli(cmd[0], url, *cmd[1:], env=cache_env).stdout
        local_out = cli(cmd[0], path, *cmd[1:], env=cache_env).stdout
        assert same_output(remote_out, local_out, url, path), cmd

    # Edit into a patch, verify, bake, invert, diff: the same patch and the same bytes.
    edits = ("--set", f"{E}[2,3]=1.5", "--scale", f"{Q}[1,:]=-2", "--add", f"{Q}[::9,4]=0.25")
    for model, name in [(url, "remote"), (path, "local")]:
        cli("edit", model, "--patch", tmp_path / f"{name}.json", *edits, env=cache_env)
        assert "ok: " in cli("verify", model, tmp_path / f"{name}.json", env=cache_env).stdout
        cli("apply", model, tmp_path / f"{name}.json", "--out", tmp_path / f"{name}-baked.safetensors", env=cache_env)
    patches = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("remote", "local")]
    assert patches[0]["entries"] == patches[1]["entries"]
    # One base: the same file fingerprint; the remote one also names the version it was made on.
    assert [dict(f, version=None) for f in patches[0]["base"]] == [dict(f, version=None) for f in patches[1]["base"]]
    assert patches[0]["base"][0]["version"].startswith('"') and "version" not in patches[1]["base"][0]
    assert sha(tmp_path / "remote-baked.safetensors") == sha(tmp_path / "local-baked.safetensors")
    assert sha(tmp_path / "remote-baked.safetensors") != sha(path)
    cli("diff", url, tmp_path / "local-baked.safetensors", "--out", tmp_path / "d.json", "--format", "json", env=cache_env)
    unmarked = lambda entries: [{k: v for k, v in e.items() if k != "origin"} for e in entries]
    assert json.loads((tmp_path / "d.json").read_text())["entries"] == unmarked(patches[1]["entries"])
    cli("invert", tmp_path / "remote.json", "--out", tmp_path / "inv.json", env=cache_env)
    cli("apply", tmp_path / "remote-baked.safetensors", tmp_path / "inv.json", "--out", tmp_path / "back.safetensors")
    assert sha(tmp_path / "back.safetensors") == sha(path)
    # A patch made on the remote model applies to the local one and back: one base.
    assert "ok: " in cli("verify", path, tmp_path / "remote.json").stdout


def test_the_header_takes_two_requests_and_a_slice_reads_only_its_bytes(served, cache_env):
    nginx, local = served
    url = nginx.url("demo/model.safetensors")
    cli("inspect", url, env=cache_env)
    model_reads = [r for r in nginx.requests() if r[1] == "/demo/model.safetensors"]
    assert [r[3] for r in model_reads][:1] == ["bytes=0-7"] and len(model_reads) == 2
    n = len(nginx.requests())
    cli("slice", url, E, "5,0:16", env=cache_env)
    new = [r for r in nginx.requests()[n:] if r[1] == "/demo/model.safetensors"]
    # The header again (its version is checked on every open), then exactly 16 F32 values.
    assert [r[4] for r in new] == [8, new[1][4], 64]
    # The same slice again, in a new process: the cache answers, only the header is read.
    n = len(nginx.requests())
    cli("slice", url, E, "5,0:16", env=cache_env)
    new = [r for r in nginx.requests()[n:] if r[1] == "/demo/model.safetensors"]
    assert len(new) == 2


def test_a_sharded_model_on_s3_reads_and_bakes_as_the_local_one(served, tmp_path, cache_env):
    _, demo = served
    local = sharded(demo, tmp_path / "sharded")
    moto = Moto().start()
    try:
        moto.upload_folder("models", "demo", local)
        env = dict(cache_env, **moto.env)
        url = "s3://models/demo/model.safetensors.index.json"
        for cmd in [("inspect", "--json"), ("slice", Q, "2:4,0:3", "--json"), ("stats", "--json")]:
            remote_out = cli(cmd[0], url, *cmd[1:], env=env).stdout
            local_out = cli(cmd[0], local / "model.safetensors.index.json", *cmd[1:], env=env).stdout
            assert same_output(remote_out, local_out, url, local / "model.safetensors.index.json"), cmd
        cli("edit", url, "--patch", tmp_path / "p.json", "--set", f"{Q}[0,0]=7", "--set", f"{E}[0,0]=-3", env=env)
        cli("apply", url, tmp_path / "p.json", "--out", tmp_path / "r", env=env)
        cli("apply", local / "model.safetensors.index.json", tmp_path / "p.json", "--out", tmp_path / "l")
        for f in sorted(p.name for p in (tmp_path / "l").iterdir()):
            assert sha(tmp_path / "r" / f) == sha(tmp_path / "l" / f), f
        # A folder URL finds the index.
        assert "2 file(s)" in cli("inspect", "s3://models/demo", env=env).stdout
        # A missing object is a clear error.
        r = cli("inspect", "s3://models/nothing/model.safetensors", env=env, check=False)
        assert r.returncode == 1 and "not found" in r.stderr and "s3://models/nothing" in r.stderr
    finally:
        moto.stop()


def test_the_web_app_lists_views_edits_saves_and_bakes_a_remote_model(served, tmp_path, cache_env):
    nginx, local = served
    url = nginx.url("demo/model.safetensors")
    os.environ["XDG_CACHE_HOME"] = cache_env["XDG_CACHE_HOME"]
    try:
        remote = Server(url, "--out-dir", str(tmp_path / "rbaked"), "--patches", str(tmp_path / "rp")).start()
        plain = Server(local, "--out-dir", str(tmp_path / "lbaked"), "--patches", str(tmp_path / "lp")).start()
    finally:
        del os.environ["XDG_CACHE_HOME"]
    try:
        models = [s.call("GET", "/api/model") for s in (remote, plain)]
        assert models[0]["tensors"] == models[1]["tensors"]
        assert models[0]["path"] == url
        n = len(nginx.requests())
        for s in (remote, plain):
            s.edit(Q, "3,4", {"op": "set", "value": "2.5"})
            s.edit(E, "7,:", {"op": "scale", "factor": 0.5})
        views = [s.call("POST", "/api/view_json", view_request(Q, 0, 0, 16)) for s in (remote, plain)]
        assert views[0]["bytes"] == views[1]["bytes"]
        pooled = [s.call("POST", "/api/view_json", view_request(E, grid=64)) for s in (remote, plain)]
        assert pooled[0]["pooled"] == pooled[1]["pooled"] and pooled[0]["block"] != [1, 1]
        # A view seen before costs no request.
        count = len(nginx.requests())
        remote.call("POST", "/api/view_json", view_request(Q, 0, 0, 16))
        assert len(nginx.requests()) == count
        assert len(nginx.requests()) > n
        saved = [json.loads(Path(s.call("POST", "/api/save_patch", {"name": "mine", "note": ""})).read_text()) for s in (remote, plain)]
        assert saved[0]["entries"] == saved[1]["entries"] and len(saved[0]["entries"]) > 1
        baked = []
        for s in (remote, plain):
            st = s.bake("out")
            assert st["error"] is None, st
            baked.append(st["written"][0])
        assert sha(baked[0]) == sha(baked[1])
    finally:
        remote.stop()
        plain.stop()


def test_transient_errors_and_cut_connections_are_retried(tmp_path, cache_env):
    run("demo", "--out", tmp_path / "www" / "demo")
    srv = FaultyRangeServer(tmp_path / "www").start()
    try:
        url = srv.url("demo/model.safetensors")
        want = cli("slice", tmp_path / "www" / "demo" / "model.safetensors", E, "9,:", "--json").stdout
        srv.fail(2)
        assert cli("slice", url, E, "9,:", "--json", env=cache_env).stdout == want
        srv.cut(2)
        assert cli("slice", url, E, "10,:", "--json", env=cache_env).stdout == cli("slice", tmp_path / "www" / "demo" / "model.safetensors", E, "10,:", "--json").stdout
    finally:
        srv.stop()


def test_a_replaced_file_and_a_server_that_is_gone(tmp_path, cache_env):
    www = tmp_path / "www"
    run("demo", "--out", www / "demo")
    srv = FaultyRangeServer(www).start()
    model = www / "demo" / "model.safetensors"
    os.environ["XDG_CACHE_HOME"] = cache_env["XDG_CACHE_HOME"]
    try:
        s = Server(srv.url("demo/model.safetensors"), "--out-dir", str(tmp_path / "baked"), "--patches", str(tmp_path / "p")).start()
    finally:
        del os.environ["XDG_CACHE_HOME"]
    try:
        s.edit(Q, "0,0", {"op": "set", "value": "1"})
        # The file is replaced on the server (same size, other weights).
        data = bytearray(model.read_bytes())
        data[-64:] = bytes(64)
        replace_file(model, bytes(data))
        status, body = s.call("POST", "/api/edit", {"request": {"tensor": Q, "spec": "5,5", "op": {"op": "set", "value": "3"}}}, ok=False)
        assert status == 409 and "changed on the server" in body, body
        st = s.bake("out")
        assert st["error"] and "changed on the server" in st["error"]
        assert not (tmp_path / "baked").exists() or list((tmp_path / "baked").iterdir()) == []
        # A new session on the new version says the old one's edits were not replayed.
        s2 = Server(srv.url("demo/model.safetensors"), "--out-dir", str(tmp_path / "baked"), "--patches", str(tmp_path / "p"), "--cache-dir", str(tmp_path / "c2")).start()
        try:
            assert s2.call("GET", "/api/session")["steps"] == []
            warnings = s2.call("GET", "/api/model")["warnings"]
            assert any("changed on the server since the last session" in w for w in warnings), warnings
        finally:
            s2.stop()
        # The server stops: reads fail fast with the URL named; the session still answers.
        srv.stop()
        status, body = s.call("POST", "/api/view_json", view_request(E, 100, 0, 8), ok=False)
        assert status >= 400 and "127.0.0.1" in body, body
        assert len(s.call("GET", "/api/session")["steps"]) == 1
    finally:
        s.stop()


def test_running_a_remote_model_gives_the_local_answers(minilm, smollm2, tmp_path, cache_env):
    """`run`, `probe` and `activations` read a model served by nginx (its config and
    tokenizer copied beside the cache) and answer as on the local folder."""
    www = tmp_path / "www"
    www.mkdir()
    for m in (minilm, smollm2):
        (www / m.name).symlink_to(m, target_is_directory=True)
    nginx = Nginx(www).start()
    try:
        jobs = [
            (minilm, ("run", "--sentence", "A man is eating food.", "--sentence", "The girl is carrying a baby.", "--json")),
            (smollm2, ("run", "--prompt", "The capital of France is", "--top-k", "5", "--json")),
            (smollm2, ("activations", "--prompt", "The capital of France is", "--layer", "3", "--top", "5", "--json")),
        ]
        probes = tmp_path / "probes.json"
        probes.write_text(json.dumps({"version": 1, "probes": [{"prompt": "The capital of France is", "target": " Paris", "kind": "expect"}]}))
        jobs.append((smollm2, ("probe", "--probes", probes, "--json")))
        for folder, (cmd, *args) in jobs:
            remote = json.loads(cli(cmd, nginx.url(f"{folder.name}/model.safetensors"), *args, env=cache_env).stdout)
            local = json.loads(cli(cmd, folder / "model.safetensors", *args, env=cache_env).stdout)
            assert remote == local, cmd
    finally:
        nginx.stop()
