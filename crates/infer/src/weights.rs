//! Weights for a forward pass: the base from the memory map; an edited tensor as the base plus
//! the overlay's byte runs and the rows they change (copy on write), cached per (tensor, edit
//! version). Matrices are read at their stored width by the kernels; an f32 copy (a candle
//! tensor) is made only when an operation needs one (norms, biases, dtypes the kernels do not
//! read), once. Base and edited runs share every unchanged tensor; after an edit only the
//! edited tensors reload, at the cost of their edited rows.

use super::kernel::{PatchedRows, Stored};
use crate::error::{InferError, Result};
use crate::gguf::RunSource;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tensor_surgeon_core::dtype::{self, Dtype};
use tensor_surgeon_core::gguf::GgmlType;
use tensor_surgeon_core::overlay::{Overlay, RangeMap};
use tensor_surgeon_core::tensors::TensorSource;

/// A tensor of the cache: an edited one's runs and edited rows, and its f32 copy once asked
/// for.
#[derive(Clone, Default)]
pub struct Loaded(Arc<LoadedInner>);

#[derive(Default)]
struct LoadedInner {
    /// The overlay's runs on this tensor (`None`: the base, read from the memory map).
    runs: Option<RangeMap>,
    /// The rows (of the last dim) the runs change, with the runs laid on, widened.
    rows: PatchedRows,
    /// A quantized tensor whose edits change more than its stored size in widened rows (a
    /// low-rank entry changes every row): all its blocks, with the edited ones laid on, read
    /// by the kernels as stored.
    blocks: Option<(GgmlType, Vec<u8>)>,
    widened: OnceLock<Tensor>,
    /// The same edits with the rows in the forward pass's order (a Llama-architecture GGUF's
    /// query and key weights interleave each head's rotary halves), made on first use.
    restored: OnceLock<Loaded>,
}

impl Loaded {
    /// Whether the edits of this tensor cancel out (every edit undone or turned off).
    pub fn same_as_base(&self) -> bool {
        self.0.runs.is_some() && self.0.rows.is_empty() && self.0.blocks.is_none()
    }

    /// These edits with the rows put back in the forward pass's order: the file's row
    /// `2j + s` of each head of `rows / heads` rows is row `s·d/2 + j` (`row_bytes`: a row of
    /// the runs, which hold values).
    fn restored(&self, rows: usize, heads: usize, row_bytes: usize) -> &Loaded {
        self.0.restored.get_or_init(|| {
            let d = rows / heads.max(1);
            let to_run = |file: usize| {
                let (h, i) = (file / d.max(1), file % d.max(1));
                h * d + (i % 2) * (d / 2) + i / 2
            };
            let runs = self.0.runs.as_ref().map(|runs| {
                let mut out = RangeMap::default();
                for (offset, bytes) in runs.runs() {
                    let mut at = offset as usize;
                    let end = at + bytes.len();
                    while at < end {
                        let row = at / row_bytes.max(1);
                        let stop = end.min((row + 1) * row_bytes.max(1));
                        let to = to_run(row) * row_bytes + at % row_bytes.max(1);
                        out.write(
                            to as u64,
                            &bytes[at - offset as usize..stop - offset as usize],
                        );
                        at = stop;
                    }
                }
                out
            });
            let rows_of = self
                .0
                .rows
                .iter()
                .map(|(r, v)| (to_run(*r), v.clone()))
                .collect();
            let blocks = self
                .0
                .blocks
                .as_ref()
                .map(|(ty, b)| (*ty, crate::gguf::restore_rows(b, rows, heads)));
            Loaded(Arc::new(LoadedInner {
                runs,
                rows: rows_of,
                blocks,
                widened: OnceLock::new(),
                restored: OnceLock::new(),
            }))
        })
    }

    /// The f32 copy, made on first use from the base bytes and the runs.
    fn widened<'b>(
        &self,
        name: &str,
        dt: Dtype,
        shape: &[u64],
        base: impl FnOnce() -> Result<Cow<'b, [u8]>>,
    ) -> Result<Tensor> {
        if let Some(t) = self.0.widened.get() {
            return Ok(t.clone());
        }
        if let Some((ty, blocks)) = &self.0.blocks {
            let values = tensor_surgeon_core::gguf::quant::to_f32_bytes(*ty, blocks)
                .map_err(|e| InferError::Unsupported(format!("cannot run {name}: {e}")))?;
            let t = to_tensor(name, Dtype::F32, shape, &values)?;
            return Ok(self.0.widened.get_or_init(|| t).clone());
        }
        let base = base()?;
        let base = &*base;
        let t = match &self.0.runs {
            Some(runs) => {
                let mut bytes = base.to_vec();
                runs.lay_onto(0, &mut bytes);
                to_tensor(name, dt, shape, &bytes)?
            }
            None => to_tensor(name, dt, shape, base)?,
        };
        Ok(self.0.widened.get_or_init(|| t).clone())
    }
}

/// The edited tensors of one side of a run (none: the base model).
#[derive(Clone, Default)]
pub struct Edited(HashMap<String, Loaded>);

impl Edited {
    pub fn from_map(tensors: HashMap<String, Loaded>) -> Edited {
        Edited(tensors)
    }

    /// How many tensors differ from the base.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Converted weights by (tensor name, edit version); version 0 is the base.
#[derive(Default)]
pub struct WeightCache {
    entries: Mutex<HashMap<(String, u64), Loaded>>,
    /// Tensors converted since start (a measure of what a run had to reload).
    loads: std::sync::atomic::AtomicU64,
}

impl WeightCache {
    fn get(&self, name: &str, version: u64) -> Option<Loaded> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&(name.to_string(), version)).cloned()
    }

    fn insert(&self, name: &str, version: u64, tensor: Loaded) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // An edited tensor's older versions will not be asked for again (history moves on):
        // keep the base and the newest edit only.
        if version > 0 {
            entries.retain(|(n, v), _| n != name || *v == 0 || *v > version);
        }
        entries.insert((name.to_string(), version), tensor);
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many tensors were converted since start.
    pub fn loads(&self) -> u64 {
        self.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The base weights of a model plus `edited` tensors (already loaded).
    pub fn weights<'a>(&'a self, model: &'a dyn TensorSource, edited: Edited) -> Weights<'a> {
        self.weights_of(
            RunSource {
                inner: model,
                names: None,
            },
            edited,
        )
    }

    /// [`WeightCache::weights`] read under the forward pass's names (a GGUF's are mapped).
    pub fn weights_of<'a>(&'a self, model: RunSource<'a>, edited: Edited) -> Weights<'a> {
        Weights {
            model,
            cache: self,
            edited: edited.0,
            steering: None,
        }
    }

    /// The cached edited tensor at `version`, if any.
    pub fn cached(&self, name: &str, version: u64) -> Option<Loaded> {
        self.get(name, version)
    }

    /// An edited tensor at `version`: the overlay's `runs` over the `base` bytes of a tensor
    /// of `dt` and `shape`; the rows they change are laid out (and widened) now.
    pub fn edited(
        &self,
        name: &str,
        version: u64,
        (dt, shape, base): (Dtype, &[u64], &[u8]),
        runs: RangeMap,
    ) -> Result<Loaded> {
        if let Some(t) = self.get(name, version) {
            return Ok(t);
        }
        let cols = shape.last().copied().unwrap_or(1).max(1) as usize;
        let row_bytes = cols * dtype::element_bytes(dt);
        let mut rows = PatchedRows::new();
        for r in touched_rows(&runs, row_bytes) {
            let span = r * row_bytes..((r + 1) * row_bytes).min(base.len());
            let mut row = base[span.clone()].to_vec();
            runs.lay_onto(span.start as u64, &mut row);
            if row != base[span] {
                let mut values = Vec::new();
                crate::tokens::decode_f32_into(dt, &row, &mut values);
                rows.insert(r, values);
            }
        }
        let loaded = Loaded(Arc::new(LoadedInner {
            runs: Some(runs),
            rows,
            blocks: None,
            widened: OnceLock::new(),
            restored: OnceLock::new(),
        }));
        self.insert(name, version, loaded.clone());
        Ok(loaded)
    }

    /// Tensor `name` of `model` at `version` with the overlay's `raw` runs (a quantized
    /// tensor's are runs of its blocks). A quantized tensor whose edits touch more rows than
    /// its stored bytes would hold widened keeps its blocks, edited, at their stored size;
    /// otherwise its edited rows alone are decoded and widened (never the whole tensor).
    pub fn edited_of(
        &self,
        model: &dyn TensorSource,
        name: &str,
        version: u64,
        raw: &RangeMap,
    ) -> Result<Loaded> {
        if let Some(t) = self.get(name, version) {
            return Ok(t);
        }
        let info = model.info(name).ok_or_else(|| missing(name))?;
        let cols = info.shape.last().copied().unwrap_or(1).max(1) as usize;
        if let (Some(ty), Some(base)) = (info.blocks, model.blocks(name)) {
            let row_bytes = (cols / ty.block_elements().max(1)) * ty.block_bytes();
            let rows = touched_rows(raw, row_bytes.max(1));
            if row_bytes > 0 && rows.len() * cols * 4 > base.len() {
                let mut bytes = base.to_vec();
                raw.lay_onto(0, &mut bytes);
                let blocks = (bytes != base).then_some((ty, bytes));
                let loaded = Loaded(Arc::new(LoadedInner {
                    runs: Some(RangeMap::default()),
                    rows: PatchedRows::new(),
                    blocks,
                    widened: OnceLock::new(),
                    restored: OnceLock::new(),
                }));
                self.insert(name, version, loaded.clone());
                return Ok(loaded);
            }
            // A few rows: only their blocks are decoded, with the edits laid on.
            let mut patched = PatchedRows::new();
            for r in rows {
                let span = r * row_bytes..((r + 1) * row_bytes).min(base.len());
                if span.is_empty() {
                    continue;
                }
                let mut row = base[span.clone()].to_vec();
                raw.lay_onto(span.start as u64, &mut row);
                if row != base[span] {
                    let values = tensor_surgeon_core::gguf::quant::to_f32(ty, &row)
                        .map_err(|e| InferError::Unsupported(format!("cannot run {name}: {e}")))?;
                    patched.insert(r, values);
                }
            }
            let loaded = Loaded(Arc::new(LoadedInner {
                runs: Some(tensor_surgeon_core::overlay::decode_blocks(ty, raw)),
                rows: patched,
                blocks: None,
                widened: OnceLock::new(),
                restored: OnceLock::new(),
            }));
            self.insert(name, version, loaded.clone());
            return Ok(loaded);
        }
        let runs = match info.blocks {
            Some(ty) => tensor_surgeon_core::overlay::decode_blocks(ty, raw),
            None => raw.clone(),
        };
        self.edited(
            name,
            version,
            (info.dtype, &info.shape, &read(model, name)?),
            runs,
        )
    }

    /// The tensors a set of patches changes, seen through their overlay (the command line:
    /// each run starts afresh, so version 1 marks "edited").
    pub fn edited_from_overlay(
        &self,
        model: &dyn TensorSource,
        overlay: &Overlay,
    ) -> Result<Edited> {
        let mut out = HashMap::new();
        for (name, raw) in overlay.tensors() {
            let t = self.edited_of(model, name, 1, raw)?;
            if !t.same_as_base() {
                out.insert(name.to_string(), t);
            }
        }
        Ok(Edited(out))
    }
}

/// The weights one forward pass reads.
pub struct Weights<'a> {
    model: RunSource<'a>,
    cache: &'a WeightCache,
    edited: HashMap<String, Loaded>,
    /// Control vectors added to layers' outputs.
    steering: Option<Arc<crate::steering::Steering>>,
}

impl Weights<'_> {
    /// These weights with control vectors added to the layers' outputs.
    pub fn with_steering(mut self, steering: Option<Arc<crate::steering::Steering>>) -> Self {
        self.steering = steering.filter(|s| !s.is_empty());
        self
    }

    /// The vector added to `layer`'s output, if any.
    pub fn steering_at(&self, layer: usize) -> Option<&[f32]> {
        self.steering.as_deref()?.at(layer)
    }

    /// A 2-D weight as stored (`[rows, cols]`), for the kernels: the memory map (a GGUF's
    /// quantized blocks as they are), with the edited rows. `None` when its dtype or alignment does not suit the kernel.
    pub fn stored(&self, name: &str, rows: usize, cols: usize) -> Option<Stored<'_>> {
        let info = self.model.info(name)?;
        if info.shape != [rows as u64, cols as u64] {
            return None;
        }
        // A quantized tensor's blocks as stored, where the kernel reads them; else its values.
        let blocks = info
            .blocks
            .zip(self.model.blocks(name))
            .and_then(|(ty, b)| Stored::blocks(ty, b, cols));
        let base = match blocks {
            Some(b) => b,
            None => Stored::of(info.dtype, self.model.resident(name)?)?,
        };
        Some(match self.edited(name) {
            Some(l) => match &l.0.blocks {
                Some((ty, bytes)) => Stored::blocks(*ty, bytes, cols)?,
                None => base.with_patched(&l.0.rows),
            },
            None => base,
        })
    }

    /// Whether the model stores that tensor as quantized blocks.
    pub fn is_quantized(&self, name: &str) -> bool {
        self.model.info(name).is_some_and(|i| i.blocks.is_some())
    }

    /// Whether the model has a tensor of that name.
    pub fn has(&self, name: &str) -> bool {
        self.model.info(name).is_some()
    }

    /// The model's names of the edited tensors.
    pub fn edited_names(&self) -> impl Iterator<Item = &str> {
        self.edited.keys().map(String::as_str)
    }

    /// Whether these weights differ from the base: a tensor edited, or a control vector.
    pub fn is_edited(&self) -> bool {
        !self.edited.is_empty() || self.steering.is_some()
    }

    /// A tensor as f32, in its stored shape (widened once, then cached).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let info = self.model.info(name).ok_or_else(|| missing(name))?;
        if let Some(l) = self.edited(name) {
            return l.widened(name, info.dtype, &info.shape, || read(&self.model, name));
        }
        let base = match self.cache.get(name, 0) {
            Some(l) => l,
            None => {
                let l = Loaded::default();
                self.cache.insert(name, 0, l.clone());
                l
            }
        };
        base.widened(name, info.dtype, &info.shape, || read(&self.model, name))
    }

    /// The edited tensor behind the forward pass's `name` (edits are keyed by the model's),
    /// its rows in the forward pass's order.
    fn edited(&self, name: &str) -> Option<&Loaded> {
        let l = self.edited.get(self.model.source_name(name))?;
        let Some(heads) = self.model.rotary_heads(name) else {
            return Some(l);
        };
        let info = self.model.info(name)?;
        let rows = info.shape.first().copied().unwrap_or(1) as usize;
        let cols = info.shape.last().copied().unwrap_or(1) as usize;
        // The runs hold values: a quantized tensor's decoded to F32.
        let width = match info.blocks {
            Some(_) => 4,
            None => dtype::element_bytes(info.dtype),
        };
        Some(l.restored(rows, heads, cols * width))
    }

    /// A tensor that must have `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            return Err(InferError::Unsupported(format!(
                "cannot run this model: {name} has shape {:?}, config.json implies {shape:?}",
                t.dims()
            )));
        }
        Ok(t)
    }
}

/// The rows of `row_bytes` bytes that `runs` write into, in order.
fn touched_rows(runs: &RangeMap, row_bytes: usize) -> std::collections::BTreeSet<usize> {
    let mut rows = std::collections::BTreeSet::new();
    for (offset, bytes) in runs.runs() {
        let first = offset as usize / row_bytes;
        let last = (offset as usize + bytes.len()).div_ceil(row_bytes);
        rows.extend(first..last);
    }
    rows
}

/// A tensor the forward pass needs and the model does not have.
fn missing(name: &str) -> InferError {
    InferError::Unsupported(format!(
        "cannot run this model: it has no tensor {name:?}, which the forward pass needs"
    ))
}

/// A tensor's bytes, or why they cannot be read.
fn read<'a>(model: &'a dyn TensorSource, name: &str) -> Result<Cow<'a, [u8]>> {
    model.bytes(name).map_err(|source| InferError::Read {
        tensor: name.to_string(),
        source,
    })
}

/// Bytes of a stored tensor, widened to an f32 candle tensor (on every core).
fn to_tensor(name: &str, dt: Dtype, shape: &[u64], bytes: &[u8]) -> Result<Tensor> {
    if dtype::is_packed(dt) || matches!(dtype::kind(dt), dtype::Kind::Complex) {
        return Err(InferError::Unsupported(format!(
            "cannot run this model: {name} is {}; the forward pass reads real-valued dtypes of one \
             byte or more",
            dtype::name(dt)
        )));
    }
    // Conversion runs on every core, a block of elements per task.
    let block = dtype::element_bytes(dt) * (1 << 16);
    let parts: Vec<Vec<f32>> = bytes
        .par_chunks(block)
        .map(|chunk| {
            let mut out = Vec::new();
            crate::tokens::decode_f32_into(dt, chunk, &mut out);
            out
        })
        .collect();
    let values = parts.concat();
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_width_widens_exactly() {
        let bf = [0x80u8, 0x3f, 0x00, 0xc0]; // 1.0, -2.0
        let t = to_tensor("w", Dtype::BF16, &[2], &bf).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![1.0, -2.0]);
        let h = half::f16::from_f32(0.5).to_bits().to_le_bytes();
        let t = to_tensor("w", Dtype::F16, &[1, 1], &h).unwrap();
        assert_eq!(t.dims(), &[1, 1]);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.5]
        );
        let t = to_tensor("w", Dtype::I8, &[2], &[0xff, 3]).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![-1.0, 3.0]);
        let err = to_tensor("w", Dtype::F4, &[2], &[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("F4"), "{err}");
    }
}
