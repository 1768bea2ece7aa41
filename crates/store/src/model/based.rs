//! The base model as the patch functions read it (stored bytes: a quantized tensor's blocks): for a remote model, the byte ranges the
//! work will read, fetched before it starts.

use super::shard::Region;
use super::Model;
use crate::error::{Result, StoreError};
use std::collections::HashMap;
use std::ops::Range;
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{self, BaseModel};
use tensor_surgeon_core::source::ByteSource;

/// The base model as the patch functions read it ([`BaseModel`]): a local model whole; a
/// remote one only in the byte ranges named when it was made, read (and any error met)
/// before the work starts.
pub struct Based<'m> {
    model: &'m Model,
    fetched: HashMap<String, Region<'m>>,
    /// Reading remote tensors whole on first use (when the ranges are not known up front).
    lazily: Option<HashMap<&'m str, std::sync::OnceLock<Option<Vec<u8>>>>>,
    /// The first read that failed while lazily reading.
    failure: std::sync::Mutex<Option<StoreError>>,
}

impl Model {
    /// The base for work that reads `needs`: (tensor, byte range within its data) pairs.
    /// Unknown tensors are left for the work to report.
    pub fn based<'n>(
        &self,
        needs: impl IntoIterator<Item = (&'n str, Range<u64>)>,
    ) -> Result<Based<'_>> {
        let mut fetched = HashMap::new();
        if self.is_remote() {
            let mut wanted: HashMap<&str, Vec<Range<u64>>> = HashMap::new();
            for (name, r) in needs {
                wanted.entry(name).or_default().push(r);
            }
            for (name, ranges) in wanted {
                let Ok((shard, info)) = self.get(name) else {
                    continue;
                };
                let len = info.byte_len();
                let ranges: Vec<Range<u64>> = ranges
                    .into_iter()
                    .map(|r| r.start.min(len)..r.end.min(len))
                    .collect();
                fetched.insert(name.to_string(), shard.stored_region(info, &ranges)?);
            }
        }
        Ok(Based {
            model: self,
            fetched,
            lazily: None,
            failure: Default::default(),
        })
    }

    /// The base for work whose reads are not known before it runs (replaying a journal): a
    /// remote tensor is read whole on first use. A failed read makes the tensor look absent
    /// to the work; [`Based::failure`] then says what happened.
    pub fn based_lazily(&self) -> Based<'_> {
        Based {
            model: self,
            fetched: HashMap::new(),
            lazily: self.is_remote().then(|| {
                self.tensors()
                    .map(|(_, info)| (info.name.as_str(), Default::default()))
                    .collect()
            }),
            failure: Default::default(),
        }
    }

    /// The base for a patch's entries (verify, apply).
    pub fn based_on_patch(&self, patch: &patch::Patch) -> Result<Based<'_>> {
        self.based(
            patch
                .entries
                .iter()
                .map(|e| (e.tensor.as_str(), e.offset..e.end()))
                // A low-rank entry reads its whole tensor (ranges are clipped to its size).
                .chain(
                    patch
                        .low_rank
                        .iter()
                        .map(|e| (e.tensor.as_str(), 0..u64::MAX)),
                ),
        )
    }

    /// The base for the runs of an overlay, widened to whole elements (recording a patch).
    pub fn based_on_overlay(&self, overlay: &Overlay) -> Result<Based<'_>> {
        self.based(overlay.tensors().flat_map(|(name, runs)| {
            // Whole blocks of a quantized tensor; 8 bytes cover any element otherwise.
            let granule = match self.get(name) {
                Ok((_, info)) => info.blocks.map_or(8, |ty| ty.block_bytes() as u64),
                Err(_) => 8,
            };
            runs.runs().map(move |(start, run)| {
                let end = start + run.len() as u64;
                (
                    name,
                    start - start % granule..end.div_ceil(granule) * granule,
                )
            })
        }))
    }
}

impl Based<'_> {
    /// The first read error met while lazily reading, if any.
    pub fn failure(&self) -> Result<()> {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl BaseModel for Based<'_> {
    fn gguf(&self) -> Option<&tensor_surgeon_core::gguf::GgufHeader> {
        self.model.gguf()
    }

    fn tensor(&self, name: &str) -> Option<(&TensorInfo, Box<dyn ByteSource + '_>)> {
        let (shard, info) = self.model.get(name).ok()?;
        let whole = self.lazily.as_ref().and_then(|l| l.get(name));
        let source: Box<dyn ByteSource + '_> = match (self.fetched.get(name), whole) {
            (Some(region), _) => Box::new(region),
            (None, Some(once)) => {
                let bytes = once.get_or_init(|| match shard.stored(info) {
                    Ok(b) => Some(b.to_vec()),
                    Err(e) => {
                        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(e);
                        None
                    }
                });
                Box::new(bytes.as_deref()?)
            }
            (None, None) if shard.remote_file().is_some() => Box::new(Region::Fetched(Vec::new())),
            (None, None) => Box::new(shard.stored_region(info, &[]).ok()?),
        };
        Some((info, source))
    }
}
