"""t-SNE and UMAP of every row of MiniLM-L6's word embedding (30,522 x 384 F32), ours beside the
references in one run, on the same 2 cores and the same input (the rows reduced to their first
50 principal components first, as the references' pipelines do):

- t-SNE: `tensor-surgeon project --method tsne` (whole process: read, PCA, exact kNN, FIt-SNE
  on both cores, reproducible) vs openTSNE (PCA by scikit-learn, then
  TSNE(n_jobs=2)); 750 steps each (250 exaggerated);
- UMAP: `tensor-surgeon project --method umap` vs umap-learn (n_jobs=2), timed twice in one
  process: the first call includes numba's compilation, the second does not;
- quality: trustworthiness (k = 10, 5,000 sampled query points, the same for every layout) of
  each layout against the 384-D rows;
- time to the first live frame: when the layout first has points to show (`first_frame_seconds`
  of the JSON; a page polling the server sees it within one 200 ms poll).

Usage: .venv/bin/python benches/layout_bench.py [--rows N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from layouts import opentsne, pca50, trustworthiness, umap_learn  # noqa: E402
from models import minilm_dir  # noqa: E402

BIN = Path(os.environ.get("TENSOR_SURGEON_BIN", ROOT / "target" / "release" / "tensor-surgeon"))
TENSOR = "embeddings.word_embeddings.weight"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def ours(path, tensor, method, *extra):
    def go():
        out = subprocess.run([str(BIN), "project", str(path), tensor, "--method", method, "--json", *extra], check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    got, seconds = timed(go)
    return np.array(got["points"]), seconds, got


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=None, help="only the first N rows")
    args = parser.parse_args()
    model = minilm_dir() / "model.safetensors"
    with safe_open(str(model), "np") as f:
        x = f.get_tensor(TENSOR)
    path, tensor = model, TENSOR
    if args.rows:
        x = x[: args.rows].copy()
        path = Path(tempfile.mkdtemp()) / "rows.safetensors"
        save_file({"rows": x}, str(path))
        tensor = "rows"
    n = len(x)
    print(f"{n} x {x.shape[1]} rows, {os.cpu_count()} cores", flush=True)

    rows = []
    y, t_ours, got = ours(path, tensor, "tsne")
    first = got.get("first_frame_seconds")
    (y_ref), t_ref = timed(lambda: opentsne(pca50(x)))
    rows.append(("t-SNE", t_ours, t_ref, trustworthiness(x, y), trustworthiness(x, y_ref)))
    print(f"t-SNE: ours {t_ours:.1f} s, openTSNE {t_ref:.1f} s, first frame {first:.2f} s", flush=True)

    u, u_ours, got_u = ours(path, tensor, "umap")
    first_u = got_u.get("first_frame_seconds")
    u_ref, u_first = timed(lambda: umap_learn(pca50(x)))
    u_ref2, u_warm = timed(lambda: umap_learn(pca50(x)))
    rows.append(("UMAP (umap-learn warm)", u_ours, u_warm, trustworthiness(x, u), trustworthiness(x, u_ref2)))
    rows.append(("UMAP (umap-learn incl. numba compile)", u_ours, u_first, trustworthiness(x, u), trustworthiness(x, u_ref)))
    print(f"UMAP: ours {u_ours:.1f} s, umap-learn {u_first:.1f} s cold / {u_warm:.1f} s warm, first frame {first_u:.2f} s", flush=True)

    print()
    print("| layout | ours | reference | ratio (ours / ref) | trustworthiness ours | reference | difference |")
    print("|---|---|---|---|---|---|---|")
    for name, a, b, ta, tb in rows:
        print(f"| {name} | {a:.1f} s | {b:.1f} s | **{a / b:.2f}x** | {ta:.4f} | {tb:.4f} | {ta - tb:+.4f} |")
    print(f"| time to the first live frame (t-SNE / UMAP) | {first:.2f} s / {first_u:.2f} s | target 2 s | | | | |")


if __name__ == "__main__":
    main()
