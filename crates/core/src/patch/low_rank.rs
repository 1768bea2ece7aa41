//! Low-rank patch entries (format version 2): a tensor seen as `rows x cols` gains `U Vᵀ`,
//! `U` of shape `[rows, R]` and `V` of shape `[cols, R]`, both little-endian f32, row-major.
//!
//! The new value of element `(i, j)` is, exactly:
//!
//! ```text
//! acc = f32(w[i, j])
//! for r in 0..R: acc = acc + u[i, r] * v[j, r]     (each product and each sum in f32, no FMA)
//! w'[i, j] = acc rounded to nearest-even in the tensor's dtype (BF16, F16 or F32)
//! ```
//!
//! A rank-one edit of a 576 x 1536 matrix is 8.4 KB of factors where the byte form is megabytes.
//! An entry names the SHA-256 of the base tensor it was computed against and of the tensor it
//! makes, so a reader can check both without the tool.

use super::{Origin, PatchEntry};
use crate::header::TensorInfo;
use crate::source::ByteSource;
use base64::Engine as _;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

/// The `kind` of a low-rank entry.
pub const KIND: &str = "low_rank";

/// The `kind` of a low-rank entry kept beside the byte entries that hold it (a quantized
/// tensor's blocks): the same fields, never applied.
pub const FACTORS_KIND: &str = "factors";

/// One low-rank entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowRankEntry {
    pub tensor: String,
    /// [`KIND`], or [`FACTORS_KIND`] for the factors of a quantized tensor's edit.
    pub kind: String,
    pub rank: u32,
    /// `[rows, rank]` little-endian f32, row-major.
    #[serde(with = "b64")]
    pub u: Vec<u8>,
    /// `[cols, rank]` little-endian f32, row-major.
    #[serde(with = "b64")]
    pub v: Vec<u8>,
    /// SHA-256 (hex) of the base tensor's bytes.
    pub base_sha256: String,
    /// SHA-256 (hex) of the tensor's bytes with the entry applied.
    pub patched_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Why a low-rank entry cannot be applied to a tensor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LowRankError {
    #[error("{tensor}: a low-rank entry needs rank >= 1 and factors of whole f32 rows")]
    Shape { tensor: String },
    #[error(
        "{tensor}: the factors are for a {rows} x {cols} matrix but the tensor is {want_rows} x \
         {want_cols}"
    )]
    Size {
        tensor: String,
        rows: u64,
        cols: u64,
        want_rows: u64,
        want_cols: u64,
    },
    #[error("{tensor}: the factors u and v must be base64 of little-endian f32s")]
    Encoding { tensor: String },
    #[error("{tensor}: low-rank entries apply to BF16, F16 and F32 tensors, not {dtype}")]
    Dtype { tensor: String, dtype: String },
}

/// A tensor's shape seen as a matrix: the first axis as rows, the rest as columns (a 1-D
/// tensor is one column).
pub fn matrix_shape(shape: &[u64]) -> (u64, u64) {
    match shape.split_first() {
        Some((&rows, rest)) => (rows, rest.iter().product()),
        None => (1, 1),
    }
}

/// Little-endian f32s of bytes.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian bytes of f32s (for building entries).
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// One element `w[i, j]` (its bytes, in place) given row `i` of `U` and row `j` of `V`: the
/// format's rule, `acc = f32(w) + Σ u[r] v[r]` with each product and sum rounded to f32 (never
/// a fused multiply-add), then rounded to nearest-even in the dtype (BF16, F16, F32).
pub fn apply_element(dtype: Dtype, el: &mut [u8], u: &[f32], v: &[f32]) {
    let mut acc = match dtype {
        Dtype::BF16 => half::bf16::from_le_bytes([el[0], el[1]]).to_f32(),
        Dtype::F16 => half::f16::from_le_bytes([el[0], el[1]]).to_f32(),
        _ => f32::from_le_bytes([el[0], el[1], el[2], el[3]]),
    };
    for (a, b) in u.iter().zip(v) {
        let product = a * b;
        acc += product;
    }
    match dtype {
        Dtype::BF16 => el.copy_from_slice(&half::bf16::from_f32(acc).to_le_bytes()),
        Dtype::F16 => el.copy_from_slice(&half::f16::from_f32(acc).to_le_bytes()),
        _ => el.copy_from_slice(&acc.to_le_bytes()),
    }
}

/// `(rows, cols)` of factors of `rank` given as `u_len` and `v_len` bytes.
fn factor_shape(
    tensor: &str,
    rank: u32,
    u_len: usize,
    v_len: usize,
) -> Result<(u64, u64), LowRankError> {
    let row = 4 * rank as usize;
    if rank == 0
        || u_len == 0
        || v_len == 0
        || !u_len.is_multiple_of(row)
        || !v_len.is_multiple_of(row)
    {
        return Err(LowRankError::Shape {
            tensor: tensor.to_string(),
        });
    }
    Ok(((u_len / row) as u64, (v_len / row) as u64))
}

/// Whether factors of `rank` (`u_len` and `v_len` bytes) fit the tensor: its dtype and its
/// matrix shape.
pub fn check_fit(
    info: &TensorInfo,
    rank: u32,
    u_len: usize,
    v_len: usize,
) -> Result<(), LowRankError> {
    check_dtype(info)?;
    check_shape(info, rank, u_len, v_len)
}

/// [`check_fit`] without the dtype: factors of the right sizes for the tensor's matrix (an
/// edit of a quantized tensor's values is planned on them as F32, then quantized again).
pub fn check_shape(
    info: &TensorInfo,
    rank: u32,
    u_len: usize,
    v_len: usize,
) -> Result<(), LowRankError> {
    let (rows, cols) = factor_shape(&info.name, rank, u_len, v_len)?;
    let (want_rows, want_cols) = matrix_shape(&info.shape);
    if (rows, cols) != (want_rows, want_cols) {
        return Err(LowRankError::Size {
            tensor: info.name.clone(),
            rows,
            cols,
            want_rows,
            want_cols,
        });
    }
    Ok(())
}

/// Whether a low-rank entry can apply to the tensor's dtype (BF16, F16, F32).
pub fn check_dtype(info: &TensorInfo) -> Result<(), LowRankError> {
    if info.blocks.is_none() && matches!(info.dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) {
        return Ok(());
    }
    Err(LowRankError::Dtype {
        tensor: info.name.clone(),
        dtype: match info.blocks {
            Some(ty) => format!("{ty} (quantized: its blocks are edited instead)"),
            None => crate::dtype::name(info.dtype).into(),
        },
    })
}

/// SHA-256 (hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl LowRankEntry {
    /// An entry of `u` (`[rows, rank]`) and `v` (`[cols, rank]`) with its digests filled in
    /// from the base tensor's bytes.
    pub fn new(
        info: &TensorInfo,
        base: &[u8],
        rank: u32,
        u: &[f32],
        v: &[f32],
        origin: Option<Origin>,
    ) -> Result<LowRankEntry, LowRankError> {
        let mut entry = LowRankEntry {
            tensor: info.name.clone(),
            kind: KIND.into(),
            rank,
            u: f32_bytes(u),
            v: f32_bytes(v),
            base_sha256: sha256_hex(base),
            patched_sha256: String::new(),
            origin,
        };
        let mut patched = base.to_vec();
        entry.apply_to(info, &mut patched)?;
        entry.patched_sha256 = sha256_hex(&patched);
        Ok(entry)
    }

    /// The entry that undoes this one's change (`−U Vᵀ`, its digests swapped): what the
    /// factors kept beside a quantized tensor's blocks become when the patch is inverted.
    pub fn negated(&self) -> LowRankEntry {
        let (u, _) = self.factors();
        let minus: Vec<f32> = u.iter().map(|x| -x).collect();
        LowRankEntry {
            u: f32_bytes(&minus),
            base_sha256: self.patched_sha256.clone(),
            patched_sha256: self.base_sha256.clone(),
            ..self.clone()
        }
    }

    /// `(rows, cols)` as the factors give them.
    pub fn factor_shape(&self) -> Result<(u64, u64), LowRankError> {
        factor_shape(&self.tensor, self.rank, self.u.len(), self.v.len())
    }

    /// `U` and `V` as f32.
    pub fn factors(&self) -> (Vec<f32>, Vec<f32>) {
        (floats(&self.u), floats(&self.v))
    }

    /// Checks that the entry fits the tensor: its dtype and its matrix shape.
    pub fn check(&self, info: &TensorInfo) -> Result<(), LowRankError> {
        check_fit(info, self.rank, self.u.len(), self.v.len())
    }

    /// Applies the entry to one row's bytes (`row` of the matrix view) in place.
    fn apply_row(&self, dtype: Dtype, u: &[f32], v: &[f32], row: usize, bytes: &mut [u8]) {
        let r = self.rank as usize;
        let ur = &u[row * r..(row + 1) * r];
        let width = crate::dtype::element_bytes(dtype);
        for (j, el) in bytes.chunks_exact_mut(width).enumerate() {
            apply_element(dtype, el, ur, &v[j * r..(j + 1) * r]);
        }
    }

    /// Applies the entry to a whole tensor's bytes in place.
    pub fn apply_to(&self, info: &TensorInfo, bytes: &mut [u8]) -> Result<(), LowRankError> {
        self.check(info)?;
        let (u, v) = self.factors();
        let (rows, _) = matrix_shape(&info.shape);
        let row_bytes = bytes.len() / rows.max(1) as usize;
        for (i, row) in bytes.chunks_exact_mut(row_bytes).enumerate() {
            self.apply_row(info.dtype, &u, &v, i, row);
        }
        Ok(())
    }

    /// The byte entries the low-rank entry makes of `source` (the tensor as it stands),
    /// read and compared row by row so only the changed bytes are held. Entries are
    /// element-aligned and coalesced, with the entry's origin.
    pub fn to_entries(
        &self,
        info: &TensorInfo,
        source: &dyn ByteSource,
    ) -> Result<Materialized, LowRankError> {
        use sha2::Digest;
        let (mut before, mut after) = (sha2::Sha256::new(), sha2::Sha256::new());
        self.check(info)?;
        let (u, v) = self.factors();
        let (rows, _) = matrix_shape(&info.shape);
        let row_bytes = (info.byte_len() / rows.max(1)) as usize;
        let width = crate::dtype::element_bytes(info.dtype);
        let mut out: Vec<PatchEntry> = Vec::new();
        let mut old = vec![0u8; row_bytes];
        for i in 0..rows as usize {
            let at = i as u64 * row_bytes as u64;
            source.read(at, &mut old);
            before.update(&old);
            let mut new = old.clone();
            self.apply_row(info.dtype, &u, &v, i, &mut new);
            after.update(&new);
            for (k, (o, n)) in old.chunks(width).zip(new.chunks(width)).enumerate() {
                if o == n {
                    continue;
                }
                let offset = at + (k * width) as u64;
                match out.last_mut() {
                    Some(last) if last.end() == offset => {
                        last.original.extend_from_slice(o);
                        last.patched.extend_from_slice(n);
                    }
                    _ => out.push(PatchEntry {
                        tensor: self.tensor.clone(),
                        offset,
                        original: o.to_vec(),
                        patched: n.to_vec(),
                        origin: self.origin.clone(),
                    }),
                }
            }
        }
        Ok(Materialized {
            entries: out,
            source_sha256: hex::encode(before.finalize()),
            patched_sha256: hex::encode(after.finalize()),
        })
    }

    /// This entry with `more`'s factors after its own (the same tensor): one entry whose rank
    /// is the sum, its digests made again from the base tensor's bytes.
    pub fn joined(
        &self,
        more: &LowRankEntry,
        info: &TensorInfo,
        base: &[u8],
    ) -> Result<LowRankEntry, LowRankError> {
        let (u1, v1) = self.factors();
        let (u2, v2) = more.factors();
        let (r1, r2) = (self.rank as usize, more.rank as usize);
        let join = |a: &[f32], b: &[f32]| -> Vec<f32> {
            a.chunks_exact(r1)
                .zip(b.chunks_exact(r2))
                .flat_map(|(x, y)| x.iter().chain(y).copied())
                .collect()
        };
        LowRankEntry::new(
            info,
            base,
            self.rank + more.rank,
            &join(&u1, &u2),
            &join(&v1, &v2),
            self.origin.clone(),
        )
    }
}

/// What a low-rank entry makes of a tensor: the byte entries, and the SHA-256 of the tensor
/// read and of the tensor made.
pub struct Materialized {
    pub entries: Vec<PatchEntry>,
    pub source_sha256: String,
    pub patched_sha256: String,
}

/// SHA-256 (hex) of a tensor's bytes, read a megabyte at a time.
pub fn sha256_of(info: &TensorInfo, source: &dyn ByteSource) -> String {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    let len = info.byte_len();
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        source.read(at, &mut buf[..n]);
        digest.update(&buf[..n]);
        at += n as u64;
    }
    hex::encode(digest.finalize())
}

/// Base64 of bytes, as entries write their factors.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of base64 text (`None`: not base64), as [`base64`] writes them.
pub fn from_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}
