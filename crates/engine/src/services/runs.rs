//! Runs of the model on a snapshot of the session's weights: base and edited side by side
//! (edits read from the overlay, no bake), probes, activations, causal traces and streamed
//! continuations. One forward pass at a time: each already uses every core.

use super::{lock, Snapshot};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tensor_surgeon_infer::tokens::Vocab;
use tensor_surgeon_infer::trace::TraceEvent;
use tensor_surgeon_infer::InferError;
use tensor_surgeon_infer::{Edited, RunnableModel};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{
    Activations, ActivationsRequest, CausalTrace, EmbedOutcome, GenerationEvent, ProbeSet,
    ProbeTable, RunInfo, RunOutcome, RunRequest, TaskProgress, TraceRequest,
};

/// The model's runner (opened on first use), what runs now, and the probe table's progress.
pub struct Runs {
    model: Arc<Model>,
    vocab: Option<Arc<Vocab>>,
    runner: OnceLock<std::result::Result<RunnableModel, Arc<InferError>>>,
    /// One forward pass at a time.
    busy: Mutex<()>,
    probing: AtomicBool,
    probes_done: AtomicU64,
    probes_total: AtomicU64,
    /// Control vectors added to the edited side's layer outputs.
    steering: Mutex<Option<Arc<tensor_surgeon_infer::steering::Steering>>>,
}

impl Runs {
    /// Runs of `model`, its tokens read with `vocab` (when it has none of its own).
    pub fn new(model: Arc<Model>, vocab: Option<Arc<Vocab>>) -> Runs {
        Runs {
            model,
            vocab,
            runner: OnceLock::new(),
            busy: Mutex::new(()),
            probing: AtomicBool::new(false),
            probes_done: AtomicU64::new(0),
            probes_total: AtomicU64::new(0),
            steering: Mutex::new(None),
        }
    }

    /// Control vectors the edited side runs with from now on (`None`: none).
    pub fn set_steering(&self, steering: Option<Arc<tensor_surgeon_infer::steering::Steering>>) {
        *lock(&self.steering) = steering;
    }

    /// The control vectors the edited side runs with.
    pub fn steering(&self) -> Option<Arc<tensor_surgeon_infer::steering::Steering>> {
        lock(&self.steering).clone()
    }

    /// The model's runner, opened on first use; or exactly why the model cannot run.
    pub fn runnable(&self) -> Result<&RunnableModel> {
        self.runner
            .get_or_init(|| {
                match self.model.gguf() {
                    Some(h) => RunnableModel::open_gguf(&self.model.path, h, self.vocab.clone()),
                    None => RunnableModel::open(&self.model.path, self.vocab.clone()),
                }
                .map_err(Arc::new)
            })
            .as_ref()
            .map_err(|e| Error::CannotRun(Arc::clone(e)))
    }

    /// Runs `f` on the runner while no other forward pass runs (the studies: fact edits,
    /// ablations).
    pub fn exclusive<T>(&self, f: impl FnOnce(&RunnableModel) -> Result<T>) -> Result<T> {
        let runner = self.runnable()?;
        let _busy = lock(&self.busy);
        f(runner)
    }

    /// Tensors converted for runs since start (what runs had to reload).
    pub fn loads(&self) -> u64 {
        self.runnable().map_or(0, |r| r.cache.loads())
    }

    /// Whether the model can run, and its sizes; or exactly why not.
    pub fn info(&self, snap: &Snapshot) -> RunInfo {
        match self.runnable() {
            Ok(r) => r.info(snap.changed_count()),
            Err(e) => RunInfo {
                reason: Some(e.to_string()),
                ..RunInfo::default()
            },
        }
    }

    /// The snapshot's edited tensors as the forward pass reads them: each converted once per
    /// edit version (a tensor edited since its last load reloads; the rest come from the
    /// runner's cache).
    fn edited(&self, runner: &RunnableModel, snap: &Snapshot) -> Result<Edited> {
        let mut tensors = HashMap::new();
        for (name, at) in snap.changed() {
            if let Some(t) = runner.cache.cached(name, at) {
                tensors.insert(name.to_string(), t);
                continue;
            }
            let none = tensor_surgeon_core::overlay::RangeMap::default();
            let raw = snap.overlay().tensor(name).unwrap_or(&none);
            let t = runner.cache.edited_of(&*self.model, name, at, raw)?;
            tensors.insert(name.to_string(), t);
        }
        // A tensor whose edits were all undone is the base again.
        tensors.retain(|_, t| !t.same_as_base());
        Ok(Edited::from_map(tensors))
    }

    /// A prompt on the base and the edited model.
    pub fn run_prompt(&self, snap: &Snapshot, req: &RunRequest) -> Result<RunOutcome> {
        self.exclusive(|runner| {
            let edited = self.edited(runner, snap)?;
            let base = runner.weights(&*self.model, Edited::default());
            let edited = runner
                .weights(&*self.model, edited)
                .with_steering(self.steering());
            Ok(runner.compare(&base, Some(&edited), req)?)
        })
    }

    /// Sentence embeddings (encoders) on the base and the edited model.
    pub fn embed(&self, snap: &Snapshot, sentences: &[String]) -> Result<EmbedOutcome> {
        self.exclusive(|runner| {
            let edited = self.edited(runner, snap)?;
            let base = runner.weights(&*self.model, Edited::default());
            let edited = runner
                .weights(&*self.model, edited)
                .with_steering(self.steering());
            Ok(runner.embed(&base, Some(&edited), sentences)?)
        })
    }

    /// The probe table on the snapshot, labelled with its session version.
    pub fn probes(&self, snap: &Snapshot, set: &ProbeSet) -> Result<ProbeTable> {
        self.exclusive(|runner| {
            let edited = self.edited(runner, snap)?;
            let base = runner.weights(&*self.model, Edited::default());
            let edited = runner
                .weights(&*self.model, edited)
                .with_steering(self.steering());
            self.probes_total
                .store(set.probes.len() as u64, Ordering::Relaxed);
            self.probes_done.store(0, Ordering::Relaxed);
            self.probing.store(true, Ordering::Relaxed);
            let rows = runner.probe_table(&base, &edited, &set.probes, &mut |done, _| {
                self.probes_done.store(done as u64, Ordering::Relaxed)
            });
            self.probing.store(false, Ordering::Relaxed);
            Ok(ProbeTable {
                rows: rows?,
                version: snap.version(),
            })
        })
    }

    /// How far the running probe table is.
    pub fn probe_progress(&self) -> TaskProgress {
        TaskProgress {
            running: self.probing.load(Ordering::Relaxed),
            what: "probes".into(),
            done: self.probes_done.load(Ordering::Relaxed),
            total: self.probes_total.load(Ordering::Relaxed),
        }
    }

    /// One layer's activations on the edited model, and the logit lens.
    pub fn activations(&self, snap: &Snapshot, req: &ActivationsRequest) -> Result<Activations> {
        self.exclusive(|runner| {
            let edited = self.edited(runner, snap)?;
            Ok(runner.activations(
                &runner
                    .weights(&*self.model, edited)
                    .with_steering(self.steering()),
                req,
            )?)
        })
    }

    /// A causal trace of the edited model (the base when nothing is edited): `on` hears of
    /// its start and of every finished row; `stop` ends it after the row under way.
    pub fn trace(
        &self,
        snap: &Snapshot,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
    ) -> Result<CausalTrace> {
        self.exclusive(|runner| {
            let edited = self.edited(runner, snap)?;
            Ok(runner.trace(
                &runner
                    .weights(&*self.model, edited)
                    .with_steering(self.steering()),
                req,
                stop,
                on,
            )?)
        })
    }

    /// Greedy continuations of the base and the edited model, one token of each in turn;
    /// `emit` gets every token and returns false to stop (the page went away). Without edits
    /// only the base side runs.
    pub fn generate(
        &self,
        snap: &Snapshot,
        prompt: &str,
        tokens: u32,
        emit: &mut dyn FnMut(GenerationEvent) -> bool,
    ) -> Result<()> {
        let runner = self.runnable()?;
        if tokens > tensor_surgeon_infer::MAX_GENERATE {
            return Err(Error::Usage(format!(
                "a continuation may have at most {} tokens",
                tensor_surgeon_infer::MAX_GENERATE
            )));
        }
        let ids = runner.encode(prompt)?;
        self.exclusive(|runner| {
            let edited = self.edited(runner, snap)?;
            let has_edits = !edited.is_empty();
            let base = runner.weights(&*self.model, Edited::default());
            let edited = runner
                .weights(&*self.model, edited)
                .with_steering(self.steering());
            let mut sides = vec![("base", &base, runner.generator(&base, &ids)?.1, true)];
            if has_edits {
                sides.push(("edited", &edited, runner.generator(&edited, &ids)?.1, true));
            }
            for _ in 0..tokens {
                let mut any = false;
                for (side, w, g, live) in sides.iter_mut() {
                    if !*live {
                        continue;
                    }
                    match runner.step(w, g)? {
                        Some(id) => {
                            any = true;
                            let event = GenerationEvent {
                                side: side.to_string(),
                                id,
                                token: runner.token_text(id),
                                count: g.ids.len() as u32,
                            };
                            if !emit(event) {
                                return Ok(());
                            }
                        }
                        None => *live = false,
                    }
                }
                if !any {
                    break;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[path = "runs_tests.rs"]
mod tests;
