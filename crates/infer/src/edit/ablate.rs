//! Directional ablation (Arditi et al. 2024, "Refusal in Language Models Is Mediated by a
//! Single Direction"): a behaviour's direction in the residual stream, taken as the difference
//! of the mean residual streams of two prompt lists at one layer and the last position, is
//! projected out of every matrix that writes to the residual stream: `W <- W - s r (rᵀ W)` for
//! the attention's `o_proj` and the MLP's `down_proj` of every layer (their rows are the
//! residual stream), and optionally `E <- E - s (E r) rᵀ` for the embedding (its columns are).
//! Each change is rank one, so each is kept as a low-rank patch entry.
//!
//! Under a norm of a block's output (Gemma 3 normalises the attention's and the MLP's output
//! before they join the residual stream), projecting `r` out of `W` would not remove it from
//! the normalised output `g ⊙ y / rms(y)`; the direction projected out of such a matrix is
//! `g ⊙ r` (normalised), which makes the normalised output orthogonal to `r` exactly at
//! `s = 1`, whatever `rms(y)`.
//!
//! Where this differs from the paper: the paper ablates with `s = 1` and picks the direction's
//! layer and position by a search over candidates; here the layer is given (default: the
//! middle of the stack), the position is the prompt's last token, and `s` is given (default 1).

use super::problem::dense;
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};

/// One matrix's rank-one change, `W + u vᵀ`.
pub struct Ablation {
    pub tensor: String,
    pub u: Vec<f32>,
    pub v: Vec<f32>,
}

impl RunnableModel {
    /// The residual stream after `layer` at the last token of each prompt.
    fn last_residuals(
        &self,
        w: &Weights,
        prompts: &[String],
        layer: usize,
    ) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .states_after_layers(w, prompts)?
            .into_iter()
            .map(|mut layers| layers.swap_remove(layer))
            .collect())
    }

    /// The unit direction from the mean residual stream after `layer` of the `to` prompts to
    /// that of the `from` prompts (at each prompt's last token), and its length before
    /// normalising.
    pub fn direction(
        &self,
        w: &Weights,
        from: &[String],
        to: &[String],
        layer: usize,
    ) -> Result<(Vec<f32>, f64)> {
        let layers = self.layers()?;
        if layer >= layers {
            return Err(InferError::Request(format!(
                "layer {layer} is beyond the model's {layers} layers"
            )));
        }
        if from.is_empty() || to.is_empty() {
            return Err(InferError::Request("both prompt lists need prompts".into()));
        }
        let mean = |rows: Vec<Vec<f32>>| -> Vec<f64> {
            let n = rows.len() as f64;
            let mut m = vec![0f64; rows[0].len()];
            for r in &rows {
                for (a, &b) in m.iter_mut().zip(r) {
                    *a += b as f64 / n;
                }
            }
            m
        };
        let a = mean(self.last_residuals(w, from, layer)?);
        let b = mean(self.last_residuals(w, to, layer)?);
        let diff: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let length = diff.iter().map(|d| d * d).sum::<f64>().sqrt();
        if length == 0.0 {
            return Err(InferError::Request(
                "the two prompt lists give the same mean residual stream: no direction".into(),
            ));
        }
        Ok((diff.iter().map(|d| (d / length) as f32).collect(), length))
    }

    /// The rank-one changes that project `r` (unit, `[hidden]`) out of every matrix writing
    /// to the residual stream, with strength `s`; the embedding too when `embedding`.
    pub fn ablation(
        &self,
        w: &Weights,
        r: &[f32],
        s: f32,
        embedding: bool,
    ) -> Result<Vec<Ablation>> {
        let model = self.llama()?;
        let a = &model.arch;
        let hidden = a.hidden;
        let mut out = Vec::new();
        for layer in &a.layers {
            let writers = [
                (&layer.o, &layer.post_attention_norm),
                (&layer.down, &layer.post_mlp_norm),
            ];
            for (m, post_norm) in writers {
                // Under a norm of the output (Gemma), the output must be orthogonal to g ⊙ r
                // for the normalised output g ⊙ y / rms(y) to be orthogonal to r.
                let d = match post_norm {
                    None => r.to_vec(),
                    Some(norm) => {
                        let g = model.norm(w, norm)?.to_vec1::<f32>()?;
                        unit(&r.iter().zip(&g).map(|(x, g)| x * g).collect::<Vec<f32>>())?
                    }
                };
                out.push(Ablation {
                    tensor: m.weight.clone(),
                    u: d.iter().map(|&x| -s * x).collect(),
                    v: rows_times(w, &m.weight, hidden, m.input, &d)?,
                });
            }
        }
        if embedding {
            let tensor = a.embedding.clone();
            let er = times_columns(w, &tensor, a.vocab, hidden, r)?;
            out.push(Ablation {
                tensor,
                u: er.iter().map(|&x| -s * x).collect(),
                v: r.to_vec(),
            });
        }
        Ok(out)
    }

    /// The mean KL divergence (base to edited) of the next-token distribution after each
    /// prompt, in nats.
    pub fn mean_kl(&self, base: &Weights, edited: &Weights, prompts: &[String]) -> Result<f64> {
        let mut total = 0.0;
        for p in prompts {
            let ids = self.encode(p)?;
            total += self
                .distribution(base, &ids)?
                .kl(&self.distribution(edited, &ids)?);
        }
        Ok(total / prompts.len().max(1) as f64)
    }
}

/// `v` scaled to length 1.
fn unit(v: &[f32]) -> Result<Vec<f32>> {
    let n = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if n == 0.0 {
        return Err(InferError::Request(
            "the direction vanishes under the layer's output norm".into(),
        ));
    }
    Ok(v.iter().map(|&x| (x as f64 / n) as f32).collect())
}

/// `Wᵀ d` for the matrix `name` (`[rows, cols]`), a row at a time as stored (no dense copy).
fn rows_times(w: &Weights, name: &str, rows: usize, cols: usize, d: &[f32]) -> Result<Vec<f32>> {
    let mut v = vec![0f64; cols];
    let mut add = |i: usize, row: &[f32]| {
        let s = d[i] as f64;
        for (a, &b) in v.iter_mut().zip(row) {
            *a += s * b as f64;
        }
    };
    match w.stored(name, rows, cols) {
        Some(m) => (0..rows).for_each(|i| add(i, &m.row(i, cols))),
        None => {
            let dense = dense(w, name, rows, cols)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            dense
                .chunks_exact(cols)
                .enumerate()
                .for_each(|(i, row)| add(i, row));
        }
    }
    Ok(v.into_iter().map(|x| x as f32).collect())
}

/// `E r` for the matrix `name` (`[rows, cols]`), a row at a time as stored.
fn times_columns(w: &Weights, name: &str, rows: usize, cols: usize, r: &[f32]) -> Result<Vec<f32>> {
    let dot = |row: &[f32]| {
        row.iter()
            .zip(r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum::<f64>() as f32
    };
    match w.stored(name, rows, cols) {
        Some(m) => Ok((0..rows).map(|i| dot(&m.row(i, cols))).collect()),
        None => Ok(dense(w, name, rows, cols)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .chunks_exact(cols)
            .map(dot)
            .collect()),
    }
}
