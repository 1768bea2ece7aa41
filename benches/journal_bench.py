"""The journal with big steps: one edit of a whole 16 MiB F32 tensor through the running server
(release binary), journaled and fsynced before the answer. Reports the journal's bytes beside
what the hex form (both sides of every changed byte, the format before big steps were written
compact) takes for the same step, the edit's latency beside the CLI making the same edit into
a compact patch file (the same planning, no server and no journal: what the journal and the
session add), and the replay time of a restart.
Run by ./dev.sh bench; the journal lives in target/ (a real disk, not a tmpfs)."""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
os.environ.setdefault("TENSOR_SURGEON_BIN", str(ROOT / "target" / "release" / "tensor-surgeon"))

from server import Server  # noqa: E402

ROWS, COLS = 2048, 2048  # 16 MiB of F32


def journal_of(patches: Path) -> Path:
    return next(patches.glob(".journal-*.jsonl"))


def main():
    (ROOT / "target").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as d:
        d = Path(d)
        model = d / "model.safetensors"
        rng = np.random.default_rng(0)
        save_file({"w": rng.standard_normal((ROWS, COLS), dtype=np.float32)}, str(model))
        size = ROWS * COLS * 4
        patches = d / "patches"
        s = Server(model, "--patches", str(patches)).start()
        times = []
        try:
            for factor in ["1.5", "2", "0.5"]:
                t = time.perf_counter()
                s.edit("w", "", {"op": "scale", "factor": float(factor)})
                times.append(time.perf_counter() - t)
        finally:
            s.stop()
        journal = journal_of(patches).stat().st_size
        hex_form = 3 * 4 * size  # per step: hex of the original and of the new bytes
        fs = subprocess.run(["stat", "-f", "-c", "%T", patches], capture_output=True, text=True).stdout.strip()
        patch = d / "cli.tsp"
        cli = []
        for factor in ["1.5", "2", "0.5"]:
            patch.unlink(missing_ok=True)
            t = time.perf_counter()
            subprocess.run([os.environ["TENSOR_SURGEON_BIN"], "edit", model, "--patch", patch, "--scale", f"w={factor}"], check=True, stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = Server(model, "--patches", str(patches)).start()
        replay = time.perf_counter() - t
        try:
            assert len(s.call("GET", "/api/session")["steps"]) == 3
        finally:
            s.stop()
        print(f"\njournal in {patches} (file system: {fs})")
        print("\n| benchmark | reference | ours | reference | ratio |")
        print("|---|---|---|---|---|")
        print(f"| journal bytes after 3 whole-tensor scales of a 16 MiB F32 tensor | hex of both sides (the line format before) | {journal:,} B | {hex_form:,} B | {journal / hex_form:.2f}x |")
        print(f"| one whole-tensor scale through the server (plan, journal + fsync, apply, answer), median of 3 | the CLI's `edit --scale` of the same tensor into a compact patch (whole process) | {statistics.median(times) * 1e3:.0f} ms | {statistics.median(cli) * 1e3:.0f} ms | {statistics.median(times) / statistics.median(cli):.2f}x |")
        print(f"\nrestart (open and replay those 3 steps, until the API answers): {replay * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
