"""The Llama relatives the forward pass runs from safetensors checkpoints, each on a small
random model (SmolLM2's tokenizer, F32 weights) against the numpy reference
(tests/python/reference.py): Qwen3 (an RMSNorm of each head's query and key), Phi-3 (fused
`qkv_proj` and `gate_up_proj`) and Mistral (a sliding attention window, shorter here than the
prompt and its continuation). The next-token distribution and a greedy continuation (the
key/value cache and the window across steps) must match, and a causal trace's clean answer is
the reference's; what is not implemented is refused by name."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import run
from reference import Llama, softmax

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, INTER = 64, 2, 4, 2, 16, 96
PROMPT = "The history of the city begins in the Roman era, when a small settlement grew"


def tiny(folder, smollm2, model_type, seed=0, **extra):
    """A random checkpoint of `model_type` with SmolLM2's vocabulary and tokenizer."""
    rng = np.random.default_rng(seed)
    vocab = json.loads((smollm2 / "config.json").read_text())["vocab_size"]
    m = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    ones = lambda n: (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    w = {"model.embed_tokens.weight": m(vocab, HIDDEN), "model.norm.weight": ones(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        q, k, v = m(HEADS * HEAD_DIM, HIDDEN), m(KV_HEADS * HEAD_DIM, HIDDEN), m(KV_HEADS * HEAD_DIM, HIDDEN)
        gate, up = m(INTER, HIDDEN), m(INTER, HIDDEN)
        if model_type == "phi3":
            w[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, v])
            w[p + "mlp.gate_up_proj.weight"] = np.concatenate([gate, up])
        else:
            w.update({p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v})
            w.update({p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up})
        if model_type == "qwen3":
            w[p + "self_attn.q_norm.weight"] = ones(HEAD_DIM)
            w[p + "self_attn.k_norm.weight"] = ones(HEAD_DIM)
        w[p + "self_attn.o_proj.weight"] = m(HIDDEN, HEADS * HEAD_DIM)
        w[p + "mlp.down_proj.weight"] = m(HIDDEN, INTER)
        w[p + "input_layernorm.weight"] = ones(HIDDEN)
        w[p + "post_attention_layernorm.weight"] = ones(HIDDEN)
    folder.mkdir()
    save_file(w, str(folder / "model.safetensors"))
    config = {
        "model_type": model_type,
        "architectures": [f"{model_type}ForCausalLM"],
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copy(smollm2 / "tokenizer.json", folder / "tokenizer.json")
    return folder


CASES = {
    "qwen3": {"sliding_window": 4, "use_sliding_window": False},  # a window named and not used
    "phi3": {},
    "mistral": {"sliding_window": 6},
}


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_a_relative_of_llama_runs_as_the_reference_does(smollm2, tmp_path, model_type):
    folder = tiny(tmp_path / model_type, smollm2, model_type, **CASES[model_type])
    ref = Llama(folder)
    ids = ref.encode(PROMPT)
    assert len(ids) > 8, "the prompt is longer than Mistral's window here"
    got = run("run", folder, "--prompt", PROMPT, "--top-k", 5, "--generate", 6, "--json").json()
    assert [t["id"] for t in got["prompt_tokens"]] == ids
    probs = softmax(ref.next_token_logits(ids))
    for t in got["base"]["top"]:
        assert abs(t["prob"] - probs[t["id"]]) < 1e-4, (model_type, t, probs[t["id"]])
    assert [t["id"] for t in got["base"]["top"]] == [int(i) for i in np.argsort(-probs, kind="stable")[:5]]
    assert got["base"]["continuation"]["ids"] == ref.greedy(ids, 6), model_type


def test_the_window_changes_the_answer(smollm2, tmp_path):
    """The same Mistral weights without the window answer differently: the window is used."""
    windowed = tiny(tmp_path / "a", smollm2, "mistral", sliding_window=6)
    unwindowed = tiny(tmp_path / "b", smollm2, "mistral")
    a = run("run", windowed, "--prompt", PROMPT, "--top-k", 3, "--json").json()["base"]["top"]
    b = run("run", unwindowed, "--prompt", PROMPT, "--top-k", 3, "--json").json()["base"]["top"]
    assert [t["prob"] for t in a] != [t["prob"] for t in b]


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"rope_scaling": {"type": "longrope", "short_factor": [1.0]}}, "rope_scaling"),
        ({"partial_rotary_factor": 0.5}, "partial rotary"),
    ],
)
def test_what_is_not_implemented_is_refused_by_name(smollm2, tmp_path, extra, message):
    folder = tiny(tmp_path / "m", smollm2, "phi3", **extra)
    r = run("run", folder, "--prompt", PROMPT, "--json", check=False)
    assert r.code != 0 and message in r.err, r.err


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_a_trace_follows_each_relative_of_llama(smollm2, tmp_path, model_type):
    """Causal tracing reads the same description as the runs: its clean answer is the
    reference's, and its exact invariants hold (a window shorter than the prompt included)."""
    folder = tiny(tmp_path / model_type, smollm2, model_type, **CASES[model_type])
    ref = Llama(folder)
    ids = ref.encode(PROMPT)
    t = run("trace", folder, "--prompt", PROMPT, "--subject", "Roman", "--samples", 2, "--kind", "residual",
            "--json").json()
    probs = softmax(ref.next_token_logits(ids))
    assert [x["id"] for x in t["tokens"]] == ids
    assert t["target"]["id"] == int(np.argmax(probs))
    assert abs(t["clean"] - float(probs[t["target"]["id"]])) < 1e-4, (t["clean"], probs[t["target"]["id"]])
    r, start, last = t["residual"], t["subject"][0], len(ids) - 1
    assert r[-1][last] == t["clean"], "the last token's final state restored is the clean run"
    for row in r:
        assert row[:start] == [t["corrupted"]] * start, "no noise reaches the tokens before the subject"


# --- the same families as GGUF files --------------------------------------------------------

GGUF_PARTS = {
    # forward-pass name -> llama.cpp's, per family (no rows reordered: both rotate halves)
    "qwen3": {
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    },
    "phi3": {"self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"},
}
COMMON = {
    "input_layernorm": "attn_norm", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.down_proj": "ffn_down",
}


def gguf_writer(path, arch, layers, rope_theta):
    """gguf-py's writer for a small model of `arch` with this file's sizes, and SmolLM2's
    tokenizer metadata from its own GGUF; the caller adds tensors and writes it."""
    import gguf

    import models

    tok = gguf.GGUFReader(models.smollm2_gguf())
    field = lambda k: tok.fields[k].contents()
    g = gguf.GGUFWriter(str(path), arch)
    g.add_block_count(layers)
    g.add_embedding_length(HIDDEN)
    g.add_feed_forward_length(INTER)
    g.add_head_count(HEADS)
    g.add_head_count_kv(KV_HEADS)
    g.add_key_length(HEAD_DIM)
    g.add_value_length(HEAD_DIM)
    g.add_rope_dimension_count(HEAD_DIM)
    g.add_layer_norm_rms_eps(1e-6)
    g.add_rope_freq_base(rope_theta)
    g.add_context_length(512)
    g.add_tokenizer_model("gpt2")
    g.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    g.add_token_list(field("tokenizer.ggml.tokens"))
    g.add_token_merges(field("tokenizer.ggml.merges"))
    g.add_token_types(field("tokenizer.ggml.token_type"))
    g.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
    return g


def as_gguf(folder, arch):
    """The checkpoint in `folder` written as llama.cpp's converter lays it out (gguf-py's
    writer), with SmolLM2's tokenizer metadata from its own GGUF."""
    from safetensors.numpy import load_file

    w = load_file(str(folder / "model.safetensors"))
    out = folder / f"{arch}.gguf"
    g = gguf_writer(out, arch, LAYERS, 10000.0)
    g.add_tensor("token_embd.weight", w["model.embed_tokens.weight"])
    g.add_tensor("output_norm.weight", w["model.norm.weight"])
    parts = {**COMMON, **GGUF_PARTS[arch]}
    for i in range(LAYERS):
        for hf, cpp in parts.items():
            g.add_tensor(f"blk.{i}.{cpp}.weight", w[f"model.layers.{i}.{hf}.weight"])
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()
    return out


@pytest.mark.parametrize("model_type", ["qwen3", "phi3"])
def test_a_relative_of_llama_runs_from_its_gguf_as_from_safetensors(smollm2, tmp_path, model_type):
    folder = tiny(tmp_path / model_type, smollm2, model_type)
    path = as_gguf(folder, model_type)
    a = run("run", folder, "--prompt", PROMPT, "--top-k", 5, "--generate", 4, "--json").json()
    b = run("run", path, "--prompt", PROMPT, "--top-k", 5, "--generate", 4, "--json").json()
    assert a["prompt_tokens"] == b["prompt_tokens"]
    assert [t["id"] for t in a["base"]["top"]] == [t["id"] for t in b["base"]["top"]]
    for x, y in zip(a["base"]["top"], b["base"]["top"]):
        assert abs(x["prob"] - y["prob"]) < 1e-5, (model_type, x, y)
    assert a["base"]["continuation"]["ids"] == b["base"]["continuation"]["ids"]


def test_gemma3_from_safetensors_runs_as_its_gguf(smollm2, tmp_path):
    """A small random Gemma 3 checkpoint as Hugging Face writes it (norm weights w, used as
    1 + w; six layers, the sixth global) and as llama.cpp's converter writes it (1 + w stored):
    the same answers. The GGUF path is the one checked against llama.cpp on Gemma 3 270M."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    vocab = json.loads((smollm2 / "config.json").read_text())["vocab_size"]
    m = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    small = lambda n: (0.1 * rng.standard_normal(n)).astype(np.float32)
    layers = 6
    hf = {"model.embed_tokens.weight": m(vocab, HIDDEN), "model.norm.weight": small(HIDDEN)}
    parts = {  # Hugging Face's name -> llama.cpp's
        "self_attn.q_proj": ("attn_q", (HEADS * HEAD_DIM, HIDDEN)),
        "self_attn.k_proj": ("attn_k", (KV_HEADS * HEAD_DIM, HIDDEN)),
        "self_attn.v_proj": ("attn_v", (KV_HEADS * HEAD_DIM, HIDDEN)),
        "self_attn.o_proj": ("attn_output", (HIDDEN, HEADS * HEAD_DIM)),
        "mlp.gate_proj": ("ffn_gate", (INTER, HIDDEN)),
        "mlp.up_proj": ("ffn_up", (INTER, HIDDEN)),
        "mlp.down_proj": ("ffn_down", (HIDDEN, INTER)),
        "self_attn.q_norm": ("attn_q_norm", (HEAD_DIM,)),
        "self_attn.k_norm": ("attn_k_norm", (HEAD_DIM,)),
        "input_layernorm": ("attn_norm", (HIDDEN,)),
        "post_attention_layernorm": ("post_attention_norm", (HIDDEN,)),
        "pre_feedforward_layernorm": ("ffn_norm", (HIDDEN,)),
        "post_feedforward_layernorm": ("post_ffw_norm", (HIDDEN,)),
    }
    for i in range(layers):
        for part, (_, shape) in parts.items():
            hf[f"model.layers.{i}.{part}.weight"] = small(shape[0]) if len(shape) == 1 else m(*shape)
    folder = tmp_path / "gemma"
    folder.mkdir()
    save_file(hf, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": layers,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "query_pre_attn_scalar": HEAD_DIM, "vocab_size": vocab, "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "sliding_window": 512,
        "sliding_window_pattern": 6, "max_position_embeddings": 512,
        "hidden_activation": "gelu_pytorch_tanh", "final_logit_softcapping": None,
        "attn_logit_softcapping": None, "rope_scaling": None,
    }))
    shutil.copy(smollm2 / "tokenizer.json", folder / "tokenizer.json")

    path = tmp_path / "gemma.gguf"
    g = gguf_writer(path, "gemma3", layers, 1_000_000.0)
    g.add_sliding_window(512)
    g.add_tensor("token_embd.weight", hf["model.embed_tokens.weight"])
    g.add_tensor("output_norm.weight", hf["model.norm.weight"] + np.float32(1))
    for i in range(layers):
        for part, (cpp, shape) in parts.items():
            w = hf[f"model.layers.{i}.{part}.weight"]
            g.add_tensor(f"blk.{i}.{cpp}.weight", w + np.float32(1) if len(shape) == 1 else w)
    g.write_header_to_file()
    g.write_kv_data_to_file()
    g.write_tensors_to_file()
    g.close()

    a = run("run", folder, "--prompt", PROMPT, "--top-k", 5, "--generate", 4, "--json").json()
    b = run("run", path, "--prompt", PROMPT, "--top-k", 5, "--generate", 4, "--json").json()
    assert a["prompt_tokens"] == b["prompt_tokens"]
    assert [t["id"] for t in a["base"]["top"]] == [t["id"] for t in b["base"]["top"]]
    for x, y in zip(a["base"]["top"], b["base"]["top"]):
        assert abs(x["prob"] - y["prob"]) < 1e-5, (x, y)
    assert a["base"]["continuation"]["ids"] == b["base"]["continuation"]["ids"]
