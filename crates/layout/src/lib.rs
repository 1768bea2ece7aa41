//! Projections of the rows (or columns) of a 2-D view: PCA, t-SNE and UMAP.
//!
//! t-SNE and UMAP follow the references' pipeline (openTSNE, umap-learn): the points reduced
//! to their first 50 principal components, their exact nearest neighbours, then the layout,
//! started from PCA (t-SNE) or the neighbour graph's spectrum (UMAP). Every point is laid out:
//! there is no sampling. A running layout reports frames (the points so far and the loss) and
//! stops when asked, keeping the layout it has.

pub mod error;
mod fitsne;
pub mod knn;
mod pca;
mod spectral;
pub mod svd;
mod tsne;
mod umap;
mod umap_graph;

pub use crate::error::{LayoutError, Result};
pub use pca::{project, Input};
use std::sync::atomic::AtomicBool;
use tensor_surgeon_wire::{Init, LayoutParams, Method, Projection};
pub use umap_graph::find_ab;

/// Most principal components a layout may start from.
pub const MAX_PCA_DIMS: u32 = 512;
/// Most optimisation steps a layout may ask for.
pub const MAX_STEPS: u32 = 100_000;

/// What a layout is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Reading,
    Reducing,
    Neighbours,
    Optimising,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Reading => "reading",
            Phase::Reducing => "reducing",
            Phase::Neighbours => "neighbours",
            Phase::Optimising => "optimising",
        }
    }
}

/// One report of a running layout.
pub struct Report<'a> {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
    /// The layout so far (`n x dims`), when it changed.
    pub points: Option<&'a [f32]>,
    pub loss: Option<f64>,
    /// Once, with the first points: each point's tensor index and norm.
    pub points_are: Option<(&'a [u64], &'a [f32])>,
}

/// How a running layout is watched and stopped.
pub struct Live<'a> {
    pub report: &'a (dyn Fn(Report<'_>) + Sync),
    /// Set to stop: the optimisation ends after its current step, with the layout it has.
    pub stop: &'a AtomicBool,
}

impl Live<'_> {
    fn phase(&self, phase: Phase, done: u64, total: u64) {
        (self.report)(Report {
            phase,
            done,
            total,
            points: None,
            loss: None,
            points_are: None,
        });
    }
}

/// What an optimiser ends with.
pub(crate) struct Outcome {
    pub points: Vec<f32>,
    pub steps: u32,
    pub total_steps: u32,
    pub loss: Option<f64>,
    pub stopped: bool,
}

/// Checks a layout's parameters before any work.
fn check(method: Method, p: &LayoutParams, dims: usize) -> Result<()> {
    let bad = |what: String| Err(LayoutError::Parameter(what));
    if !(2..=3).contains(&dims) {
        return bad(format!("layouts have 2 or 3 dims, not {dims}"));
    }
    if p.pca_dims > MAX_PCA_DIMS {
        return bad(format!(
            "pca_dims {} is more than {MAX_PCA_DIMS}",
            p.pca_dims
        ));
    }
    if p.iterations.is_some_and(|i| i == 0 || i > MAX_STEPS) {
        return bad(format!("iterations must be 1 to {MAX_STEPS}"));
    }
    match method {
        Method::Tsne => {
            if !(p.perplexity.is_finite() && p.perplexity >= 1.0 && p.perplexity <= 500.0) {
                return bad(format!("perplexity must be 1 to 500, not {}", p.perplexity));
            }
            if !(p.early_exaggeration.is_finite() && p.early_exaggeration >= 1.0) {
                return bad(format!(
                    "early exaggeration must be at least 1, not {}",
                    p.early_exaggeration
                ));
            }
            if p.learning_rate.is_some_and(|l| !(l.is_finite() && l > 0.0)) {
                return bad("the learning rate must be positive".into());
            }
            if p.init == Init::Spectral {
                return bad("t-SNE starts from PCA or at random, not spectral".into());
            }
        }
        Method::Umap => {
            if !(p.min_dist.is_finite()) {
                return bad("min_dist must be a number".into());
            }
        }
        Method::Pca => {}
    }
    Ok(())
}

/// faer's products and factorisations on one thread each: its own threads split reductions in
/// an order that varies from run to run, and the same input must give the same projection
/// (the work is parallel already, band by band and block by block, on rayon's threads).
pub(crate) fn deterministic() {
    faer::set_global_parallelism(faer::Par::Seq);
}

/// Lays the points out by `method` in `dims` (2 or 3) dimensions.
pub fn layout(
    input: &Input<'_>,
    dims: usize,
    method: Method,
    params: &LayoutParams,
    live: &Live<'_>,
) -> Result<Projection> {
    deterministic();
    if method == Method::Pca {
        let mut p = project(input, dims, &|done, total| {
            live.phase(Phase::Reducing, done, total)
        })?;
        p.method = Method::Pca;
        return Ok(p);
    }
    check(method, params, dims)?;
    live.phase(Phase::Reading, 0, 1);
    let reduce = params.pca_dims as usize;
    let d = pca::point_spec(input).cells().1 as usize;
    let reduced = reduce > 0 && reduce < d;
    let progress = |done, total| live.phase(Phase::Reducing, done, total);
    let pca::Features {
        x: features,
        width,
        norms,
        index,
    } = if reduced {
        let p = pca::decompose(input, reduce, &progress)?;
        pca::Features {
            x: p.points,
            width: p.k,
            norms: p.norms,
            index: p.index,
        }
    } else {
        pca::matrix(input)?
    };
    let n = norms.len();
    if n < 4 {
        return Err(LayoutError::TooFewPoints {
            method: method.label(),
            points: n,
        });
    }
    // The PCA start: the first `dims` principal components.
    let start = if reduced && width >= dims {
        first_columns(&features, width, dims)
    } else {
        let p = pca::decompose(input, dims, &progress)?;
        let mut out = vec![0.0f32; n * dims];
        for (row, scores) in out.chunks_exact_mut(dims).zip(p.points.chunks_exact(p.k)) {
            row[..p.k].copy_from_slice(scores);
        }
        out
    };
    (live.report)(Report {
        phase: Phase::Neighbours,
        done: 0,
        total: n as u64,
        points: Some(&start),
        loss: None,
        points_are: Some((&index, &norms)),
    });
    let k = match method {
        Method::Tsne => ((3.0 * params.perplexity).floor() as usize).min(n - 1),
        _ => (params.n_neighbors as usize)
            .saturating_sub(1)
            .clamp(1, n - 1),
    };
    let knn = knn::exact(
        &features,
        n,
        width,
        k,
        &|done, total| live.phase(Phase::Neighbours, done, total),
        live.stop,
    )?;
    drop(features);
    let steps = params.iterations.map(|i| i as usize);
    let out = match method {
        Method::Tsne => {
            let init = match params.init {
                Init::Random => tsne::random_init(n, dims, params.seed),
                _ => {
                    let mut s = start.clone();
                    tsne::scale_init(&mut s, dims);
                    s
                }
            };
            let settings = tsne::Settings {
                perplexity: params.perplexity as f32,
                exaggeration: params.early_exaggeration as f32,
                learning_rate: params.learning_rate.map(|l| l as f32),
                steps: steps.unwrap_or(tsne::DEFAULT_STEPS),
                parallel: params.parallel,
            };
            tsne::run(&knn, n, dims, init, &settings, params.seed, live)?
        }
        _ => {
            let settings = umap::Settings {
                n_neighbors: params.n_neighbors as usize,
                min_dist: params.min_dist as f32,
                steps,
                init: params.init,
                seed: params.seed,
            };
            umap::run(&knn, n, dims, &start, &settings, live)?
        }
    };
    Ok(Projection {
        n: n as u64,
        dims: dims as u32,
        method,
        points: out.points,
        norms,
        index,
        iterations: out.steps,
        total_iterations: out.total_steps,
        loss: out.loss,
        stopped: out.stopped,
        ..Projection::default()
    })
}

/// The first `dims` of each row's `width` values.
fn first_columns(x: &[f32], width: usize, dims: usize) -> Vec<f32> {
    x.chunks_exact(width)
        .flat_map(|r| r[..dims].iter().copied())
        .collect()
}

#[cfg(test)]
mod tests;
