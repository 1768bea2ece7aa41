//! Token-aware views: the model's `tokenizer.json` (via the `tokenizers` crate) labels the rows
//! of vocabulary-sized matrices, finds a token's row, and ranks rows by cosine similarity to
//! one row, over the edited model, on every core.

use crate::error::{InferError, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::dtype::Dtype;
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_wire::{Neighbor, TokenHit};
use tokenizers::Tokenizer;

/// One block of rows scored: the best (cosine, row) pairs and the block's row norms.
type BlockResult = (Vec<(f32, u64)>, Vec<f32>);

/// Vocabulary-sized dims may carry this many padding rows beyond the vocabulary.
const PADDING: u64 = 1024;
/// Rows per parallel block of a similarity scan.
const BLOCK_ROWS: u64 = 512;

/// A loaded tokenizer and the display text of every token.
pub struct Vocab {
    pub path: PathBuf,
    tokenizer: Tokenizer,
    labels: Vec<String>,
}

impl Vocab {
    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Vocab> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| InferError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Vocab::of(path, tokenizer))
    }

    /// The tokenizer a GGUF file at `path` carries in its metadata.
    pub fn from_gguf(path: &Path, header: &tensor_surgeon_core::gguf::GgufHeader) -> Result<Vocab> {
        Ok(Vocab::of(path, crate::gguf::tokenizer(header)?))
    }

    /// The tokenizer named on the command line; else a GGUF's own; else a `tokenizer.json`
    /// beside the model (`None`: there is none).
    pub fn for_model(
        model_path: &Path,
        explicit: Option<&Path>,
        gguf: Option<&tensor_surgeon_core::gguf::GgufHeader>,
    ) -> Result<Option<Vocab>> {
        match (explicit, gguf) {
            (None, Some(h)) => Vocab::from_gguf(model_path, h).map(Some),
            _ => Vocab::find(model_path, explicit),
        }
    }

    fn of(path: &Path, tokenizer: Tokenizer) -> Vocab {
        let size = tokenizer.get_vocab_size(true);
        let labels = (0..size as u32)
            .map(|id| {
                tokenizer
                    .id_to_token(id)
                    .map(|t| display(&t))
                    .unwrap_or_default()
            })
            .collect();
        Vocab {
            path: path.to_path_buf(),
            tokenizer,
            labels,
        }
    }

    /// The tokenizer given, or a `tokenizer.json` beside the model (`None` if there is none).
    pub fn find(model_path: &Path, explicit: Option<&Path>) -> Result<Option<Vocab>> {
        if let Some(p) = explicit {
            return Vocab::load(p).map(Some);
        }
        let dir = if model_path.is_dir() {
            model_path
        } else {
            model_path.parent().unwrap_or(Path::new("."))
        };
        let candidate = dir.join("tokenizer.json");
        if candidate.is_file() {
            Vocab::load(&candidate).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The tokenizer itself (prompts for a forward pass).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn size(&self) -> u64 {
        self.labels.len() as u64
    }

    /// The display text of token `id`.
    pub fn label(&self, id: u64) -> Option<&str> {
        self.labels.get(id as usize).map(String::as_str)
    }

    /// Whether a dim of `size` indexes the vocabulary (allowing padding rows).
    pub fn indexes(&self, size: u64) -> bool {
        (self.size()..self.size() + PADDING).contains(&size)
    }

    /// The token a user named: `#ID` (an id below the vocabulary size), or its text (see
    /// [`Vocab::resolve`]).
    pub fn resolve_token(&self, text: &str) -> Result<u64> {
        match text.strip_prefix('#').map(str::parse::<u64>) {
            Some(Ok(id)) if id < self.size() => Ok(id),
            Some(_) => Err(InferError::Request(format!(
                "{text:?} is not a token id below {}",
                self.size()
            ))),
            None => self.resolve(text),
        }
    }

    /// The token a text names: an exact token, else the single token the text encodes to.
    pub fn resolve(&self, text: &str) -> Result<u64> {
        if let Some(id) = self.labels.iter().position(|l| l == text) {
            return Ok(id as u64);
        }
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| InferError::Request(format!("cannot tokenize {text:?}: {e}")))?;
        match enc.get_ids() {
            // One token that really is the text (not the unknown token standing in for it).
            [id] if self.label(u64::from(*id)).map(str::trim) == Some(text.trim()) => {
                Ok(u64::from(*id))
            }
            [_] => Err(InferError::Request(format!(
                "{text:?} is not a token of the vocabulary"
            ))),
            [] => Err(InferError::Request(format!("{text:?} has no tokens"))),
            ids => Err(InferError::Request(format!(
                "{text:?} is {} tokens ({}); name one token",
                ids.len(),
                ids.iter()
                    .map(|&i| format!("{:?}", self.label(u64::from(i)).unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Tokens matching a search text: the resolved token first, then labels that start with
    /// it, then labels that contain it (case-insensitive), at most `limit`.
    pub fn search(&self, text: &str, limit: usize) -> Vec<TokenHit> {
        let mut ids: Vec<u64> = self.resolve(text).into_iter().collect();
        let lower = text.to_lowercase();
        let trimmed = lower.trim();
        if !trimmed.is_empty() {
            let starts = self
                .labels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim().to_lowercase().starts_with(trimmed));
            let contains = self
                .labels
                .iter()
                .enumerate()
                .filter(|(_, l)| l.to_lowercase().contains(trimmed));
            for (id, _) in starts.chain(contains) {
                if ids.len() >= limit {
                    break;
                }
                if !ids.contains(&(id as u64)) {
                    ids.push(id as u64);
                }
            }
        }
        ids.truncate(limit);
        ids.into_iter()
            .map(|id| TokenHit {
                id,
                token: self.label(id).unwrap_or_default().to_string(),
            })
            .collect()
    }
}

/// A token as text: SentencePiece's `▁` and byte-level BPE's `Ġ` word starts as spaces.
fn display(token: &str) -> String {
    token.replace(['▁', 'Ġ'], " ")
}

/// Decodes row bytes to f32 (fast paths for the common float dtypes).
pub(crate) fn decode_f32_into(dt: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match dt {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        d => {
            let mut wide = Vec::new();
            dtype::decode_f64_into(d, bytes, &mut wide);
            out.extend(wide.iter().map(|&v| v as f32));
        }
    }
}

/// Lanes of the dot-product kernels (fixed-size arrays the compiler vectorises).
const LANES: usize = 8;

/// `(q . x, x . x)` where element `i` of `x` is `decode(&chunk[W * i..W * (i + 1)])`, over
/// whole chunks of `LANES` elements stored `W` bytes each (`C = W * LANES` bytes).
#[inline(always)]
fn dot_lanes<const W: usize, const C: usize>(
    q: &[f32],
    bytes: &[u8],
    want_norm: bool,
    decode: impl Fn(&[u8; W]) -> f32,
) -> (f32, f32) {
    let (qa, q_rest) = q.as_chunks::<LANES>();
    let (ba, b_rest) = bytes.as_chunks::<C>();
    let mut d = [0f32; LANES];
    let mut n = [0f32; LANES];
    for (qs, bs) in qa.iter().zip(ba) {
        let (xs, _) = bs.as_chunks::<W>();
        for k in 0..LANES {
            let x = decode(&xs[k]);
            d[k] += qs[k] * x;
            if want_norm {
                n[k] += x * x;
            }
        }
    }
    let (mut dot, mut norm): (f32, f32) = (d.iter().sum(), n.iter().sum());
    let (rest, _) = b_rest.as_chunks::<W>();
    for (qi, xb) in q_rest.iter().zip(rest) {
        let x = decode(xb);
        dot += qi * x;
        norm += x * x;
    }
    (dot, norm)
}

/// `(q . x, |x|^2)` of one row's stored bytes (the norm only when `want_norm`).
fn row_dot(
    dt: Dtype,
    q: &[f32],
    bytes: &[u8],
    scratch: &mut Vec<f32>,
    want_norm: bool,
) -> (f32, f32) {
    match dt {
        Dtype::BF16 => dot_lanes::<2, 16>(q, bytes, want_norm, |b| {
            f32::from_bits(u32::from(u16::from_le_bytes(*b)) << 16)
        }),
        Dtype::F32 => dot_lanes::<4, 32>(q, bytes, want_norm, |b| f32::from_le_bytes(*b)),
        d => {
            decode_f32_into(d, bytes, scratch);
            let as_bytes: Vec<u8> = scratch.iter().flat_map(|v| v.to_le_bytes()).collect();
            dot_lanes::<4, 32>(q, &as_bytes, want_norm, |b| f32::from_le_bytes(*b))
        }
    }
}

/// The `k` rows of a `[rows, cols]` matrix most cosine-similar to row `row` (itself
/// excluded), best first; rows with zero norm or NaN are skipped. `norms` are the rows' L2
/// norms from an earlier call on the same bytes (then only dot products are computed); the
/// norms computed here are returned for the next call.
pub fn nearest(
    dt: Dtype,
    rows: u64,
    cols: u64,
    source: &(dyn ByteSource + Sync),
    row: u64,
    k: usize,
    norms: Option<&[f32]>,
) -> Result<(Vec<Neighbor>, Option<Vec<f32>>)> {
    if row >= rows {
        return Err(InferError::Request(format!(
            "row {row} is out of range (the matrix has {rows} rows)"
        )));
    }
    if dtype::is_packed(dt) {
        return Err(InferError::Request(format!(
            "similarity needs whole-byte elements; {} packs several per byte",
            dtype::name(dt)
        )));
    }
    let norms = norms.filter(|n| n.len() as u64 == rows);
    let row_bytes = cols * dtype::element_bytes(dt) as u64;
    let mut raw = vec![0u8; row_bytes as usize];
    source.read(row * row_bytes, &mut raw);
    let mut query = Vec::new();
    decode_f32_into(dt, &raw, &mut query);
    let qn = query.iter().map(|v| v * v).sum::<f32>().sqrt();
    if !(qn > 0.0 && qn.is_finite()) {
        return Err(InferError::Request(format!(
            "row {row} has zero or non-finite norm: no direction to compare"
        )));
    }
    let blocks: Vec<u64> = (0..rows.div_ceil(BLOCK_ROWS)).collect();
    let parts: Vec<BlockResult> = blocks
        .par_iter()
        .map(|&b| {
            let first = b * BLOCK_ROWS;
            let n = BLOCK_ROWS.min(rows - first);
            let len = (n * row_bytes) as usize;
            let mut copy = Vec::new();
            let bytes = match source.borrow_bytes(first * row_bytes, len) {
                Some(s) => s,
                None => {
                    copy.resize(len, 0);
                    source.read(first * row_bytes, &mut copy);
                    &copy
                }
            };
            let mut scratch = Vec::new();
            let mut block_norms = Vec::new();
            let mut best: Vec<(f32, u64)> = Vec::with_capacity(n as usize);
            for (i, x) in bytes.chunks_exact(row_bytes as usize).enumerate() {
                let r = first + i as u64;
                let (dot, norm) = match norms {
                    Some(ns) => (
                        row_dot(dt, &query, x, &mut scratch, false).0,
                        ns[r as usize],
                    ),
                    None => {
                        let (d, n2) = row_dot(dt, &query, x, &mut scratch, true);
                        (d, n2.sqrt())
                    }
                };
                if norms.is_none() {
                    block_norms.push(norm);
                }
                let cos = dot / (qn * norm);
                if r != row && cos.is_finite() {
                    best.push((cos, r));
                }
            }
            if best.len() > k {
                best.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
                best.truncate(k);
            }
            (best, block_norms)
        })
        .collect();
    let computed = norms
        .is_none()
        .then(|| parts.iter().flat_map(|p| p.1.iter().copied()).collect());
    let mut all: Vec<(f32, u64)> = parts.into_iter().flat_map(|p| p.0).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.truncate(k);
    let neighbors = all
        .into_iter()
        .map(|(cos, r)| Neighbor {
            row: r,
            token: None,
            cosine: f64::from(cos),
        })
        .collect();
    Ok((neighbors, computed))
}

/// One row of a `[rows, cols]` matrix as f64.
pub fn row_values(dt: Dtype, cols: u64, source: &dyn ByteSource, row: u64) -> Vec<f64> {
    let width = dtype::element_bytes(dt) as u64;
    let mut raw = vec![0u8; (cols * width) as usize];
    source.read(row * cols * width, &mut raw);
    let mut out = Vec::new();
    dtype::decode_f64_into(dt, &raw, &mut out);
    out
}

/// Two rows of a `[rows, cols]` matrix compared: cosine similarity, L2 distance, and the
/// delta `b - a` element by element.
pub struct RowComparison {
    pub cosine: f64,
    pub l2: f64,
    pub delta: Vec<f64>,
}

/// Compares rows `a` and `b` (both below the matrix's row count).
pub fn compare_rows(
    dt: Dtype,
    cols: u64,
    source: &dyn ByteSource,
    a: u64,
    b: u64,
) -> RowComparison {
    let x = row_values(dt, cols, source, a);
    let y = row_values(dt, cols, source, b);
    let dot: f64 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
    let nx = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    let ny = y.iter().map(|v| v * v).sum::<f64>().sqrt();
    let delta: Vec<f64> = x.iter().zip(&y).map(|(p, q)| q - p).collect();
    RowComparison {
        cosine: dot / (nx * ny),
        l2: delta.iter().map(|d| d * d).sum::<f64>().sqrt(),
        delta,
    }
}
