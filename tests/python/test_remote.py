"""Remote models: every command and the web app on a model served by nginx (one file) and by
an S3-compatible server (a sharded model), byte for byte against the same model opened
locally; and the faults a network brings (errors, cut connections, a replaced file, a server
that is gone)."""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import time
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


class Remote:
    """A model on a server and the same model on disk: `url`, `path`, the environment the
    commands need (`env`), and the server's request log where it has one."""

    def __init__(self, url, path, env, requests=None):
        self.url, self.path, self.env, self.requests = url, path, env, requests


@pytest.fixture(params=["nginx", "s3"])
def remote(request, served, tmp_path, cache_env):
    """The demo model as one file behind nginx, or sharded (two files and an index) in an S3
    bucket served by moto."""
    nginx, demo = served
    if request.param == "nginx":
        yield Remote(nginx.url("demo/model.safetensors"), demo / "model.safetensors", cache_env, nginx.requests)
        return
    local = sharded(demo, tmp_path / "sharded")
    moto = Moto().start()
    try:
        moto.upload_folder("models", "demo", local)
        yield Remote("s3://models/demo/model.safetensors.index.json", local / "model.safetensors.index.json", dict(cache_env, **moto.env))
    finally:
        moto.stop()


@contextlib.contextmanager
def environment(env):
    """`env` as this process's environment for a while (servers started inherit it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def same_bake(a: Path, b: Path):
    """Two bakes hold the same bytes: one file, or a folder of shards and an index."""
    if a.is_file():
        return sha(a) == sha(b)
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(sha(a / n) == sha(b / n) for n in names)


def test_every_command_reads_a_remote_model_as_the_local_one(remote, tmp_path):
    url, path, env = remote.url, remote.path, remote.env
    for cmd in READS:
        remote_out = cli(cmd[0], url, *cmd[1:], env=env).stdout
        local_out = cli(cmd[0], path, *cmd[1:], env=env).stdout
        assert same_output(remote_out, local_out, url, path), cmd

    # Edit into a patch, verify, bake, invert, diff: the same patch and the same bytes.
    edits = ("--set", f"{E}[2,3]=1.5", "--scale", f"{Q}[1,:]=-2", "--add", f"{Q}[::9,4]=0.25")
    suffix = ".safetensors" if path.suffix == ".safetensors" else ""
    for model, name in [(url, "remote"), (path, "local")]:
        cli("edit", model, "--patch", tmp_path / f"{name}.json", *edits, env=env)
        assert "ok: " in cli("verify", model, tmp_path / f"{name}.json", env=env).stdout
        cli("apply", model, tmp_path / f"{name}.json", "--out", tmp_path / f"{name}-baked{suffix}", env=env)
    patches = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("remote", "local")]
    assert patches[0]["entries"] == patches[1]["entries"]
    # One base: the same file fingerprints; the remote ones also name the version they were
    # made on.
    assert [dict(f, version=None) for f in patches[0]["base"]] == [dict(f, version=None) for f in patches[1]["base"]]
    assert all(f["version"] for f in patches[0]["base"]) and all("version" not in f for f in patches[1]["base"])
    assert same_bake(tmp_path / f"remote-baked{suffix}", tmp_path / f"local-baked{suffix}")
    baked = tmp_path / f"local-baked{suffix}"
    baked_model = baked if suffix else baked / "model.safetensors.index.json"
    cli("diff", url, baked_model, "--out", tmp_path / "d.json", "--format", "json", env=env)
    unmarked = lambda entries: [{k: v for k, v in e.items() if k != "origin"} for e in entries]
    assert json.loads((tmp_path / "d.json").read_text())["entries"] == unmarked(patches[1]["entries"])
    cli("invert", tmp_path / "remote.json", "--out", tmp_path / "inv.json", "--model", url, env=env)
    back = tmp_path / f"back{suffix}"
    cli("apply", baked_model, tmp_path / "inv.json", "--out", back)
    originals = [path] if suffix else sorted(path.parent.glob("*.safetensors"))
    backs = [back] if suffix else [back / f.name for f in originals]
    assert [sha(f) for f in backs] == [sha(f) for f in originals]
    # Combine checks the patches against the model named, remote or local, alike.
    cli("edit", url, "--patch", tmp_path / "other.json", "--set", f"{E}[0,0]=4", env=env)
    for model, name in [(url, "remote"), (path, "local")]:
        cli("combine", tmp_path / "remote.json", tmp_path / "other.json", "--out", tmp_path / f"c-{name}.json", "--model", model, env=env)
    combined = [json.loads((tmp_path / f"c-{n}.json").read_text())["entries"] for n in ("remote", "local")]
    assert combined[0] == combined[1] and len(combined[0]) == len(patches[0]["entries"]) + 1
    # A patch made on the remote model applies to the local one: one base.
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


@pytest.mark.parametrize("remote", ["s3"], indirect=True)
def test_folder_urls_and_missing_objects_on_s3(remote):
    assert "2 file(s)" in cli("inspect", "s3://models/demo", env=remote.env).stdout
    r = cli("inspect", "s3://models/nothing/model.safetensors", env=remote.env, check=False)
    assert r.returncode == 1 and "not found" in r.stderr and "s3://models/nothing" in r.stderr


def test_the_web_app_lists_views_edits_saves_and_bakes_a_remote_model(remote, tmp_path):
    with environment(remote.env):
        far = Server(remote.url, "--out-dir", str(tmp_path / "rbaked"), "--patches", str(tmp_path / "rp")).start()
        near = Server(remote.path, "--out-dir", str(tmp_path / "lbaked"), "--patches", str(tmp_path / "lp")).start()
    try:
        models = [s.call("GET", "/api/model") for s in (far, near)]
        assert models[0]["tensors"] == models[1]["tensors"]
        assert models[0]["path"] == remote.url
        for s in (far, near):
            s.edit(Q, "3,4", {"op": "set", "value": "2.5"})
            s.edit(E, "7,:", {"op": "scale", "factor": 0.5})
        views = [s.call("POST", "/api/view_json", view_request(Q, 0, 0, 16)) for s in (far, near)]
        assert views[0]["bytes"] == views[1]["bytes"]
        pooled = [s.call("POST", "/api/view_json", view_request(E, grid=64)) for s in (far, near)]
        assert pooled[0]["pooled"] == pooled[1]["pooled"] and pooled[0]["block"] != [1, 1]
        # Transposed views read scattered elements: a few hundred ranges, or (past 4096) the span.
        for size in (16, None):
            req = view_request(Q, 0, 0, size, grid=512)
            req["request"]["spec"]["y_dim"], req["request"]["spec"]["x_dim"] = 1, 0
            turned = [s.call("POST", "/api/view_json", req) for s in (far, near)]
            assert turned[0]["bytes"] == turned[1]["bytes"] and turned[0]["block"] == [1, 1]
        cells = [s.call("GET", f"/api/cell?tensor={E}&index=7,5") for s in (far, near)]
        assert cells[0] == cells[1]
        if remote.requests:
            # A view seen before costs no request.
            count = len(remote.requests())
            far.call("POST", "/api/view_json", view_request(Q, 0, 0, 16))
            assert len(remote.requests()) == count
        saved = [json.loads(Path(s.call("POST", "/api/save_patch", {"name": "mine", "note": ""})).read_text()) for s in (far, near)]
        assert saved[0]["entries"] == saved[1]["entries"] and len(saved[0]["entries"]) > 1
        written = []
        for s in (far, near):
            st = s.bake("out")
            assert st["error"] is None, st
            written.append([Path(p) for p in st["written"]])
        assert [p.name for p in written[0]] == [p.name for p in written[1]]
        assert all(sha(a) == sha(b) for a, b in zip(*written))
        # "Compare with" a remote model: its difference becomes a layer.
        if remote.requests:
            shutil.copy(written[1][0], remote.path.parent / "edited.safetensors")
            out = far.call("POST", "/api/compare", {"other": remote.url.replace("model.safetensors", "edited.safetensors")})
            rows = {r["tensor"]: r for r in out["rows"]}
            assert rows[Q]["changed"] == 1 and rows[E]["changed"] == 128
    finally:
        far.stop()
        near.stop()


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


def test_a_remote_gguf_reads_and_runs_as_the_local_file(tmp_path, cache_env):
    """A GGUF served by nginx: its header read in range requests, the decoded values of a
    quantized tensor, its statistics and a run equal to the local file's."""
    import models

    gguf = models.smollm2_gguf()
    www = tmp_path / "www"
    www.mkdir()
    (www / gguf.name).symlink_to(gguf)
    nginx = Nginx(www).start()
    try:
        url = nginx.url(gguf.name)
        jobs = [
            ("inspect", "--json"),
            ("slice", "blk.3.ffn_down.weight", "5,0:40", "--json"),
            ("stats", "blk.0.attn_q.weight", "--json"),
            ("run", "--prompt", "The capital of France is", "--top-k", "5", "--json"),
        ]
        for cmd, *args in jobs:
            remote = json.loads(cli(cmd, url, *args, env=cache_env).stdout)
            local = json.loads(cli(cmd, gguf, *args, env=cache_env).stdout)
            assert remote == local, cmd
    finally:
        nginx.stop()


def test_a_long_remote_read_shows_its_progress_while_the_view_waits(tmp_path, cache_env):
    """A pooled overview of a 32 MiB tensor on a slow server: while the view waits, the server
    says what it reads and how far it got (what the page shows), and nothing once it is done."""
    import threading

    import numpy as np
    from safetensors.numpy import save_file

    www = tmp_path / "www"
    www.mkdir()
    big = np.random.default_rng(1).standard_normal((4096, 2048)).astype(np.float32)
    save_file({"big": big}, str(www / "big.safetensors"))
    srv = FaultyRangeServer(www).start()
    with environment(cache_env):
        s = Server(srv.url("big.safetensors")).start()
    try:
        srv.slow(0.02)  # 8 MiB parts at about 3 MiB/s each: a few seconds in all
        got = {}
        viewer = threading.Thread(target=lambda: got.update(v=s.call("POST", "/api/view_json", view_request("big", grid=64))))
        viewer.start()
        seen = []
        while viewer.is_alive():
            seen += s.call("GET", "/api/remote_reads")
            time.sleep(0.1)
        viewer.join()
        assert seen, "no read was reported while the view waited"
        assert {r["url"] for r in seen} == {srv.url("big.safetensors")}
        assert all(r["total"] == big.nbytes and 0 <= r["done"] <= r["total"] for r in seen)
        assert any(r["done"] < r["total"] for r in seen)
        assert got["v"]["block"] == [64, 32]
        assert s.call("GET", "/api/remote_reads") == []
    finally:
        s.stop()
        srv.stop()


def mcp_session(model, env, calls):
    """Runs `tensor-surgeon mcp MODEL` over stdio (newline-delimited JSON-RPC) and returns the
    text of each tool call's answer."""
    msgs = [
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "tests", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ] + [{"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": n, "arguments": a}} for i, (n, a) in enumerate(calls)]
    proc = subprocess.Popen([binary(), "mcp", str(model)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    answers = {}
    try:
        for m in msgs:
            proc.stdin.write(json.dumps(m) + "\n")
            proc.stdin.flush()
            if "id" not in m:
                continue
            while True:
                reply = json.loads(proc.stdout.readline())
                if reply.get("id") == m["id"]:
                    break
            if m["id"]:
                assert "result" in reply and not reply["result"].get("isError"), reply
                answers[m["id"]] = reply["result"]["content"][0]["text"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return [answers[i + 1] for i in range(len(calls))]


def test_the_agent_tools_read_a_remote_model_as_the_local_one(remote):
    calls = [
        ("tensor_info", {"tensor": Q}),
        ("read_values", {"tensor": E, "spec": "4,0:16"}),
        ("tensor_stats", {"tensor": Q}),
        ("nearest_tokens", {"token": " Paris", "k": 5}),
        ("propose_edit", {"tensor": Q, "spec": "1,1", "op": {"op": "set", "value": "0.5"}, "hypothesis": "a test"}),
    ]
    far = mcp_session(remote.url, remote.env, calls)
    near = mcp_session(remote.path, remote.env, calls)
    for (name, _), a, b in zip(calls, far, near):
        assert same_output(a, b, remote.url, remote.path), name


def test_https_with_the_servers_certificate_trusted(tmp_path, cache_env):
    """HTTPS through rustls: a server whose certificate the system trusts (here through
    SSL_CERT_FILE) is read like any other; one it does not trust is refused, clearly."""
    www = tmp_path / "www"
    run("demo", "--out", www / "demo")
    nginx = Nginx(www, tls=True).start()
    try:
        url = nginx.url("demo/model.safetensors")
        path = www / "demo" / "model.safetensors"
        trusted = dict(cache_env, SSL_CERT_FILE=str(nginx.cert))
        assert same_output(cli("slice", url, E, "3,0:8", "--json", env=trusted).stdout, cli("slice", path, E, "3,0:8", "--json").stdout, url, path)
        r = cli("inspect", url, env=cache_env, check=False)
        assert r.returncode == 1 and url in r.stderr and "certificate" in r.stderr.lower(), r.stderr
    finally:
        nginx.stop()
