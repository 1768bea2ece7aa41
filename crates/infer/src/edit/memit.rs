//! MEMIT (Meng et al. 2023, "Mass-Editing Memory in a Transformer"): several facts written at
//! once into the `down_proj`s of a range of layers, each layer taking a share of what is left.
//!
//! For facts `i` with goals at the range's last layer `L`:
//!
//! 1. `δᵢ`, the change of the residual stream after `L` at the subject's last token that makes
//!    the model say the target, is found by ROME's optimisation at `L`
//!    ([`RunnableModel::fact_delta`]); the goal is `zᵢ = hᵢ + δᵢ`.
//! 2. For each layer `l` of the range, lowest first, on the weights with the updates of the
//!    layers below already in: the keys `kᵢ` (the `down_proj` inputs at the subject's last
//!    token) and the residual streams `hᵢ` after `L`, the residual `rᵢ = (zᵢ - hᵢ) / (layers
//!    left, l included)`, and the update `ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹`: rank at most the number of
//!    facts, kept as the factors `U = R`, `V = (λ C + K Kᵀ)⁻¹ K`.
//!
//! Where this differs from MEMIT's code:
//! - Keys and residual streams are averaged over the same context templates (MEMIT measures
//!   `hᵢ` on the bare prompt while it averages the keys), the consistent choice r-ROME argues
//!   for; the optimisation is the fact editor's, with ROME's clamp (4 x the MLP output's norm)
//!   rather than MEMIT's (0.75 x the residual stream's).
//! - Where a layer normalises its MLP's output before the residual stream (Gemma 3's
//!   post-feedforward norm `N(m) = g ⊙ m / rms(m)`), the residual change it should write, `r`,
//!   is not a change of `down_proj`'s output `m`. MEMIT's update is made for the change `Δ` of
//!   `m` with `N(m + Δ) ≈ N(m) + r`, found by damped Gauss-Newton steps through the norm
//!   (exact where the norm can give `N(m) + r`; coordinates a gain of 0 silences, and a change
//!   of the output's size, which a norm cannot make, are left to the layers above, as MEMIT
//!   leaves its own approximations). The goal at the last layer is the
//!   residual change the optimised `δ` (on `down_proj`'s output there) makes: `N(m + δ) -
//!   N(m)`. `m` is averaged over the context templates as the keys are.
//! - `(λ C + K Kᵀ)⁻¹ K` is computed as `A⁻¹K (I + Kᵀ A⁻¹ K)⁻¹` with `A = λ C` (Woodbury), from
//!   the factored moment the fact editor keeps: solves of `d_k`-vectors and one `n x n`
//!   inverse, never a `d_k x d_k` one.
//! - `λ` (MEMIT's `mom2_update_weight`, 15,000 for GPT-J's 16,384-wide keys) is scaled to the
//!   key width: a typical key has `kᵀ C⁻¹ k ≈ d_k`, so the share of the residual a layer
//!   writes, `kᵀ(λC)⁻¹k / (1 + kᵀ(λC)⁻¹k)`, stays what it is on GPT-J.
//! - With `C` the identity, `A = λ μ I` where `μ` is the facts' own mean squared key element
//!   (the identity at the keys' scale).

use super::problem::run_layers;
use super::{Covariance, FactGoal};
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};

/// MEMIT's `mom2_update_weight` on GPT-J, and GPT-J's key width.
const GPTJ_WEIGHT: f64 = 15_000.0;
const GPTJ_KEYS: f64 = 16_384.0;

/// The default `λ` for keys `d_k` wide: MEMIT's GPT-J value, per key dimension.
pub fn default_update_weight(d_k: usize) -> f64 {
    GPTJ_WEIGHT * d_k as f64 / GPTJ_KEYS
}

/// A fact's state at a MEMIT layer, averaged over the context templates.
pub struct FactState {
    /// The `down_proj` input at the subject's last token.
    pub key: Vec<f32>,
    /// `down_proj`'s output there (before a norm of the MLP's output).
    pub down: Vec<f32>,
    /// The residual stream after the range's last layer there.
    pub h: Vec<f32>,
}

impl RunnableModel {
    /// Whether MEMIT can spread an edit over `layers`: each must be a layer of the model.
    pub fn check_memit_layers(&self, layers: &[usize]) -> Result<()> {
        let model = self.llama()?;
        if let Some(&l) = layers.iter().find(|&&l| l >= model.arch.depth()) {
            return Err(InferError::Request(format!(
                "layer {l} is beyond the model's {} layers",
                model.arch.depth()
            )));
        }
        Ok(())
    }

    /// `layer`'s norm of its MLP output, as `(g, eps)` (`None`: the output joins the residual
    /// stream as it is).
    fn mlp_output_norm(&self, w: &Weights, layer: usize) -> Result<Option<(Vec<f32>, f64)>> {
        let model = self.llama()?;
        match &model.arch.layers[layer].post_mlp_norm {
            Some(name) => Ok(Some((
                model.norm(w, name)?.to_vec1::<f32>()?,
                model.arch.rms_eps,
            ))),
            None => Ok(None),
        }
    }

    /// The residual-stream change that `delta` added to `layer`'s `down_proj` output `down`
    /// makes (`delta` itself where no norm follows the MLP).
    pub fn residual_change(
        &self,
        w: &Weights,
        layer: usize,
        down: &[f32],
        delta: &[f32],
    ) -> Result<Vec<f32>> {
        Ok(match self.mlp_output_norm(w, layer)? {
            Some((g, eps)) => through_norm(&g, eps, down, delta),
            None => delta.to_vec(),
        })
    }

    /// The change of `layer`'s `down_proj` output (now `down`) that writes the residual change
    /// `resid` (see the module doc for a layer whose MLP output is normalised).
    pub fn down_change(
        &self,
        w: &Weights,
        layer: usize,
        down: &[f32],
        resid: Vec<f32>,
    ) -> Result<Vec<f32>> {
        Ok(match self.mlp_output_norm(w, layer)? {
            Some((g, eps)) => down_for(&g, eps, down, &resid),
            None => resid,
        })
    }

    /// At `layer`, the goal's key (the `down_proj` input at the subject's last token) and the
    /// residual stream after layer `last` there, each averaged over the context templates
    /// (`{}` the prompt).
    pub fn fact_state(
        &self,
        w: &Weights,
        goal: &FactGoal,
        contexts: &[String],
        layer: usize,
        last: usize,
    ) -> Result<FactState> {
        let model = self.llama()?;
        let layers = model.arch.depth();
        if layer > last || last >= layers {
            return Err(InferError::Request(format!(
                "layers {layer} to {last} are not layers of the model's {layers}"
            )));
        }
        let (mut key, mut down, mut h) = (Vec::<f64>::new(), Vec::<f64>::new(), Vec::new());
        let add = |sum: &mut Vec<f64>, row: Vec<f32>| {
            sum.resize(row.len(), 0.0);
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v as f64;
            }
        };
        let mut texts = Vec::new();
        let mut rows = Vec::new();
        let mut row = 0;
        for template in contexts {
            let prefix = template.find("{}").unwrap_or(0);
            let text = template.replacen("{}", &goal.prompt, 1);
            let spans = self.encode_spans(&text)?;
            let (_, end) = crate::trace::subject_tokens_from(&text, prefix, &goal.subject, &spans)?;
            rows.push(row + end - 1);
            row += spans.len();
            texts.push(spans.iter().map(|(id, _)| *id).collect::<Vec<u32>>());
        }
        let texts: Vec<&[u32]> = texts.iter().map(Vec::as_slice).collect();
        run_layers(&model, w, &texts, last, |l, out, _| {
            for &at in &rows {
                if l == layer {
                    add(&mut key, out.act.get(at)?.to_vec1::<f32>()?);
                    add(&mut down, out.down.get(at)?.to_vec1::<f32>()?);
                }
                if l == last {
                    add(&mut h, out.x.get(at)?.to_vec1::<f32>()?);
                }
            }
            Ok(())
        })?;
        let n = contexts.len().max(1) as f64;
        let mean = |s: Vec<f64>| s.into_iter().map(|v| (v / n) as f32).collect();
        Ok(FactState {
            key: mean(key),
            down: mean(down),
            h: mean(h),
        })
    }

    /// MEMIT's update of `layer`'s `down_proj` for the facts' `keys` (`d_k` wide) and the
    /// residuals `resid` (`hidden` wide) it should write: `ΔW = U Vᵀ` with `U = R` (`[hidden,
    /// n]`) and `V = (λ C + K Kᵀ)⁻¹ K` (`[d_k, n]`), both row-major as a low-rank entry's.
    pub fn memit_factors(
        &self,
        w: &Weights,
        layer: usize,
        keys: &[Vec<f32>],
        resid: &[Vec<f32>],
        covariance: Covariance,
        weight: f64,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        if keys.is_empty() || keys.len() != resid.len() {
            return Err(InferError::Internal("MEMIT needs one residual per key"));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(InferError::Request(format!(
                "the update weight must be a positive number, not {weight}"
            )));
        }
        let v = match covariance {
            Covariance::Corpus => {
                let moment = candle_core::Device::Cpu.with_context(|| self.key_moment(w, layer))?;
                spread(keys, weight, |k| moment.solve(k))?
            }
            Covariance::Identity => {
                let d = keys[0].len() as f64;
                let mu = keys
                    .iter()
                    .map(|k| k.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / d)
                    .sum::<f64>()
                    / keys.len() as f64;
                spread(keys, weight * mu.max(f64::MIN_POSITIVE), |k| {
                    Ok(k.iter().map(|&x| x as f64).collect())
                })?
            }
        };
        Ok((interleave(resid), interleave(&v)))
    }
}

/// `(λ A + K Kᵀ)⁻¹ K` for keys `K` (one per column) given solves by `A`, as
/// `A⁻¹K/λ (I + Kᵀ A⁻¹ K/λ)⁻¹` (Woodbury): one column per key.
pub(super) fn spread(
    keys: &[Vec<f32>],
    lambda: f64,
    solve: impl Fn(&[f32]) -> Result<Vec<f64>>,
) -> Result<Vec<Vec<f32>>> {
    let n = keys.len();
    let y: Vec<Vec<f64>> = keys
        .iter()
        .map(|k| Ok(solve(k)?.into_iter().map(|v| v / lambda).collect()))
        .collect::<Result<_>>()?;
    // M = I + Kᵀ Y, n x n.
    let mut m = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            let dot: f64 = keys[i].iter().zip(&y[j]).map(|(&k, &v)| k as f64 * v).sum();
            m[i * n + j] = dot + if i == j { 1.0 } else { 0.0 };
        }
    }
    let inv = invert(m, n)?;
    let d = keys[0].len();
    Ok((0..n)
        .map(|j| {
            (0..d)
                .map(|e| (0..n).map(|i| y[i][e] * inv[i * n + j]).sum::<f64>() as f32)
                .collect()
        })
        .collect())
}

/// The inverse of an `n x n` matrix (row-major) by Gauss-Jordan elimination with partial
/// pivoting.
fn invert(mut a: Vec<f64>, n: usize) -> Result<Vec<f64>> {
    let mut inv: Vec<f64> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&a1, &b1| a[a1 * n + col].abs().total_cmp(&a[b1 * n + col].abs()))
            .unwrap_or(col);
        if a[pivot * n + col].abs() < 1e-300 {
            return Err(InferError::Internal("the facts' keys are not independent"));
        }
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let p = a[col * n + col];
        for k in 0..n {
            a[col * n + k] /= p;
            inv[col * n + k] /= p;
        }
        for r in 0..n {
            if r != col {
                let f = a[r * n + col];
                if f != 0.0 {
                    for k in 0..n {
                        a[r * n + k] -= f * a[col * n + k];
                        inv[r * n + k] -= f * inv[col * n + k];
                    }
                }
            }
        }
    }
    Ok(inv)
}

/// The change `N(m + δ) - N(m)` of a normalised output `N(x) = g ⊙ x / rms(x)`.
fn through_norm(g: &[f32], eps: f64, m: &[f32], delta: &[f32]) -> Vec<f32> {
    let moved: Vec<f32> = m.iter().zip(delta).map(|(m, d)| m + d).collect();
    let (a, b) = (rms_norm(&moved, g, eps), rms_norm(m, g, eps));
    a.iter().zip(&b).map(|(a, b)| a - b).collect()
}

/// The change `Δ` of `m` whose normalised output moves by `r`: `N(m + Δ) ≈ N(m) + r`, by
/// damped Gauss-Newton steps on `|N(m + Δ) - N(m) - r|²`. At `x` the norm's Jacobian is
/// `D P` with `D = diag(g) / rms(x)` and `P` the projection off `x` (a norm ignores its input's
/// size), so a step `s ⊥ x` solves `min |D s - e|² + μ |s|²` on the error `e`:
/// `s = (D² + μ)⁻¹ (D e - λ x)`, `λ` making `xᵀ s = 0`. `μ` (a thousandth of the mean `D²`)
/// keeps the coordinates that a gain of (nearly) 0 silences from taking huge steps: what they
/// cannot write is left to the layers above.
fn down_for(g: &[f32], eps: f64, m: &[f32], r: &[f32]) -> Vec<f32> {
    const STEPS: usize = 8;
    let n = m.len().max(1) as f64;
    let target: Vec<f64> = rms_norm(m, g, eps)
        .iter()
        .zip(r)
        .map(|(a, b)| (a + b) as f64)
        .collect();
    let g: Vec<f64> = g.iter().map(|&v| v as f64).collect();
    let mean_g2 = g.iter().map(|v| v * v).sum::<f64>() / n;
    let mut x: Vec<f64> = m.iter().map(|&v| v as f64).collect();
    for _ in 0..STEPS {
        let rho = rms(x.iter().copied(), eps);
        let mu = 1e-3 * mean_g2 / (rho * rho);
        let d: Vec<f64> = g.iter().map(|gi| gi / rho).collect();
        let a: Vec<f64> = d.iter().map(|di| 1.0 / (di * di + mu)).collect();
        let de: Vec<f64> = (0..x.len())
            .map(|i| d[i] * (target[i] - d[i] * x[i]))
            .collect();
        let num: f64 = (0..x.len()).map(|i| a[i] * de[i] * x[i]).sum();
        let den: f64 = (0..x.len()).map(|i| a[i] * x[i] * x[i]).sum();
        let lambda = if den > 0.0 { num / den } else { 0.0 };
        for i in 0..x.len() {
            x[i] += a[i] * (de[i] - lambda * x[i]);
        }
    }
    x.iter()
        .zip(m)
        .map(|(x, &m)| (x - m as f64) as f32)
        .collect()
}

/// `sqrt(mean(x²) + eps)`.
fn rms(x: impl ExactSizeIterator<Item = f64>, eps: f64) -> f64 {
    let n = x.len().max(1) as f64;
    (x.map(|v| v * v).sum::<f64>() / n + eps).sqrt()
}

/// RMSNorm of one row, the decode step's.
fn rms_norm(x: &[f32], g: &[f32], eps: f64) -> Vec<f32> {
    crate::decode::rms_norm(x, g, eps as f32)
}

/// Columns (one vector each, all as long) as a row-major `[len, columns]` matrix of f32.
fn interleave(columns: &[Vec<f32>]) -> Vec<f32> {
    let len = columns.first().map_or(0, Vec::len);
    (0..len)
        .flat_map(|e| columns.iter().map(move |c| c[e]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `(λ A + K Kᵀ) V = K` checked directly, `A` a random symmetric positive definite matrix.
    #[test]
    fn the_spread_solves_the_memit_system() {
        let (d, n, lambda) = (7, 3, 2.5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let b: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
        // A = B Bᵀ + I
        let a: Vec<f64> = (0..d * d)
            .map(|e| {
                let (i, j) = (e / d, e % d);
                (0..d).map(|k| b[i * d + k] * b[j * d + k]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 }
            })
            .collect();
        let a_inv = invert(a.clone(), d).unwrap();
        let keys: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..d).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect())
            .collect();
        let v = spread(&keys, lambda, |k| {
            Ok((0..d)
                .map(|i| (0..d).map(|j| a_inv[i * d + j] * k[j] as f64).sum())
                .collect())
        })
        .unwrap();
        for (j, k) in keys.iter().enumerate() {
            for i in 0..d {
                let lhs: f64 = (0..d)
                    .map(|e| {
                        let kk: f64 = keys.iter().map(|c| c[i] as f64 * c[e] as f64).sum();
                        (lambda * a[i * d + e] + kk) * v[j][e] as f64
                    })
                    .sum();
                assert!((lhs - k[i] as f64).abs() < 1e-4, "{lhs} vs {}", k[i]);
            }
        }
    }

    /// Through a norm of the MLP output: a change the norm can give (one `δ` made) is written;
    /// gains of 0 (Gemma 3's norms have them) leave their coordinates unwritten, not the rest.
    #[test]
    fn a_residual_change_is_written_through_the_mlp_output_norm() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut vector = |scale: f32| -> Vec<f32> {
            (0..64)
                .map(|_| (rng.random::<f32>() - 0.5) * scale)
                .collect()
        };
        let (g, m, delta) = (vector(2.0), vector(3.0), vector(1.0));
        let mut g: Vec<f32> = g.iter().map(|v| v + 1.5).collect();
        let eps = 1e-6;
        let close = |a: &[f32], b: &[f32], skip: &[usize]| {
            let err: Vec<f32> = a.iter().zip(b).map(|(a, b)| a - b).collect();
            let kept = |v: &[f32]| -> Vec<f32> {
                v.iter()
                    .enumerate()
                    .filter(|(i, _)| !skip.contains(i))
                    .map(|(_, &x)| x)
                    .collect()
            };
            length(&kept(&err)) / length(&kept(b))
        };
        let r = through_norm(&g, eps, &m, &delta);
        let written = through_norm(&g, eps, &m, &down_for(&g, eps, &m, &r));
        assert!(
            close(&written, &r, &[]) < 1e-3,
            "{}",
            close(&written, &r, &[])
        );
        g[3] = 0.0;
        g[7] = 0.0;
        let r = through_norm(&g, eps, &m, &delta);
        let change = down_for(&g, eps, &m, &r);
        assert!(change.iter().all(|v| v.is_finite()));
        let written = through_norm(&g, eps, &m, &change);
        assert!(
            close(&written, &r, &[3, 7]) < 1e-2,
            "{}",
            close(&written, &r, &[3, 7])
        );
    }

    fn length(v: &[f32]) -> f64 {
        v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
    }

    /// With a vanishing `λ` the update writes each residual at its own key exactly (ROME's
    /// limit); the factors are laid out as a low-rank entry's.
    #[test]
    fn a_vanishing_weight_writes_each_residual_at_its_key() {
        let keys = vec![vec![1.0f32, 2.0, 0.0, 1.0], vec![0.0f32, 1.0, 3.0, -1.0]];
        let resid = vec![vec![1.0f32, -1.0], vec![0.5f32, 2.0]];
        let v = spread(&keys, 1e-9, |k| Ok(k.iter().map(|&x| x as f64).collect())).unwrap();
        let (u, v) = (interleave(&resid), interleave(&v));
        let (hidden, d, n) = (2, 4, 2);
        for (j, k) in keys.iter().enumerate() {
            for i in 0..hidden {
                let out: f64 = (0..d)
                    .map(|e| {
                        let dw: f64 = (0..n)
                            .map(|r| u[i * n + r] as f64 * v[e * n + r] as f64)
                            .sum();
                        dw * k[e] as f64
                    })
                    .sum();
                assert!((out - resid[j][i] as f64).abs() < 1e-4, "{out}");
            }
        }
    }
}
