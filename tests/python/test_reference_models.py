"""The real-model fixtures and the numpy reference forward pass, checked on their own: the
conversion of SmolLM2 from GGUF gives a Hugging Face checkpoint that behaves like the model,
its tokenizer is the byte-level BPE of the original, and the reference reproduces known
behaviour of both models. The inference tests of the product (test_run_models.py) rest on
these."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from tokenizers import Tokenizer

import models
from reference import Bert, Llama, cosine, softmax


@pytest.fixture(scope="module")
def llama(smollm2):
    return Llama(smollm2)


@pytest.fixture(scope="module")
def bert(minilm):
    return Bert(minilm)


# --- the prepared folders ------------------------------------------------------------------


def test_prepared_folders_are_complete_and_returned_at_once(smollm2, minilm):
    for folder in (smollm2, minilm):
        assert not folder.resolve().is_relative_to(Path(__file__).resolve().parents[2]), "never into the repository"
        for name in ("model.safetensors", "config.json", "tokenizer.json", models.MARKER):
            assert (folder / name).is_file(), folder / name
    started = time.monotonic()
    assert models.smollm2_dir() == smollm2 and models.minilm_dir() == minilm
    assert time.monotonic() - started < 1.0, "a prepared folder is not prepared again"


def test_smollm2_checkpoint_has_hugging_face_names_shapes_and_config(smollm2):
    config = json.loads((smollm2 / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    # SmolLM2-135M's published dimensions.
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (576, 1536, 30)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"]) == (9, 3, 49152)
    assert config["tie_word_embeddings"] is True

    with safe_open(str(smollm2 / "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}
        names = set(f.keys())
        shapes = {n: f.get_slice(n).get_shape() for n in names}
        dtypes = {f.get_slice(n).get_dtype() for n in names}
    assert dtypes == {"BF16"}
    assert "lm_head.weight" not in names, "tied embeddings: no lm_head"
    assert len(names) == 2 + 9 * config["num_hidden_layers"]
    assert shapes["model.embed_tokens.weight"] == [49152, 576]
    assert shapes["model.norm.weight"] == [576]
    layer = "model.layers.29."
    assert shapes[layer + "self_attn.q_proj.weight"] == [576, 576]
    assert shapes[layer + "self_attn.k_proj.weight"] == [192, 576]
    assert shapes[layer + "self_attn.v_proj.weight"] == [192, 576]
    assert shapes[layer + "self_attn.o_proj.weight"] == [576, 576]
    assert shapes[layer + "mlp.gate_proj.weight"] == [1536, 576]
    assert shapes[layer + "mlp.up_proj.weight"] == [1536, 576]
    assert shapes[layer + "mlp.down_proj.weight"] == [576, 1536]
    assert shapes[layer + "input_layernorm.weight"] == [576]
    assert shapes[layer + "post_attention_layernorm.weight"] == [576]


def test_unpermute_inverts_llama_cpp_permute():
    def permute(w, n_head):  # convert_hf_to_gguf.py's LlamaModel.permute
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.arange(192 * 4, dtype=np.float32).reshape(192, 4)
    np.testing.assert_array_equal(models.unpermute_rope(permute(w, 3), 3), w)
    # Head 0's rows in llama.cpp order are pairs (0, 32), (1, 33), ...: undone, row i is back.
    assert list(models.unpermute_rope(permute(w, 3), 3)[:3, 0]) == [0, 4, 8]
    assert list(permute(w, 3)[:4, 0]) == [0, 32 * 4, 4, 33 * 4]


def test_smollm2_tokenizer_is_byte_level_bpe(smollm2):
    tok = Tokenizer.from_file(str(smollm2 / "tokenizer.json"))
    enc = tok.encode("The capital of France is")
    assert enc.tokens == ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
    assert tok.encode(" Paris").tokens == ["ĠParis"]
    # No BOS, no EOS: the prompt's tokens are the text's.
    assert tok.encode("Hello").tokens == ["Hello"]
    # Digits one by one (the 'smollm' pre-tokenizer), special tokens whole.
    assert tok.encode("in 2024").tokens == ["in", "Ġ", "2", "0", "2", "4"]
    chat = tok.encode("<|im_start|>user\nHi<|im_end|>")
    assert chat.ids[0] == tok.token_to_id("<|im_start|>") == 1 and chat.ids[-1] == tok.token_to_id("<|im_end|>") == 2
    assert tok.token_to_id("<|endoftext|>") == 0
    for text in ["The capital of France is", "  two spaces,\ttabs\nand lines\n\n", "naïve café, 3.14 €, 日本語, 🤗", "def f(x):\n    return x ** 2"]:
        assert tok.decode(tok.encode(text).ids) == text


# --- the Llama reference ---------------------------------------------------------------------


def test_smollm2_knows_the_capital_of_france(llama):
    ids = llama.encode("The capital of France is")
    probs = llama.next_token_probs(ids)
    top = np.argsort(-probs)[:5]
    print("top-5:", [(llama.decode([int(i)]), round(float(probs[i]), 4)) for i in top])
    assert llama.decode([int(top[0])]) == " Paris"
    assert abs(probs.sum() - 1) < 1e-9


def test_smollm2_greedy_continuation_is_english(llama):
    ids = llama.encode("The capital of France is")
    out = llama.greedy(ids, 8)
    text = llama.decode(out)
    print("continuation:", repr(text))
    assert len(out) == 8 and text.startswith(" Paris")
    assert all(c == "\n" or " " <= c <= "~" for c in text), "printable ASCII text"
    words = [w.strip(".,;:!?\"'()") for w in text.split()]
    assert sum(w.isalpha() for w in words) >= 2, text


def test_llama_api_is_consistent(llama):
    ids = llama.encode("Once upon a time, there was a")
    logits = llama.logits(ids)
    assert logits.shape == (len(ids), 49152) and logits.dtype == np.float32
    # Position t's logits depend on tokens up to t only (causal mask).
    np.testing.assert_allclose(llama.logits(ids[:3]), logits[:3], rtol=0, atol=1e-3)
    np.testing.assert_allclose(llama.next_token_probs(ids), softmax(logits[-1]), atol=1e-6)
    assert llama.greedy(ids, 1) == [int(np.argmax(logits[-1]))]
    # The logit lens of the last layer is the model's own next-token distribution.
    lens = llama.logit_lens(ids)
    assert len(lens) == llama.n_layers
    np.testing.assert_allclose(lens[-1], softmax(logits[-1]), atol=1e-6)
    act = llama.mlp_activations(ids, 4)
    assert act.shape == (len(ids), 1536)


def test_llama_reads_another_weights_file_with_tied_embeddings(llama, smollm2, tmp_path):
    """Swapping two embedding rows (tied: input and output) swaps their next-token
    probabilities when neither token is in the prompt."""
    from safetensors.numpy import load_file, save_file

    paris, london = (llama.encode(t)[0] for t in (" Paris", " London"))
    tensors = load_file(str(smollm2 / "model.safetensors"))
    emb = tensors["model.embed_tokens.weight"]
    emb[[paris, london]] = emb[[london, paris]]
    edited_path = tmp_path / "swapped.safetensors"
    save_file(tensors, str(edited_path), metadata={"format": "pt"})
    del tensors, emb

    edited = Llama(smollm2, weights=edited_path)
    ids = llama.encode("The capital of France is")
    base, after = llama.next_token_probs(ids), edited.next_token_probs(ids)
    assert after[paris] == pytest.approx(base[london], abs=1e-6)
    assert after[london] == pytest.approx(base[paris], abs=1e-6)
    assert edited.decode([int(np.argmax(after))]) == " London"


# --- the BERT reference ----------------------------------------------------------------------


def test_minilm_checkpoint_names(minilm):
    with safe_open(str(minilm / "model.safetensors"), framework="np") as f:
        names = set(f.keys())
    assert "embeddings.word_embeddings.weight" in names or "bert.embeddings.word_embeddings.weight" in names


def test_minilm_similarity_follows_meaning(bert):
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    emb = bert.embed(sentences)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    related, unrelated = cosine(emb[0], emb[1]), cosine(emb[0], emb[2])
    print(f"cosine related {related:.4f}, unrelated {unrelated:.4f}, other pair {cosine(emb[1], emb[2]):.4f}")
    assert related > 0.6 and unrelated < 0.2, (related, unrelated)


def test_minilm_batch_padding_does_not_change_embeddings(bert):
    """A padded batch gives each sentence the embedding it has alone (the mask works)."""
    sentences = ["Short.", "A much longer sentence, with many more tokens than the first one has."]
    batch = bert.embed(sentences)
    alone = np.stack([bert.embed([s])[0] for s in sentences])
    np.testing.assert_allclose(batch, alone, atol=1e-5)
