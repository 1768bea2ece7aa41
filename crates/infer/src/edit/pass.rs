//! The optimisation's forward pass: the later layers from the edited one's output, on the
//! positions the edit reaches, written in differentiable operations.

use super::graph;
use super::problem::Problem;
use crate::Result;
use candle_core::{DType, Device, Tensor};

impl Problem {
    /// With `delta` added at every sequence's first row: the target's mean negative
    /// log-likelihood over the rewriting prompts, the KL prompt's log-probabilities, and the
    /// target's mean probability.
    pub(super) fn run(&self, delta: &Tensor) -> Result<(Tensor, Tensor, f64)> {
        let c = &self.model.config;
        let eps = c.rms_norm_eps;
        let (heads, kvh, hd) = (c.num_attention_heads, c.kv_heads(), c.head_width());
        let rows: Vec<Tensor> = self
            .seqs
            .iter()
            .map(|s| {
                let first = (s.x.get(0)? + delta)?.unsqueeze(0)?;
                let n = s.x.dim(0)?;
                if n == 1 {
                    Ok(first)
                } else {
                    Tensor::cat(&[&first, &s.x.narrow(0, 1, n - 1)?], 0)
                }
            })
            .collect::<candle_core::Result<_>>()?;
        let mut x = Tensor::cat(&rows, 0)?;
        let lens: Vec<usize> = self
            .seqs
            .iter()
            .map(|s| s.x.dim(0))
            .collect::<candle_core::Result<_>>()?;
        // The scored rows.
        let mut index = Vec::new();
        let mut off = 0;
        for (s, &n) in self.seqs.iter().zip(&lens) {
            index.extend(s.scored.iter().map(|&(r, _)| (off + r) as u32));
            off += n;
        }
        let index = Tensor::new(index.as_slice(), &Device::Cpu)?;
        let last = self.later.len().saturating_sub(1);
        for (li, lw) in self.later.iter().enumerate() {
            let h = graph::rms_norm(&x, &lw.input_norm, eps)?;
            let mut qkv = [lw.q.apply(&h)?, lw.k.apply(&h)?, lw.v.apply(&h)?];
            for (m, b) in qkv.iter_mut().zip(&lw.biases) {
                if let Some(b) = b {
                    *m = m.broadcast_add(b)?;
                }
            }
            let [q_all, k_all, v_all] = qkv;
            let mut att = self
                .batch
                .attend(li, &q_all, &k_all, &v_all, (heads, kvh, hd))?;
            if li == last {
                // Past the last attention only the scored rows matter.
                att = att.index_select(&index, 0)?;
                x = x.index_select(&index, 0)?;
            }
            x = (x + lw.o.apply(&att)?)?;
            let h = graph::rms_norm(&x, &lw.post_norm, eps)?;
            let act = (lw.gate.apply(&h)?.silu()? * lw.up.apply(&h)?)?;
            x = (x + lw.down.apply(&act)?)?;
        }
        let picked = match self.later.is_empty() {
            true => x.index_select(&index, 0)?,
            false => x,
        };
        let h = graph::rms_norm(&picked, &self.final_norm, eps)?;
        let lp = graph::log_softmax(&self.unembed.apply(&h)?)?;
        let rewriting = self.seqs.len() - 1;
        let mut row = 0;
        let mut nll_terms = Vec::new();
        let mut p_sum = 0.0;
        for s in &self.seqs[..rewriting] {
            let mut seq_lp = Vec::new();
            for &(_, token) in &s.scored {
                seq_lp.push(lp.get(row)?.get(token as usize)?);
                row += 1;
            }
            let total = Tensor::stack(&seq_lp, 0)?.sum_all()?;
            p_sum += (total.to_scalar::<f32>()? as f64).exp();
            nll_terms.push((total.neg()? / self.target.len() as f64)?);
        }
        let nll = (Tensor::stack(&nll_terms, 0)?.sum_all()? / rewriting as f64)?;
        let kl_lp = lp.get(row)?;
        Ok((nll, kl_lp, p_sum / rewriting as f64))
    }
}

/// Every sequence's attention as one padded batch: a few operations per layer instead of a few
/// dozen per sequence. Sequences have `n` rows after `past` earlier positions each; they are
/// padded to the longest (`rows`) after the longest past (`past`), and the mask hides the
/// padding, so each row attends to exactly its own sequence's positions.
pub(super) struct Batch {
    sequences: usize,
    rows: usize,
    past: usize,
    /// For each padded row (`[sequences * rows]`), its row in the stacked input, or the zero
    /// row past the end for padding.
    spread: Tensor,
    /// The stacked rows in the padded layout: where each comes back from.
    gather: Tensor,
    /// `[sequences, 1, rows, hd]` (rotate-half tables of each row's position).
    cos: Tensor,
    sin: Tensor,
    /// `[sequences, 1, rows, past + rows]`: 0 where a row may look, -inf elsewhere.
    mask: Tensor,
    /// Per later layer: the earlier positions' keys and values, `[sequences, kv_heads, past, hd]`.
    kv: Vec<(Tensor, Tensor)>,
}

impl Batch {
    /// The batch of `seqs` (their keys, values, rotary tables and rows).
    pub(super) fn of(seqs: &[super::problem::Sequence], hd: usize, kvh: usize) -> Result<Batch> {
        let dev = Device::Cpu;
        let sequences = seqs.len();
        let lens: Vec<usize> = seqs
            .iter()
            .map(|s| s.x.dim(0))
            .collect::<candle_core::Result<_>>()?;
        let rows = lens.iter().copied().max().unwrap_or(1);
        let past = seqs.iter().map(|s| s.at).max().unwrap_or(0);
        let total: usize = lens.iter().sum();
        let (mut spread, mut gather, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        let mut off = 0;
        for (s, &n) in seqs.iter().zip(&lens) {
            let (c, si) = (s.rope.0.to_vec2::<f32>()?, s.rope.1.to_vec2::<f32>()?);
            for i in 0..rows {
                spread.push(if i < n {
                    (off + i) as u32
                } else {
                    total as u32
                });
                if i < n {
                    gather.push((spread.len() - 1) as u32);
                }
                // A padding row looks at its sequence's first row only (its output is dropped).
                let own = i.min(n - 1);
                mask.extend((0..past + rows).map(|j| {
                    let seen = if j < past {
                        j < s.at && i < n
                    } else {
                        j - past <= own
                    };
                    if seen {
                        0.0f32
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
                cos.extend_from_slice(&c[own]);
                sin.extend_from_slice(&si[own]);
            }
            off += n;
        }
        let layers = seqs.first().map_or(0, |s| s.past.len());
        let kv = (0..layers)
            .map(|l| {
                let pad = |pick: fn(&(Tensor, Tensor)) -> &Tensor| -> candle_core::Result<Tensor> {
                    let parts: Vec<Tensor> = seqs
                        .iter()
                        .map(|s| {
                            let m = pick(&s.past[l]); // [kvh, at, hd]
                            if s.at == past {
                                Ok(m.clone())
                            } else {
                                let zeros =
                                    Tensor::zeros((kvh, past - s.at, hd), DType::F32, &dev)?;
                                Tensor::cat(&[m, &zeros], 1)
                            }
                        })
                        .collect::<candle_core::Result<_>>()?;
                    Tensor::stack(&parts, 0)
                };
                Ok((pad(|p| &p.0)?, pad(|p| &p.1)?))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Batch {
            sequences,
            rows,
            past,
            spread: Tensor::new(spread.as_slice(), &dev)?,
            gather: Tensor::new(gather.as_slice(), &dev)?,
            cos: Tensor::from_vec(cos, (sequences, 1, rows, hd), &dev)?,
            sin: Tensor::from_vec(sin, (sequences, 1, rows, hd), &dev)?,
            mask: Tensor::from_vec(mask, (sequences, 1, rows, past + rows), &dev)?,
            kv,
        })
    }

    /// Layer `li`'s attention output (`[stacked rows, heads * hd]`) for the stacked queries,
    /// keys and values.
    pub(super) fn attend(
        &self,
        li: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        (heads, kvh, hd): (usize, usize, usize),
    ) -> Result<Tensor> {
        let (s, n) = (self.sequences, self.rows);
        let padded = |m: &Tensor, h: usize| -> candle_core::Result<Tensor> {
            let zero = Tensor::zeros((1, h * hd), DType::F32, &Device::Cpu)?;
            Tensor::cat(&[m, &zero], 0)?
                .index_select(&self.spread, 0)?
                .reshape((s, n, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = graph::rope(&padded(q, heads)?, &self.cos, &self.sin)?;
        let k = graph::rope(&padded(k, kvh)?, &self.cos, &self.sin)?;
        let v = padded(v, kvh)?;
        let (pk, pv) = &self.kv[li];
        let (k, v) = if self.past > 0 {
            (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?)
        } else {
            (k, v)
        };
        let total = self.past + n;
        let rep = heads / kvh;
        let expand = |m: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(m);
            }
            m.unsqueeze(2)?
                .expand((s, kvh, rep, total, hd))?
                .reshape((s, heads, total, hd))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (hd as f64).sqrt())?;
        let probs = graph::softmax(&scores.broadcast_add(&self.mask)?)?;
        Ok(probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((s * n, heads * hd))?
            .index_select(&self.gather, 0)?)
    }
}
