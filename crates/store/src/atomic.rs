//! Crash-safe file writes: a temp file in the target folder, fsync, rename.

use crate::error::{Result, StoreError};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |f| f.write_all(bytes).map_err(StoreError::io(path)))
}

/// Creates `path` atomically from what `fill` writes into a temp file beside it. `fill`'s
/// error comes back as it was (a remote base that changed during a bake stays a conflict);
/// nothing is left at `path` when it fails.
pub fn write_with<E: From<StoreError>>(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
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
        .map_err(StoreError::io(dir))?;
    fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(StoreError::io(path))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_keeps_its_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baked.safetensors");
        let err = write_with(&path, |f| {
            f.write_all(b"half a file").map_err(StoreError::io(&path))?;
            Err(StoreError::RemoteChanged {
                url: "https://example.org/model.safetensors".into(),
                reason: "its ETag changed".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::RemoteChanged { .. }), "{err:?}");
        assert_eq!(
            err.kind(),
            tensor_surgeon_core::error_kind::ErrorKind::Conflict
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
