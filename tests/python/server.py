"""Starts the real tensor-surgeon web server on a free port and talks to it over HTTP."""

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import ROOT, binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, *args: str):
        self.port = free_port()
        self.model = model
        self.args = args
        self.proc = None

    def start(self):
        env = dict(os.environ, LEPTOS_SITE_ROOT=str(ROOT / "target" / "site"), LEPTOS_OUTPUT_NAME="tensor-surgeon")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--model", str(self.model), "--addr", f"127.0.0.1:{self.port}", *self.args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.request("GET", "/api/model")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode() if self.proc.poll() is not None else 'timeout'}")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def request(self, method, path, body=None, headers=None):
        status, _, payload = self.exchange(method, path, body, headers)
        return status, payload

    def exchange(self, method, path, body=None, headers=None):
        """Like `request`, also returning the response headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdrs = {"Host": f"127.0.0.1:{self.port}"}
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

    def call(self, method, path, body=None, headers=None, ok=True):
        status, payload = self.request(method, path, body, headers)
        if ok:
            assert status == 200, f"{method} {path}: {status} {payload}"
            return json.loads(payload)
        return status, payload

    def edit(self, tensor, spec, op, **extra):
        return self.call("POST", "/api/edit", {"request": {"tensor": tensor, "spec": spec, "op": op, **extra}})
