//! The command line. Every command prints for people by default and JSON with `--json`;
//! exit code 0 on success, 1 with a one-line message on stderr for anything a user can fix.

mod ablate;
mod adapter;
mod control_vector;
pub mod diff;
mod edit;
mod edit_fact;
mod inspect;
mod patch_cmds;
mod run;
mod slice;
mod stats;
mod structure;
mod trace;

use crate::session::SessionArgs;
use crate::web::ServeArgs;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tensor_surgeon_engine::error::Error;
use tensor_surgeon_store::patch_files::Format;

/// Look inside `.safetensors` model weights and change them, as hex-diff patches.
#[derive(Parser, Debug)]
#[command(
    name = "tensor-surgeon",
    version,
    about,
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: serve the web app (the flags of `serve`).
    #[command(flatten)]
    serve: ServeArgs,
    /// Where the bytes read from remote models (http://, https://, s3:// URLs) are cached.
    /// Default: `remote` in the cache folder ($XDG_CACHE_HOME/tensor-surgeon).
    #[arg(
        long,
        global = true,
        env = "TENSOR_SURGEON_CACHE_DIR",
        value_name = "DIR"
    )]
    cache_dir: Option<PathBuf>,
    /// The most the remote cache may hold, in MiB; the least recently used bytes go first
    /// (0: no cache).
    #[arg(long, global = true, env = "TENSOR_SURGEON_CACHE_MB", value_name = "MIB",
          default_value_t = tensor_surgeon_store::remote::DEFAULT_CACHE_BYTES >> 20)]
    cache_mb: u64,
}

/// `--format`: the form to write a patch in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// JSON with hex bytes.
    Json,
    /// Binary: XOR deltas, zstd, BLAKE3 digests of the original and patched bytes.
    Compact,
    /// JSON up to about 1 MB, compact above.
    #[default]
    Auto,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Json => Format::Json,
            FormatArg::Compact => Format::Compact,
            FormatArg::Auto => Format::Auto,
        }
    }
}

// Parsed once per run: the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the web app (the default command); the demo model when no model is given.
    Serve(ServeArgs),
    /// List a model's tensors (name, dtype, shape, file, offsets) and metadata.
    Inspect {
        /// A .safetensors file, a model.safetensors.index.json, or a folder holding either.
        model: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the values of a tensor slice, numpy-style: `3,:,10:20`, `0:8:2`, `-1`.
    Slice {
        model: PathBuf,
        tensor: String,
        /// Index per leading dim; missing trailing dims are taken whole.
        #[arg(default_value = "", allow_hyphen_values = true)]
        spec: String,
        #[arg(long)]
        json: bool,
        /// Largest number of elements to print.
        #[arg(long, default_value_t = 16 << 20)]
        max_elements: u64,
    },
    /// Edit values into a patch file (created or extended); the model is never written.
    Edit(edit::EditArgs),
    /// Check that a patch applies to a model: every original byte range must match.
    Verify {
        model: PathBuf,
        patch: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Bake a patch into a new model file (or folder, for sharded models).
    Apply {
        model: PathBuf,
        patch: PathBuf,
        /// Output file, or folder (sharded models; or a folder to put the file in).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the patch that undoes a patch.
    Invert {
        patch: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: FormatArg,
        /// The model the patch applies to; needed to write a compact patch as JSON.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Combine two patches into one; conflicting bytes are listed and nothing is written.
    Combine {
        first: PathBuf,
        second: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: FormatArg,
        /// The base model; needed when either patch is compact.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Statistics of one tensor (or of every tensor): moments, quantiles, NaN/Inf/zero/
    /// subnormal counts and a histogram; NaN and Inf are counted, the numbers are over the
    /// finite values.
    Stats {
        model: PathBuf,
        tensor: Option<String>,
        /// See the model through these patches (each must apply to the model); repeatable.
        #[arg(long)]
        patch: Vec<PathBuf>,
        /// Histogram bins.
        #[arg(long, default_value_t = tensor_surgeon_core::stats::DEFAULT_BINS)]
        bins: usize,
        #[arg(long)]
        json: bool,
    },
    /// Scan every tensor: statistics, flags (NaN/Inf, all zero, constant) and outliers
    /// among siblings (tensors whose names differ only by layer number).
    Scan {
        model: PathBuf,
        /// See the model through these patches; repeatable.
        #[arg(long)]
        patch: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// PCA of a tensor's rows (or columns) on 2 or 3 components, with explained variance.
    Project(structure::ProjectArgs),
    /// Token lookups over a [vocab, hidden] matrix: nearest tokens, compare two, find.
    Tokens(structure::TokensArgs),
    /// Serve the agent tools over MCP on stdio (the demo model when no model is given).
    Mcp(McpArgs),
    /// Write the patch that turns one model into another, with per-tensor change statistics.
    Diff(diff::DiffArgs),
    /// Run the model on a prompt (base and patched side by side): top next tokens, a target
    /// token's probability, a greedy continuation; encoders embed --sentence texts.
    Run(run::RunArgs),
    /// Run a probe file on the base and patched model: target probabilities and the KL of
    /// the next-token distribution (efficacy and locality).
    Probe(run::ProbeArgs),
    /// One layer's MLP activations for a prompt, its top neurons, and the logit lens.
    Activations(run::ActivationsArgs),
    /// Causal tracing: where the model keeps its answer about a subject (p of the target with
    /// each layer's output, MLP or attention restored at each token of a corrupted prompt).
    Trace(trace::TraceArgs),
    /// Rewrite a fact (ROME): the rank-one change of one layer's down_proj that makes the
    /// model continue --prompt with --target, written as a low-rank patch entry, with its
    /// probe scores.
    EditFact(edit_fact::EditFactArgs),
    /// Directional ablation: the direction from the mean residual streams of two prompt lists,
    /// projected out of every matrix that writes to the residual stream, written as low-rank
    /// patch entries, with the behaviour and the KL before and after.
    Ablate(ablate::AblateArgs),
    /// A control vector from paired prompts (the first principal component or the mean of
    /// the differences of their last hidden states per layer), as llama.cpp's GGUF; run it
    /// with --control-vector on run, probe and trace.
    ControlVector(control_vector::ControlVectorArgs),
    /// LoRA adapters out: a patch's low-rank entries exported, or a difference extracted
    /// (adapters in: give one wherever a patch is read).
    Adapter {
        #[command(subcommand)]
        command: adapter::AdapterCommand,
    },
    /// Write the demo model (a tiny transformer-shaped checkpoint) and its tokenizer.json.
    Demo {
        #[arg(long)]
        out: PathBuf,
    },
}

/// `tensor-surgeon mcp`.
#[derive(clap::Args, Debug, Default)]
struct McpArgs {
    /// The model to open (or set MODEL_PATH); the demo model when neither is given.
    #[arg(env = "MODEL_PATH")]
    model: Option<PathBuf>,
    #[command(flatten)]
    session: SessionArgs,
}

/// Runs the command line and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    // An empty variable counts as unset (`MODEL_PATH= tensor-surgeon`), as a shell user
    // expects; clap alone would read it as an empty value.
    for name in ["MODEL_PATH", "TENSOR_SURGEON_TOKEN"] {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(name);
        }
    }
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// Long reads from remote models show a progress bar on a terminal (and nothing otherwise).
fn report_remote_reads() {
    let bar = std::sync::Mutex::new(None::<indicatif::ProgressBar>);
    tensor_surgeon_store::remote::report_progress_with(Box::new(move |url, done, total| {
        let mut bar = bar.lock().unwrap_or_else(|p| p.into_inner());
        let b = bar.get_or_insert_with(|| stats::progress_bar(total, "reading"));
        b.set_length(total);
        b.set_position(done);
        b.set_message(url.rsplit('/').next().unwrap_or_default().to_string());
        if done >= total {
            b.finish_and_clear();
            *bar = None;
        }
    }));
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run(matches: &ArgMatches) -> Result<(), Error> {
    let cli = Cli::from_arg_matches(matches).map_err(|e| Error::Usage(e.to_string()))?;
    report_remote_reads();
    let defaults = tensor_surgeon_store::remote::Settings::default();
    tensor_surgeon_store::remote::configure(tensor_surgeon_store::remote::Settings {
        cache_dir: cli.cache_dir.clone().unwrap_or(defaults.cache_dir),
        cache_bytes: cli.cache_mb.saturating_mul(1 << 20),
    })?;
    // No command: serve, with the flags (and MODEL_PATH, TENSOR_SURGEON_TOKEN) clap read.
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(a) => crate::web::serve(&a),
        Command::Inspect { model, json } => inspect::run(&model, json),
        Command::Slice {
            model,
            tensor,
            spec,
            json,
            max_elements,
        } => slice::run(&model, &tensor, &spec, json, max_elements),
        Command::Edit(args) => {
            let sub = matches
                .subcommand_matches("edit")
                .ok_or_else(|| Error::Usage("edit needs arguments".into()))?;
            edit::run(args, sub)
        }
        Command::Verify { model, patch, json } => patch_cmds::verify(&model, &patch, json),
        Command::Apply { model, patch, out } => patch_cmds::apply(&model, &patch, &out),
        Command::Invert {
            patch,
            out,
            format,
            model,
        } => patch_cmds::invert(&patch, &out, format.into(), model.as_deref()),
        Command::Combine {
            first,
            second,
            out,
            format,
            model,
        } => patch_cmds::combine(&first, &second, &out, format.into(), model.as_deref()),
        Command::Diff(args) => diff::run(args),
        Command::Demo { out } => patch_cmds::demo(&out),
        Command::Stats {
            model,
            tensor,
            patch,
            bins,
            json,
        } => stats::stats(&model, tensor.as_deref(), &patch, bins, json),
        Command::Scan { model, patch, json } => stats::scan(&model, &patch, json),
        Command::Mcp(a) => {
            let (wb, warnings) = a.session.open(a.model.as_deref())?;
            // stdout carries the protocol: everything else goes to stderr.
            for w in warnings {
                eprintln!("warning: {w}");
            }
            crate::mcp::serve_stdio(std::sync::Arc::new(wb))
        }
        Command::Project(a) => structure::project(&a),
        Command::Tokens(a) => structure::tokens(&a),
        Command::Run(a) => run::run(&a),
        Command::Probe(a) => run::probe(&a),
        Command::Activations(a) => run::activations(&a),
        Command::Trace(a) => trace::trace(&a),
        Command::EditFact(a) => edit_fact::edit_fact(&a),
        Command::Ablate(a) => ablate::ablate(&a),
        Command::Adapter { command } => adapter::run(&command),
        Command::ControlVector(a) => control_vector::control_vector(&a),
    }
}

pub(crate) use tensor_surgeon_core::units::human_bytes;

/// A borderless, left-aligned table.
pub(crate) fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

/// Prints a JSON value.
pub(crate) fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
