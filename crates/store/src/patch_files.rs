//! Reading and writing patch files, in either form: JSON (human-readable, the default for
//! small patches) or compact (binary, zstd; chosen automatically for large ones). Readers tell
//! them apart by the first bytes.

use crate::atomic;
use crate::compact::{self, CompactPatch, ExpandError};
use crate::error::{Result, StoreError};
use crate::model::Model;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::dtype;
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_core::patch::{Conflict, Fingerprint, Patch, PatchError};

/// Above about this many bytes of JSON, `auto` writes the compact form.
pub const AUTO_COMPACT_BYTES: u64 = 1 << 20;

/// Which form to write a patch in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON with hex bytes.
    Json,
    /// Binary: XOR deltas, zstd, BLAKE3 digests of the original and patched bytes.
    Compact,
    /// JSON up to about 1 MB, compact above.
    #[default]
    Auto,
}

/// A patch file as read, before it meets a model.
pub enum Loaded {
    Json(Patch),
    Compact(CompactPatch),
}

impl Loaded {
    /// The base fingerprints the patch was made for.
    pub fn base(&self) -> &[Fingerprint] {
        match self {
            Loaded::Json(p) => &p.base,
            Loaded::Compact(c) => &c.base,
        }
    }

    /// Number of entries (byte runs).
    pub fn entry_count(&self) -> usize {
        match self {
            Loaded::Json(p) => p.entries.len() + p.low_rank.len() + p.metadata.len(),
            Loaded::Compact(c) => c.entry_count(),
        }
    }
}

fn patch_error(path: &Path) -> impl Fn(PatchError) -> StoreError + '_ {
    move |source| StoreError::Patch {
        path: path.to_path_buf(),
        source,
    }
}

fn compact_error(path: &Path) -> impl Fn(compact::CompactError) -> StoreError + '_ {
    move |source| StoreError::Compact {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads and checks a patch file of either form.
pub fn load(path: &Path) -> Result<Loaded> {
    load_within(path, None)
}

/// Reads a patch file meant for `model`: a compact patch's runs are checked against the
/// model's tensor sizes before its deltas are decompressed.
pub fn load_within(path: &Path, model: Option<&Model>) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
    if compact::is_compact(&bytes) {
        let sizes = |name: &str| model?.get(name).ok().map(|(_, info)| info.byte_len());
        let within: Option<compact::TensorBytes> = model.map(|_| &sizes as _);
        return CompactPatch::from_bytes_within(&bytes, within)
            .map(Loaded::Compact)
            .map_err(compact_error(path));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        patch_error(path)(PatchError::Parse {
            reason: "neither JSON nor the compact form (bad magic bytes)".into(),
        })
    })?;
    Patch::from_json(text)
        .map(Loaded::Json)
        .map_err(patch_error(path))
}

/// The full patch of `loaded` against `model` (with `over`, an earlier patch's runs, laid over
/// it), or the places where it does not fit. JSON patches are checked byte by byte, compact
/// ones by the digests of each tensor's original bytes.
pub fn resolve(path: &Path, loaded: Loaded, model: &Model, over: Option<&Overlay>) -> Result<Fit> {
    match loaded {
        Loaded::Json(p) => materialize(p, model, over),
        Loaded::Compact(c) => expand(path, &c, model, over),
    }
}

/// A JSON patch checked against `model`, all in byte entries ([`Patch::materialized`]).
pub fn materialize(p: Patch, model: &Model, over: Option<&Overlay>) -> Result<Fit> {
    let based = model.based_on_patch(&p)?;
    match p.materialized(&based, over) {
        Ok(p) => Ok(Ok(whole_blocks(model, p)?)),
        Err(conflicts) => Ok(Err(conflicts)),
    }
}

/// A patch whose entries of quantized tensors cover whole blocks: an entry that names part
/// of a block (written by hand) takes the rest of the block from the base, so every reader
/// can decode the blocks it changes. Already whole entries are left as they are.
pub fn whole_blocks(model: &Model, mut p: Patch) -> Result<Patch> {
    let partial = |e: &tensor_surgeon_core::patch::PatchEntry| {
        let Ok((_, info)) = model.get(&e.tensor) else {
            return None;
        };
        let size = info.blocks?.block_bytes() as u64;
        (!e.offset.is_multiple_of(size) || !(e.patched.len() as u64).is_multiple_of(size))
            .then_some(size)
    };
    if !p.entries.iter().any(|e| partial(e).is_some()) {
        return Ok(p);
    }
    let mut out: Vec<tensor_surgeon_core::patch::PatchEntry> = Vec::new();
    for e in std::mem::take(&mut p.entries) {
        let Some(size) = partial(&e) else {
            out.push(e);
            continue;
        };
        let lo = e.offset - e.offset % size;
        let hi = (e.offset + e.patched.len() as u64).div_ceil(size) * size;
        // Entries are sorted and do not overlap: a block the previous widened entry ends in
        // takes this one's bytes too.
        let (start, mut original, mut patched) = match out.last_mut() {
            Some(last)
                if last.tensor == e.tensor && last.offset + last.patched.len() as u64 > lo =>
            {
                let last = out.pop().expect("just seen");
                (last.offset, last.original, last.patched)
            }
            _ => (lo, Vec::new(), Vec::new()),
        };
        let (shard, info) = model.get(&e.tensor)?;
        let have = start + original.len() as u64;
        if hi > have {
            let base = shard.stored_region(info, &[have..hi])?;
            let mut more = vec![0u8; (hi - have) as usize];
            tensor_surgeon_core::source::ByteSource::read(&base, have, &mut more);
            original.extend_from_slice(&more);
            patched.extend_from_slice(&more);
        }
        let at = (e.offset - start) as usize;
        original[at..at + e.original.len()].copy_from_slice(&e.original);
        patched[at..at + e.patched.len()].copy_from_slice(&e.patched);
        out.push(tensor_surgeon_core::patch::PatchEntry {
            tensor: e.tensor,
            offset: start,
            original,
            patched,
            origin: e.origin,
        });
    }
    p.entries = out;
    Ok(p)
}

/// A patch that fits its base, or the places where it does not.
pub type Fit = std::result::Result<Patch, Vec<Conflict>>;

/// [`CompactPatch::expand`] with a damaged patch as an error naming its file.
pub fn expand(path: &Path, c: &CompactPatch, model: &Model, over: Option<&Overlay>) -> Result<Fit> {
    let base = model.based(c.tensors.iter().flat_map(|t| {
        t.runs
            .iter()
            .map(|&(offset, len)| (t.name.as_str(), offset..offset.saturating_add(len)))
    }))?;
    match c.expand(&base, over) {
        Ok(p) => Ok(Ok(whole_blocks(model, p)?)),
        Err(ExpandError::Conflicts(conflicts)) => Ok(Err(conflicts)),
        Err(ExpandError::Damaged(e)) => Err(compact_error(path)(e)),
    }
}

/// Loads a patch and resolves it against `model`; conflicts are an error.
pub fn load_for(path: &Path, model: &Model) -> Result<Patch> {
    resolve(path, load_within(path, Some(model))?, model, None)?
        .map_err(|conflicts| StoreError::Conflicts { conflicts })
}

/// The element width of a tensor of `model` for the compact form's shuffle (1 for packed).
fn width_in(model: &Model, tensor: &str) -> Option<usize> {
    model
        .get(tensor)
        .ok()
        // Block bytes are not elements: no shuffle.
        .map(|(_, info)| match info.blocks {
            Some(_) => 1,
            None => shuffle_width(info.dtype),
        })
}

/// The compact form's shuffle width for a dtype: its element size, 1 for the packed dtypes.
pub fn shuffle_width(d: dtype::Dtype) -> usize {
    if dtype::is_packed(d) {
        1
    } else {
        dtype::element_bytes(d)
    }
}

/// Whether `format` means the compact form for a patch of about `json_len` bytes of JSON.
pub fn wants_compact(format: Format, json_len: u64) -> bool {
    match format {
        Format::Json => false,
        Format::Compact => true,
        Format::Auto => json_len > AUTO_COMPACT_BYTES,
    }
}

/// Saves a patch atomically in `format`; `model` (when known) gives the element widths the
/// compact form shuffles by. Returns the form written.
pub fn save(path: &Path, patch: &Patch, format: Format, model: Option<&Model>) -> Result<Format> {
    if !patch.low_rank.is_empty() || !patch.metadata.is_empty() {
        // Low-rank and metadata entries are small; the compact form holds byte runs (and the
        // factors kept beside quantized blocks).
        if format == Format::Compact {
            return Err(StoreError::CompactLowRank {
                path: path.to_path_buf(),
            });
        }
        atomic::write_atomic(path, patch.to_json().as_bytes())?;
        return Ok(Format::Json);
    }
    if !wants_compact(format, patch.json_len_estimate()) {
        atomic::write_atomic(path, patch.to_json().as_bytes())?;
        return Ok(Format::Json);
    }
    let c = CompactPatch::from_patch(patch, |t| model.and_then(|m| width_in(m, t)));
    save_compact(path, &c)?;
    Ok(Format::Compact)
}

/// Saves a compact patch atomically.
pub fn save_compact(path: &Path, patch: &CompactPatch) -> Result<()> {
    atomic::write_with(path, |f| patch.write_to(f).map_err(StoreError::io(path)))
}

/// The current time as RFC 3339 (seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A new, empty patch against `model`.
pub fn new_for(model: &Model, note: &str) -> Patch {
    Patch::new(model.fingerprints(), now(), note.to_string())
}

/// Files whose fingerprint differs between the patch and the model (the patch may still
/// apply: verification checks the bytes themselves).
pub fn fingerprint_mismatches(model: &Model, base: &[Fingerprint]) -> Vec<String> {
    let current = model.fingerprints();
    base.iter()
        .filter(|f| !current.iter().any(|c| c.same_base(f)))
        .map(
            |f| match (&f.version, current.iter().find(|c| c.file == f.file)) {
                (
                    Some(was),
                    Some(Fingerprint {
                        version: Some(now), ..
                    }),
                ) if was != now => {
                    format!(
                        "{} (made on version {was}; the server now has {now})",
                        f.file
                    )
                }
                _ => f.file.clone(),
            },
        )
        .collect()
}

/// The edits of a list of patch files (each checked against `model` as it loads), laid in
/// order into one overlay: the model as the patches make it, without a session.
pub fn overlay_of(model: &Model, patch_paths: &[PathBuf]) -> Result<Overlay> {
    let mut overlay = Overlay::default();
    for path in patch_paths {
        let patch = load_for(path, model)?;
        for e in &patch.entries {
            overlay.write(&e.tensor, e.offset, &e.patched);
        }
    }
    Ok(overlay)
}
