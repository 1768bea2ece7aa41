//! Long remote reads as they go: reported to whoever asked (a progress bar) and listed for a
//! page that waits on one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Who hears of long reads: (URL, bytes fetched so far, bytes to fetch).
pub type Reporter = dyn Fn(&str, u64, u64) + Send + Sync;

static REPORTER: OnceLock<Box<Reporter>> = OnceLock::new();

/// Reads that fetch at least this much are reported.
const REPORTED: u64 = 16 << 20;

/// Sets who hears of long reads (a progress bar, a log); set once at start-up.
pub fn report_progress_with(reporter: Box<Reporter>) {
    let _ = REPORTER.set(reporter);
}

/// Long reads under way: (read id, URL, bytes fetched, bytes to fetch).
static UNDER_WAY: Mutex<Vec<(u64, String, u64, u64)>> = Mutex::new(Vec::new());

/// The long reads under way now (URL, bytes fetched, bytes to fetch), for a page to show
/// while it waits.
pub fn reads_under_way() -> Vec<(String, u64, u64)> {
    UNDER_WAY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, url, done, total)| (url.clone(), *done, *total))
        .collect()
}

/// A long read: its entry in [`reads_under_way`] (removed when dropped, however the read
/// ends) and its reports to the [`Reporter`]. Short reads are neither.
pub(super) struct UnderWay {
    id: Option<u64>,
    url: String,
    total: u64,
}

impl UnderWay {
    pub(super) fn start(url: &str, total: u64) -> UnderWay {
        let mut read = UnderWay {
            id: None,
            url: url.to_string(),
            total,
        };
        if total >= REPORTED {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            let mut all = UNDER_WAY.lock().unwrap_or_else(|p| p.into_inner());
            all.push((id, read.url.clone(), 0, total));
            read.id = Some(id);
        }
        read
    }

    /// `done` bytes of the read are in.
    pub(super) fn advance(&self, done: u64) {
        let Some(id) = self.id else { return };
        if let Some(r) = REPORTER.get() {
            r(&self.url, done, self.total);
        }
        let mut all = UNDER_WAY.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = all.iter_mut().find(|e| e.0 == id) {
            e.2 = done;
        }
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut all = UNDER_WAY.lock().unwrap_or_else(|p| p.into_inner());
            all.retain(|e| e.0 != id);
        }
    }
}
