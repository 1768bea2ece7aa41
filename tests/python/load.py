"""A load on the real server: 16 readers (cells, 64 x 64 views, the session, statistics and
histograms) and one editor (edits and undos) at once, for a given time. Used by the test suite (a few seconds,
test_load.py) and the benchmarks (30 s, benches/load_bench.py)."""

import random
import threading
import time
import urllib.parse

import numpy as np
from safetensors.numpy import save_file

BIG = "big"  # 4096 x 4096 F32: 64 MiB
SMALL = "small"


def write_model(path):
    rng = np.random.default_rng(0)
    save_file(
        {BIG: rng.standard_normal((4096, 4096), dtype=np.float32), SMALL: rng.standard_normal((256, 256), dtype=np.float32)},
        str(path),
    )


def view_request(tensor, y0=0, x0=0, size=None, grid=256):
    """A `/api/view_json` body: rows y0.. and columns x0.. (`size` of each; all when None),
    pooled into at most `grid` x `grid` blocks."""
    span = lambda start: {"start": start, "stop": start + size if size else 2**63, "step": 1}
    spec = {"y_dim": 0, "x_dim": 1, "index": [0, 0], "y": span(y0), "x": span(x0)}
    return {"request": {"tensor": tensor, "spec": spec, "max_rows": grid, "max_cols": grid, "stat": "MaxAbs", "mode": "After"}}


def run_load(server, seconds, readers=16, seed=0):
    """Runs the load; returns (latencies by kind in seconds, errors, the editor's applied edits
    as [(row, col, value)] in order)."""
    stop = time.monotonic() + seconds
    lat = {"cell": [], "view": [], "session": [], "stats": [], "edit": [], "undo": []}
    errors = []
    lock = threading.Lock()

    def timed(kind, method, path, body=None):
        t = time.perf_counter()
        status, payload = server.request(method, path, body)
        dt = time.perf_counter() - t
        with lock:
            lat[kind].append(dt)
            if status != 200:
                errors.append((kind, path, status, payload[:200]))
        return status

    def reader(k):
        rng = random.Random(seed * 1000 + k)
        while time.monotonic() < stop:
            r = rng.random()
            if r < 0.5:
                q = urllib.parse.urlencode({"tensor": BIG, "index": f"{rng.randrange(4096)},{rng.randrange(4096)}"})
                timed("cell", "GET", f"/api/cell?{q}")
            elif r < 0.65:
                timed("view", "POST", "/api/view_json", view_request(BIG, rng.randrange(4032), rng.randrange(4032), 64))
            elif r < 0.8:
                timed("session", "GET", "/api/session")
            elif r < 0.9:
                timed("stats", "GET", f"/api/stats?tensor={SMALL}")
            else:
                timed("stats", "GET", f"/api/histogram?tensor={SMALL}&bins=32")

    applied = []

    def editor():
        rng = random.Random(seed)
        n = 0
        while time.monotonic() < stop:
            if applied and rng.random() < 0.3:
                if timed("undo", "POST", "/api/undo", {}) == 200:
                    applied.pop()
            else:
                n += 1
                row, col, value = rng.randrange(4096), rng.randrange(4096), float(n)
                body = {"request": {"tensor": BIG, "spec": f"{row},{col}", "op": {"op": "set", "value": str(value)}}}
                if timed("edit", "POST", "/api/edit", body) == 200:
                    applied.append((row, col, value))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(readers)]
    threads.append(threading.Thread(target=editor))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors, applied


def percentiles(values):
    if not values:
        return None
    a = np.array(values) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), len(values)
