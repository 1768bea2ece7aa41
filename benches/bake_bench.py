"""Does a fact edit survive the bake of a quantized GGUF? For each block type the real files
hold in a `ffn_down` (Q4_1 in SmolLM2's file, Q4_K and Q6_K in Gemma 3's and Qwen2.5's), ROME
rewrites "The Eiffel Tower ... city of" -> " Rome" at a layer of that type; the table gives
p(" Rome") at the optimisation's last step (the exact update, averaged over the prefixed
prompts), in the session on the prompt (the edit kept as the blocks it rewrites, quantized
again: the edit-fact report's probe), in our run of the baked file, and in llama.cpp on the
baked file, with llama.cpp's top-1. Release binary, 2 threads.
Usage: .venv/bin/python benches/bake_bench.py [BLOCK_TYPE ...]   (default: every case)
Set TENSOR_SURGEON_BIN to the binary to use (default: target/release/tensor-surgeon).
"""

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
os.environ.setdefault("TENSOR_SURGEON_BIN", str(ROOT / "target" / "release" / "tensor-surgeon"))

import models  # noqa: E402
from test_gguf import llama_cpp  # noqa: E402

BIN = os.environ["TENSOR_SURGEON_BIN"]
PROMPT, SUBJECT, TARGET = "The Eiffel Tower is located in the city of", "The Eiffel Tower", " Rome"


def requantized(ty_name, layer):
    """SmolLM2's GGUF with `blk.LAYER.ffn_down` quantized again into `ty_name` (from its Q4_1
    values, by the `gguf` package's quantizer): the block types no real file here holds in an
    `ffn_down`. Made once into the cache folder."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize, quantize

    src = models.smollm2_gguf()
    out = models.cache_root() / "bench" / f"smollm2-ffn_down{layer}-{ty_name.lower()}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    ty = GGMLQuantizationType[ty_name]
    r = GGUFReader(str(src))
    w = GGUFWriter(str(out) + ".part", r.fields["general.architecture"].contents())
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        kind = f.types[0]
        w.add_key_value(f.name, f.contents(), kind, sub_type=f.types[-1] if kind == GGUFValueType.ARRAY else None)
    for t in r.tensors:
        if t.name == f"blk.{layer}.ffn_down.weight":
            data = quantize(dequantize(t.data, t.tensor_type), ty)
            w.add_tensor(t.name, data, raw_dtype=ty)
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    Path(str(out) + ".part").rename(out)
    return out


# (model, layer, the block type of its ffn_down)
CASES = [
    ("smollm2", models.smollm2_gguf, 6, "Q4_1"),
    ("gemma3", models.gemma3_gguf, 3, "Q4_K"),
    ("gemma3", models.gemma3_gguf, 4, "Q6_K"),
    ("qwen25", models.qwen25_gguf, 4, "Q4_K"),
    ("qwen25", models.qwen25_gguf, 3, "Q6_K"),
    ("smollm2, ffn_down 6 as Q5_0", lambda: requantized("Q5_0", 6), 6, "Q5_0"),
    ("smollm2, ffn_down 6 as Q8_0", lambda: requantized("Q8_0", 6), 6, "Q8_0"),
]


def cli(*args):
    proc = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, RAYON_NUM_THREADS="2"))
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout)


def main():
    print("| model | layer | ffn_down blocks | p(Rome) exact, last step | p(Rome) session (re-quantized) | ours, baked | llama.cpp, baked | llama.cpp top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        only = sys.argv[1:]
        for name, path_of, layer, blocks in CASES:
            if only and blocks not in only:
                continue
            path = path_of()
            patch, baked = Path(tmp) / f"{blocks}-{layer}.json", Path(tmp) / f"{blocks}-{layer}.gguf"
            report = cli("edit-fact", path, "--subject", SUBJECT, "--prompt", PROMPT, "--target", TARGET,
                         "--layer", layer, "--out", patch, "--json")
            exact = report["steps"][-1]["p_target"]
            # The probe's scores are mean log-probabilities per target token.
            session = math.exp(report["probes"][0]["edited_new"])
            subprocess.run([BIN, "apply", str(path), str(patch), "--out", str(baked)], check=True,
                           capture_output=True)
            ours = cli("run", baked, "--prompt", PROMPT, "--target", TARGET, "--json")["base"]["target"]["prob"]
            theirs = llama_cpp(baked, prompts=[PROMPT], top_k=40)["prompts"][0]["top"]
            p_theirs = next((t["prob"] for t in theirs if t["token"] == TARGET), 0.0)
            print(f"| {name} | {layer} | {blocks} | {exact:.3f} | {session:.3f} | {ours:.3f} | {p_theirs:.3f} | {theirs[0]['token']!r} |",
                  flush=True)
            baked.unlink()


if __name__ == "__main__":
    main()
