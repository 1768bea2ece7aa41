//! The session's model, run: base and edited side by side (edits read from the overlay, no
//! bake), probes saved beside the patches, activations, and streamed continuations.

use super::{lock, plain_file_name, Result, Workbench};
use crate::error::Error;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tensor_surgeon_infer::trace::TraceEvent;
use tensor_surgeon_infer::InferError;
use tensor_surgeon_infer::{Edited, RunnableModel};
use tensor_surgeon_wire::{
    Activations, ActivationsRequest, CausalTrace, EmbedOutcome, GenerationEvent, ProbeSet,
    ProbeTable, RunInfo, RunOutcome, RunRequest, TaskProgress, TraceRequest,
};

/// Probe files are saved with this suffix in the patches folder.
pub const PROBES_SUFFIX: &str = ".probes.json";

/// The runner (opened on first use) and what runs now.
#[derive(Default)]
pub(super) struct RunState {
    runner: OnceLock<std::result::Result<RunnableModel, Arc<InferError>>>,
    /// One forward pass at a time: each already uses every core.
    pub(super) busy: Mutex<()>,
    probing: AtomicBool,
    probes_done: AtomicU64,
    probes_total: AtomicU64,
}

impl Workbench {
    pub(super) fn runnable(&self) -> Result<&RunnableModel> {
        self.run
            .runner
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

    /// Tensors converted for runs since start (what runs had to reload).
    pub fn run_loads(&self) -> u64 {
        self.runnable().map_or(0, |r| r.cache.loads())
    }

    /// Whether the model can run, and its sizes; or exactly why not.
    pub fn run_info(&self) -> RunInfo {
        match self.runnable() {
            Ok(r) => r.info(lock(&self.session).changed_at.len()),
            Err(e) => RunInfo {
                reason: Some(e.to_string()),
                ..RunInfo::default()
            },
        }
    }

    /// The session's edited tensors as the forward pass reads them: each converted once per
    /// edit version (a tensor edited since the last run reloads; the rest come from the cache).
    /// Also the session version they reflect.
    fn edited_weights(&self, runner: &RunnableModel) -> Result<(Edited, u64)> {
        // Under the lock, only what is cheap: the versions, and a copy of the runs of each
        // tensor edited since its last load (the edited bytes only, not the tensor).
        let (version, cached, fresh) = {
            let session = lock(&self.session);
            let mut cached = Vec::new();
            let mut fresh = Vec::new();
            for (name, &at) in &session.changed_at {
                match runner.cache.cached(name, at) {
                    Some(t) => cached.push((name.clone(), t)),
                    None => {
                        // In the values' bytes (a quantized tensor's edited blocks decoded).
                        let overlay = session.history.overlay();
                        let runs = match self.model.get(name) {
                            Ok((_, info)) => overlay.values(info).map(|r| r.into_owned()),
                            Err(_) => overlay.tensor(name).cloned(),
                        };
                        fresh.push((name.clone(), at, runs.unwrap_or_default()));
                    }
                }
            }
            (session.version, cached, fresh)
        };
        let mut tensors = HashMap::new();
        for (name, t) in cached {
            tensors.insert(name, t);
        }
        for (name, at, runs) in fresh {
            let (shard, info) = self.model.get(&name)?;
            let t = runner.cache.edited(
                &name,
                at,
                (info.dtype, &info.shape, &shard.data(info)?),
                runs,
            )?;
            tensors.insert(name, t);
        }
        // A tensor whose edits were all undone is the base again.
        tensors.retain(|_, t| !t.same_as_base());
        Ok((Edited::from_map(tensors), version))
    }

    /// A prompt on the base and the edited model.
    pub fn run_prompt(&self, req: &RunRequest) -> Result<RunOutcome> {
        let runner = self.runnable()?;
        let _busy = lock(&self.run.busy);
        let (edited, _) = self.edited_weights(runner)?;
        let base = runner.weights(&self.model, Edited::default());
        let edited = runner.weights(&self.model, edited);
        Ok(runner.compare(&base, Some(&edited), req)?)
    }

    /// Sentence embeddings (encoders) on the base and the edited model.
    pub fn run_embed(&self, sentences: &[String]) -> Result<EmbedOutcome> {
        let runner = self.runnable()?;
        let _busy = lock(&self.run.busy);
        let (edited, _) = self.edited_weights(runner)?;
        let base = runner.weights(&self.model, Edited::default());
        let edited = runner.weights(&self.model, edited);
        Ok(runner.embed(&base, Some(&edited), sentences)?)
    }

    /// The probe table on the current session.
    pub fn run_probes(&self, set: &ProbeSet) -> Result<ProbeTable> {
        let runner = self.runnable()?;
        let _busy = lock(&self.run.busy);
        let (edited, version) = self.edited_weights(runner)?;
        let base = runner.weights(&self.model, Edited::default());
        let edited = runner.weights(&self.model, edited);
        let r = &self.run;
        r.probes_total
            .store(set.probes.len() as u64, Ordering::Relaxed);
        r.probes_done.store(0, Ordering::Relaxed);
        r.probing.store(true, Ordering::Relaxed);
        let rows = runner.probe_table(&base, &edited, &set.probes, &mut |done, _| {
            r.probes_done.store(done as u64, Ordering::Relaxed)
        });
        r.probing.store(false, Ordering::Relaxed);
        Ok(ProbeTable {
            rows: rows?,
            version,
        })
    }

    /// How far the running probe table is.
    pub fn probe_progress(&self) -> TaskProgress {
        let r = &self.run;
        TaskProgress {
            running: r.probing.load(Ordering::Relaxed),
            what: "probes".into(),
            done: r.probes_done.load(Ordering::Relaxed),
            total: r.probes_total.load(Ordering::Relaxed),
        }
    }

    /// One layer's activations on the edited model, and the logit lens.
    pub fn activations(&self, req: &ActivationsRequest) -> Result<Activations> {
        let runner = self.runnable()?;
        let _busy = lock(&self.run.busy);
        let (edited, _) = self.edited_weights(runner)?;
        Ok(runner.activations(&runner.weights(&self.model, edited), req)?)
    }

    /// A causal trace of the edited model (the base when nothing is edited): `on` hears of
    /// its start and of every finished row; `stop` ends it after the row under way.
    pub fn trace(
        &self,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
    ) -> Result<CausalTrace> {
        let runner = self.runnable()?;
        let _busy = lock(&self.run.busy);
        let (edited, _) = self.edited_weights(runner)?;
        Ok(runner.trace(&runner.weights(&self.model, edited), req, stop, on)?)
    }

    /// Greedy continuations of the base and the edited model, one token of each in turn;
    /// `emit` gets every token and returns false to stop (the page went away). Without edits
    /// only the base side runs.
    pub fn generate(
        &self,
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
        let _busy = lock(&self.run.busy);
        let (edited, _) = self.edited_weights(runner)?;
        let has_edits = !edited.is_empty();
        let base = runner.weights(&self.model, Edited::default());
        let edited = runner.weights(&self.model, edited);
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
    }

    /// Probe files in the patches folder, by name.
    pub fn saved_probes(&self) -> Vec<String> {
        let Ok(read) = std::fs::read_dir(&self.config.patches_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = read
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && n.ends_with(PROBES_SUFFIX))
            .collect();
        names.sort();
        names
    }

    fn probes_path(&self, name: &str) -> Result<PathBuf> {
        let stem = name
            .trim()
            .trim_end_matches(PROBES_SUFFIX)
            .trim_end_matches(".json");
        Ok(self
            .config
            .patches_dir
            .join(plain_file_name(stem, PROBES_SUFFIX)?))
    }

    /// Saves probes as `NAME.probes.json` beside the patches (a patch saved as `NAME.json`
    /// keeps its probes under the same name).
    pub fn save_probes(&self, name: &str, set: &ProbeSet) -> Result<String> {
        let path = self.probes_path(name)?;
        std::fs::create_dir_all(&self.config.patches_dir)
            .map_err(Error::io(&self.config.patches_dir))?;
        let text = serde_json::to_string_pretty(set).map_err(|e| Error::Internal(e.to_string()))?;
        tensor_surgeon_store::atomic::write_atomic(&path, text.as_bytes())?;
        Ok(path.display().to_string())
    }

    /// Reads a probe file of the patches folder.
    pub fn load_probes(&self, name: &str) -> Result<ProbeSet> {
        let path = self.probes_path(name)?;
        let text = std::fs::read_to_string(&path).map_err(Error::io(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: not a probe file: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor_surgeon_wire::{Probe, ProbeKind};

    fn bench() -> (tempfile::TempDir, Workbench) {
        let (dir, wb, _) = crate::workbench::demo_bench();
        (dir, wb)
    }

    #[test]
    fn a_model_without_config_says_why_it_cannot_run() {
        let (_dir, wb) = bench();
        let info = wb.run_info();
        assert_eq!(info.family, None);
        let reason = info.reason.unwrap();
        assert!(
            reason.contains("config.json") && reason.contains("Llama-family"),
            "{reason}"
        );
        let err = wb
            .run_prompt(&RunRequest {
                prompt: "hi".into(),
                top_k: 5,
                target: None,
                generate: 0,
            })
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Invalid);
    }

    #[test]
    fn probes_round_trip_beside_the_patches_and_are_not_patches() {
        let (_dir, wb) = bench();
        let set = ProbeSet {
            version: 1,
            probes: vec![Probe {
                prompt: "The capital of France is".into(),
                target: " Paris".into(),
                kind: ProbeKind::Expect,
            }],
        };
        let path = wb.save_probes("swap", &set).unwrap();
        assert!(path.ends_with("swap.probes.json"), "{path}");
        assert_eq!(wb.load_probes("swap").unwrap(), set);
        assert_eq!(wb.load_probes("swap.probes.json").unwrap(), set);
        assert_eq!(wb.saved_probes(), vec!["swap.probes.json".to_string()]);
        assert!(wb.saved_patches().unwrap().is_empty());
        assert!(wb.save_probes("../x", &set).is_err());
    }
}
