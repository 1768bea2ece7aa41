//! Where a model's journal is (keyed by its fingerprints), and whether a remote model changed
//! on its server since the last session.

use std::path::{Path, PathBuf};
use tensor_surgeon_store::Model;

/// The journal of a model: keyed by the model's fingerprints, so another model (or a changed
/// file) starts a fresh session.
pub(super) fn journal_path(patches_dir: &Path, model: &Model) -> PathBuf {
    journal_path_for(patches_dir, &model.fingerprints())
}

fn journal_path_for(
    patches_dir: &Path,
    fingerprints: &[tensor_surgeon_core::patch::Fingerprint],
) -> PathBuf {
    use sha2::Digest;
    let key = serde_json::to_string(fingerprints).unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    patches_dir.join(format!(".journal-{}.jsonl", &digest[..16]))
}

/// For a remote model: whether its files changed on the server since the last session in
/// this patches folder (whose journal, keyed by the old version, is then not replayed), said
/// as a warning. The versions seen are kept in `.remote-base.json` beside the journals.
pub(super) fn remote_base_changed(patches_dir: &Path, model: &Model) -> Option<String> {
    let now = model.fingerprints();
    // Only files read from a server carry the version they had there.
    if now.iter().all(|f| f.version.is_none()) {
        return None;
    }
    let record = patches_dir.join(".remote-base.json");
    let before: Option<Vec<tensor_surgeon_core::patch::Fingerprint>> = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if std::fs::create_dir_all(patches_dir).is_ok() {
        let _ = tensor_surgeon_store::atomic::write_atomic(
            &record,
            serde_json::to_string_pretty(&now)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    let before = before?;
    let changed: Vec<String> = before
        .iter()
        .filter(|b| !now.iter().any(|n| n.same_base(b)))
        .map(|b| {
            let was = b.version.as_deref().unwrap_or("?");
            let is = now
                .iter()
                .find(|n| n.file == b.file)
                .and_then(|n| n.version.as_deref())
                .unwrap_or("gone");
            format!("{} ({was}, now {is})", b.file)
        })
        .collect();
    if changed.is_empty() {
        return None;
    }
    let old = journal_path_for(patches_dir, &before);
    Some(format!(
        "{} changed on the server since the last session: {}. That session's edits were not \
         replayed onto the new version; its journal stays in {}",
        model.location,
        changed.join(", "),
        old.display()
    ))
}
