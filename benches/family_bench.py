"""The studies at real sizes, side by side: SmolLM2-135M (Q4_1 GGUF), Gemma 3 270M and
Qwen2.5-Coder-0.5B (Q4_K_M GGUFs), 2 threads, release binary. Per model: parameters, file size,
the causal trace (all three maps, 10 samples), a ROME fact edit and a directional ablation, each
a whole process with its wall time and peak RSS (GNU time), and each time per billion parameters
beside SmolLM2's (the cost should grow no faster than the model).
Usage: .venv/bin/python benches/family_bench.py [smollm2|gemma3|qwen25 ...] [--only trace|fact|ablate]
Set TENSOR_SURGEON_BIN to the binary to use (default: target/release/tensor-surgeon).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import models  # noqa: E402

BIN = Path(os.environ.get("TENSOR_SURGEON_BIN", ROOT / "target" / "release" / "tensor-surgeon"))
MODELS = {"smollm2": models.smollm2_gguf, "gemma3": models.gemma3_gguf, "qwen25": models.qwen25_gguf}
PROMPT, SUBJECT = "The Eiffel Tower is located in the city of", "The Eiffel Tower"
FROM = "The capital of France is\nThe Eiffel Tower is located in the city of\nThe Louvre museum is in\n"
TO = "The capital of Germany is\nThe Colosseum is located in the city of\nThe Prado museum is in\n"


def timed(args):
    """(wall seconds, peak RSS in MB, stdout) of one process."""
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", str(BIN), *map(str, args)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {proc.stderr[-2000:]}")
    wall, kb = proc.stderr.strip().splitlines()[-1].split()[1:]
    return float(wall), int(kb) / 1024, proc.stdout


def parameters(path):
    info = json.loads(subprocess.run([str(BIN), "inspect", str(path), "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    total = 0
    for t in info["tensors"]:
        n = 1
        for d in t["shape"]:
            n *= d
        total += n
    return total


def main(argv):
    only = None
    if "--only" in argv:
        i = argv.index("--only")
        only = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    names = argv or list(MODELS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "from.txt").write_text(FROM)
        (tmp / "to.txt").write_text(TO)
        for name in names:
            path = MODELS[name]()
            params = parameters(path)
            layers = json.loads(subprocess.run([str(BIN), "inspect", str(path), "--json"], capture_output=True,
                                               text=True, check=True).stdout)
            n_layers = sum(1 for t in layers["tensors"] if t["name"].endswith("ffn_down.weight"))
            row = {"model": name, "params": params, "file_mb": path.stat().st_size / 2**20, "layers": n_layers}
            if only in (None, "trace"):
                row["trace"] = timed(["trace", path, "--prompt", PROMPT, "--subject", SUBJECT, "--json"])[:2]
            if only in (None, "fact"):
                row["fact"] = timed(["edit-fact", path, "--subject", SUBJECT, "--prompt", PROMPT, "--target", " Rome",
                                     "--layer", max(1, n_layers // 5), "--out", tmp / f"{name}.json"])[:2]
            if only in (None, "ablate"):
                row["ablate"] = timed(["ablate", path, "--from", tmp / "from.txt", "--to", tmp / "to.txt",
                                       "--layer", n_layers // 2, "--token", " Paris", "--out", tmp / f"{name}.tsp"])[:2]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    base = rows[0]
    kinds = [k for k in ("trace", "fact", "ablate") if k in base]
    head = "| model | parameters | file | " + " | ".join(f"{k} (s, peak RSS) | {k} s per B params vs {base['model']}" for k in kinds) + " |"
    print(head)
    print("|" + "---|" * (3 + 2 * len(kinds)))
    for r in rows:
        cells = [r["model"], f"{r['params'] / 1e6:.0f} M", f"{r['file_mb']:.0f} MB"]
        for k in kinds:
            wall, rss = r[k]
            per = wall / r["params"]
            ratio = per / (base[k][0] / base["params"])
            budget = 2.5 * r["file_mb"] + 200
            cells.append(f"{wall:.1f} s, {rss:.0f} MB ({'within' if rss <= budget else 'over'} {budget:.0f})")
            cells.append(f"{ratio:.2f}x")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
