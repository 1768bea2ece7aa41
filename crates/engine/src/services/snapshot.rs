//! What a service reads of the session: its overlay and versions at one moment.

use std::collections::HashMap;
use tensor_surgeon_core::overlay::Overlay;

/// The session's edits at one moment: the overlay (a copy that shares each tensor's runs
/// with the session until either side writes them), the session version, and the version at
/// which each edited tensor last changed. Caches key on these versions, so an undone edit is
/// never served from a cache.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    overlay: Overlay,
    version: u64,
    changed_at: HashMap<String, u64>,
}

impl Snapshot {
    /// A snapshot of `overlay` at session `version`, each tensor having last changed at the
    /// version `changed_at` gives (a tensor edited and undone keeps its entry: its caches
    /// still go stale).
    pub fn new(overlay: Overlay, version: u64, changed_at: HashMap<String, u64>) -> Snapshot {
        Snapshot {
            overlay,
            version,
            changed_at,
        }
    }

    /// An overlay seen as one step at `version`: every tensor it touches changed then.
    pub fn of(overlay: Overlay, version: u64) -> Snapshot {
        let changed_at = overlay
            .tensors()
            .map(|(name, _)| (name.to_string(), version))
            .collect();
        Snapshot::new(overlay, version, changed_at)
    }

    /// The edits, as bytes laid over the base.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// The session version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version at which `tensor` last changed (0: never edited).
    pub fn tensor_version(&self, tensor: &str) -> u64 {
        self.changed_at.get(tensor).copied().unwrap_or(0)
    }

    /// Every tensor the session has changed (undone ones included), with its version.
    pub fn changed(&self) -> impl Iterator<Item = (&str, u64)> {
        self.changed_at.iter().map(|(n, &v)| (n.as_str(), v))
    }

    /// How many tensors the session has changed.
    pub fn changed_count(&self) -> usize {
        self.changed_at.len()
    }
}
