"""GGUF benchmarks, side by side in one run on the same files: Tensor Surgeon's CLI against
gguf-py (llama.cpp's Python reader and numpy decoders) for opening a file, reading rows of a
quantized tensor and the statistics of a whole one; and against llama.cpp (node-llama-cpp's
prebuilt CPU build, tests/llama_cpp) for greedy generation speed, 2 threads each.
Whole-process times (what a person at a terminal waits for), medians of several runs.
Prints a Markdown table of ratios (ours / reference: below 1 is faster).
Usage: .venv/bin/python benches/gguf_bench.py [--bin target/release/tensor-surgeon] [--no-generation]
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import models  # noqa: E402

BIN = Path(sys.argv[sys.argv.index("--bin") + 1]) if "--bin" in sys.argv else ROOT / "target" / "release" / "tensor-surgeon"
PY = sys.executable
RUNS = 5
GENERATE = 64
PROMPT = "The history of the city begins in the Roman era, when"


def timed(cmd, env=None, runs=RUNS):
    cmd = [str(c) for c in cmd]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gguf_py(code, path):
    return [PY, "-c", f"import sys, numpy as np, gguf\nr = gguf.GGUFReader(sys.argv[1])\n{code}", str(path)]


def tensor(path, name):
    import gguf

    return next(t for t in gguf.GGUFReader(path).tensors if t.name == name)


def ours_generation(path):
    """Seconds per generated token: a run of GENERATE + 1 tokens minus a run of 1 (the same
    prompt, the same process start and weight decoding)."""
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    one = timed([BIN, "run", path, "--prompt", PROMPT, "--generate", 1, "--json"], env=env, runs=3)
    many = timed([BIN, "run", path, "--prompt", PROMPT, "--generate", GENERATE + 1, "--json"], env=env, runs=3)
    return (many - one) / GENERATE


def llama_cpp_generation(path):
    args = json.dumps({"generate": GENERATE + 1, "generate_prompt": PROMPT, "threads": 2})
    rates = []
    for _ in range(3):
        out = subprocess.run(["node", str(ROOT / "tests" / "llama_cpp" / "reference.mjs"), str(path), args], capture_output=True, text=True, check=True)
        rates.append(json.loads(out.stdout)["generation"]["tokens_per_s"])
    return 1 / statistics.median(rates)


def row(*cells):
    print("| " + " | ".join(cells) + " |", flush=True)


def main():
    files = {"SmolLM2-135M Q4_1": models.smollm2_gguf(), "Gemma 3 270M Q4_K_M": models.gemma3_gguf()}
    print("| model | operation | ours | reference | ours / reference |")
    print("|---|---|---|---|---|", flush=True)
    for label, path in files.items():
        big = "token_embd.weight"
        t = tensor(path, big)
        cases = [
            ("open (list tensors and metadata)", [BIN, "inspect", path, "--json"], gguf_py("print(len(r.tensors), len(r.fields))", path)),
            (
                f"64 rows of {big} ({t.tensor_type.name}) as values",
                [BIN, "slice", path, big, "0:64", "--json"],
                gguf_py(f"t = next(t for t in r.tensors if t.name == '{big}')\nprint(gguf.quants.dequantize(t.data[:64], t.tensor_type).tolist())", path),
            ),
            (
                f"statistics of all of {big}",
                [BIN, "stats", path, big, "--json"],
                gguf_py(f"t = next(t for t in r.tensors if t.name == '{big}')\nx = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)\nprint(x.min(), x.max(), x.mean(), x.std())", path),
            ),
        ]
        for what, ours, ref in cases:
            a, b = timed(ours), timed(ref)
            row(label, what, f"{a:.3f} s", f"{b:.3f} s (gguf-py)", f"{a / b:.2f}x")
        if "--no-generation" in sys.argv:
            continue
        a, b = ours_generation(path), llama_cpp_generation(path)
        row(label, f"greedy generation, {GENERATE} tokens, 2 threads", f"{1 / a:.1f} tok/s", f"{1 / b:.1f} tok/s (llama.cpp)", f"{a / b:.2f}x")


if __name__ == "__main__":
    main()
