"""Remote models over HTTP (nginx on loopback), side by side with the alternatives in one run:

1. open a 100 GB model with 10,000 tensors (a sparse file: only its header has bytes): the
   requests per file and the time of `inspect`, against `inspect` of the same file opened
   locally;
2. a 512 x 512 BF16 view of a 4096 x 4096 tensor through the web server: the bytes fetched
   (nginx's count of body bytes sent) against the view's own bytes;
3. the first heatmap of a remote 1 GB model (server start, tensor list, a layer's view)
   against downloading the file with `curl` (what one does without range reads), both
   unthrottled and with nginx's per-connection rate held to 50 MB/s (a fast real link);
4. the same view again: requests made (the cache should answer).

Usage: .venv/bin/python benches/remote_bench.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
os.environ.setdefault("TENSOR_SURGEON_BIN", str(ROOT / "target" / "release" / "tensor-surgeon"))
from load import view_request  # noqa: E402
from remote_servers import Nginx  # noqa: E402
from server import Server  # noqa: E402

BIN = os.environ["TENSOR_SURGEON_BIN"]


def write_sparse(path: Path, tensors: dict, data=None):
    """A safetensors file from {name: (dtype, shape, bytes)}; without `data` the data section
    is a hole (a sparse file)."""
    width = {"BF16": 2, "F32": 4}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = width[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        if data is None:
            f.truncate(8 + len(text) + offset)
        else:
            remaining = offset
            while remaining:
                chunk = data(min(remaining, 64 << 20))
                f.write(chunk)
                remaining -= len(chunk)
    return offset


def timed(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return out, times[len(times) // 2]


def cli(*args, env):
    return subprocess.run([BIN, *map(str, args)], check=True, capture_output=True, text=True, env=env).stdout


def main():
    work = Path(tempfile.mkdtemp(prefix="remote-bench-", dir=ROOT / "target"))
    www = work / "www"
    www.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"))
    rows = []
    try:
        # 1. A 100 GB model of 10,000 tensors.
        big = {f"model.layers.{i // 10}.w{i % 10}.weight": ("BF16", [2560, 2048]) for i in range(10_000)}
        size = write_sparse(www / "big.safetensors", big)
        nginx = Nginx(www).start()
        url = nginx.url("big.safetensors")
        n0 = len(nginx.requests())
        _, remote_t = timed(lambda: cli("inspect", url, "--json", env=env))
        per_open = (len(nginx.requests()) - n0) / 5
        model_reqs = [r for r in nginx.requests()[n0:] if r[1] == "/big.safetensors"]
        _, local_t = timed(lambda: cli("inspect", www / "big.safetensors", "--json", env=env))
        rows.append(("open 100 GB / 10,000 tensors: requests to the model file per open", f"{len(model_reqs) / 5:.0f}", "<= 2"))
        rows.append(("open 100 GB / 10,000 tensors: all requests per open (with config/tokenizer probes)", f"{per_open:.0f}", ""))
        rows.append((f"open: `inspect --json` over HTTP vs local ({size / 1e9:.0f} GB)", f"{remote_t * 1000:.0f} ms vs {local_t * 1000:.0f} ms ({remote_t / local_t:.2f}x)", "<= 300 ms"))

        # 2. and 4. A 512 x 512 BF16 view of a 4096 x 4096 tensor, then the same again.
        import numpy as np

        rng = np.random.default_rng(0)
        write_sparse(www / "view.safetensors", {"w": ("BF16", [4096, 4096])}, data=lambda n: rng.integers(0, 255, n, dtype=np.uint8).tobytes())
        s = Server(nginx.url("view.safetensors"), "--cache-dir", str(work / "cache-view")).start()
        try:
            n0 = len(nginx.requests())
            s.call("POST", "/api/view_json", view_request("w", 1024, 2048, 512, grid=512))
            fetched = [r for r in nginx.requests()[n0:] if r[1] == "/view.safetensors"]
            got = sum(r[4] for r in fetched)
            want = 512 * 512 * 2
            rows.append(("512x512 BF16 view of 4096x4096: bytes fetched / view bytes", f"{got / want:.3f} ({got:,} / {want:,}; {len(fetched)} requests)", "<= 1.1"))
            n0 = len(nginx.requests())
            s.call("POST", "/api/view_json", view_request("w", 1024, 2048, 512, grid=512))
            rows.append(("the same view again: requests", f"{len(nginx.requests()) - n0}", "0"))
        finally:
            s.stop()
        nginx.stop()

        # 3. First heatmap of a remote 1 GB model vs curl of the file.
        layers = {}
        for i in range(30):
            for name, shape in [("q", [1536, 1536]), ("k", [256, 1536]), ("v", [256, 1536]), ("o", [1536, 1536]), ("gate", [2048, 1536]), ("up", [2048, 1536]), ("down", [1536, 2048])]:
                layers[f"model.layers.{i}.{name}.weight"] = ("BF16", shape)
        layers["model.embed_tokens.weight"] = ("BF16", [32000, 1536])
        size = write_sparse(www / "gb.safetensors", layers, data=lambda n: rng.integers(0, 255, n, dtype=np.uint8).tobytes())
        for label, rate in [("unthrottled loopback", None), ("50 MB/s per connection", "50m")]:
            nginx = Nginx(www)
            if rate:
                conf = nginx.dir / "nginx.conf"
                conf.write_text(conf.read_text().replace("etag on;", f"etag on; limit_rate {rate};"))
            nginx.start()
            try:
                t = time.perf_counter()
                subprocess.run(["curl", "-s", "-o", str(work / "gb.download"), nginx.url("gb.safetensors")], check=True)
                curl_t = time.perf_counter() - t
                (work / "gb.download").unlink()
                cache = work / f"cache-gb-{rate}"
                s = Server(nginx.url("gb.safetensors"), "--cache-dir", str(cache))
                t = time.perf_counter()
                s.start(poll=0.002)
                ready = time.perf_counter() - t
                try:
                    status, body = s.request("POST", "/api/view_json", view_request("model.layers.0.q.weight"))
                    ours = time.perf_counter() - t
                    assert status == 200 and json.loads(body)["rows"] > 0
                finally:
                    s.stop()
                rows.append((f"first heatmap of a remote {size / 1e9:.2f} GB model vs curl ({label})", f"{ours:.3f} s (server up {ready:.3f} s) vs {curl_t:.2f} s ({curl_t / ours:.1f}x sooner)", ">= 20x"))
            finally:
                nginx.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"binary: {BIN}")
    for what, got, target in rows:
        print(f"{what:<{width}}  {got}  {('target ' + target) if target else ''}")


if __name__ == "__main__":
    main()
