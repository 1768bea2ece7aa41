//! Running a projection from the panel: PCA in one request; t-SNE and UMAP as a layout on the
//! server whose frames the panel polls (each new frame redraws the scatter) until it ends or
//! is stopped.

use super::super::poll::{poll, Poll};
use super::super::state::message;
use crate::api::{get_layout_frame, get_projection, start_layout, stop_layout};
use leptos::prelude::*;
use std::time::Duration;
use tensor_surgeon_wire::{LayoutFrame, Method, ProjectRequest, Projection};

/// Time between two polls of a running layout.
const POLL: Duration = Duration::from_millis(200);

/// Where a layout stands, as the panel shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub job: u64,
    pub phase: String,
    pub running: bool,
    pub iterations: u32,
    pub total: u32,
    pub loss: Option<f64>,
    pub stopped: bool,
}

/// The panel's run state (all `Copy` handles).
#[derive(Clone, Copy)]
pub struct LiveLayout {
    /// The tensor and its projection (points replaced frame by frame), or the error.
    pub result: RwSignal<Option<Result<(String, Projection), String>>>,
    pub status: RwSignal<Option<Status>>,
    /// Frames with new points received from the running layout (tests watch it grow).
    pub frames: RwSignal<u64>,
    pub busy: RwSignal<bool>,
}

impl LiveLayout {
    pub fn new() -> LiveLayout {
        LiveLayout {
            result: RwSignal::new(None),
            status: RwSignal::new(None),
            frames: RwSignal::new(0),
            busy: RwSignal::new(false),
        }
    }

    /// Runs `req`: PCA at once, t-SNE and UMAP live.
    pub fn run(self, req: ProjectRequest) {
        self.busy.set(true);
        self.frames.set(0);
        self.status.set(None);
        let tensor = req.tensor.clone();
        if req.method == Method::Pca {
            leptos::task::spawn_local(async move {
                let r = get_projection(req).await;
                self.busy.set(false);
                self.result
                    .set(Some(r.map(|p| (tensor, p)).map_err(|e| message(&e))));
            });
            return;
        }
        leptos::task::spawn_local(async move {
            match start_layout(req).await {
                Ok(f) => {
                    self.result.set(Some(Ok((tensor, Projection::default()))));
                    self.take(&f);
                    if f.running {
                        self.follow(f.job, f.frame);
                    } else {
                        self.busy.set(false);
                    }
                }
                Err(e) => {
                    self.busy.set(false);
                    self.result.set(Some(Err(message(&e))));
                }
            }
        });
    }

    /// Stops the running layout (it keeps the layout it has).
    pub fn stop(self) {
        if let Some(s) = self.status.get_untracked().filter(|s| s.running) {
            leptos::task::spawn_local(async move {
                let _ = stop_layout(s.job).await;
            });
        }
    }

    /// Takes the frames of layout `job` after frame `since` until it ends (or a newer run
    /// replaces it).
    fn follow(self, job: u64, since: u64) {
        poll(POLL, since, move |since| async move {
            if self
                .status
                .with_untracked(|s| s.as_ref().is_some_and(|s| s.job != job))
            {
                return Poll::Done;
            }
            match get_layout_frame(job, since).await {
                Ok(f) => {
                    self.take(&f);
                    if f.running {
                        return Poll::Next(f.frame);
                    }
                    self.busy.set(false);
                }
                Err(e) => {
                    self.busy.set(false);
                    self.result.set(Some(Err(message(&e))));
                }
            }
            Poll::Done
        });
    }

    /// Takes a frame: its points (when new), the points' indices (when sent) and the status.
    fn take(self, f: &LayoutFrame) {
        if let Some(e) = &f.error {
            self.result.set(Some(Err(e.clone())));
        }
        let l = &f.layout;
        if !l.points.is_empty() || !l.index.is_empty() {
            self.result.update(|r| {
                if let Some(Ok((_, p))) = r {
                    if !l.index.is_empty() {
                        p.index = l.index.clone();
                        p.labels = l.labels.clone();
                        p.norms = l.norms.clone();
                    }
                    if !l.points.is_empty() {
                        p.points = l.points.clone();
                    }
                    p.n = l.n;
                    p.dims = l.dims;
                    p.method = l.method;
                    p.iterations = l.iterations;
                    p.total_iterations = l.total_iterations;
                    p.loss = l.loss;
                    p.stopped = l.stopped;
                }
            });
            if !l.points.is_empty() {
                self.frames.update(|n| *n += 1);
            }
        }
        self.status.set(Some(Status {
            job: f.job,
            phase: f.phase.clone(),
            running: f.running,
            iterations: l.iterations,
            total: l.total_iterations,
            loss: l.loss,
            stopped: l.stopped,
        }));
    }
}
