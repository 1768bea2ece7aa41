//! The embedded demo model written to disk, for a first look and for tests.

use crate::atomic::write_atomic;
use crate::error::{Result, StoreError};
use std::path::{Path, PathBuf};

/// Writes the demo model and its `tokenizer.json` into `dir` (files already equal are left
/// alone); returns the model's path.
pub fn write_demo(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
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
