//! The tokenizer a GGUF carries in `tokenizer.ggml.*`, built for the `tokenizers` library:
//! byte-level BPE or SentencePiece, with the file's special tokens, as llama.cpp reads them.

use super::{get, unsupported};
use crate::error::Result;
use tensor_surgeon_core::gguf::{GgufHeader, Value};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

fn strings<'h>(h: &'h GgufHeader, key: &str) -> Result<Vec<&'h str>> {
    match get(h, key)? {
        Value::Array(_, items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| unsupported(format!("{key} holds a non-string")))
            })
            .collect(),
        _ => Err(unsupported(format!("{key} is not an array"))),
    }
}

/// The tokenizer a GGUF carries, as the `tokenizers` library runs it: llama.cpp's byte-level
/// BPE (`tokenizer.ggml.model` "gpt2") with the vocabulary, merges and special tokens of the
/// file. The pre-tokenizer follows `tokenizer.ggml.pre`: GPT-2's byte-level split, after
/// single digits for "smollm", Qwen2's own split for "qwen2".
pub fn tokenizer(h: &GgufHeader) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::PreTokenizerWrapper;

    let model = get(h, "tokenizer.ggml.model")?.as_str().unwrap_or_default();
    if model == "llama" {
        return sentencepiece(h);
    }
    if model != "gpt2" {
        return Err(unsupported(format!(
            "its tokenizer is {model:?}; byte-level BPE (\"gpt2\") and SentencePiece (\"llama\") \
             are implemented"
        )));
    }
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    enum Pre {
        Gpt2,
        Digits,
        Qwen2,
    }
    let pre = match pre {
        "smollm" => Pre::Digits,
        "default" | "gpt-2" | "gpt2" => Pre::Gpt2,
        "qwen2" => Pre::Qwen2,
        other => {
            return Err(unsupported(format!(
                "its pre-tokenizer {other:?} is not implemented (smollm, qwen2 and gpt-2 are)"
            )))
        }
    };
    let tokens = strings(h, "tokenizer.ggml.tokens")?;
    let merges = strings(h, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| unsupported(format!("the merge {m:?} is not a pair")))
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(unsupported("its vocabulary repeats a token".into()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| unsupported(format!("its vocabulary does not make a BPE model: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        Pre::Digits => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        Pre::Gpt2 => byte_level.into(),
        Pre::Qwen2 => {
            // Qwen2's split (its tokenizer.json's, llama.cpp's `qwen2`): single digits,
            // letters with one leading non-letter, punctuation runs, newlines; then bytes.
            use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
            use tokenizers::SplitDelimiterBehavior;
            const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
            let split = Split::new(
                SplitPattern::Regex(QWEN2.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| unsupported(format!("the qwen2 pre-tokenizer: {e}")))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
    };
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_post_processor(Some(ByteLevel::new(false, false, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    add_special(&mut tok, h, &tokens)?;
    if flag(h, "tokenizer.ggml.add_bos_token") {
        return Err(unsupported(
            "it asks for a BOS token before every byte-level BPE prompt, which this tokenizer \
             does not add yet"
                .into(),
        ));
    }
    Ok(tok)
}

fn flag(h: &GgufHeader, key: &str) -> bool {
    h.get(key) == Some(&Value::Bool(true))
}

/// The file's control tokens as special tokens and its user-defined ones as added tokens,
/// each matched whole in a prompt, as llama.cpp does.
fn add_special(tok: &mut tokenizers::Tokenizer, h: &GgufHeader, tokens: &[&str]) -> Result<()> {
    use tokenizers::AddedToken;
    let types: Vec<u64> = match h.get("tokenizer.ggml.token_type") {
        Some(Value::Array(_, t)) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let of_type = |ty: u64, special: bool| -> Vec<AddedToken> {
        types
            .iter()
            .zip(tokens)
            .filter(|(t, _)| **t == ty)
            .map(|(_, s)| AddedToken::from(s.to_string(), special).normalized(false))
            .collect()
    };
    tok.add_special_tokens(of_type(TOKEN_CONTROL, true))
        .map_err(|e| unsupported(format!("its special tokens: {e}")))?;
    tok.add_tokens(of_type(TOKEN_USER_DEFINED, false))
        .map_err(|e| unsupported(format!("its user-defined tokens: {e}")))?;
    Ok(())
}

/// llama.cpp's SentencePiece tokenizer (`tokenizer.ggml.model` "llama": pieces with scores,
/// spaces as `▁`, bytes as `<0xXX>` pieces) as a BPE model of the `tokenizers` library: a
/// merge for every piece that splits into two pieces, ranked by the merged piece's score,
/// so the pair merged first is the one llama.cpp merges first (the highest score); characters
/// without a piece fall back to their bytes. A BOS is added when the file asks for one.
fn sentencepiece(h: &GgufHeader) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::byte_fallback::ByteFallback;
    use tokenizers::decoders::fuse::Fuse;
    use tokenizers::decoders::sequence::Sequence as Decoders;
    use tokenizers::models::bpe::BPE;
    use tokenizers::normalizers::{Prepend, Replace};
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{DecoderWrapper, NormalizerWrapper};

    let tokens = strings(h, "tokenizer.ggml.tokens")?;
    let scores: Vec<f64> = match h.get("tokenizer.ggml.scores") {
        Some(Value::Array(_, s)) => s.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
        _ => {
            return Err(unsupported(
                "its SentencePiece vocabulary has no scores".into(),
            ))
        }
    };
    if scores.len() != tokens.len() {
        return Err(unsupported("it has a score for some tokens only".into()));
    }
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let mut ranked: Vec<(f64, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (at, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(at);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                ranked.push((scores[id], id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    // Highest score first; among equal scores, the lower id (llama.cpp's order of the vocab).
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = ranked.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let unk = h
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(Value::as_u64)
        .and_then(|i| tokens.get(i as usize));
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true)
        .ignore_merges(false);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| unsupported(format!("its vocabulary does not make a model: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    let space =
        Replace::new(" ", "▁").map_err(|e| unsupported(format!("the space normalizer: {e}")))?;
    let normalizer: NormalizerWrapper = if flag(h, "tokenizer.ggml.add_space_prefix") {
        tokenizers::normalizers::Sequence::new(vec![Prepend::new("▁".into()).into(), space.into()])
            .into()
    } else {
        space.into()
    };
    tok.with_normalizer(Some(normalizer))
        .map_err(|e| unsupported(format!("the normalizer: {e}")))?;
    let back = Replace::new("▁", " ").map_err(|e| unsupported(format!("the decoder: {e}")))?;
    tok.with_decoder(Some(Decoders::new(vec![
        DecoderWrapper::Replace(back),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    add_special(&mut tok, h, &tokens)?;
    if flag(h, "tokenizer.ggml.add_bos_token") {
        let bos = h
            .get("tokenizer.ggml.bos_token_id")
            .and_then(Value::as_u64)
            .and_then(|i| Some((*tokens.get(i as usize)?, i as u32)))
            .ok_or_else(|| unsupported("it asks for a BOS token and names none".into()))?;
        let template = TemplateProcessing::builder()
            .try_single(format!("{} $0", bos.0))
            .and_then(|b| {
                b.special_tokens(vec![(bos.0.to_string(), bos.1)])
                    .build()
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| unsupported(format!("the BOS template: {e}")))?;
        tok.with_post_processor(Some(template));
    }
    Ok(tok)
}
