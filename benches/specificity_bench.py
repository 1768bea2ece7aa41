"""How specific is a fact edit? ROME on the fact set `benches/fact_set.json` (24 counterfactual
facts of our own, two paraphrases and three neighbours sharing the relation each) on
SmolLM2-135M (BF16), release binary, 2 threads, one `edit-fact` per fact and setting.

A setting is `LAYER:COVARIANCE[:CLAMP[:KL_WEIGHT]]` ("5:identity", "6:corpus:2:0.5") or
`default` (no flags: the tool's defaults). Per setting it prints the means over the facts:
efficacy, paraphrase and neighbourhood in % (ROME's definitions: the new target beats the old
answer on the prompt / the paraphrases; a neighbour keeps its own answer over the new
target), the neighbour's answer's lost probability (base p - edited p, mean), the new target's
p on the prompt, the mean KL on the unrelated prompts, seconds per edit.

Usage: .venv/bin/python benches/specificity_bench.py [--results FILE] [--facts N] SETTING ...
Results are appended to FILE (JSON lines, default `specificity.jsonl` in the cache folder) and
reused: an interrupted study resumes where it stopped.
Set TENSOR_SURGEON_BIN to the binary to use (default: target/release/tensor-surgeon).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from models import cache_root, smollm2_dir  # noqa: E402

BIN = Path(os.environ.get("TENSOR_SURGEON_BIN", ROOT / "target" / "release" / "tensor-surgeon"))
FACTS = json.loads((ROOT / "benches" / "fact_set.json").read_text())


def flags(setting):
    if setting == "default":
        return []
    parts = setting.split(":")
    out = ["--layer", parts[0], "--covariance", parts[1]]
    if len(parts) > 2 and parts[2]:
        out += ["--clamp", parts[2]]
    if len(parts) > 3:
        out += ["--kl-weight", parts[3]]
    return out


def edit(model, fact, setting, tmp):
    args = [str(BIN), "edit-fact", str(model), "--subject", fact["subject"], "--prompt",
            fact["prompt"], "--target", fact["target"], "--out", str(Path(tmp) / "p.json"),
            "--json", *flags(setting)]
    for p in fact["paraphrases"]:
        args += ["--paraphrase", p]
    for n in fact["neighbors"]:
        args += ["--neighbor", n]
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    done = subprocess.run(args, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout)


def summary(report):
    probes = report["probes"]
    neighbors = [p for p in probes if p["group"] == "neighbor"]
    prompt = probes[0]
    s = report["scores"]
    return {
        "efficacy": s["efficacy"], "paraphrase": s["paraphrase"], "neighborhood": s["neighborhood"],
        "kl": s["unrelated_kl"], "seconds": report["seconds"], "layer": report["layer"],
        "p_target": math.exp(prompt["edited_new"]),
        "lost": sum(math.exp(p["base_old"]) - math.exp(p["edited_old"]) for p in neighbors)
        / len(neighbors),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=cache_root() / "specificity.jsonl")
    parser.add_argument("--facts", type=int, default=len(FACTS))
    parser.add_argument("settings", nargs="+")
    a = parser.parse_args()
    done = {}
    if a.results.exists():
        for line in a.results.read_text().splitlines():
            r = json.loads(line)
            done[(r["setting"], r["prompt"])] = r
    model = smollm2_dir() / "model.safetensors"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in a.settings:
            results = []
            for fact in FACTS[: a.facts]:
                key = (setting, fact["prompt"])
                if key not in done:
                    r = dict(summary(edit(model, fact, setting, tmp)), setting=setting,
                             prompt=fact["prompt"])
                    with a.results.open("a") as f:
                        f.write(json.dumps(r) + "\n")
                    done[key] = r
                    print(f"{setting} | {fact['prompt']} -> {fact['target']!r}: "
                          f"{r['efficacy']:.0f} {r['paraphrase']:.0f} {r['neighborhood']:.0f} "
                          f"p={r['p_target']:.3f} kl={r['kl']:.4f} {r['seconds']:.1f} s",
                          file=sys.stderr, flush=True)
                results.append(done[key])
            rows.append((setting, results))
    print(f"\n{a.facts} facts, SmolLM2-135M BF16\n")
    print("| setting (layer:C:clamp:KL weight) | efficacy | paraphrase | neighbourhood | "
          "neighbour p lost | p(new) on prompt | unrelated KL | s / edit |")
    print("|---|---|---|---|---|---|---|---|")
    for setting, results in rows:
        n = len(results)
        mean = {k: sum(r[k] for r in results) / n for k in
                ["efficacy", "paraphrase", "neighborhood", "lost", "p_target", "kl", "seconds"]}
        print(f"| {setting} | {mean['efficacy']:.0f} | {mean['paraphrase']:.0f} | "
              f"{mean['neighborhood']:.0f} | {mean['lost']:.3f} | {mean['p_target']:.3f} | "
              f"{mean['kl']:.4f} | {mean['seconds']:.1f} |")


if __name__ == "__main__":
    main()
