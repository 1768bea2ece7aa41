//! `project` (PCA of a tensor's rows) and `tokens` (search, nearest tokens, compare two).

use super::stats::{overlay_of, progress_bar};
use super::{print_json, table};
use serde_json::json;
use std::path::PathBuf;
use tensor_surgeon_core::view::ViewSpec;
use tensor_surgeon_engine::project::{self, Input};
use tensor_surgeon_engine::tokens::{self, Vocab};
use tensor_surgeon_engine::{Error, Model, Result};

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
    #[arg(long)]
    json: bool,
}

pub fn project(a: &ProjectArgs) -> Result<()> {
    let model = Model::open(&a.model)?;
    let overlay = overlay_of(&model, &a.patch)?;
    let vocab = Vocab::find(&a.model, a.tokenizer.as_deref())?;
    let (shard, info) = model.get(&a.tensor)?;
    if info.shape.len() < 2 {
        return Err(Error::Usage(format!(
            "{} is {}-D: projections need a 2-D view",
            info.name,
            info.shape.len()
        )));
    }
    let source = overlay.view(&info.name, shard.data(info));
    let spec = ViewSpec::default_for(&info.shape);
    let input = Input {
        dtype: info.dtype,
        shape: &info.shape,
        spec: spec.clone(),
        source: &source,
        columns: a.columns,
        normalize: a.normalize,
    };
    let bar = progress_bar(1, "projecting");
    let p = project::project(&input, a.dims as usize, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
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
        print_json(&json!({
            "tensor": info.name,
            "n": p.n,
            "dims": p.dims,
            "explained_variance": p.explained_variance,
            "explained_variance_ratio": p.explained_ratio,
            "components": p.components,
            "points": points,
            "labels": labels,
        }));
        return Ok(());
    }
    println!(
        "{}: {} {} projected on {k} components{}",
        info.name,
        p.n,
        if a.columns { "columns" } else { "rows" },
        if a.normalize {
            " (unit-norm points)"
        } else {
            ""
        }
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
    let vocab = Vocab::find(&a.model, a.tokenizer.as_deref())?.ok_or_else(|| {
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
    let source = overlay.view(&info.name, shard.data(info));
    let (rows, cols) = (info.shape[0], info.shape[1]);
    let label = |r: u64| vocab.label(r).map(str::to_string);
    if let Some(pair) = &a.compare {
        let (x, y) = (
            vocab.resolve_token(&pair[0])?,
            vocab.resolve_token(&pair[1])?,
        );
        let u = tokens::row_values(info.dtype, cols, &source, x);
        let v = tokens::row_values(info.dtype, cols, &source, y);
        let dot: f64 = u.iter().zip(&v).map(|(p, q)| p * q).sum();
        let nu = u.iter().map(|p| p * p).sum::<f64>().sqrt();
        let nv = v.iter().map(|q| q * q).sum::<f64>().sqrt();
        let l2 = u
            .iter()
            .zip(&v)
            .map(|(p, q)| (q - p) * (q - p))
            .sum::<f64>()
            .sqrt();
        let cosine = dot / (nu * nv);
        if a.json {
            print_json(
                &json!({"tensor": info.name, "a": x, "b": y, "a_token": label(x),
                "b_token": label(y), "cosine": cosine, "l2": l2}),
            );
        } else {
            println!(
                "{:?} (#{x}) vs {:?} (#{y}) in {}: cosine {cosine:.6}, L2 distance {l2:.6}",
                label(x).unwrap_or_default(),
                label(y).unwrap_or_default(),
                info.name
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
    let (mut near, _) = tokens::nearest(info.dtype, rows, cols, &source, row, k, None)?;
    for n in &mut near {
        n.token = label(n.row);
    }
    if a.json {
        print_json(
            &json!({"tensor": info.name, "row": row, "token": label(row), "neighbors": near}),
        );
    } else {
        println!(
            "nearest to {:?} (#{row}) in {}:",
            label(row).unwrap_or_default(),
            info.name
        );
        let mut t = table(&["row", "token", "cosine"]);
        for n in near {
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
