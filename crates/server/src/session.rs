//! How a host (the web server, the MCP server over stdio) opens its session: one set of flags
//! for the session's settings, turned into the engine's `SessionConfig` once.

use std::path::{Path, PathBuf};
use tensor_surgeon_engine::workbench::{SessionConfig, Workbench, DEFAULT_MAX_STEP_BYTES};
use tensor_surgeon_engine::Result;
use tensor_surgeon_store::Model;

/// The session's settings, as flags.
#[derive(clap::Args, Clone, Debug)]
pub struct SessionArgs {
    /// Disable every edit (the read views and tools still work).
    #[arg(long)]
    pub read_only: bool,
    /// Folder for saved patches and the session journal (default: `patches` beside the model).
    #[arg(long)]
    pub patches: Option<PathBuf>,
    /// Folder for baked models (default: `baked` beside the model).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The tokenizer.json labelling vocabulary rows (default: the one beside the model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Apply edits proposed by agents at once instead of leaving them pending for a person.
    #[arg(long)]
    pub agent_auto_apply: bool,
    /// Most bytes one edit or region step may change (256 MiB by default; a larger one is
    /// refused).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_STEP_BYTES)]
    pub max_edit_bytes: u64,
    /// Another folder whose models "compare with" may read (besides the model's folder and
    /// the patches folder); repeatable.
    #[arg(long)]
    pub allow_dir: Vec<PathBuf>,
}

impl Default for SessionArgs {
    fn default() -> SessionArgs {
        SessionArgs {
            read_only: false,
            patches: None,
            out_dir: None,
            tokenizer: None,
            agent_auto_apply: false,
            max_edit_bytes: DEFAULT_MAX_STEP_BYTES,
            allow_dir: Vec::new(),
        }
    }
}

impl SessionArgs {
    /// Opens the session over `model` (the demo model when none is given), with its
    /// tokenizer; also what the user should know about how it opened.
    pub fn open(&self, model: Option<&Path>) -> Result<(Workbench, Vec<String>)> {
        let model_path = match model {
            Some(p) => p.to_path_buf(),
            None => tensor_surgeon_store::demo::write_demo(&demo_dir())?,
        };
        let model = Model::open(&model_path)?;
        // A remote model's side files, patches and bakes live in its local folder.
        let model_path = model.path.clone();
        let model_dir = if model_path.is_dir() {
            model_path.clone()
        } else {
            model_path.parent().map(PathBuf::from).unwrap_or_default()
        };
        let config = SessionConfig {
            read_only: self.read_only,
            patches_dir: self
                .patches
                .clone()
                .unwrap_or_else(|| model_dir.join("patches")),
            out_dir: self
                .out_dir
                .clone()
                .unwrap_or_else(|| model_dir.join("baked")),
            agent_auto_apply: self.agent_auto_apply,
            max_step_bytes: self.max_edit_bytes,
            allow_dirs: self.allow_dir.clone(),
        };
        let (mut workbench, mut warnings) = Workbench::open(model, config)?;
        // A tokenizer named on the command line must load; one found beside the model may not.
        let gguf = workbench.model().gguf();
        match tensor_surgeon_infer::tokens::Vocab::for_model(
            &model_path,
            self.tokenizer.as_deref(),
            gguf,
        ) {
            Ok(v) => workbench.set_vocab(v),
            Err(e) if self.tokenizer.is_none() => warnings.push(format!("tokenizer ignored: {e}")),
            Err(e) => return Err(e.into()),
        }
        warnings.extend(workbench.model().warnings.iter().cloned());
        Ok((workbench, warnings))
    }
}

/// Where the demo model is written when no model is given.
fn demo_dir() -> PathBuf {
    tensor_surgeon_store::cache_root().join("demo")
}
