"""Real servers for remote-model tests: nginx serving a folder (with its access log read back
to count requests and bytes), an S3-compatible server (moto in server mode), and a small
range server that can misbehave on purpose (errors, cut connections, a replaced file)."""

import http.server
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from server import free_port


def wait_for_port(port, proc=None, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Nginx:
    """nginx (the Debian package) serving `root` on a free port, one process, no daemon.
    Its access log records each request's range and the body bytes sent."""

    def __init__(self, root: Path, tls=False):
        """`tls`: HTTPS only, with a certificate for 127.0.0.1 from an authority of the test's
        own (`self.cert`, to trust through SSL_CERT_FILE)."""
        self.root = Path(root)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.log = self.dir / "access.log"
        self.scheme = "https" if tls else "http"
        self.cert = None
        listen = f"127.0.0.1:{self.port}"
        if tls:
            self.cert, chain, key = self_signed(self.dir)
            listen += f" ssl; ssl_certificate {chain}; ssl_certificate_key {key}"
        conf = f"""
daemon off;
master_process off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format ranges '$request_method $uri $status "$http_range" $body_bytes_sent';
    access_log {self.log} ranges;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        listen {listen};
        root {self.root};
        etag on;
    }}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = None

    def start(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)], stderr=subprocess.PIPE)
        wait_for_port(self.port, self.proc)
        return self

    def url(self, rel: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{rel}"

    def requests(self):
        """(method, path, status, range, body bytes) of every request so far. nginx logs a
        request after it has answered it (a client may be gone before its line is written),
        so the log is read once it has not grown for a fifth of a second."""
        last, deadline = -1, time.monotonic() + 10
        while time.monotonic() < deadline:
            size = self.log.stat().st_size if self.log.exists() else 0
            if size == last:
                break
            last = size
            time.sleep(0.2)
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            m = re.match(r'(\S+) (\S+) (\d+) "([^"]*)" (\d+)', line)
            if m:
                out.append((m[1], m[2], int(m[3]), m[4], int(m[5])))
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def self_signed(folder: Path):
    """A certificate authority of the test's own and a server certificate for 127.0.0.1
    signed by it: (the authority's certificate, to trust; the server's certificate chain; its
    key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(subject, key, issuer, signer, ca):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("tests CA", ca_key, "tests CA", ca_key, True)
    leaf = issue("127.0.0.1", key, "tests CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "cert.pem", folder / "key.pem"


class Moto:
    """An S3-compatible server (moto in server mode) and the environment that points the AWS
    clients (ours and boto3) at it."""

    def __init__(self):
        self.port = free_port()
        self.proc = None
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self):
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)
        return self

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def upload_folder(self, bucket: str, prefix: str, folder: Path):
        s3 = self.client()
        s3.create_bucket(Bucket=bucket)
        for f in sorted(Path(folder).iterdir()):
            if f.is_file():
                s3.upload_file(str(f), bucket, f"{prefix}/{f.name}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class FaultyRangeServer:
    """Serves a folder with ranges, ETags and If-Match, and fails on request: `fail(n)` answers
    the next n range requests with 500; `cut(n)` sends the next n range bodies half-way and
    drops the connection; `slow(s)` pauses `s` seconds after every 64 KiB sent. `requests`
    counts GETs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = free_port()
        self.failures = 0
        self.cuts = 0
        self.pause = 0.0
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.requests += 1
                path = outer.root / self.path.lstrip("/").split("?")[0]
                if not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                st = path.stat()
                etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
                wanted = self.headers.get("If-Match")
                if wanted and wanted != etag:
                    self.send_response(412)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rng = self.headers.get("Range")
                data = path.read_bytes()
                start, end = 0, len(data)
                if rng:
                    m = re.match(r"bytes=(\d+)-(\d*)", rng)
                    start = int(m[1])
                    end = min(int(m[2]) + 1, len(data)) if m[2] else len(data)
                    with outer.lock:
                        fail = outer.failures > 0
                        outer.failures -= fail
                        cut = not fail and outer.cuts > 0 and end - start > 1
                        outer.cuts -= cut
                    if fail:
                        self.send_response(500)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:end]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", self.date_time_string(int(st.st_mtime)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                if outer.pause:
                    # Slow: the body in 64 KiB pieces, a pause after each.
                    for at in range(0, len(body), 1 << 16):
                        self.wfile.write(body[at : at + (1 << 16)])
                        time.sleep(outer.pause)
                    return
                if rng and cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def fail(self, n):
        with self.lock:
            self.failures = n

    def cut(self, n):
        with self.lock:
            self.cuts = n

    def slow(self, seconds_per_64k):
        with self.lock:
            self.pause = seconds_per_64k

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def replace_file(path: Path, data: bytes):
    """Replaces a file as a server-side upload would: new content, new mtime."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.utime(tmp, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    tmp.replace(path)
