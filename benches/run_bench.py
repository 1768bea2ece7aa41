"""Inference benchmarks, side by side in one run: Tensor Surgeon's forward pass (criterion,
crates/engine/benches/run.rs) against the numpy reference forward pass (tests/python/
reference.py) on the same SmolLM2-135M BF16 weights and prompt, and against the memory floor
of a decode step (the bytes of weights it must read, at the kernel's own measured bandwidth).
Prints a Markdown table of ratios.
Usage: ./dev.sh bench --only run   (or .venv/bin/python benches/run_bench.py)
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from models import smollm2_dir  # noqa: E402
from reference import Llama  # noqa: E402

# Keep in step with crates/engine/benches/run.rs.
LONG_PROMPT = (
    "The history of the city begins in the Roman era, when a small settlement grew along the "
    "river. Over the centuries it became a centre of trade, learning and art, and today it is "
    "known for"
)
CRITERION = ROOT / "target" / "criterion"
NAMES = [
    "run/prefill_32",
    "run/generate_32",
    "run/decode_step",
    "run/matvec_embedding",
    "run/rerun_unchanged_down_proj",
    "run/rerun_after_edit_down_proj",
    "run/rerun_unchanged_embedding",
    "run/rerun_after_edit_embedding",
]


def median_seconds(name):
    est = json.loads((CRITERION / name.replace("/", "_") / "new" / "estimates.json").read_text())
    return est["median"]["point_estimate"] / 1e9


def weight_bytes_per_token(folder):
    """Bytes a decode step reads: every 2-D weight once (the tied embedding as the unembedding;
    its lookup of one row is negligible)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        for name in f.keys():
            t = f.get_slice(name)
            shape = t.get_shape()
            if len(shape) == 2:
                total += shape[0] * shape[1] * 2  # BF16
    return total


def main():
    folder = smollm2_dir()
    # Stale estimates from an earlier run must not pass for this one's.
    for name in NAMES:
        shutil.rmtree(CRITERION / name.replace("/", "_"), ignore_errors=True)
    env = dict(os.environ, TS_RUN_MODEL=str(folder))
    subprocess.run(["cargo", "bench", "-p", "tensor-surgeon-engine", "--bench", "run"], cwd=ROOT, env=env, check=True)
    ours = {n: median_seconds(n) for n in NAMES}

    ref = Llama(folder)
    ids = ref.tokenizer.encode(LONG_PROMPT).ids[:32]
    assert len(ids) == 32
    ref.next_token_probs(ids)  # warm the page cache and numpy
    times = []
    for _ in range(3):
        t = time.perf_counter()
        ref.next_token_probs(ids)
        times.append(time.perf_counter() - t)
    numpy_prefill = statistics.median(times)
    # The reference's greedy generation (it recomputes the whole sequence for every token, as a
    # forward pass without a key/value cache does), per token, from the same 5-token prompt.
    ids5 = ref.tokenizer.encode("The capital of France is").ids
    t = time.perf_counter()
    ref.greedy(ids5, 8)
    numpy_per_token = (time.perf_counter() - t) / 8

    per_token = weight_bytes_per_token(folder)
    embed_bytes = 49152 * 576 * 2
    kernel_bw = embed_bytes / ours["run/matvec_embedding"]
    floor = per_token / kernel_bw
    decode = ours["run/decode_step"]
    gen_rate = 32 / ours["run/generate_32"]

    print("\n| benchmark | ours | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| next-token distribution, 32-token prompt | {ours['run/prefill_32'] * 1e3:.1f} ms | numpy reference {numpy_prefill * 1e3:.1f} ms | {numpy_prefill / ours['run/prefill_32']:.1f}x faster |")
    print(f"| greedy generation (5-token prompt + 32 tokens) | {gen_rate:.1f} tok/s | target 25 tok/s | {gen_rate / 25:.2f}x |")
    print(f"| greedy generation, per token | {1e3 / gen_rate:.1f} ms | numpy reference {numpy_per_token * 1e3:.0f} ms | {numpy_per_token * gen_rate:.0f}x faster |")
    print(f"| one decode step | {decode * 1e3:.1f} ms | memory floor {floor * 1e3:.1f} ms ({per_token / 1e6:.0f} MB at the kernel's {kernel_bw / 1e9:.1f} GB/s) | {decode / floor:.2f}x the floor |")
    for what in ["down_proj", "embedding"]:
        a = ours[f"run/rerun_after_edit_{what}"]
        b = ours[f"run/rerun_unchanged_{what}"]
        print(f"| re-run after a one-cell edit of the {what} | {a * 1e3:.1f} ms | re-run, nothing changed {b * 1e3:.1f} ms | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
