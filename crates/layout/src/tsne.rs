//! t-SNE: the affinities P (perplexity-calibrated on our exact neighbours, symmetrised) from
//! the `bhtsne` crate; in 2-D our own FIt-SNE optimiser ([`super::fitsne`], on every core and
//! reproducible), in 3-D the crate's Barnes-Hut. Here: the schedule of the references
//! (openTSNE's defaults), live frames, the stop, and a KL estimate.

use super::fitsne::Interpolation;
use super::knn::Knn;
use super::{Live, Outcome, Phase, Report};
use crate::error::{LayoutError, Result};
use bhtsne::{tSNE, Neighbor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Steps of early exaggeration (openTSNE's and scikit-learn's).
pub const EXAGGERATION_STEPS: usize = 250;
/// Steps in all by default: 250 exaggerated, then 500 (openTSNE's).
pub const DEFAULT_STEPS: usize = 750;
/// Barnes-Hut accuracy in 3-D (the references' default).
const THETA: f32 = 0.5;
/// Least gain (openTSNE's `min_gain`).
const MIN_GAIN: f32 = 0.01;
/// Longest step a point takes (openTSNE's `max_step_norm`).
const MAX_STEP: f32 = 5.0;
/// Point pairs sampled to estimate the normaliser of Q.
const Z_SAMPLES: usize = 1 << 16;
/// Least time between two live frames.
pub(super) const FRAME_GAP: Duration = Duration::from_millis(150);

/// What a run is asked to do.
pub(super) struct Settings {
    pub perplexity: f32,
    pub exaggeration: f32,
    pub learning_rate: Option<f32>,
    pub steps: usize,
    /// Optimise on rayon's threads (faster, not reproducible).
    pub parallel: bool,
}

/// The unwinding payload that ends a fit the user stopped.
struct StopFit;

/// The affinities P (CSR, pristine: summing to 1) and what the KL estimate needs of them.
struct Affinity {
    rows: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f32>,
    /// `sum p log p`.
    entropy: f64,
    /// Fixed random pairs for the normaliser.
    pairs: Vec<(u32, u32)>,
}

impl Affinity {
    /// KL(P || Q) of a layout, with `Z` estimated from the sampled pairs.
    fn kl(&self, y: &[f32], dims: usize) -> f64 {
        // In f32 (a frame's loss is shown, not optimised): f64 logarithms were a tenth of the
        // optimisation's time.
        let w = |i: usize, j: usize| -> f32 {
            let d2: f32 = (0..dims)
                .map(|t| (y[i * dims + t] - y[j * dims + t]).powi(2))
                .sum();
            1.0 / (1.0 + d2)
        };
        let n = self.rows.len() - 1;
        // Per point in parallel, added up in point order.
        let rows: Vec<f64> = (0..n)
            .into_par_iter()
            .map(|i| {
                (self.rows[i]..self.rows[i + 1])
                    .filter(|&e| self.vals[e] > 0.0)
                    .map(|e| f64::from(self.vals[e]) * f64::from(w(i, self.cols[e] as usize).ln()))
                    .sum()
            })
            .collect();
        let cross: f64 = rows.iter().sum();
        let mean: f64 = self
            .pairs
            .iter()
            .map(|&(i, j)| f64::from(w(i as usize, j as usize)))
            .sum::<f64>()
            / self.pairs.len() as f64;
        let z = mean * n as f64 * (n as f64 - 1.0);
        self.entropy - cross + z.ln()
    }

    /// Each point's attraction `sum_j p_ij w_ij (y_i - y_j)` (2-D), into `out`.
    fn attraction(&self, y: &[f32], out: &mut [f32]) {
        out.par_chunks_exact_mut(2).enumerate().for_each(|(i, f)| {
            let (x0, x1) = (y[2 * i], y[2 * i + 1]);
            let (mut f0, mut f1) = (0.0f32, 0.0f32);
            for e in self.rows[i]..self.rows[i + 1] {
                let j = self.cols[e] as usize;
                let (d0, d1) = (x0 - y[2 * j], x1 - y[2 * j + 1]);
                let pw = self.vals[e] / (1.0 + d0 * d0 + d1 * d1);
                f0 += pw * d0;
                f1 += pw * d1;
            }
            f[0] = f0;
            f[1] = f1;
        });
    }
}

fn neighbours(knn: &Knn, n: usize) -> Vec<Vec<Neighbor<f32>>> {
    (0..n)
        .map(|i| {
            let (idx, dist) = knn.row(i);
            idx.iter()
                .zip(dist)
                .map(|(&j, &d)| Neighbor {
                    index: j as usize,
                    distance: d,
                })
                .collect()
        })
        .collect()
}

/// P, built by the crate exactly as the fit will build it.
fn affinity(knn: &Knn, n: usize, s: &Settings, seed: u64) -> Affinity {
    let dummy = vec![(); n];
    let mut t: tSNE<f32, (), 2> = tSNE::new(&dummy);
    t.perplexity(s.perplexity)
        .early_exaggeration(s.exaggeration)
        .epochs(0)
        .initial_embedding(vec![0.0f32; n * 2])
        .fit_sne_with_neighbors(&neighbours(knn, n));
    let p = t
        .affinities()
        .unwrap_or_else(|| unreachable!("the fit built P"));
    let entropy = p
        .values()
        .iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| f64::from(v) * f64::from(v).ln())
        .sum();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x2A11);
    let pairs = (0..Z_SAMPLES)
        .map(|_| {
            let i = rng.random_range(0..n as u32);
            let j = (i + rng.random_range(1..n as u32)) % n as u32;
            (i, j)
        })
        .collect();
    Affinity {
        rows: p.rows().to_vec(),
        cols: p.columns().to_vec(),
        vals: p.values().to_vec(),
        entropy,
        pairs,
    }
}

/// Runs t-SNE from `init` (`n x dims`).
pub(super) fn run(
    knn: &Knn,
    n: usize,
    dims: usize,
    init: Vec<f32>,
    s: &Settings,
    seed: u64,
    live: &Live<'_>,
) -> Result<Outcome> {
    if s.perplexity.is_nan() || s.perplexity <= 0.0 || (n - 1) < 3 * s.perplexity.ceil() as usize {
        return Err(LayoutError::Parameter(format!(
            "perplexity {} needs more than {} points (3 x perplexity); the view has {n}",
            s.perplexity,
            3 * s.perplexity.ceil() as usize
        )));
    }
    // The crate sums in parallel, in an order that varies from run to run, and the
    // optimisation amplifies the last bit: on one thread the same seed gives the same layout.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "t-SNE".into())
        .build()
        .map_err(LayoutError::Thread)?;
    let aff = one.install(|| affinity(knn, n, s, seed));
    if dims == 2 {
        return descend(n, init, s, &aff, live);
    }
    if !s.parallel {
        return one.install(|| optimise_in(knn, n, dims, init, s, &aff, live));
    }
    optimise_in(knn, n, dims, init, s, &aff, live)
}

fn optimise_in(
    knn: &Knn,
    n: usize,
    dims: usize,
    init: Vec<f32>,
    s: &Settings,
    aff: &Affinity,
    live: &Live<'_>,
) -> Result<Outcome> {
    match dims {
        3 => fit::<3>(knn, n, init, s, aff, live, |t, nb| {
            t.barnes_hut_with_neighbors(THETA, nb);
        }),
        _ => Err(LayoutError::Parameter(format!(
            "t-SNE lays points out in 2 or 3 dims, not {dims}"
        ))),
    }
}

/// `numpy.sign`: 0 for 0.
fn sign(v: f32) -> f32 {
    if v == 0.0 {
        0.0
    } else {
        v.signum()
    }
}

/// The 2-D optimisation: openTSNE's gradient descent (momentum, gains, steps longer than
/// [`MAX_STEP`] shortened, the layout kept centred) on [`Interpolation`]'s repulsion, on every
/// core; each step's work is per point, so the threads change the time only.
fn descend(
    n: usize,
    mut y: Vec<f32>,
    s: &Settings,
    aff: &Affinity,
    live: &Live<'_>,
) -> Result<Outcome> {
    let total = s.steps;
    let mut update = vec![0.0f32; 2 * n];
    let mut gains = vec![1.0f32; 2 * n];
    let mut attract = vec![0.0f32; 2 * n];
    let mut repel = vec![0.0f32; 2 * n];
    let mut grid = Interpolation::new();
    let mut shown = Instant::now();
    let (mut done, mut stopped, mut last_loss) = (0usize, false, None);
    'stages: for stage in stages(n, s) {
        let exaggeration = if stage.exaggerate {
            s.exaggeration
        } else {
            1.0
        };
        for _ in 0..stage.steps {
            let z = grid.repel(&y, &mut repel);
            aff.attraction(&y, &mut attract);
            let inverse_z = (1.0 / z) as f32;
            let (rate, momentum) = (stage.learning_rate, stage.momentum);
            y.par_chunks_exact_mut(2)
                .zip(update.par_chunks_exact_mut(2))
                .zip(gains.par_chunks_exact_mut(2))
                .zip(attract.par_chunks_exact(2).zip(repel.par_chunks_exact(2)))
                .for_each(|(((p, u), g), (a, r))| {
                    for c in 0..2 {
                        let gradient = exaggeration * a[c] - r[c] * inverse_z;
                        g[c] = if sign(u[c]) != sign(gradient) {
                            g[c] + 0.2
                        } else {
                            g[c] * 0.8 + MIN_GAIN
                        };
                        u[c] = momentum * u[c] - rate * g[c] * gradient;
                    }
                    let norm = (u[0] * u[0] + u[1] * u[1]).sqrt();
                    if norm > MAX_STEP {
                        u[0] *= MAX_STEP / norm;
                        u[1] *= MAX_STEP / norm;
                    }
                    p[0] += u[0];
                    p[1] += u[1];
                });
            centre(&mut y);
            done += 1;
            let stop = live.stop.load(Ordering::Relaxed) && done < total;
            if done == total || stop || shown.elapsed() >= FRAME_GAP {
                let kl = aff.kl(&y, 2);
                last_loss = Some(kl);
                (live.report)(Report {
                    phase: Phase::Optimising,
                    done: done as u64,
                    total: total as u64,
                    points: Some(&y),
                    loss: Some(kl),
                    points_are: None,
                });
                shown = Instant::now();
            }
            if stop {
                stopped = true;
                break 'stages;
            }
        }
    }
    // The last step always reports: its loss is the layout's.
    let loss = last_loss.unwrap_or_else(|| aff.kl(&y, 2));
    Ok(Outcome {
        points: y,
        steps: done as u32,
        total_steps: total as u32,
        loss: Some(loss),
        stopped,
    })
}

/// Moves the layout's mean to the origin (sums in point order).
fn centre(y: &mut [f32]) {
    let n = (y.len() / 2).max(1) as f64;
    let (mut sx, mut sy) = (0.0f64, 0.0f64);
    for p in y.chunks_exact(2) {
        sx += f64::from(p[0]);
        sy += f64::from(p[1]);
    }
    let (mx, my) = ((sx / n) as f32, (sy / n) as f32);
    y.par_chunks_exact_mut(2).for_each(|p| {
        p[0] -= mx;
        p[1] -= my;
    });
}

/// One phase of the optimisation: the early-exaggerated first, then the rest.
struct Stage {
    /// Steps done before it.
    offset: usize,
    steps: usize,
    exaggerate: bool,
    momentum: f32,
    learning_rate: f32,
}

/// The phases openTSNE runs: 250 exaggerated steps at momentum 0.5, then the rest
/// unexaggerated at momentum 0.8, each with openTSNE's "auto" learning rate for its
/// exaggeration, `max(n / exaggeration, 200)` (the crate's own default, scikit-learn's
/// `n / exaggeration / 4`, converges too slowly: its layouts are measurably less
/// trustworthy after the same 750 steps).
fn stages(n: usize, s: &Settings) -> Vec<Stage> {
    let first = EXAGGERATION_STEPS.min(s.steps);
    let rate = |exaggeration: f32| {
        s.learning_rate
            .unwrap_or((n as f32 / exaggeration).max(200.0))
    };
    let mut out = vec![Stage {
        offset: 0,
        steps: first,
        exaggerate: true,
        momentum: 0.5,
        learning_rate: rate(s.exaggeration),
    }];
    if s.steps > first {
        out.push(Stage {
            offset: first,
            steps: s.steps - first,
            exaggerate: false,
            momentum: 0.8,
            learning_rate: rate(1.0),
        });
    }
    out
}

fn fit<const D: usize>(
    knn: &Knn,
    n: usize,
    init: Vec<f32>,
    s: &Settings,
    aff: &Affinity,
    live: &Live<'_>,
    optimise: impl for<'a> Fn(&mut tSNE<'a, f32, (), D>, &[Vec<Neighbor<f32>>]),
) -> Result<Outcome> {
    let dummy = vec![(); n];
    let nbrs = neighbours(knn, n);
    let total = s.steps;
    let mut last = init;
    let mut done = 0usize;
    let mut shown = Instant::now();
    let mut stopped = false;
    for stage in stages(n, s) {
        let start = last.clone();
        let outcome = {
            let last = &mut last;
            let done = &mut done;
            let shown = &mut shown;
            let mut t: tSNE<f32, (), D> = tSNE::new(&dummy);
            t.perplexity(s.perplexity)
                .early_exaggeration(s.exaggeration)
                .epochs(stage.steps)
                // At the phase's end (never reached) while exaggerating; at once otherwise.
                .stop_lying_epoch(if stage.exaggerate { stage.steps } else { 0 })
                .momentum_switch_epoch(stage.steps)
                .momentum(stage.momentum)
                .final_momentum(stage.momentum)
                .learning_rate(stage.learning_rate)
                .initial_embedding(start);
            t.epoch_callback(move |epoch, y: &[f32]| {
                let step = stage.offset + epoch + 1;
                *done = step;
                let finished = step == total;
                let stop = live.stop.load(Ordering::Relaxed);
                if epoch + 1 == stage.steps || stop || shown.elapsed() >= FRAME_GAP {
                    last.copy_from_slice(y);
                }
                if finished || stop || shown.elapsed() >= FRAME_GAP {
                    (live.report)(Report {
                        phase: Phase::Optimising,
                        done: step as u64,
                        total: total as u64,
                        points: Some(y),
                        loss: Some(aff.kl(y, D)),
                        points_are: None,
                    });
                    *shown = Instant::now();
                }
                if stop && !finished {
                    resume_unwind(Box::new(StopFit));
                }
            });
            catch_unwind(AssertUnwindSafe(|| optimise(&mut t, &nbrs)))
        };
        match outcome {
            Ok(()) => {}
            Err(payload) if payload.is::<StopFit>() => {
                stopped = true;
                break;
            }
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(LayoutError::Failed(what));
            }
        }
    }
    let loss = aff.kl(&last, D);
    Ok(Outcome {
        points: last,
        steps: done as u32,
        total_steps: total as u32,
        loss: Some(loss),
        stopped,
    })
}

/// openTSNE's PCA start: the first components, scaled so the first has std 1e-4.
pub(super) fn scale_init(points: &mut [f32], dims: usize) {
    let n = points.len() / dims;
    let mean = points
        .iter()
        .step_by(dims)
        .map(|&v| f64::from(v))
        .sum::<f64>()
        / n as f64;
    let var = points
        .iter()
        .step_by(dims)
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let scale = if var > 0.0 { 1e-4 / var.sqrt() } else { 1.0 };
    for v in points.iter_mut() {
        *v = (f64::from(*v) * scale) as f32;
    }
}

/// A random start: normal, std 1e-4, from the seed.
pub(super) fn random_init(n: usize, dims: usize, seed: u64) -> Vec<f32> {
    use rand_distr::{Distribution, Normal};
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1e-4).unwrap_or_else(|_| unreachable!("a valid std"));
    (0..n * dims).map(|_| normal.sample(&mut rng)).collect()
}
