//! t-SNE and UMAP layouts of a model on a snapshot of the session's weights: one runs at a
//! time, in its own thread, and publishes frames (the points so far, the step, the loss) that
//! pages poll; a stop keeps the layout as it is (not kept). Finished layouts are kept per
//! (request, edit version of the tensor), so asking again, or another page asking, costs
//! nothing until the tensor is edited.

use super::{lock, token_label, Snapshot};
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tensor_surgeon_core::overlay::Overlay;
use tensor_surgeon_infer::tokens::Vocab;
use tensor_surgeon_layout::{self as project, Input, Live, Phase, Report};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{FrameRequest, LayoutFrame, Method, ProjectRequest, Projection};

/// Finished layouts kept.
const KEPT: usize = 6;
/// Jobs a page can still ask about after they end.
const JOBS_KEPT: usize = 8;

/// What identifies a layout: the request and the edit version of its tensor.
type Key = (String, u64);

fn key(req: &ProjectRequest, version: u64) -> Key {
    (serde_json::to_string(req).unwrap_or_default(), version)
}

/// One layout, running or done.
struct Job {
    id: u64,
    key: Key,
    stop: AtomicBool,
    state: Mutex<JobState>,
    changed: Condvar,
}

#[derive(Default)]
struct JobState {
    frame: u64,
    phase: &'static str,
    running: bool,
    /// Why the layout failed (shared by every page that asks).
    error: Option<Arc<Error>>,
    /// The frame that brought the points' indices, labels and norms.
    meta_frame: u64,
    /// The layout so far; points are replaced frame by frame.
    layout: Projection,
}

/// The layouts of one model: cheap to clone (the clones share the jobs and the finished
/// layouts).
#[derive(Clone)]
pub struct Layouts {
    model: Arc<Model>,
    vocab: Option<Arc<Vocab>>,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    jobs: VecDeque<Arc<Job>>,
    done: VecDeque<(Key, Arc<Projection>)>,
}

impl Job {
    fn frame(&self, since: u64) -> LayoutFrame {
        let s = lock(&self.state);
        let mut layout = Projection {
            n: s.layout.n,
            dims: s.layout.dims,
            method: s.layout.method,
            iterations: s.layout.iterations,
            total_iterations: s.layout.total_iterations,
            loss: s.layout.loss,
            stopped: s.layout.stopped,
            ..Projection::default()
        };
        if s.frame > since {
            layout.points = s.layout.points.clone();
        }
        if since < s.meta_frame {
            layout.index = s.layout.index.clone();
            layout.labels = s.layout.labels.clone();
            layout.norms = s.layout.norms.clone();
        }
        LayoutFrame {
            job: self.id,
            frame: s.frame,
            phase: s.phase.to_string(),
            running: s.running,
            error: s.error.as_ref().map(|e| e.to_string()),
            layout,
        }
    }
}

impl Layouts {
    /// The layouts of `model`, rows labelled by `vocab`'s tokens where a dim indexes it.
    pub fn new(model: Arc<Model>, vocab: Option<Arc<Vocab>>) -> Layouts {
        Layouts {
            model,
            vocab,
            inner: Arc::default(),
        }
    }

    /// Starts laying out a view's rows (or columns) by t-SNE or UMAP on the snapshot's
    /// weights, or joins the same layout already running, or answers at once from a finished
    /// one. The first frame.
    pub fn start(&self, snap: &Snapshot, req: &ProjectRequest) -> Result<LayoutFrame> {
        Ok(self.job(snap, req)?.frame(0))
    }

    fn job(&self, snap: &Snapshot, req: &ProjectRequest) -> Result<Arc<Job>> {
        if req.method == Method::Pca {
            return Err(Error::Usage(
                "PCA is instant: ask /api/project; layouts are t-SNE and UMAP".into(),
            ));
        }
        let (_, info) = self.model.get(&req.tensor)?;
        if info.shape.len() < 2 {
            return Err(Error::Usage(format!(
                "{} is {}-D: layouts need a 2-D view",
                info.name,
                info.shape.len()
            )));
        }
        let mut req = req.clone();
        req.tensor = info.name.clone();
        req.spec = req.spec.clone().make_valid(&info.shape);
        let version = snap.tensor_version(&info.name);
        let k = key(&req, version);
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        let id = inner.next_id;
        if let Some(p) = inner
            .done
            .iter()
            .find(|(dk, _)| *dk == k)
            .map(|(_, p)| p.clone())
        {
            let job = Arc::new(Job {
                id,
                key: k,
                stop: AtomicBool::new(false),
                state: Mutex::new(JobState {
                    frame: 1,
                    phase: "done",
                    running: false,
                    error: None,
                    meta_frame: 1,
                    layout: (*p).clone(),
                }),
                changed: Condvar::new(),
            });
            remember(&mut inner, job.clone());
            return Ok(job);
        }
        if let Some(running) = inner
            .jobs
            .iter()
            .find(|j| j.key == k && lock(&j.state).running)
        {
            return Ok(running.clone());
        }
        // One layout at a time: a new request stops the one running.
        for j in &inner.jobs {
            j.stop.store(true, Ordering::Relaxed);
        }
        let job = Arc::new(Job {
            id,
            key: k,
            stop: AtomicBool::new(false),
            state: Mutex::new(JobState {
                frame: 0,
                phase: Phase::Reading.as_str(),
                running: true,
                error: None,
                meta_frame: 0,
                layout: Projection {
                    dims: req.dims,
                    method: req.method,
                    ..Projection::default()
                },
            }),
            changed: Condvar::new(),
        });
        remember(&mut inner, job.clone());
        drop(inner);
        let (this, j) = (self.clone(), job.clone());
        let overlay = snap.overlay().only(&info.name);
        let spawned = std::thread::Builder::new()
            .name(format!("layout-{id}"))
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    this.run(&req, &overlay, &j)
                }))
                .unwrap_or_else(|_| Err(Error::Internal("the layout stopped unexpectedly".into())));
                let mut s = lock(&j.state);
                s.running = false;
                match result {
                    Ok(p) => {
                        s.phase = "done";
                        s.frame += 1;
                        if s.layout.index.is_empty() {
                            s.meta_frame = s.frame;
                        }
                        s.layout = p.clone();
                        drop(s);
                        // A stopped layout is shown, not kept: asking again runs it in full.
                        if p.stopped {
                            j.changed.notify_all();
                            return;
                        }
                        let mut inner = lock(&this.inner);
                        inner.done.retain(|(k, _)| *k != j.key);
                        inner.done.push_back((j.key.clone(), Arc::new(p)));
                        while inner.done.len() > KEPT {
                            inner.done.pop_front();
                        }
                    }
                    Err(e) => {
                        s.phase = "failed";
                        s.error = Some(Arc::new(e));
                        s.frame += 1;
                    }
                }
                j.changed.notify_all();
            });
        if let Err(e) = spawned {
            let mut s = lock(&job.state);
            s.running = false;
            s.error = Some(Arc::new(Error::Thread {
                what: "layout",
                source: e,
            }));
        }
        Ok(job)
    }

    fn run(&self, req: &ProjectRequest, overlay: &Overlay, job: &Job) -> Result<Projection> {
        let (shard, info) = self.model.get(&req.tensor)?;
        let base = shard.data(info)?;
        let source = overlay.view(info, &*base);
        let input = Input {
            dtype: info.dtype,
            shape: &info.shape,
            spec: req.spec.clone(),
            source: &source,
            columns: req.columns,
            normalize: req.normalize,
        };
        let labels = |index: &[u64]| -> Vec<String> {
            let dim = if req.columns {
                req.spec.x_dim
            } else {
                req.spec.y_dim
            };
            let Some(d) = dim else { return Vec::new() };
            let size = info.shape[d as usize];
            let vocab = self.vocab.as_deref();
            if token_label(vocab, size, 0).is_none() {
                return Vec::new();
            }
            index
                .iter()
                .map(|&i| token_label(vocab, size, i).unwrap_or_default())
                .collect()
        };
        let report = |r: Report<'_>| {
            let mut s = lock(&job.state);
            s.phase = r.phase.as_str();
            if r.phase == Phase::Optimising {
                s.layout.iterations = r.done as u32;
                s.layout.total_iterations = r.total as u32;
            }
            if let Some(p) = r.points {
                s.layout.points = p.to_vec();
                s.layout.n = (p.len() / req.dims.max(1) as usize) as u64;
                s.frame += 1;
            }
            if let Some((index, norms)) = r.points_are {
                s.layout.labels = labels(index);
                s.layout.index = index.to_vec();
                s.layout.norms = norms.to_vec();
                s.meta_frame = s.frame;
            }
            if r.loss.is_some() {
                s.layout.loss = r.loss;
            }
            drop(s);
            job.changed.notify_all();
        };
        let live = Live {
            report: &report,
            stop: &job.stop,
        };
        let mut out = project::layout(&input, req.dims as usize, req.method, &req.params, &live)?;
        out.labels = labels(&out.index);
        Ok(out)
    }

    /// The newest frame of a layout (its points only when newer than `since`).
    pub fn frame(&self, req: FrameRequest) -> Result<LayoutFrame> {
        Ok(self.find_job(req.job)?.frame(req.since))
    }

    /// Stops a layout after its current step; it keeps the layout it has.
    pub fn stop(&self, job: u64) -> Result<LayoutFrame> {
        let j = self.find_job(job)?;
        j.stop.store(true, Ordering::Relaxed);
        Ok(j.frame(u64::MAX))
    }

    fn find_job(&self, id: u64) -> Result<Arc<Job>> {
        lock(&self.inner)
            .jobs
            .iter()
            .find(|j| j.id == id)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no layout {id} (it ended long ago, or the server restarted)"
                ))
            })
    }

    /// A whole layout, waiting for it to finish (for the CLI-like callers: MCP, scripts).
    pub fn blocking(&self, snap: &Snapshot, req: &ProjectRequest) -> Result<Projection> {
        let job = self.job(snap, req)?;
        let mut s = lock(&job.state);
        while s.running {
            s = job
                .changed
                .wait(s)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        match &s.error {
            Some(e) => Err(Error::Shared(Arc::clone(e))),
            None => Ok(s.layout.clone()),
        }
    }
}

fn remember(inner: &mut Inner, job: Arc<Job>) {
    inner.jobs.push_back(job);
    while inner.jobs.len() > JOBS_KEPT {
        inner.jobs.pop_front();
    }
}

#[cfg(test)]
#[path = "layouts_tests.rs"]
mod tests;
