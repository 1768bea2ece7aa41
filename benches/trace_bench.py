"""Causal tracing benchmark, side by side in one run on SmolLM2-135M (BF16, 30 layers), a
10-token prompt, 10 noise samples, 2 threads: the trace (which reruns only what a restoration
can change) against the reference's way of computing the same maps (`trace --rerun`: the whole
prompt through every layer for every cell), with the release CLI. Prints a Markdown table.
Usage: .venv/bin/python benches/trace_bench.py   (after ./dev.sh release)
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from models import smollm2_dir  # noqa: E402

BIN = Path(os.environ.get("TENSOR_SURGEON_BIN", ROOT / "target" / "release" / "tensor-surgeon"))
PROMPT = "The Eiffel Tower is located in the city of"
SUBJECT = "Eiffel Tower"


def trace(model, *args):
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    start = time.perf_counter()
    out = subprocess.run(
        [str(BIN), "trace", str(model), "--prompt", PROMPT, "--subject", SUBJECT, "--samples", "10", "--json", *args],
        check=True, capture_output=True, text=True, env=env,
    )
    return time.perf_counter() - start, json.loads(out.stdout)


def main():
    model = smollm2_dir() / "model.safetensors"
    rows = []
    fast_res, t_res = trace(model, "--kind", "residual")
    fast_all, _ = trace(model, "--kind", "all")
    slow_res, t_slow = trace(model, "--kind", "residual", "--rerun")
    worst = max(abs(a - b) for ra, rb in zip(t_res["residual"], t_slow["residual"]) for a, b in zip(ra, rb))
    tokens = len(t_res["tokens"])
    # A rerun cell costs the same whatever the kind: all three maps cost three residual maps.
    rows.append(("residual map", fast_res, slow_res, "measured"))
    rows.append(("all three maps", fast_all, 3 * slow_res, "3 x the residual rerun"))
    print(f"SmolLM2-135M, {tokens}-token prompt, subject {SUBJECT!r}, 10 samples, 2 threads; "
          f"clean p {t_res['clean']:.4f}, corrupted {t_res['corrupted']:.4f}; "
          f"largest difference between the two residual maps {worst:.2e}\n")
    print("| trace | ours | rerun per cell | ratio | rerun is |")
    print("|---|---|---|---|---|")
    for name, ours, ref, how in rows:
        print(f"| {name} | {ours:.1f} s | {ref:.1f} s | {ours / ref:.2f}x | {how} |")
    print(f"\n(all three maps, ours: {fast_all:.1f} s; the whole residual map agrees with the rerun)")
    assert worst < 1e-4, worst


if __name__ == "__main__":
    main()
