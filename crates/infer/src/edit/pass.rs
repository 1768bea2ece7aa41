//! The optimisation's forward pass: the later layers from the edited one's output, on the
//! positions the edit reaches, written in differentiable operations, following the model's
//! description as the other passes do (head norms, sandwich norms, fused projections, biases,
//! windows, per-layer rotary bases, the attention scale, logit soft-capping).

use super::graph;
use super::problem::Problem;
use crate::arch::{Activation, Architecture};
use crate::Result;
use candle_core::{DType, Device, Tensor};

/// What one chunk of the sequences gives: each rewriting sequence's total log-likelihood of
/// the target, and the KL prompt's next-token log-probabilities if it is in the chunk.
pub(super) struct Chunk {
    pub(super) totals: Vec<Tensor>,
    pub(super) kl_lp: Option<Tensor>,
}

impl Problem {
    /// With `delta` added at every sequence's first row: the target's mean negative
    /// log-likelihood over the rewriting prompts, the KL prompt's log-probabilities, and the
    /// target's mean probability (all chunks in one graph; the tests' view of the pass).
    #[cfg(test)]
    pub(crate) fn run(&self, delta: &Tensor) -> Result<(Tensor, Tensor, f64)> {
        let (mut totals, mut kl_lp) = (Vec::new(), None);
        for chunk in 0..self.chunks.len() {
            let c = self.run_chunk(delta, chunk)?;
            totals.extend(c.totals);
            kl_lp = kl_lp.or(c.kl_lp);
        }
        let kl_lp = kl_lp.ok_or(crate::InferError::Internal("no KL prompt"))?;
        let rewriting = totals.len() as f64;
        let mut p_sum = 0.0;
        for t in &totals {
            p_sum += (t.to_scalar::<f32>()? as f64).exp();
        }
        let nll = (Tensor::stack(&totals, 0)?.sum_all()?.neg()?
            / (self.target.len() as f64 * rewriting))?;
        Ok((nll, kl_lp, p_sum / rewriting))
    }

    /// [`Problem::run`] on the sequences of chunk `chunk` only: its own graph, so the
    /// gradient of each chunk can be taken and its intermediates dropped before the next.
    pub(super) fn run_chunk(&self, delta: &Tensor, chunk: usize) -> Result<Chunk> {
        let (range, batch) = &self.chunks[chunk];
        let seqs = &self.seqs[range.clone()];
        let kl_index = self.seqs.len() - 1;
        let a = &self.model.arch;
        let eps = a.rms_eps;
        let rows: Vec<Tensor> = seqs
            .iter()
            .map(|s| {
                let first = match (&s.before_norm, &self.edited_post_norm) {
                    (Some((mid, down)), Some(norm)) => {
                        let changed = (down + delta)?.unsqueeze(0)?;
                        mid.unsqueeze(0)?
                            .add(&graph::rms_norm(&changed, norm, eps)?)?
                    }
                    _ => (s.x.get(0)? + delta)?.unsqueeze(0)?,
                };
                let n = s.x.dim(0)?;
                if n == 1 {
                    Ok(first)
                } else {
                    Tensor::cat(&[&first, &s.x.narrow(0, 1, n - 1)?], 0)
                }
            })
            .collect::<candle_core::Result<_>>()?;
        let mut x = Tensor::cat(&rows, 0)?;
        let lens: Vec<usize> = seqs
            .iter()
            .map(|s| s.x.dim(0))
            .collect::<candle_core::Result<_>>()?;
        // The scored rows.
        let mut index = Vec::new();
        let mut off = 0;
        for (s, &n) in seqs.iter().zip(&lens) {
            index.extend(s.scored.iter().map(|&(r, _)| (off + r) as u32));
            off += n;
        }
        let index = Tensor::new(index.as_slice(), &Device::Cpu)?;
        let last = self.later.len().saturating_sub(1);
        let (qw, kw, inter) = (a.q_width(), a.kv_width(), a.intermediate);
        let post = |m: Tensor, norm: &Option<Tensor>| -> candle_core::Result<Tensor> {
            match norm {
                Some(n) => graph::rms_norm(&m, n, eps),
                None => Ok(m),
            }
        };
        for (li, lw) in self.later.iter().enumerate() {
            let h = graph::rms_norm(&x, &lw.input_norm, eps)?;
            let (q_all, k_all, v_all) = match lw.qkv.as_slice() {
                [q, k, v] => (q.apply(&h)?, k.apply(&h)?, v.apply(&h)?),
                [fused] => {
                    let qkv = fused.apply(&h)?;
                    (
                        qkv.narrow(1, 0, qw)?.contiguous()?,
                        qkv.narrow(1, qw, kw)?.contiguous()?,
                        qkv.narrow(1, qw + kw, kw)?.contiguous()?,
                    )
                }
                _ => return Err(crate::InferError::Internal("a layer without its q, k, v")),
            };
            let mut att = batch.attend(li, lw, &q_all, &k_all, &v_all, a)?;
            if li == last {
                // Past the last attention only the scored rows matter.
                att = att.index_select(&index, 0)?;
                x = x.index_select(&index, 0)?;
            }
            x = (x + post(lw.o.apply(&att)?, &lw.post_attention_norm)?)?;
            let h = graph::rms_norm(&x, &lw.pre_mlp_norm, eps)?;
            let (gate, up) = match lw.gate_up.as_slice() {
                [gate, up] => (gate.apply(&h)?, up.apply(&h)?),
                [fused] => {
                    let gu = fused.apply(&h)?;
                    (
                        gu.narrow(1, 0, inter)?.contiguous()?,
                        gu.narrow(1, inter, inter)?.contiguous()?,
                    )
                }
                _ => {
                    return Err(crate::InferError::Internal(
                        "a layer without its gate and up",
                    ))
                }
            };
            let gate = match lw.spec.activation {
                Activation::Silu => gate.silu()?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let down = lw.down.apply(&(gate * up)?)?;
            x = (x + post(down, &lw.post_mlp_norm)?)?;
        }
        let picked = match self.later.is_empty() {
            true => x.index_select(&index, 0)?,
            false => x,
        };
        let h = graph::rms_norm(&picked, &self.final_norm, eps)?;
        let logits = self.unembed.apply(&h)?;
        let logits = match a.final_softcap {
            Some(cap) => ((logits / f64::from(cap))?.tanh()? * f64::from(cap))?,
            None => logits,
        };
        let lp = graph::log_softmax(&logits)?;
        let mut row = 0;
        let mut out = Chunk {
            totals: Vec::new(),
            kl_lp: None,
        };
        for (i, s) in range.clone().zip(seqs) {
            if i == kl_index {
                out.kl_lp = Some(lp.get(row)?);
                row += 1;
                continue;
            }
            let mut seq_lp = Vec::new();
            for &(_, token) in &s.scored {
                seq_lp.push(lp.get(row)?.get(token as usize)?);
                row += 1;
            }
            out.totals.push(Tensor::stack(&seq_lp, 0)?.sum_all()?);
        }
        Ok(out)
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
    /// Per rotary base, `[sequences, 1, rows, hd]` (rotate-half tables of each row's
    /// position).
    ropes: Vec<(f64, Tensor, Tensor)>,
    /// Per window (`None`: every earlier position), `[sequences, 1, rows, past + rows]`: 0
    /// where a row may look, -inf elsewhere.
    masks: Vec<(Option<usize>, Tensor)>,
    /// Per later layer: the earlier positions' keys and values, `[sequences, kv_heads, past, hd]`.
    kv: Vec<(Tensor, Tensor)>,
}

impl Batch {
    /// The batch of `seqs` (their keys, values, rotary tables and rows) through the `later`
    /// layers.
    pub(super) fn of(
        seqs: &[super::problem::Sequence],
        later: &[super::problem::LayerWeights],
        a: &Architecture,
    ) -> Result<Batch> {
        let (hd, kvh) = (a.head_width, a.kv_heads);
        let dev = Device::Cpu;
        let sequences = seqs.len();
        let lens: Vec<usize> = seqs
            .iter()
            .map(|s| s.x.dim(0))
            .collect::<candle_core::Result<_>>()?;
        let rows = lens.iter().copied().max().unwrap_or(1);
        let past = seqs.iter().map(|s| s.at).max().unwrap_or(0);
        let total: usize = lens.iter().sum();
        let mut windows: Vec<Option<usize>> = Vec::new();
        let mut thetas: Vec<f64> = Vec::new();
        for l in later {
            if !windows.contains(&l.spec.window) {
                windows.push(l.spec.window);
            }
            if !thetas.contains(&l.spec.rope_theta) {
                thetas.push(l.spec.rope_theta);
            }
        }
        let (mut spread, mut gather) = (Vec::new(), Vec::new());
        let mut masks: Vec<Vec<f32>> = vec![Vec::new(); windows.len()];
        let mut tables: Vec<(Vec<f32>, Vec<f32>)> = vec![Default::default(); thetas.len()];
        let mut off = 0;
        for (s, &n) in seqs.iter().zip(&lens) {
            let own_tables = thetas
                .iter()
                .map(|theta| {
                    let (c, si) = s
                        .ropes
                        .iter()
                        .find(|(t, _)| t == theta)
                        .map(|(_, t)| t)
                        .ok_or(crate::InferError::Internal("no rotary tables for a base"))?;
                    Ok((c.to_vec2::<f32>()?, si.to_vec2::<f32>()?))
                })
                .collect::<Result<Vec<_>>>()?;
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
                let position = s.at + own;
                for (window, mask) in windows.iter().zip(&mut masks) {
                    mask.extend((0..past + rows).map(|j| {
                        let (seen, key) = if j < past {
                            (j < s.at && i < n, j)
                        } else {
                            (j - past <= own, s.at + j - past)
                        };
                        let inside = window.is_none_or(|w| position.saturating_sub(key) < w);
                        if seen && inside {
                            0.0f32
                        } else {
                            f32::NEG_INFINITY
                        }
                    }));
                }
                for ((c, si), (cos, sin)) in own_tables.iter().zip(&mut tables) {
                    cos.extend_from_slice(&c[own]);
                    sin.extend_from_slice(&si[own]);
                }
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
        let shape = (sequences, 1, rows, hd);
        Ok(Batch {
            sequences,
            rows,
            past,
            spread: Tensor::new(spread.as_slice(), &dev)?,
            gather: Tensor::new(gather.as_slice(), &dev)?,
            ropes: thetas
                .into_iter()
                .zip(tables)
                .map(|(theta, (cos, sin))| {
                    Ok((
                        theta,
                        Tensor::from_vec(cos, shape, &dev)?,
                        Tensor::from_vec(sin, shape, &dev)?,
                    ))
                })
                .collect::<candle_core::Result<_>>()?,
            masks: windows
                .into_iter()
                .zip(masks)
                .map(|(window, m)| {
                    Ok((
                        window,
                        Tensor::from_vec(m, (sequences, 1, rows, past + rows), &dev)?,
                    ))
                })
                .collect::<candle_core::Result<_>>()?,
            kv,
        })
    }

    /// Later layer `li`'s attention output (`[stacked rows, heads * hd]`) for the stacked
    /// queries, keys and values (before their head norms and rotation).
    pub(super) fn attend(
        &self,
        li: usize,
        lw: &super::problem::LayerWeights,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        a: &Architecture,
    ) -> Result<Tensor> {
        let (heads, kvh, hd) = (a.heads, a.kv_heads, a.head_width);
        let internal = crate::InferError::Internal;
        let (_, cos, sin) = self
            .ropes
            .iter()
            .find(|(t, _, _)| *t == lw.spec.rope_theta)
            .ok_or(internal("no rotary tables for a layer's base"))?;
        let (_, mask) = self
            .masks
            .iter()
            .find(|(w, _)| *w == lw.spec.window)
            .ok_or(internal("no mask for a layer's window"))?;
        let eps = a.rms_eps;
        let normed = |m: Tensor, n: &Option<Tensor>| -> candle_core::Result<Tensor> {
            match n {
                Some(n) => graph::rms_norm(&m, n, eps),
                None => Ok(m),
            }
        };
        let (s, n) = (self.sequences, self.rows);
        let padded = |m: &Tensor, h: usize| -> candle_core::Result<Tensor> {
            let zero = Tensor::zeros((1, h * hd), DType::F32, &Device::Cpu)?;
            Tensor::cat(&[m, &zero], 0)?
                .index_select(&self.spread, 0)?
                .reshape((s, n, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = graph::rope(&normed(padded(q, heads)?, &lw.q_norm)?, cos, sin)?;
        let k = graph::rope(&normed(padded(k, kvh)?, &lw.k_norm)?, cos, sin)?;
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
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * a.attention_scale)?;
        let probs = graph::softmax(&scores.broadcast_add(mask)?)?;
        Ok(probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((s * n, heads * hd))?
            .index_select(&self.gather, 0)?)
    }
}
