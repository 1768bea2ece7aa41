//! A GGUF file as a shard. Its header is parsed by the core ([`tensor_surgeon_core::gguf`]);
//! plain tensors (F32, F16, BF16, integers) read as they are; a quantized tensor reads as its
//! values decoded to F32, a row of blocks at a time, so every view, statistic and run sees
//! numbers. Its byte offsets in [`TensorInfo`] stay those of its blocks in the file.

use super::shard::{Backing, Bytes, Region, Shard};
use crate::error::{Result, StoreError};
use crate::remote::RemoteFile;
use memmap2::Mmap;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;
use tensor_surgeon_core::gguf::{self, quant, GgmlType, GgufHeader};
use tensor_surgeon_core::header::TensorInfo;
use tensor_surgeon_core::overlay::RangeMap;

/// What a GGUF shard keeps beside the common header view.
pub struct GgufPart {
    pub header: GgufHeader,
    /// Quantized tensors' decoded values, for the forward pass (made on first use).
    decoded: HashMap<String, OnceLock<Vec<u8>>>,
    /// A remote file's quantized tensors' blocks, held from their first run on (a mapped
    /// file's are in its map).
    blocks: HashMap<String, OnceLock<Vec<u8>>>,
}

/// How a tensor of a GGUF shard that is not read as stored is made.
#[derive(Clone, Copy)]
pub(super) enum Derived<'a> {
    /// A quantized tensor: its blocks decoded.
    Decoded(GgmlType),
    /// A blocks view: the scales of the blocks of this quantized tensor.
    Scales(&'a TensorInfo, GgmlType),
}

/// The block an element of a quantized tensor is decoded from (see [`Shard::block_of`]).
pub struct BlockOf {
    pub ty: GgmlType,
    pub index: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub element: usize,
}

impl GgufPart {
    fn new(header: GgufHeader) -> GgufPart {
        let quantized = || {
            header
                .tensors
                .iter()
                .filter(|t| t.ggml_type.is_quantized())
                .map(|t| (t.name.clone(), OnceLock::new()))
                .collect()
        };
        let (decoded, blocks) = (quantized(), quantized());
        GgufPart {
            header,
            decoded,
            blocks,
        }
    }
}

impl Shard {
    /// Parses a mapped GGUF file.
    pub(super) fn open_gguf(path: &Path, map: Mmap, size: u64) -> Result<Shard> {
        let header = gguf::parse(&map, size).map_err(|source| StoreError::Gguf {
            path: path.to_path_buf(),
            source,
        })?;
        let view = header.tensor_view();
        Ok(Shard::mapped_file(
            path,
            view,
            size,
            map,
            Some(Box::new(GgufPart::new(header))),
        ))
    }

    /// A remote GGUF file whose header bytes were read (through the start of its data).
    pub(super) fn remote_gguf(file: RemoteFile, header_bytes: Vec<u8>) -> Result<Shard> {
        let size = file.version.size;
        let header = gguf::parse(&header_bytes, size).map_err(|source| StoreError::Gguf {
            path: file.url.clone().into(),
            source,
        })?;
        let file_name = file.url.rsplit('/').next().unwrap_or_default().to_string();
        // Plain tensors are held as read; quantized ones as decoded (in the GGUF part).
        let resident = header
            .tensors
            .iter()
            .filter(|t| !t.ggml_type.is_quantized())
            .map(|t| (t.name.clone(), OnceLock::new()))
            .collect();
        Ok(Shard {
            path: file.url.clone().into(),
            file_name,
            header: header.tensor_view(),
            size,
            backing: Backing::Remote {
                file: Arc::new(file),
                header: header_bytes,
                resident,
            },
            gguf: Some(Box::new(GgufPart::new(header))),
        })
    }

    /// The GGUF header, when this shard is a GGUF file.
    pub fn gguf(&self) -> Option<&GgufHeader> {
        self.gguf.as_deref().map(|g| &g.header)
    }

    /// The block type of a quantized tensor of this shard (`None`: its bytes are its values).
    pub fn quantized(&self, info: &TensorInfo) -> Option<GgmlType> {
        let g = self.gguf.as_deref()?;
        let t = g.header.tensor(&info.name)?;
        t.ggml_type.is_quantized().then_some(t.ggml_type)
    }

    /// The quantized tensor a blocks view (`NAME#scales`) is derived from, and its type.
    pub fn scales_of(&self, info: &TensorInfo) -> Option<(&TensorInfo, GgmlType)> {
        self.gguf.as_deref()?;
        let source = info.name.strip_suffix(gguf::SCALES_SUFFIX)?;
        let src = self.header.get(source)?;
        Some((src, self.quantized(src)?))
    }

    /// How a tensor's values are made when they are not its bytes.
    pub(super) fn derived(&self, info: &TensorInfo) -> Option<Derived<'_>> {
        if let Some(ty) = self.quantized(info) {
            return Some(Derived::Decoded(ty));
        }
        self.scales_of(info)
            .map(|(src, ty)| Derived::Scales(src, ty))
    }

    /// A derived tensor's values (little-endian F32) for `ranges` of them (none: all).
    pub(super) fn derived_region(
        &self,
        info: &TensorInfo,
        how: Derived<'_>,
        ranges: &[Range<u64>],
    ) -> Result<Region<'_>> {
        match how {
            Derived::Decoded(ty) => self.decoded_region(info, ty, ranges),
            Derived::Scales(src, ty) => {
                let out_row = info.shape.last().copied().unwrap_or(1) * 4;
                self.rows_region(src, ty, out_row, ranges, |raw| {
                    let mut out = Vec::new();
                    quant::block_scales(ty, raw, &mut out);
                    Ok(out)
                })
            }
        }
    }

    /// The block that element `flat` (row-major) of a quantized tensor is decoded from:
    /// `(type, block number, byte offset in the tensor's data, its bytes, the element's place
    /// in it)`; `None` for a tensor that is not quantized.
    /// `runs`: the tensor's edits (stored bytes), laid over the block.
    pub fn block_of(
        &self,
        info: &TensorInfo,
        flat: u64,
        runs: Option<&RangeMap>,
    ) -> Result<Option<BlockOf>> {
        let Some(ty) = self.quantized(info) else {
            return Ok(None);
        };
        let row_len = info.shape.last().copied().unwrap_or(1).max(1);
        let per_block = ty.block_elements() as u64;
        let (row, col) = (flat / row_len, flat % row_len);
        let index = row * (row_len / per_block) + col / per_block;
        let offset = index * ty.block_bytes() as u64;
        let start = self.header.data_start() + info.data_offsets.0 + offset;
        let mut bytes = self
            .read_raw(start..start + ty.block_bytes() as u64, None)?
            .to_vec();
        if let Some(runs) = runs {
            runs.lay_onto(offset, &mut bytes);
        }
        Ok(Some(BlockOf {
            ty,
            index,
            offset,
            bytes,
            element: (col % per_block) as usize,
        }))
    }

    /// A quantized tensor's values, decoded, as little-endian F32 bytes: the rows that hold
    /// `ranges` (offsets into the decoded F32 bytes; none: every row).
    pub(super) fn decoded_region(
        &self,
        info: &TensorInfo,
        ty: GgmlType,
        ranges: &[Range<u64>],
    ) -> Result<Region<'_>> {
        let out_row = info.shape.last().copied().unwrap_or(1) * 4;
        self.rows_region(info, ty, out_row, ranges, |raw| {
            quant::to_f32_bytes(ty, raw).map_err(|source| StoreError::Decode {
                tensor: info.name.clone(),
                source,
            })
        })
    }

    /// Values made from whole rows of blocks of the quantized tensor `src`: `out_row` bytes of
    /// them per row, `make` turning a run of rows' blocks into them; the rows that hold
    /// `ranges` (offsets into those values; none: every row).
    fn rows_region(
        &self,
        src: &TensorInfo,
        ty: GgmlType,
        out_row: u64,
        ranges: &[Range<u64>],
        make: impl Fn(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Region<'_>> {
        let row_len = src.shape.last().copied().unwrap_or(1);
        let rows = src.elements().checked_div(row_len).unwrap_or(0);
        let wanted: Vec<Range<u64>> = if ranges.is_empty() {
            vec![0..rows]
        } else {
            ranges
                .iter()
                .map(|r| r.start / out_row.max(1)..r.end.div_ceil(out_row.max(1)).min(rows))
                .collect()
        };
        let mut parts = Vec::new();
        for rr in crate::remote::cache::merge(wanted) {
            parts.push((rr.start * out_row, make(&self.raw_rows(src, ty, rr)?)?));
        }
        Ok(Region::Fetched(parts))
    }

    /// The blocks of rows `rows` of a quantized tensor, as stored.
    fn raw_rows(&self, info: &TensorInfo, ty: GgmlType, rows: Range<u64>) -> Result<Bytes<'_>> {
        let row_len = info.shape.last().copied().unwrap_or(1);
        let row_bytes = row_len / ty.block_elements() as u64 * ty.block_bytes() as u64;
        let start = self.header.data_start() + info.data_offsets.0;
        self.read_raw(
            start + rows.start * row_bytes..start + rows.end * row_bytes,
            None,
        )
    }

    /// Rows `rows` of a quantized tensor, decoded to little-endian F32 bytes.
    fn decode_rows(&self, info: &TensorInfo, ty: GgmlType, rows: Range<u64>) -> Result<Vec<u8>> {
        let raw = self.raw_rows(info, ty, rows)?;
        quant::to_f32_bytes(ty, &raw).map_err(|source| StoreError::Decode {
            tensor: info.name.clone(),
            source,
        })
    }

    /// A quantized tensor's decoded values, whole.
    pub(super) fn decoded(&self, info: &TensorInfo, ty: GgmlType) -> Result<Bytes<'_>> {
        let rows = info
            .elements()
            .checked_div(info.shape.last().copied().unwrap_or(1))
            .unwrap_or(0);
        Ok(Bytes::Fetched(self.decode_rows(info, ty, 0..rows)?))
    }

    /// A remote quantized tensor's blocks, read whole on first use and held.
    pub(super) fn remote_blocks(&self, info: &TensorInfo) -> Option<&[u8]> {
        let Backing::Remote { file, .. } = &self.backing else {
            return None;
        };
        let once = self.gguf.as_deref()?.blocks.get(&info.name)?;
        if once.get().is_none() {
            let bytes = file.read(&[self.absolute(info)], None).ok()?.pop()?;
            let _ = once.set(bytes);
        }
        once.get().map(Vec::as_slice)
    }

    /// A quantized tensor's decoded values, held for as long as the shard lives (the
    /// forward pass's kernels read them in place); `None` when they cannot be decoded.
    pub(super) fn decoded_resident(&self, info: &TensorInfo, ty: GgmlType) -> Option<&[u8]> {
        let once = self.gguf.as_deref()?.decoded.get(&info.name)?;
        if once.get().is_none() {
            let Ok(Bytes::Fetched(bytes)) = self.decoded(info, ty) else {
                return None;
            };
            let _ = once.set(bytes);
        }
        once.get().map(Vec::as_slice)
    }
}
