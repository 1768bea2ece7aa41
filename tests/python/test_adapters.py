"""LoRA adapters in and out, on SmolLM2-135M: a PEFT adapter made here with numpy (rsLoRA, a
rank pattern, an alpha pattern, an embedding module) is read wherever a patch is and bakes to
exactly numpy's W + s·B·A under the patch format's low-rank rule; query and key modules meet
llama.cpp's interleaved rows in the GGUF (our run of the GGUF, our run of the checkpoint and
llama.cpp with the exported GGUF adapter agree); an adapter extracted from a difference of two
models states its truncation error, which is the dropped singular values' share (Eckart-Young)
and what the written factors reproduce."""

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import run
from test_fact_edit import apply_low_rank, tensor_bytes
from test_gguf import llama_cpp

PROMPT = "The capital of France is"


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, data, at = {}, b"", 0
    for name, value in tensors.items():
        raw = value.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [at, at + len(raw)]}
        at += len(raw)
        data += raw
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def peft(folder: Path, config: dict, modules: dict[str, tuple[np.ndarray, np.ndarray]], embedding=(),
         saved=None) -> Path:
    """A PEFT adapter folder: per module its (A, B) as PEFT saves them; `saved`: whole tensors
    of its modules_to_save."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"base_model.model.{k}": v for k, v in (saved or {}).items()}
    for name, (a, b) in modules.items():
        kind = ("lora_embedding_A", "lora_embedding_B") if name in embedding else ("lora_A.weight", "lora_B.weight")
        tensors[f"base_model.model.{name}.{kind[0]}"] = a
        tensors[f"base_model.model.{name}.{kind[1]}"] = b
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    return folder


def bf16_values(raw: bytes) -> np.ndarray:
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)


def entry(u: np.ndarray, v: np.ndarray) -> dict:
    """A low-rank entry of the patch format (for the reference rule of docs/patch-format.md)."""
    import base64

    return {"rank": u.shape[1], "u": base64.b64encode(u.astype("<f4").tobytes()).decode(),
            "v": base64.b64encode(v.astype("<f4").tobytes()).decode()}


def test_a_peft_adapter_bakes_into_numpys_w_plus_scaled_b_a(smollm2, tmp_path):
    model = smollm2 / "model.safetensors"
    rng = np.random.default_rng(7)
    q, down, embed = "model.layers.3.self_attn.q_proj", "model.layers.5.mlp.down_proj", "model.embed_tokens"
    modules = {
        q: (rng.standard_normal((4, 576)) * 0.05, rng.standard_normal((576, 4)) * 0.05),
        down: (rng.standard_normal((2, 1536)) * 0.05, rng.standard_normal((576, 2)) * 0.05),
        embed: (rng.standard_normal((4, 49152)) * 0.05, rng.standard_normal((576, 4)) * 0.05),
    }
    modules = {k: (a.astype(np.float32), b.astype(np.float32)) for k, (a, b) in modules.items()}
    config = {"r": 4, "lora_alpha": 16, "use_rslora": True, "rank_pattern": {"down_proj": 2},
              "alpha_pattern": {"embed_tokens": 2}, "target_modules": ["q_proj", "down_proj", "embed_tokens"],
              "modules_to_save": ["model.norm"]}
    # A module to save, as training keeps it (F32 over the model's BF16).
    norm = (1 + rng.standard_normal(576) * 0.1).astype(np.float32)
    adapter = peft(tmp_path / "adapter", config, modules, embedding={embed}, saved={"model.norm.weight": norm})
    # PEFT's scales: alpha / sqrt(r) (rsLoRA), the patterns matched by the module's last part.
    scales = {q: 16 / math.sqrt(4), down: 16 / math.sqrt(2), embed: 2 / math.sqrt(4)}
    assert run("verify", model, adapter, "--json").json()["ok"]
    baked = tmp_path / "baked.safetensors"
    run("apply", model, adapter / "adapter_config.json", "--out", baked)
    with open(model, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        names = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
    for name in names:
        dtype, shape, before = tensor_bytes(model, name)
        _, _, after = tensor_bytes(baked, name)
        module = name.removesuffix(".weight")
        if name == "model.norm.weight":
            # A whole tensor, rounded to nearest-even into the model's BF16.
            bits = norm.view(np.uint32)
            assert after == ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
            continue
        if module not in modules:
            assert after == before, name
            continue
        a, b = modules[module]
        s = np.float32(scales[module])
        # U = s·B and V = Aᵀ (an embedding's pair the other way: U = s·Aᵀ, V = B).
        u, v = (a.T * s, b) if module == embed else (b * s, a.T)
        assert after == apply_low_rank(before, dtype, shape, entry(u, v)), name
    # The adapter runs where a patch does, and changes the model.
    out = run("run", model, "--patch", adapter, "--prompt", PROMPT, "--json").json()
    assert out["edited"]["top"] != out["base"]["top"]


def test_query_and_key_modules_meet_llama_cpps_interleaved_rows(smollm2, tmp_path):
    import models

    gguf_model, checkpoint = models.smollm2_gguf(), smollm2 / "model.safetensors"
    rng = np.random.default_rng(0)
    modules = {}
    for layer in range(0, 30, 3):
        for part, rows in (("q_proj", 576), ("k_proj", 192)):
            a = (rng.standard_normal((4, 576)) * 0.12).astype(np.float32)
            b = (rng.standard_normal((rows, 4)) * 0.12).astype(np.float32)
            modules[f"model.layers.{layer}.self_attn.{part}"] = (a, b)
    adapter = peft(tmp_path / "qk", {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj"]}, modules)
    exported = tmp_path / "qk.gguf"
    report = run("adapter", "export", gguf_model, adapter, "--out", exported, "--json").json()
    assert {m["named"] for m in report["modules"]} == {f"blk.{l}.attn_{p}.weight" for l in range(0, 30, 3) for p in "qk"}
    on_gguf = run("run", gguf_model, "--patch", adapter, "--prompt", PROMPT, "--json").json()
    on_checkpoint = run("run", checkpoint, "--patch", adapter, "--prompt", PROMPT, "--json").json()
    lora = llama_cpp(gguf_model, prompts=[PROMPT], top_k=3, lora=[{"path": str(exported)}])["prompts"][0]["top"]
    base = {t["id"]: t["prob"] for t in on_gguf["base"]["top"]}
    # The adapter moves the answer well beyond the GGUF's quantization noise...
    assert abs(lora[0]["prob"] - base[lora[0]["id"]]) > 0.15, (lora, on_gguf["base"]["top"][:3])
    # ...and all three runs of it agree (rows in the wrong order would not).
    for side in (on_gguf, on_checkpoint):
        mine = {t["id"]: t["prob"] for t in side["edited"]["top"]}
        assert [t["id"] for t in side["edited"]["top"][:3]] == [t["id"] for t in lora]
        for t in lora:
            assert abs(mine[t["id"]] - t["prob"]) <= 0.05, (side["edited"]["top"][:3], lora)


def test_an_extracted_adapter_states_its_truncation_error(smollm2, tmp_path):
    model = smollm2 / "model.safetensors"
    rng = np.random.default_rng(3)
    # A difference of rank 6 in one matrix (its singular values spread), baked into a model.
    down = "model.layers.2.mlp.down_proj"
    a = (rng.standard_normal((6, 1536)) * np.array([[8], [4], [2], [1], [0.5], [0.25]]) * 0.02).astype(np.float32)
    b = (rng.standard_normal((576, 6)) * 0.02).astype(np.float32)
    other = tmp_path / "other.safetensors"
    run("apply", model, peft(tmp_path / "diff", {"r": 6, "lora_alpha": 6}, {down: (a, b)}), "--out", other)
    name = down + ".weight"
    dtype, shape, before = tensor_bytes(model, name)
    _, _, after = tensor_bytes(other, name)
    delta = (bf16_values(after) - bf16_values(before)).reshape(shape).astype(np.float64)
    sigma = np.linalg.svd(delta, compute_uv=False)
    for rule, want_rank in ((["--rank", 3], 3), (["--tolerance", 0.01], None)):
        out = tmp_path / f"extracted-{rule[0][2:]}"
        report = run("adapter", "extract", model, other, *rule, "--out", out, "--json").json()
        [m] = report["modules"]
        assert m["tensor"] == name
        k = m["rank"]
        dropped = float((sigma[k:] ** 2).sum() / (sigma ** 2).sum())
        if want_rank:
            assert k == want_rank
        else:
            # The fewest singular values whose dropped energy is within the tolerance.
            assert dropped <= 0.01 < float((sigma[k - 1:] ** 2).sum() / (sigma ** 2).sum())
        assert abs(m["dropped_energy"] - dropped) < 1e-4
        # Eckart-Young: the error of the best rank-k approximation is the dropped share.
        assert abs(m["relative_error"] - math.sqrt(dropped)) < 1e-4, (m, math.sqrt(dropped))
        # The factors written reproduce the difference within that error.
        with open(out / "adapter_model.safetensors", "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            body = f.read()

        def tensor(key):
            start, end = header[key]["data_offsets"]
            return np.frombuffer(body[start:end], "<f4").reshape(header[key]["shape"]).astype(np.float64)

        config = json.loads((out / "adapter_config.json").read_text())
        assert config["r"] == k and config["lora_alpha"] == k and not config["use_rslora"]
        prefix = f"base_model.model.{down}"
        approx = tensor(prefix + ".lora_B.weight") @ tensor(prefix + ".lora_A.weight")
        error = np.linalg.norm(delta - approx) / np.linalg.norm(delta)
        assert abs(error - m["relative_error"]) < 1e-4
    assert report["files"] == [str(out / "adapter_config.json"), str(out / "adapter_model.safetensors")]
    # A rank or a tolerance is required, and a tolerance is a share.
    r = run("adapter", "extract", model, other, "--out", tmp_path / "x", check=False)
    assert r.code != 0 and "--rank" in r.err
    r = run("adapter", "extract", model, other, "--tolerance", 2, "--out", tmp_path / "x", check=False)
    assert r.code != 0 and "tolerance" in r.err


def test_adapters_that_do_not_fit_are_refused_by_name(smollm2, tmp_path):
    model = smollm2 / "model.safetensors"
    a, b = np.ones((2, 576), np.float32), np.ones((576, 2), np.float32)
    dora = peft(tmp_path / "dora", {"r": 2, "use_dora": True}, {"model.layers.0.self_attn.q_proj": (a, b)})
    r = run("verify", model, dora, check=False)
    assert r.code != 0 and "DoRA" in r.err, r.err
    other = peft(tmp_path / "other", {"r": 2}, {"model.layers.99.self_attn.q_proj": (a, b)})
    r = run("run", model, "--patch", other, "--prompt", PROMPT, check=False)
    assert r.code != 0 and "model.layers.99.self_attn.q_proj.weight" in r.err and "another base model" in r.err, r.err
    wide = peft(tmp_path / "wide", {"r": 2}, {"model.layers.0.self_attn.k_proj": (a, b)})
    r = run("apply", model, wide, "--out", tmp_path / "x.safetensors", check=False)
    assert r.code != 0 and "576 x 576" in r.err and "192 x 576" in r.err, r.err
    assert not (tmp_path / "x.safetensors").exists()
    # Nothing low-rank to export.
    patch = tmp_path / "bytes.json"
    run("edit", model, "--patch", patch, "--set", "model.norm.weight[0]=2")
    r = run("adapter", "export", model, patch, "--out", tmp_path / "a", check=False)
    assert r.code != 0 and "nothing to export" in r.err and "adapter extract" in r.err, r.err


def test_an_agent_reads_loads_exports_and_extracts_adapters_and_steers_over_mcp(smollm2, tmp_path):
    from server import Server

    patches = tmp_path / "patches"
    rng = np.random.default_rng(5)
    module = "model.layers.4.mlp.down_proj"
    a = (rng.standard_normal((2, 1536)) * 0.05).astype(np.float32)
    b = (rng.standard_normal((576, 2)) * 0.05).astype(np.float32)
    peft(patches / "lora", {"r": 2, "lora_alpha": 2}, {module: (a, b)})
    s = Server(smollm2, "--patches", patches).start()
    try:
        modules = s.mcp("read_adapter", {"path": "lora"})
        assert [(m["tensor"], m["layer"], m["rank"], m["scale"]) for m in modules] == [(module + ".weight", 4, 2, 1.0)]
        assert 0 < modules[0]["relative_norm"] < 1
        assert "lora" in s.call("GET", "/api/saved_patches")
        loaded = s.call("POST", "/api/adapter/load", {"path": "lora"})
        assert loaded["outcome"]["applied"] and loaded["modules"] == modules
        # The session's low-rank step (the adapter's module) leaves as a PEFT adapter, exactly.
        out = s.mcp("export_adapter", {"source": "", "format": "peft", "save_as": "again"})
        assert out["modules"] == [{"tensor": module + ".weight", "named": module + ".weight", "rank": 2}]
        again = json.loads((patches / "again" / "adapter_config.json").read_text())
        assert again["target_modules"] == [module]
        # The session's edits as a difference: rank 2 keeps most of it (the rest is the BF16
        # rounding of the edited weights), and states what it drops.
        got = s.mcp("extract_adapter", {"other": "", "rank": 2, "format": "gguf", "save_as": "diff"})
        [m] = got["modules"]
        assert m["tensor"] == module + ".weight" and m["rank"] == 2 and m["relative_error"] < 0.2
        assert abs(m["relative_error"] - math.sqrt(m["dropped_energy"])) < 1e-4
        assert (patches / "diff.gguf").is_file()
        # A control vector read and set steers every run of the edited side.
        s.call("POST", "/api/undo", {})
        cv = s.mcp("control_vector", {"positive": ["I love it", "What joy"], "negative": ["I hate it", "What misery"],
                                      "method": "mean", "layers": [6, 7], "save_as": "mood"})
        assert cv["file"] == "mood.gguf" and [l["layer"] for l in cv["layers"]] == [6, 7]
        assert s.mcp("steer", {"vectors": [{"path": "mood.gguf", "strength": 8}]}) == {"layers": [6, 7]}
        steered = s.call("POST", "/api/run", {"request": {"prompt": PROMPT, "top_k": 3, "generate": 0}})
        assert steered["edited"] is not None and steered["kl"] > 0.001
        assert s.mcp("steer", {"vectors": []}) == {"layers": []}
        plain = s.call("POST", "/api/run", {"request": {"prompt": PROMPT, "top_k": 3, "generate": 0}})
        assert plain["edited"] is None
        # A path outside the folders the server may read is refused.
        refused = s.mcp("read_adapter", {"path": str(tmp_path)}, ok=False)
        assert refused.get("isError") and "outside the folders" in refused["content"][0]["text"]
    finally:
        s.stop()
