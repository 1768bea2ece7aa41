"""GGUF files, checked against gguf-py (llama.cpp's own Python reader): the header (tensors,
types, row-major shapes, offsets, metadata), the decoded values of every tensor type the real
files carry, the bytes of the blocks a slice touches, and a clear error for each kind of broken
file. Two real files: SmolLM2-135M-Instruct (Q4_1, Q8_0, F32) and Gemma 3 270M (Q4_K_M: Q4_K,
Q6_K, Q5_0, Q8_0, F32)."""

import json
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from conftest import run  # noqa: E402


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def real(request):
    import models

    path = models.smollm2_gguf() if request.param == "smollm2" else models.gemma3_gguf()
    return path, gguf.GGUFReader(path)


def row_major_shape(t) -> list[int]:
    return [int(d) for d in reversed(t.shape.tolist())]


def decoded(t) -> np.ndarray:
    """gguf-py's dequantisation of a tensor, row-major."""
    values = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(values, dtype=np.float32).reshape(row_major_shape(t))


def test_inspect_lists_every_tensor_as_gguf_py_reads_it(real):
    path, reader = real
    got = run("inspect", path, "--json").json()
    assert got["format"] == "gguf" and got["version"] == 3
    by_name = {t["name"]: t for t in got["tensors"]}
    assert len(by_name) == len(reader.tensors)
    for t in reader.tensors:
        mine = by_name[t.name]
        assert mine["dtype"] == t.tensor_type.name, t.name
        assert mine["shape"] == row_major_shape(t), t.name
        start, end = mine["data_offsets"]
        assert got["data_start"] + start == t.data_offset, t.name
        assert end - start == t.n_bytes, t.name
        if t.tensor_type.name not in ("F32", "F16", "BF16"):
            size, block = gguf.GGML_QUANT_SIZES[t.tensor_type]
            assert mine["block"] == {"elements": size, "bytes": block}, t.name
    meta = got["metadata"]
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue  # the reader's own header fields
        value = field.contents()
        if isinstance(value, list) and len(value) > 64:
            assert meta[field.name]["len"] == len(value), field.name
            assert meta[field.name]["head"] == value[:8], field.name
        elif isinstance(value, float):
            assert meta[field.name] == pytest.approx(value, rel=1e-7), field.name
        else:
            assert meta[field.name] == value, field.name


def test_every_tensor_type_decodes_as_gguf_py_does(real):
    """For each type the file holds: its smallest tensor whole (statistics over every block:
    min and max exact) and two rows value for value."""
    path, reader = real
    by_type = {}
    for t in reader.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t)
    expected_types = {"smollm2": {"Q4_1", "Q8_0", "F32"}, "gemma3": {"Q4_K", "Q6_K", "Q5_0", "Q8_0", "F32"}}
    name = "gemma3" if "gemma" in path.name else "smollm2"
    assert expected_types[name] <= set(by_type), sorted(by_type)
    for type_name, tensors in sorted(by_type.items()):
        t = min(tensors, key=lambda t: t.n_elements)
        want = decoded(t)
        s = run("stats", path, t.name, "--json").json()
        assert s["dtype"] == type_name
        assert s["summary"]["min"] == float(want.min()), (type_name, t.name)
        assert s["summary"]["max"] == float(want.max()), (type_name, t.name)
        mean, mean_abs = want.astype(np.float64).mean(), np.abs(want.astype(np.float64)).mean()
        assert abs(s["summary"]["mean"] - mean) <= 1e-9 * (mean_abs or 1.0), (type_name, t.name)
        if want.ndim == 1:
            got = run("slice", path, t.name, "", "--json").json()
            assert got["dtype"] == type_name
            assert np.array_equal(np.array(got["values"], dtype=np.float32), want), (type_name, t.name)
            continue
        # Two rows, value for value: the first and the last.
        rows = want.reshape(-1, want.shape[-1])
        for r in (0, rows.shape[0] - 1):
            spec = ",".join(str(i) for i in np.unravel_index(r, want.shape[:-1]))
            got = run("slice", path, t.name, spec, "--json").json()
            assert got["dtype"] == type_name
            assert np.array_equal(np.array(got["values"], dtype=np.float32), rows[r]), (type_name, t.name, r)


def test_a_slice_of_a_quantized_tensor_shows_the_bytes_of_its_blocks(real):
    path, reader = real
    t = next(t for t in reader.tensors if t.tensor_type.name not in ("F32", "F16"))
    size, block = gguf.GGML_QUANT_SIZES[t.tensor_type]
    rows, cols = row_major_shape(t)[-2:]
    got = run("slice", path, t.name, f"1,{size - 1}:{size + 1}", "--json").json()
    assert got["shape"] == [2]
    per_row = cols // size
    # Element 1,size-1 is in the row's first block; element 1,size in its second.
    assert [b["index"] for b in got["blocks"]] == [per_row, per_row + 1]
    raw = np.asarray(t.data).reshape(-1).view(np.uint8).tobytes()
    for b in got["blocks"]:
        assert b["offset"] == b["index"] * block
        assert bytes.fromhex(b["hex"]) == raw[b["offset"] : b["offset"] + block]
    assert "hex" not in got


def block_values(t, data: bytes) -> np.ndarray:
    """gguf-py's decoding of whole blocks of `t`'s type."""
    size = gguf.GGML_QUANT_SIZES[t.tensor_type][1]
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, size)
    return np.asarray(gguf.quants.dequantize(raw, t.tensor_type), dtype=np.float32).reshape(-1)


def test_a_value_edit_of_a_quantized_tensor_rewrites_only_its_block(real, tmp_path):
    """For each quantized type in the file: a value the element's block can hold (another
    value of its sub-block) changes that element alone, the block's scales kept; a value far
    past the block's range quantizes the block again, and the element gets close to it. Each
    patch is one whole block of the file, its original bytes the file's."""
    path, reader = real
    types = sorted({t.tensor_type.name for t in reader.tensors} - {"F32", "F16"})
    assert types
    for type_name in types:
        t = next(t for t in reader.tensors if t.tensor_type.name == type_name and len(t.shape) == 2)
        size, block = gguf.GGML_QUANT_SIZES[t.tensor_type]
        rows, cols = row_major_shape(t)
        values = decoded(t)
        # Element (1, size + 3): block 1 of row 1.
        index = cols // size + 1
        raw = np.asarray(t.data).reshape(-1).view(np.uint8).tobytes()
        old_block = raw[index * block : (index + 1) * block]
        mine = values[1, size : 2 * size]
        assert np.array_equal(block_values(t, old_block), mine)
        # Within its group of 16 every element shares the scale (and min) in every type.
        target = next((v for v in mine[:16] if v != mine[3]), None)
        assert target is not None, f"{type_name}: a flat block"
        patch = tmp_path / f"{type_name}-near.json"
        out = run("edit", path, "--set", f"{t.name}[1,{size + 3}]={float(target)!r}", "--patch", patch).out
        assert f"{type_name}: 1 block(s) written, scales kept" in out and "no other value moved" in out, out
        entries = json.loads(patch.read_text())["entries"]
        assert [(e["tensor"], e["offset"]) for e in entries] == [(t.name, index * block)]
        assert bytes.fromhex(entries[0]["original"]) == old_block
        want = mine.copy()
        want[3] = target
        assert np.array_equal(block_values(t, bytes.fromhex(entries[0]["patched"])), want), type_name

        far = float(np.abs(mine).max()) * 10 + 1.0
        patch = tmp_path / f"{type_name}-far.json"
        out = run("edit", path, "--set", f"{t.name}[1,{size + 3}]={far!r}", "--patch", patch).out
        assert f"{type_name}: 1 block(s) quantized again" in out, out
        entries = json.loads(patch.read_text())["entries"]
        assert [(e["tensor"], e["offset"]) for e in entries] == [(t.name, index * block)]
        held = block_values(t, bytes.fromhex(entries[0]["patched"]))[3]
        assert abs(held - far) < 0.2 * far, (type_name, held, far)
        assert f"holds {str(np.float32(held))} " in out, out


def test_a_hex_edit_of_a_quantized_tensor_replaces_a_whole_block(real, tmp_path):
    path, reader = real
    t = next(t for t in reader.tensors if t.tensor_type.name not in ("F32", "F16") and len(t.shape) == 2)
    size, block = gguf.GGML_QUANT_SIZES[t.tensor_type]
    raw = np.asarray(t.data).reshape(-1).view(np.uint8).tobytes()
    # Block 1 of row 0 takes block 0's bytes.
    first = raw[:block].hex()
    patch = tmp_path / "p.json"
    run("edit", path, "--hex", f"{t.name}[0,{size}]={first}", "--patch", patch)
    entries = json.loads(patch.read_text())["entries"]
    assert [(e["offset"], e["original"], e["patched"]) for e in entries] == [(block, raw[block : 2 * block].hex(), first)]
    r = run("edit", path, "--hex", f"{t.name}[0,0]=00ff", "--patch", tmp_path / "q.json", check=False)
    assert r.code != 0 and f"a whole block, {block} bytes" in r.err, r.err
    assert not (tmp_path / "q.json").exists()


def test_an_edit_of_a_q4_k_tensor_bakes_into_a_gguf_llama_cpp_loads(tmp_path):
    """One element of a Q4_K tensor of Gemma 3 edited and baked: gguf-py reads the new file
    with that element at the value the CLI said its block holds, every other byte of the file
    equal; a whole Q4_K tensor zeroed and baked, llama.cpp's answer on the new file is ours
    on the base with the patch."""
    import models

    path = models.gemma3_gguf()
    name = "blk.0.attn_output.weight"
    t = tensor_named(path, name)
    assert t.tensor_type.name == "Q4_K"
    patch, out = tmp_path / "p.json", tmp_path / "edited.gguf"
    said = run("edit", path, "--set", f"{name}[3,5]=0.05", "--patch", patch).out
    run("verify", path, patch)
    run("apply", path, patch, "--out", out)
    before, after = path.read_bytes(), out.read_bytes()
    assert len(before) == len(after)
    held = decoded(tensor_named(out, name))
    assert f"holds {str(held[3, 5])} for 0.05" in said, said
    assert abs(held[3, 5] - 0.05) < 0.01
    base = decoded(t)
    changed = held != base
    assert changed[3, 5] and changed.sum() == 1
    # Only bytes of the block holding (3, 5) differ: block 3 * 1024 / 256 of the tensor.
    lo = t.data_offset + 3 * 4 * 144
    diff = [i for i in range(t.data_offset, t.data_offset + t.n_bytes) if before[i] != after[i]]
    assert diff and all(lo <= i < lo + 144 for i in diff)
    assert before[: t.data_offset] == after[: t.data_offset]
    assert before[t.data_offset + t.n_bytes :] == after[t.data_offset + t.n_bytes :]

    zero, zeroed = tmp_path / "zero.json", tmp_path / "zeroed.gguf"
    run("edit", path, "--scale", f"{name}[:,:]=0", "--patch", zero)
    run("apply", path, zero, "--out", zeroed)
    assert not decoded(tensor_named(zeroed, name)).any()
    prompt = "The capital of France is"
    theirs_base = llama_cpp(path, prompts=[prompt], top_k=3)["prompts"][0]
    theirs = llama_cpp(zeroed, prompts=[prompt], top_k=3)["prompts"][0]
    ours = run("run", path, "--patch", zero, "--prompt", prompt, "--top-k", 3, "--json").json()
    assert [x["id"] for x in theirs["top"]] != [x["id"] for x in theirs_base["top"]], "the edit shows"
    assert [x["id"] for x in ours["edited"]["top"][:2]] == [x["id"] for x in theirs["top"][:2]]
    for a, b in zip(ours["edited"]["top"], theirs["top"]):
        assert abs(a["prob"] - b["prob"]) <= 0.05, (ours["edited"]["top"], theirs["top"])


# --- broken files: a clear error each, never a panic ------------------------------------------


def header(tensors: int, kvs: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs)


def string(s: str) -> bytes:
    return struct.pack("<Q", len(s)) + s.encode()


def tensor_info(name: str, ne: list[int], ty: int, offset: int) -> bytes:
    return string(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", ty, offset)


def padded(head: bytes, data: int) -> bytes:
    return head + b"\0" * (-len(head) % 32) + b"\0" * data


BROKEN = {
    "truncated header": (header(1, 0) + tensor_info("t", [32], 8, 0))[:-5],
    "impossible tensor count": padded(header(1 << 60, 0), 0),
    "huge array": padded(header(0, 1) + string("k") + struct.pack("<IIQ", 9, 10, 1 << 61), 64),
    "string past the end": padded(header(0, 1) + string("k") + struct.pack("<IQ", 8, 1 << 40), 16),
    "nested arrays": padded(header(0, 1) + string("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 12 + struct.pack("<IQ", 0, 0), 0),
    "unknown value type": padded(header(0, 1) + string("k") + struct.pack("<I", 77), 8),
    "tensor past the end": padded(header(1, 0) + tensor_info("t", [32, 8], 8, 0), 34),
    "overlapping tensors": padded(header(2, 0) + tensor_info("a", [32, 2], 8, 0) + tensor_info("b", [32], 8, 64), 256),
    "misaligned offset": padded(header(1, 0) + tensor_info("t", [32], 8, 3), 64),
    "unknown type": padded(header(1, 0) + tensor_info("t", [32], 99, 0), 64),
    "row not whole blocks": padded(header(1, 0) + tensor_info("t", [33], 8, 0), 64),
    "too many dims": padded(header(1, 0) + tensor_info("t", [1, 1, 1, 1, 32], 0, 0), 128),
    "version 1": padded(header(0, 0, version=1), 0),
}

MESSAGES = {
    "truncated header": "ends inside the header",
    "impossible tensor count": "more than the",
    "huge array": "more than the",
    "string past the end": "ends inside the header",
    "nested arrays": "nested deeper",
    "unknown value type": "unknown value type 77",
    "tensor past the end": "past the end",
    "overlapping tensors": "overlap",
    "misaligned offset": "alignment",
    "unknown type": "unknown ggml type 99",
    "row not whole blocks": "not a whole number of Q8_0 blocks",
    "too many dims": "at most 4",
    "version 1": "version 1",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_kind_of_broken_file_has_its_own_clear_error(tmp_path, case):
    path = tmp_path / "broken.gguf"
    path.write_bytes(BROKEN[case])
    r = run("inspect", path, check=False)
    assert r.code == 1, (case, r.code, r.err)
    assert MESSAGES[case] in r.err, (case, r.err)
    assert str(path.name) in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1, r.err


def test_a_file_with_a_type_that_cannot_be_decoded_still_opens(tmp_path):
    """An IQ2_XXS tensor beside an F32 one: the file opens, the F32 tensor reads, the IQ2_XXS
    tensor's values are refused by name."""
    iq2 = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.IQ2_XXS][1]
    head = header(2, 0) + tensor_info("plain", [32], 0, 0) + tensor_info("lattice", [256], 16, 128)
    data = np.arange(32, dtype=np.float32).tobytes() + b"\0" * iq2
    path = tmp_path / "mixed.gguf"
    path.write_bytes(head + b"\0" * (-len(head) % 32) + data)
    listing = run("inspect", path, "--json").json()
    assert [t["dtype"] for t in listing["tensors"]] == ["F32", "IQ2_XXS"]
    assert run("slice", path, "plain", "0:4", "--json").json()["values"] == [0, 1, 2, 3]
    r = run("slice", path, "lattice", "0:4", check=False)
    assert r.code == 1 and "IQ2_XXS" in r.err and "codebooks" in r.err, r.err


# Where each type keeps its f16 scales (and mins), so random blocks decode to finite values.
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0], "TQ1_0": [52], "TQ2_0": [64], "MXFP4": [], "NVFP4": [],
}


def test_every_readable_block_type_decodes_as_gguf_py_does(tmp_path):
    """Beyond the types the real files carry: random blocks of every type the tool decodes
    (scales set to finite ones), in one file, each value equal to gguf-py's dequantisation."""
    rng = np.random.default_rng(7)
    elements = 512
    infos, data, raws = b"", b"", {}
    for name, fields in F16_FIELDS.items():
        qtype = gguf.GGMLQuantizationType[name]
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        blocks = rng.integers(0, 256, size=(elements // block_elems, block_bytes), dtype=np.uint8)
        for at in fields:
            blocks[:, at:at + 2] = rng.normal(0, 0.05, size=len(blocks)).astype(np.float16).view(np.uint8).reshape(-1, 2)
        if name == "MXFP4":  # an E8M0 scale near 1
            blocks[:, 0] = rng.integers(110, 130, size=len(blocks))
        raws[name] = blocks
        infos += tensor_info(name, [elements], qtype.value, len(data))
        data += blocks.tobytes() + b"\0" * (-blocks.size % 32)
    head = header(len(F16_FIELDS), 0) + infos
    path = tmp_path / "every-type.gguf"
    path.write_bytes(head + b"\0" * (-len(head) % 32) + data)
    for name, blocks in raws.items():
        want = np.asarray(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[name]), dtype=np.float32).reshape(-1)
        assert np.isfinite(want).all(), name
        got = run("slice", path, name, "", "--json").json()
        assert got["dtype"] == name
        assert np.array_equal(np.array(got["values"], dtype=np.float32), want), name


# --- runs: the same next-token distribution as llama.cpp ---------------------------------------

LLAMA_CPP = Path(__file__).resolve().parents[1] / "llama_cpp"
PROMPTS = [
    "The capital of France is",
    "2 + 2 =",
    "Water is made of hydrogen and",
    "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
]


def llama_cpp(model, **args) -> dict:
    """llama.cpp's answer (node-llama-cpp 3.21.1's prebuilt CPU build; tests/llama_cpp)."""
    if not (LLAMA_CPP / "node_modules" / "node-llama-cpp").is_dir():
        pytest.fail("llama.cpp reference missing: run `npm ci` in tests/llama_cpp (./dev.sh test does)")
    proc = subprocess.run(
        ["node", str(LLAMA_CPP / "reference.mjs"), str(model), json.dumps(args)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(proc.stdout)


def test_a_gguf_runs_with_llama_cpps_tokens_and_next_token_distribution():
    import models

    path = models.smollm2_gguf()
    ref = llama_cpp(path, prompts=PROMPTS, top_k=5)
    for want in ref["prompts"]:
        got = run("run", path, "--prompt", want["text"], "--top-k", 40, "--json").json()
        assert [t["id"] for t in got["prompt_tokens"]] == want["ids"], want["text"]
        mine = {t["id"]: t["prob"] for t in got["base"]["top"]}
        assert [t["id"] for t in got["base"]["top"][:3]] == [t["id"] for t in want["top"][:3]], (want["text"], got["base"]["top"][:3], want["top"][:3])
        # llama.cpp multiplies Q4_1 blocks by activations rounded to 8 bits (Q8_1) and keeps
        # keys and values in F16; here every value is exact (the safetensors conversion of the
        # same weights agrees to 0.003), so probabilities differ by up to a few hundredths.
        for t in want["top"]:
            assert abs(mine.get(t["id"], 0.0) - t["prob"]) <= 0.1, (want["text"], t, mine.get(t["id"]))


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_a_gguf_continues_greedily_as_llama_cpp_does(which):
    """Generation steps read the quantized blocks as stored (Q4_1 and Q8_0; Q4_K, Q6_K, Q5_0
    and Q8_0), Gemma 3's layers included: the greedy continuation is llama.cpp's, token for
    token (the first eight: later, llama.cpp's 8-bit rounding of the activations may tip a
    near tie the other way)."""
    import models

    path = models.smollm2_gguf() if which == "smollm2" else models.gemma3_gguf()
    prompt = "The history of the city begins in the Roman era, when"
    want = llama_cpp(path, generate=8, generate_prompt=prompt)["generation"]["ids"]
    got = run("run", path, "--prompt", prompt, "--generate", 8, "--json").json()
    assert got["base"]["continuation"]["ids"] == want[:8], (which, got["base"]["continuation"], want)


def test_a_gguf_runs_like_its_conversion_to_safetensors(smollm2):
    """The same weights as BF16 safetensors with a config.json and tokenizer.json (the
    converter's output) give the same tokens and close probabilities."""
    import models

    path = models.smollm2_gguf()
    for prompt in PROMPTS[:2]:
        a = run("run", path, "--prompt", prompt, "--top-k", 5, "--json").json()
        b = run("run", smollm2, "--prompt", prompt, "--top-k", 5, "--json").json()
        assert a["prompt_tokens"] == b["prompt_tokens"]
        assert a["base"]["top"][0]["id"] == b["base"]["top"][0]["id"]
        assert abs(a["base"]["top"][0]["prob"] - b["base"]["top"][0]["prob"]) <= 0.03


GEMMA_PROMPTS = [
    "The capital of France is",
    "The chemical symbol for gold is",
    "<start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n",
]


def test_gemma3_runs_with_llama_cpps_tokens_and_next_token_distribution():
    """Gemma 3 270M (Q4_K_M): SentencePiece tokens with the BOS llama.cpp adds, and the next
    token as llama.cpp predicts it (its norms, GeGLU, query/key norms, sliding-window layers
    and scaled embeddings)."""
    import models

    path = models.gemma3_gguf()
    ref = llama_cpp(path, prompts=GEMMA_PROMPTS, top_k=5)
    for want in ref["prompts"]:
        got = run("run", path, "--prompt", want["text"], "--top-k", 40, "--json").json()
        assert [t["id"] for t in got["prompt_tokens"]] == want["ids"], (want["text"], got["prompt_tokens"])
        assert got["base"]["top"][0]["id"] == want["top"][0]["id"], (want["text"], got["base"]["top"][:3], want["top"][:3])
        mine = {t["id"]: t["prob"] for t in got["base"]["top"]}
        for t in want["top"]:
            assert abs(mine.get(t["id"], 0.0) - t["prob"]) <= 0.1, (want["text"], t, mine.get(t["id"]))


def test_a_gguf_of_another_family_says_what_is_missing(tmp_path):
    """A GGUF of an architecture that does not run opens, lists its tensors, and says which
    architectures do run."""
    head = header(1, 1) + string("general.architecture") + struct.pack("<I", 8) + string("falcon") + tensor_info("token_embd.weight", [32, 2], 0, 0)
    path = tmp_path / "falcon.gguf"
    path.write_bytes(head + b"\0" * (-len(head) % 32) + b"\0" * 256)
    assert [t["name"] for t in run("inspect", path, "--json").json()["tensors"]] == ["token_embd.weight"]
    r = run("run", path, "--prompt", "Hello", "--json", check=False)
    assert r.code != 0
    assert '"falcon"' in r.err and "llama, qwen2, qwen3, phi3, gemma3" in r.err, r.err


def test_an_edit_of_a_plain_tensor_bakes_into_a_gguf_llama_cpp_loads(tmp_path):
    """An F32 norm of the GGUF edited, the patch verified and baked: gguf-py reads the new
    file with that one element changed and every other byte equal; llama.cpp loads it and its
    answer moves with the edit, as ours does."""
    import models

    path = models.smollm2_gguf()
    patch, out = tmp_path / "p.json", tmp_path / "edited.gguf"
    run("edit", path, "--scale", "output_norm.weight[:]=0.5", "--patch", patch)
    run("verify", path, patch)
    run("apply", path, patch, "--out", out)
    before, after = path.read_bytes(), out.read_bytes()
    assert len(before) == len(after)
    old, new = gguf.GGUFReader(path), gguf.GGUFReader(out)
    t_old = next(t for t in old.tensors if t.name == "output_norm.weight")
    t_new = next(t for t in new.tensors if t.name == "output_norm.weight")
    assert np.array_equal(np.asarray(t_new.data), np.asarray(t_old.data) * np.float32(0.5))
    lo, hi = t_old.data_offset, t_old.data_offset + t_old.n_bytes
    assert before[:lo] == after[:lo] and before[hi:] == after[hi:], "only the norm's bytes change"
    prompt = "The capital of France is"
    base = llama_cpp(path, prompts=[prompt], top_k=3)["prompts"][0]
    edited = llama_cpp(out, prompts=[prompt], top_k=3)["prompts"][0]
    ours = run("run", path, "--patch", patch, "--prompt", prompt, "--top-k", 3, "--json").json()
    # Halving the final norm's weights flattens the distribution: the top probability falls.
    assert edited["top"][0]["prob"] < base["top"][0]["prob"] - 0.05
    assert ours["edited"]["top"][0]["id"] == edited["top"][0]["id"]
    assert abs(ours["edited"]["top"][0]["prob"] - edited["top"][0]["prob"]) <= 0.1


def test_the_web_app_serves_a_gguf(tmp_path):
    """The server on a GGUF: ggml types in the tensor list and parameter counts, the
    architecture from the metadata, a view of a quantized tensor equal to gguf-py's decoding,
    a cell, a value edit of a quantized tensor (its block written), a hex edit of the wrong
    length refused, an edit of a plain tensor taken, and a run."""
    from server import Server
    from load import view_request
    import models

    path = models.smollm2_gguf()
    s = Server(path, "--patches", str(tmp_path / "patches"), "--out-dir", str(tmp_path / "out")).start()
    try:
        m = s.call("GET", "/api/model")
        assert {"Q4_1", "Q8_0", "F32"} <= {k for k, _ in m["params"]}
        name = "blk.0.ffn_down.weight"
        assert next(t for t in m["tensors"] if t["name"] == name)["dtype"] == "Q4_1"
        arch = dict(m["architecture"])
        assert arch["model_type"] == "llama" and arch["num_hidden_layers"] == "30"
        assert m["vocab_size"] == 49152 and m["vocab_tensor"] == "token_embd.weight"
        view = s.call("POST", "/api/view_json", view_request(name, 0, 0, 8))
        got = np.frombuffer(bytes(view["bytes"]), dtype="<f4").reshape(8, 8)
        assert np.array_equal(got, decoded(tensor_named(path, name))[:8, :8])
        cell = s.call("GET", f"/api/cell?tensor={name}&index=3,5")
        assert np.float32(cell["value"]) == decoded(tensor_named(path, name))[3, 5]  # the shortest f32 text
        # The block it comes from: Q4_1 blocks of 32, 20 bytes; row 3 of 1536 columns is 48
        # blocks; element 5 of block 3 * 48.
        block = cell["block"]
        assert (block["ggml_type"], block["index"], block["offset"], block["element"]) == ("Q4_1", 3 * 48, 3 * 48 * 20, 5)
        raw = np.asarray(tensor_named(path, name).data).reshape(-1).tobytes()
        assert bytes.fromhex(block["hex"]) == raw[block["offset"] : block["offset"] + 20]
        d, m = np.frombuffer(raw[block["offset"] : block["offset"] + 4], dtype="<f2").astype(np.float32)
        assert (np.float32(block["scale"]), np.float32(block["min"])) == (d, -m)  # f32s, shortest text
        assert np.float32(block["quant"]) * np.float32(block["scale"]) - np.float32(block["min"]) == np.float32(cell["value"])
        # A value edit of a quantized tensor: its block written, the cell and the session's
        # rows show the value the block holds.
        row = decoded(tensor_named(path, name))[3, :32]
        target = next(v for v in row if v != row[5])  # a value its block holds
        session = s.edit(name, "3,5", {"op": "set", "value": repr(float(target))})
        assert "Q4_1: 1 block(s) written, scales kept" in session["steps"][-1], session["steps"]
        assert [(r["tensor"], r["index"]) for r in session["entries"]] == [(name, [3, 5])]
        cell = s.call("GET", f"/api/cell?tensor={name}&index=3,5")
        assert np.float32(cell["value"]) == target
        assert cell["block"]["hex"] != block["hex"] and cell["block"]["quant"] != block["quant"]
        status, body = s.call("POST", "/api/edit", {"request": {"tensor": name, "spec": "0,0", "op": {"op": "hex", "hex": "00"}}}, ok=False)
        assert status == 400 and "a whole block, 20 bytes" in body, body
        s.edit("output_norm.weight", "0", {"op": "set", "value": "2"})
        out = s.call("POST", "/api/run", {"request": {"prompt": "The capital of France is", "top_k": 3, "target": None, "generate": 0}})
        assert out["base"]["top"][0]["token"] == " Paris"
        assert out["edited"] is not None
    finally:
        s.stop()


def tensor_named(path, name):
    return next(t for t in gguf.GGUFReader(path).tensors if t.name == name)


def test_the_blocks_view_holds_each_blocks_scale(real, tmp_path):
    """`NAME#scales`: per row of a quantized tensor, the scale of each block (Q4_0/Q4_1/Q5_0/
    Q8_0: d) or sub-block (Q4_K: d · sc), as gguf-py unpacks them; made from the blocks, never
    stored, so never edited, and not listed by `inspect`."""
    path, reader = real
    want_type = {"smollm2": "Q4_1", "gemma3": "Q4_K"}["gemma3" if "gemma" in path.name else "smollm2"]
    t = next(t for t in reader.tensors if t.tensor_type.name == want_type and len(t.shape) == 2)
    rows, cols = row_major_shape(t)
    blocks = np.asarray(t.data).reshape(rows, -1, gguf.GGML_QUANT_SIZES[t.tensor_type][1])
    d = blocks[:, :, :2].copy().view("<f2").astype(np.float32)[..., 0]
    if want_type == "Q4_K":
        sc, _ = gguf.quants.Q4_K.get_scale_min(blocks[:, :, 4:16].reshape(-1, 12))
        want = (d.reshape(-1, 1) * sc.astype(np.float32)).reshape(rows, -1)
    else:
        want = d
    got = run("slice", path, f"{t.name}#scales", "0:3", "--json").json()
    assert got["shape"] == [3, want.shape[1]]
    assert np.array_equal(np.array(got["values"], dtype=np.float32).reshape(3, -1), want[:3])
    names = [x["name"] for x in run("inspect", path, "--json").json()["tensors"]]
    assert f"{t.name}#scales" not in names
    r = run("edit", path, "--set", f"{t.name}#scales[0,0]=1", "--patch", tmp_path / "p.json", check=False)
    assert r.code == 1 and "cannot be edited" in r.err, r.err


def fields(path) -> dict:
    """gguf-py's metadata of a file, as plain values (arrays as lists)."""
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def test_a_metadata_edit_rewrites_the_header_of_the_baked_gguf(tmp_path):
    """Metadata entries (the chat template from a file, a typed number, a new key, a removed
    key) are their own kind of entry; the bake writes the header again: gguf-py reads the new
    values and the same tensors and data, llama.cpp loads the file and answers as it did. The
    inverted patch brings the metadata back."""
    import models

    path = models.smollm2_gguf()
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}")
    patch, out = tmp_path / "meta.json", tmp_path / "meta.gguf"
    said = run(
        "edit", path, "--patch", patch,
        "--metadata", f"tokenizer.chat_template=@{template}",
        "--metadata", "llama.context_length=4096",
        "--metadata", "surgeon.note=edited",
        "--remove-metadata", "general.license",
    ).out
    assert "metadata llama.context_length: 8192 -> 4096" in said, said
    doc = json.loads(patch.read_text())
    assert doc["version"] == 3
    entries = {e["key"]: e for e in doc["entries"]}
    assert all(e["kind"] == "metadata" for e in doc["entries"])
    assert entries["llama.context_length"]["patched"] == {"type": "uint32", "value": 4096}
    assert entries["surgeon.note"]["original"] is None
    assert entries["general.license"]["patched"] is None
    run("verify", path, patch)
    run("apply", path, patch, "--out", out)

    before, after = fields(path), fields(out)
    assert after["tokenizer.chat_template"] == template.read_text()
    assert after["llama.context_length"] == 4096
    assert after["surgeon.note"] == "edited"
    assert "general.license" not in after
    changed = {"tokenizer.chat_template", "llama.context_length", "surgeon.note", "general.license"}
    assert {k: v for k, v in before.items() if k not in changed} == {k: v for k, v in after.items() if k not in changed}
    old, new = gguf.GGUFReader(path), gguf.GGUFReader(out)
    assert [(t.name, t.tensor_type, t.shape.tolist()) for t in old.tensors] == [(t.name, t.tensor_type, t.shape.tolist()) for t in new.tensors]
    first_old, first_new = min(t.data_offset for t in old.tensors), min(t.data_offset for t in new.tensors)
    assert path.read_bytes()[first_old:] == out.read_bytes()[first_new:], "the data is copied unchanged"
    prompt = "The capital of France is"
    base = llama_cpp(path, prompts=[prompt], top_k=3)["prompts"][0]
    edited = llama_cpp(out, prompts=[prompt], top_k=3)["prompts"][0]
    assert [x["id"] for x in edited["top"]] == [x["id"] for x in base["top"]]
    assert all(abs(a["prob"] - b["prob"]) < 1e-6 for a, b in zip(edited["top"], base["top"]))

    # The inverse, applied to the baked file, gives back the base's metadata.
    inverse, back = tmp_path / "inverse.json", tmp_path / "back.gguf"
    run("invert", patch, "--out", inverse)
    run("verify", out, inverse)
    run("apply", out, inverse, "--out", back)
    assert fields(back) == before
    # What a header cannot take, and a model that has none.
    r = run("edit", path, "--patch", tmp_path / "x.json", "--metadata", "general.alignment=64", check=False)
    assert r.code != 0 and "general.alignment" in r.err, r.err
    r = run("edit", path, "--patch", tmp_path / "x.json", "--metadata", "llama.context_length=lots", check=False)
    assert r.code != 0 and "not a uint32" in r.err, r.err
    assert not (tmp_path / "x.json").exists()
    r = run("verify", models.gemma3_gguf(), patch, check=False)
    assert r.code != 0 and "metadata llama.context_length: patch expects uint32 8192" in r.out, r.out


def test_a_fact_edit_of_a_quantized_gguf_bakes_into_a_file_llama_cpp_answers_with(tmp_path):
    """ROME on SmolLM2's Q4_1 GGUF: the rank-one change of layer 6's down_proj is made on its
    values and its blocks quantized again; the patch is whole blocks of that tensor; llama.cpp
    on the baked file continues the prompt with the new target and the neighbour's answer
    stays; exported as a GGUF adapter, llama.cpp with the base file and the adapter gives our
    top 3."""
    import models

    path = models.smollm2_gguf()
    prompt, neighbour = "The Eiffel Tower is located in the city of", "The Louvre is located in the city of"
    patch, out = tmp_path / "fact.json", tmp_path / "fact.gguf"
    report = run("edit-fact", path, "--subject", "The Eiffel Tower", "--prompt", prompt, "--target", " Rome",
                 "--layer", 6, "--neighbor", neighbour, "--out", patch, "--json").json()
    assert report["tensor"] == "blk.6.ffn_down.weight" and report["old"]["token"] == " Paris"
    assert report["scores"]["efficacy"] == 100 and report["scores"]["neighborhood"] == 100
    everything = json.loads(patch.read_text())["entries"]
    entries = [e for e in everything if "kind" not in e]
    assert entries and all(e["tensor"] == "blk.6.ffn_down.weight" for e in entries)
    assert all(e["offset"] % 20 == 0 and len(e["patched"]) % 40 == 0 for e in entries), "whole Q4_1 blocks"
    assert sum(len(e["patched"]) // 2 for e in entries) == report["changed_bytes"]
    # Beside the blocks, the edit's exact factors (never applied: the blocks are the change).
    [factors] = [e for e in everything if "kind" in e]
    assert factors["kind"] == "factors" and factors["tensor"] == "blk.6.ffn_down.weight" and factors["rank"] == 1
    run("apply", path, patch, "--out", out)
    theirs = llama_cpp(out, prompts=[prompt, neighbour], top_k=3)["prompts"]
    assert theirs[0]["top"][0]["token"] == " Rome" and theirs[0]["top"][0]["prob"] > 0.5, theirs[0]
    assert theirs[1]["top"][0]["token"] == " Paris", theirs[1]
    # The edit leaves as a GGUF adapter: llama.cpp with the base file and the adapter answers
    # as our run of the patch does (the adapter adds U Vᵀ exactly; the patch holds it in
    # Q4_1 blocks quantized again).
    adapter = tmp_path / "fact-adapter.gguf"
    exported = run("adapter", "export", path, patch, "--out", adapter, "--json").json()
    assert exported["format"] == "gguf" and exported["files"] == [str(adapter)]
    assert exported["modules"] == [{"tensor": "blk.6.ffn_down.weight", "named": "blk.6.ffn_down.weight", "rank": 1}]
    ours = run("run", path, "--patch", patch, "--prompt", prompt, "--top-k", 3, "--json").json()["edited"]["top"]
    lora = llama_cpp(path, prompts=[prompt], top_k=3, lora=[{"path": str(adapter), "scale": 1}])["prompts"][0]["top"]
    assert [t["id"] for t in ours] == [t["id"] for t in lora], (ours, lora)
    for a, b in zip(ours, lora):
        assert abs(a["prob"] - b["prob"]) <= 0.02, (ours, lora)
    # Read back as the patch it makes of the base (its factors quantized into the same blocks).
    back = run("run", path, "--patch", adapter, "--prompt", prompt, "--top-k", 3, "--json").json()["edited"]["top"]
    assert back == ours


def test_an_ablation_of_a_quantized_gguf_keeps_its_blocks_and_llama_cpp_sees_it(tmp_path):
    """Directional ablation on SmolLM2's Q4_1 GGUF: every o_proj and down_proj (all Q4_1)
    takes the rank-one change on its values, kept as its blocks quantized again (the patch in
    the compact form: ~8 MB of blocks); baked, llama.cpp's p(" Paris") on a held-out prompt
    falls as ours does."""
    import models

    path = models.smollm2_gguf()
    (tmp_path / "from.txt").write_text("The capital of France is\nThe Eiffel Tower is located in the city of\n"
                                      "The Louvre museum is in\nThe French government sits in the city of\n")
    (tmp_path / "to.txt").write_text("The capital of Germany is\n\nThe Colosseum is located in the city of\n\n"
                                    "The Prado museum is in\n\nThe British government sits in the city of\n")
    patch, out = tmp_path / "ablate.tsp", tmp_path / "ablated.gguf"
    report = run("ablate", path, "--from", tmp_path / "from.txt", "--to", tmp_path / "to.txt", "--layer", 10,
                 "--token", " Paris", "--generate", 4, "--out", patch, "--json").json()
    # One entry per matrix, applied as its blocks; its rank-one factors kept beside them
    # (o_proj 576 x 576, down_proj 576 x 1536, f32).
    assert report["entries"] == 60 and report["factor_bytes"] == 30 * 4 * ((576 + 576) + (576 + 1536))
    assert report["token_prob"]["edited"] < report["token_prob"]["base"] / 10
    assert run("verify", path, patch, "--json").json()["ok"]
    run("apply", path, patch, "--out", out)
    old, new = gguf.GGUFReader(path), gguf.GGUFReader(out)
    changed = {t.name for t, u in zip(old.tensors, new.tensors) if not np.array_equal(np.asarray(t.data), np.asarray(u.data))}
    assert changed == {f"blk.{l}.{p}.weight" for l in range(30) for p in ("attn_output", "ffn_down")}
    prompt = "The river Seine flows through the city of"
    base = llama_cpp(path, prompts=[prompt], top_k=5)["prompts"][0]
    ablated = llama_cpp(out, prompts=[prompt], top_k=5)["prompts"][0]
    ours = run("run", path, "--patch", patch, "--prompt", prompt, "--target", " Paris", "--json").json()
    p_base = next(x["prob"] for x in base["top"] if x["token"] == " Paris")
    p_ablated = next((x["prob"] for x in ablated["top"] if x["token"] == " Paris"), 0.0)
    assert p_ablated < p_base / 10, (base["top"], ablated["top"])
    assert ours["edited"]["target"]["prob"] < p_base / 10
