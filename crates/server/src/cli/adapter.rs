//! `adapter export` and `adapter extract`: low-rank edits leaving as LoRA adapters (PEFT's
//! folder, llama.cpp's GGUF).

use super::{print_json, table};
use std::path::PathBuf;
use tensor_surgeon_engine::adapter::{self, Other, RankRule};
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_store::adapter::AdapterFormat;
use tensor_surgeon_store::Model;

/// `--format` of an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AdapterFormatArg {
    /// A PEFT folder: adapter_config.json + adapter_model.safetensors.
    Peft,
    /// A llama.cpp GGUF adapter.
    Gguf,
}

impl From<AdapterFormatArg> for AdapterFormat {
    fn from(f: AdapterFormatArg) -> AdapterFormat {
        match f {
            AdapterFormatArg::Peft => AdapterFormat::Peft,
            AdapterFormatArg::Gguf => AdapterFormat::Gguf,
        }
    }
}

/// `tensor-surgeon adapter …`.
#[derive(clap::Subcommand, Debug)]
pub enum AdapterCommand {
    /// Write a patch's low-rank entries (fact edits, MEMIT, ablations, a loaded adapter) as a
    /// LoRA adapter for MODEL, at scale 1 whatever the reader assumes.
    Export {
        model: PathBuf,
        patch: PathBuf,
        /// A folder (PEFT) or a .gguf file (llama.cpp).
        #[arg(long)]
        out: PathBuf,
        /// The format (default: gguf when OUT ends in .gguf, else peft).
        #[arg(long, value_enum)]
        format: Option<AdapterFormatArg>,
        #[arg(long)]
        json: bool,
    },
    /// Turn a difference into a LoRA adapter: per changed matrix, a truncated SVD of OTHER −
    /// BASE (OTHER: a model with the same tensors, or a patch or adapter of BASE).
    Extract {
        base: PathBuf,
        other: PathBuf,
        /// Keep at most this many singular values per matrix.
        #[arg(
            long,
            required_unless_present = "tolerance",
            conflicts_with = "tolerance"
        )]
        rank: Option<usize>,
        /// Keep the fewest singular values whose dropped energy (share of Σσ²) is at most this.
        #[arg(long)]
        tolerance: Option<f64>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        format: Option<AdapterFormatArg>,
        /// Only tensors whose name this regular expression matches.
        #[arg(long)]
        include: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Prints a table of modules, then what was skipped and the files written.
fn written(
    table: &comfy_table::Table,
    skipped: &[tensor_surgeon_wire::SkippedTensor],
    files: &[String],
) {
    println!("{table}");
    for s in skipped {
        eprintln!("skipped {}: {}", s.tensor, s.reason);
    }
    for f in files {
        println!("wrote {f}");
    }
}

pub fn run(command: &AdapterCommand) -> Result<()> {
    match command {
        AdapterCommand::Export {
            model,
            patch,
            out,
            format,
            json,
        } => {
            use tensor_surgeon_store::patch_files::{self, Loaded};
            let model = Model::open(model)?;
            let loaded = adapter::load_within(patch, Some(&model))?;
            // The factors as the file has them; checking the patch against the model turns
            // low-rank entries into bytes.
            let raw = match &loaded {
                Loaded::Json(p) => Some(p.clone()),
                Loaded::Compact(_) => None,
            };
            let checked =
                patch_files::resolve(patch, loaded, &model, None)?.map_err(|conflicts| {
                    Error::from(tensor_surgeon_store::StoreError::Conflicts { conflicts })
                })?;
            let factors = raw.unwrap_or(checked);
            let format = adapter::format_for(out, format.map(Into::into));
            let report = adapter::export(&model, &factors, format, out)?;
            if *json {
                print_json(&serde_json::to_value(&report).unwrap_or_default());
                return Ok(());
            }
            let mut t = table(&["tensor", "as", "rank"]);
            for m in &report.modules {
                t.add_row(vec![m.tensor.clone(), m.named.clone(), m.rank.to_string()]);
            }
            written(&t, &report.skipped, &report.files);
            Ok(())
        }
        AdapterCommand::Extract {
            base,
            other,
            rank,
            tolerance,
            out,
            format,
            include,
            json,
        } => {
            let rule = match (rank, tolerance) {
                (Some(r), _) => RankRule::Rank(*r),
                (None, Some(t)) => RankRule::Tolerance(*t),
                (None, None) => return Err(Error::Usage("give --rank or --tolerance".into())),
            };
            let include = include
                .as_deref()
                .map(regex_lite::Regex::new)
                .transpose()
                .map_err(|e| Error::Usage(format!("--include: {e}")))?;
            let base_model = Model::open(base)?;
            let format = adapter::format_for(out, format.map(Into::into));
            // OTHER is a model unless it reads as a patch or an adapter.
            let report = match Model::open(other) {
                Ok(m) if !adapter::is_adapter(other) => adapter::extract(
                    &base_model,
                    Other::Model(&m),
                    rule,
                    include.as_ref(),
                    format,
                    out,
                )?,
                _ => {
                    let overlay = adapter::overlay_of(&base_model, std::slice::from_ref(other))?;
                    adapter::extract(
                        &base_model,
                        Other::Overlay(&overlay),
                        rule,
                        include.as_ref(),
                        format,
                        out,
                    )?
                }
            };
            if *json {
                print_json(&serde_json::to_value(&report).unwrap_or_default());
                return Ok(());
            }
            let mut t = table(&["tensor", "rank", "relative error", "dropped energy"]);
            for m in &report.modules {
                t.add_row(vec![
                    m.tensor.clone(),
                    m.rank.to_string(),
                    format!("{:.6}", m.relative_error),
                    format!("{:.3e}", m.dropped_energy),
                ]);
            }
            written(&t, &report.skipped, &report.files);
            Ok(())
        }
    }
}
