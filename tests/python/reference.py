"""An independent numpy forward pass of the model families that tensor-surgeon runs.

Written from the architecture definitions (Hugging Face's LlamaForCausalLM and BertModel with
sentence-transformers' mean pooling), sharing no code with the product: the ground truth of the
inference tests. Weights are read from a safetensors file (BF16 and F16 widened to float32);
the math is float32, softmax and its logarithm float64.

    Llama(folder)                      # folder with model.safetensors, config.json, tokenizer.json
    Llama(folder, weights=baked_path)  # another (e.g. edited and baked) safetensors file
    Bert(folder).embed(["a sentence", ...])
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_dtypes  # noqa: F401  registers the "bfloat16" dtype that safetensors.numpy asks numpy for
import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer


def load_tensors(path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file; floating point ones as float32."""
    out = {}
    with safe_open(str(path), framework="np") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            # ml_dtypes' bfloat16 (kind "V") and numpy's float16 widen exactly to float32.
            out[name] = t.astype(np.float32) if t.dtype.kind in "fV" else t
    return out


def resolve(folder, weights) -> tuple[Path, Path]:
    """(folder with config.json and tokenizer.json, safetensors file) from either a folder or a
    file path, with an optional weights file that replaces the folder's model.safetensors."""
    folder = Path(folder)
    if folder.is_file():
        weights = weights or folder
        folder = folder.parent
    return folder, Path(weights) if weights else folder / "model.safetensors"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# --- Llama -----------------------------------------------------------------------------------


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """LlamaRMSNorm: x / sqrt(mean(x^2) + eps) * weight, over the last axis."""
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(variance + np.float32(eps))) * weight


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1) + np.exp(-x))


def rotate_half(x: np.ndarray) -> np.ndarray:
    """Hugging Face's RoPE layout: dims i and i + d/2 form a rotated pair."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class Llama:
    """LlamaForCausalLM: embeddings, N x (RMSNorm, GQA self-attention with RoPE, RMSNorm,
    SiLU-gated MLP) with residual connections, final RMSNorm and the unembedding. Also its
    relatives: Qwen3 (an RMSNorm of each head's query and key before RoPE), Phi-3 (q, k, v in
    one `qkv_proj`, gate and up in one `gate_up_proj`) and Mistral (each position attends to
    the last `sliding_window` positions)."""

    def __init__(self, folder, weights=None):
        folder, path = resolve(folder, weights)
        c = json.loads((folder / "config.json").read_text())
        self.config = c
        self.hidden = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv_heads = c.get("num_key_value_heads", self.n_heads)
        self.head_dim = c.get("head_dim") or self.hidden // self.n_heads
        self.eps = c["rms_norm_eps"]
        self.theta = c.get("rope_theta", 10000.0)
        assert not c.get("rope_scaling"), "RoPE scaling is not implemented in the reference"
        assert c.get("hidden_act", "silu") == "silu"
        window = c.get("sliding_window") if c.get("use_sliding_window", c.get("model_type") == "mistral") else None
        self.window = window

        w = load_tensors(path)
        self.embed = w["model.embed_tokens.weight"]
        # Tied embeddings unless the file has its own lm_head.
        self.unembed = w.get("lm_head.weight", self.embed)
        self.norm = w["model.norm.weight"]
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            if p + "self_attn.qkv_proj.weight" in w:  # Phi-3: fused projections
                qkv = w[p + "self_attn.qkv_proj.weight"]
                nq, nkv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
                q, k, v = qkv[:nq], qkv[nq : nq + nkv], qkv[nq + nkv :]
                gate, up = np.split(w[p + "mlp.gate_up_proj.weight"], 2, axis=0)
            else:
                q, k, v = (w[p + f"self_attn.{n}_proj.weight"] for n in "qkv")
                gate, up = w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]
            self.layers.append(
                {
                    "input_norm": w[p + "input_layernorm.weight"],
                    "q": q,
                    "k": k,
                    "v": v,
                    "q_norm": w.get(p + "self_attn.q_norm.weight"),
                    "k_norm": w.get(p + "self_attn.k_norm.weight"),
                    "o": w[p + "self_attn.o_proj.weight"],
                    "post_norm": w[p + "post_attention_layernorm.weight"],
                    "gate": gate,
                    "up": up,
                    "down": w[p + "mlp.down_proj.weight"],
                }
            )
        tok = folder / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(tok)) if tok.is_file() else None

    # Tokens.

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    # The forward pass.

    def rope(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin tables [n, head_dim] for positions 0..n-1."""
        inv_freq = 1.0 / (self.theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim))
        freqs = np.outer(np.arange(n, dtype=np.float64), inv_freq)
        emb = np.concatenate([freqs, freqs], axis=-1)
        return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)

    def attention(self, x: np.ndarray, layer: dict, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        t = x.shape[0]
        q = (x @ layer["q"].T).reshape(t, self.n_heads, self.head_dim).transpose(1, 0, 2)
        k = (x @ layer["k"].T).reshape(t, self.n_kv_heads, self.head_dim).transpose(1, 0, 2)
        v = (x @ layer["v"].T).reshape(t, self.n_kv_heads, self.head_dim).transpose(1, 0, 2)
        if layer["q_norm"] is not None:  # Qwen3
            q = rms_norm(q, layer["q_norm"], self.eps)
            k = rms_norm(k, layer["k_norm"], self.eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # Grouped-query attention: query head h reads key/value head h // (n_heads / n_kv_heads).
        group = self.n_heads // self.n_kv_heads
        k = np.repeat(k, group, axis=0)
        v = np.repeat(v, group, axis=0)
        scores = (q @ k.transpose(0, 2, 1)) / np.float32(math.sqrt(self.head_dim))
        causal = np.triu(np.ones((t, t), dtype=bool), k=1)
        if self.window:  # Mistral: keys more than `window - 1` positions back are not seen
            causal |= np.tril(np.ones((t, t), dtype=bool), k=-self.window)
        scores = np.where(causal, -np.inf, scores)
        probs = softmax(scores).astype(np.float32)
        out = (probs @ v).transpose(1, 0, 2).reshape(t, self.n_heads * self.head_dim)
        return out @ layer["o"].T

    def forward(self, ids, until_layer: int | None = None, on_layer=None) -> np.ndarray:
        """The residual stream [T, hidden] after the last layer (or after `until_layer`), before
        the final norm. `on_layer(i, residual, mlp_activation)` sees each layer's output."""
        ids = np.asarray(ids, dtype=np.int64)
        assert ids.ndim == 1 and len(ids) > 0
        x = self.embed[ids]
        cos, sin = self.rope(len(ids))
        last = self.n_layers - 1 if until_layer is None else until_layer
        for i, layer in enumerate(self.layers[: last + 1]):
            x = x + self.attention(rms_norm(x, layer["input_norm"], self.eps), layer, cos, sin)
            h = rms_norm(x, layer["post_norm"], self.eps)
            act = silu(h @ layer["gate"].T) * (h @ layer["up"].T)
            x = x + act @ layer["down"].T
            if on_layer is not None:
                on_layer(i, x, act)
        return x

    def unembed_rows(self, residual: np.ndarray) -> np.ndarray:
        """Logits of residual-stream rows: the final norm, then the unembedding."""
        return rms_norm(residual, self.norm, self.eps) @ self.unembed.T

    # The API of the tests.

    def logits(self, ids) -> np.ndarray:
        """Logits [T, vocab] at every position."""
        return self.unembed_rows(self.forward(ids))

    def next_token_logits(self, ids) -> np.ndarray:
        return self.unembed_rows(self.forward(ids)[-1:])[0]

    def next_token_probs(self, ids) -> np.ndarray:
        """The next-token distribution [vocab] (float64) after the whole sequence."""
        return softmax(self.next_token_logits(ids))

    def greedy(self, ids, n: int) -> list[int]:
        """`n` greedily chosen next tokens (the full sequence is recomputed at every step)."""
        seq = list(ids)
        out = []
        for _ in range(n):
            nxt = int(np.argmax(self.next_token_logits(seq)))
            out.append(nxt)
            seq.append(nxt)
        return out

    def mlp_activations(self, ids, layer: int) -> np.ndarray:
        """[T, intermediate]: the input of `layer`'s down_proj, silu(gate(x)) * up(x)."""
        seen = {}
        self.forward(ids, until_layer=layer, on_layer=lambda i, _x, act: seen.__setitem__(i, act))
        return seen[layer]

    def logit_lens(self, ids) -> list[np.ndarray]:
        """For every layer, the next-token distribution [vocab] that its output residual stream
        gives at the last position through the final norm and the unembedding."""
        rows = []
        self.forward(ids, on_layer=lambda _i, x, _act: rows.append(x[-1].copy()))
        return list(softmax(self.unembed_rows(np.stack(rows))))


# --- BERT (sentence-transformers all-MiniLM-L6-v2) -------------------------------------------


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU: x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))."""
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)


class Bert:
    """BertModel (post-LN encoder) with mean pooling over the attention mask and L2
    normalisation: a sentence-transformers embedding model."""

    def __init__(self, folder, weights=None):
        folder, path = resolve(folder, weights)
        c = json.loads((folder / "config.json").read_text())
        self.config = c
        assert c.get("hidden_act", "gelu") == "gelu", "the reference implements erf GELU only"
        assert c.get("position_embedding_type", "absolute") == "absolute"
        self.n_heads = c["num_attention_heads"]
        self.eps = c["layer_norm_eps"]
        w = load_tensors(path)
        # Checkpoints of BertModel have no prefix; those saved from BertFor* have `bert.`.
        self.w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.n_layers = c["num_hidden_layers"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The file pads to a fixed length; pad a batch to its longest sentence instead (the
        # attention mask makes the result the same either way). Truncation stays as configured.
        self.tokenizer.no_padding()
        self.tokenizer.enable_padding(pad_id=c.get("pad_token_id", 0))

    def encoder(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Last hidden states [n, T, hidden] of a padded batch."""
        w = self.w
        n, t = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids]
        x = x + w["embeddings.position_embeddings.weight"][np.arange(t)][None]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        hidden = x.shape[-1]
        head_dim = hidden // self.n_heads
        # Padded keys get no attention.
        key_bias = np.where(mask[:, None, None, :] > 0, 0.0, -np.inf).astype(np.float32)

        def heads(y):
            return y.reshape(n, t, self.n_heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.n_layers):
            p = f"encoder.layer.{i}."

            def linear(name, y):
                return y @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = heads(linear("attention.self.query", x))
            k = heads(linear("attention.self.key", x))
            v = heads(linear("attention.self.value", x))
            scores = (q @ k.transpose(0, 1, 3, 2)) / np.float32(math.sqrt(head_dim)) + key_bias
            ctx = (softmax(scores).astype(np.float32) @ v).transpose(0, 2, 1, 3).reshape(n, t, hidden)
            x = layer_norm(x + linear("attention.output.dense", ctx), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps)
            inter = gelu(linear("intermediate.dense", x))
            x = layer_norm(x + linear("output.dense", inter), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x

    def embed(self, sentences: list[str]) -> np.ndarray:
        """Unit-norm sentence embeddings [n, hidden]: mean of the last hidden states over the
        tokens of each sentence ([CLS] and [SEP] included, padding excluded)."""
        encs = self.tokenizer.encode_batch(list(sentences))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.float32)
        states = self.encoder(ids, mask)
        pooled = (states * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- Decoders read from GGUF files: Qwen2 and Gemma 3 ------------------------------------------


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation (Gemma's `gelu_pytorch_tanh`)."""
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64**3)))).astype(np.float32)


class GgufDecoder:
    """A decoder read straight from a GGUF file, every matrix dequantized to float32 with the
    `gguf` package: Qwen2ForCausalLM (a Llama with biases on q, k and v) and
    Gemma3ForCausalLM (embeddings times sqrt(hidden); RMSNorm of each head's query and key;
    a norm after attention and one before and after the MLP; tanh-GELU gating; queries scaled
    by `query_pre_attn_scalar`^-1/2 = key_length^-1/2; five sliding-window layers of rotary
    base 10,000 to one global layer of the file's base). Written from Hugging Face's
    definitions. Neither family's GGUF permutes q/k rows (llama.cpp's converter does that for
    `llama` only); Gemma's norm weights are stored with the 1 of its `(1 + w)` already added.

        GgufDecoder(path).next_token_logits(ids)   # ids from the file's tokenizer
    """

    def __init__(self, path):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        r = GGUFReader(str(path))

        def field(key, default=None):
            f = r.fields.get(key)
            if f is None:
                if default is None:
                    raise KeyError(key)
                return default
            return f.contents()

        self.arch = arch = field("general.architecture")
        assert arch in ("qwen2", "gemma3"), f"the reference reads qwen2 and gemma3, not {arch}"
        self.hidden = int(field(f"{arch}.embedding_length"))
        self.n_layers = int(field(f"{arch}.block_count"))
        self.n_heads = int(field(f"{arch}.attention.head_count"))
        self.n_kv_heads = int(field(f"{arch}.attention.head_count_kv", self.n_heads))
        self.head_dim = int(field(f"{arch}.attention.key_length", self.hidden // self.n_heads))
        self.eps = float(field(f"{arch}.attention.layer_norm_rms_epsilon"))
        self.theta = float(field(f"{arch}.rope.freq_base", 10000.0))
        self.window = int(field(f"{arch}.attention.sliding_window", 0)) or None
        w = {}
        for t in r.tensors:
            a = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            w[t.name] = a.reshape(tuple(int(d) for d in reversed(t.shape)))
        self.embed = w["token_embd.weight"]
        self.unembed = w.get("output.weight", self.embed)
        self.norm = w["output_norm.weight"]
        self.layers = [{k.split(".", 2)[2]: v for k, v in w.items() if k.startswith(f"blk.{i}.")}
                       for i in range(self.n_layers)]

    def is_global(self, i: int) -> bool:
        """Gemma 3: every sixth layer attends to everything with the file's rotary base."""
        return self.arch != "gemma3" or i % 6 == 5

    def rope(self, n: int, theta: float):
        inv_freq = 1.0 / (theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim))
        emb = np.outer(np.arange(n, dtype=np.float64), inv_freq)
        emb = np.concatenate([emb, emb], axis=-1)
        return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)

    def attention(self, x, L, i):
        t = x.shape[0]

        def proj(name, heads):
            y = x @ L[f"{name}.weight"].T
            if f"{name}.bias" in L:
                y = y + L[f"{name}.bias"]
            return y.reshape(t, heads, self.head_dim).transpose(1, 0, 2)

        q, k, v = proj("attn_q", self.n_heads), proj("attn_k", self.n_kv_heads), proj("attn_v", self.n_kv_heads)
        if "attn_q_norm.weight" in L:
            q = rms_norm(q, L["attn_q_norm.weight"], self.eps)
            k = rms_norm(k, L["attn_k_norm.weight"], self.eps)
        theta = self.theta if self.is_global(i) else 10000.0
        cos, sin = self.rope(t, theta)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        group = self.n_heads // self.n_kv_heads
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = (q @ k.transpose(0, 2, 1)) / np.float32(math.sqrt(self.head_dim))
        hidden = np.triu(np.ones((t, t), dtype=bool), k=1)
        if self.window and not self.is_global(i):
            hidden |= np.tril(np.ones((t, t), dtype=bool), k=-self.window)
        probs = softmax(np.where(hidden, -np.inf, scores)).astype(np.float32)
        out = (probs @ v).transpose(1, 0, 2).reshape(t, self.n_heads * self.head_dim)
        return out @ L["attn_output.weight"].T

    def forward(self, ids) -> np.ndarray:
        """The residual stream [T, hidden] after the last layer, before the final norm."""
        ids = np.asarray(ids, dtype=np.int64)
        x = self.embed[ids]
        gemma = self.arch == "gemma3"
        if gemma:
            x = x * np.float32(math.sqrt(self.hidden))
        for i, L in enumerate(self.layers):
            a = self.attention(rms_norm(x, L["attn_norm.weight"], self.eps), L, i)
            if gemma:
                a = rms_norm(a, L["post_attention_norm.weight"], self.eps)
            x = x + a
            h = rms_norm(x, L["ffn_norm.weight"], self.eps)
            gate = h @ L["ffn_gate.weight"].T
            act = (gelu_tanh(gate) if gemma else silu(gate)) * (h @ L["ffn_up.weight"].T)
            m = act @ L["ffn_down.weight"].T
            if gemma:
                m = rms_norm(m, L["post_ffw_norm.weight"], self.eps)
            x = x + m
        return x

    def next_token_logits(self, ids) -> np.ndarray:
        return rms_norm(self.forward(ids)[-1:], self.norm, self.eps)[0] @ self.unembed.T
