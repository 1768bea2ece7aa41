"""Starts the real tensor-surgeon web server on a free port and talks to it over HTTP."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import ROOT, binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The access token the test servers are started with; every request sends it as a Bearer header.
TOKEN = "python-tests-local-token"


class Server:
    """One server process. Its log (stderr) goes to a file; `stop` fails the test if the server
    panicked anywhere, a background thread included."""

    def __init__(self, model: Path, *args: str, token: str | None = TOKEN, token_in_env=False):
        """`token=None`: the server makes its own (read from its log), or none with --no-auth.
        `token_in_env`: the token is given as TENSOR_SURGEON_TOKEN instead of --token."""
        self.port = free_port()
        self.model = model
        self.args = args
        self.token = token
        self.token_in_env = token_in_env
        self.proc = None
        self.log_file = None

    def start(self, poll=0.05, within=30):
        env = dict(os.environ, LEPTOS_SITE_ROOT=str(ROOT / "target" / "site"), LEPTOS_OUTPUT_NAME="tensor-surgeon")
        env.pop("TENSOR_SURGEON_TOKEN", None)
        auth = ["--token", self.token] if self.token and not self.token_in_env else []
        if self.token_in_env:
            env["TENSOR_SURGEON_TOKEN"] = self.token
        self.log_file = tempfile.NamedTemporaryFile(prefix="tensor-surgeon-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [binary(), "serve", "--model", str(self.model), "--addr", f"127.0.0.1:{self.port}", *auth, *self.args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
        )
        deadline = time.time() + within
        learn = self.token is None and "--no-auth" not in self.args
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            if learn:
                # A random token: read it from the address the server prints, as a person would.
                found = re.search(r"http://127\.0\.0\.1:\d+/\?token=([0-9a-f]+)", self.log())
                if not found:
                    time.sleep(poll)
                    continue
                self.token, learn = found.group(1), False
            try:
                if self.request("GET", "/api/model")[0] == 200:
                    return self
            except OSError:
                time.sleep(poll)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return Path(self.log_file.name).read_text(errors="replace") if self.log_file else ""

    def check_log(self):
        log = self.log()
        assert "panicked" not in log, f"the server panicked:\n{log}"
        Path(self.log_file.name).unlink(missing_ok=True)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.check_log()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.check_log()

    def request(self, method, path, body=None, headers=None, timeout=30):
        status, _, payload = self.exchange(method, path, body, headers, timeout)
        return status, payload

    def exchange(self, method, path, body=None, headers=None, timeout=30):
        """Like `request`, also returning the response headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = {"Host": f"127.0.0.1:{self.port}"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            body = json.dumps(body)
        hdrs.update(headers or {})
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        data = body.encode() if body is not None else b""
        if method != "GET":
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data if data else None)
        resp = conn.getresponse()
        payload = resp.read().decode()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload

    def call(self, method, path, body=None, headers=None, ok=True, timeout=30):
        status, payload = self.request(method, path, body, headers, timeout)
        if ok:
            assert status == 200, f"{method} {path}: {status} {payload}"
            return json.loads(payload)
        return status, payload

    def bake(self, file_name):
        """Starts a bake and waits for it to end; returns the last bake status."""
        self.call("POST", "/api/bake", {"file_name": file_name})
        for _ in range(600):
            st = self.call("GET", "/api/bake_status")
            if not st["running"]:
                return st
            time.sleep(0.05)
        raise AssertionError(f"the bake did not end: {st}")

    def mcp(self, tool, arguments, ok=True):
        """One MCP tool call at /mcp, as raw JSON-RPC over streamable HTTP (a session of its
        own): the tool's JSON answer, or (with `ok=False`) the result as it came."""
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        status, got, _ = self.exchange("POST", "/mcp", init, headers)
        assert status == 200
        headers["Mcp-Session-Id"] = got["mcp-session-id"]
        self.request("POST", "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        status, body = self.request("POST", "/mcp", call, headers, timeout=300)
        assert status == 200, body
        line = next(l for l in body.splitlines() if l.startswith("data:") and '"id":2' in l) if "data:" in body else body
        result = json.loads(line.removeprefix("data:"))["result"]
        if not ok:
            return result
        assert not result.get("isError"), result
        return json.loads(result["content"][0]["text"])

    def edit(self, tensor, spec, op, **extra):
        return self.call("POST", "/api/edit", {"request": {"tensor": tensor, "spec": spec, "op": op, **extra}})
