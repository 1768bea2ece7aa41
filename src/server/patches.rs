//! Reading and writing patch files.

use super::error::{Error, Result};
use super::files;
use super::store::Model;
use crate::patch::Patch;
use std::path::Path;

/// Loads and checks a patch file.
pub fn load(path: &Path) -> Result<Patch> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    Patch::from_json(&text).map_err(|source| Error::Patch {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves a patch atomically.
pub fn save(path: &Path, patch: &Patch) -> Result<()> {
    files::write_atomic(path, patch.to_json().as_bytes())
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
pub fn fingerprint_mismatches(model: &Model, patch: &Patch) -> Vec<String> {
    let current = model.fingerprints();
    patch
        .base
        .iter()
        .filter(|f| !current.contains(f))
        .map(|f| f.file.clone())
        .collect()
}
