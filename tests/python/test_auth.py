"""Nobody but the user in: the access token over real HTTP (the address the server prints, the
cookie it sets, Bearer headers), `--no-auth`, `TENSOR_SURGEON_TOKEN`, and `/api/compare` kept
to the allowed folders."""

import http.client
import os

from conftest import run
from server import Server


def get(server, path, headers=None):
    """A GET with only the headers given (no token unless they carry one)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{server.port}", **(headers or {})})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_the_printed_address_logs_a_browser_in_and_nothing_else_does(demo):
    s = Server(demo, token=None).start()
    try:
        assert len(s.token) == 64, "a 256-bit random token"
        assert f"http://127.0.0.1:{s.port}/?token={s.token}" in s.log()
        # Without the token: the page, the API, the assets and /mcp all say 401.
        for path in ["/", "/api/model", "/api/session", "/pkg/tensor-surgeon.js", "/mcp"]:
            status, headers, body = get(s, path)
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Bearer"), path
            assert "?token=" in body, path
        assert get(s, "/api/model", {"Authorization": "Bearer " + "0" * 64})[0] == 401
        # The printed address: redirected to the page without the token, with the cookie set.
        status, headers, _ = get(s, f"/?token={s.token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"tensor-surgeon-{s.port}={s.token};")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        pair = cookie.split(";")[0]
        status, _, page = get(s, "/", {"Cookie": pair})
        assert status == 200 and "tensor-surgeon" in page
        assert get(s, "/pkg/tensor-surgeon.js", {"Cookie": pair})[0] == 200
        status, _, body = get(s, "/api/model", {"Cookie": pair})
        assert status == 200 and "model.embed_tokens.weight" in body
    finally:
        s.stop()


def test_the_token_can_be_set_and_auth_turned_off(demo):
    s = Server(demo, token="chosen-token-0123456789").start()
    try:
        assert get(s, "/api/model")[0] == 401
        assert get(s, "/api/model", {"Authorization": "Bearer chosen-token-0123456789"})[0] == 200
    finally:
        s.stop()
    open_server = Server(demo, "--no-auth", token=None).start()
    try:
        assert get(open_server, "/api/model")[0] == 200
        assert "--no-auth" in open_server.log()
    finally:
        open_server.stop()
    short = run("serve", "--model", demo, "--token", "short", check=False)
    assert short.code != 0 and "at least 16 characters" in short.err
    both = run("serve", "--model", demo, "--token", "x" * 20, "--no-auth", check=False)
    assert both.code != 0 and "cannot be used with" in both.err


def test_the_token_can_come_from_the_environment(demo):
    s = Server(demo, token="from-the-environment-0123", token_in_env=True).start()
    try:
        assert get(s, "/api/model")[0] == 401
        assert get(s, "/api/model", {"Authorization": "Bearer from-the-environment-0123"})[0] == 200
    finally:
        s.stop()


def test_compare_reads_only_the_allowed_folders(demo, tmp_path):
    outside = tmp_path / "elsewhere"
    run("demo", "--out", outside)
    s = Server(demo).start()
    try:
        status, body = s.call("POST", "/api/compare", {"other": str(outside)}, ok=False)
        assert status == 403 and "--allow-dir" in body
        assert s.call("GET", "/api/session")["layers"] == []
    finally:
        s.stop()
    s = Server(demo, "--allow-dir", str(outside)).start()
    try:
        out = s.call("POST", "/api/compare", {"other": str(outside)})
        assert out["other"] == str(outside)
    finally:
        s.stop()
    fifo = demo / "pipe.safetensors"
    os.mkfifo(fifo)
    s = Server(demo).start()
    try:
        status, body = s.call("POST", "/api/compare", {"other": str(fifo)}, ok=False)
        assert status == 400 and "not a regular file" in body
    finally:
        s.stop()
