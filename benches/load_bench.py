"""The server under load for 30 s (tests/python/load.py: 16 readers of cells, 64 x 64 views, the
session and statistics, one editor of edits and undos, on a model with a 64 MiB tensor): p50/p99
latency by request kind, with no other work and with a client asking for pooled views of the
whole 64 MiB tensor at the same time. Run by ./dev.sh bench (release binary)."""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
os.environ.setdefault("TENSOR_SURGEON_BIN", str(ROOT / "target" / "release" / "tensor-surgeon"))

from load import BIG, percentiles, run_load, view_request, write_model  # noqa: E402
from server import Server  # noqa: E402


def pooled_views(server, stop, done):
    """Keeps asking for a pooled 256 x 256 view of the whole 64 MiB tensor (a full pass over
    it) until `stop`; counts them in `done`."""
    while not stop.is_set():
        status, _ = server.request("POST", "/api/view_json", view_request(BIG))
        assert status == 200
        done.append(1)


def main():
    seconds = float(os.environ.get("TS_LOAD_SECONDS", "30"))
    with tempfile.TemporaryDirectory() as d:
        model = Path(d) / "model.safetensors"
        write_model(model)
        print("\n| requests | p50 / p99 (ms) (count), alone | p50 / p99 (ms) (count), with pooled views of the whole 64 MiB tensor |")
        print("|---|---|---|")
        results = []
        for heavy in (False, True):
            s = Server(model, "--patches", str(Path(d) / f"p{int(heavy)}")).start()
            stop = threading.Event()
            pooled = []
            bg = threading.Thread(target=pooled_views, args=(s, stop, pooled))
            if heavy:
                bg.start()
            lat, errors, applied = run_load(s, seconds)
            stop.set()
            if heavy:
                bg.join()
            s.stop()
            assert not errors, errors[:3]
            results.append(lat)
            if heavy:
                print(f"(pooled views of the whole tensor during the run: {len(pooled)})", file=sys.stderr)
        for kind in ["cell", "view", "session", "stats", "edit", "undo"]:
            cells = []
            for lat in results:
                p = percentiles(lat[kind])
                cells.append(f"{p[0]:.1f} / {p[1]:.1f} ({p[2]:,})" if p else "-")
            print(f"| {kind} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
