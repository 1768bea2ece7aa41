//! UMAP (McInnes, Healy & Melville 2018), computed as umap-learn computes it: the fuzzy
//! neighbour graph (smooth kNN distances, fuzzy union), the `a, b` curve fitted to `min_dist`,
//! a spectral or PCA start scaled to [0, 10], and stochastic gradient descent with negative
//! sampling on the edges' epoch schedule.
//!
//! Our own rather than the `umap-rs` crate's: that one draws its negative samples from an
//! unseeded thread RNG and moves points from several threads without synchronisation, so no
//! seed gives the same layout twice (nor does umap-learn's parallel descent). Here the
//! descent runs on every core and a seed still gives one layout, bit for bit, whatever the
//! number of threads: within an epoch each point moves only itself, against the others'
//! places at the epoch's start, with negative samples drawn from its own seeded stream.

use super::knn::Knn;
use super::tsne::FRAME_GAP;
use super::umap_graph::{find_ab, fuzzy_graph, Graph};
use super::{Live, Outcome, Phase, Report};
use crate::error::{LayoutError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tensor_surgeon_wire::Init;

/// Negative samples per positive one (umap-learn's default).
const NEGATIVE_RATE: f64 = 5.0;
/// Repulsion weight (umap-learn's `repulsion_strength`).
const GAMMA: f32 = 1.0;
/// The spread of the embedded points (umap-learn's default).
const SPREAD: f32 = 1.0;
/// Point pairs sampled to estimate the repulsive part of the loss.
const LOSS_SAMPLES: usize = 1 << 15;

/// What a run is asked to do.
pub(super) struct Settings {
    /// Neighbours per point, the point itself included (umap-learn's meaning).
    pub n_neighbors: usize,
    pub min_dist: f32,
    pub steps: Option<usize>,
    pub init: Init,
    pub seed: u64,
}

/// The default number of epochs (umap-learn's).
pub fn default_steps(n: usize) -> usize {
    if n <= 10_000 {
        500
    } else {
        200
    }
}

/// umap-learn's start: scaled so the largest |coordinate| is 10, plus noise of std 1e-4.
fn noisy_scale(points: &mut [f32], rng: &mut ChaCha8Rng) {
    let big = points.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if big > 0.0 { 10.0 / big } else { 1.0 };
    let noise = Normal::new(0.0f32, 1e-4).unwrap_or_else(|_| unreachable!("a valid std"));
    for v in points.iter_mut() {
        *v = *v * scale + noise.sample(rng);
    }
}

/// Each coordinate rescaled to [0, 10] (umap-learn does this before the descent).
fn to_box(points: &mut [f32], dims: usize) {
    for c in 0..dims {
        let (lo, hi) = points
            .iter()
            .skip(c)
            .step_by(dims)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let span = hi - lo;
        for v in points.iter_mut().skip(c).step_by(dims) {
            *v = if span > 0.0 {
                10.0 * (*v - lo) / span
            } else {
                5.0
            };
        }
    }
}

/// The edges the descent samples, grouped by head point (`starts`, CSR), with their
/// schedules.
struct Schedule {
    starts: Vec<usize>,
    head: Vec<u32>,
    tail: Vec<u32>,
    weight: Vec<f32>,
    every: Vec<f64>,
    every_negative: Vec<f64>,
    /// Per edge: the epochs of its next positive and next negative samples.
    next: Vec<[f64; 2]>,
}

fn schedule(g: &Graph, n: usize, steps: usize) -> Schedule {
    let max = g.vals.iter().fold(0.0f32, |m, &v| m.max(v));
    let keep = max / steps as f32;
    let (mut head, mut tail, mut weight) = (Vec::new(), Vec::new(), Vec::new());
    let mut starts = Vec::with_capacity(n + 1);
    for i in 0..n {
        starts.push(head.len());
        for e in g.rows[i]..g.rows[i + 1] {
            if g.vals[e] >= keep {
                head.push(i as u32);
                tail.push(g.cols[e]);
                weight.push(g.vals[e]);
            }
        }
    }
    starts.push(head.len());
    let every: Vec<f64> = weight
        .iter()
        .map(|&w| {
            let samples = steps as f64 * f64::from(w) / f64::from(max);
            if samples > 0.0 {
                steps as f64 / samples
            } else {
                -1.0
            }
        })
        .collect();
    let every_negative: Vec<f64> = every.iter().map(|e| e / NEGATIVE_RATE).collect();
    Schedule {
        starts,
        head,
        tail,
        weight,
        next: every
            .iter()
            .zip(&every_negative)
            .map(|(&p, &q)| [p, q])
            .collect(),
        every,
        every_negative,
    }
}

/// `x^b` and `x^(b-1)` from one logarithm.
#[inline]
fn powers(x: f32, b: f32) -> (f32, f32) {
    let pb = (b * x.ln()).exp();
    (pb, pb / x)
}

/// A point's negative samples in one epoch: SplitMix64 from (seed, epoch, point), so every
/// point draws the same stream however the points are shared among threads.
struct Draws(u64);

impl Draws {
    fn new(seed: u64, epoch: usize, point: usize) -> Self {
        let mut d = Draws(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        d.0 ^= (point as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        d.next();
        d
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-32 for any layout's `n`).
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next() >> 32) * n as u128) >> 32) as usize
    }
}

/// Heads per parallel task.
const HEADS_PER_TASK: usize = 512;

/// One epoch of the descent (umap-learn's `_optimize_layout_euclidean_single_epoch`), for
/// `D`-dimensional layouts, on every core and still the same for a seed: each point moves
/// only itself, through its own edges in order, against where the other points stood when
/// the epoch began (`then`). An edge's pull is applied twice: umap-learn moves both ends of
/// each of the two directed copies of a pair, so each end is pulled twice per sample.
#[allow(clippy::too_many_arguments)]
fn epoch<const D: usize>(
    y: &mut [f32],
    then: &mut Vec<f32>,
    n: usize,
    s: &mut Schedule,
    (a, b): (f32, f32),
    alpha: f32,
    epoch: usize,
    seed: u64,
) {
    then.clear();
    then.extend_from_slice(y);
    let then = &*then;
    let clip = |v: f32| v.clamp(-4.0, 4.0);
    let at = |i: usize| -> [f32; D] {
        let mut p = [0.0; D];
        p.copy_from_slice(&then[i * D..(i + 1) * D]);
        p
    };
    let now = epoch as f64;
    // Each task's points and the schedules of their edges, as disjoint slices.
    let mut tasks = Vec::with_capacity(n.div_ceil(HEADS_PER_TASK));
    let (mut points, mut next) = (&mut y[..], &mut s.next[..]);
    for first in (0..n).step_by(HEADS_PER_TASK) {
        let last = (first + HEADS_PER_TASK).min(n);
        let (p, rest) = points.split_at_mut((last - first) * D);
        let (e, more) = next.split_at_mut(s.starts[last] - s.starts[first]);
        tasks.push((first, p, e));
        (points, next) = (rest, more);
    }
    let (starts, tail, every, every_negative) = (&s.starts, &s.tail, &s.every, &s.every_negative);
    tasks.into_par_iter().for_each(|(first, points, next)| {
        let base = starts[first];
        for (off, point) in points.chunks_exact_mut(D).enumerate() {
            let j = first + off;
            let mut draws = Draws::new(seed, epoch, j);
            let mut current = [0.0f32; D];
            current.copy_from_slice(point);
            for e in starts[j]..starts[j + 1] {
                let state = &mut next[e - base];
                if state[0] > now {
                    continue;
                }
                let other = at(tail[e] as usize);
                let mut d2 = 0.0f32;
                for c in 0..D {
                    d2 += (current[c] - other[c]) * (current[c] - other[c]);
                }
                if d2 > 0.0 {
                    let (pb, pb1) = powers(d2, b);
                    let coeff = -2.0 * a * b * pb1 / (a * pb + 1.0);
                    for c in 0..D {
                        current[c] += 2.0 * clip(coeff * (current[c] - other[c])) * alpha;
                    }
                }
                state[0] += every[e];
                let negatives = ((now - state[1]) / every_negative[e]).max(0.0) as usize;
                for _ in 0..negatives {
                    let k = draws.below(n);
                    if k == j {
                        continue;
                    }
                    let other = at(k);
                    let mut d2 = 0.0f32;
                    for c in 0..D {
                        d2 += (current[c] - other[c]) * (current[c] - other[c]);
                    }
                    if d2 > 0.0 {
                        let (pb, _) = powers(d2, b);
                        let coeff = 2.0 * GAMMA * b / ((0.001 + d2) * (a * pb + 1.0));
                        for c in 0..D {
                            current[c] += clip(coeff * (current[c] - other[c])) * alpha;
                        }
                    }
                }
                state[1] += negatives as f64 * every_negative[e];
            }
            point.copy_from_slice(&current);
        }
    });
}

/// The fuzzy cross-entropy per edge of a layout: the edges' own terms (from an even sample
/// of them on large graphs), and the non-edges' repulsive term estimated from sampled pairs.
fn loss(
    y: &[f32],
    dims: usize,
    n: usize,
    s: &Schedule,
    (a, b): (f32, f32),
    pairs: &[(u32, u32)],
) -> f64 {
    let v = |i: usize, j: usize| -> f64 {
        let d2: f32 = (0..dims)
            .map(|c| (y[i * dims + c] - y[j * dims + c]).powi(2))
            .sum();
        1.0 / (1.0 + f64::from(a) * f64::from(d2).powf(f64::from(b)))
    };
    let eps = 1e-4;
    // Every edge up to LOSS_SAMPLES of them, else an even stride through them.
    let stride = s.head.len().div_ceil(LOSS_SAMPLES).max(1);
    let mut edges = 0.0;
    let mut counted = 0usize;
    for e in (0..s.head.len()).step_by(stride) {
        let w = f64::from(s.weight[e]);
        let q = v(s.head[e] as usize, s.tail[e] as usize).clamp(eps, 1.0 - eps);
        edges += -w * q.ln() - (1.0 - w) * (1.0 - q).ln();
        counted += 1;
    }
    let edges = edges * s.head.len() as f64 / counted.max(1) as f64;
    let repel = pairs
        .iter()
        .map(|&(i, j)| -(1.0 - v(i as usize, j as usize)).max(eps).ln())
        .sum::<f64>()
        / pairs.len() as f64;
    let m = s.head.len().max(1) as f64;
    (edges + repel * (n as f64 * (n as f64 - 1.0) - m)) / m
}

/// Lays the points out from their neighbours; `pca` is the points' first `dims` principal
/// components (the PCA start).
pub(super) fn run(
    knn: &Knn,
    n: usize,
    dims: usize,
    pca: &[f32],
    s: &Settings,
    live: &Live<'_>,
) -> Result<Outcome> {
    if !(2..=200).contains(&s.n_neighbors) || s.n_neighbors > n {
        return Err(LayoutError::Parameter(format!(
            "UMAP needs 2 to 200 neighbours, at most the {n} points; {} asked",
            s.n_neighbors
        )));
    }
    if !(0.0..=SPREAD).contains(&s.min_dist) {
        return Err(LayoutError::Parameter(format!(
            "min_dist must be between 0 and {SPREAD}, not {}",
            s.min_dist
        )));
    }
    let steps = s.steps.unwrap_or_else(|| default_steps(n)).max(1);
    let g = fuzzy_graph(knn, n, s.n_neighbors);
    let ab = find_ab(SPREAD, s.min_dist);
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut y = match s.init {
        Init::Auto | Init::Spectral => {
            super::spectral::start(&g.rows, &g.cols, &g.vals, n, dims, s.seed)
        }
        Init::Pca => pca.to_vec(),
        Init::Random => (0..n * dims)
            .map(|_| rng.random_range(-10.0..10.0))
            .collect(),
    };
    if y.len() != n * dims || y.iter().any(|v| !v.is_finite()) {
        // The spectral start failed (it can on a graph in many pieces): PCA, as umap-learn
        // falls back to random.
        y = pca.to_vec();
    }
    if !matches!(s.init, Init::Random) {
        noisy_scale(&mut y, &mut rng);
    }
    to_box(&mut y, dims);
    let mut sched = schedule(&g, n, steps);
    let pairs: Vec<(u32, u32)> = (0..LOSS_SAMPLES)
        .map(|_| {
            let i = rng.random_range(0..n as u32);
            (i, (i + rng.random_range(1..n as u32)) % n as u32)
        })
        .collect();
    let mut shown = Instant::now();
    let mut done = 0;
    let mut stopped = false;
    let mut last_loss = None;
    let mut then = Vec::with_capacity(y.len());
    let draws_seed = rng.random::<u64>();
    for t in 0..steps {
        let alpha = 1.0 - t as f32 / steps as f32;
        if dims == 3 {
            epoch::<3>(&mut y, &mut then, n, &mut sched, ab, alpha, t, draws_seed);
        } else {
            epoch::<2>(&mut y, &mut then, n, &mut sched, ab, alpha, t, draws_seed);
        }
        done = t + 1;
        stopped = live.stop.load(Ordering::Relaxed) && done < steps;
        if stopped || done == steps || shown.elapsed() >= FRAME_GAP {
            let l = loss(&y, dims, n, &sched, ab, &pairs);
            last_loss = Some(l);
            (live.report)(Report {
                phase: Phase::Optimising,
                done: done as u64,
                total: steps as u64,
                points: Some(&y),
                loss: Some(l),
                points_are: None,
            });
            shown = Instant::now();
        }
        if stopped {
            break;
        }
    }
    // The last epoch always reports: its loss is the layout's.
    let loss = last_loss.unwrap_or_else(|| loss(&y, dims, n, &sched, ab, &pairs));
    Ok(Outcome {
        points: y,
        steps: done as u32,
        total_steps: steps as u32,
        loss: Some(loss),
        stopped,
    })
}
