//! Edits of a quantized tensor. Its values are decoded from blocks, so an edit planned on its
//! values becomes an edit of the blocks that hold them: each touched block is decoded (with
//! the session's edits) and given the new values. When its scales can hold them (each within
//! half a step) only the edited elements' quants change; otherwise the block is quantized
//! again from its values ([`tensor_surgeon_infer::blocks`]) and its other values may move.
//! The change is the whole block's bytes, so a patch of a GGUF is block-aligned byte runs
//! of the file. A hex edit names a block's bytes directly.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use tensor_surgeon_core::edit::Change;
use tensor_surgeon_core::gguf::{quant, GgmlType};
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::slice::Selection;
use tensor_surgeon_core::source::ByteSource;
use tensor_surgeon_infer::blocks;
use tensor_surgeon_store::Model;

/// What quantizing again did to the blocks an edit touched.
#[derive(Clone, Debug, PartialEq)]
pub struct Requantized {
    pub tensor: String,
    pub ty: GgmlType,
    /// Blocks written with their scales kept, and blocks quantized again.
    pub kept: u64,
    pub requantized: u64,
    /// Elements the edit set, and the largest distance between a value asked for and the
    /// value its block holds.
    pub asked: u64,
    pub held_off: f32,
    /// For one element: the value asked for and the value held.
    pub one: Option<(f32, f32)>,
    /// Other elements of those blocks whose value moved, and by how much at most.
    pub moved: u64,
    pub moved_most: f32,
}

impl Requantized {
    /// One line for an edit's label: what the blocks hold now.
    pub fn describe(&self) -> String {
        let ty = self.ty;
        let held = match self.one {
            Some((asked, held)) if asked == held => format!("holds {held} exactly"),
            Some((asked, held)) => format!("holds {held} for {asked}"),
            None if self.held_off == 0.0 => "holds the values exactly".into(),
            None => format!("holds the values within {}", self.held_off),
        };
        let moved = match self.moved {
            0 => "no other value moved".to_string(),
            n => format!("{n} other value(s) moved, by at most {}", self.moved_most),
        };
        let blocks = match (self.kept, self.requantized) {
            (k, 0) => format!("{k} block(s) written, scales kept"),
            (0, r) => format!("{r} block(s) quantized again"),
            (k, r) => format!("{k} block(s) written with their scales, {r} quantized again"),
        };
        format!("{ty}: {blocks}; {held}; {moved}")
    }
}

/// The model's quantized tensor `name`, if it is one.
fn blocks_of<'m>(model: &'m Model, name: &str) -> Option<(&'m TensorInfo, GgmlType)> {
    let (_, info) = model.get(name).ok()?;
    Some((info, info.blocks?))
}

/// The stored bytes of blocks `first..end` of a quantized tensor, with the edits of `overlay`.
fn current_blocks(
    model: &Model,
    overlay: &Overlay,
    info: &TensorInfo,
    ty: GgmlType,
    blocks: std::ops::Range<u64>,
) -> Result<Vec<u8>> {
    let (shard, _) = model.get(&info.name)?;
    let size = ty.block_bytes() as u64;
    let range = blocks.start * size..blocks.end * size;
    let base = shard.stored_region(info, std::slice::from_ref(&range))?;
    let mut out = vec![0u8; (range.end - range.start) as usize];
    overlay
        .view_stored(&info.name, &base)
        .read(range.start, &mut out);
    Ok(out)
}

/// `changes` planned on values: those of quantized tensors become changes of whole blocks,
/// quantized again from their new values; the others pass through. Also what quantizing
/// did, per quantized tensor.
pub fn to_stored(
    model: &Model,
    overlay: &Overlay,
    changes: Vec<Change>,
) -> Result<(Vec<Change>, Vec<Requantized>)> {
    let mut out = Vec::new();
    // Per quantized tensor: element -> new value.
    let mut wanted: BTreeMap<String, BTreeMap<u64, f32>> = BTreeMap::new();
    for c in changes {
        if blocks_of(model, &c.tensor).is_none() {
            out.push(c);
            continue;
        }
        if !c.offset.is_multiple_of(4) || !c.after.len().is_multiple_of(4) {
            return Err(Error::Internal(format!(
                "a change of {} is not whole F32 values",
                c.tensor
            )));
        }
        let values = wanted.entry(c.tensor.clone()).or_default();
        for (k, v) in c.after.chunks_exact(4).enumerate() {
            let v = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            values.insert(c.offset / 4 + k as u64, v);
        }
    }
    let mut reports = Vec::new();
    for (name, values) in wanted {
        let Some((info, ty)) = blocks_of(model, &name) else {
            continue;
        };
        if !blocks::can_encode(ty) {
            return Err(Error::Usage(format!(
                "{name} is {ty}: its values cannot be quantized again here; edit its blocks' \
                 bytes instead (hex, a whole block: {} bytes)",
                ty.block_bytes()
            )));
        }
        let (n, size) = (ty.block_elements() as u64, ty.block_bytes() as u64);
        let mut report = Requantized {
            tensor: name.clone(),
            ty,
            kept: 0,
            requantized: 0,
            asked: 0,
            held_off: 0.0,
            one: None,
            moved: 0,
            moved_most: 0.0,
        };
        // Runs of touched blocks, each quantized as one.
        let touched: Vec<u64> = values.keys().map(|e| e / n).collect();
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        for b in touched {
            match runs.last_mut() {
                Some(r) if r.end == b || r.end == b + 1 => r.end = b + 1,
                _ => runs.push(b..b + 1),
            }
        }
        for run in runs {
            let before = current_blocks(model, overlay, info, ty, run.clone())?;
            let mut after = before.clone();
            for b in run.clone() {
                let first = b * n;
                let edits: Vec<(usize, f32)> = values
                    .range(first..first + n)
                    .map(|(&e, &v)| ((e - first) as usize, v))
                    .collect();
                let at = ((b - run.start) * size) as usize..((b - run.start + 1) * size) as usize;
                let (written, kept) = requantize_block(&name, ty, &before[at.clone()], &edits)?;
                let (old, held) = (
                    decode(&name, ty, &before[at.clone()])?,
                    decode(&name, ty, &written)?,
                );
                match kept {
                    Some(true) => report.kept += 1,
                    Some(false) => report.requantized += 1,
                    None => {}
                }
                let asked: BTreeMap<usize, f32> = edits.iter().copied().collect();
                for (k, (&h, &o)) in held.iter().zip(&old).enumerate() {
                    match asked.get(&k) {
                        Some(&want) => {
                            report.asked += 1;
                            report.held_off = report.held_off.max((h - want).abs());
                            report.one = Some((want, h));
                        }
                        None if h.to_bits() != o.to_bits() => {
                            report.moved += 1;
                            report.moved_most = report.moved_most.max((h - o).abs());
                        }
                        None => {}
                    }
                }
                after[at].copy_from_slice(&written);
            }
            // One change per run of blocks that differ (a block left as it was names none).
            let sz = size as usize;
            let mut k = 0;
            let blocks = before.len() / sz;
            while k < blocks {
                let differs =
                    |k: usize| before[k * sz..(k + 1) * sz] != after[k * sz..(k + 1) * sz];
                if !differs(k) {
                    k += 1;
                    continue;
                }
                let start = k;
                while k < blocks && differs(k) {
                    k += 1;
                }
                out.push(Change {
                    tensor: name.clone(),
                    offset: (run.start + start as u64) * size,
                    before: before[start * sz..k * sz].to_vec(),
                    after: after[start * sz..k * sz].to_vec(),
                });
            }
        }
        if report.asked != 1 {
            report.one = None;
        }
        reports.push(report);
    }
    Ok((out, reports))
}

/// One block of `ty` with `edits` (element, new value) made: its bytes, and whether its
/// scales were kept (`Some(true)`), it was quantized again (`Some(false)`), or nothing
/// changed (`None`). Of the two, the block that holds the wanted values (the edited
/// elements' new ones, the others' current ones) closer, by the largest difference, wins;
/// keeping the scales wins ties (it changes the fewest bytes).
fn requantize_block(
    tensor: &str,
    ty: GgmlType,
    before: &[u8],
    edits: &[(usize, f32)],
) -> Result<(Vec<u8>, Option<bool>)> {
    let old = decode(tensor, ty, before)?;
    let mut wanted = old.clone();
    for &(i, v) in edits {
        wanted[i] = v;
    }
    if wanted
        .iter()
        .zip(&old)
        .all(|(a, b)| a.to_bits() == b.to_bits())
    {
        return Ok((before.to_vec(), None));
    }
    let off = |bytes: &[u8]| -> Result<f32> {
        let held = decode(tensor, ty, bytes)?;
        Ok(held
            .iter()
            .zip(&wanted)
            .map(|(h, w)| (h - w).abs())
            .fold(0f32, f32::max))
    };
    let fresh = blocks::encode(ty, &wanted)?;
    Ok(match keep_scales(ty, before, edits) {
        Some(kept) if off(&kept)? <= off(&fresh)? => (kept, Some(true)),
        _ => (fresh, Some(false)),
    })
}

/// Blocks `bytes` of `ty` with each `(element, value)` of `edits` given the nearest quant
/// its (sub-)block's scale and min allow, the rest untouched; `None` when a value lies
/// outside what its block can hold (more than half a step from every quant) or the type
/// has no per-element quants.
pub fn keep_scales(ty: GgmlType, bytes: &[u8], edits: &[(usize, f32)]) -> Option<Vec<u8>> {
    let (n, size) = (ty.block_elements(), ty.block_bytes());
    let (lo, hi) = quant::quant_range(ty)?;
    let mut out = bytes.to_vec();
    for &(e, v) in edits {
        let block = out.get_mut(e / n * size..(e / n + 1) * size)?;
        let code = quant::element_code(ty, block, e % n)?;
        if !(code.scale.is_finite() && code.scale != 0.0 && v.is_finite()) {
            return None;
        }
        let q = ((f64::from(v) + f64::from(code.min)) / f64::from(code.scale)).round();
        let q = q.clamp(f64::from(lo), f64::from(hi)) as i32;
        quant::set_quant(ty, block, e % n, q)?;
        let held = quant::element_code(ty, block, e % n)?.value;
        if f64::from((held - v).abs()) > f64::from(code.scale.abs()) * 0.5 * (1.0 + 1e-6) {
            return None;
        }
    }
    Some(out)
}

/// The changes of `op` on the selected elements of the model's tensor `info`, as `overlay`
/// shows it, in stored bytes: a quantized tensor's values quantized again into its blocks
/// (what that did is the second part), its hex a whole block's bytes.
pub fn plan(
    model: &Model,
    overlay: &Overlay,
    info: &TensorInfo,
    sel: &Selection,
    op: &tensor_surgeon_core::edit::Op,
    options: tensor_surgeon_core::dtype::EncodeOptions,
) -> Result<(Vec<Change>, Vec<Requantized>)> {
    use tensor_surgeon_core::edit::{self, Op};
    if let (Op::Hex { hex }, Some(_)) = (op, info.blocks) {
        return Ok((hex_blocks(model, overlay, info, sel, hex)?, Vec::new()));
    }
    // Only the selected elements are read (a remote tensor is not fetched whole).
    let (shard, _) = model.get(&info.name)?;
    let base = shard.selection_region(info, sel)?;
    let planned = edit::plan(info, sel, &overlay.view(info, &base), op, options)?;
    to_stored(model, overlay, planned)
}

/// What quantizing did, as text to add to a step's label (empty for float tensors).
pub fn label(requantized: &[Requantized]) -> String {
    requantized
        .iter()
        .map(|r| format!("; {}", r.describe()))
        .collect()
}

/// The values of whole blocks.
fn decode(tensor: &str, ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    quant::to_f32(ty, bytes).map_err(|source| {
        tensor_surgeon_store::StoreError::Decode {
            tensor: tensor.to_string(),
            source,
        }
        .into()
    })
}

/// A hex edit of a quantized tensor: the blocks holding the selected elements take `hex`, a
/// whole block's bytes each.
pub fn hex_blocks(
    model: &Model,
    overlay: &Overlay,
    info: &TensorInfo,
    sel: &Selection,
    hex: &str,
) -> Result<Vec<Change>> {
    let ty = info
        .blocks
        .ok_or_else(|| Error::Internal(format!("{} is not quantized", info.name)))?;
    let size = ty.block_bytes();
    let bytes = hex::decode(hex.trim().replace([' ', '_'], ""))
        .map_err(|e| Error::Usage(format!("{hex:?} is not hex: {e}")))?;
    if bytes.len() != size {
        return Err(Error::Usage(format!(
            "{} is {ty}: a hex edit gives a whole block, {size} bytes ({} hex digits); got {}",
            info.name,
            2 * size,
            bytes.len()
        )));
    }
    let n = ty.block_elements() as u64;
    let touched: std::collections::BTreeSet<u64> = sel
        .element_indices(&info.shape)
        .map(|flat| flat / n)
        .collect();
    let mut out = Vec::new();
    for b in touched {
        let before = current_blocks(model, overlay, info, ty, b..b + 1)?;
        if before != bytes {
            out.push(Change {
                tensor: info.name.clone(),
                offset: b * size as u64,
                before,
                after: bytes.clone(),
            });
        }
    }
    Ok(out)
}

/// A rank-R update `U Vᵀ` of the model's tensor `name` as `over` shows it: the low-rank
/// entry (against the base's values), the byte entries it makes of the tensor's stored bytes,
/// and, for a quantized tensor, those changes as block changes (the edited values quantized
/// again into its blocks; a patch keeps them, since a low-rank entry names float bytes).
pub fn low_rank_update(
    model: &Model,
    over: &Overlay,
    name: &str,
    (rank, u, v): (u32, &[f32], &[f32]),
    origin: Option<tensor_surgeon_core::patch::Origin>,
) -> Result<LowRankUpdate> {
    use tensor_surgeon_core::patch::{LowRankEntry, PatchEntry};
    let stored = model.get(name)?.1;
    let info = values_info(stored);
    let bytes = model.tensor_bytes(name)?;
    let entry = LowRankEntry::new(&info, &bytes, rank, u, v, origin)?;
    let view = over.view(stored, &*bytes);
    let entries = entry.to_entries(&info, &view)?.entries;
    if stored.blocks.is_none() {
        return Ok(LowRankUpdate {
            entry,
            entries,
            blocks: Vec::new(),
        });
    }
    let planned = entries.into_iter().map(Change::from).collect();
    let (blocks, _) = to_stored(model, over, planned)?;
    let entries = blocks
        .iter()
        .map(|c| PatchEntry::of_change(c, entry.origin.clone()))
        .collect();
    Ok(LowRankUpdate {
        entry,
        entries,
        blocks,
    })
}

/// The tensor as its values read: a quantized tensor's as F32 (what its low-rank entries
/// name), a float tensor as stored.
pub fn values_info(stored: &TensorInfo) -> TensorInfo {
    match stored.blocks {
        Some(_) => TensorInfo {
            blocks: None,
            dtype: tensor_surgeon_core::dtype::Dtype::F32,
            data_offsets: (0, stored.elements() * 4),
            ..stored.clone()
        },
        None => stored.clone(),
    }
}

/// Puts low-rank entries into `patch`: a float tensor's as a low-rank entry; a quantized
/// tensor's as the byte entries of its blocks (`blocks`, quantized again) with its factors
/// kept beside them (kind `factors`), so it can still leave as an adapter.
pub fn keep(
    model: &Model,
    patch: &mut tensor_surgeon_core::patch::Patch,
    entries: Vec<tensor_surgeon_core::patch::LowRankEntry>,
    blocks: &[Change],
    origin: &tensor_surgeon_core::patch::Origin,
) -> Result<()> {
    for mut e in entries {
        if blocks_of(model, &e.tensor).is_some() {
            e.kind = tensor_surgeon_core::patch::low_rank::FACTORS_KIND.into();
            patch.factors.push(e);
        } else {
            patch.low_rank.push(e);
        }
    }
    record(model, patch, blocks, origin)
}

/// What [`low_rank_update`] makes.
pub struct LowRankUpdate {
    pub entry: tensor_surgeon_core::patch::LowRankEntry,
    /// Byte entries of the tensor's stored bytes (its blocks when quantized).
    pub entries: Vec<tensor_surgeon_core::patch::PatchEntry>,
    /// A quantized tensor's block changes (empty for a float tensor).
    pub blocks: Vec<Change>,
}

/// Adds block changes (a study's edits of quantized tensors) to `patch` as byte entries
/// against the base.
pub fn record(
    model: &Model,
    patch: &mut tensor_surgeon_core::patch::Patch,
    blocks: &[Change],
    origin: &tensor_surgeon_core::patch::Origin,
) -> Result<()> {
    if blocks.is_empty() {
        return Ok(());
    }
    let base = model.based(
        blocks
            .iter()
            .map(|c| (c.tensor.as_str(), c.offset..c.offset + c.after.len() as u64)),
    )?;
    patch.record(blocks, &base, origin);
    Ok(())
}
