//! One file of a model and its bytes: a memory map, or a remote file read by range; whole
//! tensors ([`Bytes`]) or just the ranges a read needs ([`Region`]).

use super::regular_file;
use crate::error::{Result, StoreError};
use crate::remote::RemoteFile;
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tensor_surgeon_core::header::{self, Header, TensorInfo};
use tensor_surgeon_core::slice::Selection;
use tensor_surgeon_core::source::ByteSource;

/// More separate ranges than this in a remote read of a selection: its span is read instead.
const MAX_REGION_RANGES: usize = 4096;

/// Where a shard's bytes come from.
pub(super) enum Backing {
    /// A local file, memory-mapped.
    Mapped(Mmap),
    /// A remote object read by range (its header bytes kept).
    Remote {
        file: Arc<RemoteFile>,
        header: Vec<u8>,
        /// Tensors held in memory for the forward pass, by name (read whole on first use).
        resident: HashMap<String, std::sync::OnceLock<Vec<u8>>>,
    },
}

/// One file of a model: mapped, or remote.
pub struct Shard {
    /// The local path; for a remote file, its URL as a path (see [`Shard::location`]).
    pub path: PathBuf,
    /// The file name, as an index names it.
    pub file_name: String,
    pub header: Header,
    pub size: u64,
    pub(super) backing: Backing,
    /// The GGUF header and decoded values, when the file is GGUF.
    pub(super) gguf: Option<Box<super::gguf::GgufPart>>,
}

/// A tensor's bytes: borrowed from the map, or read from a remote file.
pub enum Bytes<'a> {
    Mapped(&'a [u8]),
    Fetched(Vec<u8>),
}

impl std::ops::Deref for Bytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(b) => b,
            Bytes::Fetched(b) => b,
        }
    }
}

/// Some byte ranges of a tensor (offsets within its data), for a read that needs only those
/// (a view's rows, a cell): the whole map for a local file, just those ranges for a remote
/// one. Reading outside them is a bug, and panics rather than answer wrong bytes.
pub enum Region<'a> {
    Mapped(&'a [u8]),
    Fetched(Vec<(u64, Vec<u8>)>),
}

impl ByteSource for Region<'_> {
    fn read(&self, offset: u64, out: &mut [u8]) {
        match self {
            Region::Mapped(b) => b.read(offset, out),
            Region::Fetched(parts) => {
                let i = parts.partition_point(|(start, _)| *start <= offset);
                let (start, bytes) = i
                    .checked_sub(1)
                    .map(|i| &parts[i])
                    .filter(|(s, b)| offset + out.len() as u64 <= s + b.len() as u64)
                    .expect("a region is read only within the ranges it was made for");
                let at = (offset - start) as usize;
                out.copy_from_slice(&bytes[at..at + out.len()]);
            }
        }
    }

    fn borrow_bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        match self {
            Region::Mapped(b) => b.borrow_bytes(offset, len),
            Region::Fetched(_) => None,
        }
    }
}

impl Shard {
    /// Maps and parses one `.safetensors` file.
    pub fn open(path: &Path) -> Result<Shard> {
        regular_file(path)?;
        let file = File::open(path).map_err(StoreError::io(path))?;
        let size = file.metadata().map_err(StoreError::io(path))?.len();
        // SAFETY: the map is read-only and Tensor Surgeon never writes to, truncates or
        // replaces a base file (bakes go to a new file renamed into place). Another process
        // truncating the file while it is open would make reads fault; that is the documented
        // contract of opening a model.
        let map = unsafe { Mmap::map(&file) }.map_err(StoreError::io(path))?;
        if tensor_surgeon_core::gguf::is_gguf(&map) {
            return Shard::open_gguf(path, map, size);
        }
        let header = header::parse(&map, size).map_err(|source| StoreError::Header {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Shard::mapped_file(path, header, size, map, None))
    }

    /// A shard of a mapped local file.
    pub(super) fn mapped_file(
        path: &Path,
        header: Header,
        size: u64,
        map: Mmap,
        gguf: Option<Box<super::gguf::GgufPart>>,
    ) -> Shard {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Shard {
            path: path.to_path_buf(),
            file_name,
            header,
            size,
            backing: Backing::Mapped(map),
            gguf,
        }
    }

    /// A remote file whose version and header bytes were just read.
    pub(super) fn remote(file: RemoteFile, header_bytes: Vec<u8>) -> Result<Shard> {
        let size = file.version.size;
        if tensor_surgeon_core::gguf::is_gguf(&header_bytes) {
            return Shard::remote_gguf(file, header_bytes);
        }
        let header = header::parse(&header_bytes, size).map_err(|source| StoreError::Header {
            path: PathBuf::from(&file.url),
            source,
        })?;
        let file_name = file.url.rsplit('/').next().unwrap_or_default().to_string();
        let resident = header
            .tensors
            .iter()
            .map(|t| (t.name.clone(), Default::default()))
            .collect();
        Ok(Shard {
            path: PathBuf::from(&file.url),
            file_name,
            header,
            size,
            backing: Backing::Remote {
                file: Arc::new(file),
                header: header_bytes,
                resident,
            },
            gguf: None,
        })
    }

    /// Where the file is: its path, or its URL.
    pub fn location(&self) -> String {
        match &self.backing {
            Backing::Mapped(_) => self.path.display().to_string(),
            Backing::Remote { file, .. } => file.url.clone(),
        }
    }

    /// The remote file behind this shard, if it is remote.
    pub fn remote_file(&self) -> Option<&RemoteFile> {
        match &self.backing {
            Backing::Mapped(_) => None,
            Backing::Remote { file, .. } => Some(file),
        }
    }

    pub(super) fn absolute(&self, info: &TensorInfo) -> Range<u64> {
        let start = self.header.data_start() + info.data_offsets.0;
        start..self.header.data_start() + info.data_offsets.1
    }

    /// The bytes of a tensor of this shard (a remote tensor is read whole, through the cache,
    /// in large parallel ranges).
    pub fn data(&self, info: &TensorInfo) -> Result<Bytes<'_>> {
        self.data_with_progress(info, None)
    }

    /// [`Shard::data`], telling `progress` the bytes read so far and in all (remote reads).
    pub fn data_with_progress(
        &self,
        info: &TensorInfo,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Bytes<'_>> {
        match self.derived(info) {
            Some(super::gguf::Derived::Decoded(ty)) => return self.decoded(info, ty),
            Some(how) => {
                let Region::Fetched(mut parts) = self.derived_region(info, how, &[])? else {
                    unreachable!("derived values are made, not mapped")
                };
                return Ok(Bytes::Fetched(parts.pop().map(|p| p.1).unwrap_or_default()));
            }
            None => {}
        }
        self.stored_with_progress(info, progress)
    }

    /// A tensor's bytes as the file stores them: its values' bytes, or a quantized tensor's
    /// blocks (what patch entries name). A blocks view stores none.
    pub fn stored(&self, info: &TensorInfo) -> Result<Bytes<'_>> {
        self.stored_with_progress(info, None)
    }

    fn stored_with_progress(
        &self,
        info: &TensorInfo,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Bytes<'_>> {
        let r = self.absolute(info);
        match &self.backing {
            Backing::Mapped(map) => Ok(Bytes::Mapped(&map[r.start as usize..r.end as usize])),
            Backing::Remote { file, .. } => {
                let mut parts = file.read(&[r], progress)?;
                Ok(Bytes::Fetched(parts.pop().unwrap_or_default()))
            }
        }
    }

    /// A tensor's bytes in the map, or (remote) held in memory from the first use on, for
    /// the forward pass's kernels; `None` when a remote read fails (the caller's own read
    /// then reports why).
    pub fn mapped(&self, info: &TensorInfo) -> Option<&[u8]> {
        match self.derived(info) {
            Some(super::gguf::Derived::Decoded(ty)) => return self.decoded_resident(info, ty),
            // A blocks view is not held for the forward pass (none reads it).
            Some(_) => return None,
            None => {}
        }
        let r = self.absolute(info);
        match &self.backing {
            Backing::Mapped(map) => Some(&map[r.start as usize..r.end as usize]),
            Backing::Remote { file, resident, .. } => {
                let once = resident.get(&info.name)?;
                if once.get().is_none() {
                    let bytes = file.read(&[r], None).ok()?.pop()?;
                    let _ = once.set(bytes);
                }
                once.get().map(Vec::as_slice)
            }
        }
    }

    /// A quantized tensor's blocks as the file stores them, for the forward pass's kernels
    /// that read blocks: in the map, or (remote) read whole on first use and held; `None` for
    /// other tensors, or when a remote read fails (the caller's own read then says why).
    pub fn mapped_blocks(&self, info: &TensorInfo) -> Option<&[u8]> {
        self.quantized(info)?;
        let r = self.absolute(info);
        match &self.backing {
            Backing::Mapped(map) => map.get(r.start as usize..r.end as usize),
            Backing::Remote { .. } => self.remote_blocks(info),
        }
    }

    /// Only `ranges` of a tensor's bytes (offsets within its data): a remote shard reads
    /// just those.
    pub fn region(&self, info: &TensorInfo, ranges: &[Range<u64>]) -> Result<Region<'_>> {
        if let Some(how) = self.derived(info) {
            return self.derived_region(info, how, ranges);
        }
        self.stored_region(info, ranges)
    }

    /// Only `ranges` of a tensor's stored bytes ([`Shard::stored`]; offsets within them).
    pub fn stored_region(&self, info: &TensorInfo, ranges: &[Range<u64>]) -> Result<Region<'_>> {
        let r = self.absolute(info);
        match &self.backing {
            Backing::Mapped(map) => Ok(Region::Mapped(&map[r.start as usize..r.end as usize])),
            Backing::Remote { file, .. } => {
                let ranges = crate::remote::cache::merge(ranges.to_vec());
                let absolute: Vec<Range<u64>> = ranges
                    .iter()
                    .map(|x| r.start + x.start..r.start + x.end)
                    .collect();
                let got = file.read(&absolute, None)?;
                Ok(Region::Fetched(
                    ranges.iter().map(|x| x.start).zip(got).collect(),
                ))
            }
        }
    }

    /// The region a selection reads (its rows, or the span it covers when its reads are
    /// not whole rows).
    pub fn selection_region(&self, info: &TensorInfo, sel: &Selection) -> Result<Region<'_>> {
        if matches!(self.backing, Backing::Mapped(_)) && self.derived(info).is_none() {
            return self.region(info, &[]);
        }
        let ranges = crate::remote::cache::merge(tensor_surgeon_core::source::byte_ranges(
            info.dtype,
            &info.shape,
            sel,
        ));
        if ranges.len() > MAX_REGION_RANGES {
            // Scattered elements (a long column, a transposed view): one span, not a request
            // each.
            let span = tensor_surgeon_core::source::byte_span(info.dtype, &info.shape, sel);
            return self.region(info, &[span]);
        }
        self.region(info, &ranges)
    }

    /// The bytes a view of `sel` reads: its rows when it shows `exact` cells, else the span it
    /// covers (a pooled view reads nearly every byte of it anyway).
    pub fn view_region(
        &self,
        info: &TensorInfo,
        sel: &Selection,
        exact: bool,
    ) -> Result<Region<'_>> {
        if exact || matches!(self.backing, Backing::Mapped(_)) || self.derived(info).is_some() {
            return self.selection_region(info, sel);
        }
        let span = tensor_surgeon_core::source::byte_span(info.dtype, &info.shape, sel);
        self.region(info, &[span])
    }

    /// The header bytes (length prefix + JSON).
    pub fn header_bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(map) => &map[..self.header.data_start() as usize],
            Backing::Remote { header, .. } => header,
        }
    }

    /// Reads bytes `range` of the file (for copying it whole, as a bake does).
    pub fn read_raw(
        &self,
        range: Range<u64>,
        progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    ) -> Result<Bytes<'_>> {
        match &self.backing {
            Backing::Mapped(map) => Ok(Bytes::Mapped(
                &map[range.start as usize..range.end as usize],
            )),
            Backing::Remote { file, .. } => Ok(Bytes::Fetched(
                file.read(&[range], progress)?.pop().unwrap_or_default(),
            )),
        }
    }
}
