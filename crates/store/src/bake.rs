//! Baking: base model + patch -> a new model file (or sharded folder). Streams the base into a
//! temp file in the target folder, writes the patched bytes at their offsets, fsyncs and
//! renames. A patch with metadata entries writes the GGUF's header again and its data after
//! it. The base files are only read.

use crate::atomic;
use crate::error::{Result, StoreError};
use crate::model::Model;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tensor_surgeon_core::patch::Patch;

/// The part of a remote base read at once while baking.
const REMOTE_CHUNK: u64 = 64 << 20;

/// Progress callback: bytes written so far, total bytes.
pub type BakeProgress<'a> = &'a mut dyn FnMut(u64, u64);

/// Where a bake goes, resolved from `--out`.
fn targets(model: &Model, out: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    if model.is_sharded() {
        if out.is_file() {
            return Err(StoreError::BakeTarget {
                path: out.to_path_buf(),
                reason: "a file; a sharded model bakes into a folder",
            });
        }
        std::fs::create_dir_all(out).map_err(StoreError::io(out))?;
        let files = model
            .shards
            .iter()
            .map(|s| out.join(&s.file_name))
            .collect();
        Ok((out.to_path_buf(), files))
    } else {
        let file = if out.is_dir() {
            out.join(&model.shards[0].file_name)
        } else {
            out.to_path_buf()
        };
        Ok((
            file.parent().map(Path::to_path_buf).unwrap_or_default(),
            vec![file],
        ))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Verifies `patch` against `model` and writes the patched model to `out` (a file, or a folder
/// for sharded models and when `out` is an existing folder). Returns the files written.
/// Nothing is written if any entry conflicts.
pub fn bake(
    model: &Model,
    patch: &Patch,
    out: &Path,
    progress: BakeProgress,
) -> Result<Vec<PathBuf>> {
    model.check_unchanged()?;
    // Low-rank entries are baked as the byte entries they make (a byte patch is not copied).
    let expanded;
    let patch = if patch.low_rank.is_empty() {
        let conflicts = patch.verify(&model.based_on_patch(patch)?);
        if !conflicts.is_empty() {
            return Err(StoreError::Conflicts { conflicts });
        }
        patch
    } else {
        expanded = patch
            .clone()
            .materialized(&model.based_on_patch(patch)?, None)
            .map_err(|conflicts| StoreError::Conflicts { conflicts })?;
        &expanded
    };
    let (dir, files) = targets(model, out)?;
    for (shard, target) in model.shards.iter().zip(&files) {
        if same_file(&shard.path, target) {
            return Err(StoreError::BakeTarget {
                path: target.clone(),
                reason: "the base model; bake to another file",
            });
        }
    }
    // Metadata entries: the GGUF's header is written again, the data copied after it.
    let head = if patch.metadata.is_empty() {
        None
    } else {
        let based = model.based([])?;
        let conflicts: Vec<_> = patch
            .metadata
            .iter()
            .filter_map(|e| e.verify(&based))
            .collect();
        let header = match model.gguf() {
            Some(header) if conflicts.is_empty() => header,
            _ => return Err(StoreError::Conflicts { conflicts }),
        };
        let changes = patch
            .metadata
            .iter()
            .map(|e| Ok((e.key.clone(), e.new_value()?)))
            .collect::<std::result::Result<Vec<_>, tensor_surgeon_core::gguf::write::MetadataError>>()?;
        Some((
            tensor_surgeon_core::gguf::write::rewrite(
                header,
                model.shards[0].header_bytes(),
                &changes,
            )?,
            header.data_start,
        ))
    };
    let total = model.total_bytes();
    let mut done = 0u64;
    for (si, (shard, target)) in model.shards.iter().zip(&files).enumerate() {
        // Where the copy of the base starts, and where its data lands in the new file.
        let (from, data_start) = match &head {
            Some((bytes, old_start)) if si == 0 => (*old_start, bytes.len() as u64),
            _ => (0, shard.header.data_start()),
        };
        atomic::write_with(target, |f| -> Result<()> {
            let io = || StoreError::io(target);
            if let (Some((bytes, _)), 0) = (&head, si) {
                f.write_all(bytes).map_err(io())?;
            }
            // Stream the base in chunks (flat memory for any size); File-to-File copies let
            // the kernel move the bytes (copy_file_range) without passing through user space.
            // A remote base is read by range (through the cache), chunk by chunk.
            if shard.remote_file().is_some() {
                let mut at = from;
                while at < shard.size {
                    let end = (at + REMOTE_CHUNK).min(shard.size);
                    let part = shard.read_raw(at..end, None)?;
                    f.write_all(&part).map_err(io())?;
                    done += end - at;
                    progress(done, total);
                    at = end;
                }
            } else {
                let mut src = File::open(&shard.path).map_err(StoreError::io(&shard.path))?;
                src.seek(SeekFrom::Start(from))
                    .map_err(StoreError::io(&shard.path))?;
                loop {
                    let n = std::io::copy(&mut (&src).take(64 << 20), f).map_err(io())?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                    progress(done, total);
                }
            }
            for entry in &patch.entries {
                let Ok((s, info)) = model.get(&entry.tensor) else {
                    continue;
                };
                if !std::ptr::eq(s, &model.shards[si]) {
                    continue;
                }
                let at = data_start + info.data_offsets.0 + entry.offset;
                f.write_all_at(&entry.patched, at).map_err(io())?;
            }
            // A remote base replaced while it was copied: the file is not kept, and the
            // error stays the conflict it is.
            model.check_unchanged()
        })?;
    }
    if let (true, Some(index)) = (model.is_sharded(), &model.index_file) {
        let target = dir.join(index);
        if let Some(url) = model.shards[0].remote_file().map(|f| f.url.clone()) {
            let url = crate::remote::sibling(&url, index);
            let text =
                crate::remote::fetch_small(&url)?.ok_or(StoreError::RemoteNotFound { url })?;
            atomic::write_atomic(&target, &text)?;
        } else {
            let src = model.shards[0]
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join(index);
            let text = std::fs::read(&src).map_err(StoreError::io(&src))?;
            if !same_file(&src, &target) {
                atomic::write_atomic(&target, &text)?;
            }
        }
    }
    let mut written = files;
    if let (true, Some(index)) = (model.is_sharded(), &model.index_file) {
        written.push(dir.join(index));
    }
    Ok(written)
}
