"""Side-by-side benchmarks: Tensor Surgeon vs its references, same files, same run.

Prepares the files, measures the references (Python safetensors + numpy, cp, xdelta3), runs the
criterion benches (benches/engine.rs) and the release binary on the same files and prints a
Markdown table of ratios.
Usage: ./dev.sh bench [--keep DIR] [--only engine|web|analysis|patches ...]
  (or .venv/bin/python benches/compare.py --only analysis, which needs only the release binary)
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("TENSOR_SURGEON_BIN", ROOT / "target" / "release" / "tensor-surgeon"))


def best_of(fn, repeat=7, number=1):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t) / number)
    return statistics.median(times)


RSS_PROBE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
sys.exit(print(usage.ru_maxrss) or os.waitstatus_to_exitcode(status))
"""


def child_peak_rss_mb(cmd):
    """Peak RSS (MB) of cmd in a fresh process. Linux carries a parent's RSS high-water mark
    into a forked child, so the command is started from a small intermediate interpreter,
    whose own few MB are the floor of this measurement."""
    out = subprocess.run([sys.executable, "-S", "-c", RSS_PROBE, *map(str, cmd)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip()) / 1024


def write_sparse(path, tensors=10_000, rows=2560, cols=1024):
    """A ~100 GB model of `tensors` F32 tensors whose data is a hole (sparse file)."""
    size = rows * cols * 4
    header = {f"model.layers.{i // 10}.w{i % 10}.weight": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [i * size, (i + 1) * size]} for i in range(tensors)}
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        f.truncate(8 + len(text) + tensors * size)


GROUPS = ["engine", "web", "analysis", "patches"]
# xdelta3 at its best compression and at its default level, each run the same number of times.
XDELTA_LEVELS = {"-9": ["-9"], "default": []}
PERCENTS = [0.1, 1, 5, 25, 50, 75, 95, 99, 99.9]  # the quantiles `stats` reports


def numpy_stats(x):
    """What `stats --json` reports, computed by numpy (float64 accumulators, as ours)."""
    lo, hi = x.min(), x.max()
    return lo, hi, x.mean(dtype=np.float64), x.std(dtype=np.float64), np.percentile(x, PERCENTS), np.histogram(x, bins=256, range=(lo, hi))


def ours_stats(path):
    out = subprocess.run([BIN, "stats", path, "w", "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["summary"]


def analysis_rows(work):
    """Statistics of one big tensor beside numpy, and the scan of a ~1 GB model against its target.
    Ours is the whole `tensor-surgeon` process (open, compute, print); the file is in the page cache."""
    rows = []
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8192, 8192), dtype=np.float32)  # 64 M elements
    for dtype, label, ref, widen in [(np.float32, "F32 (256 MB)", "numpy", None), (ml_dtypes.bfloat16, "BF16 (128 MB)", "numpy + ml_dtypes", np.float32)]:
        path = work / f"stats-{np.dtype(dtype).name}.safetensors"
        save_file({"w": x.astype(dtype)}, str(path))
        arr = load_file(str(path))["w"]
        prepare = (lambda a: a.astype(widen)) if widen else (lambda a: a)
        want = numpy_stats(prepare(arr))
        got = ours_stats(path)  # also warms the page cache
        assert (got["min"], got["max"]) == (float(want[0]), float(want[1])), "both sides compute the same thing"
        in_memory = best_of(lambda: numpy_stats(prepare(arr)), repeat=3)
        del arr
        with_load = best_of(lambda: numpy_stats(prepare(load_file(str(path))["w"])), repeat=3)
        mine = best_of(lambda: subprocess.run([BIN, "stats", path, "w", "--json"], check=True, stdout=subprocess.DEVNULL), repeat=5)
        what = f"stats + 256-bin histogram of an 8192x8192 {label} tensor of normal values (whole process)"
        widened = f"astype({np.dtype(widen).name}), then " if widen else ""
        rows.append((what, f"{ref}: {widened}min, max, mean, std, 9 percentiles, histogram(256) of the array in memory", mine, in_memory, "s"))
        rows.append((what, "same, plus safetensors.numpy.load_file", mine, with_load, "s"))
        path.unlink()
    del x

    scan = work / "scan"
    scan.mkdir(exist_ok=True)
    tensors = {}
    for i in range(8):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal((4096, 4096), dtype=np.float32) * 0.02
        tensors[f"model.layers.{i}.mlp.down_proj.weight"] = (rng.standard_normal((4096, 8192), dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    save_file(tensors, str(scan / "model.safetensors"))
    del tensors
    size = (scan / "model.safetensors").stat().st_size
    cmd = [BIN, "scan", scan, "--json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)  # page cache warm
    scan_t = best_of(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL), repeat=3)
    rows.append((f"scan of a {size / 1e9:.2f} GB model: 16 tensors, 8 F32 + 8 BF16 (whole process)", "target", scan_t, 5.0, "s"))
    return rows


def run_quiet(*cmd):
    subprocess.run([*map(str, cmd)], check=True, stdout=subprocess.DEVNULL)


def diff_rows(work):
    """`diff` of two ~90 MB models vs numpy reading both and comparing every tensor."""
    rng = np.random.default_rng(1)
    base = {f"layers.{i}.weight": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(22)}
    rows = []
    for label, moved in [("a quarter of the tensors fine-tuned", range(0, 22, 4)), ("every tensor fine-tuned", range(22))]:
        other = dict(base)
        for i in moved:
            name = f"layers.{i}.weight"
            other[name] = base[name] + rng.standard_normal((1024, 1024), dtype=np.float32) * np.float32(1e-3)
        bp, op = work / "diff-base.safetensors", work / "diff-other.safetensors"
        save_file(base, str(bp))
        save_file(other, str(op))

        def reference():
            a, b = load_file(str(bp)), load_file(str(op))
            report = {}
            for k, x in a.items():
                d = b[k] - x
                report[k] = (np.count_nonzero(x != b[k]), np.linalg.norm(d) / np.linalg.norm(x), np.abs(d).max())
            return report

        patch = work / "diff.patch"
        ours = best_of(lambda: run_quiet(BIN, "diff", bp, op, "--out", patch, "--json"), repeat=5)
        ref = best_of(reference, repeat=5)
        rows.append((f"diff of two 92 MB models, {label} (report + patch written)", "numpy: load_file both, count a != b, norms", ours, ref, "s"))
    return rows


def compact_rows(work):
    """Whole-tensor scales of a 100 MB F32 tensor: compact patch size and apply time vs xdelta3."""
    xdelta = shutil.which("xdelta3")
    if not xdelta:
        return []
    rng = np.random.default_rng(2)
    model = work / "scale-base.safetensors"
    save_file({"w": rng.standard_normal((5000, 5000), dtype=np.float32)}, str(model))
    rows = []
    for factor in ["1.1", "0.5"]:
        patch, baked, vcdiff, undone = (work / f"scale-{factor}.{ext}" for ext in ["tsp", "safetensors", "vcdiff", "xd.safetensors"])
        patch.unlink(missing_ok=True)
        edit_t = best_of(lambda: (patch.unlink(missing_ok=True), run_quiet(BIN, "edit", model, "--patch", patch, "--scale", f"w={factor}")), repeat=3)
        apply_t = best_of(lambda: run_quiet(BIN, "apply", model, patch, "--out", baked), repeat=3)
        what = f"whole-tensor scale x{factor} of a 100 MB F32 tensor"
        # Each side: the median of the same number of runs (3), at xdelta3's -9 and default level.
        for level, flags in XDELTA_LEVELS.items():
            xdelta_enc = best_of(lambda: run_quiet(xdelta, *flags, "-e", "-f", "-s", model, baked, vcdiff), repeat=3)
            xdelta_apply = best_of(lambda: run_quiet(xdelta, "-d", "-f", "-s", model, vcdiff, undone), repeat=3)
            rows.append((f"{what}: patch size (compact form)", f"xdelta3 {level} -e -s base baked", patch.stat().st_size, vcdiff.stat().st_size, "bytes"))
            rows.append((f"{what}: apply (verify + bake, whole process)", f"xdelta3 -d -s base vcdiff ({level})", apply_t, xdelta_apply, "s"))
            rows.append((f"{what}: write the patch (edit, whole process)", f"xdelta3 {level} -e -s base baked", edit_t, xdelta_enc, "s"))
    return rows


def print_rows(rows):
    """Rows against a peer as ratios; rows against a fixed target (a reference named "target
    ...") in a table of their own, since a target is not a measurement."""
    show = lambda v, unit: f"{v * 1e3:.3f} ms" if unit == "s" else f"{v:,.0f} {unit}"
    peers = [r for r in rows if not r[1].startswith("target")]
    targets = [r for r in rows if r[1].startswith("target")]
    print("\n| benchmark | reference | ours | reference | ratio (ours / ref) |")
    print("|---|---|---|---|---|")
    for what, ref, ours, theirs, unit in peers:
        print(f"| {what} | {ref} | {show(ours, unit)} | {show(theirs, unit)} | {ours / theirs:.2f}x |")
    if targets:
        print("\n| benchmark | ours | target | met |")
        print("|---|---|---|---|")
        for what, _, ours, target, unit in targets:
            print(f"| {what} | {show(ours, unit)} | {show(target, unit)} | {'yes' if ours <= target else 'no'} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="folder for the bench files (kept)")
    ap.add_argument("--only", action="append", choices=GROUPS, help="run only these groups of rows (repeatable; default: all)")
    args = ap.parse_args()
    groups = set(args.only or GROUPS)
    # Under target/ (a real disk, not a tmpfs /tmp): the journal's fsync is measured as in use.
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-", dir=ROOT / "target"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    rng = np.random.default_rng(0)
    try:
        if "engine" in groups:
            # --- files ---
            sparse = work / "sparse-100g.safetensors"
            write_sparse(sparse)
            rng = np.random.default_rng(0)
            dense = work / "dense.safetensors"
            f32 = rng.standard_normal((4096, 4096), dtype=np.float32)
            save_file({"f32": f32, "bf16": f32.astype(ml_dtypes.bfloat16)}, str(dense))
            # 1,000 scattered single-element edits, made with the CLI.
            patch = work / "scattered.json"
            edits = []
            for k, flat in enumerate(rng.choice(4096 * 4096, size=1000, replace=False)):
                r, c = divmod(int(flat), 4096)
                edits += ["--set", f"{'f32' if k % 2 else 'bf16'}[{r},{c}]={k + 0.5}"]
            subprocess.run([BIN, "edit", dense, "--patch", patch, *edits], check=True, stdout=subprocess.DEVNULL)

            # --- references ---
            def py_open():
                with safe_open(str(sparse), "np") as f:
                    return len(f.keys())

            ref_open = best_of(py_open)
            ref_slices = {}
            with safe_open(str(dense), "np") as f:
                for name in ["f32", "bf16"]:
                    sl = f.get_slice(name)
                    ref_slices[name] = best_of(lambda: sl[1024:1536, 1024:1536], repeat=21, number=20)

            baked = work / "baked.safetensors"
            cp_target = work / "cp.safetensors"
            ref_cp = best_of(lambda: subprocess.run(["cp", dense, cp_target], check=True), repeat=5)
            # Bakes fsync before renaming; `sync FILE` gives cp the same durability.
            ref_cp_sync = best_of(lambda: subprocess.run(f"cp {dense} {cp_target} && sync {cp_target}", shell=True, check=True), repeat=5)
            apply_t = best_of(lambda: subprocess.run([BIN, "apply", dense, patch, "--out", baked], check=True, stdout=subprocess.DEVNULL), repeat=5)

            xdelta = shutil.which("xdelta3")
            vcdiffs = {}
            for level in XDELTA_LEVELS if xdelta else []:
                vcdiffs[level] = work / f"baked{level}.vcdiff"
                subprocess.run([xdelta, *XDELTA_LEVELS[level], "-e", "-f", "-s", dense, baked, vcdiffs[level]], check=True)

            rss_ts = child_peak_rss_mb([BIN, "inspect", sparse, "--json"])
            rss_py = child_peak_rss_mb([sys.executable, "-c", f"from safetensors import safe_open\nwith safe_open({str(sparse)!r}, 'np') as f: f.keys()"])

        if "web" in groups:
            # --- the web app in headless Chromium ---
            web = work / "web"
            web.mkdir(exist_ok=True)
            save_file(
                {
                    "f32_512": rng.standard_normal((512, 512), dtype=np.float32),
                    "f32_1024": rng.standard_normal((1024, 1024), dtype=np.float32),
                    "bf16_4096": rng.standard_normal((4096, 4096), dtype=np.float32).astype(ml_dtypes.bfloat16),
                },
                str(web / "model.safetensors"),
            )
            # The edit round trip fsyncs the journal in web/patches: say what disk that is
            # (tmpfs would make the fsync free).
            fs = subprocess.run(["stat", "-f", "-c", "%T", web], capture_output=True, text=True).stdout.strip()
            print(f"journal of the web benchmark: {web / 'patches'} (file system: {fs})", file=sys.stderr)
            env_web = dict(os.environ, TENSOR_SURGEON_BIN=str(BIN))
            out = subprocess.run(["node", "bench/web-bench.mjs", str(web)], cwd=ROOT / "end2end", env=env_web, check=True, capture_output=True, text=True)
            web_rows = json.loads(out.stdout.strip().splitlines()[-1])

        if "engine" in groups:
            # --- ours (criterion, in process) ---
            # The same build-time settings cargo-leptos uses, so the binary is not rebuilt differently.
            env = dict(os.environ, TS_BENCH_DIR=str(work), LEPTOS_OUTPUT_NAME="tensor-surgeon")
            # Stale estimates from an earlier run must not pass for this one's.
            for name in ["open_100g_10k_tensors", "slice_512_f32", "slice_512_bf16", "bake"]:
                shutil.rmtree(ROOT / "target" / "criterion" / name, ignore_errors=True)
            subprocess.run(["cargo", "bench", "-p", "tensor-surgeon-engine", "--bench", "engine", "--", "--noplot"], cwd=ROOT, env=env, check=True, stdout=sys.stderr)

            def crit(name):
                est = json.loads((ROOT / "target" / "criterion" / name / "new" / "estimates.json").read_text())
                return est["median"]["point_estimate"] / 1e9

            ours_open = crit("open_100g_10k_tensors")
            rows.append(("open 100 GB sparse model, 10,000 tensors", "Python safe_open + keys()", ours_open, ref_open, "s"))
            rows.append(("peak RSS of a process that opens it and prints its tensor list", "Python process: safe_open + keys()", rss_ts, rss_py, "MB"))
            for name in ["f32", "bf16"]:
                rows.append((f"512x512 slice of a 4096x4096 {name.upper()} tensor", "safe_open get_slice()[...] (numpy)", crit(f"slice_512_{name}"), ref_slices[name], "s"))
            rows.append(("bake 96 MB model with 1,000 scattered edits (whole process)", "cp of the same file", apply_t, ref_cp, "s"))
            rows.append(("bake 96 MB model with 1,000 scattered edits (whole process)", "cp + sync of the same file", apply_t, ref_cp_sync, "s"))
        if "web" in groups:
            for what, ref, ours_ms, ref_ms in web_rows:
                rows.append((what, ref, ours_ms / 1e3, ref_ms / 1e3, "s"))
        if "engine" in groups and xdelta:
            compact = work / "scattered.tsp"
            run_quiet(BIN, "diff", dense, baked, "--out", compact, "--format", "compact")
            for level, vcdiff in vcdiffs.items():
                rows.append(("patch size for those 1,000 edits (JSON)", f"xdelta3 {level} of base -> baked", patch.stat().st_size, vcdiff.stat().st_size, "bytes"))
                rows.append(("patch size for those 1,000 edits (compact form)", f"xdelta3 {level} of base -> baked", compact.stat().st_size, vcdiff.stat().st_size, "bytes"))
        if "analysis" in groups:
            rows += analysis_rows(work)
        if "patches" in groups:
            rows += diff_rows(work) + compact_rows(work)
        print_rows(rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
