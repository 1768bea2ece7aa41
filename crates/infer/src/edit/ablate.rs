//! Directional ablation (Arditi et al. 2024, "Refusal in Language Models Is Mediated by a
//! Single Direction"): a behaviour's direction in the residual stream, taken as the difference
//! of the mean residual streams of two prompt lists at one layer and the last position, is
//! projected out of every matrix that writes to the residual stream: `W <- W - s r (rᵀ W)` for
//! the attention's `o_proj` and the MLP's `down_proj` of every layer (their rows are the
//! residual stream), and optionally `E <- E - s (E r) rᵀ` for the embedding (its columns are).
//! Each change is rank one, so each is kept as a low-rank patch entry.
//!
//! Where this differs from the paper: the paper ablates with `s = 1` and picks the direction's
//! layer and position by a search over candidates; here the layer is given (default: the
//! middle of the stack), the position is the prompt's last token, and `s` is given (default 1).

use super::problem::dense;
use crate::llama::{Capture, Captured, KvCache};
use crate::weights::Weights;
use crate::{InferError, Result, RunnableModel};
use candle_core::{Device, Tensor};

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
        let model = self.llama_only(w, "directional ablation")?;
        prompts
            .iter()
            .map(|p| {
                let ids = self.encode(p)?;
                let mut captured = Captured::default();
                let capture = Capture {
                    layer: None,
                    residuals: true,
                };
                model.forward(w, &ids, &mut KvCache::default(), capture, &mut captured)?;
                Ok(captured.residuals[layer].to_vec1::<f32>()?)
            })
            .collect()
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
        let model = self.llama_only(w, "directional ablation")?;
        let c = &model.config;
        let hidden = c.hidden_size;
        let mut out = Vec::new();
        let writers = [
            ("self_attn.o_proj", c.num_attention_heads * c.head_width()),
            ("mlp.down_proj", c.intermediate_size),
        ];
        let r_row = Tensor::from_slice(r, (1, hidden), &Device::Cpu)?;
        for l in 0..c.num_hidden_layers {
            for (part, cols) in writers {
                let tensor = format!("model.layers.{l}.{part}.weight");
                // v = Wᵀ r
                let v = r_row
                    .matmul(&dense(w, &tensor, hidden, cols)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                out.push(Ablation {
                    tensor,
                    u: r.iter().map(|&x| -s * x).collect(),
                    v,
                });
            }
        }
        if embedding {
            let tensor = crate::llama::EMBED.to_string();
            let e = dense(w, &tensor, c.vocab_size, hidden)?;
            let er = e.matmul(&r_row.t()?)?.flatten_all()?.to_vec1::<f32>()?;
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
