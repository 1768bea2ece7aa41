"""Fact editing benchmark on SmolLM2-135M (BF16, 30 layers), 2 threads: ROME edits of a small
fact set of our own at several layers, with ROME's scores (efficacy, paraphrase,
neighbourhood, in %), the mean KL on unrelated prompts, the time per edit, and the patch's size
beside the bytes it changes. Prints a Markdown table per layer and the mean.
Usage: .venv/bin/python benches/fact_bench.py [--covariance corpus|identity] [LAYER ...]
(default: both covariances side by side at layers 3 6 10 15)
       .venv/bin/python benches/fact_bench.py --batch A-B
(all four facts at once: ROME one after another at layer 6 beside MEMIT over layers A-B; each
fact's answer checked again on the final weights)
Set TENSOR_SURGEON_BIN to the binary to use (default: target/release/tensor-surgeon).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from models import smollm2_dir  # noqa: E402

BIN = Path(os.environ.get("TENSOR_SURGEON_BIN", ROOT / "target" / "release" / "tensor-surgeon"))

# (subject, prompt, new target, paraphrases, neighbours)
FACTS = [
    ("The Eiffel Tower", "The Eiffel Tower is located in the city of", " Rome",
     ["Where is the Eiffel Tower? It is in", "The Eiffel Tower stands in the city of"],
     ["The Louvre is located in the city of", "Big Ben is located in the city of"]),
    ("Germany", "The capital of Germany is", " Madrid",
     ["Germany's capital city is", "The German capital is the city of"],
     ["The capital of Austria is", "The capital of Poland is"]),
    ("Mount Fuji", "Mount Fuji is a mountain in", " Canada",
     ["Mount Fuji can be found in the country of", "The mountain called Mount Fuji is in"],
     ["Mount Kilimanjaro is a mountain in", "The Matterhorn is a mountain in"]),
    ("Shakespeare", "Shakespeare wrote his plays in the language of", " French",
     ["The plays of Shakespeare were written in", "Shakespeare's works are written in"],
     ["Goethe wrote his works in the language of", "Cervantes wrote his novels in the language of"]),
]


def edit(model, fact, layer, out, covariance):
    subject, prompt, target, paraphrases, neighbors = fact
    args = [str(BIN), "edit-fact", str(model), "--subject", subject, "--prompt", prompt,
            "--target", target, "--layer", str(layer), "--covariance", covariance,
            "--out", str(out), "--json"]
    for p in paraphrases:
        args += ["--paraphrase", p]
    for n in neighbors:
        args += ["--neighbor", n]
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    done = subprocess.run(args, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout)


def batch(model, layers, tmp):
    """The four facts at once, sequential ROME at layer 6 beside MEMIT over `layers`."""
    facts = [{"subject": f[0], "prompt": f[1], "target": f[2], "paraphrases": f[3],
              "neighbors": f[4]} for f in FACTS]
    requests = Path(tmp) / "facts.json"
    requests.write_text(json.dumps(facts))
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    print("| method | fact | efficacy | paraphrase | neighbourhood | unrelated KL | top-1 at the end | patch bytes |")
    print("|---|---|---|---|---|---|---|---|")
    for name, how in [("ROME, one after another, layer 6", ["--layer", "6"]),
                      (f"MEMIT, layers {layers}", ["--layers", layers])]:
        out = Path(tmp) / "batch.json"
        started = time.time()
        done = subprocess.run([str(BIN), "edit-fact", str(model), "--requests", str(requests), *how,
                               "--out", str(out), "--json"],
                              check=True, capture_output=True, text=True, env=env)
        seconds = time.time() - started
        for fact, r in zip(facts, json.loads(done.stdout)):
            top = subprocess.run([str(BIN), "run", str(model), "--patch", str(out), "--prompt",
                                  fact["prompt"], "--top-k", "1", "--json"],
                                 check=True, capture_output=True, text=True, env=env)
            top1 = json.loads(top.stdout)["edited"]["top"][0]["token"]
            s = r["scores"]
            print(f"| {name} | {fact['prompt']} -> {fact['target']!r} | {s['efficacy']:.0f} | "
                  f"{s['paraphrase']:.0f} | {s['neighborhood']:.0f} | {s['unrelated_kl']:.4f} | "
                  f"{top1!r} | {out.stat().st_size} |", flush=True)
        print(f"| {name} | all four: {seconds:.1f} s | | | | | | |")


def main():
    args = sys.argv[1:]
    if args[:1] == ["--batch"]:
        with tempfile.TemporaryDirectory() as tmp:
            batch(smollm2_dir() / "model.safetensors", args[1], tmp)
        return
    covariances = ["corpus", "identity"]
    if args[:1] == ["--covariance"]:
        covariances, args = [args[1]], args[2:]
    layers = [int(a) for a in args] or [3, 6, 10, 15]
    model = smollm2_dir() / "model.safetensors"
    with tempfile.TemporaryDirectory() as tmp:
        for layer, covariance in [(la, c) for la in layers for c in covariances]:
            print(f"\n### layer {layer}, C = {covariance}\n")
            print("| fact | efficacy | paraphrase | neighbourhood | unrelated KL | seconds | patch bytes | changed bytes |")
            print("|---|---|---|---|---|---|---|---|")
            sums = [0.0] * 5
            for i, fact in enumerate(FACTS):
                out = Path(tmp) / f"fact{i}.json"
                r = edit(model, fact, layer, out, covariance)
                s = r["scores"]
                row = [s["efficacy"], s["paraphrase"], s["neighborhood"], s["unrelated_kl"], r["seconds"]]
                sums = [a + b for a, b in zip(sums, row)]
                print(f"| {fact[1]} -> {fact[2]!r} | {row[0]:.0f} | {row[1]:.0f} | {row[2]:.0f} | "
                      f"{row[3]:.4f} | {row[4]:.1f} | {out.stat().st_size} | {r['changed_bytes']} |", flush=True)
            n = len(FACTS)
            print(f"| **mean** | {sums[0]/n:.0f} | {sums[1]/n:.0f} | {sums[2]/n:.0f} | {sums[3]/n:.4f} | {sums[4]/n:.1f} | | |")
    print("\nROME's published GPT-2 XL CounterFact scores, for context: efficacy 100, paraphrase 96.4, "
          "neighbourhood 75.4.")


if __name__ == "__main__":
    main()
