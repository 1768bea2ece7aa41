//! Weights for a forward pass: a tensor's bytes, the base from the memory map or an edited
//! tensor's bytes seen through the overlay, cached per (tensor, edit version). Matrices are read
//! at their stored width by the kernels; an f32 copy (a candle tensor) is made only when an
//! operation needs one (norms, biases, dtypes the kernels do not read), once. Base and edited
//! runs share every unchanged tensor; after an edit only the edited tensors reload.

use super::kernel::Stored;
use crate::error::{Error, Result};
use crate::store::Model;
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tensor_surgeon_core::dtype::{self, Dtype};
use tensor_surgeon_core::overlay::Overlay;

/// A tensor of the cache: an edited one's stored bytes, and its f32 copy once asked for.
#[derive(Clone, Default)]
pub(crate) struct Loaded(Arc<LoadedInner>);

#[derive(Default)]
struct LoadedInner {
    /// The edited bytes (`None`: the base, read from the memory map).
    stored: Option<Vec<u8>>,
    /// Edited bytes equal to the base (every edit undone or turned off).
    same_as_base: bool,
    widened: OnceLock<Tensor>,
}

impl Loaded {
    /// Whether the edits of this tensor cancel out.
    pub(crate) fn same_as_base(&self) -> bool {
        self.0.same_as_base
    }

    /// The f32 copy, made on first use from `bytes`.
    fn widened(&self, name: &str, dt: Dtype, shape: &[u64], bytes: &[u8]) -> Result<Tensor> {
        if let Some(t) = self.0.widened.get() {
            return Ok(t.clone());
        }
        let t = to_tensor(name, dt, shape, bytes)?;
        Ok(self.0.widened.get_or_init(|| t).clone())
    }
}

/// The edited tensors of one side of a run (none: the base model).
#[derive(Clone, Default)]
pub struct Edited(HashMap<String, Loaded>);

impl Edited {
    pub(crate) fn from_map(tensors: HashMap<String, Loaded>) -> Edited {
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
    pub fn weights<'a>(&'a self, model: &'a Model, edited: Edited) -> Weights<'a> {
        Weights {
            model,
            cache: self,
            edited: edited.0,
        }
    }

    /// An edited tensor at `version`: from the cache, or its bytes from `bytes()`.
    pub(crate) fn edited(
        &self,
        name: &str,
        version: u64,
        base: &[u8],
        bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Loaded> {
        if let Some(t) = self.get(name, version) {
            return Ok(t);
        }
        let bytes = bytes()?;
        let loaded = Loaded(Arc::new(LoadedInner {
            same_as_base: bytes == base,
            stored: Some(bytes),
            widened: OnceLock::new(),
        }));
        self.insert(name, version, loaded.clone());
        Ok(loaded)
    }

    /// The tensors a set of patches changes, seen through their overlay (the command line:
    /// each run starts afresh, so version 1 marks "edited").
    pub fn edited_from_overlay(&self, model: &Model, overlay: &Overlay) -> Result<Edited> {
        let mut out = HashMap::new();
        for (name, _) in overlay.tensors() {
            let (shard, info) = model.get(name)?;
            let base = shard.data(info);
            let t = self.edited(name, 1, base, || {
                let mut bytes = base.to_vec();
                if let Some(runs) = overlay.tensor(name) {
                    runs.lay_onto(0, &mut bytes);
                }
                Ok(bytes)
            })?;
            if !t.same_as_base() {
                out.insert(name.to_string(), t);
            }
        }
        Ok(Edited(out))
    }
}

/// The weights one forward pass reads.
pub struct Weights<'a> {
    model: &'a Model,
    cache: &'a WeightCache,
    edited: HashMap<String, Loaded>,
}

impl Weights<'_> {
    /// A 2-D weight as stored (`[rows, cols]`), for the decode kernel: the memory map, or the
    /// edited bytes. `None` when its dtype or alignment does not suit the kernel.
    pub fn stored(&self, name: &str, rows: usize, cols: usize) -> Option<Stored<'_>> {
        let (shard, info) = self.model.get(name).ok()?;
        if info.shape != [rows as u64, cols as u64] {
            return None;
        }
        let bytes: &[u8] = match self.edited.get(name) {
            Some(l) => l.0.stored.as_deref()?,
            None => shard.data(info),
        };
        Stored::of(info.dtype, bytes)
    }

    /// Whether the model has a tensor of that name.
    pub fn has(&self, name: &str) -> bool {
        self.model.contains(name)
    }

    /// Whether any tensor is edited.
    pub fn is_edited(&self) -> bool {
        !self.edited.is_empty()
    }

    /// A tensor as f32, in its stored shape (widened once, then cached).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let (shard, info) = self.model.get(name).map_err(|_| {
            Error::Unsupported(format!(
                "cannot run this model: it has no tensor {name:?}, which the forward pass needs"
            ))
        })?;
        if let Some(l) = self.edited.get(name) {
            let bytes = l.0.stored.as_deref().unwrap_or(shard.data(info));
            return l.widened(name, info.dtype, &info.shape, bytes);
        }
        let base = match self.cache.get(name, 0) {
            Some(l) => l,
            None => {
                let l = Loaded::default();
                self.cache.insert(name, 0, l.clone());
                l
            }
        };
        base.widened(name, info.dtype, &info.shape, shard.data(info))
    }

    /// A tensor that must have `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            return Err(Error::Unsupported(format!(
                "cannot run this model: {name} has shape {:?}, config.json implies {shape:?}",
                t.dims()
            )));
        }
        Ok(t)
    }
}

/// Bytes of a stored tensor, widened to an f32 candle tensor (on every core).
fn to_tensor(name: &str, dt: Dtype, shape: &[u64], bytes: &[u8]) -> Result<Tensor> {
    if dtype::is_packed(dt) || matches!(dtype::kind(dt), dtype::Kind::Complex) {
        return Err(Error::Unsupported(format!(
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
