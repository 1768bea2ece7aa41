//! Statistics, histograms, profiles and the scan of a model on a snapshot of the session's
//! weights: computed on a copy of the tensor's overlay (never under the session's lock),
//! cached per (tensor, edit version), with progress for long work.

use super::{lock, Snapshot};
use crate::error::{Error, Result};
use crate::statistics;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tensor_surgeon_core::stats::{self, Bins, CodeTable, Histogram};
use tensor_surgeon_core::view::Profile;
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{ProfileRequest, ScanStatus, TaskProgress, TensorStats};

/// Pattern tables kept for quick re-binning (512 KiB each for 16-bit dtypes).
const TABLES_KEPT: usize = 8;

/// The analysis of one model: cheap to clone (the clones share the caches and the scan).
#[derive(Clone)]
pub struct Analysis {
    model: Arc<Model>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    cache: Mutex<Cache>,
    progress: Mutex<TaskProgress>,
    progress_done: AtomicU64,
    scan: Mutex<Scan>,
    scan_done: AtomicU64,
}

#[derive(Default)]
struct Cache {
    stats: HashMap<String, TensorStats>,
    tables: VecDeque<(String, u64, Arc<CodeTable>)>,
}

#[derive(Default)]
struct Scan {
    status: ScanStatus,
    /// The session version the last scan started at.
    version: Option<u64>,
}

impl Analysis {
    /// The analysis of `model`, with empty caches.
    pub fn new(model: Arc<Model>) -> Analysis {
        Analysis {
            model,
            state: Arc::default(),
        }
    }

    /// Statistics of a tensor (cached per edit version), reporting bytes read.
    fn compute_stats(
        &self,
        snap: &Snapshot,
        tensor: &str,
        progress: statistics::BytesRead<'_>,
    ) -> Result<TensorStats> {
        self.model.get(tensor)?;
        let (overlay, version) = (snap.overlay().only(tensor), snap.tensor_version(tensor));
        if let Some(s) = lock(&self.state.cache).stats.get(tensor) {
            if s.version == version {
                return Ok(s.clone());
            }
        }
        let c = statistics::tensor_stats(
            &self.model,
            &overlay,
            tensor,
            stats::DEFAULT_BINS,
            version,
            progress,
        )?;
        let mut cache = lock(&self.state.cache);
        cache.stats.insert(tensor.to_string(), c.stats.clone());
        if let Some(t) = c.table {
            cache.tables.retain(|(n, _, _)| n != tensor);
            cache
                .tables
                .push_back((tensor.to_string(), version, Arc::new(t)));
            if cache.tables.len() > TABLES_KEPT {
                cache.tables.pop_front();
            }
        }
        Ok(c.stats)
    }

    /// Statistics and the default histogram of a tensor, overlay applied.
    pub fn stats(&self, snap: &Snapshot, tensor: &str) -> Result<TensorStats> {
        let (_, info) = self.model.get(tensor)?;
        {
            *lock(&self.state.progress) = TaskProgress {
                running: true,
                what: tensor.to_string(),
                done: 0,
                total: info.byte_len() * statistics::passes(info.dtype),
            };
            self.state.progress_done.store(0, Ordering::Relaxed);
        }
        let done = &self.state.progress_done;
        let result = self.compute_stats(snap, tensor, &|n| {
            done.fetch_add(n, Ordering::Relaxed);
        });
        lock(&self.state.progress).running = false;
        result
    }

    /// Progress of the last statistics computation.
    pub fn stats_progress(&self) -> TaskProgress {
        let mut p = lock(&self.state.progress).clone();
        p.done = self
            .state
            .progress_done
            .load(Ordering::Relaxed)
            .min(p.total);
        p
    }

    /// A histogram with `bins` bins over `[lo, hi]` (default: the finite range).
    pub fn histogram(
        &self,
        snap: &Snapshot,
        tensor: &str,
        bins: usize,
        lo: Option<f64>,
        hi: Option<f64>,
    ) -> Result<Histogram> {
        if !(1..=stats::MAX_BINS).contains(&bins) {
            return Err(Error::Usage(format!(
                "bins must be 1 to {}; got {bins}",
                stats::MAX_BINS
            )));
        }
        let s = self.stats(snap, tensor)?;
        let (Some(lo), Some(hi)) = (lo.or(s.summary.min), hi.or(s.summary.max)) else {
            return Err(Error::Usage(format!(
                "{tensor} has no finite values to bin"
            )));
        };
        let range = Bins::new(lo, hi, bins).ok_or_else(|| {
            Error::Usage(format!(
                "histogram range must be finite with lo <= hi; got {lo} to {hi}"
            ))
        })?;
        let table = lock(&self.state.cache)
            .tables
            .iter()
            .find(|(n, v, _)| n == tensor && *v == s.version)
            .map(|(_, _, t)| Arc::clone(t));
        let overlay = snap.overlay().only(tensor);
        statistics::histogram(&self.model, &overlay, tensor, table.as_deref(), &range)
    }

    /// Row and column profiles of a view, overlay applied.
    pub fn profile(&self, snap: &Snapshot, req: &ProfileRequest) -> Result<Profile> {
        let (shard, info) = self.model.get(&req.tensor)?;
        let spec = req.spec.clone().make_valid(&info.shape);
        let overlay = snap.overlay().only(&info.name);
        let base = shard.data(info)?;
        let source = overlay.view(info, &*base);
        Ok(statistics::profile(info.dtype, &info.shape, &spec, &source))
    }

    /// Starts scanning the snapshot in the background unless a scan runs or finished for
    /// the snapshot's version.
    pub fn start_scan(&self, snap: &Snapshot) -> Result<()> {
        let version = snap.version();
        {
            let mut scan = lock(&self.state.scan);
            if scan.status.running || (scan.status.complete && scan.version == Some(version)) {
                return Ok(());
            }
            scan.status = ScanStatus {
                running: true,
                tensors_total: self.model.len(),
                bytes_total: statistics::scan_total(&self.model),
                ..ScanStatus::default()
            };
            scan.version = Some(version);
        }
        self.state.scan_done.store(0, Ordering::Relaxed);
        let (this, snap) = (self.clone(), snap.clone());
        let spawned = std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || {
                // A panic must not leave the scan "running" forever: it ends as an error.
                let run =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.run_scan(&snap)));
                if let Err(panic) = run {
                    let mut scan = lock(&this.state.scan);
                    scan.status.error = Some(crate::panic_message(panic.as_ref()));
                    scan.status.running = false;
                    scan.version = None;
                }
            });
        if let Err(e) = spawned {
            let mut scan = lock(&self.state.scan);
            scan.status.running = false;
            scan.version = None;
            return Err(Error::Thread {
                what: "scan",
                source: e,
            });
        }
        Ok(())
    }

    fn run_scan(&self, snap: &Snapshot) {
        let done = &self.state.scan_done;
        let names: Vec<(String, u64)> = self
            .model
            .tensors()
            .map(|(_, t)| (t.name.clone(), t.byte_len() * statistics::passes(t.dtype)))
            .collect();
        for (name, work) in names {
            let before = done.load(Ordering::Relaxed);
            let result = self.compute_stats(snap, &name, &|n| {
                done.fetch_add(n, Ordering::Relaxed);
            });
            done.store(before + work, Ordering::Relaxed);
            let mut scan = lock(&self.state.scan);
            match result {
                Ok(s) => {
                    scan.status.rows.push(statistics::scan_row(&s));
                    scan.status.tensors_done += 1;
                }
                Err(e) => {
                    scan.status.error = Some(e.to_string());
                    scan.status.running = false;
                    return;
                }
            }
        }
        let mut scan = lock(&self.state.scan);
        scan.status.groups = statistics::finish_scan(&mut scan.status.rows);
        scan.status.running = false;
        scan.status.complete = true;
    }

    /// A complete scan of the snapshot, computed here and now (cached statistics make
    /// repeats cheap).
    pub fn scan_now(&self, snap: &Snapshot) -> Result<ScanStatus> {
        let mut rows = Vec::with_capacity(self.model.len());
        let names: Vec<String> = self.model.tensors().map(|(_, t)| t.name.clone()).collect();
        for name in names {
            rows.push(statistics::scan_row(&self.compute_stats(
                snap,
                &name,
                &|_| {},
            )?));
        }
        let groups = statistics::finish_scan(&mut rows);
        Ok(ScanStatus {
            complete: true,
            tensors_done: rows.len(),
            tensors_total: rows.len(),
            rows,
            groups,
            ..ScanStatus::default()
        })
    }

    /// The scan's progress, with rows from index `since`.
    pub fn scan_status(&self, since: usize) -> ScanStatus {
        let scan = lock(&self.state.scan);
        let s = &scan.status;
        ScanStatus {
            rows: s.rows.get(since..).unwrap_or_default().to_vec(),
            bytes_done: self
                .state
                .scan_done
                .load(Ordering::Relaxed)
                .min(s.bytes_total),
            groups: s.groups.clone(),
            error: s.error.clone(),
            ..*s
        }
    }
}

#[cfg(test)]
#[path = "analysis_tests.rs"]
mod tests;
