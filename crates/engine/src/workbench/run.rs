//! The session's model, run: base and edited side by side on a snapshot of the session
//! (the run service), and probe files saved beside the patches.

use super::{plain_file_name, Result, Workbench};
use crate::error::Error;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use tensor_surgeon_infer::trace::TraceEvent;
use tensor_surgeon_wire::{
    Activations, ActivationsRequest, CausalTrace, EmbedOutcome, GenerationEvent, ProbeSet,
    ProbeTable, RunInfo, RunOutcome, RunRequest, TaskProgress, TraceRequest,
};

/// Probe files are saved with this suffix in the patches folder.
pub const PROBES_SUFFIX: &str = ".probes.json";

impl Workbench {
    /// Tensors converted for runs since start (what runs had to reload).
    pub fn run_loads(&self) -> u64 {
        self.runs.loads()
    }

    /// Whether the model can run, and its sizes; or exactly why not.
    pub fn run_info(&self) -> RunInfo {
        self.runs.info(&self.snapshot())
    }

    /// A prompt on the base and the edited model.
    pub fn run_prompt(&self, req: &RunRequest) -> Result<RunOutcome> {
        self.runs.run_prompt(&self.snapshot(), req)
    }

    /// Sentence embeddings (encoders) on the base and the edited model.
    pub fn run_embed(&self, sentences: &[String]) -> Result<EmbedOutcome> {
        self.runs.embed(&self.snapshot(), sentences)
    }

    /// The probe table on the current session.
    pub fn run_probes(&self, set: &ProbeSet) -> Result<ProbeTable> {
        self.runs.probes(&self.snapshot(), set)
    }

    /// How far the running probe table is.
    pub fn probe_progress(&self) -> TaskProgress {
        self.runs.probe_progress()
    }

    /// One layer's activations on the edited model, and the logit lens.
    pub fn activations(&self, req: &ActivationsRequest) -> Result<Activations> {
        self.runs.activations(&self.snapshot(), req)
    }

    /// A causal trace of the edited model (the base when nothing is edited): `on` hears of
    /// its start and of every finished row; `stop` ends it after the row under way.
    pub fn trace(
        &self,
        req: &TraceRequest,
        stop: &AtomicBool,
        on: &mut dyn FnMut(TraceEvent<'_>),
    ) -> Result<CausalTrace> {
        self.runs.trace(&self.snapshot(), req, stop, on)
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
        self.runs.generate(&self.snapshot(), prompt, tokens, emit)
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
