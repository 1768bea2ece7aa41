//! Crash-safe file writes: a temp file in the target folder, fsync, rename.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Tensor Surgeon's cache folder: `$XDG_CACHE_HOME/tensor-surgeon`, else
/// `~/.cache/tensor-surgeon` (the demo model, remote models' bytes and their side files).
pub fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("tensor-surgeon")
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |f| f.write_all(bytes))
}

/// Creates `path` atomically from what `fill` writes into a temp file beside it.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(Error::io(dir))?;
    fill(tmp.as_file_mut()).map_err(Error::io(path))?;
    tmp.as_file().sync_all().map_err(Error::io(path))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes the demo model and its `tokenizer.json` into `dir` (files already equal are left
/// alone); returns the model's path.
pub fn write_demo(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let model = dir.join("model.safetensors");
    for (path, bytes) in [
        (model.clone(), tensor_surgeon_core::demo::file_bytes()),
        (
            dir.join("tokenizer.json"),
            tensor_surgeon_core::demo::vocab::tokenizer_json().into_bytes(),
        ),
    ] {
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            write_atomic(&path, &bytes)?;
        }
    }
    Ok(model)
}
