//! The 2-D t-SNE optimiser: FIt-SNE (Linderman et al. 2019), as openTSNE runs it, on every
//! core and still one layout per seed whatever the number of threads.
//!
//! The repulsion of every point on every other is interpolated: each point spreads four
//! charges (1, its two coordinates, its squared norm) onto a grid of 3 x 3 Lagrange nodes per
//! box, the grid is convolved with the squared Cauchy kernel by FFT, and each point reads its
//! potentials back from its 9 nodes. From those four potentials come both the repulsive force
//! and the normaliser `Z` (`(1 + d^2) / (1 + d^2)^2 = 1 / (1 + d^2)`).
//!
//! Why our own rather than the `bhtsne` crate's: its sums run on rayon's threads in an order
//! that changes from run to run, and 750 steps amplify the last bit into another layout, so
//! a reproducible run had to use one thread. Here every parallel pass is per point (or per
//! grid row) with a fixed order inside it, spreading onto the grid runs in point order, and
//! the one global sum (`Z`) is added up in point order: the threads change the time only.

use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Interpolation nodes per box and axis (openTSNE's `n_interpolation_points`).
const NODES: usize = 3;
/// Fewest boxes per axis (openTSNE's `min_num_intervals`).
const MIN_BOXES: usize = 50;
/// Most boxes per axis: a lone far point cannot make the grid grow without bound (the layout
/// then spans coarser boxes).
const MAX_BOXES: usize = 400;
/// Layout units per box (openTSNE's `ints_in_interval`).
const UNITS_PER_BOX: f32 = 1.0;

/// The grid's precision: f64 gives the same errors (they are the interpolation's) in twice
/// the time.
type F = f32;
type C = Complex<F>;

/// The grid, its transforms and its buffers, kept from step to step.
pub(super) struct Interpolation {
    planner: FftPlanner<F>,
    /// Length of a side and its forward and inverse transforms.
    side: usize,
    forward: Option<Arc<dyn Fft<F>>>,
    inverse: Option<Arc<dyn Fft<F>>>,
    /// The charges `1 + i x` and `y + i |p|^2` (row-major, `side x side`), then their
    /// potentials.
    grids: [Vec<C>; 2],
    /// The kernel's spectrum, transposed, scaled by `1 / side^2`.
    kernel: Vec<C>,
    /// The side and node spacing `kernel` is for.
    kernel_for: (usize, f32),
    /// A transposed copy.
    flipped: Vec<C>,
    /// Per point: the first node (x, y) and the 3 weights per axis.
    at: Vec<([u32; 2], [[f32; NODES]; 2])>,
    /// Per point: the four potentials.
    potentials: Vec<[F; 4]>,
}

impl Interpolation {
    pub fn new() -> Self {
        Interpolation {
            planner: FftPlanner::new(),
            side: 0,
            forward: None,
            inverse: None,
            grids: [Vec::new(), Vec::new()],
            kernel: Vec::new(),
            kernel_for: (0, 0.0),
            flipped: Vec::new(),
            at: Vec::new(),
            potentials: Vec::new(),
        }
    }

    /// Each point's repulsion `sum_j w_ij^2 (y_i - y_j)` into `forces` (`n x 2`), with
    /// `w = 1 / (1 + d^2)`; returns `Z = sum_{i != j} w_ij`.
    pub fn repel(&mut self, y: &[f32], forces: &mut [f32]) -> f64 {
        let n = y.len() / 2;
        let (lo, hi) = y
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let extent = (hi - lo).max(1e-6);
        let needed = (extent / UNITS_PER_BOX).ceil() as usize;
        // A tight layout: the fewest boxes, spanning it. A wide one: boxes of one unit, as
        // many as the smooth transform length that holds them has room for, so the kernel
        // (which depends on the length and the node spacing only) is transformed again only
        // when the layout outgrows that length.
        let (side, boxes, box_width) = if needed <= MIN_BOXES {
            (
                smooth(2 * MIN_BOXES * NODES),
                MIN_BOXES,
                extent / MIN_BOXES as f32,
            )
        } else if needed < MAX_BOXES {
            let side = smooth(2 * needed * NODES);
            (side, side / (2 * NODES), UNITS_PER_BOX)
        } else {
            let side = smooth(2 * MAX_BOXES * NODES);
            (side, MAX_BOXES, extent / MAX_BOXES as f32)
        };
        let nodes = boxes * NODES;
        self.resize(side, n);
        let side = self.side;
        // Where each point falls: its box and its Lagrange weights on the box's nodes.
        let basis = LagrangeBasis::new();
        y.par_chunks_exact(2)
            .zip(self.at.par_iter_mut())
            .for_each(|(p, at)| {
                for (axis, &v) in p.iter().enumerate() {
                    let u = (v - lo) / box_width;
                    let b = (u.floor().max(0.0) as usize).min(boxes - 1);
                    at.0[axis] = (b * NODES) as u32;
                    at.1[axis] = basis.weights(u - b as f32);
                }
            });
        self.spread(y);
        let spacing = box_width / NODES as f32;
        if self.kernel_for != (side, spacing) {
            self.kernel_spectrum(spacing);
            self.kernel_for = (side, spacing);
        }

        let [a, b] = &mut self.grids;
        for grid in [a, b] {
            transform(
                grid,
                &mut self.flipped,
                side,
                nodes,
                self.forward.as_ref(),
                true,
            );
            self.flipped
                .par_iter_mut()
                .zip(self.kernel.par_iter())
                .for_each(|(v, k)| *v *= k);
            transform(
                grid,
                &mut self.flipped,
                side,
                nodes,
                self.inverse.as_ref(),
                false,
            );
        }
        // Each point's potentials from its 9 nodes.
        let [a, b] = &self.grids;
        self.potentials
            .par_iter_mut()
            .zip(self.at.par_iter())
            .for_each(|(phi, (first, w))| {
                let (mut pa, mut pb) = (C::new(0.0, 0.0), C::new(0.0, 0.0));
                for (r, wr) in w[1].iter().enumerate() {
                    let row = (first[1] as usize + r) * side + first[0] as usize;
                    for (c, wc) in w[0].iter().enumerate() {
                        let wt = F::from(wr * wc);
                        pa += a[row + c] * wt;
                        pb += b[row + c] * wt;
                    }
                }
                *phi = [pa.re, pa.im, pb.re, pb.im];
            });
        // Forces, and each point's part of Z.
        let mut z_parts = vec![0.0f64; n];
        forces
            .par_chunks_exact_mut(2)
            .zip(y.par_chunks_exact(2))
            .zip(self.potentials.par_iter())
            .zip(z_parts.par_iter_mut())
            .for_each(|(((f, p), phi), z)| {
                let (x, y) = (f64::from(p[0]), f64::from(p[1]));
                let phi = phi.map(f64::from);
                f[0] = (x * phi[0] - phi[1]) as f32;
                f[1] = (y * phi[0] - phi[2]) as f32;
                *z = (1.0 + x * x + y * y) * phi[0] - 2.0 * (x * phi[1] + y * phi[2]) + phi[3];
            });
        // Less each point's own term (w_ii = 1), summed in point order.
        z_parts.iter().sum::<f64>() - n as f64
    }

    fn resize(&mut self, side: usize, n: usize) {
        if side != self.side {
            self.side = side;
            self.forward = Some(self.planner.plan_fft_forward(side));
            self.inverse = Some(self.planner.plan_fft_inverse(side));
            for g in &mut self.grids {
                *g = vec![C::new(0.0, 0.0); side * side];
            }
            self.kernel = vec![C::new(0.0, 0.0); side * side];
            self.flipped = vec![C::new(0.0, 0.0); side * side];
        }
        self.at.resize(n, ([0; 2], [[0.0; NODES]; 2]));
        self.potentials.resize(n, [0.0; 4]);
    }

    /// The charges onto the grid, in point order (two grids at once).
    fn spread(&mut self, y: &[f32]) {
        let side = self.side;
        let at = &self.at;
        let [a, b] = &mut self.grids;
        let fill = |grid: &mut Vec<C>, charge: &(dyn Fn([F; 2]) -> C + Sync)| {
            grid.fill(C::new(0.0, 0.0));
            for (p, (first, w)) in y.chunks_exact(2).zip(at) {
                let q = charge([F::from(p[0]), F::from(p[1])]);
                for (r, wr) in w[1].iter().enumerate() {
                    let row = (first[1] as usize + r) * side + first[0] as usize;
                    for (c, wc) in w[0].iter().enumerate() {
                        grid[row + c] += q * F::from(wr * wc);
                    }
                }
            }
        };
        rayon::join(
            || fill(a, &|p| C::new(1.0, p[0])),
            || fill(b, &|p| C::new(p[1], p[0] * p[0] + p[1] * p[1])),
        );
    }

    /// The spectrum of `1 / (1 + d^2)^2` between nodes `spacing` apart, at every lag the
    /// padded grid holds, in the transposed order the transforms leave.
    fn kernel_spectrum(&mut self, spacing: f32) {
        let side = self.side;
        let lag = |i: usize| {
            let l = if i <= side / 2 {
                i as f32
            } else {
                i as f32 - side as f32
            };
            F::from(l * spacing)
        };
        let scale = 1.0 / (side * side) as F;
        let kernel = &mut self.kernel;
        kernel
            .par_chunks_exact_mut(side)
            .enumerate()
            .for_each(|(r, row)| {
                let dy = lag(r);
                for (c, v) in row.iter_mut().enumerate() {
                    let dx = lag(c);
                    let w = 1.0 / (1.0 + dx * dx + dy * dy);
                    *v = C::new(w * w * scale, 0.0);
                }
            });
        let mut spare = std::mem::take(&mut self.flipped);
        transform(kernel, &mut spare, side, side, self.forward.as_ref(), true);
        // The spectrum is in `spare` (transposed); keep it as the kernel.
        std::mem::swap(kernel, &mut spare);
        self.flipped = spare;
    }
}

/// One half of a 2-D FFT convolution. Forward: the first `rows` rows of `grid` (the rest are
/// zero) along their length, then the columns, each gathered into a row of `flipped`, which
/// is left holding the spectrum transposed. Inverse: the rows of `flipped`, then the first
/// `rows` rows of `grid` (the only ones read), each gathered from a column of `flipped`.
/// The gathers are the transposition, fused with the second pass so the grid goes through
/// memory twice per transform rather than three times.
fn transform(
    grid: &mut [C],
    flipped: &mut [C],
    side: usize,
    rows: usize,
    fft: Option<&Arc<dyn Fft<F>>>,
    forward: bool,
) {
    let Some(fft) = fft else { return };
    let scratch = || vec![C::new(0.0, 0.0); fft.get_inplace_scratch_len()];
    let along = |data: &mut [C], count: usize| {
        data[..count * side]
            .par_chunks_exact_mut(side)
            .for_each_init(scratch, |scratch, line| {
                fft.process_with_scratch(line, scratch)
            });
    };
    // `to`'s first `count` rows: row i from column i of `from`, then transformed.
    let gathered = |from: &[C], to: &mut [C], count: usize| {
        to[..count * side]
            .par_chunks_mut(GATHER * side)
            .enumerate()
            .for_each_init(scratch, |scratch, (b, band)| {
                let first = b * GATHER;
                let lines = band.len() / side;
                for (r, source) in from.chunks_exact(side).enumerate() {
                    for (t, &v) in source[first..first + lines].iter().enumerate() {
                        band[t * side + r] = v;
                    }
                }
                fft.process_with_scratch(band, scratch);
            });
    };
    if forward {
        along(grid, rows);
        gathered(grid, flipped, side);
    } else {
        along(flipped, side);
        gathered(flipped, grid, rows);
    }
}

/// Columns gathered together (32 complex f32: four cache lines of each row; fewer pay a page
/// walk per line).
const GATHER: usize = 32;

/// The smallest length at least `n` whose only prime factors are 2, 3 and 5 (fast FFTs).
fn smooth(n: usize) -> usize {
    (n..)
        .find(|&m| {
            let mut v = m;
            for p in [2, 3, 5] {
                while v % p == 0 {
                    v /= p;
                }
            }
            v == 1
        })
        .unwrap_or(n)
}

/// Lagrange weights of the 3 equispaced nodes of a box, at (k + 1/2) / 3.
struct LagrangeBasis {
    nodes: [f32; NODES],
    denominators: [f32; NODES],
}

impl LagrangeBasis {
    fn new() -> Self {
        let nodes: [f32; NODES] = std::array::from_fn(|k| (k as f32 + 0.5) / NODES as f32);
        let denominators = std::array::from_fn(|k| {
            (0..NODES)
                .filter(|&l| l != k)
                .map(|l| nodes[k] - nodes[l])
                .product()
        });
        LagrangeBasis {
            nodes,
            denominators,
        }
    }

    /// The weights of a point at `u` in [0, 1] of its box.
    fn weights(&self, u: f32) -> [f32; NODES] {
        std::array::from_fn(|k| {
            (0..NODES)
                .filter(|&l| l != k)
                .map(|l| u - self.nodes[l])
                .product::<f32>()
                / self.denominators[k]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The repulsion and Z summed over every pair.
    fn exact(y: &[f32]) -> (Vec<f64>, f64) {
        let n = y.len() / 2;
        let mut f = vec![0.0f64; 2 * n];
        let mut z = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let (dx, dy) = (
                    f64::from(y[2 * i] - y[2 * j]),
                    f64::from(y[2 * i + 1] - y[2 * j + 1]),
                );
                let w = 1.0 / (1.0 + dx * dx + dy * dy);
                z += w;
                f[2 * i] += w * w * dx;
                f[2 * i + 1] += w * w * dy;
            }
        }
        (f, z)
    }

    #[test]
    fn the_interpolated_repulsion_is_the_sum_over_every_pair() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // Tight (the grid's fewest boxes: fine) and spread out (one box per layout unit, the
        // references' grid: about 1% on Z and 4% on the forces of sparse random points; the
        // same in f64, so it is the interpolation's error, which FIt-SNE and openTSNE accept).
        for (spread, z_error, force_error) in
            [(0.5f32, 1e-5, 1e-5), (5.0, 1e-5, 1e-3), (30.0, 1e-2, 5e-2)]
        {
            let y: Vec<f32> = (0..2 * 1500)
                .map(|_| rng.random_range(-spread..spread))
                .collect();
            let mut forces = vec![0.0f32; y.len()];
            let z = Interpolation::new().repel(&y, &mut forces);
            let (want, want_z) = exact(&y);
            let (mut diff, mut norm) = (0.0f64, 0.0f64);
            for (got, want) in forces.iter().zip(&want) {
                diff += (f64::from(*got) - want).powi(2);
                norm += want.powi(2);
            }
            let (dz, df) = ((z / want_z - 1.0).abs(), (diff / norm).sqrt());
            eprintln!("spread {spread}: Z error {dz:.2e}, force error {df:.2e}");
            assert!(dz < z_error, "{spread}: Z {z} vs {want_z}");
            assert!(df < force_error, "{spread}: force error {df}");
        }
    }

    #[test]
    fn lagrange_weights_sum_to_one_and_hit_the_nodes() {
        let basis = LagrangeBasis::new();
        for u in [0.0f32, 0.1, 0.5, 0.77, 1.0] {
            let w = basis.weights(u);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let w = basis.weights(basis.nodes[1]);
        assert!((w[1] - 1.0).abs() < 1e-6 && w[0].abs() < 1e-6 && w[2].abs() < 1e-6);
    }

    #[test]
    fn smooth_lengths() {
        assert_eq!(smooth(300), 300);
        assert_eq!(smooth(301), 320);
        assert_eq!(smooth(2 * 7 * 11), 160);
    }
}
