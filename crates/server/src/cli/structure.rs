//! `project` (PCA, t-SNE or UMAP of a tensor's rows) and `tokens` (search, nearest tokens,
//! compare two).

use super::{print_json, table};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_engine::adapter::overlay_of;
use tensor_surgeon_engine::{Error, Result};
use tensor_surgeon_infer::tokens::{self, Vocab};
use tensor_surgeon_layout::{self, Input};
use tensor_surgeon_layout::{Live, Report};
use tensor_surgeon_store::Model;
use tensor_surgeon_wire::{Init, LayoutParams, LayoutReport, Method, Nearest, TokenComparison};

/// Options of `project`.
#[derive(clap::Args, Debug)]
pub struct ProjectArgs {
    model: PathBuf,
    tensor: String,
    /// Components: 2 or 3.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=3))]
    dims: u32,
    /// Project the columns instead of the rows.
    #[arg(long)]
    columns: bool,
    /// Scale every row to unit L2 norm before centring (cosine geometry).
    #[arg(long)]
    normalize: bool,
    /// See the model through these patches; repeatable.
    #[arg(long)]
    patch: Vec<PathBuf>,
    /// Label vocabulary rows with this tokenizer.json (default: the one beside the model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// How to lay the points out.
    #[arg(long, value_enum, default_value_t = MethodArg::Pca)]
    method: MethodArg,
    /// t-SNE: effective neighbours.
    #[arg(long, default_value_t = LayoutParams::default().perplexity)]
    perplexity: f64,
    /// t-SNE: attraction factor of the first 250 steps.
    #[arg(long, default_value_t = LayoutParams::default().early_exaggeration)]
    exaggeration: f64,
    /// t-SNE: step size (default: auto, per phase: points / exaggeration, then points; at
    /// least 200).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Optimisation steps (default: t-SNE 750; UMAP 500, or 200 above 10,000 points).
    #[arg(long)]
    iterations: Option<u32>,
    /// UMAP: neighbours per point (the point included).
    #[arg(long, default_value_t = LayoutParams::default().n_neighbors)]
    neighbors: u32,
    /// UMAP: how tightly points may pack (0 to 1).
    #[arg(long, default_value_t = LayoutParams::default().min_dist)]
    min_dist: f64,
    /// How a t-SNE or UMAP layout starts (auto: t-SNE PCA, UMAP spectral).
    #[arg(long, value_enum, default_value_t = InitArg::Auto)]
    init: InitArg,
    /// The same seed gives the same layout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Reduce to this many principal components before t-SNE or UMAP (0: every feature).
    #[arg(long, default_value_t = LayoutParams::default().pca_dims)]
    pca_dims: u32,
    /// 3-D t-SNE on every core: sooner, but not reproducible bit for bit (2-D t-SNE and UMAP
    /// always use every core and stay reproducible).
    #[arg(long)]
    parallel: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MethodArg {
    Pca,
    Tsne,
    Umap,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum InitArg {
    Auto,
    Pca,
    Spectral,
    Random,
}

impl ProjectArgs {
    fn method(&self) -> Method {
        match self.method {
            MethodArg::Pca => Method::Pca,
            MethodArg::Tsne => Method::Tsne,
            MethodArg::Umap => Method::Umap,
        }
    }

    fn params(&self) -> LayoutParams {
        LayoutParams {
            perplexity: self.perplexity,
            early_exaggeration: self.exaggeration,
            learning_rate: self.learning_rate,
            iterations: self.iterations,
            n_neighbors: self.neighbors,
            min_dist: self.min_dist,
            init: match self.init {
                InitArg::Auto => Init::Auto,
                InitArg::Pca => Init::Pca,
                InitArg::Spectral => Init::Spectral,
                InitArg::Random => Init::Random,
            },
            seed: self.seed,
            pca_dims: self.pca_dims,
            parallel: self.parallel,
        }
    }
}

/// A spinner with what a layout is doing: its phase, step and loss.
fn layout_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:12} {bar:40} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

pub fn project(a: &ProjectArgs) -> Result<()> {
    let model = Model::open(&a.model)?;
    let overlay = overlay_of(&model, &a.patch)?;
    let vocab = Vocab::for_model(&model.path, a.tokenizer.as_deref(), model.gguf())?;
    let (shard, info) = model.get(&a.tensor)?;
    if info.shape.len() < 2 {
        return Err(Error::Usage(format!(
            "{} is {}-D: projections need a 2-D view",
            info.name,
            info.shape.len()
        )));
    }
    let base = shard.data(info)?;
    let source = overlay.view(info, &*base);
    let spec = ViewSpec::default_for(&info.shape);
    let input = Input {
        dtype: info.dtype,
        shape: &info.shape,
        spec: spec.clone(),
        source: &source,
        columns: a.columns,
        normalize: a.normalize,
    };
    let method = a.method();
    let bar = layout_bar();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let first_frame = OnceLock::new();
    // Seconds spent in each phase, in order.
    let phases: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());
    let report = |r: Report<'_>| {
        if r.points.is_some() {
            first_frame.get_or_init(|| started.elapsed().as_secs_f64());
        }
        {
            let mut p = phases.lock().unwrap_or_else(|e| e.into_inner());
            let now = started.elapsed().as_secs_f64();
            if p.last().is_none_or(|(name, _)| *name != r.phase.as_str()) {
                p.push((r.phase.as_str(), now));
            }
        }
        bar.set_length(r.total.max(1));
        bar.set_position(r.done);
        let loss = r.loss.map(|l| format!(" {l:.4}")).unwrap_or_default();
        bar.set_message(format!("{}{loss}", r.phase.as_str()));
    };
    let live = Live {
        report: &report,
        stop: &stop,
    };
    let p = tensor_surgeon_layout::layout(&input, a.dims as usize, method, &a.params(), &live)?;
    bar.finish_and_clear();
    let dim = if a.columns { spec.x_dim } else { spec.y_dim };
    let size = dim.map_or(0, |d| info.shape[d as usize]);
    let label = |i: u64| {
        vocab
            .as_ref()
            .filter(|v| v.indexes(size))
            .and_then(|v| v.label(i))
            .map(str::to_string)
    };
    let k = p.dims as usize;
    if a.json {
        let points: Vec<Vec<f32>> = p.points.chunks(k).map(<[f32]>::to_vec).collect();
        let labels: Option<Vec<Option<String>>> = vocab
            .as_ref()
            .filter(|v| v.indexes(size))
            .map(|_| p.index.iter().map(|&i| label(i)).collect());
        let phase_started_seconds = phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&(n, t)| (n.to_string(), t))
            .collect();
        print_json(&json!(LayoutReport {
            tensor: info.name.clone(),
            method: p.method,
            n: p.n,
            dims: p.dims,
            iterations: p.iterations,
            loss: p.loss,
            first_frame_seconds: first_frame.get().copied(),
            phase_started_seconds,
            explained_variance: p.explained_variance,
            explained_variance_ratio: p.explained_ratio,
            components: p.components,
            points,
            labels,
        }));
        return Ok(());
    }
    let what = if a.columns { "columns" } else { "rows" };
    let unit = if a.normalize {
        " (unit-norm points)"
    } else {
        ""
    };
    if method == Method::Pca {
        println!(
            "{}: {} {what} projected on {k} components{unit}",
            info.name, p.n
        );
        let mut t = table(&["component", "explained variance", "ratio"]);
        for c in 0..k {
            t.add_row(vec![
                format!("PC{}", c + 1),
                tensor_surgeon_core::dtype::pretty_f64(p.explained_variance[c]),
                format!("{:.2}%", p.explained_ratio[c] * 100.0),
            ]);
        }
        println!("{t}");
    } else {
        println!(
            "{}: {} {what} laid out by {} in {k} dims{unit}: {} steps, {} {}",
            info.name,
            p.n,
            method.label(),
            p.iterations,
            if method == Method::Tsne {
                "KL divergence"
            } else {
                "cross-entropy per edge"
            },
            p.loss.map(|l| format!("{l:.4}")).unwrap_or_default()
        );
    }
    let mut t = table(&["index", "token", "coordinates"]);
    for (i, pt) in p.points.chunks(k).enumerate().take(10) {
        let idx = p.index[i];
        t.add_row(vec![
            idx.to_string(),
            label(idx).map(|l| format!("{l:?}")).unwrap_or_default(),
            format!("{pt:?}"),
        ]);
    }
    println!("{t}");
    if p.n > 10 {
        println!("… {} more points (use --json for all)", p.n - 10);
    }
    Ok(())
}

/// Options of `tokens`.
#[derive(clap::Args, Debug)]
pub struct TokensArgs {
    model: PathBuf,
    /// The token's nearest rows by cosine similarity: a token text (`' Paris'`) or `#ID`.
    #[arg(long, allow_hyphen_values = true)]
    nearest: Option<String>,
    /// Compare two tokens: cosine, L2 distance.
    #[arg(long, num_args = 2, value_names = ["A", "B"], allow_hyphen_values = true)]
    compare: Option<Vec<String>>,
    /// Tokens matching a text.
    #[arg(long, allow_hyphen_values = true)]
    find: Option<String>,
    /// Neighbours to list.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// The [vocab, hidden] matrix (default: the embedding).
    #[arg(long)]
    tensor: Option<String>,
    /// See the model through these patches; repeatable.
    #[arg(long)]
    patch: Vec<PathBuf>,
    /// The tokenizer.json (default: the one beside the model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn tokens(a: &TokensArgs) -> Result<()> {
    let model = Model::open(&a.model)?;
    let vocab =
        Vocab::for_model(&model.path, a.tokenizer.as_deref(), model.gguf())?.ok_or_else(|| {
            Error::Usage(format!(
                "no tokenizer.json beside {}; pass --tokenizer PATH",
                a.model.display()
            ))
        })?;
    if let Some(text) = &a.find {
        let hits = vocab.search(text, a.k.max(1));
        if a.json {
            print_json(&json!(hits));
        } else {
            for h in hits {
                println!("{:>8}  {:?}", h.id, h.token);
            }
        }
        return Ok(());
    }
    let name = match &a.tensor {
        Some(t) => t.clone(),
        None => model
            .tensors()
            .map(|(_, t)| t)
            .filter(|t| t.shape.len() == 2 && vocab.indexes(t.shape[0]))
            .max_by_key(|t| t.name.contains("embed"))
            .map(|t| t.name.clone())
            .ok_or_else(|| {
                Error::Usage("no [vocab, hidden] matrix in the model; pass --tensor".into())
            })?,
    };
    let overlay = overlay_of(&model, &a.patch)?;
    let (shard, info) = model.get(&name)?;
    if info.shape.len() != 2 || !vocab.indexes(info.shape[0]) {
        return Err(Error::Usage(format!(
            "{} has shape {:?}; token lookups need [vocab ({}), hidden]",
            info.name,
            info.shape,
            vocab.size()
        )));
    }
    let base = shard.data(info)?;
    let source = overlay.view(info, &*base);
    let (rows, cols) = (info.shape[0], info.shape[1]);
    let label = |r: u64| vocab.label(r).map(str::to_string);
    if let Some(pair) = &a.compare {
        let (x, y) = (
            vocab.resolve_token(&pair[0])?,
            vocab.resolve_token(&pair[1])?,
        );
        let c = tokens::compare_rows(info.dtype, cols, &source, x, y);
        let comparison = TokenComparison {
            tensor: info.name.clone(),
            a: x,
            b: y,
            a_token: label(x),
            b_token: label(y),
            cosine: c.cosine,
            l2: c.l2,
            delta: c.delta,
        };
        if a.json {
            print_json(&json!(comparison));
        } else {
            println!(
                "{:?} (#{x}) vs {:?} (#{y}) in {}: cosine {:.6}, L2 distance {:.6}",
                label(x).unwrap_or_default(),
                label(y).unwrap_or_default(),
                info.name,
                comparison.cosine,
                comparison.l2
            );
        }
        return Ok(());
    }
    let Some(text) = &a.nearest else {
        return Err(Error::Usage(
            "say what to do: --nearest TOKEN, --compare A B or --find TEXT".into(),
        ));
    };
    let row = vocab.resolve_token(text)?;
    let k = a.k.clamp(1, 1000);
    let (mut neighbors, _) = tokens::nearest(info.dtype, rows, cols, &source, row, k, None)?;
    for n in &mut neighbors {
        n.token = label(n.row);
    }
    let near = Nearest {
        tensor: info.name.clone(),
        row,
        token: label(row),
        neighbors,
    };
    if a.json {
        print_json(&json!(near));
    } else {
        println!(
            "nearest to {:?} (#{row}) in {}:",
            label(row).unwrap_or_default(),
            info.name
        );
        let mut t = table(&["row", "token", "cosine"]);
        for n in near.neighbors {
            t.add_row(vec![
                n.row.to_string(),
                format!("{:?}", n.token.unwrap_or_default()),
                format!("{:.6}", n.cosine),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}
